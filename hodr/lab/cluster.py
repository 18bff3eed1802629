"""What one node believes about the cluster, parsed from ``crm_mon --output-as=xml``.

Tests assert on this (online nodes, DC, where a resource runs and in which role) rather than on
``crm_mon`` text, which changes between pacemaker versions.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeState:
    name: str
    online: bool
    unclean: bool
    pending: bool
    standby: bool


@dataclass(frozen=True)
class Placement:
    """One active instance of a resource (a clone has several)."""

    node: str
    role: str  # "Started", "Promoted", "Unpromoted", ...
    failed: bool


@dataclass(frozen=True)
class ClusterView:
    seen_from: str
    dc: str | None
    quorate: bool
    nodes: dict[str, NodeState]
    resources: dict[str, list[Placement]] = field(default_factory=dict)

    @property
    def online(self) -> set[str]:
        return {n for n, s in self.nodes.items() if s.online and not s.pending}

    @property
    def offline(self) -> set[str]:
        return {n for n, s in self.nodes.items() if not s.online}

    def locate(self, resource: str, role: str | None = None) -> list[str]:
        """Nodes where ``resource`` is active (optionally only in ``role``), sorted."""
        return sorted(p.node for p in self.resources.get(resource, []) if role is None or p.role == role)

    @property
    def formed(self) -> bool:
        return self.dc is not None and self.quorate and self.online == set(self.nodes)


def parse(xml_text: str, seen_from: str) -> ClusterView:
    root = ET.fromstring(xml_text)
    dc_el = root.find("summary/current_dc")
    dc = dc_el.get("name") if dc_el is not None and dc_el.get("present") == "true" else None
    quorate = dc_el is not None and dc_el.get("with_quorum") == "true"
    nodes = {}
    for el in root.iterfind("nodes/node"):
        nodes[el.get("name", "")] = NodeState(
            name=el.get("name", ""),
            online=el.get("online") == "true",
            unclean=el.get("unclean") == "true",
            pending=el.get("pending") == "true",
            standby=el.get("standby") == "true",
        )
    resources: dict[str, list[Placement]] = {}
    for res in root.iter("resource"):
        if res.get("active") != "true":
            continue
        rid = res.get("id", "")
        for n in res.iterfind("node"):
            resources.setdefault(rid, []).append(
                Placement(
                    node=n.get("name", ""), role=res.get("role", ""), failed=res.get("failed") == "true"
                )
            )
        # clones: also index instances under the clone's id ("st-clone" and "st")
    for clone in root.iter("clone"):
        cid = clone.get("id", "")
        for res in clone.iter("resource"):
            if res.get("active") == "true":
                for n in res.iterfind("node"):
                    resources.setdefault(cid, []).append(
                        Placement(
                            node=n.get("name", ""),
                            role=res.get("role", ""),
                            failed=res.get("failed") == "true",
                        )
                    )
    return ClusterView(seen_from=seen_from, dc=dc, quorate=quorate, nodes=nodes, resources=resources)

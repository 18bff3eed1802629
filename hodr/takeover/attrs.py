"""Pacemaker node attributes for hodr-replica, through the command-line tools.

- promotion scores: ``crm_attribute --promotion`` (``crm_master`` is deprecated). The tool derives
  the attribute name from ``OCF_RESOURCE_INSTANCE``; it is never built by hand. Lifetime stays the
  default ``reboot``: scores vanish with the node and probes rebuild them (``forever`` scores
  outlive a dead primary: ClusterLabs/PAF#220);
- private attributes: ``attrd_updater --private`` (kept in pacemaker-attrd on every node, never
  written to the CIB): positions published for the election;
- the cluster epoch: a cluster property (``crm_attribute --type crm_config``) that survives a
  whole-cluster restart, for the rejoin guard.

Why polling: attribute writes are asynchronous, and ``attrd_updater --wait`` only exists from
Pacemaker 2.1.6 while Debian 12 ships 2.1.5 (the attrd race of ClusterLabs/PAF#131). Every wait is
bounded by a ``Deadline``.

Why an injectable runner: the unit tests check the exact command lines without a cluster, and the
agent tests put fake tools on ``PATH``. Outside a cluster every call fails with
``AttrUnavailable``; callers decide whether that is a warning (score updates) or a refusal (the
election fails closed).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from hodr.takeover.ocf import Deadline

CALL_TIMEOUT = 5.0  # one tool call; attrd and the CIB answer in milliseconds when healthy
POLL_INTERVAL = 0.2
CRM_EX_NOSUCH = 105  # "No such device or address": the attribute is not set
ABSENT_TEXT = ("does not exist", "No such device or address")
_QUERY_LINE = re.compile(r'host="(?P<host>[^"]*)"\s+value="(?P<value>.*)"\s*$')


@dataclass(frozen=True)
class Completed:
    """What one tool call returned."""

    rc: int
    stdout: str
    stderr: str

    def reason(self) -> str:
        text = " ".join((self.stderr or self.stdout).split())
        return text or f"exit status {self.rc}"


Runner = Callable[[Sequence[str], float], Completed]


#: Set by Pacemaker for every operation. The tools take it as the default node, and on 2.1.5 it
#: even narrows ``attrd_updater -Q -A`` to that one node (seen in the lab): an election that
#: reads only its own value would promote a node that is behind. Queries over all nodes drop it.
NODE_ENV = ("OCF_RESKEY_CRM_meta_on_node", "OCF_RESKEY_CRM_meta_on_node_uuid")


def run_tool(argv: Sequence[str], timeout: float) -> Completed:
    """Run a Pacemaker tool with ``LC_ALL=C`` (its output is parsed) and a hard timeout."""
    import subprocess  # only when a tool really runs: a quiet monitor never pays for it

    env = {**os.environ, "LC_ALL": "C"}
    if "-A" in argv:
        for name in NODE_ENV:
            env.pop(name, None)
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=max(0.1, timeout),
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]}: not installed")
    except subprocess.TimeoutExpired:
        return Completed(124, "", f"{argv[0]}: no answer within {timeout:.1f}s")
    return Completed(proc.returncode, proc.stdout, proc.stderr)


class AttrUnavailable(Exception):
    """The attribute could not be read or written (no cluster here, tool missing, timeout)."""


def base_resource(instance: str) -> str:
    """``hodr:1`` → ``hodr``: private attribute names must be the same for every clone instance."""
    return instance.split(":", 1)[0]


class Attributes:
    """The attributes of one hodr-replica resource (``resource`` = primitive id, no ``:N``)."""

    def __init__(self, resource: str, runner: Runner = run_tool, call_timeout: float = CALL_TIMEOUT) -> None:
        self.resource = base_resource(resource)
        self._run = runner
        self._timeout = call_timeout

    # attribute names carry the resource name: several hodr-replica resources may share a cluster
    @property
    def position_name(self) -> str:
        return f"hodr-{self.resource}-pos"

    @property
    def election_name(self) -> str:
        return f"hodr-{self.resource}-elect"

    @property
    def epoch_name(self) -> str:
        return f"hodr-{self.resource}-epoch"

    # ----------------------------------------------------------------------- promotion score

    def score(self, node: str | None = None) -> int | None:
        """This node's (or *node*'s) promotion score; ``None`` when none is set."""
        text = self._query(["crm_attribute", "--promotion", "-G", "-q", *_node(node)])
        if text is None or not text.strip():
            return None
        try:
            return int(text.strip().splitlines()[-1])
        except ValueError:
            raise AttrUnavailable(f"unreadable promotion score {text.strip()!r}") from None

    def set_score(self, value: int, node: str | None = None, wait: Deadline | None = None) -> None:
        """Set the promotion score; with *wait*, poll until the value is visible (bounded)."""
        self._change(["crm_attribute", "--promotion", "-v", str(int(value)), *_node(node)])
        if wait is not None:
            self._until(lambda: self.score(node) == int(value), wait, f"score {value} visible")

    def delete_score(self, node: str | None = None) -> None:
        """Remove the promotion score (absent already is fine)."""
        self._change(["crm_attribute", "--promotion", "-D", *_node(node)], absent_ok=True)

    # --------------------------------------------------------------------- private attributes

    def set_private(
        self, name: str, value: str, node: str | None = None, wait: Deadline | None = None
    ) -> None:
        """Set a private attribute; with *wait*, poll this node's attrd until it shows the value."""
        self._change(["attrd_updater", "-p", "-n", name, "-U", value, *_node(node)])
        if wait is not None:
            self._until(lambda: self.private(name, node) == value, wait, f"{name} visible")

    def private(self, name: str, node: str | None = None) -> str | None:
        """One node's value (this node's without *node*); ``None`` if unset or deleted."""
        text = self._query(["attrd_updater", "-Q", "-n", name, *_node(node)])
        values = _parse_query(text or "")
        if node is None:
            return next(iter(values.values()), None)
        return values.get(node)

    def private_all(self, name: str) -> dict[str, str]:
        """Every node's non-empty value (``attrd_updater -D`` leaves an empty string behind)."""
        return _parse_query(self._query(["attrd_updater", "-Q", "-A", "-n", name]) or "")

    def wait_private_all(self, name: str, nodes: Iterable[str], deadline: Deadline) -> dict[str, str]:
        """Poll until every node in *nodes* has a value, or the deadline; return what is there."""
        wanted = set(nodes)
        values = self.private_all(name)
        while not wanted <= set(values) and not deadline.expired():
            time.sleep(deadline.cap(POLL_INTERVAL))
            values = self.private_all(name)
        return values

    def delete_private(self, name: str, node: str | None = None) -> None:
        self._change(["attrd_updater", "-D", "-n", name, *_node(node)], absent_ok=True)

    # ---------------------------------------------------------------------- cluster property

    def cluster_property(self, name: str) -> str | None:
        text = self._query(["crm_attribute", "--type", "crm_config", "--name", name, "--query", "-q"])
        return text.strip() if text and text.strip() else None

    def set_cluster_property(self, name: str, value: str) -> None:
        self._change(["crm_attribute", "--type", "crm_config", "--name", name, "--update", value])

    # ------------------------------------------------------------------------------ plumbing

    def _query(self, argv: list[str]) -> str | None:
        done = self._run(argv, self._timeout)
        if done.rc == 0:
            return done.stdout
        if done.rc == CRM_EX_NOSUCH or any(t in done.stderr for t in ABSENT_TEXT):
            return None
        raise AttrUnavailable(f"{argv[0]}: {done.reason()}")

    def _change(self, argv: list[str], absent_ok: bool = False) -> None:
        done = self._run(argv, self._timeout)
        if done.rc == 0:
            return
        if absent_ok and (done.rc == CRM_EX_NOSUCH or any(t in done.stderr for t in ABSENT_TEXT)):
            return
        raise AttrUnavailable(f"{argv[0]}: {done.reason()}")

    @staticmethod
    def _until(check: Callable[[], bool], deadline: Deadline, what: str) -> None:
        while not check():
            if deadline.expired():
                raise AttrUnavailable(f"{what}: not visible before the deadline")
            time.sleep(deadline.cap(POLL_INTERVAL))


def _node(node: str | None) -> list[str]:
    return ["-N", node] if node else []


def _parse_query(text: str) -> dict[str, str]:
    """``name="x" host="node1" value="v"`` lines → {node: value}, dropping empty values."""
    out = {}
    for line in text.splitlines():
        m = _QUERY_LINE.search(line)
        if m and m.group("value") != "":
            out[m.group("host")] = m.group("value")
    return out

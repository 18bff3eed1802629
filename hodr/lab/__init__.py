"""``hodr lab``: a real Pacemaker/Corosync cluster in Linux namespaces on one machine (docs/lab.md).

Public API: :class:`Lab` (up/down, faults, commands inside nodes, cluster state), the parsed
:class:`ClusterView`, :class:`LabError`/:class:`CommandError`, and ``teardown`` for cleanup
by name. ``node_init`` and ``fence_lab`` are standalone scripts copied into the lab.
"""

from hodr.lab.cluster import ClusterView, NodeState, Placement
from hodr.lab.lab import Lab
from hodr.lab.proc import CommandError
from hodr.lab.teardown import TeardownReport, teardown
from hodr.lab.topology import LabConfig, LabError, Topology

__all__ = [
    "ClusterView",
    "CommandError",
    "Lab",
    "LabConfig",
    "LabError",
    "NodeState",
    "Placement",
    "TeardownReport",
    "Topology",
    "teardown",
]

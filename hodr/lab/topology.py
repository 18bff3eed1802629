"""Names, addresses and options of one lab, and where its state lives.

Everything a lab creates on the host is named from one prefix (``HODR_LAB_NAME``, default
``hodrlab``): network namespaces ``<name>-n1..n9``, ``<name>-br``, ``<name>-cl`` and the state
directory ``$HODR_LAB_DIR`` (default ``/var/tmp/hodr-lab/<name>``). That is what lets ``down``
find and remove a lab left behind by a crashed run without guessing, and lets several labs with
different names coexist on one machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

MAX_NODES = 9
DEFAULT_NAME = "hodrlab"
DEFAULT_SUBNET = "192.168.77.0/24"
DEFAULT_STATE_ROOT = Path("/var/tmp/hodr-lab")
#: Fast-mode values (lab.md §4): a 2 s DC election and a 1 s token, the lowest that stays stable
#: on two busy cores.
FAST_DC_DEADTIME = "2s"
FAST_TOKEN_MS = 1000
#: The PATH every daemon and command inside a node runs with (no pyenv shims or venvs leak in).
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: HOME inside a node: on the node's private /run, so crmsh caches never reach the host.
NODE_HOME = "/run/lab-home"
#: Where the power-controller directory appears inside every node (read by fence_lab).
NODE_POWER_DIR = "/run/lab-power"

_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")


class LabError(Exception):
    """A lab problem that the CLI reports as one line (no traceback)."""


def _package_root() -> Path:
    """The directory that holds the ``hodr`` package (the repository root in a checkout)."""
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Topology:
    """Node count, naming and addressing of a lab (lab.md §1)."""

    name: str = DEFAULT_NAME
    size: int = 3
    subnet: str = DEFAULT_SUBNET

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise LabError(
                f"lab name {self.name!r}: use 1-12 lowercase letters/digits, starting with a letter"
            )
        if not 1 <= self.size <= MAX_NODES:
            raise LabError(f"node count {self.size} out of range: 1-{MAX_NODES}")
        net = self._net
        if net.version != 4 or net.prefixlen > 24:
            raise LabError(f"subnet {self.subnet}: need an IPv4 network of /24 or larger")
        if not net.is_private:
            raise LabError(f"subnet {self.subnet}: must be a private range")

    @property
    def _net(self) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(self.subnet, strict=True)
        except ValueError as exc:
            raise LabError(f"subnet {self.subnet!r}: {exc}") from None

    @property
    def prefixlen(self) -> int:
        return self._net.prefixlen

    @property
    def nodes(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.size + 1)]

    def index(self, node: str) -> int:
        """1-based index of ``node``; accepts ``node2``, ``n2`` and ``2``."""
        m = re.fullmatch(r"(?:node|n)?([1-9])", node)
        if not m or int(m.group(1)) > self.size:
            raise LabError(f"unknown node {node!r}: this lab has {', '.join(self.nodes)}")
        return int(m.group(1))

    def node(self, node: str) -> str:
        """Canonical node name (``node2``) for any accepted spelling."""
        return f"node{self.index(node)}"

    def address(self, node: str) -> str:
        return str(self._net.network_address + 10 + self.index(node))

    @property
    def vip(self) -> str:
        """The conventional service address for VIP tests (never configured by the lab)."""
        return str(self._net.network_address + 100)

    @property
    def client_address(self) -> str:
        return str(self._net.broadcast_address - 1)

    def netns(self, node: str) -> str:
        return f"{self.name}-n{self.index(node)}"

    @property
    def bridge_netns(self) -> str:
        return f"{self.name}-br"

    @property
    def client_netns(self) -> str:
        return f"{self.name}-cl"

    def port(self, node: str) -> str:
        """The bridge-side veth of a node (inside the bridge namespace)."""
        return f"vn{self.index(node)}"

    def hosts_file(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{self.address(n)}\t{n}" for n in self.nodes]
        lines += [f"{self.vip}\tvip", f"{self.client_address}\tclient"]
        return "\n".join(lines) + "\n"


def netns_pattern(name: str) -> re.Pattern[str]:
    """Matches every namespace a lab called ``name`` can create, whatever its size."""
    return re.compile(rf"^{re.escape(name)}-(n[1-9]|br|cl)$")


@dataclass(frozen=True)
class LabConfig:
    """Everything needed to (re)create, inspect or tear down one lab, saved as ``lab.json``.

    A lab outlives the process that started it (``hodr lab up`` returns), so ``down``, ``status``
    and the power controller all read this file instead of relying on in-memory state.
    """

    topology: Topology = field(default_factory=Topology)
    state_dir: str = ""
    #: None: pacemaker's default (20 s); "2s" in fast mode.
    dc_deadtime: str | None = FAST_DC_DEADTIME
    #: None: corosync's default (3000 ms + 650 ms per node beyond two).
    token_ms: int | None = FAST_TOKEN_MS
    token_coefficient_ms: int | None = None
    fencing: bool = True
    #: Seconds between a fence "reboot" answered OK and the node powering on again.
    reboot_delay: float = 10.0
    #: Seconds a graceful node stop may take before SIGKILL (pacemaker's stop timeout + 40 s).
    stop_timeout: float = 130.0
    python: str = sys.executable
    package_root: str = field(default_factory=lambda: str(_package_root()))
    ocf_dir: str = field(default_factory=lambda: str(_package_root() / "ocf"))

    @property
    def state(self) -> Path:
        return Path(self.state_dir)

    def node_dir(self, node: str) -> Path:
        return self.state / "nodes" / self.topology.node(node)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabConfig:
        raw = json.loads(text)
        topo = Topology(**raw.pop("topology"))
        known = {f for f in cls.__dataclass_fields__}
        return cls(topology=topo, **{k: v for k, v in raw.items() if k in known})

    def with_state_dir(self, state_dir: Path) -> LabConfig:
        return replace(self, state_dir=str(state_dir))


def lab_name(name: str | None = None) -> str:
    return name or os.environ.get("HODR_LAB_NAME") or DEFAULT_NAME


def state_dir_for(name: str, state_dir: str | Path | None = None) -> Path:
    """State directory of lab ``name``: explicit, else ``$HODR_LAB_DIR``, else the default root.

    Refuses places a node overlays (``/etc``, ``/var/lib``, ``/usr``, ``/run``): an overlay's upper
    directory must not sit inside its lower one, and ``/run`` is hidden inside nodes.
    """
    path = Path(state_dir or os.environ.get("HODR_LAB_DIR") or DEFAULT_STATE_ROOT / name).absolute()
    for bad in ("/etc", "/var/lib", "/usr", "/run", "/dev", "/proc", "/sys"):
        if path == Path(bad) or Path(bad) in path.parents:
            raise LabError(f"state dir {path}: must not be under {bad} (nodes overlay or hide it)")
    return path

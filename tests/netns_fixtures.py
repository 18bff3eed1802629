"""Throw-away LANs in network namespaces for the hodr-vip tests, and a way to run the agent there.

A LAN is a bridge in its own namespace plus one namespace per host, each host joined to the bridge
by a veth pair whose host end is called ``eth0``. Hosts get 192.168.77.(10+i)/24 and
fd00:77::(10+i)/64 (added with nodad so they are usable at once). Nothing is ever added to the
root namespace. Names start with ``hodrt-<pid>-vip-`` so leftovers are recognisable (and the
``cleanup_stale`` helper removes those of dead runs of these tests, and nothing else).

The agent runs as Pacemaker runs it: the ``ocf/hodr-vip`` shim as a subprocess, from ``/``, with a
clean environment (no PYTHONPATH), inside the host's namespace through ``ip netns exec``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.ocf_meta import AgentResult

REPO = Path(__file__).resolve().parent.parent
AGENT = REPO / "ocf" / "hodr-vip"
V4_NET = "192.168.77"
V6_NET = "fd00:77::"
VIP4 = "192.168.77.100"
VIP6 = "fd00:77::100"
PREFIX = f"hodrt-{os.getpid()}-vip"
_serial = itertools.count()


def sh(*args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell), text output, failing loudly with its stderr."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> rc {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class Host:
    """One namespace on the LAN; its LAN interface is ``eth0``."""

    ns: str
    index: int

    @property
    def ip4(self) -> str:
        return f"{V4_NET}.{10 + self.index}"

    @property
    def ip6(self) -> str:
        return f"{V6_NET}{10 + self.index}"

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.ns, *args, check=check)

    def exec(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *args, check=check, timeout=timeout)

    def mac(self, dev: str = "eth0") -> str:
        return json.loads(self.ip("-j", "link", "show", "dev", dev).stdout)[0]["address"]

    def addresses(self, dev: str | None = None) -> list[tuple[str, int, list[str]]]:
        """(address, prefixlen, flags) on *dev* (all devices if None); flags as ``ip`` names them."""
        args = ["-j", "addr", "show"] + (["dev", dev] if dev else [])
        proc = self.ip(*args, check=False)
        if proc.returncode != 0:
            return []
        found = []
        for link in json.loads(proc.stdout):
            for a in link.get("addr_info", []):
                flags = [k for k in ("tentative", "dadfailed", "nodad") if a.get(k)]
                found.append((a["local"], a["prefixlen"], flags))
        return found

    def has(self, address: str, dev: str | None = None) -> bool:
        return any(a == address for a, _p, _f in self.addresses(dev))

    def neigh_mac(self, address: str, dev: str = "eth0") -> str | None:
        proc = self.ip("-j", "neigh", "show", "to", address, "dev", dev, check=False)
        entries = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
        return entries[0].get("lladdr") if entries else None

    def agent(
        self,
        action: str,
        params: Mapping[str, str],
        interval_ms: int | None = 10_000,
        timeout_ms: int = 20_000,
        extra_env: Mapping[str, str] | None = None,
    ) -> AgentResult:
        """Run ``ocf/hodr-vip <action>`` here; ``interval_ms=0`` (or None) makes a monitor a probe."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LC_ALL": "C",
            "OCF_ROOT": "/usr/lib/ocf",
            "OCF_RESOURCE_INSTANCE": "vip",
            "OCF_RESKEY_CRM_meta_timeout": str(timeout_ms),
        }
        if interval_ms is not None:
            env["OCF_RESKEY_CRM_meta_interval"] = str(interval_ms)
        env.update({f"OCF_RESKEY_{k}": v for k, v in params.items()})
        env.update(extra_env or {})
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns, str(AGENT), action],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            timeout=timeout_ms / 1000 + 10,
        )
        return AgentResult(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Lan:
    """A bridge namespace and the hosts attached to it."""

    name: str
    bridge_ns: str
    hosts: list[Host] = field(default_factory=list)

    def port(self, host: Host) -> str:
        """The bridge-side end of *host*'s veth (in the bridge namespace)."""
        return f"p{host.index}"

    def bridge(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.bridge_ns, *args, check=check)

    def namespaces(self) -> list[str]:
        return [h.ns for h in self.hosts] + [self.bridge_ns]


def _add_ns(name: str) -> None:
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")


def make_lan(tag: str, hosts: int = 2) -> Lan:
    """Build a LAN of *hosts* namespaces on one bridge; the caller must ``destroy_lan`` it."""
    name = f"{PREFIX}-{next(_serial)}-{re.sub(r'[^a-z0-9]', '', tag.lower())[:12]}"
    lan = Lan(name, f"{name}-br")
    try:
        _add_ns(lan.bridge_ns)
        lan.bridge("link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        lan.bridge("link", "set", "br0", "up")
        for i in range(1, hosts + 1):
            host = Host(f"{name}-h{i}", i)
            lan.hosts.append(host)
            _add_ns(host.ns)
            host.ip("link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", lan.bridge_ns)
            lan.bridge("link", "set", f"p{i}", "master", "br0")
            lan.bridge("link", "set", f"p{i}", "up")
            host.ip("link", "set", "eth0", "up")
            host.ip("addr", "add", f"{host.ip4}/24", "dev", "eth0")
            host.ip("addr", "add", f"{host.ip6}/64", "dev", "eth0", "nodad")
    except BaseException:
        destroy_lan(lan)
        raise
    return lan


def destroy_lan(lan: Lan) -> None:
    """Delete every namespace of *lan* (their veths go with them); never raises."""
    for ns in lan.namespaces():
        sh("ip", "netns", "del", ns, check=False)


@contextmanager
def lan_context(tag: str, hosts: int = 2) -> Iterator[Lan]:
    lan = make_lan(tag, hosts)
    try:
        yield lan
    finally:
        destroy_lan(lan)


def cleanup_stale() -> None:
    """Remove ``hodrt-<pid>-vip-*`` namespaces (ours only) whose test process no longer exists."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(r"hodrt-(\d+)-vip-", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            sh("ip", "netns", "del", name, check=False)

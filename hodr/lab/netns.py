"""The lab network: a bridge in its own namespace, one veth pair per node and one for the client.

Each veth pair is created inside the bridge namespace with its peer moved straight into the node
namespace, so no interface ever appears in the root namespace and the private subnet is only
ever configured inside namespaces the lab created (lab.md §1).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from hodr.lab import proc
from hodr.lab.topology import Topology, netns_pattern

IP = "ip"
NETNS_DIR = Path("/run/netns")
_TIMEOUT = 10.0


def _ip(*args: str, check: bool = True) -> str:
    return proc.run([IP, *args], timeout=_TIMEOUT, check=check).stdout


def _batch(netns: str, lines: list[str]) -> None:
    """Several ``ip`` commands in one process (``ip -n NS -batch -``): up is ~30 commands."""
    proc.run([IP, "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n", timeout=_TIMEOUT)


def existing(name: str) -> list[str]:
    """Namespaces of lab ``name`` that exist now (any size, also from a crashed run)."""
    pat = netns_pattern(name)
    out = _ip("-j", "netns", "list")
    entries = json.loads(out) if out.strip() else []
    return sorted(e["name"] for e in entries if pat.match(e["name"]))


def create(topo: Topology) -> None:
    """Bridge namespace, node and client namespaces, veths and addresses."""
    br = topo.bridge_netns
    _ip("netns", "add", br)
    _batch(br, ["link set lo up", "link add br0 type bridge", "link set br0 up"])
    plugs = [(topo.netns(n), topo.port(n), topo.address(n)) for n in topo.nodes]
    plugs.append((topo.client_netns, "vcl", topo.client_address))
    for ns, port, addr in plugs:
        _ip("netns", "add", ns)
        _batch(br, [f"link add {port} type veth peer name eth0 netns {ns}", f"link set {port} master br0 up"])
        _batch(ns, ["link set lo up", f"addr add {addr}/{topo.prefixlen} dev eth0", "link set eth0 up"])


def delete(names: list[str]) -> list[str]:
    """Delete namespaces (their veths and the bridge go with them); returns failures."""
    failed = []
    for ns in names:
        r = proc.run([IP, "netns", "delete", ns], timeout=_TIMEOUT, check=False)
        if r.returncode != 0 and (NETNS_DIR / ns).exists():
            failed.append(f"{ns}: {r.stderr.strip()}")
    return failed


def set_port(topo: Topology, node: str, up: bool) -> None:
    """Plug (up) or pull (down) a node's cable at the bridge."""
    _ip("-n", topo.bridge_netns, "link", "set", topo.port(node), "up" if up else "down")


def port_is_up(topo: Topology, node: str) -> bool:
    out = _ip("-n", topo.bridge_netns, "-j", "link", "show", topo.port(node), check=False)
    try:
        return "UP" in json.loads(out)[0]["flags"]
    except (ValueError, IndexError, KeyError):
        return False


def flush_node(topo: Topology, node: str) -> None:
    """Drop every address on the node's eth0: a powered-off node must not keep serving a VIP.

    The network namespace outlives the node's processes, so without this a crashed node's VIP
    would still answer ARP and pings.
    """
    _ip("-n", topo.netns(node), "addr", "flush", "dev", "eth0", check=False)


def configure_node(topo: Topology, node: str) -> None:
    """Give a (re)booting node its own address back, as its network scripts would."""
    ns = topo.netns(node)
    _ip("-n", ns, "addr", "flush", "dev", "eth0", check=False)
    _batch(
        ns, ["link set lo up", f"addr add {topo.address(node)}/{topo.prefixlen} dev eth0", "link set eth0 up"]
    )


def inodes(names: list[str]) -> dict[str, int]:
    """Namespace inode per name, to find processes still running inside."""
    found = {}
    for ns in names:
        ino = proc.netns_inode(str(NETNS_DIR / ns))
        if ino is not None:
            found[ns] = ino
    return found


def netns_dir_is_idle() -> bool:
    """True if /run/netns exists and holds no namespaces at all (ours or anybody's)."""
    try:
        return not any(os.scandir(NETNS_DIR))
    except FileNotFoundError:
        return False


def remove_netns_dir() -> None:
    """Undo what the first ``ip netns add`` did to a machine that had no /run/netns.

    ``ip`` turns /run/netns into a shared bind mount of itself; only called when this lab created
    it and it is empty, so nobody else's namespaces are affected.
    """
    mounts = Path("/proc/self/mountinfo").read_text()
    if re.search(rf" {re.escape(str(NETNS_DIR))} ", mounts):
        proc.run(["umount", "-n", str(NETNS_DIR)], timeout=_TIMEOUT, check=False)
    try:
        NETNS_DIR.rmdir()
    except OSError:
        pass

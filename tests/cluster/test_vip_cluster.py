"""ocf:hodr:hodr-vip in a real 3-node Pacemaker cluster (issue 3, docs/vip.md).

README's ``pcs resource create`` command as written; a crash of the holder moves the VIP and the
client's neighbour entry follows the gratuitous ARP at once; ``pcs resource move``; isolating the
holder never leaves two holders; ``ocf-tester`` inside a lab node (IPv4 and IPv6).

Observation is from the host, never through Pacemaker alone: :class:`VipWatch` samples every
~50 ms which nodes have the VIP on ``eth0`` (``ip -n <node netns>``, works while a node is off),
whose cable is plugged in, which nodes are powered, and the client's neighbour entry for the VIP;
optionally the client ARPs for the VIP every ~0.35 s and records every MAC that answers. A small
TCP server on every node answers with its hostname, so the client knows *which* node it reached.

Timings are printed as ``TIMING ...`` lines (run with ``-s``). Every test deletes the VIP it
created and leaves all nodes cabled and online.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hodr.lab import Lab
from tests.cluster.conftest import TEST_REBOOT_DELAY
from tests.conftest import wait_for

cluster = pytest.mark.cluster

README = Path(__file__).resolve().parents[2] / "README.md"
AGENT = "/usr/lib/ocf/resource.d/hodr/hodr-vip"
PORT = 7777
START_DEADLINE = 20.0  # start: ~1 s ARP probe + add + 5 announcements 200 ms apart
FAILOVER_DEADLINE = 30.0  # fast lab: crash -> fenced ~4 s, + start ~1 s before the address is added
GARP_DEADLINE = 2.0  # address on the new node -> client's neighbour entry shows its MAC
DROP_DEADLINE = 15.0  # isolation -> the isolated holder has no VIP (quorum loss ~4 s, or fencing)
SAMPLE_INTERVAL = 0.05
ECHO_SERVER = """
import socket
srv = socket.create_server(("", {port}))
name = socket.gethostname().encode() + b"\\n"
while True:
    conn, _ = srv.accept()
    conn.sendall(name)
    conn.close()
"""
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


# ----------------------------------------------------------------------------- host-side reads


def _ip_json(*args: str) -> list[dict]:
    r = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout) if r.stdout.strip() else []


def vip_prefixes(lab: Lab, node: str) -> list[int]:
    """Prefix lengths of the VIP on the node's eth0 (usually [] or [24])."""
    links = _ip_json("-n", lab.topology.netns(node), "addr", "show", "dev", "eth0")
    return [a["prefixlen"] for link in links for a in link.get("addr_info", []) if a.get("local") == lab.vip]


def node_holders(lab: Lab) -> frozenset[str]:
    return frozenset(n for n in lab.nodes if vip_prefixes(lab, n))


def node_macs(lab: Lab) -> dict[str, str]:
    """eth0 MAC of every node (the veth lives in the node's network namespace: stable across reboots)."""
    return {
        n: _ip_json("-n", lab.topology.netns(n), "link", "show", "dev", "eth0")[0]["address"]
        for n in lab.nodes
    }


def cabled(lab: Lab) -> frozenset[str]:
    """Nodes whose bridge port is up (isolate and power-off pull it)."""
    up = {
        link["ifname"]
        for link in _ip_json("-n", lab.topology.bridge_netns, "link", "show")
        if "UP" in link.get("flags", [])
    }
    return frozenset(n for n in lab.nodes if lab.topology.port(n) in up)


def client_neigh(lab: Lab) -> tuple[str | None, str]:
    """The client's neighbour entry for the VIP: (lladdr or None, state)."""
    for e in _ip_json("-n", lab.topology.client_netns, "neigh", "show", lab.vip):
        return e.get("lladdr"), ",".join(e.get("state", []))
    return None, "none"


def who_answers(lab: Lab) -> str | None:
    """Hostname of the node behind the VIP, over TCP from the client (None: no connection)."""
    script = f"exec 3<>/dev/tcp/{lab.vip}/{PORT} && head -n1 <&3"
    r = lab.client_run("timeout", "2", "bash", "-c", script, check=False, timeout=10)
    if r.returncode != 0:
        return None
    return r.stdout.strip() or None


def _secs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}s"


def single(nodes: frozenset[str] | list[str]) -> str | None:
    return next(iter(nodes)) if len(nodes) == 1 else None


def live_via(lab: Lab) -> str:
    """A powered, cabled node to run pcs on."""
    return next(n for n in lab.nodes if lab.pid(n) is not None and not lab.is_isolated(n))


# ------------------------------------------------------------------------------------ watcher


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic() when the sweep started
    holders: frozenset[str]  # VIP configured on eth0, whether or not anyone can reach the node
    cabled: frozenset[str]
    powered: frozenset[str]
    neigh: str | None  # the client's lladdr for the VIP
    neigh_state: str

    @property
    def reachable_holders(self) -> frozenset[str]:
        return self.holders & self.cabled & self.powered

    def __str__(self) -> str:
        return (
            f"+{self.t:.2f} holders={sorted(self.holders)} cabled={sorted(self.cabled)} "
            f"powered={sorted(self.powered)} client-neigh={self.neigh} {self.neigh_state}"
        )


class VipWatch:
    """Background sampler of the VIP's holders (and, with ``arp=True``, of who answers ARP)."""

    def __init__(self, lab: Lab, arp: bool = False) -> None:
        self.lab = lab
        self.samples: list[Sample] = []
        self.arp: list[tuple[float, frozenset[str]]] = []  # (monotonic, MACs that answered one request)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(self._sweep,), daemon=True)]
        if arp:
            self._threads.append(threading.Thread(target=self._loop, args=(self._arping,), daemon=True))

    def __enter__(self) -> VipWatch:
        for th in self._threads:
            th.start()
        try:
            wait_for(lambda: self.samples and (len(self._threads) == 1 or self.arp), 10, "first samples")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=10)

    def _loop(self, step: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported by check()
                self.errors.append(repr(exc))
            self._stop.wait(SAMPLE_INTERVAL)

    def _sweep(self) -> None:
        """The client's entry first: a new MAC there implies the address was already added, so a
        sweep never shows the neighbour change before the address (the lag is >= 0, +1 sweep)."""
        lab, t = self.lab, time.monotonic()
        neigh = client_neigh(lab)
        holders = node_holders(lab)
        up = cabled(lab)
        powered = frozenset(n for n in lab.nodes if lab.pid(n) is not None)
        self.samples.append(Sample(t, holders, up, powered, *neigh))

    def _arping(self) -> None:
        """One ARP request from the client; every MAC answering within 0.3 s (two = two holders)."""
        t = time.monotonic()
        argv = self.lab.client_argv(["arping", "-I", "eth0", "-c", "1", "-w", "0.3", "-r", self.lab.vip])
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        self.arp.append((t, frozenset(x.strip().lower() for x in r.stdout.split() if MAC.match(x.strip()))))

    def first(self, pred: Callable[[Sample], bool], after: float) -> Sample | None:
        return next((s for s in list(self.samples) if s.t >= after and pred(s)), None)

    def check(self, macs: dict[str, str]) -> None:
        """Never two holders in any sweep, never two MACs answering one ARP request."""
        assert not self.errors, self.errors[:5]
        two = [s for s in self.samples if len(s.holders) > 1]
        assert not two, "two holders at once:\n" + "\n".join(map(str, two[:10]))
        names = {mac: n for n, mac in macs.items()}
        double = [(t, sorted(names.get(m, m) for m in ms)) for t, ms in self.arp if len(ms) > 1]
        assert not double, f"two nodes answered the client's ARP for the VIP: {double[:10]}"

    def sweep_period(self) -> float:
        ts = [s.t for s in self.samples]
        return (ts[-1] - ts[0]) / max(1, len(ts) - 1)

    def arp_outage(self, old_mac: str, new_mac: str) -> float | None:
        """Client-visible ARP outage: last answer from the old MAC -> first from the new one."""
        last_old = max((t for t, ms in self.arp if old_mac in ms), default=None)
        first_new = min((t for t, ms in self.arp if new_mac in ms and (last_old is None or t > last_old)),
                        default=None)  # fmt: skip
        return None if last_old is None or first_new is None else first_new - last_old


class PingLog:
    """``ping -D -i 0.05 VIP`` from the client; reply timestamps (wall clock) as they arrive."""

    LINE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from")

    def __init__(self, lab: Lab) -> None:
        self.replies: list[float] = []
        self._p = lab.client_popen(
            "ping", "-D", "-n", "-i", "0.05", lab.vip, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._p.stdout is not None
        for line in self._p.stdout:
            if m := self.LINE.match(line):
                self.replies.append(float(m.group(1)))

    def stop(self) -> None:
        if self._p.poll() is None:
            self._p.send_signal(signal.SIGINT)
            try:
                self._p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._p.kill()
                self._p.wait(timeout=5)
        self._reader.join(timeout=5)

    def longest_gap_after(self, wall: float) -> float | None:
        """The longest time between two consecutive replies, the second one after ``wall``."""
        ts = self.replies
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False) if b > wall]
        return max(gaps) if gaps and ts[0] <= wall else None


# ----------------------------------------------------------------------------------- fixtures


def readme_create_command() -> list[str]:
    """The ``pcs resource create vip`` line exactly as README.md shows it."""
    text = README.read_text().splitlines()
    lines = [ln.strip() for ln in text if ln.strip().startswith("pcs resource create vip")]
    assert len(lines) == 1, f"README.md should show one 'pcs resource create vip' line, found {lines}"
    return shlex.split(lines[0])


@pytest.fixture
def echo(lab3: Lab) -> Iterator[None]:
    """A TCP server on every node that answers with the node's hostname (killed by pid afterwards)."""
    started: dict[str, tuple[int, str]] = {}
    for n in lab3.nodes:
        pid1 = lab3.pid(n)
        code = ECHO_SERVER.format(port=PORT)
        # `timeout` bounds a server a killed test run leaves behind; the node's init adopts it
        background = 'timeout 600 python3 -c "$0" </dev/null >/dev/null 2>&1 & echo $!'
        out = lab3.run(n, "sh", "-c", background, code)
        assert pid1 is not None
        started[n] = (pid1, out.stdout.strip())
    yield
    for n, (pid1, pid) in started.items():
        if lab3.pid(n) == pid1:  # same boot: the pid still names our server
            lab3.run(n, "kill", pid, check=False)


@pytest.fixture
def vip(lab3: Lab) -> Iterator[str]:
    """The VIP created with README's command and started; yields its node. Deleted afterwards."""
    cmd = readme_create_command()
    assert f"ip={lab3.vip}" in cmd and "ocf:hodr:hodr-vip" in cmd, cmd
    t0 = time.monotonic()
    lab3.run("node1", *cmd)
    try:
        holder = wait_for(lambda: single(lab3.locate("vip")), START_DEADLINE, "vip started on one node")
        wait_for(lambda: node_holders(lab3) == {holder}, 10, f"the VIP on {holder}'s eth0 only")
        print(f"\nTIMING pcs resource create -> VIP on {holder}: {time.monotonic() - t0:.1f}s")
        yield holder
    finally:
        remove_vip(lab3)


def remove_vip(lab: Lab) -> None:
    """Heal, delete the VIP, and leave the cluster formed with no node holding the address."""
    for n in lab.nodes:
        if lab.is_isolated(n):
            lab.heal(n)
    wait_for(lambda: lab.view(live_via(lab)).formed, 60, "the cluster formed again")
    lab.run(live_via(lab), "pcs", "resource", "delete", "vip", check=False, timeout=60)
    wait_for(lambda: not node_holders(lab) and not lab.locate("vip"), 30, "vip deleted everywhere")
    out = lab.run(live_via(lab), "cibadmin", "-Q", "-o", "resources").stdout
    assert 'id="vip"' not in out, "vip still configured"


# -------------------------------------------------------------------------------------- tests


@cluster
def test_readme_command_starts_a_reachable_vip(lab3: Lab, vip: str, echo: None) -> None:
    """(1) README's command works as written: one node has 192.168.77.100/24, the client reaches it."""
    assert vip_prefixes(lab3, vip) == [24]
    cib = ET.fromstring(lab3.run(vip, "cibadmin", "-Q", "-o", "resources").stdout)
    prim = cib.find(".//primitive[@id='vip']")
    assert prim is not None
    assert (prim.get("class"), prim.get("provider"), prim.get("type")) == ("ocf", "hodr", "hodr-vip")
    params = {nv.get("name"): nv.get("value") for nv in prim.iterfind("instance_attributes/nvpair")}
    assert params == {"ip": lab3.vip, "cidr_netmask": "24"}, params
    assert [op.get("interval") for op in prim.iter("op") if op.get("name") == "monitor"] == ["10s"]
    lab3.client_run("ping", "-c", "1", "-W", "2", lab3.vip)
    assert client_neigh(lab3)[0] == node_macs(lab3)[vip]
    assert wait_for(lambda: who_answers(lab3), 10, "a TCP answer from the VIP") == vip
    # the agent's monitor, run by hand on the holder, agrees with Pacemaker
    r = lab3.run(vip, "crm_resource", "--force-check", "-r", "vip", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@cluster
def test_pcs_resource_move(lab3: Lab, vip: str, echo: None) -> None:
    """(3) ``pcs resource move vip <node>`` moves it; ``pcs resource clear`` leaves no constraint.

    pcs 0.11's ``move`` removes its constraint itself once the resource runs on the target, and
    refuses ("Unable to ensure that moved resource 'vip' will stay on the same node...") when the
    scheduler would move it back afterwards, which with Pacemaker's default resource-stickiness
    of 0 it does whenever the target is busier (e.g. runs fence-lab, as node1 usually does here).
    Production clusters usually set stickiness; so does this test, on the VIP only (a meta
    attribute: no restart).
    """
    old, macs = vip, node_macs(lab3)
    target = next(n for n in lab3.nodes if n != old)
    lab3.run(old, "pcs", "resource", "meta", "vip", "resource-stickiness=1")
    with VipWatch(lab3, arp=True) as watch:
        wait_for(lambda: any(macs[old] in ms for _, ms in watch.arp), 10, f"{old} answering the client's ARP")
        t0 = time.monotonic()
        lab3.run(old, "pcs", "resource", "move", "vip", target, timeout=90)
        t_move = time.monotonic() - t0
        assert lab3.locate("vip") == [target]
        moved = wait_for(lambda: watch.first(lambda s: s.holders == {target}, t0), 10, f"VIP on {target}")
        assert wait_for(lambda: who_answers(lab3), 10, "a TCP answer from the VIP") == target
        wait_for(lambda: any(macs[target] in ms for t, ms in watch.arp if t > moved.t), 10, "ARP answer")
        lab3.run(target, "pcs", "resource", "clear", "vip")
        constraints = lab3.run(target, "cibadmin", "-Q", "-o", "constraints").stdout
        assert 'rsc="vip"' not in constraints, constraints
        lab3.run(target, "crm_resource", "--wait", "--timeout=30s")
        assert lab3.locate("vip") == [target]  # stays after the constraint is gone
        gone = watch.first(lambda s: old not in s.holders, t0)
        assert gone is not None and gone.t <= moved.t
    watch.check(macs)
    outage = watch.arp_outage(macs[old], macs[target])
    print(
        f"\nTIMING pcs resource move {old}->{target}: command {t_move:.1f}s, address off {old} -> on "
        f"{target} {moved.t - gone.t:.2f}s, client ARP outage {_secs(outage)}"
    )


@cluster
@pytest.mark.parametrize(
    ("family", "ip", "prefix"), [("ipv4", "192.168.77.150", "24"), ("ipv6", "fd00:77::150", "64")]
)
def test_ocf_tester_in_a_lab_node(lab3: Lab, family: str, ip: str, prefix: str) -> None:
    """(5) ocf-tester passes on ocf:hodr:hodr-vip inside a node (its own copy of the LAN)."""
    node = "node3"
    own6 = f"fd00:77::{10 + lab3.topology.index(node)}/64"
    try:
        if family == "ipv6":
            lab3.run(node, "ip", "-6", "addr", "add", own6, "dev", "eth0")
            wait_for(
                lambda: not lab3.run(node, "ip", "-6", "addr", "show", "dev", "eth0", "tentative").stdout,
                10,
                "DAD of the node's own IPv6 address",
            )
        t0 = time.monotonic()
        r = lab3.run(
            node, "ocf-tester", "-n", f"vip-{family}", "-o", f"ip={ip}", "-o", f"cidr_netmask={prefix}",
            AGENT, check=False, timeout=240,
        )  # fmt: skip
        print(f"\nTIMING ocf-tester {family}: {time.monotonic() - t0:.1f}s")
        assert r.returncode == 0 and "passed all tests" in r.stdout, r.stdout + r.stderr
        assert ip not in lab3.run(node, "ip", "addr", "show", "dev", "eth0").stdout
    finally:
        lab3.run(node, "ip", "addr", "del", f"{ip}/{prefix}", "dev", "eth0", check=False)
        if family == "ipv6":
            lab3.run(node, "ip", "-6", "addr", "del", own6, "dev", "eth0", check=False)


def _neigh_floor(lab: Lab) -> float:
    """Seconds after its last confirmation before the client's kernel would re-resolve an entry by
    itself: REACHABLE for at least base_reachable_time/2, then DELAY for delay_first_probe_time,
    and only then a probe (to the old MAC first)."""
    sysctl = "/proc/sys/net/ipv4/neigh/eth0/"
    read = lab.client_run("cat", sysctl + "base_reachable_time_ms", sysctl + "delay_first_probe_time")
    base_ms, delay = (int(x) for x in read.stdout.split())
    return base_ms / 2000 + delay


@cluster
def test_crash_moves_vip_and_garp_updates_client(lab3: Lab, vip: str, echo: None) -> None:
    """(2) Crash the holder: the VIP moves, the client's neighbour entry flips to the new node's MAC
    within GARP_DEADLINE of the address appearing (no waiting for expiry), the client reaches it."""
    old, macs = vip, node_macs(lab3)
    survivors = [n for n in lab3.nodes if n != old]
    t_confirm = time.monotonic()  # the entry's last confirmation is this ARP reply or a later one
    lab3.client_run("ping", "-c", "1", "-W", "2", lab3.vip)
    assert client_neigh(lab3)[0] == macs[old]
    floor = _neigh_floor(lab3)
    fenced_before = lab3.fence_count(old, via=survivors[0])
    ping = PingLog(lab3)
    try:
        with VipWatch(lab3) as watch:
            wait_for(lambda: ping.replies, 10, "ping replies before the crash")
            t0, wall0 = time.monotonic(), time.time()
            lab3.crash(old)
            moved = wait_for(
                lambda: watch.first(lambda s: bool(s.holders) and old not in s.holders, t0),
                FAILOVER_DEADLINE,
                "the VIP on a survivor",
            )
            new = single(moved.holders)
            assert new in survivors, moved
            flipped = wait_for(
                lambda: watch.first(lambda s: s.neigh == macs[new], t0),
                GARP_DEADLINE + 1,
                f"the client's neighbour entry for the VIP at {new}'s MAC",
            )
            assert lab3.locate("vip", via=new) == [new]
            assert wait_for(lambda: who_answers(lab3), 10, "a TCP answer from the VIP") == new
            wait_for(lambda: [t for t in ping.replies if t > wall0], 10, "ping replies after the crash")
            # the crashed node is fenced, powered on again by fence_lab, and rejoins
            lab3.wait_fenced(old, 20, before=fenced_before, via=new)
            wait_for(lambda: lab3.pid(old) is not None, TEST_REBOOT_DELAY + 15, f"{old} powered on again")
            lab3.wait_online([old], 30, via=new)
            wait_for(lambda: lab3.view(old).formed, 30, f"{old} sees the whole cluster")
            wait_for(lambda: single(node_holders(lab3)) in lab3.locate("vip"), 20, "one holder, settled")
    finally:
        ping.stop()
    watch.check(macs)
    garp_lag = flipped.t - moved.t
    gap = ping.longest_gap_after(wall0)
    print(
        f"\nTIMING crash {old}: VIP on {new} after {moved.t - t0:.2f}s; client neighbour entry -> "
        f"{new}'s MAC ({flipped.neigh_state}) after {flipped.t - t0:.2f}s, {garp_lag:+.2f}s after the "
        f"address (kernel alone: >= {floor:.0f}s); longest client ping gap {_secs(gap)}; "
        f"sweep {watch.sweep_period() * 1000:.0f} ms"
    )
    assert garp_lag <= GARP_DEADLINE, f"neighbour entry changed {garp_lag:.2f}s after the address moved"
    assert flipped.t - t_confirm < floor, "the client's kernel could have re-resolved by itself by then"
    assert gap is not None and gap < FAILOVER_DEADLINE


@cluster
def test_isolating_the_holder_moves_vip_without_two_holders(lab3: Lab, vip: str, echo: None) -> None:
    """(4) Pull the holder's cable: the majority fences it and starts the VIP elsewhere; the isolated
    node drops the VIP; no sweep ever sees two nodes with the address configured, and no ARP
    request from the client is ever answered by two MACs.

    "No two holders" is strict here, not just "not both reachable": with fencing on, the majority
    starts the VIP only after the isolated node is confirmed powered off (fence_lab flushes its
    eth0), and the isolated node itself stops the VIP when it loses quorum
    (no-quorum-policy=stop), which in practice comes first (~4 s). Without fencing only the
    second mechanism would remain, and it races with the majority's start.
    """
    old, macs = vip, node_macs(lab3)
    others = [n for n in lab3.nodes if n != old]
    fenced_before = lab3.fence_count(old, via=others[0])
    with VipWatch(lab3, arp=True) as watch:
        wait_for(lambda: any(macs[old] in ms for _, ms in watch.arp), 10, f"{old} answering the client's ARP")
        t0 = time.monotonic()
        lab3.isolate(old)
        dropped = wait_for(
            lambda: watch.first(lambda s: old not in s.holders, t0), DROP_DEADLINE, f"{old} dropping the VIP"
        )
        moved = wait_for(
            lambda: watch.first(lambda s: bool(s.holders) and old not in s.holders, t0),
            FAILOVER_DEADLINE,
            "the VIP on another node",
        )
        new = single(moved.holders)
        assert new in others, moved
        assert lab3.locate("vip", via=new) == [new]
        assert wait_for(lambda: who_answers(lab3), 10, "a TCP answer from the VIP") == new
        # the isolated node is fenced, boots still cut off, and as a quorumless partition of one
        # it must not start the VIP
        lab3.wait_fenced(old, 25, before=fenced_before, via=new)
        wait_for(lambda: lab3.pid(old) is not None, TEST_REBOOT_DELAY + 15, f"{old} powered on again")
        wait_for(lambda: lab3.view(old).dc is not None, 30, f"{old} running its own partition")
        assert not lab3.view(old).quorate
        t_heal = time.monotonic()
        lab3.heal(old)
        lab3.wait_online([old], 30, via=new)
        wait_for(lambda: lab3.view(old).formed, 30, f"{old} sees the whole cluster")
        wait_for(lambda: single(node_holders(lab3)) in lab3.locate("vip"), 20, "one holder, settled")
    watch.check(macs)
    assert all(old not in s.holders for s in watch.samples if dropped.t <= s.t < t_heal)
    assert all(len(s.reachable_holders) <= 1 for s in watch.samples)
    off = watch.first(lambda s: old not in s.powered, t0)  # fence_lab's power-off
    how = f"powered off (fenced) after {off.t - t0:.2f}s" if off else "never powered off"
    print(
        f"\nTIMING isolate {old}: no VIP after {dropped.t - t0:.2f}s, {how}; VIP on {new} after "
        f"{moved.t - t0:.2f}s ({moved.t - dropped.t:.2f}s with no holder); client ARP outage "
        f"{_secs(watch.arp_outage(macs[old], macs[new]))}; sweep {watch.sweep_period() * 1000:.0f} ms"
    )

"""hodr-vip on a real (namespaced) LAN: edge cases, duplicates, and neighbour caches that move.

Hosts h1..h3 share a bridge that lives in its own namespace. The agent runs as the ``ocf/hodr-vip``
shim inside a host's namespace; peers observe with ``ip neigh``. Every wait has a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import wait_for
from tests.netns_fixtures import VIP4, VIP6, Host, Lan, cleanup_stale, destroy_lan, make_lan

pytestmark = pytest.mark.netns

STALE_MAC = "02:00:00:00:00:99"


@pytest.fixture
def lan(request: pytest.FixtureRequest) -> Iterator[Lan]:
    cleanup_stale()
    built = make_lan(request.node.name, hosts=3)
    request.addfinalizer(lambda: destroy_lan(built))
    yield built


def probe(host: Host, params: dict[str, str]) -> int:
    return host.agent("monitor", params, interval_ms=0).rc


def monitor(host: Host, params: dict[str, str]) -> int:
    return host.agent("monitor", params, interval_ms=10_000).rc


# ------------------------------------------------------------------------------ idempotence


def test_double_start_and_stop_when_absent(lan: Lan) -> None:
    h1 = lan.hosts[0]
    p = {"ip": VIP4, "cidr_netmask": "24", "nic": "eth0"}
    assert h1.agent("stop", p).rc == 0  # stop when absent
    assert h1.agent("start", p).rc == 0
    assert h1.agent("start", p).rc == 0
    assert [a for a, _p, _f in h1.addresses()].count(VIP4) == 1
    assert h1.agent("stop", p).rc == 0
    assert h1.agent("stop", p).rc == 0
    assert not h1.has(VIP4)


def test_wrong_prefix_is_partial_and_start_repairs_it(lan: Lan) -> None:
    h1 = lan.hosts[0]
    p = {"ip": VIP4, "cidr_netmask": "24", "nic": "eth0"}
    h1.ip("addr", "add", f"{VIP4}/16", "dev", "eth0")
    result = h1.agent("monitor", p)
    assert result.rc == 1 and "/16" in result.reasons[0]
    assert h1.agent("start", p).rc == 0
    assert [(a, n) for a, n, _f in h1.addresses("eth0") if a == VIP4] == [(VIP4, 24)]
    assert monitor(h1, p) == 0


def test_address_on_another_interface_of_this_host_is_refused(lan: Lan) -> None:
    h1 = lan.hosts[0]
    h1.ip("link", "add", "side0", "type", "veth", "peer", "name", "side1")
    h1.ip("addr", "add", f"{VIP4}/32", "dev", "side0")
    p = {"ip": VIP4, "cidr_netmask": "24", "nic": "eth0"}
    assert monitor(h1, p) == 1
    start = h1.agent("start", p)
    assert start.rc == 1 and "side0" in start.reasons[0]
    assert h1.agent("stop", p).rc == 0
    assert h1.has(VIP4, "side0")  # not ours to remove


# ------------------------------------------------------------------------- interface trouble


@pytest.mark.parametrize("explicit_nic", [True, False], ids=["nic-given", "nic-discovered"])
def test_nic_removed(lan: Lan, explicit_nic: bool) -> None:
    h1 = lan.hosts[0]
    p = {"ip": VIP4, **({"nic": "eth0", "cidr_netmask": "24"} if explicit_nic else {})}
    assert h1.agent("start", p).rc == 0
    h1.ip("link", "del", "eth0")
    wait_for(lambda: not h1.has(VIP4), 5, "the address to vanish with its interface")
    recurring = h1.agent("monitor", p)
    assert recurring.rc == 1 and recurring.reasons  # soft: recover elsewhere, no ban, no 6
    assert probe(h1, p) == 7
    assert h1.agent("stop", p).rc == 0
    assert h1.agent("start", p).rc == 2


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_carrier_lost(lan: Lan, family: str) -> None:
    h1 = lan.hosts[0]
    p = {"ip": VIP4 if family == "ipv4" else VIP6}
    assert h1.agent("start", p).rc == 0
    lan.bridge("link", "set", lan.port(h1), "down")  # the switch port goes dark
    down = h1.agent("monitor", p)
    assert down.rc == 7 and "eth0 is down" in down.reasons[0]
    assert h1.agent("monitor", {**p, "check_link_status": "false"}).rc == 0
    assert h1.agent("start", p).rc == 5  # IPaddr2: link down on start → not installed here
    assert h1.agent("stop", p).rc == 0
    assert not h1.has(p["ip"])


def test_link_down_before_start_adds_nothing(lan: Lan) -> None:
    h1 = lan.hosts[0]
    h1.ip("link", "set", "eth0", "down")
    p = {"ip": VIP4, "cidr_netmask": "24", "nic": "eth0"}
    start = h1.agent("start", p)
    assert start.rc == 5 and "down" in start.reasons[0]
    assert not h1.has(VIP4)
    assert probe(h1, p) == 7


def test_admin_down_after_start(lan: Lan) -> None:
    h1 = lan.hosts[0]
    p = {"ip": VIP4, "cidr_netmask": "24", "nic": "eth0"}
    assert h1.agent("start", p).rc == 0
    h1.ip("link", "set", "eth0", "down")
    assert monitor(h1, p) == 7
    assert h1.agent("stop", p).rc == 0
    assert not h1.has(VIP4)


# ---------------------------------------------------------------------------- bad parameters


@pytest.mark.parametrize(
    ("params", "start_rc"),
    [
        ({"ip": "192.168.77.256"}, 6),
        ({"ip": "not-an-ip"}, 6),
        ({"ip": VIP4, "cidr_netmask": "33"}, 6),
        ({"ip": VIP4, "cidr_netmask": "255.0.255.0"}, 6),
        ({"ip": VIP6, "cidr_netmask": "129"}, 6),
        ({"ip": VIP4, "nic": "eth0:0"}, 6),
        ({"ip": VIP4, "nic": "nosuch0"}, 2),
        ({"ip": "fe80::100"}, 6),
    ],
)
def test_bad_values(lan: Lan, params: dict[str, str], start_rc: int) -> None:
    h1 = lan.hosts[0]
    before = {(a, n) for a, n, _f in h1.addresses()}  # flags change while link-local DAD runs
    start = h1.agent("start", params)
    assert start.rc == start_rc and start.reasons
    assert h1.agent("validate-all", params).rc == (6 if start_rc == 6 else 0)
    assert probe(h1, params) == 7
    assert h1.agent("stop", params).rc == 0
    assert {(a, n) for a, n, _f in h1.addresses()} == before  # nothing added anywhere


# --------------------------------------------------------------------------------- duplicates


def test_ipv4_duplicate_on_another_host_is_refused(lan: Lan) -> None:
    h1, h2, _h3 = lan.hosts
    h2.ip("addr", "add", f"{VIP4}/24", "dev", "eth0")
    start = h1.agent("start", {"ip": VIP4})
    assert start.rc == 1
    assert "in use by another host" in start.reasons[0] and h2.mac() in start.reasons[0]
    assert not h1.has(VIP4)
    assert h2.has(VIP4)


def test_ipv6_duplicate_fails_dad_and_is_removed(lan: Lan) -> None:
    h1, h2, _h3 = lan.hosts
    h2.ip("addr", "add", f"{VIP6}/64", "dev", "eth0", "nodad")
    start = h1.agent("start", {"ip": VIP6})
    assert start.rc == 1 and "DAD failed" in start.reasons[0]
    assert not h1.has(VIP6)


def test_ipv6_start_waits_for_dad(lan: Lan) -> None:
    h1 = lan.hosts[0]
    assert h1.agent("start", {"ip": VIP6}).rc == 0
    flags = [f for a, _p, f in h1.addresses("eth0") if a == VIP6]
    assert flags == [[]]  # neither tentative nor nodad: DAD ran and passed before start returned


def test_ipv6_nodad(lan: Lan) -> None:
    h1 = lan.hosts[0]
    assert h1.agent("start", {"ip": VIP6, "nodad": "true"}).rc == 0
    assert [f for a, _p, f in h1.addresses("eth0") if a == VIP6] == [["nodad"]]


# ------------------------------------------------------------------ neighbour caches follow


@pytest.mark.parametrize("mode", ["both", "request", "reply"])
def test_gratuitous_arp_updates_a_stale_neighbour(lan: Lan, mode: str) -> None:
    h1, h2, _h3 = lan.hosts
    h2.ip("neigh", "replace", VIP4, "lladdr", STALE_MAC, "dev", "eth0", "nud", "stale")
    assert h2.neigh_mac(VIP4) == STALE_MAC
    assert h1.agent("start", {"ip": VIP4, "arp_mode": mode, "arp_count": "3", "arp_interval": "50"}).rc == 0
    wait_for(lambda: h2.neigh_mac(VIP4) == h1.mac(), 5, f"h2's entry for {VIP4} to show h1's MAC")


def test_failover_moves_a_clients_cache_without_expiry(lan: Lan) -> None:
    h1, h2, client = lan.hosts
    p = {"ip": VIP4}
    assert h1.agent("start", p).rc == 0
    client.exec("ping", "-c", "1", "-W", "2", VIP4)  # the client learns h1's MAC the normal way
    assert client.neigh_mac(VIP4) == h1.mac()
    assert h1.agent("stop", p).rc == 0
    assert h2.agent("start", p).rc == 0
    wait_for(lambda: client.neigh_mac(VIP4) == h2.mac(), 5, "the client's entry to show h2's MAC")
    client.exec("ping", "-c", "1", "-W", "2", VIP4)


def test_unsolicited_na_updates_a_stale_neighbour(lan: Lan) -> None:
    h1, _h2, h3 = lan.hosts
    h3.ip("-6", "neigh", "replace", VIP6, "lladdr", STALE_MAC, "dev", "eth0", "nud", "stale")
    assert h3.neigh_mac(VIP6) == STALE_MAC
    assert h1.agent("start", {"ip": VIP6, "arp_count": "3", "arp_interval": "50"}).rc == 0
    wait_for(lambda: h3.neigh_mac(VIP6) == h1.mac(), 5, f"h3's entry for {VIP6} to show h1's MAC")
    h3.exec("ping", "-6", "-c", "1", "-W", "2", VIP6)


def test_no_announcement_when_arp_count_is_zero(lan: Lan) -> None:
    h1, h2, _h3 = lan.hosts
    h2.ip("neigh", "replace", VIP4, "lladdr", STALE_MAC, "dev", "eth0", "nud", "permanent")
    assert h1.agent("start", {"ip": VIP4, "arp_count": "0"}).rc == 0
    assert h2.neigh_mac(VIP4) == STALE_MAC

"""hodr-vip logic without touching the network: parameters, classification, nic choice, frames.

The rtnetlink reader is also compared with pyroute2 on the current namespace (read-only).
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from hodr.takeover import garp, vip
from hodr.takeover.ocf import OCF, InvalidSetup
from hodr.takeover.vip import AddrEntry, Link, Route, Served
from hodr.takeover.vip_agent import VipConfig, _start_error, parse_config

MAC = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("020000000002")
VIP4 = IPv4Address("192.168.77.100")
VIP6 = IPv6Address("fd00:77::100")


def config(**params: str) -> VipConfig:
    return parse_config(params.get)


# ------------------------------------------------------------------------------- parameters


def test_minimal_config_uses_documented_defaults() -> None:
    cfg = config(ip="192.168.77.100")
    assert (cfg.ip, cfg.prefixlen, cfg.nic) == (VIP4, None, None)
    assert (cfg.arp_count, cfg.arp_interval_ms, cfg.arp_mode) == (5, 200, "both")
    assert cfg.check_link is True and cfg.nodad is False and cfg.dad_timeout == 10


def test_full_config() -> None:
    cfg = config(
        ip="fd00:77::100",
        cidr_netmask="64",
        nic="eth1",
        arp_count="0",
        arp_interval="50",
        arp_mode="reply",
        check_link_status="false",
        dad_timeout="3",
        nodad="yes",
    )
    assert (cfg.ip, cfg.prefixlen, cfg.nic) == (VIP6, 64, "eth1")
    assert (cfg.arp_count, cfg.arp_interval_ms, cfg.arp_mode) == (0, 50, "reply")
    assert cfg.check_link is False and cfg.nodad is True and cfg.dad_timeout == 3


def test_dotted_netmask_is_accepted_for_ipv4() -> None:
    assert config(ip="10.1.2.3", cidr_netmask="255.255.255.0").prefixlen == 24


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"ip": "192.168.77.300"},
        {"ip": "vip.example.com"},
        {"ip": "0.0.0.0"},
        {"ip": "127.0.0.5"},
        {"ip": "::1"},
        {"ip": "224.0.0.5"},
        {"ip": "255.255.255.255"},
        {"ip": "::ffff:192.168.77.100"},
        {"ip": "192.168.77.100", "cidr_netmask": "0"},
        {"ip": "192.168.77.100", "cidr_netmask": "33"},
        {"ip": "192.168.77.100", "cidr_netmask": "24x"},
        {"ip": "192.168.77.100", "cidr_netmask": "255.0.255.0"},
        {"ip": "fd00:77::100", "cidr_netmask": "129"},
        {"ip": "192.168.77.0", "cidr_netmask": "24"},
        {"ip": "192.168.77.255", "cidr_netmask": "24"},
        {"ip": "fe80::100"},
        {"ip": "192.168.77.100", "nic": "eth0:1"},
        {"ip": "192.168.77.100", "nic": "a-very-long-interface-name"},
        {"ip": "192.168.77.100", "nic": "eth/0"},
        {"ip": "192.168.77.100", "nic": "eth 0"},
        {"ip": "192.168.77.100", "arp_count": "-1"},
        {"ip": "192.168.77.100", "arp_count": "many"},
        {"ip": "192.168.77.100", "arp_interval": "0"},
        {"ip": "192.168.77.100", "arp_mode": "gratuitous"},
        {"ip": "192.168.77.100", "check_link_status": "maybe"},
        {"ip": "192.168.77.100", "dad_timeout": "1000"},
    ],
)
def test_inherently_invalid_parameters_are_err_configured(params: dict[str, str]) -> None:
    with pytest.raises(InvalidSetup) as info:
        config(**params)
    assert info.value.rc == OCF.ERR_CONFIGURED
    assert info.value.reason


def test_link_local_with_nic_is_fine() -> None:
    assert config(ip="fe80::100", nic="eth0", cidr_netmask="64").nic == "eth0"


def test_point_to_point_prefixes_have_no_broadcast_check() -> None:
    assert config(ip="192.168.77.100", cidr_netmask="32").prefixlen == 32
    assert config(ip="192.168.77.0", cidr_netmask="31").prefixlen == 31


@pytest.mark.parametrize(
    ("exc", "rc", "invalid"),
    [
        (vip.NicMissing("gone"), OCF.ERR_ARGS, True),
        (vip.NicUnsupported("lo"), OCF.ERR_ARGS, True),
        (vip.LinkDown("down"), OCF.ERR_INSTALLED, False),
        (vip.MissingSoftware("no pyroute2"), OCF.ERR_INSTALLED, False),
        (vip.DuplicateAddress("dup"), OCF.ERR_GENERIC, False),
        (vip.AddressConflict("eth1"), OCF.ERR_GENERIC, False),
        (vip.AddressTimeout("slow"), OCF.ERR_GENERIC, False),
        (vip.KernelRefused(1, "EPERM"), OCF.ERR_PERM, False),
        (vip.KernelRefused(22, "EINVAL"), OCF.ERR_GENERIC, False),
    ],
)
def test_start_failures_map_to_codes(exc: vip.VipError, rc: OCF, invalid: bool) -> None:
    err = _start_error(exc)
    assert err.rc == rc
    assert isinstance(err, InvalidSetup) is invalid


# ---------------------------------------------------------------------------- classification

ETH0 = Link(2, "eth0", vip.ARPHRD_ETHER, vip.IFF_UP, vip.IF_OPER_UP, MAC)


def test_classify_nic_missing() -> None:
    assert vip.classify(VIP4, 24, None, []).served is Served.NIC_MISSING


def test_classify_absent_ok_and_link_states() -> None:
    other = AddrEntry(2, IPv4Address("192.168.77.11"), 24)
    ours = AddrEntry(2, VIP4, 24)
    assert vip.classify(VIP4, 24, ETH0, [other]).served is Served.ABSENT
    obs = vip.classify(VIP4, 24, ETH0, [other, ours])
    assert obs.served is Served.OK and obs.ours == ours
    down = Link(2, "eth0", vip.ARPHRD_ETHER, vip.IFF_UP, 3, MAC)  # LOWERLAYERDOWN
    assert vip.classify(VIP4, 24, down, [ours]).served is Served.LINK_DOWN
    assert vip.classify(VIP4, 24, down, [ours], check_link=False).served is Served.OK
    admin_down = Link(2, "eth0", vip.ARPHRD_ETHER, 0, vip.IF_OPER_UNKNOWN, MAC)
    assert vip.classify(VIP4, 24, admin_down, [ours]).served is Served.LINK_DOWN
    unknown = Link(2, "eth0", vip.ARPHRD_ETHER, vip.IFF_UP, vip.IF_OPER_UNKNOWN, MAC)
    assert vip.classify(VIP4, 24, unknown, [ours]).served is Served.OK  # virtual devices


def test_classify_partial_cases() -> None:
    wrong_prefix = vip.classify(VIP4, 24, ETH0, [AddrEntry(2, VIP4, 16)])
    assert wrong_prefix.served is Served.PARTIAL and wrong_prefix.strays
    elsewhere = vip.classify(VIP4, 24, ETH0, [AddrEntry(3, VIP4, 24)])
    assert elsewhere.served is Served.PARTIAL and elsewhere.elsewhere
    both = vip.classify(VIP4, 24, ETH0, [AddrEntry(2, VIP4, 24), AddrEntry(3, VIP4, 24)])
    assert both.served is Served.PARTIAL
    failed = vip.classify(VIP6, 64, ETH0, [AddrEntry(2, VIP6, 64, vip.IFA_F_DADFAILED | vip.IFA_F_TENTATIVE)])
    assert failed.served is Served.PARTIAL and "DAD failed" in failed.detail


def test_classify_tentative_counts_as_served() -> None:
    obs = vip.classify(VIP6, 64, ETH0, [AddrEntry(2, VIP6, 64, vip.IFA_F_TENTATIVE)])
    assert obs.served is Served.OK and obs.ours is not None and obs.ours.tentative


# ----------------------------------------------------------------------------- nic discovery

LINKS = [
    Link(1, "lo", vip.ARPHRD_LOOPBACK, 1, 0, b""),
    ETH0,
    Link(3, "eth1", vip.ARPHRD_ETHER, 1, 6, OTHER),
]


def route(dst: str, oif: int, table: int = vip.RT_TABLE_MAIN, gateway: str | None = None) -> Route:
    net, length = dst.split("/")
    address = ip_address(net)
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    gw = ip_address(gateway) if gateway else None
    return Route(family, int(length), address, oif, table, vip.RTN_UNICAST, gw)


def test_connected_route_gives_nic_and_prefix() -> None:
    routes = [route("0.0.0.0/0", 2, gateway="192.168.77.1"), route("192.168.77.0/24", 2)]
    assert vip.choose_nic(VIP4, routes, LINKS) == ("eth0", 24)


def test_longest_prefix_wins() -> None:
    routes = [route("192.168.0.0/16", 3), route("192.168.77.0/24", 2)]
    assert vip.choose_nic(VIP4, routes, LINKS) == ("eth0", 24)


def test_ambiguity_is_an_error_not_a_guess() -> None:
    routes = [route("192.168.77.0/24", 2), route("192.168.77.0/24", 3)]
    with pytest.raises(vip.NicUnresolved, match="eth0, eth1"):
        vip.choose_nic(VIP4, routes, LINKS)
    assert vip.choose_nic(VIP4, routes, LINKS, nic="eth1") == ("eth1", 24)


def test_gateway_default_and_foreign_tables_do_not_count() -> None:
    routes = [
        route("0.0.0.0/0", 2, gateway="10.0.0.1"),
        route("192.168.77.0/24", 2, gateway="10.0.0.1"),
        route("192.168.77.0/24", 3, table=255),
    ]
    with pytest.raises(vip.NicUnresolved, match="no connected route"):
        vip.choose_nic(VIP4, routes, LINKS)


def test_ipv6_discovery_ignores_link_local_routes() -> None:
    routes = [route("fe80::/64", 2), route("fe80::/64", 3), route("fd00:77::/64", 3)]
    assert vip.choose_nic(VIP6, routes, LINKS) == ("eth1", 64)


# ------------------------------------------------------------------------- netlink decoding


def _rta(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def test_parse_link_addr_route_from_raw_messages() -> None:
    link = vip.parse_link(
        struct.pack("=BxHiII", 0, 1, 7, 0x11043, 0)
        + _rta(vip.IFLA_IFNAME, b"eth7\0")
        + _rta(vip.IFLA_ADDRESS, MAC)
        + _rta(vip.IFLA_OPERSTATE, b"\x06")
    )
    assert (link.index, link.name, link.mac_text, link.operational) == (7, "eth7", "02:00:00:00:00:01", True)

    addr = vip.parse_addr(
        struct.pack("=BBBBI", socket.AF_INET6, 64, 0x40, 0, 7)
        + _rta(vip.IFA_ADDRESS, VIP6.packed)
        + _rta(vip.IFA_FLAGS, struct.pack("=I", vip.IFA_F_DADFAILED | vip.IFA_F_TENTATIVE | 0x200))
    )
    assert addr is not None and addr.address == VIP6 and addr.dad_failed and addr.tentative

    r = vip.parse_route(
        struct.pack("=BBBBBBBBI", socket.AF_INET, 24, 0, 0, 254, 2, 253, 1, 0)
        + _rta(vip.RTA_DST, IPv4Address("192.168.77.0").packed)
        + _rta(vip.RTA_OIF, struct.pack("=I", 7))
        + _rta(vip.RTA_TABLE, struct.pack("=I", 254))
    )
    assert r.contains(VIP4) and r.oif == 7 and r.gateway is None and r.table == 254


def test_reader_agrees_with_pyroute2_here() -> None:
    """Both clients read the same tables of this namespace (nothing is changed)."""
    pyroute2 = pytest.importorskip("pyroute2")
    with pyroute2.IPRoute() as ipr:
        theirs_links = {(m["index"], m.get_attr("IFLA_IFNAME")) for m in ipr.get_links()}
        theirs_addrs = {
            (m["index"], m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS"), m["prefixlen"])
            for family in (socket.AF_INET, socket.AF_INET6)
            for m in ipr.get_addr(family=family)
        }
    ours_links = {(link.index, link.name) for link in vip.get_links()}
    ours_addrs = {
        (a.index, str(a.address), a.prefixlen)
        for family in (socket.AF_INET, socket.AF_INET6)
        for a in vip.get_addresses(family)
    }
    assert ours_links == theirs_links
    assert ours_addrs == theirs_addrs
    assert vip.get_link("lo") is not None and vip.get_link("hodrnosuch0") is None


# ------------------------------------------------------------------------------------ frames


def test_gratuitous_request_and_reply_forms() -> None:
    req = garp.parse_arp(garp.announcement_request(MAC, VIP4))
    assert req == garp.ArpPacket(1, MAC, VIP4, garp.BROADCAST_MAC, VIP4)
    rep = garp.parse_arp(garp.announcement_reply(MAC, VIP4))
    assert rep == garp.ArpPacket(2, MAC, VIP4, MAC, VIP4)
    assert len(garp.announcements("both", MAC, VIP4)) == 2
    assert garp.announcements("reply", MAC, VIP4) == [garp.announcement_reply(MAC, VIP4)]
    with pytest.raises(ValueError):
        garp.announcements("loud", MAC, VIP4)


def test_probe_has_zero_sender_ip() -> None:
    probe = garp.parse_arp(garp.probe_request(MAC, VIP4))
    assert probe == garp.ArpPacket(1, MAC, IPv4Address(0), garp.ZERO_MAC, VIP4)


def test_conflict_detection() -> None:
    answer = garp.ArpPacket(2, OTHER, VIP4, MAC, IPv4Address(0))
    assert garp.is_conflict(answer, VIP4, MAC)
    assert not garp.is_conflict(garp.ArpPacket(2, MAC, VIP4, MAC, VIP4), VIP4, MAC)  # our own
    assert garp.is_conflict(garp.ArpPacket(1, OTHER, IPv4Address(0), garp.ZERO_MAC, VIP4), VIP4, MAC)
    unrelated = garp.ArpPacket(
        1, OTHER, IPv4Address("192.168.77.12"), garp.ZERO_MAC, IPv4Address("192.168.77.1")
    )
    assert not garp.is_conflict(unrelated, VIP4, MAC)
    assert garp.parse_arp(b"\x00" * 10) is None


def test_neighbour_advert_layout() -> None:
    na = garp.neighbour_advert(MAC, VIP6)
    kind, code, _checksum, flags, target = struct.unpack_from("!BBHI16s", na)
    assert (kind, code, flags, target) == (136, 0, 0x20000000, VIP6.packed)  # Override, not Solicited
    assert na[24:] == bytes([2, 1]) + MAC

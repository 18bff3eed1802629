"""Telling the LAN that a service address moved: gratuitous ARP, unsolicited NA, ARP probes.

pyroute2 has no packet sender, and the ``arping``/``send_arp`` binaries are not guaranteed to be
installed, so hodr writes the few frames it needs itself, standard library only:

- **gratuitous ARP** (IPv4): on an ``AF_PACKET``/``SOCK_DGRAM`` socket the kernel writes the
  Ethernet header; both the request form (sender IP = target IP = VIP) and the reply form
  (``arping -A``) go out by default, because some hosts and firewalls only honour one opcode
  (ClusterLabs/resource-agents#1117, kube-vip/kube-vip#82). Several rounds, spaced, because a
  single frame is easily lost while a switch relearns the port.
- **unsolicited Neighbour Advertisement** (IPv6): raw ICMPv6 to ``ff02::1`` with the Override flag
  and the target link-layer address option, hop limit 255 (RFC 4861 §7.2.6); the kernel fills in
  the checksum.
- **ARP probe** (RFC 5227): a request with sender IP 0.0.0.0 asking who holds the VIP; any answer
  from another MAC means the address is already in use and must not be added here.

Receivers only update neighbour entries they already have (unless ``arp_accept``): exactly the
clients that matter after a failover.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

ETH_P_ARP = 0x0806
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
PACKET_OUTGOING = 4
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ARP_FORMAT = "!HHBBH6s4s6s4s"
ARP_LEN = struct.calcsize(ARP_FORMAT)
MODES = ("request", "reply", "both")

ND_NEIGHBOR_ADVERT = 136
ND_OPT_TARGET_LLADDR = 2
NA_FLAG_OVERRIDE = 0x20000000
ALL_NODES = "ff02::1"

Clock = Callable[[], float]


@dataclass(frozen=True)
class ArpPacket:
    """The fields of an Ethernet/IPv4 ARP payload that conflict detection looks at."""

    op: int
    sender_mac: bytes
    sender_ip: IPv4Address
    target_mac: bytes
    target_ip: IPv4Address


def arp_payload(
    op: int, sender_mac: bytes, sender_ip: IPv4Address, target_mac: bytes, target_ip: IPv4Address
) -> bytes:
    """Build an Ethernet/IPv4 ARP payload (the link header is the kernel's job)."""
    return struct.pack(
        ARP_FORMAT,
        ARPHRD_ETHER,
        0x0800,
        6,
        4,
        op,
        sender_mac,
        sender_ip.packed,
        target_mac,
        target_ip.packed,
    )


def announcement_request(mac: bytes, ip: IPv4Address) -> bytes:
    """Gratuitous request: "who has VIP, tell VIP", target MAC broadcast (ThomasHabets/arping#11)."""
    return arp_payload(ARPOP_REQUEST, mac, ip, BROADCAST_MAC, ip)


def announcement_reply(mac: bytes, ip: IPv4Address) -> bytes:
    """Gratuitous reply: "VIP is at MAC", target = ourselves, like ``arping -A``."""
    return arp_payload(ARPOP_REPLY, mac, ip, mac, ip)


def probe_request(mac: bytes, ip: IPv4Address) -> bytes:
    """RFC 5227 probe: sender IP 0.0.0.0 so nobody's cache learns anything from the question."""
    return arp_payload(ARPOP_REQUEST, mac, IPv4Address(0), ZERO_MAC, ip)


def parse_arp(data: bytes) -> ArpPacket | None:
    """Decode an Ethernet/IPv4 ARP payload; ``None`` for anything else."""
    if len(data) < ARP_LEN:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack_from(ARP_FORMAT, data)
    if (htype, ptype, hlen, plen) != (ARPHRD_ETHER, 0x0800, 6, 4):
        return None
    return ArpPacket(op, sha, IPv4Address(spa), tha, IPv4Address(tpa))


def is_conflict(packet: ArpPacket, ip: IPv4Address, own_mac: bytes) -> bool:
    """True when *packet* shows another host using or claiming *ip* (RFC 5227 §2.1.1).

    A reply or request whose sender IP is the VIP means someone holds it; a probe for the VIP from
    another MAC means someone is about to take it.
    """
    if packet.sender_mac == own_mac:
        return False
    if packet.sender_ip == ip and packet.op in (ARPOP_REQUEST, ARPOP_REPLY):
        return True
    return packet.op == ARPOP_REQUEST and packet.sender_ip == IPv4Address(0) and packet.target_ip == ip


def announcements(mode: str, mac: bytes, ip: IPv4Address) -> list[bytes]:
    """The frames of one announcement round for ``arp_mode`` request|reply|both."""
    if mode not in MODES:
        raise ValueError(f"arp_mode must be one of {', '.join(MODES)}, not {mode!r}")
    frames = []
    if mode in ("request", "both"):
        frames.append(announcement_request(mac, ip))
    if mode in ("reply", "both"):
        frames.append(announcement_reply(mac, ip))
    return frames


def arp_socket(ifname: str) -> socket.socket:
    """An ARP packet socket bound to *ifname* (needs CAP_NET_RAW).

    Pitfall: the protocol is byte-swapped with ``htons`` for the constructor but given in host
    order in address tuples (python/cpython GH-112339).
    """
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ARP))
    try:
        sock.bind((ifname, ETH_P_ARP))
    except OSError:
        sock.close()
        raise
    return sock


def send_garp(
    ifname: str,
    mac: bytes,
    ip: IPv4Address,
    count: int,
    interval: float,
    mode: str = "both",
    until: float | None = None,
    clock: Clock = time.monotonic,
) -> int:
    """Send *count* rounds of gratuitous ARP *interval* seconds apart; return the frames sent.

    Rounds that would end after *until* (a ``clock()`` value, the action's deadline) are skipped:
    an announcement cut short is better than a start that times out.
    """
    frames = announcements(mode, mac, ip)
    sent = 0
    with arp_socket(ifname) as sock:
        for round_no in range(count):
            if round_no:
                if until is not None and clock() + interval > until:
                    break
                time.sleep(interval)
            for frame in frames:
                sock.sendto(frame, (ifname, ETH_P_ARP, 0, ARPHRD_ETHER, BROADCAST_MAC))
                sent += 1
    return sent


def arp_conflict(
    ifname: str,
    mac: bytes,
    ip: IPv4Address,
    probes: int = 3,
    interval: float = 0.2,
    listen: float = 0.4,
    until: float | None = None,
    clock: Clock = time.monotonic,
) -> bytes | None:
    """Probe for *ip* on *ifname*; return the MAC of another host using it, or ``None``.

    Sends *probes* RFC 5227 probes *interval* apart and listens until *listen* seconds after the
    last one (never past *until*). A LAN host answers within milliseconds; the window only has to
    cover a busy one.
    """
    start = clock()
    end = start + (probes - 1) * interval + listen
    if until is not None:
        end = min(end, until)
    frame = probe_request(mac, ip)
    with arp_socket(ifname) as sock:
        next_probe, sent = start, 0
        while True:
            now = clock()
            if sent < probes and now >= next_probe:
                sock.sendto(frame, (ifname, ETH_P_ARP, 0, ARPHRD_ETHER, BROADCAST_MAC))
                sent += 1
                next_probe = now + interval
            wake = min(end, next_probe) if sent < probes else end
            if now >= end:
                return None
            sock.settimeout(max(0.001, wake - now))
            try:
                data, address = sock.recvfrom(2048)
            except TimeoutError:
                continue
            if len(address) > 2 and address[2] == PACKET_OUTGOING:
                continue
            packet = parse_arp(data)
            if packet is not None and is_conflict(packet, ip, mac):
                return packet.sender_mac


def neighbour_advert(mac: bytes, ip: IPv6Address) -> bytes:
    """An unsolicited NA for *ip* with Override set and the target link-layer address option."""
    header = struct.pack("!BBHI16s", ND_NEIGHBOR_ADVERT, 0, 0, NA_FLAG_OVERRIDE, ip.packed)
    option = struct.pack("!BB6s", ND_OPT_TARGET_LLADDR, 1, mac)
    return header + option


def send_unsolicited_na(
    ifindex: int,
    mac: bytes,
    ip: IPv6Address,
    count: int,
    interval: float,
    until: float | None = None,
    clock: Clock = time.monotonic,
) -> int:
    """Send *count* unsolicited Neighbour Advertisements for *ip* to all nodes; return how many.

    Sourced from the VIP when the kernel allows it (after DAD), else from the link-local address:
    receivers check the hop limit and the target, not the source.
    """
    advert = neighbour_advert(mac, ip)
    sent = 0
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        try:
            sock.bind((str(ip), 0, 0, ifindex if ip.is_link_local else 0))
        except OSError:
            pass
        for round_no in range(count):
            if round_no:
                if until is not None and clock() + interval > until:
                    break
                time.sleep(interval)
            sock.sendto(advert, (ALL_NODES, 0, 0, ifindex))
            sent += 1
    return sent

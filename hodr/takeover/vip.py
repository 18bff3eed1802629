"""A service IP address on one interface: observe it, add it, remove it, announce it.

``VirtualIP`` is ensure / verify / announce (pyroute2's ``ensure``/``poll`` idea, IPaddr2's
``ip_served`` word): every operation starts from what the kernel says now, so repeating a start or
a stop is harmless, and the result is checked before it is reported.

Two ways to talk to the kernel, on purpose:

- **reads** (``observe()``, nic discovery) use a tiny read-only rtnetlink client written on the
  standard library below. A monitor runs every ten seconds in a fresh interpreter and importing
  pyroute2 0.9 (asyncio core) costs about 120 ms there, more than the rest of the monitor;
- **writes** (add, delete) use pyroute2, imported inside the functions that change something.

Both see the same kernel tables, and the writes are always followed by a read that verifies them.
Nothing here knows about OCF exit codes: failures are ``VipError`` subclasses that the agent maps.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms cold)

if TYPE_CHECKING:
    import logging

IPAddress = IPv4Address | IPv6Address

# ------------------------------------------------------------------------------ kernel constants

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26

IFLA_ADDRESS, IFLA_IFNAME, IFLA_OPERSTATE = 1, 3, 16
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_FLAGS = 1, 2, 3, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15

IFF_UP = 0x1
IF_OPER_UNKNOWN, IF_OPER_UP = 0, 6  # UNKNOWN is "up" for virtual devices without carrier notion
ARPHRD_ETHER, ARPHRD_INFINIBAND, ARPHRD_LOOPBACK = 1, 32, 772
RT_TABLE_MAIN = 254
RTN_UNICAST = 1

IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40

IFNAMSIZ = 16
GONE_ERRNOS = (errno.ENOENT, errno.EADDRNOTAVAIL, errno.ENODEV, errno.ESRCH)
POLL_INTERVAL = 0.05

_HDR = struct.Struct("=LHHLL")  # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
_RTA = struct.Struct("=HH")  # rtattr


# ----------------------------------------------------------------------------------- errors


class VipError(Exception):
    """Something about the address or its interface that the agent must turn into an exit code."""


class NicMissing(VipError):
    """The interface does not exist (any more): nothing can be served here."""


class NicUnresolved(VipError):
    """No interface could be chosen from the routing table, or several could (never guess eth0)."""


class NicUnsupported(VipError):
    """The interface cannot carry a floating address (loopback, InfiniBand)."""


class LinkDown(VipError):
    """The interface is administratively or operationally down."""


class AddressConflict(VipError):
    """The address is configured on another interface of this host."""


class DuplicateAddress(VipError):
    """Another host answers for the address (ARP probe) or DAD failed."""


class AddressTimeout(VipError):
    """The kernel did not reach the wanted state before the deadline (add, remove, DAD)."""


class MissingSoftware(VipError):
    """pyroute2 is not importable by the interpreter running the agent (only writes need it)."""


class KernelRefused(VipError):
    """rtnetlink rejected a change; ``errno`` says why (EPERM: not root)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


# ---------------------------------------------------------------------------- kernel snapshot


@dataclass(frozen=True)
class Link:
    """One interface as RTM_NEWLINK describes it."""

    index: int
    name: str
    type: int
    flags: int
    operstate: int
    mac: bytes

    @property
    def operational(self) -> bool:
        """Admin up and operationally up (or UNKNOWN, which virtual devices report when fine)."""
        return bool(self.flags & IFF_UP) and self.operstate in (IF_OPER_UNKNOWN, IF_OPER_UP)

    @property
    def mac_text(self) -> str:
        return ":".join(f"{b:02x}" for b in self.mac)


@dataclass(frozen=True)
class AddrEntry:
    """One address as RTM_NEWADDR describes it; ``flags`` is the full 32-bit IFA_FLAGS value."""

    index: int
    address: IPAddress
    prefixlen: int
    flags: int = 0
    label: str = ""

    @property
    def tentative(self) -> bool:
        return bool(self.flags & IFA_F_TENTATIVE)

    @property
    def dad_failed(self) -> bool:
        return bool(self.flags & IFA_F_DADFAILED)


@dataclass(frozen=True)
class Route:
    """The parts of a route nic discovery needs."""

    family: int
    dst_len: int
    dst: IPAddress | None
    oif: int
    table: int
    type: int
    gateway: IPAddress | None = None

    def contains(self, ip: IPAddress) -> bool:
        if self.dst is None or self.dst.version != ip.version:
            return False
        return ip in ip_network(f"{self.dst}/{self.dst_len}", strict=False)


def _attributes(data: bytes, offset: int) -> dict[int, bytes]:
    """rtattr TLVs from *offset* to the end of *data*, keyed by type (nested/byteorder bits off)."""
    attrs: dict[int, bytes] = {}
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            break
        attrs[kind & 0x3FFF] = data[offset + _RTA.size : offset + length]
        offset += (length + 3) & ~3
    return attrs


def _cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_link(body: bytes) -> Link:
    """Decode an RTM_NEWLINK body."""
    _family, kind, index, flags, _change = _IFINFO.unpack_from(body)
    attrs = _attributes(body, _IFINFO.size)
    operstate = attrs.get(IFLA_OPERSTATE, b"\0")[0]
    return Link(
        index, _cstring(attrs.get(IFLA_IFNAME, b"")), kind, flags, operstate, attrs.get(IFLA_ADDRESS, b"")
    )


def parse_addr(body: bytes) -> AddrEntry | None:
    """Decode an RTM_NEWADDR body (IFA_LOCAL is the local address for IPv4 point-to-point too)."""
    family, prefixlen, flags, _scope, index = _IFADDR.unpack_from(body)
    attrs = _attributes(body, _IFADDR.size)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if IFA_FLAGS in attrs:
        (flags,) = struct.unpack("=I", attrs[IFA_FLAGS][:4])
    return AddrEntry(index, ip_address(raw), prefixlen, flags, _cstring(attrs.get(IFA_LABEL, b"")))


def parse_route(body: bytes) -> Route:
    """Decode an RTM_NEWROUTE body (RTA_TABLE overrides the 8-bit rtm_table)."""
    family, dst_len, _src_len, _tos, table, _proto, _scope, kind, _flags = _RTMSG.unpack_from(body)
    attrs = _attributes(body, _RTMSG.size)
    if RTA_TABLE in attrs:
        (table,) = struct.unpack("=I", attrs[RTA_TABLE][:4])
    oif = struct.unpack("=I", attrs[RTA_OIF][:4])[0] if RTA_OIF in attrs else 0
    dst = ip_address(attrs[RTA_DST]) if RTA_DST in attrs else None
    if dst is None and dst_len == 0:
        dst = ip_address(0) if family == socket.AF_INET else IPv6Address(0)
    gateway = ip_address(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
    return Route(family, dst_len, dst, oif, table, kind, gateway)


def _rtnl(msg_type: int, body: bytes, dump: bool = True, attempts: int = 3) -> list[tuple[int, bytes]]:
    """One rtnetlink request; the (type, body) of every answer. Retries interrupted dumps."""
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
    for _attempt in range(attempts):
        answers, interrupted = _rtnl_once(msg_type, body, flags)
        if not interrupted:
            return answers
    raise OSError(errno.EINTR, "rtnetlink dump kept being interrupted by concurrent changes")


def _rtnl_once(msg_type: int, body: bytes, flags: int) -> tuple[list[tuple[int, bytes]], bool]:
    answers: list[tuple[int, bytes]] = []
    interrupted = False
    seq = 1
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.sendall(_HDR.pack(_HDR.size + len(body), msg_type, flags, seq, 0) + body)
        while True:
            data = sock.recv(1 << 18)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, kind, mflags, mseq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    raise OSError(errno.EBADMSG, "malformed rtnetlink message")
                payload = data[offset + _HDR.size : offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue
                interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                if kind == NLMSG_DONE:
                    return answers, interrupted
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return answers, interrupted
                answers.append((kind, payload))
                if not mflags & NLM_F_MULTI:
                    return answers, interrupted


def get_link(name: str) -> Link | None:
    """The interface called *name*, or ``None`` if there is none (looked up by name in the kernel)."""
    raw = name.encode() + b"\0"
    attr = _RTA.pack(_RTA.size + len(raw), IFLA_IFNAME) + raw
    attr += b"\0" * (-len(attr) % 4)
    try:
        answers = _rtnl(RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0) + attr, dump=False)
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    links = [parse_link(body) for kind, body in answers if kind == RTM_NEWLINK]
    return links[0] if links else None


def get_links() -> list[Link]:
    """Every interface in this network namespace."""
    return [parse_link(b) for k, b in _rtnl(RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0)) if k == RTM_NEWLINK]


def get_addresses(family: int) -> list[AddrEntry]:
    """Every address of *family* (``AF_INET``/``AF_INET6``) on every interface."""
    answers = _rtnl(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, 0))
    entries = (parse_addr(body) for kind, body in answers if kind == RTM_NEWADDR)
    return [e for e in entries if e is not None]


def get_routes(family: int) -> list[Route]:
    """Every route of *family* in every table (filtering is the caller's business)."""
    answers = _rtnl(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))
    return [parse_route(body) for kind, body in answers if kind == RTM_NEWROUTE]


def family_of(ip: IPAddress) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


# -------------------------------------------------------------------------------- nic discovery


def choose_nic(
    ip: IPAddress, routes: Iterable[Route], links: Iterable[Link], nic: str | None = None
) -> tuple[str, int]:
    """The interface and prefix length of the connected route to *ip* (IPaddr2's ``findif``).

    Only directly connected unicast routes of the main table count (no gateway, not a default
    route). The longest prefix wins; two interfaces at that length are an ambiguity the operator
    must settle with ``nic``: guessing (or falling back to eth0) floats the address onto the wrong
    network (ClusterLabs/resource-agents#1726, #1963). With *nic* given, only its routes count and
    the result is its prefix length.
    """
    names = {link.index: link.name for link in links}
    candidates = [
        r
        for r in routes
        if r.table == RT_TABLE_MAIN
        and r.type == RTN_UNICAST
        and r.gateway is None
        and r.oif in names
        and r.dst_len > 0
        and r.contains(ip)
        and (nic is None or names[r.oif] == nic)
    ]
    where = f" on {nic}" if nic else ""
    if not candidates:
        raise NicUnresolved(
            f"no connected route to {ip}{where} on this node; set nic and cidr_netmask explicitly"
        )
    best = max(r.dst_len for r in candidates)
    oifs = sorted({r.oif for r in candidates if r.dst_len == best})
    if len(oifs) > 1:
        found = ", ".join(names[i] for i in oifs)
        raise NicUnresolved(f"{ip} is reachable through several interfaces ({found}); set nic")
    return names[oifs[0]], best


def discover(ip: IPAddress, nic: str | None = None) -> tuple[str, int]:
    """``choose_nic`` on this namespace's routing table."""
    family = family_of(ip)
    return choose_nic(ip, get_routes(family), get_links(), nic)


# ------------------------------------------------------------------------------- observation


class Served(Enum):
    """What ``observe()`` found, as one word (IPaddr2's ``ip_served``)."""

    OK = "ok"  # on our interface with our prefix, link usable
    ABSENT = "absent"  # nowhere on this host
    LINK_DOWN = "link_down"  # configured, but the interface cannot carry traffic
    PARTIAL = "partial"  # on another interface, with another prefix, or DAD failed
    NIC_MISSING = "nic_missing"  # the interface itself is gone


@dataclass(frozen=True)
class Observation:
    """A snapshot of the address on this host, and the one word it adds up to."""

    served: Served
    link: Link | None = None
    ours: AddrEntry | None = None
    strays: tuple[AddrEntry, ...] = ()  # on our interface but wrong (prefix, DAD failed)
    elsewhere: tuple[AddrEntry, ...] = ()  # on other interfaces of this host
    detail: str = ""


def classify(
    ip: IPAddress, prefixlen: int, link: Link | None, addrs: Iterable[AddrEntry], check_link: bool = True
) -> Observation:
    """Reduce the kernel's tables to an ``Observation`` (pure, so every case has a unit test)."""
    if link is None:
        return Observation(Served.NIC_MISSING, detail="interface not found")
    mine = [a for a in addrs if a.address == ip]
    ours = next(
        (a for a in mine if a.index == link.index and a.prefixlen == prefixlen and not a.dad_failed),
        None,
    )
    strays = tuple(a for a in mine if a.index == link.index and a is not ours)
    elsewhere = tuple(a for a in mine if a.index != link.index)
    parts = dict(link=link, ours=ours, strays=strays, elsewhere=elsewhere)
    if ours is None and not strays and not elsewhere:
        return Observation(Served.ABSENT, **parts, detail=f"{ip} is not configured")
    if ours is None or strays or elsewhere:
        return Observation(
            Served.PARTIAL, **parts, detail=_describe_partial(ip, prefixlen, link, strays, elsewhere)
        )
    if check_link and not link.operational:
        return Observation(Served.LINK_DOWN, **parts, detail=f"{link.name} is down")
    return Observation(Served.OK, **parts, detail=f"{ip}/{prefixlen} on {link.name}")


def _describe_partial(
    ip: IPAddress, prefixlen: int, link: Link, strays: Sequence[AddrEntry], elsewhere: Sequence[AddrEntry]
) -> str:
    notes = []
    for a in strays:
        what = "DAD failed" if a.dad_failed else f"prefix /{a.prefixlen}, expected /{prefixlen}"
        notes.append(f"on {link.name} with {what}")
    notes.extend(f"also on interface index {a.index} (/{a.prefixlen})" for a in elsewhere)
    return f"{ip} is configured wrongly: " + "; ".join(notes)


# -------------------------------------------------------------------------------- the address


@dataclass
class VirtualIP:
    """A floating address *ip*/*prefixlen* on interface *nic* of the current network namespace.

    Stateless between calls: every method asks the kernel first. Single-threaded by design
    (pyroute2 namespace work forks, which threads make unsafe: svinota/pyroute2#1213).
    """

    ip: IPAddress
    prefixlen: int
    nic: str
    check_link: bool = True
    nodad: bool = False
    dad_timeout: float = 10.0
    log_to: Callable[[], logging.Logger] | None = field(default=None, repr=False)

    @property
    def log(self) -> logging.Logger:
        """``log_to()`` (the agent's logger) or this module's, created on first use: a monitor
        that finds everything in order never imports logging."""
        if self.log_to is not None:
            return self.log_to()
        import logging

        return logging.getLogger(__name__)

    @property
    def family(self) -> int:
        return family_of(self.ip)

    def observe(self) -> Observation:
        """The current state, from two rtnetlink reads (link by name, address dump)."""
        link = get_link(self.nic)
        addrs = get_addresses(self.family) if link is not None else []
        return classify(self.ip, self.prefixlen, link, addrs, self.check_link)

    def served(self) -> Served:
        return self.observe().served

    # ------------------------------------------------------------------------------ present

    def ensure_present(self, until: float, dup_check: bool = True) -> bool:
        """Make the address serve here; True if it was added, False if it already was there.

        Order matters: refuse what cannot work (interface, link, conflicts) before touching
        anything; probe for a duplicate before adding, because once added the kernel answers ARP
        for it and the other host's cache flips; after adding, wait until the kernel lists it and
        (IPv6) DAD is over; undo the add if anything after it fails, so a failed start leaves
        nothing behind.
        """
        obs = self.observe()
        link = self._usable_link(obs)
        if obs.served is Served.OK:
            self._wait_dad(until)
            return False
        if self.check_link and not link.operational:
            raise LinkDown(f"{link.name} is down (operstate {link.operstate}); not adding {self.ip}")
        if obs.elsewhere:
            raise AddressConflict(
                f"{self.ip} is already configured on {self._names(obs.elsewhere)} of this host"
            )
        for stray in obs.strays:
            self.log.info(
                "removing %s/%d from %s before re-adding it", stray.address, stray.prefixlen, self.nic
            )
            self._delete(stray)
        if dup_check and isinstance(self.ip, IPv4Address):
            self._refuse_duplicate(link, self.ip, until)
        self._add(link)
        try:
            self._wait_listed(until)
            self._wait_dad(until)
            final = self.observe()
            if final.served is not Served.OK:
                raise VipError(f"after adding {self.ip}: {final.served.value} ({final.detail})")
        except VipError:
            self._undo()
            raise
        return True

    def _usable_link(self, obs: Observation) -> Link:
        if obs.link is None:
            raise NicMissing(f"interface {self.nic} does not exist")
        link = obs.link
        if link.type == ARPHRD_LOOPBACK:
            raise NicUnsupported(f"{self.nic} is a loopback interface; a floating address needs a LAN")
        if link.type == ARPHRD_INFINIBAND:
            raise NicUnsupported(f"{self.nic} is InfiniBand; gratuitous ARP cannot move the address")
        return link

    def _names(self, entries: Iterable[AddrEntry]) -> str:
        by_index = {link.index: link.name for link in get_links()}
        return ", ".join(sorted({by_index.get(e.index, f"index {e.index}") for e in entries}))

    def _refuse_duplicate(self, link: Link, ip: IPv4Address, until: float) -> None:
        """RFC 5227 probe; a down link (check_link_status=false) skips it, EPERM is reported."""
        from hodr.takeover.garp import arp_conflict

        try:
            owner = arp_conflict(self.nic, link.mac, ip, until=until)
        except OSError as exc:
            if exc.errno == errno.ENETDOWN:
                self.log.warning("duplicate check skipped: %s is down", self.nic)
                return
            code = exc.errno or errno.EIO
            raise KernelRefused(code, f"ARP probe on {self.nic}: {os.strerror(code)}") from exc
        if owner is not None:
            mac = ":".join(f"{b:02x}" for b in owner)
            raise DuplicateAddress(
                f"{self.ip} is already in use by another host ({mac} answered an ARP probe)"
            )

    def _add(self, link: Link) -> None:
        """RTM_NEWADDR with an explicit prefix length (pyroute2 defaults to /32 or /128 otherwise)."""
        spec: dict[str, object] = {"index": link.index, "address": str(self.ip), "prefixlen": self.prefixlen}
        if self.ip.version == 4 and self.prefixlen < 31:
            spec["broadcast"] = str(ip_network(f"{self.ip}/{self.prefixlen}", strict=False).broadcast_address)
        if self.ip.version == 6 and self.nodad:
            spec["flags"] = IFA_F_NODAD
        self.log.info("adding %s/%d to %s", self.ip, self.prefixlen, self.nic)
        try:
            _pyroute2_call("add", spec)
        except KernelRefused as exc:
            if exc.errno != errno.EEXIST:  # EEXIST: someone (a retry) was faster; verified below
                raise

    def _wait_listed(self, until: float) -> None:
        if not _poll(lambda: self.observe().ours is not None, until):
            raise AddressTimeout(f"{self.ip} did not appear on {self.nic} before the deadline")

    def _wait_dad(self, until: float) -> None:
        """Wait until IPv6 duplicate address detection is over; a failure is a duplicate."""
        if self.ip.version != 6:
            return
        limit = min(until, time.monotonic() + self.dad_timeout)

        def settled() -> bool:
            obs = self.observe()
            mine = obs.ours or next((a for a in obs.strays if a.dad_failed), None)
            return mine is not None and (mine.dad_failed or not mine.tentative)

        if not _poll(settled, limit, interval=0.1):
            raise AddressTimeout(f"duplicate address detection for {self.ip} did not finish in time")
        obs = self.observe()
        if obs.ours is None and any(a.dad_failed for a in obs.strays):
            raise DuplicateAddress(f"{self.ip} is already in use by another host (IPv6 DAD failed)")

    def _undo(self) -> None:
        try:
            self.ensure_absent(time.monotonic() + 2.0)
        except VipError as exc:
            self.log.error("could not remove %s after a failed start: %s", self.ip, exc)

    # ------------------------------------------------------------------------------- absent

    def ensure_absent(self, until: float) -> bool:
        """Remove every copy of the address from our interface; True if something was removed.

        Gone already, or the interface gone with it, is success: stop must be idempotent and a
        failed stop fences the node. Copies on other interfaces are not ours to remove.
        """
        link = get_link(self.nic)
        if link is None:
            return False
        present = [a for a in get_addresses(self.family) if a.address == self.ip and a.index == link.index]
        for entry in present:
            self.log.info("removing %s/%d from %s", entry.address, entry.prefixlen, self.nic)
            self._delete(entry)

        def gone() -> bool:
            current = get_link(self.nic)
            return current is None or not any(
                a.address == self.ip and a.index == current.index for a in get_addresses(self.family)
            )

        if not _poll(gone, until):
            raise AddressTimeout(f"{self.ip} is still on {self.nic} after removing it")
        return bool(present)

    def _delete(self, entry: AddrEntry) -> None:
        try:
            _pyroute2_call(
                "del", {"index": entry.index, "address": str(entry.address), "prefixlen": entry.prefixlen}
            )
        except KernelRefused as exc:
            if exc.errno not in GONE_ERRNOS:
                raise

    # ----------------------------------------------------------------------------- announce

    def announce(self, count: int, interval: float, mode: str = "both", until: float | None = None) -> int:
        """Tell the LAN where the address lives now; return the number of frames sent.

        Synchronous on purpose (IPaddr2 backgrounds ``send_arp``): nothing is left running that
        stop would have to find and kill, and the start's deadline bounds it. Failures are logged,
        not raised: the address is up, and clients will re-resolve when their entries expire.
        """
        if count <= 0:
            return 0
        link = get_link(self.nic)
        if link is None or link.type != ARPHRD_ETHER:
            self.log.info("no announcement: %s is not an Ethernet interface", self.nic)
            return 0
        from hodr.takeover import garp

        try:
            if isinstance(self.ip, IPv4Address):
                return garp.send_garp(self.nic, link.mac, self.ip, count, interval, mode, until)
            return garp.send_unsolicited_na(link.index, link.mac, self.ip, count, interval, until)
        except OSError as exc:
            self.log.warning("announcing %s on %s failed: %s", self.ip, self.nic, exc)
            return 0


def _pyroute2_call(command: str, spec: dict[str, object]) -> None:
    """One ``IPRoute.addr`` call; pyroute2 is imported here, not at module load (cold start)."""
    import sys

    try:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError as exc:
        raise MissingSoftware(f"pyroute2 is not installed for {sys.executable}: {exc}") from exc

    try:
        with IPRoute() as ipr:
            ipr.addr(command, **spec)
    except NetlinkError as exc:
        raise KernelRefused(
            exc.code, f"rtnetlink {command} {spec.get('address')}: {os.strerror(exc.code)}"
        ) from exc


def _poll(predicate: Callable[[], bool], until: float, interval: float = POLL_INTERVAL) -> bool:
    """Call *predicate* until it is true or *until* (monotonic) passes; rtnetlink changes are async."""
    while True:
        if predicate():
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(min(interval, max(0.0, until - time.monotonic())))

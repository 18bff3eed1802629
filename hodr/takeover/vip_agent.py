"""hodr-vip: the OCF resource agent that floats a service IP address.

Actions: start, stop, monitor, validate-all, meta-data, methods. No ``reload``: no parameter is
reloadable, so a changed parameter restarts the resource, which for an address is what one wants.

Every exit code is chosen for what Pacemaker does next (``docs/vip.md`` has the table):

- monitor: ok → 0; absent / link down → 7; partial → 1; interface gone → 1, but 7 on a probe;
- start: already there → 0; link down → 5; another host answers (ARP probe, DAD) → 1; interface
  gone or not resolvable from the routes → 2 (this node only);
- stop: gone already, interface gone, invalid setup → 0; only "still there after removing" → 1;
- inherently invalid parameters (bad ip, netmask, nic name) → 6, except on stop (0) and probes (7).

This module imports the standard library only; pyroute2 is imported by ``vip`` when an address is
actually added or removed, so meta-data, validate-all and monitor stay cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from hodr import __version__
from hodr.takeover import ocf, vip
from hodr.takeover.ocf import OCF, Action, AgentError, InvalidSetup, MetaData, Parameter

AGENT = "hodr-vip"
ARP_COUNT = 5
ARP_INTERVAL_MS = 200
ARP_MODE = "both"
ARP_MODES = ("request", "reply", "both")
DAD_TIMEOUT = 10
MAX_ARP_COUNT = 100
MAX_ARP_INTERVAL_MS = 10_000
MAX_DAD_TIMEOUT = 300
STOP_MARGIN = 2.0

Getter = Callable[[str], "str | None"]


# ------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class VipConfig:
    """The instance parameters, parsed and checked for internal consistency (level 0)."""

    ip: IPv4Address | IPv6Address
    prefixlen: int | None
    nic: str | None
    arp_count: int = ARP_COUNT
    arp_interval_ms: int = ARP_INTERVAL_MS
    arp_mode: str = ARP_MODE
    check_link: bool = True
    dad_timeout: int = DAD_TIMEOUT
    nodad: bool = False


def _configured(reason: str) -> InvalidSetup:
    """Inherently invalid parameters: 6 (stopped cluster-wide) where Pacemaker allows it."""
    return InvalidSetup(OCF.ERR_CONFIGURED, reason)


def parse_config(get: Getter = ocf.param) -> VipConfig:
    """Parse the parameters; raise ``InvalidSetup(ERR_CONFIGURED)`` for values no node could use.

    Nothing here looks at the local machine: pcs runs validate-all on whatever node it is on.
    """
    ip = _parse_ip(get("ip"))
    nic = _parse_nic(get("nic"))
    prefixlen = _parse_prefix(get("cidr_netmask"), ip)
    if ip.version == 6 and ip.is_link_local and nic is None:
        raise _configured(f"link-local address {ip} needs nic: it is ambiguous without an interface")
    if ip.version == 4 and prefixlen is not None and prefixlen < 31:
        net = ip_network(f"{ip}/{prefixlen}", strict=False)
        if ip in (net.network_address, net.broadcast_address):
            raise _configured(f"{ip} is the network or broadcast address of {net}")
    return VipConfig(
        ip=ip,
        prefixlen=prefixlen,
        nic=nic,
        arp_count=_parse_int(get, "arp_count", ARP_COUNT, 0, MAX_ARP_COUNT),
        arp_interval_ms=_parse_int(get, "arp_interval", ARP_INTERVAL_MS, 1, MAX_ARP_INTERVAL_MS),
        arp_mode=_parse_choice(get, "arp_mode", ARP_MODE, ARP_MODES),
        check_link=_parse_bool(get, "check_link_status", True),
        dad_timeout=_parse_int(get, "dad_timeout", DAD_TIMEOUT, 0, MAX_DAD_TIMEOUT),
        nodad=_parse_bool(get, "nodad", False),
    )


def _parse_ip(raw: str | None) -> IPv4Address | IPv6Address:
    if raw is None:
        raise _configured("parameter ip is required")
    try:
        ip = ip_address(raw.strip())
    except ValueError:
        raise _configured(f"ip={raw!r} is not an IPv4 or IPv6 address") from None
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip == IPv4Address("255.255.255.255"):
        raise _configured(f"ip={ip} cannot be a service address (unspecified, loopback or multicast)")
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        raise _configured(f"ip={ip} is IPv4-mapped; give the IPv4 address itself")
    return ip


def _parse_prefix(raw: str | None, ip: IPv4Address | IPv6Address) -> int | None:
    """Prefix length ``24`` (or a dotted IPv4 mask ``255.255.255.0``, as IPaddr2 accepts)."""
    if raw is None:
        return None
    text = raw.strip()
    top = 32 if ip.version == 4 else 128
    if ip.version == 4 and "." in text:
        try:
            return ip_network(f"0.0.0.0/{text}").prefixlen
        except ValueError:
            raise _configured(f"cidr_netmask={raw!r} is not a contiguous netmask") from None
    if not text.isdigit() or not 1 <= int(text) <= top:
        raise _configured(f"cidr_netmask={raw!r} must be a prefix length from 1 to {top} for {ip}")
    return int(text)


def _parse_nic(raw: str | None) -> str | None:
    """An interface name as the kernel accepts it; ``eth0:1`` labels are refused, not guessed."""
    if raw is None:
        return None
    if (
        len(raw) >= vip.IFNAMSIZ
        or raw in (".", "..")
        or any(c in raw for c in "/:")
        or raw != "".join(raw.split())
    ):
        raise _configured(
            f"nic={raw!r} is not a valid interface name (1-15 characters, no '/', ':' or blanks)"
        )
    return raw


def _parse_int(get: Getter, name: str, default: int, low: int, high: int) -> int:
    raw = get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise _configured(f"{name}={raw!r} must be an integer from {low} to {high}")
    return int(text)


def _parse_bool(get: Getter, name: str, default: bool) -> bool:
    raw = get(name)
    if raw is None:
        return default
    if ocf.is_true(raw):
        return True
    if ocf.is_false(raw):
        return False
    raise _configured(f"{name}={raw!r} is not a boolean (true/false)")


def _parse_choice(get: Getter, name: str, default: str, choices: Sequence[str]) -> str:
    raw = get(name)
    if raw is None:
        return default
    if raw.strip() not in choices:
        raise _configured(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw.strip()


# ------------------------------------------------------------------------------------- agent


class VipAgent:
    """The actions, over one parsed configuration (cached: ``run()`` validates before dispatch)."""

    def __init__(self, get: Getter = ocf.param) -> None:
        self._get = get

    @cached_property
    def config(self) -> VipConfig:
        return parse_config(self._get)

    def validate(self, level: int) -> None:
        """Level 0: parameters only. Level 10: also this node (interface, routes, privileges)."""
        cfg = self.config
        if level >= 10:
            if os.geteuid() != 0:
                raise InvalidSetup(OCF.ERR_PERM, "hodr-vip must run as root (CAP_NET_ADMIN, CAP_NET_RAW)")
            link = vip.get_link(self.address.nic)
            if link is None:
                raise InvalidSetup(OCF.ERR_ARGS, f"interface {self.address.nic} does not exist on this node")
            if link.type in (vip.ARPHRD_LOOPBACK, vip.ARPHRD_INFINIBAND):
                raise InvalidSetup(OCF.ERR_ARGS, f"{link.name} cannot carry a floating address")
        if cfg.ip.version == 4 and cfg.nodad:
            ocf.log().debug("nodad only applies to IPv6; ignored for %s", cfg.ip)

    @cached_property
    def address(self) -> vip.VirtualIP:
        """The ``VirtualIP`` on this node: nic and prefix from the parameters, else from the routes.

        A missing or ambiguous route is a node-local problem (``ERR_ARGS``: not this node), which
        ``run()`` turns into 0 on stop and 7 on a probe.
        """
        cfg = self.config
        nic, prefixlen = cfg.nic, cfg.prefixlen
        if nic is None or prefixlen is None:
            if nic is not None and vip.get_link(nic) is None:
                raise InvalidSetup(OCF.ERR_ARGS, f"interface {nic} does not exist on this node")
            try:
                found_nic, found_prefix = vip.discover(cfg.ip, nic)
            except vip.NicUnresolved as exc:
                raise InvalidSetup(OCF.ERR_ARGS, str(exc)) from None
            nic = nic or found_nic
            prefixlen = prefixlen or found_prefix
        return vip.VirtualIP(
            ip=cfg.ip,
            prefixlen=prefixlen,
            nic=nic,
            check_link=cfg.check_link,
            nodad=cfg.nodad,
            dad_timeout=float(cfg.dad_timeout),
            log_to=ocf.log,
        )

    # ------------------------------------------------------------------------------- actions

    def start(self) -> int:
        """Add, verify, announce. Starting a started address is success without a second GARP."""
        cfg, address = self.config, self.address
        until = ocf.deadline().at
        try:
            added = address.ensure_present(until)
        except vip.VipError as exc:
            raise _start_error(exc) from None
        if not added:
            ocf.log().info("start: %s/%d already on %s", cfg.ip, address.prefixlen, address.nic)
            return OCF.SUCCESS
        sent = address.announce(cfg.arp_count, cfg.arp_interval_ms / 1000.0, cfg.arp_mode, until)
        ocf.log().info(
            "start: %s/%d on %s, %d announcements sent", cfg.ip, address.prefixlen, address.nic, sent
        )
        return OCF.SUCCESS

    def stop(self) -> int:
        """Remove; absent, or the interface gone with it, is success (a failed stop fences)."""
        address = self.address
        try:
            removed = address.ensure_absent(ocf.deadline(margin=STOP_MARGIN).at)
        except vip.KernelRefused as exc:
            rc = OCF.ERR_PERM if exc.errno == 1 else OCF.ERR_GENERIC
            raise AgentError(rc, f"could not remove {address.ip} from {address.nic}: {exc}") from None
        except vip.MissingSoftware as exc:  # only when there is something to remove
            raise AgentError(OCF.ERR_INSTALLED, f"cannot remove {address.ip}: {exc}") from None
        except vip.VipError as exc:
            raise AgentError(OCF.ERR_GENERIC, str(exc)) from None
        ocf.log().info(
            "stop: %s %s", address.ip, f"removed from {address.nic}" if removed else "was not configured"
        )
        return OCF.SUCCESS

    def monitor(self) -> int:
        """Read-only: two rtnetlink reads (three more when nic/cidr_netmask are not given)."""
        address = self.address
        obs = address.observe()
        recurring = not ocf.is_probe()
        if obs.served is vip.Served.OK:
            return OCF.SUCCESS
        if obs.served is vip.Served.NIC_MISSING:
            raise InvalidSetup(OCF.ERR_ARGS, f"interface {address.nic} does not exist (any more)")
        if obs.served is vip.Served.PARTIAL:
            ocf.log().error("monitor: %s", obs.detail)
            ocf.exit_reason(obs.detail)
            return OCF.ERR_GENERIC
        if recurring:
            what = f"{address.nic} is down" if obs.served is vip.Served.LINK_DOWN else obs.detail
            ocf.log().warning("monitor: %s", what)
            ocf.exit_reason(what)
        return OCF.NOT_RUNNING


def _start_error(exc: vip.VipError) -> AgentError:
    """The exit code of a failed start, by what went wrong (ocf-checklist §6)."""
    reason = str(exc)
    if isinstance(exc, vip.NicMissing | vip.NicUnsupported):
        return InvalidSetup(OCF.ERR_ARGS, reason)
    if isinstance(exc, vip.LinkDown | vip.MissingSoftware):
        return AgentError(OCF.ERR_INSTALLED, reason)
    if isinstance(exc, vip.KernelRefused) and exc.errno == 1:
        return AgentError(OCF.ERR_PERM, f"{reason} (hodr-vip must run as root)")
    return AgentError(OCF.ERR_GENERIC, reason)


# --------------------------------------------------------------------------------- meta-data


def metadata() -> MetaData:
    """The agent's description, defaults interpolated from the constants the code uses."""
    p = Parameter
    parameters = (
        p(
            "ip",
            "Service IP address",
            "The IPv4 or IPv6 address to float, e.g. 192.168.77.100.",
            required=True,
            unique=True,
        ),
        p(
            "cidr_netmask",
            "Prefix length",
            "Prefix length of the address (24, 64; a dotted IPv4 mask is accepted too). "
            "Default: the prefix of the connected route to ip.",
        ),
        p(
            "nic",
            "Interface",
            "Interface to put the address on. Default: the interface of the connected route to ip; "
            "the agent fails instead of guessing when there is none or several. Set it (and "
            "cidr_netmask) to keep the route table out of every monitor.",
        ),
        p(
            "arp_count",
            "Announcements",
            "Gratuitous ARP / unsolicited NA rounds after start (0: none).",
            "integer",
            ARP_COUNT,
        ),
        p(
            "arp_interval",
            "Announcement spacing (ms)",
            "Milliseconds between announcement rounds.",
            "integer",
            ARP_INTERVAL_MS,
        ),
        p(
            "arp_mode",
            "Gratuitous ARP form",
            "request, reply or both: some hosts and firewalls honour only one ARP opcode.",
            "string",
            ARP_MODE,
        ),
        p(
            "check_link_status",
            "Check the link",
            "Report the address as not running when its interface is down, and refuse to start there.",
            "boolean",
            True,
        ),
        p(
            "dad_timeout",
            "DAD wait (s)",
            "IPv6: seconds to wait for duplicate address detection before the start fails.",
            "integer",
            DAD_TIMEOUT,
        ),
        p(
            "nodad",
            "Skip IPv6 DAD",
            "IPv6: add the address without duplicate address detection (also skips the duplicate check).",
            "boolean",
            False,
        ),
    )
    actions = (
        Action("start", "20s"),
        Action("stop", "20s"),
        Action("monitor", "20s", interval="10s", depth="0"),
        Action("validate-all", "20s"),
        Action("meta-data", "5s"),
        Action("methods", "5s"),
    )
    return MetaData(
        name=AGENT,
        version=__version__,
        shortdesc="Floating service IP address (hodr)",
        longdesc=(
            "Adds a service IPv4 or IPv6 address to an interface, refuses it when another host "
            "already answers for it, waits for IPv6 duplicate address detection, and announces the "
            "move with gratuitous ARP (request and reply forms) or unsolicited Neighbour "
            "Advertisements so clients' neighbour caches follow at once. Colocate it with the "
            "promoted hodr-replica instance."
        ),
        parameters=parameters,
        actions=actions,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ocf/hodr-vip`` shim."""
    agent = VipAgent()
    actions = {"start": agent.start, "stop": agent.stop, "monitor": agent.monitor}
    return ocf.run(actions, lambda: metadata().to_xml(), agent.validate, argv)

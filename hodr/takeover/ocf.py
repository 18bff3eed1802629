"""The OCF kernel shared by hodr's resource agents (hodr-vip, hodr-replica).

Everything Pacemaker-facing that is not specific to one agent lives here: exit codes, the
``ocf-exit-reason:`` line, parameter and meta-attribute access, probe detection, deadlines derived
from the operation timeout, a meta-data builder that stays inside the old ``ra-api-1.dtd`` (which
ocf-tester checks), logging tagged with the instance name, and ``run()``, the dispatcher in PAF's
shape.

Why it is this small and this careful about imports: every monitor is a fresh interpreter, so the
cost of this module is paid every ten seconds on every node. It imports only the standard library
and never the replication pipeline (import-linter enforces the latter).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms cold)

if TYPE_CHECKING:  # logging is imported when the first line is logged: a healthy monitor logs nothing
    import logging


class OCF(IntEnum):
    """OCF exit codes, with the reaction Pacemaker has to each (``lib/pengine/unpack.c``)."""

    SUCCESS = 0
    ERR_GENERIC = 1  # soft: Pacemaker may recover in place until migration-threshold
    ERR_ARGS = 2  # node-local problem: banned from this node
    ERR_UNIMPLEMENTED = 3  # hard on one-shot actions, ignored on recurring ones
    ERR_PERM = 4  # hard: insufficient privileges
    ERR_INSTALLED = 5  # missing software here; a probe treats it as stopped
    ERR_CONFIGURED = 6  # inherently invalid: stopped cluster-wide, never from a probe
    NOT_RUNNING = 7  # cleanly stopped (monitor only)
    RUNNING_PROMOTED = 8
    FAILED_PROMOTED = 9
    DEGRADED = 190  # success, shown as degraded
    DEGRADED_PROMOTED = 191


class AgentError(Exception):
    """An operational failure: returned as ``rc`` with ``reason`` as the exit reason, whatever the action.

    Raise it from an action when something provably went wrong (a stop that could not remove what
    is running must reach Pacemaker as a failure, because that is what triggers fencing).
    """

    def __init__(self, rc: OCF, reason: str) -> None:
        super().__init__(reason)
        self.rc = rc
        self.reason = reason


class InvalidSetup(AgentError):
    """Invalid parameters or an invalid local environment (NIC gone, config file missing, not root).

    ``rc`` is what a start or validate-all returns; ``run()`` downgrades it for the actions where a
    configuration problem must not look like a failure (see ``rc_for_invalid``).
    """


def rc_for_invalid(rc: OCF, action: str, probe: bool) -> OCF:
    """Map the code of an invalid setup to the code *action* must return (``ocf-rarun``'s rule).

    - stop → success: nothing of ours can run where the setup is invalid, and a failed stop fences;
    - probe → not running: a probe must never stop a resource cluster-wide (ClusterLabs/PAF#49);
    - recurring monitor → 6 or 5 stay (inherently invalid / software missing), anything node-local
      becomes a soft 1 so Pacemaker recovers elsewhere instead of banning on a transient;
    - start, validate-all and the rest → unchanged.
    """
    if action == "stop":
        return OCF.SUCCESS
    if action == "monitor":
        if probe:
            return OCF.NOT_RUNNING
        if rc in (OCF.ERR_CONFIGURED, OCF.ERR_INSTALLED):
            return rc
        return OCF.ERR_GENERIC
    return rc


# --------------------------------------------------------------------------- environment access


def exit_reason(text: str) -> None:
    """Print the one-line reason ``crm_mon`` and ``pcs status`` show next to a failed action."""
    line = " ".join(str(text).split())
    print(f"ocf-exit-reason:{line}", file=sys.stderr, flush=True)


def param(name: str, default: str | None = None) -> str | None:
    """Instance parameter *name* from ``OCF_RESKEY_<name>``; an empty value counts as unset."""
    value = os.environ.get(f"OCF_RESKEY_{name}", "")
    return value if value != "" else default


def meta(name: str, default: str | None = None) -> str | None:
    """Meta-attribute *name* (``timeout``, ``interval``, ``notify``…) from ``OCF_RESKEY_CRM_meta_<name>``."""
    return param(f"CRM_meta_{name}", default)


def instance() -> str:
    """The resource instance name Pacemaker runs us as (``vip``, ``hodr:0``), for logs and paths."""
    return os.environ.get("OCF_RESOURCE_INSTANCE") or "unknown"


def is_true(value: str | None) -> bool:
    """OCF boolean: the spellings ``ocf_is_true`` accepts."""
    return (value or "").strip().lower() in ("1", "yes", "true", "on", "y")


def is_false(value: str | None) -> bool:
    """The explicit false spellings; anything neither true nor false is a configuration error."""
    return (value or "").strip().lower() in ("0", "no", "false", "off", "n")


_current_action = ""


def current_action() -> str:
    """The action being run (set by ``run()``; ``__OCF_ACTION`` is ocf-tester's spelling)."""
    return _current_action or os.environ.get("__OCF_ACTION", "")


def is_probe() -> bool:
    """True for a monitor with interval 0, or with no interval at all (treat unknown as a probe).

    Pacemaker probes every resource on every node before starting it and after a cleanup; a probe
    must describe the local state, never fail hard.
    """
    if current_action() != "monitor":
        return False
    interval = meta("interval", "0") or "0"
    try:
        return int(interval) == 0
    except ValueError:
        return True


@dataclass(frozen=True)
class Deadline:
    """A monotonic point in time every internal wait is capped by."""

    at: float

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def cap(self, seconds: float) -> float:
        """*seconds*, shortened so a wait ends before the deadline."""
        return max(0.0, min(seconds, self.remaining()))


def operation_timeout(default: float = 20.0) -> float:
    """The operation's timeout in seconds (``OCF_RESKEY_CRM_meta_timeout`` is in milliseconds)."""
    raw = meta("timeout")
    try:
        return int(raw) / 1000.0 if raw else default
    except ValueError:
        return default


def deadline(margin: float = 2.0, default: float = 20.0) -> Deadline:
    """When this action must be done: the meta timeout minus *margin* (at most half the timeout).

    Answering late is the worst answer: Pacemaker kills the agent and records a timeout, which for a
    stop means fencing. So waits are cut short and the agent reports what it knows instead.
    """
    timeout = operation_timeout(default)
    return Deadline(time.monotonic() + timeout - min(margin, timeout / 2))


# --------------------------------------------------------------------------------- meta-data


def escape(text: str) -> str:
    """XML character data (``xml.sax.saxutils`` would pull in urllib and email: ~35 ms a monitor)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quoteattr(text: str) -> str:
    """A double-quoted XML attribute value."""
    return '"' + escape(text).replace('"', "&quot;") + '"'


CONTENT_TYPES = ("string", "integer", "boolean", "time")
ACTION_NAMES = (
    "start",
    "stop",
    "recover",
    "monitor",
    "restart",
    "migrate_to",
    "migrate_from",
    "promote",
    "demote",
    "notify",
    "status",
    "reload",
    "meta-data",
    "usage",
    "methods",
    "validate-all",
)


@dataclass(frozen=True)
class Parameter:
    """One instance parameter, limited to what ``ra-api-1.dtd`` accepts (no reloadable, no select)."""

    name: str
    shortdesc: str
    longdesc: str
    type: str = "string"
    default: str | int | bool | None = None
    required: bool = False
    unique: bool = False

    def __post_init__(self) -> None:
        if self.type not in CONTENT_TYPES:
            raise ValueError(f"parameter {self.name}: content type {self.type!r} not in {CONTENT_TYPES}")

    def to_xml(self) -> str:
        default = ""
        if self.default is not None:
            value = ("true" if self.default else "false") if isinstance(self.default, bool) else self.default
            default = f" default={quoteattr(str(value))}"
        return (
            f'<parameter name={quoteattr(self.name)} required="{int(self.required)}"'
            f' unique="{int(self.unique)}">\n'
            f'<longdesc lang="en">{escape(self.longdesc)}</longdesc>\n'
            f'<shortdesc lang="en">{escape(self.shortdesc)}</shortdesc>\n'
            f'<content type="{self.type}"{default}/>\n'
            "</parameter>"
        )


@dataclass(frozen=True)
class Action:
    """One advertised action with its suggested timeout (and interval/depth/role for monitors)."""

    name: str
    timeout: str
    interval: str | None = None
    depth: str | None = None
    role: str | None = None

    def __post_init__(self) -> None:
        if self.name not in ACTION_NAMES:
            raise ValueError(f"action {self.name!r} is not in ra-api-1.dtd (reload-agent is not either)")
        if self.role not in (None, "Promoted", "Unpromoted"):
            raise ValueError(f"role {self.role!r}: use Promoted/Unpromoted")

    def to_xml(self) -> str:
        attrs = [f"name={quoteattr(self.name)}", f"timeout={quoteattr(self.timeout)}"]
        for key, value in (("interval", self.interval), ("depth", self.depth), ("role", self.role)):
            if value is not None:
                attrs.append(f"{key}={quoteattr(value)}")
        return f"<action {' '.join(attrs)}/>"


@dataclass(frozen=True)
class MetaData:
    """An agent's self-description; ``to_xml()`` follows the DTD's child order exactly."""

    name: str
    version: str
    shortdesc: str
    longdesc: str
    parameters: Sequence[Parameter] = field(default_factory=tuple)
    actions: Sequence[Action] = field(default_factory=tuple)

    def to_xml(self) -> str:
        params = "\n".join(p.to_xml() for p in self.parameters)
        actions = "\n".join(a.to_xml() for a in self.actions)
        return (
            '<?xml version="1.0"?>\n'
            '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">\n'
            f"<resource-agent name={quoteattr(self.name)} version={quoteattr(self.version)}>\n"
            "<version>1.1</version>\n"
            f'<longdesc lang="en">{escape(self.longdesc)}</longdesc>\n'
            f'<shortdesc lang="en">{escape(self.shortdesc)}</shortdesc>\n'
            f"<parameters>\n{params}\n</parameters>\n"
            f"<actions>\n{actions}\n</actions>\n"
            "</resource-agent>\n"
        )


# ----------------------------------------------------------------------------------- logging

_logger: logging.Logger | None = None


def log() -> logging.Logger:
    """The agent's logger, tagged ``<agent>(<instance>)[pid]`` like ocf-shellfuncs' ``HA_LOGTAG``.

    Narrative (info) goes to ``HA_LOGFILE`` and/or syslog (``HA_LOGFACILITY``; the lower-case
    spellings too) when Pacemaker sets them; stderr, which execd copies into its own log for
    every operation, only gets warnings and errors then, so a healthy monitor every ten seconds
    stays silent. Without either, everything goes to stderr (a shell, ocf-tester).
    ``HA_debug=1`` adds debug lines.
    """
    global _logger
    if _logger is None:
        _logger = _configure_logging()
    return _logger


def _configure_logging() -> logging.Logger:
    import logging

    agent = os.path.basename(sys.argv[0] or "hodr-agent")
    tag = f"{agent}({instance()})[{os.getpid()}]"
    debug = is_true(os.environ.get("HA_debug"))  # noqa: SIM112 - Pacemaker spells it so
    logger = logging.getLogger(f"hodr.ocf.{agent}")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    logger.handlers.clear()
    detailed = logging.Formatter(f"%(asctime)s {tag}: %(levelname)s: %(message)s", "%b %d %H:%M:%S")

    logfile = _ha_env("LOGFILE")
    facility = _ha_env("LOGFACILITY") or ""
    elsewhere = False
    if logfile:
        try:
            handler: logging.Handler = logging.FileHandler(logfile)
            handler.setFormatter(detailed)
            logger.addHandler(handler)
            elsewhere = True
        except OSError:
            pass
    if facility and facility != "none":
        logger.addHandler(_syslog_handler(tag, facility))
        elsewhere = True

    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(detailed)
    if elsewhere and not debug:
        stderr.setLevel(logging.WARNING)
    logger.addHandler(stderr)
    return logger


def _ha_env(name: str) -> str | None:
    """``HA_<NAME>`` as ocf-shellfuncs reads it, or ``HA_<name>`` as Pacemaker's daemons export it."""
    return os.environ.get(f"HA_{name}") or os.environ.get(f"HA_{name.lower()}")


def _syslog_handler(tag: str, facility: str) -> logging.Handler:
    """A handler writing through syslog(3) (the C module: no socket path to guess)."""
    import logging
    import syslog

    levels = {
        logging.DEBUG: syslog.LOG_DEBUG,
        logging.INFO: syslog.LOG_INFO,
        logging.WARNING: syslog.LOG_WARNING,
        logging.ERROR: syslog.LOG_ERR,
        logging.CRITICAL: syslog.LOG_CRIT,
    }
    syslog.openlog(tag, 0, getattr(syslog, f"LOG_{facility.upper()}", syslog.LOG_DAEMON))

    class SyslogHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                syslog.syslog(levels.get(record.levelno, syslog.LOG_NOTICE), record.getMessage())
            except Exception:  # noqa: BLE001 - logging must never fail an action
                self.handleError(record)

    return SyslogHandler()


# ---------------------------------------------------------------------------------- dispatch

ALWAYS = ("meta-data", "methods", "validate-all", "usage", "help")


def run(
    actions: Mapping[str, Callable[[], int]],
    meta_data: Callable[[], str],
    validate: Callable[[int], None],
    argv: Sequence[str] | None = None,
) -> int:
    """Run the action named in ``argv[1]`` and return its OCF code (PAF's ``pgsqlms`` shape).

    1. ``meta-data`` and ``methods`` first: they need no environment (ocf-tester runs meta-data as
       ``nobody``) and must not pay for validation or heavy imports.
    2. An unknown action is ``ERR_UNIMPLEMENTED`` before anything else looks at the parameters.
    3. One validation gate, ``validate(level)`` with ``OCF_CHECK_LEVEL`` (0 = internal consistency
       only: pcs validates on whatever node it runs on). It raises ``InvalidSetup``.
    4. The action from a flat table. ``InvalidSetup`` raised anywhere is downgraded per action by
       ``rc_for_invalid``; ``AgentError`` is returned as is; every failure prints an exit reason.
    """
    global _current_action
    argv = sys.argv if argv is None else argv
    action = argv[1] if len(argv) > 1 else ""
    if action == "meta-data":
        sys.stdout.write(meta_data())
        return OCF.SUCCESS
    if action == "methods":
        names = sorted(set(actions) | {"meta-data", "methods", "validate-all", "usage"})
        print("\n".join(names))
        return OCF.SUCCESS
    if action in ("usage", "help"):
        print(_usage(argv, actions))
        return OCF.SUCCESS
    if not action:
        print(_usage(argv, actions), file=sys.stderr)
        exit_reason("no action given")
        return OCF.ERR_ARGS
    if action not in actions and action != "validate-all":
        exit_reason(f"action {action!r} is not implemented")
        return OCF.ERR_UNIMPLEMENTED

    _current_action = action
    probe = is_probe()
    try:
        level = int(os.environ.get("OCF_CHECK_LEVEL") or 0) if action == "validate-all" else 0
        validate(level)
        if action == "validate-all":
            return OCF.SUCCESS
        return int(actions[action]())
    except InvalidSetup as exc:
        return _report_invalid(exc, action, probe)
    except AgentError as exc:
        log().error("%s failed: %s", action, exc.reason)
        exit_reason(exc.reason)
        return exc.rc
    except Exception as exc:  # noqa: BLE001 - a traceback is useless to Pacemaker; a reason is not
        log().exception("%s: unexpected error", action)
        exit_reason(f"{action}: unexpected error: {exc!r}")
        return OCF.ERR_GENERIC


def _report_invalid(exc: InvalidSetup, action: str, probe: bool) -> int:
    """Return the downgraded code; an exit reason only when the result is still a failure."""
    rc = rc_for_invalid(exc.rc, action, probe)
    what = "probe" if probe else action
    if rc in (OCF.SUCCESS, OCF.NOT_RUNNING):
        log().info("%s: %s (returning %s)", what, exc.reason, rc.name)
    else:
        log().error("%s: %s", what, exc.reason)
        exit_reason(exc.reason)
    return rc


def _usage(argv: Sequence[str], actions: Mapping[str, Callable[[], int]]) -> str:
    names = "|".join(sorted(set(actions) | {"meta-data", "methods", "validate-all"}))
    return f"usage: {os.path.basename(argv[0] if argv else 'agent')} {{{names}}}"

"""hodr-replica: the OCF agent that runs hodr as a promotable clone (Promoted = primary).

Actions: start, stop, monitor, promote, demote, notify, validate-all, meta-data, methods
(``docs/replica-agent.md`` has the tables). The agent is the daemon's client: it spawns ``hodr run``,
reads the status snapshot and sends control requests (``daemonctl``); it never imports the pipeline.

Exit codes, chosen for what Pacemaker does next:

- monitor: stopped → 7; standby → 0; primary → 8; primary daemon dead or hung, or dead under a
  primary claim → 9; standby daemon dead or hung → 1 (a probe: 7 when nothing runs);
- start: always leaves a standby; refused by the rejoin guard → 1; config unusable here → 2;
  the hodr program missing → 5;
- promote: refused by the election (another node is ahead: the top score is moved to it first),
  by ``require_sync``, or outside a notified transition while other instances exist → 1;
- stop: 0 unless the daemon provably survived SIGKILL (→ 1, and Pacemaker fences);
- notify: always 0.

The node's database services (the YAML's ``services:``) are run by ``services``: the ``always``
ones before the daemon starts and after it stops, the ``primary`` ones after the daemon reports
primary and before it is asked to demote. Monitor never runs their ready checks (it stays a status
read). What it decides is in ``election`` (pure functions); what it does to Pacemaker's attributes
is in ``attrs``. Imports are lazy: meta-data and validate-all stay at the kernel's cost, and a monitor
does not load the YAML config when the cached copy of its few values is still current.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from hodr import __version__
from hodr.takeover import ocf
from hodr.takeover.ocf import OCF, Action, AgentError, InvalidSetup, MetaData, Parameter

WHEN_ALWAYS, WHEN_PRIMARY = "always", "primary"  # services.ALWAYS/PRIMARY, without the import

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from hodr.status import Status
    from hodr.takeover.attrs import Attributes
    from hodr.takeover.daemonctl import DaemonControl, Observation
    from hodr.takeover.election import ClusterEpoch, Notification, Vote
    from hodr.takeover.services import Service, ServiceRunner

AGENT = "hodr-replica"
DB_DOWN_TIMEOUT = 10  # s of database outage before monitor fails the instance
DEGRADED_AFTER = 60  # s a standby may be missing before monitor reports replication degraded
MAX_LAG = 64 << 20  # bytes: a standby further behind gets a negative promotion score
PRIMARY_PORT = 5440  # hodr's transport.port default
MAX_PORT = 65535
START_MARGIN = 3.0
STOP_MARGIN = 2.0
PROMOTE_MARGIN = 3.0
DEMOTE_MARGIN = 3.0
NOTIFY_MARGIN = 2.0
MONITOR_MARGIN = 2.0
DAEMON_MARGIN = 2.0  # the daemon gets this much less than the agent, to answer with its reason
ELECTION_WAIT_S = 10.0  # how long promote waits for missing election values
ELECTION_FILE = "agent-election.json"
ELECTION_VALID_S = 300.0  # an election file older than this is from an aborted transition
POSITION_CACHE = "agent-position.json"
SCORE_CACHE = "agent-scores.json"
REFRESH_S = 60.0  # re-assert unchanged scores and positions this often (attrd may have lost them)
CACHE_VERSION = 2  # 2: with services
STOP_SERVICES_SHARE = 0.3  # at most this share of stop's time is kept back for the always services
ATTR_WAIT_S = 5.0

Getter = Callable[[str], "str | None"]


# ------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ReplicaParams:
    """The instance parameters, checked for internal consistency only (level 0)."""

    config: str
    require_sync: bool = False
    max_lag: int = MAX_LAG
    primary_port: int | None = None
    db_down_timeout: int = DB_DOWN_TIMEOUT
    degraded_after: int = DEGRADED_AFTER


def _configured(reason: str) -> InvalidSetup:
    return InvalidSetup(OCF.ERR_CONFIGURED, reason)


def parse_params(get: Getter = ocf.param) -> ReplicaParams:
    """Parse the parameters; ``InvalidSetup(ERR_CONFIGURED)`` for values no node could use.

    Nothing here looks at the local machine: pcs validates on whatever node it runs on.
    """
    config = get("config")
    if config is None:
        raise _configured("parameter config is required (the hodr YAML file, e.g. /etc/hodr/hodr.yml)")
    if not config.startswith("/"):
        raise _configured(f"config={config!r} must be an absolute path")
    return ReplicaParams(
        config=config,
        require_sync=_parse_bool(get, "require_sync", False),
        max_lag=_parse_int(get, "max_lag", MAX_LAG, 0, 1 << 50),
        primary_port=_parse_optional_int(get, "primary_port", 1, MAX_PORT),
        db_down_timeout=_parse_int(get, "db_down_timeout", DB_DOWN_TIMEOUT, 0, 3600),
        degraded_after=_parse_int(get, "degraded_after", DEGRADED_AFTER, 0, 86400),
    )


def _parse_bool(get: Getter, name: str, default: bool) -> bool:
    raw = get(name)
    if raw is None:
        return default
    if ocf.is_true(raw):
        return True
    if ocf.is_false(raw):
        return False
    raise _configured(f"{name}={raw!r} is not a boolean (true/false)")


def _parse_int(get: Getter, name: str, default: int, low: int, high: int) -> int:
    value = _parse_optional_int(get, name, low, high)
    return default if value is None else value


def _parse_optional_int(get: Getter, name: str, low: int, high: int) -> int | None:
    raw = get(name)
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise _configured(f"{name}={raw!r} must be an integer from {low} to {high}")
    return int(text)


# ----------------------------------------------------------------------- the node's settings


@dataclass(frozen=True)
class Local:
    """The few values of the YAML config the agent needs, cached between invocations.

    Why a cache: loading the YAML costs a monitor more than everything else it does (PyYAML and
    the schema, ~60 ms cold). The cache file lives in ``HA_RSCTMP`` (``/run/resource-agents``) and
    is keyed by the config file's inode, size and mtime; stop also uses it when the config file has
    become unreadable, so a daemon is never left running because its config vanished.
    """

    run_dir: str
    node: str
    role: str  # the YAML's role: a bootstrap hint only (start always makes a standby)
    port: int
    status_interval_s: float
    stamp: tuple[int, int, int] = (0, 0, 0)
    services: tuple[Service, ...] = ()  # in start order; stop finds them even when the YAML is gone


def _cache_path(resource: str) -> Path:
    base = os.environ.get("HA_RSCTMP") or "/run/resource-agents"
    return Path(base) / f"{AGENT}-{resource.replace('/', '_')}.json"


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def load_local(config: str, resource: str, stale_ok: bool = False) -> Local:
    """The node's settings from the cache if it matches the config file, else from the YAML.

    ``InvalidSetup(ERR_ARGS)`` when the config is missing or invalid here: a node-local problem
    (start 2, recurring monitor 1, probe 7, stop 0 — ``ocf.rc_for_invalid``).
    """
    import json
    from dataclasses import asdict

    from hodr.takeover.services import Service

    cache = _cache_path(resource)
    cached: Local | None = None
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("config") == config and data.get("version") == CACHE_VERSION:
            raw = data["local"]
            services = tuple(Service(**s) for s in raw.get("services", ()))
            cached = Local(**{**raw, "stamp": tuple(raw["stamp"]), "services": services})
    except (OSError, ValueError, KeyError, TypeError):
        cached = None
    try:
        stamp = _stamp(config)
    except OSError as exc:
        if stale_ok and cached is not None:
            return cached
        raise InvalidSetup(OCF.ERR_ARGS, f"config file {config}: {exc.strerror}") from None
    if cached is not None and cached.stamp == stamp:
        return cached
    from hodr.config import load
    from hodr.errors import ConfigError

    try:
        cfg = load(config)
    except ConfigError as exc:
        if stale_ok and cached is not None:
            return cached
        raise InvalidSetup(OCF.ERR_ARGS, str(exc)) from None
    local = Local(
        run_dir=cfg.run_dir,
        node=cfg.node,
        role=cfg.role,
        port=cfg.transport.port,
        status_interval_s=cfg.status_interval_s,
        stamp=stamp,
        services=tuple(Service(s.name, s.start, s.stop, s.ready, s.timeout_s, s.when) for s in cfg.services),
    )
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        payload = {"version": CACHE_VERSION, "config": config, "local": asdict(local)}
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # only a cache
    return local


# ------------------------------------------------------------------------------------ agent


class ReplicaAgent:
    """The actions over one parsed parameter set (``run()`` validates before dispatch)."""

    def __init__(self, get: Getter = ocf.param, environ: Mapping[str, str] | None = None) -> None:
        self._get = get
        self._env = os.environ if environ is None else environ
        self._guard_passed = False

    # ------------------------------------------------------------------------- lazily built

    @cached_property
    def params(self) -> ReplicaParams:
        return parse_params(self._get)

    @cached_property
    def resource(self) -> str:
        from hodr.takeover.attrs import base_resource

        return base_resource(ocf.instance())

    @cached_property
    def local(self) -> Local:
        return load_local(self.params.config, self.resource, stale_ok=ocf.current_action() == "stop")

    @cached_property
    def ctl(self) -> DaemonControl:
        from hodr.takeover.daemonctl import DaemonControl

        return DaemonControl(self.params.config, Path(self.local.run_dir), self.local.status_interval_s)

    @cached_property
    def attrs(self) -> Attributes:
        from hodr.takeover.attrs import Attributes

        return Attributes(self.resource)

    @cached_property
    def me(self) -> str:
        """This node's Pacemaker name (the YAML's ``node`` must be the same: peers are named so)."""
        return ocf.meta("on_node") or self.local.node

    @property
    def port(self) -> int:
        return self.params.primary_port or self.local.port

    def in_cluster(self) -> bool:
        """Run by Pacemaker for a clone (not by ocf-tester or by hand): attribute failures matter."""
        return ocf.meta("clone_max") is not None

    # ---------------------------------------------------------------------------- validation

    def validate(self, level: int) -> None:
        """Level 0: parameters only (pcs validates anywhere). Level 10: this node's config and hodr.

        notify must return 0 whatever happens, so it only logs an invalid setup.
        """
        try:
            _ = self.params
            if level >= 10:
                self._validate_local()
        except InvalidSetup as exc:
            if ocf.current_action() != "notify":
                raise
            ocf.log().warning("notify with an invalid setup: %s", exc.reason)

    def _validate_local(self) -> None:
        from hodr.takeover.daemonctl import daemon_command

        local = self.local
        argv = daemon_command(self._env)
        if "/" in argv[0] and not os.access(argv[0], os.X_OK):
            raise InvalidSetup(OCF.ERR_INSTALLED, f"hodr is not installed here ({argv[0]} is not executable)")
        on_node = ocf.meta("on_node")
        if on_node and on_node != local.node:
            raise InvalidSetup(
                OCF.ERR_ARGS,
                f"{self.params.config}: node {local.node!r} is not this Pacemaker node's name {on_node!r}",
            )

    def _check_clone_meta(self) -> None:
        """A clone must be promotable with notify=true, one promoted instance, one per node.

        Checked in start and monitor, not in validate-all: pcs validates without the clone's meta.
        """
        if not self.in_cluster():
            return
        problems = []
        if not ocf.is_true(ocf.meta("notify")):
            problems.append("notify=true")
        promoted_max = ocf.meta("promoted_max") or ocf.meta("master_max")
        if not (ocf.is_true(ocf.meta("promotable")) or (promoted_max or "0") != "0"):
            problems.append("promotable=true")
        elif (promoted_max or "1") != "1":
            problems.append("promoted-max=1")
        if (ocf.meta("clone_node_max") or "1") != "1":
            problems.append("clone-node-max=1")
        if problems:
            raise _configured(f"{AGENT} must run as a promotable clone with {', '.join(problems)}")

    # --------------------------------------------------------------------------------- start

    def start(self) -> int:
        """Leave a standby of whoever is primary: spawn the daemon if needed, wait until standby."""
        from hodr.takeover.daemonctl import DaemonError, State

        self._check_clone_meta()
        self._validate_local()
        deadline = ocf.deadline(START_MARGIN)
        self._start_services(WHEN_ALWAYS, deadline)  # the daemon needs the database
        ctl = self.ctl
        obs = ctl.observe()
        if obs.state is State.PRIMARY:
            ocf.log().warning("start: the daemon already runs as primary; monitor will say so")
            return OCF.SUCCESS
        if obs.state in (State.FAILED, State.FAILED_PRIMARY) or (obs.state is State.STOPPED and obs.pid):
            ocf.log().warning("start: cleaning up first: %s", obs.detail)
            self._stop_daemon(ocf.Deadline(time.monotonic() + deadline.remaining() / 3))
            obs = ctl.observe()
        proc = None
        if obs.state is State.STOPPED:
            proc = ctl.spawn("standby", self._env)
            ocf.log().info("start: spawned hodr (pid %d), waiting for standby", proc.pid)
        try:
            obs = ctl.wait_until(
                lambda o: o.state is State.STANDBY,
                deadline,
                "standby role",
                proc=proc,
                check=lambda o: self._guard(o, final=o.state is State.STANDBY),
            )
        except AgentError:
            self._give_up(deadline)
            raise
        except DaemonError as exc:
            self._give_up(deadline)
            raise AgentError(OCF.ERR_GENERIC, f"start failed: {exc}") from None
        ctl.set_claim("standby", obs.status.epoch if obs.status else None)
        self._maintain_scores(obs)
        ocf.log().info("start: standby (%s)", obs.detail)
        return OCF.SUCCESS

    def _give_up(self, deadline: ocf.Deadline) -> None:
        """A failed start: nothing may keep running, and a crashed primary's ``failed`` claim is
        withdrawn — it will not come back here soon, so the standbys may score themselves."""
        self._stop_daemon(deadline)
        self._best_effort(lambda: self.attrs.delete_private(self.attrs.position_name), "position")

    def _guard(self, obs: Observation, final: bool) -> None:
        """The rejoin guard, as soon as the daemon reports its facts; raises ``AgentError(1)``.

        Decided once per invocation (start polls every 0.1 s; the cluster's epoch record is a
        tool call)."""
        from hodr.takeover.election import OUT_OF_RACE_SCORE, parse_terms, rejoin_guard

        status = obs.status
        if self._guard_passed or status is None or obs.pid is None:
            return
        extra = status.extra or {}
        if "primary_epochs" not in extra or "diverged" not in extra:
            if final:
                raise AgentError(
                    OCF.ERR_GENERIC,
                    "the daemon does not report primary_epochs/diverged: the rejoin guard cannot decide",
                )
            return
        try:
            terms = parse_terms(extra["primary_epochs"])
        except ValueError as exc:
            raise AgentError(OCF.ERR_GENERIC, f"rejoin guard: unreadable daemon facts: {exc}") from None
        diverged = extra["diverged"] if isinstance(extra["diverged"], bool) else None
        cluster = self._cluster_epoch() if terms or diverged else None
        verdict = rejoin_guard(terms, diverged, cluster)
        if not verdict.ok:
            self._best_effort(lambda: self.attrs.set_score(OUT_OF_RACE_SCORE), "score")
            raise AgentError(OCF.ERR_GENERIC, f"rejoin guard: {verdict.reason}")
        self._guard_passed = True
        if terms:
            ocf.log().info("rejoin guard: %s", verdict.reason)

    # ---------------------------------------------------------------------------------- stop

    def stop(self) -> int:
        """Stop the daemon (graceful, then forced before the deadline) and withdraw this node's
        published positions. Succeeds on a crashed or already stopped instance.

        The promotion score stays: the data on this node did not go anywhere. A crashed primary
        that is stopped and started again keeps its 1001, so Pacemaker promotes it again in place
        (it holds the most data) instead of trying a standby that the election would refuse (lab).
        Scores still vanish with the node (lifetime reboot), the primary rescores its peers, and a
        node that may have diverged gets -1000 from the rejoin guard.
        """
        from hodr.takeover.daemonctl import State
        from hodr.takeover.services import reserve

        deadline = ocf.deadline(STOP_MARGIN)
        before = self.ctl.observe()
        # applications first (also on a standby: after a crash they may still run), then the
        # daemon, then the database: a stopped instance leaves nothing that could take writes
        survived = self._stop_services(WHEN_PRIMARY, deadline)
        always = self._services(WHEN_ALWAYS)
        kept = reserve(always, deadline.remaining(), STOP_SERVICES_SHARE)
        daemon_error: AgentError | None = None
        try:
            self._stop_daemon(ocf.Deadline(deadline.at - kept))
        except AgentError as exc:
            daemon_error = exc  # still stop the database under it; the stop fails anyway
        survived += self._stop_services(WHEN_ALWAYS, deadline)
        if before.state is State.FAILED_PRIMARY:
            self._claim_failed(before)
        elif not self._failed_claim_is_fresh():
            self._best_effort(lambda: self.attrs.delete_private(self.attrs.position_name), "position")
        self._best_effort(lambda: self.attrs.delete_private(self.attrs.election_name), "election")
        for name in (ELECTION_FILE, POSITION_CACHE, SCORE_CACHE):
            self.ctl.remove(name)
        if daemon_error is not None:
            raise daemon_error
        if survived:
            raise AgentError(OCF.ERR_GENERIC, f"stop failed: {'; '.join(survived)}")
        return OCF.SUCCESS

    def _claim_failed(self, obs: Observation) -> None:
        """After cleaning up a crashed primary: publish its last position as ``failed``, so the
        standbys it holds (``_hold_standbys``) do not score themselves back up while Pacemaker
        restarts it in place. A successful start replaces the claim, a failed one withdraws it,
        and standbys ignore it after ``FAILED_HOLD_S``."""
        from hodr.takeover.election import ROLE_FAILED

        if obs.status is None:
            return
        try:
            vote = self._vote(obs.status, "primary")
        except ValueError:
            return
        failed = replace(vote, role=ROLE_FAILED, hint=False)
        self._best_effort(
            lambda: self.attrs.set_private(self.attrs.position_name, failed.to_attr()), "position"
        )

    def _failed_claim_is_fresh(self) -> bool:
        from hodr.takeover.election import FAILED_HOLD_S, ROLE_FAILED, Vote

        text = self._attr_or_none(lambda: self.attrs.private(self.attrs.position_name))
        mine = Vote.from_attr(self.me, text)
        return mine is not None and mine.role == ROLE_FAILED and time.time() - mine.stamp < FAILED_HOLD_S

    def _stop_daemon(self, deadline: ocf.Deadline) -> None:
        from hodr.takeover.daemonctl import DaemonError

        try:
            what = self.ctl.stop(deadline)
        except DaemonError as exc:
            raise AgentError(OCF.ERR_GENERIC, f"stop failed: {exc}") from None
        ocf.log().info("stop: %s", what)

    # ------------------------------------------------------------------------------ services

    @cached_property
    def runner(self) -> ServiceRunner:
        from hodr.takeover.services import OUT_FILE, ServiceRunner, command_env

        return ServiceRunner(Path(self.local.run_dir) / OUT_FILE, ocf.log(), command_env(self._env))

    def _services(self, when: str) -> tuple[Service, ...]:
        from hodr.takeover.services import select

        return select(self.local.services, when)

    def _start_services(self, when: str, deadline: ocf.Deadline) -> None:
        """Start the *when* services in order; the first that fails fails the action (1), naming
        the service and the step. The ones already started keep running: Pacemaker stops or
        demotes next, and that stops them in reverse order."""
        from hodr.takeover.services import ServiceError

        services = self._services(when)
        if not services:
            return
        try:
            self.runner.start_all(services, deadline)
        except ServiceError as exc:
            raise AgentError(OCF.ERR_GENERIC, str(exc)) from None

    def _stop_services(self, when: str, deadline: ocf.Deadline) -> list[str]:
        """Stop the *when* services in reverse order; the reasons of those still running after
        their stop (a failing stop of a service that is down is only logged)."""
        services = self._services(when)
        return self.runner.stop_all(services, deadline) if services else []

    # ------------------------------------------------------------------------------- monitor

    def monitor(self) -> int:
        """Read the snapshot, map it to a code, keep the promotion scores current (best effort)."""
        from hodr.takeover.daemonctl import State

        self._check_clone_meta()
        probe = ocf.is_probe()
        obs = self.ctl.observe_fresh(ocf.deadline(MONITOR_MARGIN))
        state = obs.state
        if state is State.STOPPED:
            return OCF.NOT_RUNNING
        if state is State.STANDBY:
            votes = self._maintain_scores(obs)
            if down := self._database_down(obs):
                return self._fail(OCF.ERR_GENERIC, down)
            if not probe and (why := self._standby_degraded(obs, votes)):
                return self._degraded(OCF.DEGRADED, why)
            return OCF.SUCCESS
        if state is State.PRIMARY:
            if down := self._database_down(obs):
                self._hold_standbys(obs)
                return self._fail(OCF.FAILED_PROMOTED, down)
            self._maintain_scores(obs)
            if not probe and (why := self._primary_degraded(obs)):
                return self._degraded(OCF.DEGRADED_PROMOTED, why)
            return OCF.RUNNING_PROMOTED
        if state is State.FAILED_PRIMARY:
            self._hold_standbys(obs)
            return self._fail(OCF.FAILED_PROMOTED, obs.detail)
        if state is State.FAILED and probe and obs.pid is None:
            ocf.log().info("probe: %s (nothing runs: not running)", obs.detail)
            return OCF.NOT_RUNNING
        if state is State.STARTING:
            return self._fail(OCF.ERR_GENERIC, f"the daemon is not ready: {obs.detail}")
        return self._fail(OCF.ERR_GENERIC, obs.detail)

    def _database_down(self, obs: Observation) -> str:
        """Why this instance counts as failed although its daemon runs: the local database has
        been unusable for ``db_down_timeout`` seconds ("" if not).

        The daemon measures it (``db_down_s``: its capture or apply sessions failing in a row),
        so monitor stays a status read.  A primary whose database is gone takes no writes:
        Pacemaker's recovery (demote, stop — which stops the database services — start, promote)
        restarts the database, or moves the primary after ``migration-threshold`` failures.  The
        timeout keeps a database restart or a short overload from counting as a failure."""
        status = obs.status
        limit = self.params.db_down_timeout
        if status is None or not limit or status.db_down_s < limit:
            return ""
        return f"the database is unusable for {status.db_down_s:.0f}s: {status.error or status.sentence}"

    def _primary_degraded(self, obs: Observation) -> str:
        """Why the primary's replication is degraded ("" if it is not): a standby detached, not
        connected for ``degraded_after`` seconds, or further behind than ``max_lag`` (no longer
        a candidate for promotion).

        Reported as 191 (promoted, degraded): Pacemaker keeps everything as it is and shows the
        reason in ``pcs status`` / ``crm_mon`` under the failed actions (until ``pcs resource
        cleanup``), so a DBA sees that a failover would now lose the standby's protection before
        it is needed.  The grace period keeps switchovers and reconnects from being reported."""
        status = obs.status
        limit = self.params.degraded_after
        if status is None or not limit:
            return ""
        why = []
        for p in status.peers:
            if p.detached:
                why.append(f"standby {p.name} detached ({p.detached})")
            elif not p.connected and p.down_s >= limit:
                why.append(f"standby {p.name} disconnected for {p.down_s:.0f}s")
            elif self.params.max_lag and p.lag_bytes > self.params.max_lag:
                why.append(f"standby {p.name} {p.lag_bytes} bytes behind (max_lag {self.params.max_lag})")
        return "; ".join(why)

    def _standby_degraded(self, obs: Observation, votes: Mapping[str, Vote] | None) -> str:
        """Why this standby is degraded ("" if not): another node publishes itself primary (in
        this standby's epoch or a newer one) and this standby has not received from any primary
        for ``degraded_after`` seconds.  Without a published primary nothing is lost yet (a
        cluster starting, or ocf-tester's lone node), so that is not reported.  ``votes``: what
        :meth:`_maintain_scores` read (None if it read nothing)."""
        from hodr.takeover.election import published_primaries

        status = obs.status
        limit = self.params.degraded_after
        if status is None or not limit or status.primary_connected or status.primary_down_s < limit:
            return ""
        primaries = sorted(v.node for v in published_primaries(votes or {}, self.me, status.epoch))
        if not primaries:
            return ""
        error = (status.extra or {}).get("transport_error") or ""
        return f"not receiving from the primary {', '.join(primaries)} for {status.primary_down_s:.0f}s" + (
            f": {error}" if error else ""
        )

    @staticmethod
    def _degraded(rc: OCF, reason: str) -> int:
        ocf.log().warning("%s: replication degraded: %s", ocf.current_action(), reason)
        ocf.exit_reason(f"replication degraded: {reason}")
        return rc

    @staticmethod
    def _fail(rc: OCF, reason: str) -> int:
        ocf.log().error("%s: %s", "probe" if ocf.is_probe() else ocf.current_action(), reason)
        ocf.exit_reason(reason)
        return rc

    # --------------------------------------------------------------------------------- scores

    def _vote(self, status: Status, role: str) -> Vote:
        """This node's published position: what it durably holds, and the bootstrap hint."""
        from hodr.position import ZERO
        from hodr.takeover.election import Vote, parse_position

        if role == "primary":
            durable = parse_position(status.capture or status.durable_commit)
        else:
            durable = parse_position(status.durable_commit)
        applied = parse_position(status.applied) if status.applied else ZERO
        # A brand-new cluster: nobody was ever promoted (the daemon's epoch is still the initial
        # 1, or 0 before it knows) and nothing was received.
        hint = self.local.role == "primary" and status.epoch <= 1 and durable == ZERO
        return Vote(self.me, role, status.epoch, durable, applied, hint, int(time.time()))

    def _maintain_scores(self, obs: Observation) -> dict[str, Vote] | None:
        """Publish this node's position and set the promotion scores it is responsible for.

        The primary scores itself (1001) and every standby it sees (by acked position and lag).
        A standby scores only itself, and only when no primary publishes: then it ranks itself
        among every published position, so probes after a whole-cluster restart rebuild scores.
        Never fails the monitor: outside a cluster it logs and moves on.  Returns the published
        positions a disconnected standby read (None when nothing was read).
        """
        from hodr.position import ZERO
        from hodr.takeover.attrs import AttrUnavailable
        from hodr.takeover.election import (
            PRIMARY_SCORE,
            Standing,
            own_score_without_primary,
            parse_position,
            parse_votes,
            standby_scores,
        )

        status = obs.status
        if status is None:
            return None
        role = "primary" if status.role == "primary" else "standby"
        votes = None
        try:
            vote = self._vote(status, role)
            self._publish_position(vote)
            desired: dict[str, int] = {}
            if role == "primary":
                standings = []
                for peer in status.peers:
                    try:
                        acked = parse_position(peer.acked)
                    except ValueError:
                        ocf.log().warning("peer %s: unreadable acked position %r", peer.name, peer.acked)
                        continue
                    standings.append(
                        Standing(peer.name, acked, peer.connected, peer.lag_bytes, bool(peer.detached))
                    )
                desired = {**standby_scores(standings, self.params.max_lag), self.me: PRIMARY_SCORE}
            elif not status.primary_connected:
                votes = parse_votes(self.attrs.private_all(self.attrs.position_name))
                self._follow_published_primary(status, votes)
                votes[self.me] = vote
                fresh = vote.durable == ZERO and not vote.hint  # a brand-new, non-configured node
                bootstrap = fresh and self._cluster_epoch() is None
                own = own_score_without_primary(self.me, votes, time.time(), bootstrap)
                if own is not None:
                    desired = {self.me: own}
            self._apply_scores(desired)
        except AttrUnavailable as exc:
            self._attr_warning(f"promotion scores not updated: {exc}")
        except ValueError as exc:
            ocf.log().warning("promotion scores not updated: unreadable position: %s", exc)
        return votes

    def _follow_published_primary(self, status: Status, votes: Mapping[str, Vote]) -> None:
        """A disconnected standby follows the node that publishes itself primary in the newest
        epoch, newer than its own (a primary of its own epoch is the one it follows, or a crashed
        one whose value is still there), if it follows another one.

        Post-promote notifications are not reliable: Pacemaker discards one that reaches a node
        while the DC is integrating a joining node (seen in the lab: a fenced primary rebooting
        just as a standby was promoted), and the standby would go on knocking at the dead
        primary for ever.  The monitor repairs it on its next run."""
        from hodr.takeover.election import published_primaries

        primaries = published_primaries(votes, self.me, status.epoch + 1)
        if not primaries:
            return
        newest = primaries[0]
        following = (status.extra or {}).get("following") or {}
        if following.get("host") == newest.node:
            return
        ocf.log().warning(
            "disconnected, following %s (not %s): it publishes itself primary in epoch %d",
            newest.node,
            following.get("host") or "anyone",
            newest.epoch,
        )
        self._follow(newest.node, ocf.deadline(MONITOR_MARGIN))

    def _hold_standbys(self, obs: Observation) -> None:
        """A crashed primary that holds commits no standby acknowledged keeps the standbys'
        scores below zero, so Pacemaker restarts it in place instead of promoting a standby
        the election would refuse. Its own score stays; once it is stopped for good (banned,
        start refused), its published position is gone and the standbys score themselves again."""
        from hodr.takeover.attrs import AttrUnavailable
        from hodr.takeover.election import HOLD_SCORE, hold_for_restart, parse_position

        status = obs.status
        if status is None or not status.peers:
            return
        try:
            capture = parse_position(status.capture or status.durable_commit)
            acked = [parse_position(p.acked) for p in status.peers]
        except ValueError:
            return
        if not hold_for_restart(capture, acked):
            return
        ocf.log().warning(
            "holding the standbys (score %d): this primary holds commits up to %s, standbys acked %s",
            HOLD_SCORE,
            capture,
            max(acked),
        )
        try:
            self._apply_scores({p.name: HOLD_SCORE for p in status.peers})
        except AttrUnavailable as exc:
            self._attr_warning(f"standby scores not held: {exc}")

    def _publish_position(self, vote: Vote) -> None:
        value = vote.to_attr()
        key = value.rsplit(" ", 1)[0]  # without the stamp
        cached = self.ctl.read_json(POSITION_CACHE) or {}
        if cached.get("key") == key and time.monotonic() - cached.get("at", 0) < REFRESH_S:
            return
        self.attrs.set_private(self.attrs.position_name, value)
        self.ctl.write_json(POSITION_CACHE, {"key": key, "at": time.monotonic()})

    def _apply_scores(self, desired: Mapping[str, int]) -> None:
        """Set the scores that changed (or were last set more than ``REFRESH_S`` ago)."""
        if not desired:
            return
        cache = self.ctl.read_json(SCORE_CACHE) or {}
        now = time.monotonic()
        changed = False
        for node, score in sorted(desired.items()):
            last = cache.get(node)
            if last and last[0] == score and now - last[1] < REFRESH_S:
                continue
            self.attrs.set_score(score, None if node == self.me else node)
            if not last or last[0] != score:
                ocf.log().info("promotion score of %s: %d", node, score)
            cache[node] = [score, now]
            changed = True
        if changed:
            self.ctl.write_json(SCORE_CACHE, cache)

    def _set_score_now(self, score: int, node: str | None = None) -> None:
        """Set a score and wait until it is visible (elections and role changes); best effort."""
        deadline = ocf.Deadline(time.monotonic() + ATTR_WAIT_S)
        self._best_effort(lambda: self.attrs.set_score(score, node, wait=deadline), "score")
        cache = self.ctl.read_json(SCORE_CACHE) or {}
        cache[node or self.me] = [score, time.monotonic()]
        self.ctl.write_json(SCORE_CACHE, cache)

    def _attr_warning(self, text: str) -> None:
        """Outside a cluster (ocf-tester, a shell) attribute failures are expected: debug only."""
        if self.in_cluster():
            ocf.log().warning("%s", text)
        else:
            ocf.log().debug("%s", text)

    def _best_effort(self, call: Callable[[], object], what: str) -> bool:
        from hodr.takeover.attrs import AttrUnavailable

        try:
            call()
            return True
        except AttrUnavailable as exc:
            self._attr_warning(f"{what} not updated: {exc}")
            return False

    def _attr_or_none(self, call: Callable[[], str | None]) -> str | None:
        from hodr.takeover.attrs import AttrUnavailable

        try:
            return call()
        except AttrUnavailable as exc:
            self._attr_warning(f"attribute not readable: {exc}")
            return None

    # ------------------------------------------------------------------------------- promote

    def promote(self) -> int:
        """Election (or the lone-instance check), then ``promote`` to the daemon, then scores."""
        from hodr.takeover.daemonctl import DaemonError, Refused, State
        from hodr.takeover.election import PRIMARY_SCORE, ClusterEpoch, next_epoch
        from hodr.takeover.services import reserve

        deadline = ocf.deadline(PROMOTE_MARGIN)
        obs = self.ctl.observe()
        if obs.state is State.PRIMARY:
            self._set_score_now(PRIMARY_SCORE)
            self._start_services(WHEN_PRIMARY, deadline)  # a retry: ready ones are skipped
            return OCF.SUCCESS
        if obs.state is not State.STANDBY or obs.status is None:
            raise AgentError(OCF.ERR_GENERIC, f"cannot promote: {obs.detail}")
        self._guard(obs, final=True)
        status = obs.status
        me = self._vote(status, "standby")
        cluster = self._cluster_epoch()
        cluster_epoch = cluster.epoch if cluster else 0
        election = self._election_voters()
        if election is not None:
            epoch = self._elect(me, election, cluster_epoch, deadline)
        else:
            self._check_alone(status)
            epoch = next_epoch(cluster_epoch, me.epoch, me.durable.epoch)
        # the daemon's drain leaves room for the primary services (at most half of what is left)
        kept = reserve(self._services(WHEN_PRIMARY), deadline.remaining())
        budget = max(1.0, deadline.remaining() - DAEMON_MARGIN - kept)
        # require_sync guards against losing what a primary published; on a brand-new cluster
        # (no promotion was ever recorded) there was no primary to be out of sync with, and
        # demanding it would leave the cluster without any primary forever (lab).
        # Nor for the latest primary itself coming back (nobody was promoted after its term):
        # it holds everything it published.
        require_sync = (
            self.params.require_sync and cluster is not None and not self._latest_primary(status, cluster)
        )
        args = {"epoch": epoch, "deadline_s": round(budget, 1), "require_sync": require_sync}
        ocf.log().info("promote: asking the daemon for epoch %d (durable %s)", epoch, me.durable)
        try:
            self.ctl.change_role(
                "promote", args, lambda s: s.role == "primary" and s.epoch >= epoch, deadline
            )
        except Refused as exc:
            raise AgentError(OCF.ERR_GENERIC, f"promote refused: {exc}") from None
        except DaemonError as exc:
            raise AgentError(OCF.ERR_GENERIC, f"promote failed: {exc}") from None
        self.ctl.set_claim("primary", epoch)
        record = ClusterEpoch(epoch, me.durable).to_attr()
        self._best_effort(
            lambda: self.attrs.set_cluster_property(self.attrs.epoch_name, record), "cluster epoch"
        )
        self._set_score_now(PRIMARY_SCORE)
        self._maintain_scores(self.ctl.observe())
        ocf.log().info("promote: primary in epoch %d", epoch)
        # only now: the database is writable and capture runs, so nothing applications write
        # through these can be missed
        self._start_services(WHEN_PRIMARY, deadline)
        return OCF.SUCCESS

    @staticmethod
    def _latest_primary(status: Status, cluster: ClusterEpoch) -> bool:
        """Was this node the primary of the cluster's current epoch?"""
        from hodr.takeover.election import parse_terms

        try:
            terms = parse_terms(status.extra.get("primary_epochs"))
        except ValueError:
            return False
        return bool(terms) and terms[-1].epoch >= cluster.epoch

    def _cluster_epoch(self) -> ClusterEpoch | None:
        """The cluster's epoch record (None outside a cluster or before the first promotion)."""
        from hodr.takeover.election import ClusterEpoch

        return ClusterEpoch.from_attr(
            self._attr_or_none(lambda: self.attrs.cluster_property(self.attrs.epoch_name))
        )

    def _election_voters(self) -> tuple[str, ...] | None:
        """The voters pre-promote recorded for this node, or None outside a notified transition."""
        data = self.ctl.read_json(ELECTION_FILE)
        if not isinstance(data, dict) or not isinstance(data.get("voters"), list):
            return None
        if time.time() - float(data.get("wall", 0)) > ELECTION_VALID_S:
            ocf.log().warning("promote: ignoring an election recorded %.0fs ago", time.time() - data["wall"])
            return None
        return tuple(str(v) for v in data["voters"])

    def _elect(self, me: Vote, voters: Sequence[str], cluster_epoch: int, deadline: ocf.Deadline) -> int:
        """Compare with every voter's published position; refuse (after moving the top score to
        the better node) if one is ahead. Fails closed when the attributes cannot be read."""
        from hodr.takeover.attrs import AttrUnavailable
        from hodr.takeover.election import LOSER_SCORE, TOP_STANDBY_SCORE, elect, parse_votes

        # bounded: a lost value must not eat the time the drain needs (it is excluded instead)
        wait = ocf.Deadline(time.monotonic() + min(ELECTION_WAIT_S, deadline.remaining() / 4))
        try:
            raw = self.attrs.wait_private_all(self.attrs.election_name, voters, wait)
        except AttrUnavailable as exc:
            raise AgentError(
                OCF.ERR_GENERIC, f"election: cannot read the other nodes' positions: {exc}"
            ) from None
        oldest = time.time() - ELECTION_VALID_S
        votes = {n: v for n, v in parse_votes(raw).items() if v.stamp >= oldest}
        result = elect(me, voters, votes, cluster_epoch)
        self._clear_election(voters)
        if not result.promote:
            self._set_score_now(LOSER_SCORE)
            self._set_score_now(TOP_STANDBY_SCORE, result.winner)
            raise AgentError(OCF.ERR_GENERIC, f"election: {result.reason}")
        if result.excluded:
            ocf.log().warning("election: %s", result.reason)
        else:
            ocf.log().info("election: %s", result.reason)
        return result.new_epoch

    def _check_alone(self, status: Status) -> None:
        """Promote without notify data (ocf-tester, debug-promote, --force-promote): only a lone
        instance may (ClusterLabs/PAF#80)."""
        from hodr.takeover.attrs import AttrUnavailable

        if status.primary_connected:
            raise AgentError(
                OCF.ERR_GENERIC,
                "promote outside a notified transition while this standby is connected to a running "
                "primary: use pcs resource move <clone> <node> --promoted",
            )
        try:
            others = sorted(n for n in self.attrs.private_all(self.attrs.position_name) if n != self.me)
        except AttrUnavailable as exc:
            if self.in_cluster():
                raise AgentError(
                    OCF.ERR_GENERIC,
                    f"promote outside a notified transition: cannot check other instances: {exc}",
                ) from None
            ocf.log().warning("promote: no cluster reachable (%s); promoting a lone instance", exc)
            return
        if others:
            raise AgentError(
                OCF.ERR_GENERIC,
                f"promote outside a notified transition while instances run on {', '.join(others)}: "
                "use pcs resource move <clone> <node> --promoted",
            )

    def _clear_election(self, voters: Sequence[str]) -> None:
        self.ctl.remove(ELECTION_FILE)
        for node in (*voters, self.me):
            target = None if node == self.me else node
            self._best_effort(
                lambda t=target: self.attrs.delete_private(self.attrs.election_name, t), "election"
            )

    # -------------------------------------------------------------------------------- demote

    def demote(self) -> int:
        """Primary → standby through the daemon (read-only, final marker acked, capture stopped).

        A stopped instance is started as a standby (PAF: no demote→stop→start→promote loop); a
        crashed primary is cleaned up and left stopped (Pacemaker stops and starts it next).
        """
        from hodr.takeover.daemonctl import DaemonError, Refused, State
        from hodr.takeover.election import DEMOTED_SCORE

        deadline = ocf.deadline(DEMOTE_MARGIN)
        # application writes stop first; the daemon's demote then makes the database read-only
        # even if one of them did not stop (the demote fails afterwards, naming it)
        survived = self._stop_services(WHEN_PRIMARY, deadline)
        obs = self.ctl.observe()
        if obs.state is State.STANDBY:
            self.ctl.set_claim("standby", obs.status.epoch if obs.status else None)
            return self._demoted(survived)
        if obs.state is State.STOPPED and obs.pid is None:
            ocf.log().info("demote: not running; starting as a standby")
            rc = self.start()
            return self._demoted(survived) if rc == OCF.SUCCESS else rc
        if obs.state is not State.PRIMARY:
            ocf.log().warning("demote: %s; cleaning up", obs.detail)
            self._stop_daemon(deadline)
            if obs.state is State.FAILED_PRIMARY:
                self._claim_failed(obs)
            return self._demoted(survived)
        if down := self._database_down(obs):
            # what made monitor fail it: the daemon's demote needs the database (read-only, final
            # marker) and would only retry until the deadline; a crashed primary is cleaned up
            ocf.log().warning("demote: %s; cleaning up as a crashed primary", down)
            self._stop_daemon(deadline)
            self._claim_failed(obs)
            return self._demoted(survived)
        budget = max(1.0, deadline.remaining() - DAEMON_MARGIN)
        try:
            status = self.ctl.change_role(
                "demote", {"deadline_s": round(budget, 1)}, lambda s: s.role == "standby", deadline
            )
        except Refused as exc:
            raise AgentError(OCF.ERR_GENERIC, f"demote refused: {exc}") from None
        except DaemonError as exc:
            raise AgentError(OCF.ERR_GENERIC, f"demote failed: {exc}") from None
        self.ctl.set_claim("standby", status.epoch)
        self._set_score_now(DEMOTED_SCORE)
        self.ctl.remove(POSITION_CACHE)
        ocf.log().info("demote: standby (%s)", status.sentence)
        return self._demoted(survived)

    @staticmethod
    def _demoted(survived: Sequence[str]) -> int:
        if survived:
            raise AgentError(OCF.ERR_GENERIC, f"demote: {'; '.join(survived)}")
        return OCF.SUCCESS

    # -------------------------------------------------------------------------------- notify

    def notify(self) -> int:
        """pre-promote: publish positions (and on the target, record the voters); post-promote:
        clear the election and follow the new primary; post-start: follow the primary. Always 0."""
        from hodr.takeover.election import Notification

        n = Notification.from_env(self._env)
        deadline = ocf.deadline(NOTIFY_MARGIN)
        handlers = {
            ("pre", "promote"): self._pre_promote,
            ("post", "promote"): self._post_promote,
            ("post", "start"): self._post_start,
        }
        handler = handlers.get((n.type, n.operation))
        if handler is None:
            ocf.log().debug("notify %s-%s: nothing to do", n.type or "?", n.operation or "?")
            return OCF.SUCCESS
        try:
            handler(n, deadline)
        except Exception as exc:  # noqa: BLE001 - notify must return 0; the log says what failed
            ocf.log().warning("notify %s-%s: %s", n.type, n.operation, exc)
        return OCF.SUCCESS

    def _pre_promote(self, n: Notification, deadline: ocf.Deadline) -> None:
        from hodr.takeover.daemonctl import State

        obs = self.ctl.observe()
        if obs.state not in (State.STANDBY, State.PRIMARY) or obs.status is None:
            ocf.log().info("pre-promote: %s; no position to publish", obs.detail)
            return
        if self.me in n.promote:
            voters = n.voters(self.me)
            self.ctl.write_json(ELECTION_FILE, {"voters": list(voters), "wall": time.time()})
            ocf.log().info("pre-promote: promote target; voters: %s", ", ".join(voters) or "none")
        vote = self._vote(obs.status, "primary" if obs.state is State.PRIMARY else "standby")
        wait = ocf.Deadline(min(deadline.at, time.monotonic() + ATTR_WAIT_S))
        self.attrs.set_private(self.attrs.election_name, vote.to_attr(), wait=wait)
        ocf.log().info("pre-promote: published %s", vote.to_attr())

    def _post_promote(self, n: Notification, deadline: ocf.Deadline) -> None:
        self.ctl.remove(ELECTION_FILE)
        self._best_effort(lambda: self.attrs.delete_private(self.attrs.election_name), "election")
        self._follow(n.current_primary(), deadline)

    def _post_start(self, n: Notification, deadline: ocf.Deadline) -> None:
        if self.me in n.start:
            self._follow(n.current_primary(), deadline)

    def _follow(self, primary: str | None, deadline: ocf.Deadline) -> None:
        """Point this standby at *primary* (its Pacemaker node name must resolve to it)."""
        from hodr.takeover.daemonctl import State

        if primary is None or primary == self.me:
            return
        if self.ctl.observe().state is not State.STANDBY:
            return
        if not self._publishes_primary(primary):
            # post-promote is also sent after a *failed* promote (lab): follow only a node that
            # really became primary (its promote publishes that before returning)
            ocf.log().info("not following %s: it does not publish itself as primary", primary)
            return
        reply = self.ctl.request("follow", deadline, host=primary, port=self.port)
        ocf.log().info("following %s:%d (%s)", primary, self.port, reply.get("result"))

    def _publishes_primary(self, node: str) -> bool:
        from hodr.takeover.election import ROLE_PRIMARY, Vote

        text = self._attr_or_none(lambda: self.attrs.private(self.attrs.position_name, node))
        published = Vote.from_attr(node, text)
        return published is not None and published.role == ROLE_PRIMARY


# --------------------------------------------------------------------------------- meta-data


def metadata() -> MetaData:
    """The agent's description, defaults interpolated from the constants the code uses."""
    p = Parameter
    parameters = (
        p(
            "config",
            "hodr configuration file",
            "Absolute path of this node's hodr YAML configuration (run_dir, node, databases, "
            "transport). Tunables live there, not in the CIB. The YAML's node must be this node's "
            "Pacemaker name.",
            required=True,
            unique=True,
        ),
        p(
            "require_sync",
            "Promote only a standby in sync",
            "Refuse to promote a standby that was not in sync with the primary (no automatic "
            "failover that could lose acknowledged transactions); the daemon decides what in sync "
            "means and says why it refused.",
            "boolean",
            False,
        ),
        p(
            "max_lag",
            "Lag limit for promotion (bytes)",
            "A standby further behind its primary than this gets a negative promotion score and is "
            "not chosen automatically (0: no limit).",
            "integer",
            MAX_LAG,
        ),
        p(
            "db_down_timeout",
            "Database outage before the instance fails (s)",
            "When the daemon has not been able to use the local database (the primary's source, "
            "a standby's target) for this many seconds, monitor reports the instance failed (9 on "
            "the primary, 1 on a standby), so Pacemaker restarts it with its database services or "
            "moves the primary. 0: never.",
            "integer",
            DB_DOWN_TIMEOUT,
        ),
        p(
            "degraded_after",
            "Missing standby before degraded (s)",
            "Monitor reports replication degraded (191 on the primary, 190 on a standby; shown "
            "by pcs status, nothing is moved) when a standby has not been connected for this many "
            "seconds, or is detached or further behind than max_lag. 0: never.",
            "integer",
            DEGRADED_AFTER,
        ),
        p(
            "primary_port",
            "Primary's replication port",
            f"Port standbys follow on the new primary after a promotion. Default: transport.port "
            f"from the config ({PRIMARY_PORT} unless changed there).",
            "integer",
        ),
    )
    actions = (
        Action("start", "120s"),
        Action("stop", "120s"),
        Action("promote", "300s"),
        Action("demote", "240s"),
        Action("notify", "60s"),
        Action("monitor", "20s", interval="15s", depth="0", role="Promoted"),
        Action("monitor", "20s", interval="16s", depth="0", role="Unpromoted"),
        Action("validate-all", "20s"),
        Action("meta-data", "5s"),
        Action("methods", "5s"),
    )
    return MetaData(
        name=AGENT,
        version=__version__,
        shortdesc="hodr log-based replication as a promotable clone",
        longdesc=(
            "Runs the hodr daemon on every node of a promotable clone: the Promoted instance is the "
            "primary (capture, senders), every Unpromoted instance a standby (receiver, applier). "
            "Promotion scores follow each standby's durable position and lag; the pre-promote "
            "election refuses to promote a node when another one holds more data; a node that was "
            "primary and may have diverged never rejoins or gets promoted by itself. Needs "
            "notify=true, promoted-max=1 and clone-node-max=1. Promote must cover the drain of the "
            "standby's queue: promote timeout >= queue size / apply rate + margin. The services "
            "listed in the config (services:) are started in order with readiness checks: the "
            "'always' ones (the database) before the daemon, the 'primary' ones (pooler, "
            "applications) after a promotion; they are stopped in reverse order."
        ),
        parameters=parameters,
        actions=actions,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ocf/hodr-replica`` shim."""
    agent = ReplicaAgent()
    actions = {
        "start": agent.start,
        "stop": agent.stop,
        "monitor": agent.monitor,
        "promote": agent.promote,
        "demote": agent.demote,
        "notify": agent.notify,
    }
    return ocf.run(actions, lambda: metadata().to_xml(), agent.validate, argv)

"""The only module that wires stages: the primary's capture pipeline and the standby's apply
pipeline, each behind the daemon's ``RolePipeline`` shape (start, stop, ready, error, snapshot,
sentence, control).

Data flows one way: source log → assembler → outbox → transport → queue → applier → target.
Positions flow back only as values: the standby acks durable sequence numbers, the primary turns
the minimum over required standbys into the position the source may release (I6).

Threads: primary = capture thread + the transport's listener/sender threads; standby = the
transport's receiver thread + the apply thread.  Errors: ``Retryable*`` → the thread backs off
and starts a new session from durable state (nothing lost, nothing doubled: the outbox dedupes
by commit position, the target by its applied position); anything else is fatal and stops the
daemon with one line naming what and where (I9).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from hodr.config import Config, tls_errors
from hodr.errors import ConfigError, HodrError, HodrFatal, Retryable
from hodr.position import ZERO, LogPosition
from hodr.redo.records import Idle, LoadRows, RowChange, Truncate
from hodr.replicate import tls
from hodr.replicate.apply import ApplyLoop
from hodr.replicate.assembler import Assembler
from hodr.replicate.fsutil import atomic_write, read_small
from hodr.replicate.nodestate import NodeState
from hodr.replicate.outbox import Outbox
from hodr.replicate.queue import DurableQueue
from hodr.replicate.transaction import Transaction
from hodr.replicate.transport import PrimaryServer, StandbyClient, TransportSettings
from hodr.status import PeerStatus

log = logging.getLogger("hodr.pipeline")

LOAD_PART_ROWS = 20_000
#: Longest time the applier keeps a group of source transactions open under a steady stream.
GROUP_S = 0.025


def build(cfg: Config) -> Any:
    """The daemon's pipeline: a ReplicaNode running the configured role, able to change it."""
    from hodr.replicate.node import ReplicaNode

    return ReplicaNode(cfg)


# --- transport wiring: TLS contexts from the configuration ----------------------------------------
def _tls_files(cfg: Config) -> tls.TlsFiles | None:
    """The node's TLS files, or None with ``transport.insecure`` (warned at every start: a
    plaintext stream is neither private nor authenticated, and nobody should forget it is on).

    A missing or unsafe file is a :class:`ConfigError` naming its key, raised before anything
    listens or connects."""
    errors = tls_errors(cfg)
    if errors:
        raise ConfigError(errors)
    t = cfg.transport
    if t.insecure:
        log.warning(
            "transport.insecure is true: replication traffic is NOT encrypted and peers are NOT "
            "authenticated; set transport.tls_ca/tls_cert/tls_key (hodr certs) to fix"
        )
        return None
    return tls.TlsFiles(ca=t.tls_ca, cert=t.tls_cert, key=t.tls_key)


DETACHED_FILE = "detached.json"


class _Backoff:
    def __init__(self, lo: float = 0.2, hi: float = 5.0) -> None:
        self.lo, self.hi, self.cur = lo, hi, lo

    def wait(self, stop: threading.Event) -> None:
        stop.wait(self.cur)
        self.cur = min(self.hi, self.cur * 2)

    def reset(self) -> None:
        self.cur = self.lo


# --- primary --------------------------------------------------------------------------------------
class _SessionLoop:
    """What both roles share: a thread that runs one session after another until stopped.

    A ``Retryable`` error ends the session, shows in the sentence and is retried with backoff;
    anything else is fatal and kept for the daemon, which reports it and stops (I9)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._problem = ""  # the last retryable problem, for the sentence
        self._down_since = 0.0  # monotonic time of the first failed session in a row (0: up)

    def ready(self) -> bool:
        return self._ready.is_set()

    def stopped(self) -> bool:
        """stop() was called: the pipeline's connections and files are closed or closing."""
        return self._stop.is_set()

    def _session_up(self, backoff: _Backoff) -> None:
        """The session reached its database: ready, no problem, no backoff."""
        self._ready.set()
        self._problem = ""
        self._down_since = 0.0
        backoff.reset()

    def db_down_s(self) -> float:
        """Seconds the sessions have been failing to use the local database (0: working).

        Each role's sessions talk to exactly one local database (capture to the source, apply to
        the target); their retryable failures are that database's.  The agent's monitor turns a
        long enough outage into a failed resource (docs/replica-agent.md, Monitor)."""
        since = self._down_since
        return round(time.monotonic() - since, 1) if since else 0.0

    def _run_sessions(self, what: str, session: Callable[[_Backoff], None]) -> None:
        backoff = _Backoff()
        while not self._stop.is_set():
            try:
                session(backoff)
            except Retryable as exc:
                self._problem = " ".join(str(exc).split())
                if not self._down_since:
                    self._down_since = time.monotonic()
                log.warning("%s: %s (retrying)", what, self._problem)
                backoff.wait(self._stop)
            except BaseException as exc:  # noqa: BLE001 - fatal: the daemon reports and stops
                if not self._stop.is_set():
                    log.error("%s stopped: %s", what, exc)
                    self._error = exc
                return


class PrimaryPipeline(_SessionLoop):
    """Capture → assembler → outbox, and the transport server that feeds the standbys.

    ``outbox_base``: for a promoted standby, the position it had applied at promotion; a new
    outbox starts its history there, so peers that hold exactly that commit resume without a
    reseed."""

    def __init__(self, cfg: Config, outbox_base: LogPosition | None = None) -> None:
        self.outbox_base = outbox_base or ZERO
        self.cfg = cfg
        self.data = cfg.data_path
        super().__init__()
        self.state = NodeState()
        self.outbox: Outbox | None = None
        self.server: PrimaryServer | None = None
        self.source: Any = None
        self._thread: threading.Thread | None = None
        self._required = [p.name for p in cfg.transport.standbys if p.required]
        self._lagging: dict[str, float] = {}  # over transport.max_lag_mb: name → since (monotonic)
        self._detached: dict[str, str] = {}  # name → reason; persisted in DETACHED_FILE
        self._capture_pos = ZERO
        self._txns = 0
        self._idle: tuple[LogPosition, LogPosition] | None = None  # (idle position, last appended commit)
        self._dirty = threading.Event()  # the capture appended something not yet fsynced
        self._syncer: threading.Thread | None = None
        self._last_trim = 0.0

    # -- RolePipeline ------------------------------------------------------------------------
    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.state = NodeState.load(self.data)
        files = _tls_files(self.cfg)
        names = [p.name for p in self.cfg.transport.standbys]
        self.outbox = Outbox(self.data / "outbox", standbys=names, base=self.outbox_base)
        self.server = PrimaryServer(
            self.cfg.transport.listen_host,
            self.cfg.transport.port,
            self.outbox,
            [p.name for p in self.cfg.transport.standbys],
            settings=TransportSettings.from_config(self.cfg.transport),
            ssl_context=tls.server_context(files) if files else None,
            on_ack=self._on_ack,
        )
        self._load_detached()
        try:
            self.server.start()
        except OSError as exc:
            raise HodrFatal(
                f"transport: cannot listen on {self.cfg.transport.listen_host}:"
                f"{self.cfg.transport.port}: {exc.strerror}"
            ) from exc
        self._thread = threading.Thread(target=self._capture_main, name="capture", daemon=True)
        self._thread.start()
        self._syncer = threading.Thread(target=self._sync_main, name="outbox-sync", daemon=True)
        self._syncer.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._dirty.set()
        if self.source is not None:
            with contextlib.suppress(Exception):
                self.source.close()
        if self._thread:
            self._thread.join(timeout)
        if self._syncer:
            self._syncer.join(timeout)
        if self.server:
            self.server.close(timeout)
        if self.outbox:
            self.outbox.close()

    def error(self) -> BaseException | None:
        return self._error

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("request") == "attach":
            # An operator re-admits a detached standby (after reseeding it, or because the
            # outbox still holds what it needs): it may connect again and counts again.
            name = str(request.get("standby", ""))
            if name not in {p.name for p in self.cfg.transport.standbys}:
                return {"result": "refused", "reason": f"unknown standby {name!r}"}
            self._detached.pop(name, None)
            self._lagging.pop(name, None)
            self._save_detached()
            if self.server:
                self.server.attach(name)
            log.info("standby %s attached again by request", name)
            return {"result": "done"}
        return {"result": "refused", "reason": f"unknown request {request.get('request')!r}"}

    def snapshot(self) -> dict[str, Any]:
        self._housekeeping()
        peers: list[PeerStatus] = []
        if self.server and self.outbox:
            stats = self.server.stats()
            for p in self.cfg.transport.standbys:
                st = stats.get(p.name)
                acked_seq = self.outbox.acked(p.name)
                commit = self.outbox.cursor(p.name).commit
                if commit.epoch == self.state.epoch:
                    lag = max(0, self._capture_pos.lsn - commit.lsn)
                else:
                    # Acked only up to an older epoch (e.g. a peer catching up from the window a
                    # promotion seeded): source LSNs are not comparable, the outbox bytes are.
                    lag = self.outbox.lag_bytes(p.name)
                peers.append(
                    PeerStatus(
                        name=p.name,
                        connected=bool(st and st.connected),
                        acked=str(commit) if commit.lsn else "",
                        acked_seq=acked_seq,
                        lag_bytes=lag,
                        required=p.required,
                        sent_bytes=st.bytes_raw if st else 0,
                        wire_bytes=st.bytes_wire if st else 0,
                        compression=st.compression if st else 0,
                        outbox_lag_bytes=self.outbox.lag_bytes(p.name),
                        lagging=p.name in self._lagging,
                        detached=self._detached.get(p.name, ""),
                        down_s=st.down_s if st else 0.0,
                    )
                )
        released = self.source.released if self.source is not None else None
        return {
            "epoch": self.state.epoch,
            "capture": str(self._capture_pos) if self._capture_pos.lsn else "",
            "released": str(released) if released and released.lsn else "",
            "outbox_end": self.outbox.end_seq if self.outbox else 0,
            "peers": tuple(peers),
            "txns_captured": self._txns,
            "error": self._problem,
            "db_down_s": self.db_down_s(),
        }

    def sentence(self) -> str:
        if self._problem and not self._ready.is_set():
            return f"primary: waiting: {self._problem}"
        parts = [f"primary: captured {self._txns} txns up to {self._capture_pos}"]
        if self.server and self.outbox:
            connected = set(self.server.connected())
            for p in self.cfg.transport.standbys:
                state = "connected" if p.name in connected else "disconnected"
                if p.name in self._detached:
                    state = "DETACHED"
                elif p.name in self._lagging:
                    state += " LAGGING"
                parts.append(f"{p.name} {state}, acked seq {self.outbox.acked(p.name)}/{self.outbox.end_seq}")
        if self._problem:
            parts.append(f"retrying: {self._problem}")
        return "; ".join(parts)

    def _housekeeping(self) -> None:
        """Once per cycle: the lag policy; at most every few seconds: drop outbox segments every
        standby has."""
        self._lag_policy()
        now = time.monotonic()
        if self.outbox is not None and now - self._last_trim > 5.0:
            self._last_trim = now
            try:
                self.outbox.trim(exclude=list(self._detached))
            except HodrError as exc:
                log.warning("outbox trim: %s", exc)

    # -- lag policy (transport.max_lag_mb / detach_lagging, I6) -------------------------------------
    def _lag_policy(self) -> None:
        """Mark and alert a standby whose unacked outbox bytes exceed ``max_lag_mb``; with
        ``detach_lagging`` detach it once it stayed over the limit for ``dead_peer_s``, so that
        it stops holding back the source log (and sync-mode commits) instead of filling the
        primary's disk.  Alerts are logged once per episode.

        Why the grace period: one large transaction puts even a healthy standby over a small
        limit until it has acked it (milliseconds to seconds); only a standby that cannot get
        back under the limit is lagging for real."""
        t = self.cfg.transport
        if self.outbox is None or self.server is None or t.max_lag_mb <= 0:
            return
        limit = t.max_lag_mb * (1 << 20)
        now = time.monotonic()
        for p in t.standbys:
            if p.name in self._detached:
                continue
            lag = self.outbox.lag_bytes(p.name)
            if lag > limit:
                if p.name not in self._lagging:
                    self._lagging[p.name] = now
                    log.warning(
                        "standby %s is %.1f MiB behind (transport.max_lag_mb %g)%s",
                        p.name,
                        lag / (1 << 20),
                        t.max_lag_mb,
                        f"; detaching it unless it catches up within {t.dead_peer_s:g}s"
                        if t.detach_lagging
                        else "",
                    )
                if t.detach_lagging and now - self._lagging[p.name] >= t.dead_peer_s:
                    self._detach(
                        p.name,
                        f"{lag / (1 << 20):.1f} MiB behind, over transport.max_lag_mb {t.max_lag_mb:g}; "
                        f"reseed it, or send 'attach' if the outbox still holds its position",
                    )
            elif p.name in self._lagging:
                del self._lagging[p.name]
                log.info(
                    "standby %s is back within transport.max_lag_mb (%.1f MiB behind)", p.name, lag / 2**20
                )

    def _detach(self, name: str, reason: str) -> None:
        log.error("standby %s DETACHED: %s", name, reason)
        self._detached[name] = reason
        self._save_detached()
        assert self.server is not None
        self.server.detach(name, reason)
        self._release_now()

    def _load_detached(self) -> None:
        """Detachment survives restarts: a detached standby's position was given up (the source
        log moved past it), so it must not silently count again after a primary restart."""
        raw = read_small(self.data / DETACHED_FILE)
        if raw is None:
            return
        try:
            loaded = json.loads(raw)
            self._detached = {str(k): str(v) for k, v in dict(loaded).items()}
        except (ValueError, TypeError) as exc:
            raise HodrFatal(f"{self.data / DETACHED_FILE}: unreadable: {exc}") from exc
        assert self.server is not None
        for name, reason in self._detached.items():
            log.warning("standby %s stays detached: %s", name, reason)
            self.server.detach(name, reason)

    def _save_detached(self) -> None:
        atomic_write(self.data / DETACHED_FILE, json.dumps(self._detached, sort_keys=True).encode())

    def _release_floor(self) -> LogPosition:
        """The commit enough standbys that count hold durably: the required ones, less the
        detached; if that leaves nobody, every attached standby; if nobody at all, the end of
        what the outbox holds durably (nothing is waiting for anyone).  "Enough" is
        ``sync_quorum`` of them (default, 0: all); fewer counted standbys than the quorum (some
        detached) means all of those left."""
        assert self.outbox is not None
        names = [n for n in self._required if n not in self._detached]
        if not names:
            names = [p.name for p in self.cfg.transport.standbys if p.name not in self._detached]
        if names:
            return self.outbox.released_position(names, self.cfg.sync_quorum)
        end = self.outbox.end_seq
        return self.outbox.commit_for_seq(end) if end else self.outbox.base

    def _release_now(self) -> None:
        self._on_ack("", 0)

    # -- group commit --------------------------------------------------------------------------
    def _sync_main(self) -> None:
        """fsync the outbox whenever the capture appended something (group commit).

        Why a thread: the capture appends without fsync and goes on reading; one fsync here
        covers every transaction appended meanwhile, so the commit rate is not capped at one
        fsync per transaction.  Nothing is shipped or acked before this fsync (the outbox
        publishes to senders only in sync()), so durability is unchanged (I5, I6).
        """
        assert self.outbox is not None
        while not self._stop.is_set():
            self._dirty.wait(0.5)
            if self._stop.is_set():
                break
            self._dirty.clear()
            try:
                self.outbox.sync()
            except BaseException as exc:  # noqa: BLE001 - disk full etc.: fatal, reported by the daemon
                log.error("outbox sync failed: %s", exc)
                self._error = exc
                return
        with contextlib.suppress(Exception):
            self.outbox.sync()

    # -- capture thread ------------------------------------------------------------------------
    def _capture_main(self) -> None:
        self._run_sessions("capture", self._capture_session)

    def _make_source(self) -> Any:
        from hodr.redo.postgres import PostgresSource

        src = self.cfg.source
        return PostgresSource(
            src.dsn,
            slot=src.slot,
            publication=src.publication,
            epoch=self.state.epoch,
            application_name=src.application_name,
            logical_decoding_work_mem=src.logical_decoding_work_mem or None,
            set_replica_identity_full=src.set_replica_identity_full,
            stop=self._stop,
        )

    def _capture_session(self, backoff: _Backoff) -> None:
        assert self.outbox is not None
        source = self._make_source()
        self.source = source
        # Why a new assembler per session: the server re-sends every transaction not yet
        # confirmed, streamed ones from their start; partial state from the last session would
        # double their changes.  Commits already durable in the outbox are skipped (I7).
        assembler = Assembler(
            self.data / "spill",
            memory_budget=self.cfg.source.memory_budget_mb << 20,
            skip_upto=self.outbox.last_commit(),
        )
        try:
            source.ensure_publication(list(self.cfg.source.tables) or None)
            source.check_replica_identity()
            self._ensure_slot(source)
            # After the slot: creating it waits for every running transaction, and with hodr's
            # walsender already named synchronous, an application commit waits for that walsender,
            # which needs the slot: a deadlock (lab: a primary restarted in place, 75 s).
            if self.cfg.sync:
                source.ensure_synchronous()
            start = self._release_floor()
            if start.epoch == self.state.epoch and source.released.lsn > start.lsn:
                start = source.released
            self._session_up(backoff)
            log.info("capture: streaming slot %s from %s", self.cfg.source.slot, start)
            outbox = self.outbox
            for rec in source.read(start):
                if isinstance(rec, Idle):
                    self._capture_pos = rec.position
                    if assembler.open_transactions() == 0:
                        # Everything before this position is appended (maybe not yet fsynced):
                        # it may be released once the standbys acked the last appended commit.
                        self._idle = (rec.position, outbox.last_commit())
                        self._release_idle()
                    continue
                for txn in assembler.feed(rec):
                    outbox.append(txn, sync=False)
                    if txn.final:
                        self._txns += 1
                        self._capture_pos = txn.commit
                        self._dirty.set()
                if self._stop.is_set():
                    break
        finally:
            assembler.close()
            source.close()

    def _ensure_slot(self, source: Any) -> None:
        if self.state.slot_ready and self.state.slot == self.cfg.source.slot:
            if source.slot_info() is None:
                raise HodrFatal(
                    f"source: replication slot {self.cfg.source.slot!r} is missing although this node "
                    "created it: changes since then are lost to it; run 'hodr init-load' to reseed"
                )
            return
        if self.cfg.source.initial_load:
            initial_load(self.cfg, source=source, outbox=self.outbox, state=self.state)
            self.state = NodeState.load(self.data)
        else:
            source.drop_slot()
            source.ensure_slot()
            self.state = self.state.with_(slot_ready=True, slot=self.cfg.source.slot)
            self.state.save(self.data)

    # -- releasing the source log (I6) -----------------------------------------------------------
    def _on_ack(self, name: str, seq: int) -> None:
        """A standby durably queued up to ``seq``: tell the source what it may release.

        Why not capped at the assembler's restart point on PostgreSQL: the slot itself keeps the
        WAL of open transactions (its restart_lsn) and re-sends them whole after a reconnect;
        confirming a commit only stops that commit being re-sent.  Capping would make sync-mode
        commits wait behind any long open transaction.
        """
        if self.outbox is None or self.source is None:
            return
        pos = self._release_floor()
        if pos.epoch == self.state.epoch and pos.lsn:
            self.source.release(pos)
        self._release_idle()

    def _release_idle(self) -> None:
        """When everything captured is durably acked and nothing is open, release up to the last
        idle position, so an idle primary's slot does not hold WAL forever."""
        idle = self._idle
        if idle is None or self.outbox is None or self.source is None:
            return
        pos, appended = idle
        # Compare with the last *appended* commit, not the published end: with group commit a
        # transaction can be appended but not yet fsynced/shipped, and releasing past it would
        # let a sync-mode commit return before any standby has it (caught by the sync test).
        if self._release_floor() >= appended:
            self.source.release(pos)


def initial_load(
    cfg: Config,
    *,
    source: Any = None,
    outbox: Outbox | None = None,
    state: NodeState | None = None,
    progress: bool = False,
) -> LogPosition:
    """Create the slot exporting a snapshot, copy every published table from that snapshot into
    the outbox as one synthetic transaction committed at the slot's consistent point, then mark
    the slot ready.  Streaming then starts exactly at that point: no gap, no overlap.

    Why through the outbox: every standby receives the load like any transaction, durable,
    resumable, exactly once, and applies it (truncate + COPY) atomically with its position.
    A crash half-way leaves ``slot_ready`` false, so the next start drops the slot and redoes it.
    """
    data = cfg.data_path
    own_source = source is None
    own_outbox = outbox is None
    state = state or NodeState.load(data)
    if own_source:
        from hodr.redo.postgres import PostgresSource

        source = PostgresSource(
            cfg.source.dsn,
            slot=cfg.source.slot,
            publication=cfg.source.publication,
            epoch=state.epoch,
            application_name=cfg.source.application_name,
        )
        source.ensure_publication(list(cfg.source.tables) or None)
        source.check_replica_identity()
    if own_outbox:
        outbox = Outbox(data / "outbox", standbys=[p.name for p in cfg.transport.standbys])
    assert outbox is not None
    try:
        state = state.with_(slot_ready=False, slot=cfg.source.slot)
        state.save(data)
        source.drop_slot()
        consistent, snapshot = source.create_slot_exporting_snapshot()
        commit = LogPosition(state.epoch, consistent.lsn)
        tables = source.table_metadata(list(cfg.source.tables) or None)
        log.info(
            "initial load: slot %s consistent at %s; copying %d tables", cfg.source.slot, commit, len(tables)
        )
        meter = _LoadMeter(progress, source.estimate_rows(tables))
        part = 0
        pending: list[Any] = [Truncate(tuple(tables))] if tables else []
        rows_in_part = 0
        for chunk in source.snapshot_rows(snapshot, list(cfg.source.tables) or None):
            meter.add(chunk)
            if rows_in_part + len(chunk.rows) > LOAD_PART_ROWS and pending:
                outbox.append(
                    Transaction(0, commit, commit, int(time.time() * 1e6), tuple(pending), part, False),
                    sync=False,
                )
                part += 1
                pending, rows_in_part = [], 0
            pending.append(chunk)
            rows_in_part += len(chunk.rows)
        outbox.append(Transaction(0, commit, commit, int(time.time() * 1e6), tuple(pending), part, True))
        source.finish_snapshot()
        meter.done()
        state = state.with_(slot_ready=True)
        state.save(data)
        log.info("initial load: %d rows queued at %s", meter.rows, commit)
        return commit
    finally:
        if own_source:
            source.close()
        if own_outbox:
            outbox.close()


class _LoadMeter:
    """Rows, MB/s and elapsed time of the initial load: a progress line on a terminal, plain log
    lines otherwise."""

    def __init__(self, tty: bool, expected_rows: int = 0) -> None:
        self.tty = tty
        self.expected = expected_rows
        self.rows = 0
        self.bytes = 0
        self.t0 = time.monotonic()
        self._last = 0.0

    def add(self, chunk: LoadRows) -> None:
        self.rows += len(chunk.rows)
        self.bytes += sum(len(v) for row in chunk.rows for v in row if isinstance(v, str))
        now = time.monotonic()
        if now - self._last >= (0.2 if self.tty else 5.0):
            self._last = now
            line = self._line(chunk.table.qualified)
            if self.tty:
                import sys

                print("\r" + line, end="", file=sys.stderr, flush=True)
            else:
                log.info("%s", line)

    def _line(self, table: str) -> str:
        dt = max(1e-6, time.monotonic() - self.t0)
        eta = ""
        if self.expected > self.rows > 0:
            eta = f", ETA {(self.expected - self.rows) * dt / self.rows:.0f}s"
            done = f"{self.rows}/~{self.expected} rows ({100 * self.rows / self.expected:.0f}%)"
        else:
            done = f"{self.rows} rows"
        return f"initial load: {done}, {self.bytes / dt / 1e6:.1f} MB/s, {dt:.0f}s{eta} ({table})"

    def done(self) -> None:
        if self.tty:
            import sys

            print("\r" + self._line("done"), file=sys.stderr, flush=True)


# --- standby ----------------------------------------------------------------------------------------
class StandbyPipeline(_SessionLoop):
    """Transport receiver → durable queue → applier → target database."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.data = cfg.data_path
        super().__init__()
        self.queue: DurableQueue | None = None
        self.client: StandbyClient | None = None
        self._files: tls.TlsFiles | None = None
        self._thread: threading.Thread | None = None
        self._applied = ZERO
        self._applied_time = 0  # commit time (µs) of the last applied transaction
        self._txns = 0
        self._rows = 0
        self._finals: deque[tuple[LogPosition, int, int, int]] = deque()  # commit, seq, rows, time
        self._paused = threading.Event()

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        files = _tls_files(self.cfg)
        self.queue = DurableQueue(self.data / "queue", retain_bytes=self.cfg.target.queue_retain_mb << 20)
        self._files = files
        self.client = self._make_client(self.cfg.transport.primary_host, self.cfg.transport.port).start()
        self._thread = threading.Thread(target=self._apply_main, name="apply", daemon=True)
        self._thread.start()

    def _make_client(self, host: str, port: int) -> StandbyClient:
        assert self.queue is not None
        files = self._files
        return StandbyClient(
            host,
            port,
            self.cfg.node,
            self.queue,
            settings=TransportSettings.from_config(self.cfg.transport),
            ssl_context=tls.client_context(files) if files else None,
            primary_names=self.cfg.transport.primary_name if files else None,
        )

    # -- role-change hooks (hodr.replicate.node) -------------------------------------------------
    def follow(self, host: str, port: int) -> None:
        """Receive from another primary from now on (after a failover or a switchover)."""
        if self.client is not None:
            self.client.close(10)
        self.client = self._make_client(host, port).start()

    def stop_receiving(self, timeout: float = 10) -> None:
        """Promotion step 1: nothing new arrives while the queue drains."""
        if self.client is not None:
            self.client.close(timeout)

    def in_sync(self) -> bool:
        """True when, at the last contact, this standby durably held everything the primary had
        published (what ``require_sync`` demands before a promotion)."""
        if self.client is None:
            return False
        rs = self.client.stats()
        return rs.connections > 0 and rs.durable_seq >= rs.primary_end_seq

    def drained(self) -> bool:
        """Everything durably queued (complete transactions) is applied."""
        if self.queue is None or not self._ready.is_set():
            return False
        dc = self.queue.last_durable_commit()
        return dc is None or self._applied >= dc

    @property
    def applied(self) -> LogPosition:
        return self._applied

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self.client:
            self.client.close(timeout)
        if self._thread:
            self._thread.join(timeout)
        if self.queue:
            self.queue.close()

    def error(self) -> BaseException | None:
        if self._error is None and self.client is not None and self.client.failed:
            return HodrFatal(f"transport: {self.client.failed}")
        return self._error

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        what = request.get("request")
        if what == "pause-apply":
            self._paused.set()
            return {"result": "done"}
        if what == "resume-apply":
            self._paused.clear()
            return {"result": "done"}
        return {"result": "refused", "reason": f"unknown request {what!r}"}

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "epoch": self._applied.epoch,
            "applied": str(self._applied) if self._applied.lsn else "",
            "txns_applied": self._txns,
            "rows_applied": self._rows,
            "error": self._problem,
            "db_down_s": self.db_down_s(),
        }
        if self.client:
            rs = self.client.stats()
            out["primary_connected"] = rs.connected
            out["primary_down_s"] = rs.down_s
            out["received_seq"] = rs.received_seq
            out["durable_seq"] = rs.durable_seq
            out["extra"] = {
                "following": {"host": self.cfg.transport.primary_host, "port": self.cfg.transport.port},
                "bytes_raw": rs.bytes_raw,
                "bytes_wire": rs.bytes_wire,
                "compression": rs.compression,
                "transport_error": rs.last_error,
            }
        if self.queue:
            qs = self.queue.stats()
            dc = self.queue.last_durable_commit()
            out["durable_commit"] = str(dc) if dc else ""
            pending = max(0, self.queue.durable_seq - self.queue.applied_seq)
            out["queue_txns"] = pending
            out["queue_bytes"] = getattr(qs, "bytes", 0)
            out["lag_bytes"] = (
                max(0, dc.lsn - self._applied.lsn) if dc and dc.epoch == self._applied.epoch else 0
            )
            if pending and self._applied_time:
                out["lag_s"] = max(0.0, time.time() - self._applied_time / 1e6)
        return out

    def sentence(self) -> str:
        conn = (
            "primary connected" if self.client and self.client.stats().connected else "primary DISCONNECTED"
        )
        text = f"standby: applied {self._txns} txns up to {self._applied}; {conn}"
        if self.queue:
            text += f"; queue {max(0, self.queue.durable_seq - self.queue.applied_seq)} records"
        if self._paused.is_set():
            text += "; apply paused"
        if self._problem:
            text += f"; retrying: {self._problem}"
        return text

    # -- apply thread ------------------------------------------------------------------------------
    def _apply_main(self) -> None:
        self._run_sessions("apply", self._apply_session)

    def _apply_session(self, backoff: _Backoff) -> None:
        from hodr.replicate.apply.postgres import PostgresTarget, prepare_standby

        assert self.queue is not None
        target = PostgresTarget(self.cfg.target.dsn)
        try:
            target.setup()
            if self.cfg.target.read_only:
                prepare_standby(self.cfg.target.dsn)
            self._applied = target.applied_position()
            self._session_up(backoff)
            self._finals.clear()
            loop = ApplyLoop(target, self.cfg.target.batch_txns, self.cfg.target.batch_changes)
            # Retained records (queue.retain_bytes) the target already holds are skipped by their
            # headers, not decoded and skipped by the loop.
            self.queue.skip_applied(self._applied)
            loop.apply_stream(self._parts(self.queue.applied_seq + 1), self._on_applied)
        finally:
            target.close()

    def _parts(self, from_seq: int) -> Iterator[Transaction | None]:
        """Queue records as parts for the apply loop; ``None`` whenever nothing is ready, so the
        loop commits what it has instead of waiting for a full batch."""
        assert self.queue is not None
        queue = self.queue
        with contextlib.closing(queue.reader(from_seq)) as reader:
            rows = 0
            group_start = time.monotonic()
            while not self._stop.is_set():
                # Bound the lag a busy stream adds: at least every GROUP_S the loop is told
                # "nothing more for now" and commits its group at the next transaction end.
                if time.monotonic() - group_start > GROUP_S:
                    group_start = time.monotonic()
                    yield None
                if self._paused.is_set():
                    yield None
                    self._stop.wait(0.1)
                    continue
                recs = reader.read()
                if not recs:
                    group_start = time.monotonic()
                    yield None
                    queue.wait(reader.next_seq - 1, 0.2)
                    continue
                for seq, txn in recs:
                    rows += _count_rows(txn)
                    if txn.final:
                        self._finals.append((txn.commit, seq, rows, txn.commit_time))
                        rows = 0
                    yield txn

    def _on_applied(self, pos: LogPosition) -> None:
        """The target committed everything up to ``pos``: trim the queue behind it."""
        assert self.queue is not None
        last_seq = 0
        while self._finals and self._finals[0][0] <= pos:
            commit, seq, rows, ctime = self._finals.popleft()
            last_seq = seq
            self._txns += 1
            self._rows += rows
            self._applied_time = ctime
        self._applied = max(self._applied, pos)
        if last_seq:
            self.queue.trim(last_seq)


def _count_rows(txn: Transaction) -> int:
    n = 0
    for c in txn.changes:
        if isinstance(c, RowChange):
            n += 1
        elif isinstance(c, LoadRows):
            n += len(c.rows)
    return n

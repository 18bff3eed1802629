"""A replica node: one role pipeline at a time, and the role changes the cluster manager asks for
through the control socket (``promote``, ``demote``, ``follow``, ``drain``).

Why here and not in the agent: a promotion must drain the durable queue, bump the epoch durably
and start capture only after the applier has stopped (so the applier's own writes are never
captured, architecture §7); only the daemon can order those steps.  The agent asks, polls the
status file, and decides (election, scores, rejoin guard) — it never touches the pipeline.

Each request starts at most one background job; repeating a request while it runs answers
``in-progress`` (requests are idempotent), asking for the role the node already has answers
``done``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

from hodr.config import Config
from hodr.errors import HodrError
from hodr.position import LogPosition
from hodr.replicate.nodestate import NodeState
from hodr.replicate.pipeline import PrimaryPipeline, StandbyPipeline
from hodr.replicate.queue import DurableQueue

log = logging.getLogger("hodr.node")


class ReplicaNode:
    """Implements the daemon's RolePipeline by delegating to the current role's pipeline."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.role = cfg.role
        self.current: PrimaryPipeline | StandbyPipeline = (
            PrimaryPipeline(cfg) if cfg.role == "primary" else StandbyPipeline(cfg)
        )
        self._lock = threading.Lock()
        self._job: threading.Thread | None = None
        self._job_name = ""
        self._job_step = ""
        self._job_error = ""
        self._error: BaseException | None = None
        self._held = ""  # why this node does not stream (a crashed primary's refused rewind)
        # A demote that stopped capture and then failed (the agent asks again) resumes after
        # the stop with what it had found: (last commit of the epoch, end acked by a standby).
        self._demote_ended: tuple[LogPosition, bool] | None = None

    # -- RolePipeline ------------------------------------------------------------------------------
    def start(self) -> None:
        from hodr.replicate import rewind

        if self.role == "primary":
            rewind.record_primary_term(self.cfg)
        else:  # a crashed primary undoes its unacknowledged tail first, or is held out
            outcome = rewind.rejoin(self.cfg)
            if outcome is not None and outcome.diverged:
                self._held = outcome.reason
                return
        self.current.start()

    def stop(self, timeout: float) -> None:
        if self._job is not None:
            self._job.join(timeout)
        self.current.stop(timeout)

    def ready(self) -> bool:
        return self._job is None and self.current.ready()

    def error(self) -> BaseException | None:
        return self._error or self.current.error()

    def snapshot(self) -> dict[str, Any]:
        snap = self.current.snapshot()
        state = NodeState.load(self.cfg.data_path)
        extra = dict(snap.get("extra", {}))
        extra.update(
            {
                "primary_epochs": list(state.primary_epochs),
                "diverged": state.diverged,
                "diverged_reason": state.diverged_reason,
                "role_change": self._job_name,
                "role_change_step": self._job_step,
                "role_change_error": self._job_error,
            }
        )
        snap["extra"] = extra
        snap["epoch"] = max(snap.get("epoch", 0), state.epoch)
        return snap

    def sentence(self) -> str:
        if self._job is not None:
            return f"{self._job_name}: {self._job_step}"
        if self._held:
            return f"held, not streaming: {self._held}"
        return self.current.sentence()

    # -- control -----------------------------------------------------------------------------------
    def control(self, req: dict[str, Any]) -> dict[str, Any]:
        what = req.get("request")
        with self._lock:
            if what in ("promote", "demote", "follow", "drain") and self._job is not None:
                if self._job_name == what:
                    return {"result": "in-progress", "sentence": self.sentence()}
                return {"result": "refused", "reason": f"busy: {self._job_name} in progress"}
            if what == "promote":
                return self._promote_request(req)
            if what == "demote":
                return self._demote_request(req)
            if what == "follow":
                return self._follow_request(req)
            if what == "drain":
                return self._drain_request()
        return self.current.control(req)

    def _start_job(self, name: str, target: Any, *args: Any) -> dict[str, Any]:
        self._job_name, self._job_step, self._job_error = name, "starting", ""

        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - reported in the status; the agent decides
                self._job_error = " ".join(str(exc).split()) or type(exc).__name__
                log.error("%s failed: %s", name, self._job_error)
            finally:
                with self._lock:
                    self._job = None
                    self._job_name = self._job_step = ""

        self._job = threading.Thread(target=run, name=name, daemon=True)
        self._job.start()
        return {"result": "in-progress", "sentence": f"{name}: starting"}

    # -- promote -----------------------------------------------------------------------------------
    def _promote_request(self, req: dict[str, Any]) -> dict[str, Any]:
        state = NodeState.load(self.cfg.data_path)
        epoch = int(req.get("epoch") or state.epoch + 1)
        if self.role == "primary":
            if epoch <= state.epoch:
                return {"result": "done"}
            return {"result": "refused", "reason": f"already primary in epoch {state.epoch}"}
        sb = self.current
        assert isinstance(sb, StandbyPipeline)
        if not sb.ready():
            return {"result": "refused", "reason": "standby is not running (target not reachable yet?)"}
        if req.get("require_sync") and not sb.in_sync():
            return {
                "result": "refused",
                "reason": "require_sync: this standby did not hold everything the primary had published",
            }
        if epoch <= max(state.epoch, sb.applied.epoch):
            return {
                "result": "refused",
                "reason": f"epoch {epoch} is not after this node's epoch {state.epoch}",
            }
        deadline = time.monotonic() + float(req.get("deadline_s", 60))
        return self._start_job("promote", self._promote, epoch, deadline)

    def _promote(self, epoch: int, deadline: float) -> None:
        from hodr.replicate.apply.postgres import release_standby

        sb = self.current
        assert isinstance(sb, StandbyPipeline)
        self._job_step = "stopping the receiver"
        sb.stop_receiving()
        self._job_step = "draining the durable queue"
        while not sb.drained():
            if sb.error() is not None:
                raise HodrError(f"promote: apply failed while draining: {sb.error()}")
            if time.monotonic() > deadline:
                raise HodrError("promote: the queue did not drain before the deadline")
            time.sleep(0.05)
        applied = sb.applied
        self._job_step = f"applied {applied}; stopping the applier"
        sb.stop(30)
        # Durable before anything is written as primary: a crash from here on restarts this
        # node as the primary of the new epoch, never as a standby of the old one (I1).
        state = NodeState.load(self.cfg.data_path)
        state = state.with_(
            epoch=epoch,
            slot_ready=False,
            primary_epochs=(*state.primary_epochs, {"epoch": epoch, "start": str(applied)}),
        )
        state.save(self.cfg.data_path)
        self._job_step = f"epoch {epoch}: seeding the outbox from the queue's retained window"
        self._seed_outbox(applied)
        src = replace(self.cfg.source, dsn=self.cfg.source.dsn or self.cfg.target.dsn, initial_load=False)
        cfg = replace(self.cfg, role="primary", source=src)
        self._job_step = f"epoch {epoch}: starting capture (new slot)"
        pp = PrimaryPipeline(cfg, outbox_base=applied)
        self.current, self.role = pp, "primary"
        pp.start()
        while not pp.ready():
            if pp.error() is not None:
                raise HodrError(f"promote: capture failed to start: {pp.error()}")
            if time.monotonic() > deadline:
                raise HodrError("promote: capture did not start before the deadline")
            time.sleep(0.05)
        # Writable only now: a commit before the new slot existed would be in neither the
        # outbox nor the slot (lost to every standby, silently in async mode).
        self._job_step = f"epoch {epoch}: database writable for applications"
        release_standby(self.cfg.target.dsn)
        log.info("promoted: primary in epoch %d from %s", epoch, applied)

    def _seed_outbox(self, applied: LogPosition) -> None:
        """The new primary's outbox starts with the old history's transactions this node still
        holds in its durable queue (target.queue_retain_mb), byte for byte and at their old
        commit positions, ending exactly at ``applied``; capture appends the new epoch after
        them.  A peer whose last durable commit is any commit in that window (it had received
        less than this node from the old primary) resumes right after it instead of needing a
        reseed (Outbox.resume_point); one at exactly ``applied`` resumes at the new epoch.

        The outbox of an older epoch on this node is a cache of a history that is over and is
        removed.  Built aside and renamed into place: a crash never leaves half a window.
        Without a usable window (the queue ends before ``applied``, e.g. after a demotion) the
        outbox starts empty at ``applied``, as before retention existed."""
        import os

        from hodr.position import ZERO
        from hodr.replicate.fsutil import fsync_dir
        from hodr.replicate.outbox import Outbox

        data = self.cfg.data_path
        final, aside = data / "outbox", data / "outbox.seed"
        shutil.rmtree(final, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
        q = DurableQueue(data / "queue")
        try:
            base, payloads = q.retained_window(applied)
            with Outbox(aside, base=base or ZERO) as ob:
                for payload in payloads:
                    ob.append_payload(payload, sync=False)
                records = ob.sync()
                last = ob.last_commit()
        finally:
            q.close()
        if last != applied:
            log.warning(
                "promote: the queue's retained window ends at %s, not at the applied %s: the "
                "outbox starts empty there (peers that are behind need a reseed)",
                last,
                applied,
            )
            shutil.rmtree(aside, ignore_errors=True)
            Outbox(aside, base=applied).close()
            base, records = applied, 0
        os.rename(aside, final)
        fsync_dir(data)
        log.info("promote: outbox seeded with %d old-history record(s) after %s", records, base or ZERO)

    # -- demote ------------------------------------------------------------------------------------
    def _demote_request(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.role == "standby":
            host = req.get("host")
            if host:
                return self._follow_request(req)
            return {"result": "done"}
        deadline = time.monotonic() + float(req.get("deadline_s", 60))
        return self._start_job(
            "demote", self._demote, req.get("host") or "", int(req.get("port") or 0), deadline
        )

    def _demote(self, host: str, port: int, deadline: float) -> None:
        """Stop being the primary of this epoch and follow ``host:port`` (or the configured
        primary).  Safe to ask again after a failure: a retry resumes after the stopped capture
        (its source is closed then) with the end of epoch found the first time."""
        from hodr.replicate.apply.postgres import mark_applied

        pp = self.current
        assert isinstance(pp, PrimaryPipeline)
        dsn = self.cfg.source.dsn or self.cfg.target.dsn
        state = NodeState.load(self.cfg.data_path)
        if not pp.stopped() or self._demote_ended is None:
            self._demote_ended = self._end_epoch(pp, dsn, state, deadline)
        last, acked = self._demote_ended
        # The slot of the epoch that ended would retain WAL forever: a later promotion creates
        # a new one (after its drain, so the applier's writes are never captured).  The
        # walsender of the capture just stopped may still hold it for a moment.
        from hodr.redo.postgres import PostgresSource

        self._job_step = "dropping the epoch's replication slot"
        with PostgresSource(dsn, slot=self.cfg.source.slot, publication=self.cfg.source.publication) as src:
            src.drop_slot(wait_s=max(1.0, deadline - time.monotonic() - 2))
        # This database is the history up to `last`: as a standby it skips everything before.
        mark_applied(dsn, last)
        shutil.rmtree(self.cfg.data_path / "queue", ignore_errors=True)
        q = DurableQueue(self.cfg.data_path / "queue")
        q.reset_lineage(f"demoted-{uuid.uuid4().hex}", 1, base_commit=last)
        q.close()
        epochs = tuple(
            {**e, "last": str(last)} if e.get("epoch") == state.epoch else e for e in state.primary_epochs
        )
        state = state.with_(
            primary_epochs=epochs or ({"epoch": state.epoch, "last": str(last)},), diverged=not acked
        )
        state.save(self.cfg.data_path)
        t = self.cfg.transport
        cfg = replace(
            self.cfg,
            role="standby",
            transport=replace(t, primary_host=host or t.primary_host, port=port or t.port),
        )
        self._job_step = f"following {cfg.transport.primary_host}:{cfg.transport.port}"
        sb = StandbyPipeline(cfg)
        self.current, self.role = sb, "standby"
        sb.start()
        self._demote_ended = None
        log.info(
            "demoted: standby from %s (end of epoch %d %s)",
            last,
            state.epoch,
            "acked" if acked else "NOT acked",
        )

    def _end_epoch(
        self, pp: PrimaryPipeline, dsn: str, state: NodeState, deadline: float
    ) -> tuple[LogPosition, bool]:
        """Demote's first half: applications out, the end-of-epoch marker to the standbys,
        capture stopped.  Returns (last commit of the epoch, whether a standby holds the end)."""
        from hodr.replicate.apply.postgres import end_application_sessions, prepare_standby

        prepare_standby(dsn)
        ended = end_application_sessions(dsn)
        if ended:
            log.info("demote: ended %d application sessions", ended)
        acked = False
        if pp.source is not None and pp.outbox is not None:
            self._job_step = "writing the end-of-epoch marker"
            marker = pp.source.emit_marker(f"end of epoch {state.epoch}")
            self._job_step = f"waiting for the standbys to ack the marker {marker}"
            # Wait for every standby that is connected (a dead one would only run the demote
            # into its timeout: ocf-tester, a switchover with a node down); the history is safe
            # ("acked", not diverged) once at least one standby holds the marker durably — the
            # election then prefers such a standby over any that does not.
            names = [p.name for p in self.cfg.transport.standbys]
            have: list[str] = []
            while time.monotonic() < deadline - 2:
                stats = pp.server.stats() if pp.server is not None else {}
                connected = {n for n in names if (st := stats.get(n)) is not None and st.connected}
                have = [n for n in names if pp.outbox.released_position([n]) >= marker]
                if connected <= set(have) and (have or not connected):
                    break
                time.sleep(0.05)
            acked = bool(have)
            if acked:
                log.info("demote: the end of epoch %d is durable on %s", state.epoch, ", ".join(have))
        last = pp.outbox.last_commit() if pp.outbox is not None else LogPosition(state.epoch, 0)
        if not acked:
            log.warning(
                "demote: standbys did not ack the end of epoch %d: this node may hold "
                "transactions nobody else received (marked diverged)",
                state.epoch,
            )
        self._job_step = "stopping capture"
        pp.stop(30)
        return last, acked

    # -- follow / drain ----------------------------------------------------------------------------
    def _follow_request(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.role != "standby":
            return {"result": "refused", "reason": "only a standby follows a primary"}
        host = str(req.get("host") or "")
        if not host:
            return {"result": "refused", "reason": "follow: host is required"}
        port = int(req.get("port") or self.cfg.transport.port)
        sb = self.current
        assert isinstance(sb, StandbyPipeline)
        if sb.queue is None:
            return {"result": "refused", "reason": "follow: the standby is still starting; ask again"}
        if sb.client is not None and sb.client.primary == f"{host}:{port}":
            return {"result": "done"}
        sb.follow(host, port)
        return {"result": "done"}

    def _drain_request(self) -> dict[str, Any]:
        sb = self.current
        if not isinstance(sb, StandbyPipeline):
            return {"result": "done"}
        return {"result": "done"} if sb.drained() else {"result": "in-progress", "sentence": sb.sentence()}

"""The composition root: builds the role's pipeline from Config, owns signals, readiness, the
supervisor cycle, the status file and the control socket.

Why one cycle and one sentence (Patroni's HA loop): every ``status_interval_s`` the supervisor
asks the pipeline for a snapshot, turns it into one human sentence, writes the status file,
sends it to systemd as STATUS= and pets the watchdog.  Tests and the OCF agent read that same
status, so what an operator sees is what the cluster manager acts on.

Readiness (Type=notify): READY=1 is sent only once the pipeline says it is up (slot and outbox
open and the listener bound on a primary; queue open and target checked on a standby).
SIGTERM → STOPPING=1 → ordered shutdown (capture stops first, then senders flush; receiver
stops, then the applier finishes its current batch) → exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import asdict, replace
from typing import Any, Protocol

from hodr import __version__
from hodr.config import Config
from hodr.errors import HodrError
from hodr.notify import Notifier
from hodr.status import CONTROL_SOCKET, ControlServer, Status, write_status

log = logging.getLogger("hodr.daemon")


class RolePipeline(Protocol):
    """What the daemon needs from a role's pipeline (built in ``hodr.replicate.pipeline``)."""

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...

    def ready(self) -> bool: ...

    def error(self) -> BaseException | None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def sentence(self) -> str: ...

    def control(self, request: dict[str, Any]) -> dict[str, Any]: ...


class Daemon:
    def __init__(self, cfg: Config, pipeline: RolePipeline, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.notifier = notifier or Notifier()
        self._stop = threading.Event()
        self._ready_sent = False
        self._status = self._make_status("starting", "starting")
        self._control: ControlServer | None = None

    # -- public --------------------------------------------------------------------------
    def run(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal pipeline error; the exit code says which."""
        self._install_signals()
        self.cfg.run_path.mkdir(parents=True, exist_ok=True)
        self._control = ControlServer(self.cfg.run_path / CONTROL_SOCKET, self._on_control).start()
        rc = 0
        try:
            self.pipeline.start()
            while not self._stop.is_set():
                sentence = self.cycle()
                err = self.pipeline.error()
                if err is not None:
                    log.error("stopping: %s", _one_line(err))
                    self._publish(self._make_status("failed", f"failed: {_one_line(err)}", error=str(err)))
                    rc = 1
                    break
                log.debug("%s", sentence)
                self._stop.wait(self.cfg.status_interval_s)
        except OSError as exc:
            # A directory that cannot be created or written (bad path, read-only, disk full):
            # one line naming the path, never a traceback.
            where = f": {exc.filename}" if exc.filename else ""
            text = f"{exc.strerror or exc}{where}"
            log.error("stopping: %s", text)
            self._publish(self._make_status("failed", f"failed: {text}", error=text))
            rc = 1
        except HodrError as exc:
            log.error("stopping: %s", _one_line(exc))
            self._publish(self._make_status("failed", f"failed: {_one_line(exc)}", error=str(exc)))
            rc = 1
        finally:
            self.notifier.stopping("stopping")
            log.info("shutting down")
            try:
                self.pipeline.stop(timeout=30)
            finally:
                if self._control:
                    self._control.close()
                final = self._status
                self._publish(
                    replace(
                        final,
                        role="stopped" if rc == 0 else final.role,
                        sentence="stopped" if rc == 0 else final.sentence,
                        wall_time=time.time(),
                        monotonic=time.monotonic(),
                    )
                )
        return rc

    def request_stop(self) -> None:
        self._stop.set()

    def cycle(self) -> str:
        """One supervisor cycle: snapshot → status file → STATUS= → watchdog; returns the sentence."""
        sentence = self.pipeline.sentence()
        # Until the pipeline is up the role is "starting": nobody (the agent, a test) may take
        # a half-built primary for one.
        role = getattr(self.pipeline, "role", self.cfg.role) if self.pipeline.ready() else "starting"
        status = self._make_status(role, sentence, **self.pipeline.snapshot())
        self._publish(status)
        if not self._ready_sent and self.pipeline.ready():
            self._ready_sent = True
            self.notifier.ready(sentence)
            log.info("ready: %s", sentence)
        else:
            self.notifier.status(sentence)
        self.notifier.watchdog()
        return sentence

    # -- internals -----------------------------------------------------------------------
    def _make_status(self, role: str, sentence: str, **fields: Any) -> Status:
        known = set(Status.__dataclass_fields__)
        extra = {k: v for k, v in fields.items() if k not in known}
        fields = {k: v for k, v in fields.items() if k in known}
        if extra:
            fields["extra"] = {**fields.get("extra", {}), **extra}
        fields.setdefault("epoch", 0)
        return Status(
            role=role,
            node=self.cfg.node,
            sentence=sentence,
            pid=os.getpid(),
            version=__version__,
            wall_time=time.time(),
            monotonic=time.monotonic(),
            **fields,
        )

    def _publish(self, status: Status) -> None:
        self._status = status
        try:
            write_status(self.cfg.run_path, status)
        except OSError as exc:
            log.warning("cannot write status file in %s: %s", self.cfg.run_path, exc.strerror)

    def _on_control(self, req: dict[str, Any]) -> dict[str, Any]:
        what = req.get("request")
        if what == "status":
            return {"result": "done", "status": asdict(self._status)}
        if what == "stop":
            self.request_stop()
            return {"result": "in-progress", "sentence": "stopping"}
        return self.pipeline.control(req)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(
            signal.SIGHUP,
            lambda *_: log.info(
                "SIGHUP: configuration reload is not supported yet; restart the service to apply changes"
            ),
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())

"""The node's database services, started and stopped in order by hodr-replica.

A node is more than the hodr daemon: the database it replicates into has to run before the daemon
can start (``when: always``), and on the primary the things applications reach it through — a
connection pooler, a listener, application units — may only start once the database is writable
and capture runs, so nothing an application writes can be missed (``when: primary``). The
``services:`` list of the node's YAML names them; the agent calls this module at the right points
of start, stop, promote and demote (``docs/replica-agent.md``, "Services").

Every step is a shell command (``/bin/sh -c``) with a deadline, because a resource agent that
answers late is killed by Pacemaker and a stop that times out fences the node:

- **start** of a service: skipped when its ``ready`` command already passes (start is idempotent
  and a retried promote must not restart what runs); else ``start`` runs, then ``ready`` is polled
  until it passes — all within ``timeout_s`` and within the action's own deadline;
- **stop**: ``stop`` runs within the same bounds. A failing stop is only a failure when the
  service is still ``ready`` afterwards (``pg_ctl stop`` on a stopped cluster fails; that is fine);
- each command runs in a new session (its own process group), and the whole group is killed when
  the step's time is up — a hung ``systemctl`` or a ``sleep`` behind it does not outlive the step.
  A command that finishes in time is never signalled: daemons it leaves behind *are* the service.

Output goes to a file (``<run_dir>/services.out``), not a pipe: a start command that leaves a
daemon behind (``pg_ctl start`` without ``-l``) keeps the pipe open, so waiting for its end would
wait for the daemon. The lines a step wrote are copied into the agent log, and the last of them
into a failure's reason.

Standard library only, ``subprocess`` imported when a command runs: the agent's monitor imports
this module for the ``Service`` type of its cached settings and must not pay for more.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hodr.takeover.ocf import Deadline

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

ALWAYS = "always"  # a standby needs it too (the database): started before the daemon
PRIMARY = "primary"  # only on the primary (pooler, listener, applications): started after promote
WHEN = (ALWAYS, PRIMARY)
DEFAULT_TIMEOUT_S = 60.0
READY_POLL_S = 0.5  # between two ready checks
READY_CHECK_S = 10.0  # one ready check never runs longer than this (and never past the step)
OUT_FILE = "services.out"
OUT_ROTATE_BYTES = 1 << 20
REASON_LINES = 3  # output lines quoted in a failure's reason
READ_TAIL_BYTES = 16384


@dataclass(frozen=True)
class Service:
    """One entry of the YAML's ``services:`` list (checked by ``hodr.config``)."""

    name: str
    start: str
    stop: str
    ready: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    when: str = ALWAYS


def select(services: Iterable[Service], when: str) -> tuple[Service, ...]:
    """The services of one kind, in configured (start) order."""
    return tuple(s for s in services if s.when == when)


def stop_order(services: Sequence[Service]) -> tuple[Service, ...]:
    """Reverse start order: what depends on a service goes before it."""
    return tuple(reversed(services))


@dataclass(frozen=True)
class StepResult:
    """What one command did: its exit status (None: killed at its deadline) and its output."""

    command: str
    rc: int | None
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def tail(self, lines: int = REASON_LINES) -> str:
        """The last output lines on one line, for a reason."""
        kept = [ln.strip() for ln in self.output.splitlines() if ln.strip()][-lines:]
        return " / ".join(kept)


class ServiceError(Exception):
    """A service step failed; the message is the exit reason (names the service and the step)."""


def _with_output(reason: str, result: StepResult) -> str:
    tail = result.tail()
    return f"{reason}: {tail}" if tail else reason


class ServiceRunner:
    """Runs the service steps of one node, each bounded by its timeout and the action's deadline.

    *out_path* collects the commands' output (rotated at 1 MiB); *env* is the commands'
    environment (the agent passes its own without Pacemaker's per-operation variables).
    """

    def __init__(
        self,
        out_path: Path,
        log: logging.Logger,
        env: Mapping[str, str] | None = None,
        poll_s: float = READY_POLL_S,
    ) -> None:
        self.out_path = Path(out_path)
        self.log = log
        self.env = dict(os.environ if env is None else env)
        self.poll_s = poll_s

    # ------------------------------------------------------------------------------ commands

    def run(self, command: str, deadline: Deadline, what: str = "") -> StepResult:
        """``/bin/sh -c COMMAND`` in a new session; the process group is killed at *deadline*."""
        import subprocess

        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._rotate()
        started = time.monotonic()
        with open(self.out_path, "ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"--- {stamp} {what or 'run'}: {command}\n".encode())
            out.flush()
            offset = out.tell()
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=self.env,
                start_new_session=True,
                close_fds=True,
            )
        try:
            rc: int | None = proc.wait(timeout=deadline.remaining())
        except subprocess.TimeoutExpired:
            rc = None
            kill_group(proc.pid)
            proc.wait()
        return StepResult(command, rc, self._read_from(offset), time.monotonic() - started)

    def _rotate(self) -> None:
        try:
            if self.out_path.stat().st_size > OUT_ROTATE_BYTES:
                os.replace(self.out_path, self.out_path.with_name(self.out_path.name + ".1"))
        except OSError:
            pass

    def _read_from(self, offset: int) -> str:
        """What was appended since *offset* (its last 16 KiB); a leftover daemon may add more later."""
        try:
            with open(self.out_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(offset, fh.tell() - READ_TAIL_BYTES))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_output(self, svc: Service, step: str, result: StepResult) -> None:
        for line in result.output.splitlines()[-20:]:
            if line.strip():
                self.log.info("service %s: %s: %s", svc.name, step, line.rstrip())

    # --------------------------------------------------------------------------------- steps

    def is_ready(self, svc: Service, deadline: Deadline) -> StepResult:
        """One run of the ready command, at most ``READY_CHECK_S`` and never past *deadline*."""
        check = Deadline(min(deadline.at, time.monotonic() + READY_CHECK_S))
        return self.run(svc.ready, check, f"ready {svc.name}")

    def start(self, svc: Service, deadline: Deadline) -> str:
        """Bring *svc* up: skip if ready, run start, poll ready. Returns what happened (for the log);
        raises ``ServiceError`` naming the service and the step that failed."""
        began = time.monotonic()
        step = _step_deadline(svc, deadline)
        # the "already running?" check gets a quarter of the step at most: one that hangs must
        # leave the start its time
        precheck = Deadline(min(step.at, time.monotonic() + svc.timeout_s / 4))
        if self.is_ready(svc, precheck).ok:
            return f"service {svc.name}: already ready"
        result = self.run(svc.start, step, f"start {svc.name}")
        self._log_output(svc, "start", result)
        if result.rc is None:
            raise ServiceError(
                _with_output(
                    f"service {svc.name}: start did not finish within {result.seconds:.0f}s, killed "
                    f"(start: {svc.start})",
                    result,
                )
            )
        if not result.ok:
            raise ServiceError(
                _with_output(
                    f"service {svc.name}: start failed with status {result.rc} (start: {svc.start})", result
                )
            )
        last: StepResult | None = None  # the last ready check that finished: its output says why
        while True:
            check = self.is_ready(svc, step)
            if check.ok:
                return f"service {svc.name}: started and ready in {time.monotonic() - began:.1f}s"
            if check.rc is not None or last is None:
                last = check
            if step.expired():
                self._log_output(svc, "ready", last)
                hung = ", its ready check hangs" if last.rc is None else ""
                raise ServiceError(
                    _with_output(
                        f"service {svc.name}: not ready after {time.monotonic() - began:.0f}s "
                        f"(ready: {svc.ready}){hung}",
                        last,
                    )
                )
            time.sleep(step.cap(self.poll_s))

    def stop(self, svc: Service, deadline: Deadline) -> str | None:
        """Run *svc*'s stop. Returns None when it is down, else why it is not (it still passes its
        ready check after a failed or killed stop): only then does a stop count as failed."""
        step = _step_deadline(svc, deadline)
        result = self.run(svc.stop, step, f"stop {svc.name}")
        self._log_output(svc, "stop", result)
        if result.ok:
            self.log.info("service %s: stopped in %.1fs", svc.name, result.seconds)
            return None
        what = "did not finish in time, killed" if result.rc is None else f"failed with status {result.rc}"
        # the ready check gets its own short time: a stop that ate its whole step still gets an answer
        check = self.is_ready(svc, Deadline(max(step.at, min(deadline.at, time.monotonic() + READY_CHECK_S))))
        if not check.ok:
            self.log.warning(
                "service %s: stop %s (stop: %s), but it is not ready: down", svc.name, what, svc.stop
            )
            return None
        return _with_output(
            f"service {svc.name}: stop {what} and it is still ready (stop: {svc.stop})", result
        )

    def start_all(self, services: Sequence[Service], deadline: Deadline) -> None:
        """Start *services* in order; the first failure raises (the earlier ones keep running)."""
        for svc in services:
            self.log.info("%s", self.start(svc, deadline))

    def stop_all(self, services: Sequence[Service], deadline: Deadline) -> list[str]:
        """Stop *services* in reverse order, every one even after a failure; returns the survivors'
        reasons (empty: everything is down)."""
        problems = []
        for svc in stop_order(services):
            problem = self.stop(svc, deadline)
            if problem:
                self.log.error("%s", problem)
                problems.append(problem)
        return problems


def command_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The commands' environment: the agent's, minus Pacemaker's per-operation variables and the
    agent's own daemon override (a service must not depend on how the agent was invoked)."""
    drop = ("OCF_", "__OCF", "HA_")
    return {k: v for k, v in environ.items() if not k.startswith(drop) and k != "HODR_AGENT_DAEMON_CMD"}


def _step_deadline(svc: Service, deadline: Deadline) -> Deadline:
    """A step never outlives its own timeout, nor the action it belongs to."""
    return Deadline(min(deadline.at, time.monotonic() + svc.timeout_s))


def kill_group(pgid: int) -> None:
    """SIGKILL a command's whole process group (the command leads it: ``start_new_session``)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def reserve(services: Sequence[Service], remaining: float, share: float = 0.5) -> float:
    """Seconds an action keeps back for *services* from its other waits: their timeouts, but at
    most *share* of what is left (a long drain must not be starved by generous service timeouts)."""
    return min(sum(s.timeout_s for s in services), remaining * share)

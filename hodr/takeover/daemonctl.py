"""The hodr daemon as hodr-replica sees it: spawn, observe, ask, stop — every wait with a deadline.

The agent talks to the daemon only through its door (architecture §6): the status snapshot
``<run_dir>/status.json`` and the control socket ``<run_dir>/control.sock``. It never imports the
pipeline (import-linter forbids it). What this module adds on the agent's side:

- **who runs the daemon**: without systemd (the lab, containers) the agent spawns ``hodr run
  --role standby CONFIG`` detached, in its own session, output to ``<run_dir>/daemon.out``, and
  records the pid in ``<run_dir>/hodr.pid``;
- **whether it is really ours**: a pid counts only while ``/proc/<pid>/cmdline`` shows
  ``hodr … run … CONFIG`` — signals never go to a recycled pid or to another instance's daemon,
  and nothing is ever killed by name;
- **the primary claim**: ``<run_dir>/agent-role`` says what the agent last made this daemon. A
  daemon that died while the claim says primary is a crashed primary (OCF 9), not a stopped
  instance (7), even when its last snapshot no longer says so;
- **observation**: one ``Observation`` per look, mapping snapshot + process + claim to a state.

The daemon command is ``hodr`` next to the running interpreter, else the repository's
``.venv/bin/hodr``, else ``hodr`` on ``PATH``, else ``python -m hodr``. ``HODR_AGENT_DAEMON_CMD``
replaces it (shell words; for the agent tests' fake daemon and for unusual installs: Pacemaker runs
agents with its own environment, so set it in ``/etc/default/pacemaker`` if ever needed).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from hodr.status import CONTROL_SOCKET, STATUS_FILE, Status, control_request, read_status
from hodr.takeover.ocf import Deadline

TYPE_CHECKING = False  # typing.TYPE_CHECKING without the import
if TYPE_CHECKING:  # subprocess, shlex and shutil are imported where a daemon is spawned: not by monitor
    import subprocess

PID_FILE = "hodr.pid"
OUT_FILE = "daemon.out"
CLAIM_FILE = "agent-role"
LAST_STATUS_FILE = "status.last.json"
COMMAND_ENV = "HODR_AGENT_DAEMON_CMD"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the hodr package
STALE_CYCLES = 3  # a snapshot older than this many status intervals means a hung daemon
MIN_STALE_S = 3.0
POLL_S = 0.1
CONTROL_TIMEOUT_S = 5.0
RESEND_S = 2.0  # role-change requests are idempotent: re-sent so a late refusal is seen
OUT_ROTATE_BYTES = 1 << 20


class State(StrEnum):
    """What the daemon on this node is, as far as Pacemaker is concerned."""

    STOPPED = "stopped"  # no daemon, no primary claim
    STARTING = "starting"  # alive, not ready yet (or no snapshot of its own yet)
    STANDBY = "standby"
    PRIMARY = "primary"
    FAILED = "failed"  # a standby that died, hung or reports failure
    FAILED_PRIMARY = "failed-primary"  # the same for a primary, or a dead daemon under a primary claim


@dataclass(frozen=True)
class Observation:
    state: State
    status: Status | None  # the snapshot (only trust it for positions when pid is set)
    pid: int | None  # the live, verified daemon pid
    detail: str  # one line for logs and exit reasons


class DaemonError(Exception):
    """Something about the daemon went wrong; the message is an exit reason."""


class Refused(DaemonError):
    """The daemon refused a request, with its reason (``result: refused``)."""


class Unreachable(DaemonError):
    """The control socket did not answer."""


def daemon_command(environ: Mapping[str, str] | None = None) -> list[str]:
    """The argv prefix that runs hodr (``… run --role standby CONFIG`` is appended)."""
    import shlex
    import shutil

    env = os.environ if environ is None else environ
    override = env.get(COMMAND_ENV, "").strip()
    if override:
        return shlex.split(override)
    # the agent may run on the distribution's python3 (it only needs PyYAML) while the daemon
    # needs the repository's .venv (drivers): look there before PATH
    for candidate in (Path(sys.executable).parent / "hodr", PACKAGE_ROOT / ".venv" / "bin" / "hodr"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    found = shutil.which("hodr")
    if found:
        return [found]
    return [sys.executable, "-m", "hodr"]


def pid_alive(pid: int) -> bool:
    """True for a running process (a zombie is dead: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_hodr_run(argv: Sequence[str], config: str) -> bool:
    """Is *argv* a ``hodr … run … CONFIG`` process for this very config file?"""
    if "run" not in argv or not any("hodr" in a for a in argv[: argv.index("run")]):
        return False
    if config in argv:
        return True
    real = os.path.realpath(config)
    return any(a.startswith("/") and os.path.realpath(a) == real for a in argv[1:])


class DaemonControl:
    """One daemon instance: the config it runs and the run directory it writes."""

    def __init__(self, config: str, run_dir: Path, status_interval_s: float = 1.0) -> None:
        self.config = os.path.abspath(config)
        self.run_dir = Path(run_dir)
        self.stale_after = max(STALE_CYCLES * status_interval_s, MIN_STALE_S)
        self.grace = max(1.0, 2 * status_interval_s)

    # ---------------------------------------------------------------------------- files

    def _path(self, name: str) -> Path:
        return self.run_dir / name

    def _read(self, name: str) -> str | None:
        try:
            return self._path(name).read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def _write(self, name: str, text: str) -> None:
        """Atomic (temp + rename): a concurrent reader never sees half a file."""
        tmp = self._path(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self._path(name))

    def _unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()

    def claim(self) -> str | None:
        """``primary`` or ``standby``: what the agent last made this daemon (None: nothing)."""
        text = self._read(CLAIM_FILE)
        return text.split()[0] if text else None

    def set_claim(self, role: str, epoch: int | None = None) -> None:
        self._write(CLAIM_FILE, f"{role} {epoch}\n" if epoch is not None else f"{role}\n")

    def read_json(self, name: str) -> Any:
        """A small agent state file in the run directory (None when absent or unreadable)."""
        text = self._read(name)
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

    def write_json(self, name: str, data: Any) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write(name, json.dumps(data, sort_keys=True))

    def remove(self, name: str) -> None:
        self._unlink(name)

    # -------------------------------------------------------------------------- observing

    def live_pid(self, status: Status | None) -> int | None:
        """The daemon's pid if it runs: from the pid file, else from the snapshot (a daemon started
        by hand or by systemd), each verified by its command line."""
        candidates = []
        text = self._read(PID_FILE)
        if text and text.isdigit():
            candidates.append(int(text))
        if status is not None and status.pid > 0:
            candidates.append(status.pid)
        for pid in candidates:
            if pid_alive(pid) and is_hodr_run(cmdline(pid), self.config):
                return pid
        return None

    def observe(self) -> Observation:
        """Map snapshot + process + claim to a ``State`` (reads two small files and /proc)."""
        status = read_status(self.run_dir)
        pid = self.live_pid(status)
        claimed_primary = self.claim() == "primary"
        if pid is None:
            if status is None or status.role == "stopped":
                if claimed_primary:
                    return Observation(
                        State.FAILED_PRIMARY, status, None, "the daemon is gone but this node was primary"
                    )
                return Observation(State.STOPPED, status, None, "not running")
            last = f"last status {status.role}: {status.sentence}" + (
                f" ({status.error})" if status.error else ""
            )
            if status.role == "primary" or claimed_primary:
                return Observation(
                    State.FAILED_PRIMARY, status, None, f"the primary daemon (pid {status.pid}) died; {last}"
                )
            return Observation(State.FAILED, status, None, f"the daemon (pid {status.pid}) died; {last}")
        if status is None or status.pid != pid:
            return Observation(State.STARTING, None, pid, f"daemon pid {pid} has not written a status yet")
        age = status.age()
        if age > self.stale_after:
            what = f"the daemon (pid {pid}) is hung: status not rewritten for {age:.0f}s ({status.sentence})"
            if status.role == "primary" or claimed_primary:
                return Observation(State.FAILED_PRIMARY, status, pid, what)
            return Observation(State.FAILED, status, pid, what)
        role = status.role
        if role == "standby":
            return Observation(State.STANDBY, status, pid, status.sentence)
        if role == "primary":
            return Observation(State.PRIMARY, status, pid, status.sentence)
        if role == "starting":
            return Observation(State.STARTING, status, pid, status.sentence)
        if role == "stopped":
            return Observation(State.STOPPED, status, pid, f"the daemon (pid {pid}) is shutting down")
        what = f"the daemon (pid {pid}) reports {role}: {status.error or status.sentence}"
        if claimed_primary:
            return Observation(State.FAILED_PRIMARY, status, pid, what)
        return Observation(State.FAILED, status, pid, what)

    def observe_fresh(self, deadline: Deadline) -> Observation:
        """``observe()``, but a stale snapshot gets a short grace to be rewritten first.

        Under heavy load a supervisor cycle may be late once; calling that a hung daemon would fail
        over for nothing (ClusterLabs/PAF#107, #218). The grace is two status intervals (at least
        a second), capped by the deadline.
        """
        obs = self.observe()
        if obs.pid is None or obs.state not in (State.FAILED, State.FAILED_PRIMARY) or obs.status is None:
            return obs
        if obs.status.age() <= self.stale_after:
            return obs
        grace = Deadline(time.monotonic() + deadline.cap(self.grace))
        while not grace.expired():
            time.sleep(grace.cap(POLL_S * 2))
            obs = self.observe()
            if obs.status is None or obs.status.age() <= self.stale_after or obs.pid is None:
                return obs
        return obs

    # --------------------------------------------------------------------------- starting

    def spawn(
        self, role: str = "standby", environ: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``hodr run --role ROLE CONFIG`` detached and record its pid.

        A dead daemon's snapshot is moved aside first, so nobody takes it for the new one's.
        """
        import shlex
        import subprocess

        self.run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self._path(STATUS_FILE), self._path(LAST_STATUS_FILE))
        out_path = self._path(OUT_FILE)
        with contextlib.suppress(OSError):
            if out_path.stat().st_size > OUT_ROTATE_BYTES:
                os.replace(out_path, self._path(OUT_FILE + ".1"))
        argv = [*daemon_command(environ), "run", "--role", role, self.config]
        env = _child_env(os.environ if environ is None else environ)
        if argv[1:3] == ["-m", "hodr"]:  # run from "/": the package must be importable there too
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
        with open(out_path, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} hodr-replica: {shlex.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        self._write(PID_FILE, f"{proc.pid}\n")
        return proc

    def wait_until(
        self,
        done: Callable[[Observation], bool],
        deadline: Deadline,
        what: str,
        proc: subprocess.Popen[bytes] | None = None,
        check: Callable[[Observation], None] | None = None,
    ) -> Observation:
        """Poll until ``done(obs)``; raise ``DaemonError`` when the daemon exits or time runs out.

        *check* sees every observation and may raise (the rejoin guard does, as soon as the daemon
        reports the facts it needs).
        """
        while True:
            obs = self.observe()
            if check is not None:
                check(obs)
            if done(obs):
                return obs
            if proc is not None and proc.poll() is not None:
                raise DaemonError(f"the daemon exited with status {proc.returncode} {self.last_words(obs)}")
            if proc is None and obs.pid is None and obs.state is not State.STOPPED:
                raise DaemonError(f"the daemon died while waiting for {what}: {obs.detail}")
            if deadline.expired():
                raise DaemonError(f"no {what} before the deadline: {obs.detail}")
            time.sleep(deadline.cap(POLL_S))

    def last_words(self, obs: Observation | None = None) -> str:
        """Why a daemon ended: its snapshot's error, else the last line it printed."""
        status = obs.status if obs is not None else read_status(self.run_dir)
        if status is not None and status.error:
            return f"({status.error})"
        try:
            with open(self._path(OUT_FILE), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4096))
                lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        lines = [ln for ln in lines if not ln.startswith("--- ")]
        return f"({lines[-1].strip()}; see {self._path(OUT_FILE)})" if lines else ""

    # ---------------------------------------------------------------------------- control

    def request(self, name: str, deadline: Deadline, **args: Any) -> dict[str, Any]:
        """One control request; raises ``Refused`` (with the daemon's reason) or ``Unreachable``."""
        timeout = max(0.2, deadline.cap(CONTROL_TIMEOUT_S))
        try:
            reply = control_request(self.run_dir, name, timeout=timeout, **args)
        except (OSError, ValueError) as exc:
            raise Unreachable(f"control socket {self._path(CONTROL_SOCKET)}: {exc}") from None
        if reply.get("result") == "refused":
            raise Refused(str(reply.get("reason") or f"{name} refused without a reason"))
        return reply

    def change_role(
        self,
        request: str,
        args: Mapping[str, Any],
        done: Callable[[Status], bool],
        deadline: Deadline,
    ) -> Status:
        """Send an idempotent role request and poll the snapshot until ``done(status)``.

        The request is re-sent every ``RESEND_S`` (a refusal decided later — "not in sync" after
        the drain — arrives as the reply to a re-send); the snapshot is the source of truth.
        """
        sent_at = -RESEND_S
        unreachable: Unreachable | None = None
        while True:
            if time.monotonic() - sent_at >= RESEND_S:
                sent_at = time.monotonic()
                try:
                    self.request(request, deadline, **args)
                    unreachable = None
                except Unreachable as exc:
                    unreachable = exc
            obs = self.observe()
            if obs.pid is not None and obs.status is not None and done(obs.status):
                return obs.status
            if obs.pid is None:
                raise DaemonError(f"the daemon died during {request}: {obs.detail}")
            if deadline.expired():
                why = f"; {unreachable}" if unreachable else ""
                raise DaemonError(f"{request} did not finish before the deadline: {obs.detail}{why}")
            time.sleep(deadline.cap(POLL_S))

    # ---------------------------------------------------------------------------- stopping

    def stop(self, deadline: Deadline) -> str:
        """Stop the daemon: ``stop`` request, then SIGTERM, then SIGKILL, all before *deadline*.

        Returns what happened (for the log). Raises ``DaemonError`` only when the process provably
        still runs afterwards: that failure is what makes Pacemaker fence the node.
        """
        status = read_status(self.run_dir)
        pid = self.live_pid(status)
        if pid is None:
            crashed = status is not None and status.role != "stopped"
            self._clean_up(crashed)
            if crashed:
                assert status is not None
                return f"cleaned up after a dead daemon (pid {status.pid}, last status {status.role})"
            return "was not running"
        total = deadline.remaining()
        start = time.monotonic()
        term_at = start + max(0.0, total - max(6.0, 0.4 * total))
        kill_at = start + max(0.0, total - max(2.0, 0.15 * total))
        how = "stop request"
        try:
            self.request("stop", Deadline(min(deadline.at, start + 1.0)))
        except DaemonError:
            term_at = start  # no answer: a hung or dying daemon; straight to SIGTERM
        if not self._wait_gone(pid, Deadline(term_at)):
            how = "SIGTERM"
            self._signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, Deadline(kill_at)):
                how = "SIGKILL"
                self._signal(pid, signal.SIGKILL)
                if not self._wait_gone(pid, deadline):
                    raise DaemonError(f"the daemon (pid {pid}) still runs after SIGKILL")
        final = read_status(self.run_dir)
        self._clean_up(final is None or final.role != "stopped" or final.pid != pid)
        return f"stopped pid {pid} ({how}, {time.monotonic() - start:.1f}s)"

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        """Signal the daemon — and its process group when it leads one (we started it so)."""
        if not (pid_alive(pid) and is_hodr_run(cmdline(pid), self.config)):
            return
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _wait_gone(pid: int, deadline: Deadline) -> bool:
        while pid_alive(pid):
            if deadline.expired():
                return False
            time.sleep(deadline.cap(POLL_S))
        return True

    def _clean_up(self, crashed: bool) -> None:
        """Forget a daemon that no longer runs: pid file, claim, and a snapshot that would still
        claim a role (kept aside as ``status.last.json`` for the post-mortem)."""
        self._unlink(PID_FILE)
        self._unlink(CLAIM_FILE)
        if crashed:
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._path(STATUS_FILE), self._path(LAST_STATUS_FILE))
            self._unlink(CONTROL_SOCKET)


def _child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment: the agent's, minus Pacemaker's per-operation variables."""
    drop = ("OCF_", "__OCF", "HA_")
    return {k: v for k, v in environ.items() if not k.startswith(drop) and k != COMMAND_ENV}

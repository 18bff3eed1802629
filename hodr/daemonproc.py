"""A ``hodr run CONFIG`` subprocess, handled by its own PID: the demo, the tests and the
benchmarks all run real daemons this way (never killed by name, brief: end only what you started).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hodr.errors import HodrError
from hodr.status import Status, read_status

T = TypeVar("T")


class DaemonProcess:
    """Writes ``<workdir>/<name>.yml`` from ``cfg`` and runs ``hodr run`` on it, output appended
    to ``<workdir>/<name>.out``; ``env`` is added to the environment (e.g. NOTIFY_SOCKET).
    ``cwd`` (default: inherited) lets a caller that put the repository on ``sys.path`` itself
    start ``python -m hodr`` from there without hodr being installed."""

    cwd: Path | None = None

    def __init__(
        self, name: str, cfg: dict[str, Any], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.cfg_path = Path(workdir) / f"{name}.yml"
        self.log_path = Path(workdir) / f"{name}.out"
        self.run_dir = Path(cfg["run_dir"])
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config()

    def write_config(self) -> None:
        self.cfg_path.write_text(yaml.safe_dump(self.cfg, sort_keys=False))

    def start(self) -> DaemonProcess:
        if self.alive():
            raise HodrError(f"{self.name}: already running (pid {self.proc.pid if self.proc else '?'})")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hodr", "run", str(self.cfg_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env},
                cwd=self.cwd,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> Status | None:
        """This process's status snapshot (None before it wrote one, or if it is another's)."""
        st = read_status(self.run_dir)
        if st is None or self.proc is None or st.pid != self.proc.pid:
            return None
        return st

    def check(self) -> None:
        """Raise if the process has exited (naming its exit code and last lines)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise HodrError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")

    def wait_ready(self, timeout: float = 60) -> Status:
        """Until the status says primary or standby; raises if the process exits or time runs out."""

        def ready() -> Status | None:
            st = self.status()
            return st if st is not None and st.role in ("primary", "standby") else None

        return wait_until(ready, timeout, f"{self.name} to be running", (self,), interval=0.05)

    def kill(self) -> None:
        """kill -9: the process gets no chance to flush or say goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (ordered shutdown), SIGKILL if it has not ended after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(
    pred: Callable[[], T],
    timeout: float,
    what: str,
    daemons: Iterable[DaemonProcess] = (),
    interval: float = 0.1,
) -> T:
    """Poll ``pred`` until it is truthy; fail at once when one of ``daemons`` exits (there is no
    point waiting for a dead daemon), or with a HodrError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        for d in daemons:
            d.check()
        if time.monotonic() > deadline:
            raise HodrError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)

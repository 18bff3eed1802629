"""Host-side process helpers: bounded command runs and finding the lab's own processes.

The lab never kills by process name: it ends processes it started, found by pid file *and*
verified by their exact command line (pids are reused), or by the network namespace they run in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from hodr.lab.topology import LabError


class CommandError(LabError):
    """A command in the lab failed; carries everything a test failure message needs."""

    def __init__(self, where: str, argv: Sequence[str], rc: int | None, stdout: str, stderr: str) -> None:
        self.where, self.argv, self.rc, self.stdout, self.stderr = where, list(argv), rc, stdout, stderr
        what = "timed out" if rc is None else f"exited {rc}"
        tail = (stderr.strip() or stdout.strip())[-600:]
        super().__init__(f"{where}: {' '.join(argv)} {what}" + (f": {tail}" if tail else ""))


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    where: str = "host",
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with a deadline; on timeout kill its whole process group.

    ``nsenter -p`` forks the real command as its child, so killing only the direct child would
    leave the command running inside the node: each command gets its own session instead.
    """
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise CommandError(where, argv, None, out, err) from None
    if check and proc.returncode != 0:
        raise CommandError(where, argv, proc.returncode, out, err)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid``, or None if it is gone or a zombie (empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def pids_with_cmdline(argv: Sequence[str]) -> list[int]:
    """Live processes whose argv is exactly ``argv``."""
    want = list(argv)
    return [pid for pid in all_pids() if cmdline(pid) == want]


def read_pid(path: Path, argv: Sequence[str]) -> int | None:
    """The pid in ``path`` if that process is alive and still runs exactly ``argv``."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and cmdline(pid) == list(argv) else None


def netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(inodes: Iterable[int]) -> list[int]:
    """Live processes whose network namespace is one of ``inodes`` (host /proc view)."""
    wanted = set(inodes)
    found = []
    for pid in all_pids():
        try:
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        if ino in wanted and alive(pid):
            found.append(pid)
    return found


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(pids: Iterable[int], timeout: float, reap: Iterable[subprocess.Popen[bytes]] = ()) -> list[int]:
    """Wait until every pid is gone or a zombie; returns those still alive at the deadline."""
    pending = list(pids)
    children = list(reap)
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            child.poll()
        pending = [p for p in pending if alive(p)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.05)

"""PID 1 of one lab node: private state, then corosync and pacemakerd, stopped in order on SIGTERM.

Runs inside fresh mount/UTS/IPC/PID namespaces (and the node's network namespace) as
``python -I <private copy of this file> <node dir>/init.json``. Standard library only, and the
host starts a *private copy* of this file, so editing the working tree never affects running
nodes (lab.md §11) and the exact command line identifies this node's init for teardown.

Order matters (lab.md §2): the tmpfs on /run comes first, before anything that could make
libmount write state into the host's plain /run directory, and every mount uses ``mount -n``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

_stopping = False


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} init[{socket.gethostname()}]: {msg}", flush=True)


def _on_signal(signum: int, _frame: object) -> None:
    """PID 1 of a namespace only receives signals it has a handler for: install one, set a flag."""
    global _stopping
    _stopping = True


def mount(*args: str, optional: bool = False) -> bool:
    r = subprocess.run(["mount", "-n", *args], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"mount {' '.join(args)} failed: {r.stderr.strip()}")
        if not optional:
            sys.exit(1)
        return False
    return True


def run_skeleton(skip: list[str]) -> list[tuple[str, str, int, int, int, str]]:
    """Host /run directories and symlinks to depth 2 (path, kind, mode, uid, gid, link target).

    The node gets the same skeleton on its private tmpfs, so daemons that expect e.g.
    /run/postgresql or /run/lock with the right owner and mode find it.
    """
    entries = []
    for top in sorted(os.listdir("/run")):
        if top in skip:
            continue
        for path in [Path("/run", top)] + (
            sorted(Path("/run", top).iterdir()) if _isdir(Path("/run", top)) else []
        ):
            try:
                st = path.lstat()
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                entries.append((str(path), "link", 0, 0, 0, os.readlink(path)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((str(path), "dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, ""))
    return entries


def _isdir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def detach_mounts_under(prefix: str) -> None:
    """Lazily detach inherited mounts below ``prefix`` (this namespace only, propagation private).

    The host's /run/netns holds other namespaces' nsfs mounts; a copy hidden under the node's
    tmpfs would keep those namespaces alive as long as the node runs.
    """
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(prefix + "/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-n", "-l", point], capture_output=True)


def make_run(skeleton: list[tuple[str, str, int, int, int, str]], extra: list[dict]) -> None:
    mount("-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", "/run")
    for path, kind, mode, uid, gid, target in skeleton:
        try:
            if kind == "link":
                os.symlink(target, path)
            else:
                os.makedirs(path, exist_ok=True)
                os.chown(path, uid, gid)
                os.chmod(path, mode)
        except OSError as exc:
            log(f"skeleton {path}: {exc}")
    for d in extra:
        os.makedirs(d["path"], exist_ok=True)
        os.chown(d["path"], d["uid"], d["gid"])
        os.chmod(d["path"], d["mode"])


def apply_mounts(cfg: dict) -> None:
    mount("-t", "sysfs", "sysfs", "/sys")
    mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", "/dev/shm")
    if os.path.isdir("/dev/mqueue"):
        mount("-t", "mqueue", "mqueue", "/dev/mqueue", optional=True)
    for ov in cfg["overlays_rw"]:
        mount(
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={ov['target']},upperdir={ov['upper']},workdir={ov['work']}",
            ov["target"],
        )
    for b in cfg["binds"]:
        target = Path(b["target"])
        if not target.exists():
            if not b.get("create"):
                log(f"skip bind of {b['source']}: {target} does not exist")
                continue
            if b.get("file"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            else:
                target.mkdir(parents=True, exist_ok=True)
        mount("--bind", b["source"], str(target))
    for ov in cfg["overlays_ro"]:
        mount("-t", "overlay", "overlay", "-o", f"lowerdir={ov['lower']}:{ov['target']}", ov["target"])


def daemon_env(cfg: dict) -> dict[str, str]:
    """A clean environment, as ``env -i`` would give: no caller PATH, venv or pyenv shims."""
    return {
        "PATH": cfg["path"],
        "LANG": "C.UTF-8",
        "HOME": cfg["home"],
        "PCMK_logfile": "/var/log/pacemaker/pacemaker.log",
        "PCMK_logfacility": "none",
    }


class Stack:
    """corosync and pacemakerd, started in order and stopped in reverse order."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.env = daemon_env(cfg)
        self.pids: dict[str, int] = {}

    def spawn(self, name: str, argv: list[str]) -> None:
        p = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, cwd="/")
        self.pids[name] = p.pid
        log(f"started {name} pid {p.pid}")

    def reap(self) -> None:
        """Reap every exited child (PID 1 inherits all orphans of the node)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for name, known in list(self.pids.items()):
                if known == pid:
                    log(f"{name} exited with status {os.waitstatus_to_exitcode(status)}")
                    del self.pids[name]

    def wait_exit(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while name in self.pids and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        return name not in self.pids

    def start(self) -> None:
        self.spawn("corosync", ["corosync", "-f"])
        deadline = time.monotonic() + self.cfg["corosync_wait"]
        while True:
            r = subprocess.run(["corosync-cfgtool", "-s"], env=self.env, capture_output=True)
            if r.returncode == 0:
                break
            self.reap()
            if _stopping or "corosync" not in self.pids or time.monotonic() > deadline:
                log("corosync did not come up; see /var/log/pacemaker/corosync.log")
                return
            time.sleep(0.1)
        self.spawn("pacemakerd", ["pacemakerd"])

    def stop(self) -> None:
        """pacemakerd first (it moves resources away), then corosync (lab.md §2.6)."""
        for name, timeout in (
            ("pacemakerd", self.cfg["pacemaker_stop_timeout"]),
            ("corosync", self.cfg["corosync_stop_timeout"]),
        ):
            if name not in self.pids:
                continue
            log(f"stopping {name}")
            os.kill(self.pids[name], signal.SIGTERM)
            if not self.wait_exit(name, timeout):
                log(f"{name} did not stop within {timeout}s; killing it")
                os.kill(self.pids[name], signal.SIGKILL)
                self.wait_exit(name, 5)


def main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[1]).read_text())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    os.chdir("/")
    socket.sethostname(cfg["hostname"])
    skeleton = run_skeleton(cfg["run_skip"])
    detach_mounts_under("/run")
    make_run(skeleton, cfg["run_dirs"])
    apply_mounts(cfg)
    log("namespaces ready")
    stack = Stack(cfg)
    if not _stopping:
        stack.start()
    while not _stopping:
        stack.reap()
        time.sleep(0.2)
    stack.stop()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

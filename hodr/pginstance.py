"""Local PostgreSQL 15 instances: initdb, start, stop, crash, connect.

Why this lives in the product and not only in tests: ``hodr demo`` (README command 1), the tests
and the benchmarks all need throw-away primary/standby servers on this machine, built the same
way.  PostgreSQL refuses to run as root, so when we are root every server command runs as the
``postgres`` OS user (Debian's package creates it) and the instance directory is handed to it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hodr.errors import HodrError

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)

#: Settings every hodr test/demo server gets: logical decoding on, room for slots and senders,
#: and sizes that keep checkpoints out of short runs (pg-notes.md §4).
BASE_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "wal_sender_timeout": "60s",
    "max_wal_size": "2GB",
    "min_wal_size": "256MB",
    "checkpoint_timeout": "30min",
    "shared_buffers": "128MB",
    "listen_addresses": "'127.0.0.1'",
    "log_min_messages": "warning",
    "logging_collector": "off",
    "max_connections": "100",
}


class PgError(HodrError):
    """A PostgreSQL server command failed; the message names the instance and the command."""


def pg_bindir() -> Path:
    """The directory holding ``initdb``/``pg_ctl``/``postgres`` (Debian layout first)."""
    env = os.environ.get("HODR_PG_BINDIR")
    candidates = [env] if env else []
    candidates += list(PG_BIN_CANDIDATES)
    for cand in candidates:
        if cand and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    raise PgError(
        "PostgreSQL 15 server binaries not found (looked in /usr/lib/postgresql/15/bin and PATH); "
        "install the postgresql-15 package or set HODR_PG_BINDIR"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """The OS user servers run as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PgError("running as root but there is no 'postgres' OS user to run servers as") from exc
    return "postgres"


def make_base_dir(prefix: str = "hodr-pg-", parent: str | None = None) -> Path:
    """A fresh directory the server user can use (under /tmp by default).

    pytest's tmp_path is 0700 root when we are root, unusable by the ``postgres`` user, so server
    directories live in their own directory handed to that user.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    user = _server_user()
    if user:
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    os.chmod(base, 0o755)
    return base


@dataclass
class PgInstance:
    """One PostgreSQL cluster in ``base/name``: data dir, socket dir and log file.

    ``settings`` are appended to postgresql.conf on ``init``; ``port`` is chosen free if 0.
    """

    base: Path
    name: str = "pg"
    port: int = 0
    settings: Mapping[str, str] = field(default_factory=dict)
    user: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        if not self.port:
            self.port = free_port()
        self.user = _server_user()

    # -- paths ------------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        return self.base / self.name / "data"

    @property
    def sockdir(self) -> Path:
        return self.base / self.name / "sock"

    @property
    def logfile(self) -> Path:
        return self.base / self.name / "server.log"

    def dsn(self, dbname: str = "postgres", user: str = "postgres", **extra: str) -> str:
        """A libpq connection string over the instance's unix socket."""
        parts = [f"host={self.sockdir}", f"port={self.port}", f"dbname={dbname}", f"user={user}"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def tcp_dsn(self, dbname: str = "postgres", user: str = "postgres", **extra: str) -> str:
        parts = [f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    # -- running server commands ------------------------------------------------------------
    def _cmd(self, argv: list[str]) -> list[str]:
        if self.user:
            return ["runuser", "-u", self.user, "--", *argv]
        return argv

    def _run(self, argv: list[str], what: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self._cmd(argv), capture_output=True, text=True, timeout=timeout, env=_clean_env()
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            last = detail[-1] if detail else f"exit code {proc.returncode}"
            raise PgError(f"{self.name}: {what} failed: {last} (log: {self.logfile})")
        return proc

    def _chown(self, path: Path) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # -- lifecycle --------------------------------------------------------------------------
    def init(self) -> PgInstance:
        """initdb with trust auth on local sockets and loopback (throw-away servers only)."""
        root = self.base / self.name
        for path in (root, self.sockdir):
            path.mkdir(parents=True, exist_ok=True)
            self._chown(path)
        bindir = pg_bindir()
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            "initdb",
        )
        conf = dict(BASE_SETTINGS)
        conf.update(self.settings)
        conf["port"] = str(self.port)
        conf["unix_socket_directories"] = f"'{self.sockdir}'"
        lines = "".join(f"{k} = {v}\n" for k, v in conf.items())
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n# hodr\n" + lines)
        with open(self.datadir / "pg_hba.conf", "a", encoding="utf-8") as fh:
            fh.write("local replication all trust\nhost replication all 127.0.0.1/32 trust\n")
        return self

    def start(self, timeout: float = 60) -> PgInstance:
        self._run(
            [
                str(pg_bindir() / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            "start",
            timeout=timeout + 10,
        )
        return self

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        if not self.running():
            return
        self._run(
            [
                str(pg_bindir() / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            "stop",
            timeout=timeout + 10,
        )

    def pid(self) -> int | None:
        """The postmaster's PID from postmaster.pid, if the process exists."""
        try:
            text = (self.datadir / "postmaster.pid").read_text()
            pid = int(text.splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def crash(self, timeout: float = 30) -> None:
        """Kill the postmaster with SIGKILL (a power cut for the server), then wait for its
        children to go so a restart does not race them."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pids_with_datadir(self.datadir):
                break
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            (self.datadir / "postmaster.pid").unlink()

    def destroy(self) -> None:
        """Stop (immediate) and delete the instance directory."""
        with contextlib.suppress(PgError):
            self.stop("immediate", timeout=30)
        if self.running():
            self.crash()
        shutil.rmtree(self.base / self.name, ignore_errors=True)

    # -- SQL convenience (tests, demo, bench) -----------------------------------------------
    def psql(self, sql: str, dbname: str = "postgres", timeout: float = 600) -> str:
        """Run SQL through psql (ON_ERROR_STOP) and return unaligned, tuples-only output."""
        proc = subprocess.run(
            [
                str(pg_bindir() / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(dbname),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(),
        )
        if proc.returncode != 0:
            raise PgError(f"{self.name}: SQL failed: {proc.stderr.strip()} (sql: {sql[:200]!r})")
        return proc.stdout.strip()

    def connect(self, dbname: str = "postgres", autocommit: bool = True, **kwargs: Any) -> Any:
        """A psycopg 3 connection (imported here so the kernel does not need the driver)."""
        import psycopg

        return psycopg.connect(self.dsn(dbname), autocommit=autocommit, **kwargs)

    def bin(self, name: str) -> str:
        return str(pg_bindir() / name)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def _pids_with_datadir(datadir: Path) -> list[int]:
    """PIDs of live postgres processes whose command line names ``datadir`` or are children of
    a postmaster of it; used only to wait for a crashed server's children to exit."""
    found: list[int] = []
    target = str(datadir)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else ""
        if target in cmd and state != "Z":
            found.append(int(entry))
    return found


@contextlib.contextmanager
def instances(*names: str, settings: Mapping[str, str] | None = None) -> Iterator[list[PgInstance]]:
    """Init and start one server per name in a fresh base dir; always destroy them after."""
    base = make_base_dir()
    made: list[PgInstance] = []
    try:
        for name in names:
            inst = PgInstance(base, name, settings=dict(settings or {}))
            made.append(inst)
            inst.init().start()
        yield made
    finally:
        for inst in made:
            inst.destroy()
        shutil.rmtree(base, ignore_errors=True)

"""Catch-up benchmark (issue 2): one pgbench backlog, replayed by native logical replication and
by hodr in the same run; prints both rates and their ratio.  No numeric gate.

Why one backlog for all methods: on a shared machine pgbench's rate, and so the backlog, varies
±20 % from run to run (pg-notes §4).  Here a single primary carries three replication slots --
the native subscription's and one per hodr variant -- all created before the workload, so one
pgbench run leaves the *same* WAL behind for every method, and each replica starts from the same
``pgbench -i`` data (deterministic: the tables hold only keys and zero balances).

Methods, each timed from its start until the replica's ``count(*)`` of ``pgbench_history``
equals the primary's (one row per TPC-B transaction), polled every 0.25 s:

* ``native``: ``CREATE SUBSCRIPTION … WITH (copy_data = false)``, disabled before the workload,
  ``ALTER SUBSCRIPTION … ENABLE`` starts the clock (pg-notes §5 "catch-up").
* ``hodr-slot`` (a): the backlog sits in hodr's slot; both daemons start with the clock, so
  decoding, capture into the outbox, transport and apply are all inside the measurement, as for
  native.
* ``hodr-outbox`` (b): the hodr primary first drains its slot into its outbox (timed separately,
  reported as the capture rate), then the standby daemon starts with the clock: transport and
  apply only.

The hodr slots are created by starting each hodr primary once (``initial_load: false``: the
standby already holds the same initial data) and stopping it before the workload.  Every server
runs with the settings of pg-notes §4.  All processes are stopped by their own PID and all
servers destroyed on exit, also on failure, Ctrl-C or SIGTERM.

Run: ``python bench/catchup.py [--scale 10] [--seconds 60] [--clients 4] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from hodr.daemonproc import DaemonProcess, wait_until  # noqa: E402
from hodr.errors import HodrError  # noqa: E402
from hodr.pginstance import PgInstance, free_port, make_base_dir  # noqa: E402
from hodr.status import Status  # noqa: E402

DB = "bench"
TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
CHANGES_PER_TXN = 4  # TPC-B: 3 UPDATE + 1 INSERT
POLL_S = 0.25
VARIANTS = ("native", "hodr-slot", "hodr-outbox")

#: pg-notes §4, on every server (shared_buffers may be lowered on a small machine).
SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "shared_buffers": "512MB",
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "logical_decoding_work_mem": "64MB",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "wal_sender_timeout": "120s",
    "wal_receiver_status_interval": "1s",
}


class BenchError(Exception):
    """A step of the benchmark failed; the message says which."""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- processes -------------------------------------------------------------------------------------
def _cpu_ticks(pid: int, children: bool = False) -> int:
    """utime + stime of a process (plus cutime + cstime: its reaped children) in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().decode().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def server_cpu_s(pg: PgInstance) -> float:
    """CPU seconds used so far by a server: postmaster, its live children and its reaped ones."""
    pid = pg.pid()
    if pid is None:
        return 0.0
    total = _cpu_ticks(pid, children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().decode().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            total += _cpu_ticks(int(entry))
    return total / os.sysconf("SC_CLK_TCK")


class Daemon(DaemonProcess):
    """A ``hodr run`` daemon (``hodr.daemonproc``) with what the benchmark adds: a py-spy
    profile of the measured window, CPU seconds, and a start from the repository root (this
    script puts the repository on ``sys.path`` itself, so hodr need not be installed)."""

    cwd = REPO

    def __init__(self, name: str, cfg: dict[str, Any], workdir: Path) -> None:
        super().__init__(name, cfg, workdir)
        self.spy: subprocess.Popen[bytes] | None = None

    def start(self, profile: Path | None = None) -> Daemon:
        super().start()
        if profile is not None and self.proc is not None:
            self.spy = start_py_spy(self.proc.pid, profile)
        return self

    def cpu_s(self) -> float:
        return _cpu_ticks(self.proc.pid) / os.sysconf("SC_CLK_TCK") if self.alive() and self.proc else 0.0

    def tail(self, lines: int = 5) -> str:
        return " | ".join(super().tail(lines).splitlines())

    def wait_ready(self, timeout: float = 120) -> Status:
        return super().wait_ready(timeout)

    def end_profile(self) -> None:
        """Stop sampling now (py-spy writes its file on SIGINT), so that the profile covers the
        measured work and not the idle time or the shutdown after it."""
        if self.spy is not None:
            if self.spy.poll() is None:
                self.spy.send_signal(signal.SIGINT)
            try:
                self.spy.wait(60)
            except subprocess.TimeoutExpired:
                self.spy.kill()
                self.spy.wait(10)
            self.spy = None

    def stop(self, timeout: float = 60) -> int | None:
        rc = super().stop(timeout)
        self.end_profile()
        return rc


#: py-spy sampling mode: "wall" includes idle threads (waits on the server show), "cpu" does not.
PROFILE_MODE = {"mode": "wall"}


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample every thread of ``pid`` until it exits, as collapsed stacks with thread names."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    argv = [spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--threads"]
    if PROFILE_MODE["mode"] == "wall":
        argv.append("--idle")
    argv += ["--nonblocking", "--output", str(out)]
    with open(str(out) + ".log", "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(pred: Callable[[], Any], timeout: float, *daemons: Daemon, what: str = "") -> Any:
    return wait_until(pred, timeout, what or ", ".join(d.name for d in daemons), daemons)


# --- SQL helpers -----------------------------------------------------------------------------------
def sql(pg: PgInstance, text: str) -> str:
    return pg.psql(text, DB)


def history_count(conn: Any) -> int:
    return int(conn.execute("SELECT count(*) FROM pgbench_history").fetchone()[0])


FINGERPRINT_SQL = """
SELECT (SELECT md5(string_agg(aid || ':' || bid || ':' || abalance || ':' || filler, ',' ORDER BY aid))
          FROM pgbench_accounts)
    || (SELECT md5(string_agg(bid || ':' || bbalance, ',' ORDER BY bid)) FROM pgbench_branches)
    || (SELECT md5(string_agg(tid || ':' || bid || ':' || tbalance, ',' ORDER BY tid)) FROM pgbench_tellers)
    || (SELECT count(*) || ':' || coalesce(md5(string_agg(h::text, ',' ORDER BY h::text)), '')
          FROM pgbench_history h)
"""


def fingerprint(pg: PgInstance) -> str:
    return sql(pg, FINGERPRINT_SQL)


# --- results ---------------------------------------------------------------------------------------
@dataclass
class Backlog:
    txns: int = 0
    wal_bytes: int = 0
    pgbench_tps: float = 0.0

    @property
    def row_changes(self) -> int:
        return self.txns * CHANGES_PER_TXN


@dataclass
class CatchUp:
    method: str
    txns: int = 0  # transactions of the backlog the replica had at the end
    seconds: float = 0.0  # clock start → replica count equal (or the time-out)
    first_apply_s: float | None = None  # clock start → first poll that saw a new row
    done: bool = False
    equal: bool | None = None  # every table identical to the primary afterwards (None: not checked)
    txn_s: float = 0.0
    rows_s: float = 0.0
    wal_mb_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process during the clock
    capture_s: float | None = None  # hodr-outbox only: slot → outbox before the clock started
    capture_txn_s: float | None = None
    capture_cpu_s: dict[str, float] = field(default_factory=dict)
    target_commits: int = 0  # write transactions on the target during the clock
    target_wal_bytes: int = 0  # WAL the target wrote during the clock
    error: str = ""

    def finish(self, backlog: Backlog) -> None:
        if self.seconds > 0:
            self.txn_s = round(self.txns / self.seconds, 1)
            self.rows_s = round(self.txns * CHANGES_PER_TXN / self.seconds, 1)
            frac = self.txns / backlog.txns if backlog.txns else 0
            self.wal_mb_s = round(backlog.wal_bytes * frac / self.seconds / 1e6, 2)
        self.seconds = round(self.seconds, 3)
        if self.first_apply_s is not None:
            self.first_apply_s = round(self.first_apply_s, 3)
        self.cpu_s = {k: round(v, 2) for k, v in self.cpu_s.items()}


#: The target backend that applies: native's apply worker, hodr's apply session.
APPLY_BACKEND_SQL = {
    "native": "SELECT pid FROM pg_stat_subscription WHERE subname = 'pgbsub' AND pid IS NOT NULL",
    "hodr": "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'hodr-apply%' LIMIT 1",
}


class BackendPerf:
    """``perf record -g`` on the target's applying backend for the measured window (``--perf``):
    where the *server* spends its time, which py-spy on the daemons cannot show."""

    def __init__(self, target: PgInstance, method: str, out_dir: Path) -> None:
        self.out = out_dir / f"{method}.perf.data"
        self.query = APPLY_BACKEND_SQL["native" if method == "native" else "hodr"]
        self.target = target
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._attach, daemon=True)
        self._thread.start()

    def _attach(self) -> None:
        """The backend exists only once the method has started: wait for it, then attach."""
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(HodrError):
                pid = sql(self.target, self.query)
                if pid:
                    argv = ["perf", "record", "-g", "-F", "499", "-p", pid, "-o", str(self.out)]
                    with open(str(self.out) + ".log", "wb") as log:
                        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
                    return
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # perf writes its file on SIGINT
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


class Meter:
    """CPU seconds of servers and daemons, and the target's transactions and WAL, from now on.

    Target transactions are counted by transaction ids: every write transaction takes one, and
    the readers here (the poller) take none, so the difference is the number of commits the
    applier made (native: one per source transaction; hodr: one per group) plus one for the
    meter's own ``pg_current_xact_id()`` call, which is subtracted.
    """

    def __init__(
        self,
        servers: dict[str, PgInstance],
        daemons: dict[str, Daemon],
        target: PgInstance | None = None,
        perf: BackendPerf | None = None,
    ) -> None:
        self.servers, self.daemons, self.target, self.perf = servers, daemons, target, perf
        self.cpu0 = {k: server_cpu_s(pg) for k, pg in servers.items()}
        self.cpu0.update({k: d.cpu_s() for k, d in daemons.items()})  # 0 for one not started yet
        self.xid0 = self.lsn0 = ""
        if target is not None:
            self.xid0, self.lsn0 = sql(
                target, "SELECT pg_current_xact_id() || '|' || pg_current_wal_lsn()"
            ).split("|")

    def cpu(self) -> dict[str, float]:
        now = {k: server_cpu_s(pg) for k, pg in self.servers.items()}
        now.update({k: d.cpu_s() for k, d in self.daemons.items()})
        return {k: v - self.cpu0[k] for k, v in now.items()}

    def stop(self, res: CatchUp) -> None:
        res.cpu_s = self.cpu()
        for d in self.daemons.values():
            d.end_profile()
        if self.perf is not None:
            self.perf.stop()
        if self.target is not None:
            row = sql(
                self.target,
                f"SELECT pg_current_xact_id()::text::int8 - {self.xid0}::int8 - 1, "
                f"pg_current_wal_lsn() - '{self.lsn0}'::pg_lsn",
            )
            xacts, wal = row.split("|")
            res.target_commits, res.target_wal_bytes = int(xacts), int(float(wal))


def poll_catch_up(
    result: CatchUp,
    replica: PgInstance,
    backlog: Backlog,
    t0: float,
    timeout: float,
    daemons: tuple[Daemon, ...] = (),
    on_done: Callable[[], None] = lambda: None,
) -> None:
    """Poll the replica's history count every POLL_S until it equals the backlog (history is
    empty on every server before the workload: ``pgbench -i`` truncates it)."""
    with replica.connect(DB) as conn:
        while True:
            n = history_count(conn)
            now = time.monotonic()
            if n > 0 and result.first_apply_s is None:
                result.first_apply_s = now - t0
            result.txns, result.seconds = n, now - t0
            if n >= backlog.txns:
                result.done = True
                on_done()
                return
            for d in daemons:
                d.check()
            if now - t0 > timeout:
                result.error = f"timed out after {timeout:.0f}s with {n} of {backlog.txns} txns applied"
                on_done()
                return
            time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))


# --- the benchmark ---------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        for v in self.variants:
            if v not in VARIANTS:
                raise BenchError(f"--variants: unknown variant {v!r} (choose from {', '.join(VARIANTS)})")
        self.base = make_base_dir(prefix="hodr-bench-")
        settings = dict(SETTINGS, shared_buffers=args.shared_buffers)
        self.primary = PgInstance(self.base, "primary", settings=settings)
        names = {"native": "native", "hodr-slot": "hodr-slot", "hodr-outbox": "hodr-outbox"}
        self.replicas = {v: PgInstance(self.base, names[v], settings=settings) for v in self.variants}
        self.daemons: list[Daemon] = []
        self.bench_proc: subprocess.Popen[bytes] | None = None
        self.backlog = Backlog()
        self.results: dict[str, CatchUp] = {}
        self.profile_dir = Path(args.profile).resolve() if args.profile else None
        self.perf_dir = Path(args.perf).resolve() if args.perf else None
        self.perfs: list[BackendPerf] = []
        self.startup_cpu_s = 0.0
        self.hodr_cfg: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    # -- setup ------------------------------------------------------------------------------------
    def servers(self) -> Iterator[PgInstance]:
        yield self.primary
        yield from self.replicas.values()

    def setup(self) -> None:
        a = self.args
        say(
            f"catchup: work dir {self.base}; {1 + len(self.replicas)} servers, "
            f"shared_buffers {a.shared_buffers}"
        )
        for pg in self.servers():
            pg.init().start()
            pg.psql(f"CREATE DATABASE {DB}")
        say(f"  pgbench -i -s {a.scale} on every server")
        procs = []
        for pg in self.servers():
            log = open(self.base / f"init-{pg.name}.out", "wb")  # noqa: SIM115 - closed below
            argv = [pg.bin("pgbench"), "-i", "-q", "-s", str(a.scale), "-d", pg.dsn(DB)]
            procs.append((pg, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log))
        for pg, proc, log in procs:
            proc.wait()
            log.close()
            if proc.returncode != 0:
                raise BenchError(f"pgbench -i on {pg.name} failed; see {log.name}")
        tables = ", ".join(TABLES)
        sql(self.primary, f"CREATE PUBLICATION pgb FOR TABLE {tables}")
        for v in self.variants:
            if v.startswith("hodr"):
                self._create_hodr_slot(v)
        if "native" in self.variants:
            self._create_subscription()
        for pg in self.servers():
            sql(pg, f"VACUUM ANALYZE {tables}")
            sql(pg, "CHECKPOINT")
        want = fingerprint(self.primary)
        for v, pg in self.replicas.items():
            if fingerprint(pg) != want:
                raise BenchError(f"{v}: the replica's initial data differs from the primary's")

    def _hodr_configs(self, variant: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if variant in self.hodr_cfg:
            return self.hodr_cfg[variant]
        tag = variant.replace("-", "_")
        port = free_port()
        state = self.base / tag
        p_cfg = {
            "node": f"{tag}_primary",
            "role": "primary",
            "data_dir": str(state / "primary"),
            "run_dir": str(state / "primary-run"),
            "status_interval_s": 0.5,
            "source": {
                "dsn": self.primary.dsn(DB),
                "slot": tag,
                "publication": tag,
                "tables": [f"public.{t}" for t in TABLES],
                "application_name": tag,
                "initial_load": False,
            },
            "transport": {"listen_host": "127.0.0.1", "port": port, "standbys": [{"name": "standby"}]},
        }
        s_cfg = {
            "node": "standby",
            "role": "standby",
            "data_dir": str(state / "standby"),
            "run_dir": str(state / "standby-run"),
            "status_interval_s": 0.5,
            "target": {"dsn": self.replicas[variant].dsn(DB)},
            "transport": {"primary_host": "127.0.0.1", "port": port},
        }
        if self.args.batch_txns:
            s_cfg["target"]["batch_txns"] = self.args.batch_txns  # type: ignore[index]
        p_cfg["transport"].update(self._security(p_cfg["node"]))  # type: ignore[attr-defined]
        s_cfg["transport"].update(self._security("standby", primary=p_cfg["node"]))  # type: ignore[attr-defined]
        self.hodr_cfg[variant] = (p_cfg, s_cfg)
        return p_cfg, s_cfg

    def _security(self, node: str, primary: str = "") -> dict[str, Any]:
        """Plaintext like the native subscription's connection, or with ``--tls`` the mutual TLS
        a deployment uses (a throwaway CA in the work directory, as ``hodr certs`` makes)."""
        if not self.args.tls:
            return {"insecure": True}
        from hodr import certs

        tls_dir = self.base / "tls"
        if not (tls_dir / certs.CA_CERT).exists():
            certs.init_ca(tls_dir, name="hodr bench CA")
        files = certs.issue(tls_dir, node, force=True)
        out: dict[str, Any] = {
            "tls_ca": str(files.ca),
            "tls_cert": str(files.cert),
            "tls_key": str(files.key),
        }
        if primary:
            out["primary_name"] = primary
        return out

    def _daemon(self, variant: str, side: str) -> Daemon:
        p_cfg, s_cfg = self._hodr_configs(variant)
        d = Daemon(f"{variant}-{side}", p_cfg if side == "primary" else s_cfg, self.base)
        self.daemons.append(d)
        return d

    def _create_hodr_slot(self, variant: str) -> None:
        """Start the hodr primary once: it creates its publication and slot (no initial load),
        then stop it, so the workload's changes wait in the slot."""
        d = self._daemon(variant, "primary").start()
        d.wait_ready()
        time.sleep(1.0)
        # What a start costs before any work (imports, connections, slot): part of every
        # hodr measurement below, reported so that it can be told apart.
        self.startup_cpu_s = round(d.cpu_s(), 2)
        d.stop()

    def _create_subscription(self) -> None:
        native = self.replicas["native"]
        conninfo = self.primary.tcp_dsn(DB, application_name="pgbsub")
        sql(
            native,
            f"CREATE SUBSCRIPTION pgbsub CONNECTION '{conninfo}' PUBLICATION pgb WITH (copy_data = false)",
        )
        wait_for(
            lambda: (
                sql(
                    self.primary, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgbsub'"
                )
                == "1"
            ),
            60,
            what="the native subscription to connect",
        )
        sql(native, "ALTER SUBSCRIPTION pgbsub DISABLE")
        wait_for(
            lambda: (
                sql(self.primary, "SELECT active FROM pg_replication_slots WHERE slot_name = 'pgbsub'") == "f"
            ),
            60,
            what="the native subscription's worker to stop",
        )

    # -- workload ---------------------------------------------------------------------------------
    def workload(self) -> None:
        a = self.args
        jobs = max(1, a.clients // 2)
        say(f"  backlog: pgbench -n -c {a.clients} -j {jobs} -T {a.seconds} (every replica disconnected)")
        lsn0 = sql(self.primary, "SELECT pg_current_wal_lsn()")
        out_path = self.base / "pgbench.out"
        argv = [
            self.primary.bin("pgbench"),
            "-n",
            "-c",
            str(a.clients),
            "-j",
            str(jobs),
            "-T",
            str(a.seconds),
        ]
        with open(out_path, "wb") as out:
            self.bench_proc = subprocess.Popen(argv + ["-d", self.primary.dsn(DB)], stdout=out, stderr=out)
        rc = self.bench_proc.wait()
        self.bench_proc = None
        text = out_path.read_text(errors="replace")
        if rc != 0:
            raise BenchError(f"pgbench failed ({rc}): {text.strip().splitlines()[-1:]}")
        m = re.search(r"^tps = ([\d.]+)", text, re.M)
        self.backlog.pgbench_tps = float(m.group(1)) if m else 0.0
        self.backlog.wal_bytes = int(sql(self.primary, f"SELECT pg_current_wal_lsn() - '{lsn0}'::pg_lsn"))
        self.backlog.txns = int(sql(self.primary, "SELECT count(*) FROM pgbench_history"))
        for pg in self.servers():
            sql(pg, "CHECKPOINT")
        b = self.backlog
        say(f"  backlog: {b.txns} txns ({b.pgbench_tps:.0f} tps), {b.wal_bytes / 1e6:.0f} MB of WAL")

    # -- the methods ------------------------------------------------------------------------------
    def _spy(self, name: str) -> Path | None:
        return self.profile_dir / f"{name}.txt" if self.profile_dir else None

    def _meter(self, method: str, target: PgInstance, daemons: dict[str, Daemon]) -> Meter:
        """Start measuring a method's clock (and, with ``--perf``, profiling its apply backend)."""
        perf = None
        if self.perf_dir is not None:
            perf = BackendPerf(target, method, self.perf_dir)
            self.perfs.append(perf)
        return Meter({"source server": self.primary, "target server": target}, daemons, target, perf)

    def run_native(self, res: CatchUp) -> None:
        native = self.replicas["native"]
        meter = self._meter("native", native, {})
        t0 = time.monotonic()
        sql(native, "ALTER SUBSCRIPTION pgbsub ENABLE")
        poll_catch_up(res, native, self.backlog, t0, self.args.timeout, on_done=lambda: meter.stop(res))
        sql(native, "ALTER SUBSCRIPTION pgbsub DISABLE")

    def run_hodr_slot(self, res: CatchUp) -> None:
        target = self.replicas["hodr-slot"]
        primary = self._daemon("hodr-slot", "primary")
        standby = self._daemon("hodr-slot", "standby")
        meter = self._meter("hodr-slot", target, {"hodr primary": primary, "hodr standby": standby})
        t0 = time.monotonic()
        primary.start(self._spy("hodr-slot-primary"))
        standby.start(self._spy("hodr-slot-standby"))
        try:
            done = lambda: meter.stop(res)  # noqa: E731
            poll_catch_up(res, target, self.backlog, t0, self.args.timeout, (primary, standby), done)
        finally:
            standby.stop()
            primary.stop()

    def run_hodr_outbox(self, res: CatchUp) -> None:
        target = self.replicas["hodr-outbox"]
        primary = self._daemon("hodr-outbox", "primary")
        standby = self._daemon("hodr-outbox", "standby")
        try:
            capture = Meter({"source server": self.primary}, {"hodr primary": primary})
            t_cap = time.monotonic()
            primary.start(self._spy("hodr-outbox-primary"))

            def captured() -> bool:
                st = primary.status()
                return st is not None and st.txns_captured >= self.backlog.txns

            wait_for(captured, self.args.timeout, primary, what="the hodr primary to capture the backlog")
            res.capture_s = round(time.monotonic() - t_cap, 3)
            res.capture_txn_s = round(self.backlog.txns / res.capture_s, 1)
            res.capture_cpu_s = {k: round(v, 2) for k, v in capture.cpu().items()}
            primary.end_profile()
            say(f"  hodr-outbox: slot → outbox in {res.capture_s:.1f}s ({res.capture_txn_s:.0f} txn/s)")
            time.sleep(1.0)  # the outbox's group-commit fsync publishes the tail to senders
            meter = self._meter("hodr-outbox", target, {"hodr primary": primary, "hodr standby": standby})
            t0 = time.monotonic()
            standby.start(self._spy("hodr-outbox-standby"))
            done = lambda: meter.stop(res)  # noqa: E731
            poll_catch_up(res, target, self.backlog, t0, self.args.timeout, (primary, standby), done)
        finally:
            standby.stop()
            primary.stop()

    def run(self) -> dict[str, Any]:
        self.setup()
        self.workload()
        runners = {
            "native": self.run_native,
            "hodr-slot": self.run_hodr_slot,
            "hodr-outbox": self.run_hodr_outbox,
        }
        for v in self.variants:
            say(f"  {v}: catching up")
            res = self.results[v] = CatchUp(v)
            try:
                runners[v](res)
            except (BenchError, HodrError) as exc:
                res.error = str(exc)
            res.finish(self.backlog)
            say(
                f"  {v}: {res.txns} txns in {res.seconds:.2f}s = {res.txn_s:,.0f} txn/s"
                + (f" ({res.error})" if res.error else "")
            )
        if not self.args.no_verify:
            want = fingerprint(self.primary)
            for v, res in self.results.items():
                res.equal = fingerprint(self.replicas[v]) == want
        return self.report()

    def report(self) -> dict[str, Any]:
        a = self.args
        native = self.results.get("native")
        ratios = {
            v: round(r.txn_s / native.txn_s, 3)
            for v, r in self.results.items()
            if v != "native" and native and native.txn_s and r.done
        }
        return {
            "params": {
                "scale": a.scale,
                "seconds": a.seconds,
                "clients": a.clients,
                "jobs": max(1, a.clients // 2),
                "shared_buffers": a.shared_buffers,
                "hodr_tls": a.tls,
                "batch_txns": a.batch_txns or None,
                "cpus": os.cpu_count(),
            },
            "backlog": {**asdict(self.backlog), "row_changes": self.backlog.row_changes},
            "results": {v: asdict(r) for v, r in self.results.items()},
            "ratio_vs_native": ratios,
            "hodr_primary_start_cpu_s": self.startup_cpu_s,
        }

    # -- cleanup ----------------------------------------------------------------------------------
    def close(self) -> None:
        if self.bench_proc is not None and self.bench_proc.poll() is None:
            self.bench_proc.kill()
            self.bench_proc.wait(10)
        for perf in self.perfs:
            with contextlib.suppress(Exception):
                perf.stop()
        for d in reversed(self.daemons):
            with contextlib.suppress(Exception):
                d.stop(30)
        for pg in self.servers():
            with contextlib.suppress(Exception):
                if self.args.keep:
                    pg.stop("fast")
                else:
                    pg.destroy()
        if self.args.keep:
            say(f"  kept {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


LABELS = {
    "native": "native (CREATE SUBSCRIPTION)",
    "hodr-slot": "hodr (a) backlog in slot",
    "hodr-outbox": "hodr (b) backlog in outbox",
}


def print_table(rep: dict[str, Any]) -> None:
    b, p = rep["backlog"], rep["params"]
    print(
        f"catch-up of one pgbench backlog (scale {p['scale']}, {p['seconds']} s, {p['clients']} clients, "
        f"{p['cpus']} CPUs): {b['txns']:,} txns, {b['row_changes']:,} row changes, "
        f"{b['wal_bytes'] / 1e6:,.0f} MB WAL; pgbench {b['pgbench_tps']:,.0f} tps"
    )
    head = f"{'method':<30} {'seconds':>8} {'1st apply':>9} {'txn/s':>9} {'rows/s':>9} {'WAL MB/s':>8}"
    print(head + f" {'ratio':>6} {'equal':>5}")
    for v, r in rep["results"].items():
        got = rep["ratio_vs_native"].get(v)
        ratio = "1.00" if v == "native" else f"{got:.2f}" if got is not None else "-"
        first = f"{r['first_apply_s']:.2f}" if r["first_apply_s"] is not None else "-"
        equal = {True: "yes", False: "NO", None: "-"}[r["equal"]]
        print(
            f"{LABELS[v]:<30} {r['seconds']:>8.2f} {first:>9} {r['txn_s']:>9,.0f} {r['rows_s']:>9,.0f} "
            f"{r['wal_mb_s']:>8.1f} {ratio:>6} {equal:>5}"
        )
    if rep["hodr_primary_start_cpu_s"]:
        print(f"  (a hodr primary daemon's start alone costs {rep['hodr_primary_start_cpu_s']:.1f} CPU s)")
    for v, r in rep["results"].items():
        cpu = ", ".join(f"{k} {s:.1f}" for k, s in r["cpu_s"].items())
        line = f"  {v}: CPU s during catch-up: {cpu or '-'}"
        if r["target_commits"]:
            per = r["txns"] / r["target_commits"]
            line += f"; target: {r['target_commits']:,} commits ({per:.1f} txns each), "
            line += f"{r['target_wal_bytes'] / 1e6:,.0f} MB WAL"
        print(line)
        if r["capture_s"] is not None:
            cpu = ", ".join(f"{k} {s:.1f}" for k, s in r["capture_cpu_s"].items())
            print(
                f"  {v}: before the clock: slot → outbox {r['capture_s']:.2f}s "
                f"({r['capture_txn_s']:,.0f} txn/s), CPU s: {cpu}"
            )
        if r["error"]:
            print(f"  {v}: ERROR: {r['error']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    ap.add_argument("--seconds", type=int, default=60, help="pgbench duration of the backlog (default 60)")
    ap.add_argument("--clients", type=int, default=4, help="pgbench clients (default 4; jobs = clients/2)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}"
    )
    ap.add_argument("--shared-buffers", default="", help="shared_buffers of every server (default 512MB)")
    ap.add_argument(
        "--batch-txns", type=int, default=0, help="hodr standby target.batch_txns (default: hodr's)"
    )
    ap.add_argument(
        "--tls", action="store_true", help="hodr transport with mutual TLS (default: plaintext, as native)"
    )
    ap.add_argument("--timeout", type=float, default=900, help="longest catch-up to wait for, seconds")
    ap.add_argument("--no-verify", action="store_true", help="skip the table-by-table comparison at the end")
    ap.add_argument(
        "--profile", metavar="DIR", help="py-spy the hodr daemons while they catch up (raw stacks)"
    )
    ap.add_argument(
        "--profile-mode",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: every sample incl. waits (py-spy --idle); cpu: only running threads",
    )
    ap.add_argument(
        "--perf", metavar="DIR", help="perf record -g the target's applying backend during each clock"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (servers stopped)")
    args = ap.parse_args(argv)
    if not args.shared_buffers:
        # pg-notes §4 uses 512MB; four servers need 2 GB of it, so shrink on a small machine.
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        args.shared_buffers = "512MB" if mem >= 8 << 30 else "128MB"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. from `timeout`) must still run the cleanup: daemons and servers go.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Ctrl-C too, even when started in the background of a script (which ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        PROFILE_MODE["mode"] = args.profile_mode
    if args.perf:
        if shutil.which("perf") is None:
            say("catchup: --perf needs the perf tool (linux-perf)")
            return 2
        Path(args.perf).mkdir(parents=True, exist_ok=True)
    bench: Bench | None = None
    try:
        bench = Bench(args)
        rep = bench.run()
    except (BenchError, HodrError) as exc:
        say(f"catchup: {exc}")
        return 1
    except KeyboardInterrupt:
        say("catchup: interrupted")
        return 130
    finally:
        if bench is not None:
            bench.close()
    if args.json:
        print(json.dumps(rep))
    else:
        print_table(rep)
    return 0 if all(r["done"] and r["equal"] is not False for r in rep["results"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

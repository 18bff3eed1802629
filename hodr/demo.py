"""``hodr demo``: the main job on a local default — a primary and a standby PostgreSQL 15 on this
machine, hodr between them under a live workload, then proof that both sides are equal.

Why it runs the real daemons (``hodr run`` as subprocesses with their own configs) instead of
wiring the pipeline in-process: the demo is what a new user tries first, so it should exercise
exactly what they would deploy — config files, readiness, status files, SIGTERM shutdown.

The daemons speak mutual TLS with a throwaway CA made in the work directory by ``hodr.certs`` —
the same steps as ``hodr certs init`` / ``hodr certs issue`` — so the demo shows the deployed
configuration, not a plaintext shortcut.

The lag figure is measured from outside hodr, the way pg-notes.md measured native logical
replication: ``statement_timestamp() - max(mtime)`` of ``pgbench_history`` on the standby, sampled
while the workload runs (an upper bound of the commit → apply delay).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hodr import certs
from hodr.daemonproc import DaemonProcess, wait_until
from hodr.errors import HodrError
from hodr.pginstance import PgInstance, free_port, make_base_dir

DB = "demo"

DOCS_SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE demo_docs (
    id bigserial PRIMARY KEY,
    title varchar(200) NOT NULL,
    body text,
    tags text[],
    meta jsonb,
    price numeric(12,2),
    feeling mood,
    uid uuid DEFAULT gen_random_uuid(),
    seen timestamptz DEFAULT now(),
    blob bytea
);
"""

DOCS_SCRIPT = """
\\set id random(1, 2000)
BEGIN;
INSERT INTO demo_docs (title, body, tags, meta, price, feeling, blob)
  VALUES ('doc ' || :id, repeat(md5(:id::text), 1 + :id % 300), ARRAY['a', :id::text],
          jsonb_build_object('n', :id), :id / 7.0, (ARRAY['sad','ok','happy']::mood[])[1 + :id % 3],
          decode(md5(:id::text), 'hex'));
UPDATE demo_docs SET price = price + 1, meta = meta || '{"u": 1}' WHERE id = :id;
DELETE FROM demo_docs WHERE id = :id - 1000;
END;
"""


@dataclass
class DemoResult:
    seconds: float
    txns: int = 0
    rows_source: int = 0
    rows_target: int = 0
    equal: bool = False
    lag_p50_ms: float = 0.0
    lag_p95_ms: float = 0.0
    lag_max_ms: float = 0.0
    catch_up_s: float = 0.0
    primary_tps: float = 0.0
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    workdir: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fingerprint(pg: PgInstance, tables: list[str]) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for t in tables:
        row = pg.psql(
            f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x", DB
        )
        n, digest = row.split("|")
        out[t] = (int(n), digest)
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(
    seconds: float = 20.0,
    clients: int = 2,
    as_json: bool = False,
    workdir: str | None = None,
    keep: bool = False,
    sync: bool = False,
) -> int:
    """Set up, replicate under load, verify; exit 0 only when both sides are equal."""
    # SIGTERM (e.g. from `timeout`) must still run the cleanup below: servers and daemons go.
    signal.signal(signal.SIGTERM, _interrupt)
    base = Path(workdir) if workdir else make_base_dir(prefix="hodr-demo-")
    if workdir:
        base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
    quiet = as_json
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if quiet else (lambda m: print(m, flush=True))
    primary = PgInstance(base, "primary-db")
    standby = PgInstance(base, "standby-db")
    daemons: list[DaemonProcess] = []
    result = DemoResult(seconds=seconds, workdir=str(base))
    try:
        say(f"hodr demo: work dir {base}")
        say(f"  starting PostgreSQL 15 primary (port {primary.port}) and standby (port {standby.port})")
        for pg in (primary, standby):
            pg.init().start()
            pg.psql(f"CREATE DATABASE {DB}")
        pgbench = primary.bin("pgbench")
        subprocess.run(
            [pgbench, "-i", "-q", "-s", "1", "-d", primary.dsn(DB)], check=True, capture_output=True
        )
        primary.psql(DOCS_SCHEMA, DB)
        # The standby gets the same schema, no data: hodr's initial load copies the rows.
        schema = subprocess.run(
            [primary.bin("pg_dump"), "-s", "-d", primary.dsn(DB)], check=True, capture_output=True, text=True
        ).stdout
        subprocess.run(
            [standby.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", standby.dsn(DB)],
            input=schema,
            check=True,
            capture_output=True,
            text=True,
        )
        tables = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "demo_docs"]

        port = free_port()
        state = base / "hodr"
        tls_dir = state / "tls"
        if not (tls_dir / certs.CA_CERT).exists():
            certs.init_ca(tls_dir, name="hodr demo CA")
        tls_files = {n: certs.issue(tls_dir, n, force=True) for n in ("primary", "standby")}
        tls_cfg = {
            n: {"tls_ca": str(f.ca), "tls_cert": str(f.cert), "tls_key": str(f.key)}
            for n, f in tls_files.items()
        }
        p_cfg = {
            "node": "primary",
            "role": "primary",
            "sync": sync,
            "data_dir": str(state / "primary"),
            "run_dir": str(state / "primary-run"),
            "source": {
                "dsn": primary.dsn(DB),
                "slot": "hodr_demo",
                "publication": "hodr_demo",
                "application_name": "hodr_standby",
                "initial_load": True,
            },
            "transport": {
                "listen_host": "127.0.0.1",
                "port": port,
                "standbys": [{"name": "standby"}],
                **tls_cfg["primary"],
            },
            "status_interval_s": 0.5,
        }
        s_cfg = {
            "node": "standby",
            "role": "standby",
            "data_dir": str(state / "standby"),
            "run_dir": str(state / "standby-run"),
            "target": {"dsn": standby.dsn(DB)},
            "transport": {
                "primary_host": "127.0.0.1",
                "port": port,
                "primary_name": "primary",
                **tls_cfg["standby"],
            },
            "status_interval_s": 0.5,
        }
        if sync:
            primary.psql("ALTER SYSTEM SET synchronous_standby_names = 'hodr_standby'")
            primary.psql("SELECT pg_reload_conf()")
        daemons = [DaemonProcess("primary", p_cfg, base), DaemonProcess("standby", s_cfg, base)]
        for d in daemons:
            d.start()
        say("  hodr primary and standby daemons started; waiting for the initial load")
        t0 = time.monotonic()
        src0 = _fingerprint(primary, tables)
        wait_until(
            lambda: _fingerprint(standby, tables) == src0,
            120,
            "the initial load to reach the standby",
            daemons,
        )
        say(
            f"  initial load done in {time.monotonic() - t0:.1f}s "
            f"({sum(n for n, _ in src0.values())} rows); running the workload for {seconds:g}s"
        )

        script = base / "docs.sql"
        script.write_text(DOCS_SCRIPT)
        # pgbench writes to a file: a pipe read only at the end would block it once full.
        bench_log = base / "pgbench.out"
        argv = [pgbench, "-n", "-c", str(clients), "-j", str(max(1, clients // 2)), "-T", str(int(seconds))]
        argv += ["-b", "tpcb-like@9", "-f", f"{script}@1", "-d", primary.dsn(DB)]
        with open(bench_log, "w") as bench_out:
            bench = subprocess.Popen(argv, stdout=bench_out, stderr=subprocess.STDOUT)
        lags: list[float] = []
        last_line = 0.0
        start = time.monotonic()
        tty = sys.stdout.isatty() and not quiet
        while bench.poll() is None:
            try:
                for d in daemons:
                    d.check()
            except HodrError:
                bench.kill()
                raise
            with contextlib.suppress(HodrError):
                lag = float(
                    standby.psql(
                        "SELECT coalesce(extract(epoch FROM statement_timestamp() - max(mtime)) * 1000, 0) "
                        "FROM pgbench_history",
                        DB,
                    )
                )
                lags.append(max(lag, 0.0))
            now = time.monotonic()
            if now - last_line >= 1.0:
                last_line = now
                ps, ss = daemons[0].status(), daemons[1].status()
                line = (
                    f"  {now - start:5.1f}s  captured {ps.txns_captured if ps else 0:>7} txns  "
                    f"applied {ss.txns_applied if ss else 0:>7} txns  "
                    f"lag {lags[-1] if lags else 0:7.1f} ms  "
                    f"queue {ss.queue_txns if ss else 0:>5} txns"
                )
                if tty:
                    print("\r" + line, end="", flush=True)
                else:
                    say(line)
            time.sleep(0.2)
        if tty:
            print()
        bench.wait()
        out = bench_log.read_text(errors="replace")
        if bench.returncode != 0:
            raise HodrError(f"demo: pgbench failed: {out.strip().splitlines()[-1] if out.strip() else '?'}")
        for line in out.splitlines():
            if line.startswith("number of transactions actually processed"):
                result.txns = int(line.split(":")[1].split("/")[0].strip())
            if line.startswith("tps ="):
                result.primary_tps = float(line.split()[2])
        say(f"  workload done: {result.txns} transactions; waiting for the standby to catch up")
        t1 = time.monotonic()
        src = _fingerprint(primary, tables)
        try:
            wait_until(lambda: _fingerprint(standby, tables) == src, 120, "the standby to catch up", daemons)
        except HodrError as exc:
            say(f"  {exc}")
        result.catch_up_s = round(time.monotonic() - t1, 3)
        dst = _fingerprint(standby, tables)
        result.equal = dst == src
        result.rows_source = sum(n for n, _ in src.values())
        result.rows_target = sum(n for n, _ in dst.values())
        result.tables = {
            t: {"source_rows": src[t][0], "target_rows": dst[t][0], "equal": src[t] == dst[t]} for t in tables
        }
        if lags:
            s = sorted(lags)
            result.lag_p50_ms = round(s[len(s) // 2], 1)
            result.lag_p95_ms = round(s[min(len(s) - 1, int(len(s) * 0.95))], 1)
            result.lag_max_ms = round(s[-1], 1)
        say(
            f"  source {result.rows_source} rows, standby {result.rows_target} rows: "
            f"{'EQUAL' if result.equal else 'DIFFERENT'}; lag p50 {result.lag_p50_ms} ms, "
            f"p95 {result.lag_p95_ms} ms; caught up {result.catch_up_s}s after the workload"
        )
    finally:
        for d in reversed(daemons):
            d.stop()
        if not keep:
            for pg in (primary, standby):
                pg.destroy()
            shutil.rmtree(base, ignore_errors=True)
        else:
            say(f"  kept {base}")
    if as_json:
        print(json.dumps(result.as_dict()))
    return 0 if result.equal else 1

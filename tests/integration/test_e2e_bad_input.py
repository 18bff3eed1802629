"""Bad input gets one clear line naming what and where, and loses nothing — with real daemons
and real PostgreSQL servers.  Also: READY/STATUS/STOPPING reach a real NOTIFY_SOCKET."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.harness import DB, HodrDaemon, Pair, wait_equal

pytestmark = pytest.mark.pg

SCHEMA = """
CREATE TABLE acc (id int PRIMARY KEY, v text);
CREATE TABLE extra (id int PRIMARY KEY, note text);
"""


def _hodr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hodr", *args], capture_output=True, text=True, timeout=60)


def test_invalid_config_is_one_line_per_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yml"
    cfg.write_text("role: primary\ntransport: {port: abc}\nsource: {dsn: x}\n")
    for cmd in (("validate-config", str(cfg)), ("run", str(cfg))):
        proc = _hodr(*cmd)
        assert proc.returncode == 2, proc
        assert 'transport.port: expected an integer 1-65535, got "abc"' in proc.stderr
        assert "transport.standbys: a primary needs at least one standby" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_table_on_standby_stops_apply_and_loses_nothing(pg_factory, tmp_path: Path) -> None:
    pair = Pair.create(
        pg_factory, tmp_path, SCHEMA, standby_schema="CREATE TABLE acc (id int PRIMARY KEY, v text);"
    )
    try:
        pair.primary.psql("INSERT INTO acc VALUES (1, 'a'); INSERT INTO extra VALUES (1, 'lost?')", DB)
        pair.hodr_primary.start().wait_ready()
        pair.primary.psql("INSERT INTO acc VALUES (2, 'b')", DB)
        pair.hodr_standby.start()
        sb = pair.hodr_standby
        assert sb.proc is not None
        wait_for(lambda: sb.proc.poll() is not None, 60, "the standby daemon to stop on the schema mismatch")
        assert sb.proc.returncode == 1
        out = sb.tail(50)
        assert "public.extra" in out and "does not exist" in out, out
        st = __import__("hodr.status", fromlist=["read_status"]).read_status(sb.run_dir)
        assert st.role == "failed" and "public.extra" in st.sentence
        # Nothing was applied past the bad transaction, nothing is lost: fix the schema, restart.
        assert pair.standby.psql("SELECT count(*) FROM acc", DB) in ("0", "1")
        # The standby is read-only for everyone but hodr: the DBA says so explicitly.
        pair.standby.psql("BEGIN READ WRITE; CREATE TABLE extra (id int PRIMARY KEY, note text); COMMIT", DB)
        sb.start().wait_ready()
        wait_equal(pair, ["acc", "extra"], timeout=60)
    finally:
        pair.close()


def test_unreachable_primary_then_catch_up(pg_factory, tmp_path: Path) -> None:
    pair = Pair.create(pg_factory, tmp_path, SCHEMA)
    try:
        # The standby starts first: nobody listens yet; it keeps retrying and says so.
        sb = pair.hodr_standby.start()
        wait_for(lambda: (st := sb.status()) and "DISCONNECTED" in st.sentence, 30, "standby to report it")
        # The primary's database is down when the primary daemon starts: it waits, says why.
        pair.primary.stop()
        pr = pair.hodr_primary.start()
        wait_for(
            lambda: (st := pr.status()) and "cannot connect to the source" in st.sentence,
            30,
            "primary to report the unreachable source",
        )
        assert pr.alive() and sb.alive()
        # ... and counts how long (the agent's monitor fails the instance on it: db_down_timeout)
        wait_for(lambda: (st := pr.status()) and st.db_down_s >= 1, 30, "the source outage counted")
        pair.primary.start()
        pair.primary.psql("INSERT INTO acc SELECT g, 'x' FROM generate_series(1, 100) g", DB)
        wait_equal(pair, ["acc", "extra"], timeout=60)
        wait_for(lambda: (st := pr.status()) and st.db_down_s == 0, 30, "the source outage over")
        # The standby's database goes away while it runs: counted too, over once it is back.
        pair.standby.stop()
        pair.primary.psql("INSERT INTO acc SELECT g, 'y' FROM generate_series(101, 110) g", DB)
        wait_for(lambda: (st := sb.status()) and st.db_down_s >= 1, 30, "the target outage counted")
        pair.standby.start()
        wait_equal(pair, ["acc", "extra"], timeout=60)
        wait_for(lambda: (st := sb.status()) and st.db_down_s == 0, 30, "the target outage over")
    finally:
        pair.close()


def test_queue_dir_not_usable_is_a_clear_error(tmp_path: Path, pg_factory) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    pg = pg_factory("standby")
    d = HodrDaemon(
        "standby",
        {
            "node": "s1",
            "role": "standby",
            "data_dir": str(blocker / "data"),
            "run_dir": str(tmp_path / "run"),
            "target": {"dsn": pg.dsn()},
            "transport": {"primary_host": "127.0.0.1", "port": 1},
        },
        tmp_path,
    )
    d.start()
    assert d.proc is not None
    assert d.proc.wait(30) == 1
    out = d.tail(5)
    assert "Not a directory" in out and str(blocker) in out, out
    assert "Traceback" not in out


def test_sd_notify_ready_status_stopping_from_a_real_daemon(pg_factory, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(sock_path))
    s.settimeout(30)
    pair = Pair.create(pg_factory, tmp_path, SCHEMA)
    pair.hodr_standby.env = {"NOTIFY_SOCKET": str(sock_path)}
    try:
        pair.start()
        msgs: list[str] = []

        def got(prefix: str) -> bool:
            while not any(m.startswith(prefix) or f"\n{prefix}" in m for m in msgs):
                msgs.append(s.recv(4096).decode())
            return True

        assert got("READY=1")
        ready = next(m for m in msgs if "READY=1" in m)
        assert "STATUS=standby: applied" in ready and f"MAINPID={pair.hodr_standby.proc.pid}" in ready
        assert got("STATUS=standby")
        assert pair.hodr_standby.stop() == 0
        assert got("STOPPING=1")
    finally:
        pair.close()
        s.close()

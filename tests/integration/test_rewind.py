"""A crashed primary that comes back as a standby rewinds its unacknowledged tail by itself
(hodr.replicate.rewind), on real servers with real daemons: sync mode, in-doubt commits hanging
for the sync ack when the primary's daemon and database crash, the standby promoted, the old
primary restarted as its standby.  And the cases where it must not: an UPDATE whose old row is
not in the log, async mode without ``rejoin_rewind``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from hodr.pginstance import free_port
from tests.conftest import wait_for
from tests.harness import DB, HodrDaemon, _security, peer_config, table_rows
from tests.integration.test_switchover import _ask, _wait_role

pytestmark = pytest.mark.pg

SCHEMA = (
    "CREATE TABLE acc (id int PRIMARY KEY, v int);"
    "CREATE TABLE fl (id int PRIMARY KEY, v text); ALTER TABLE fl REPLICA IDENTITY FULL;"
    "CREATE TABLE kd (id int PRIMARY KEY, v text);"
)
TABLES = ("acc", "fl", "kd")


class Lab:
    """a primary, b its standby, equal; then b's daemon stopped so a's new commits reach nobody."""

    def __init__(self, pg_factory: Any, tmp: Path, sync: bool) -> None:
        self.pa, self.pb = pg_factory("a"), pg_factory("b")
        for pg in (self.pa, self.pb):
            pg.psql(f"CREATE DATABASE {DB}")
            pg.psql(SCHEMA, DB)
        self.pa.psql(
            "INSERT INTO acc SELECT g, g FROM generate_series(1, 10) g;"
            "INSERT INTO fl SELECT g, 'v' || g FROM generate_series(1, 5) g;"
            "INSERT INTO kd SELECT g, 'k' || g FROM generate_series(1, 5) g;",
            DB,
        )
        self.tmp, self.sync = tmp, sync
        self.outcomes: list[str] = []  # what each in_doubt session's client saw
        self.port_a, self.port_b = free_port(), free_port()
        self.sec = _security(tmp, ["a", "b"], True)
        self.a_cfg = peer_config("a", "primary", self.pa, self.port_a, "b", tmp, self.sec["a"], sync=sync)
        self.b_cfg = peer_config("b", "standby", self.pb, self.port_b, "a", tmp, self.sec["b"], sync=sync)
        self.a = HodrDaemon("a", self.a_cfg, tmp)
        self.b = HodrDaemon("b", self.b_cfg, tmp)
        self.daemons = [self.a, self.b]
        self.a.start().wait_ready()
        self.b.start()
        _ask(self.b, "follow", host="127.0.0.1", port=self.port_a)
        self.b.wait_ready()
        wait_for(lambda: self.equal(), 60, "b to catch up with a")
        # The slot's confirmed position reaches the disk at checkpoints: after a crash an older
        # one would only make the tail longer (and need the new primary's outbox to hold more).
        self.pa.psql("CHECKPOINT")
        self.b.stop(15)

    def equal(self) -> bool:
        return all(table_rows(self.pa, t, "1") == table_rows(self.pb, t, "1") for t in TABLES)

    def rows(self, pg: Any, table: str) -> list[str]:
        return table_rows(pg, table, "x.id")

    def in_doubt(self, statements: list[str]) -> list[threading.Thread]:
        """One background session per statement; in sync mode each commits locally and hangs
        waiting for the sync ack (until the crash cuts it)."""

        def run(sql: str) -> None:
            try:
                with self.pa.connect(DB) as conn:
                    conn.execute(sql)
                self.outcomes.append("committed")  # the client got its commit OK
            except Exception as exc:  # noqa: BLE001 - the crash ends the session; that is the point
                self.outcomes.append(f"error: {exc}")

        threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in statements]
        for t in threads:
            t.start()
        if self.sync:
            q = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            wait_for(
                lambda: int(self.pa.psql(q)) == len(statements), 30, "the commits to wait for the sync ack"
            )
        else:
            for t in threads:
                t.join(30)
        return threads

    def crash_primary(self, threads: list[threading.Thread], database: bool = True) -> None:
        self.a.kill()
        if database:
            self.pa.stop("immediate")
            self.pa.start()
        for t in threads:
            t.join(30)

    def start_old_primary_as_standby(self, **extra: Any) -> HodrDaemon:
        cfg = {**self.a_cfg, "role": "standby", **extra}
        cfg["transport"] = {**self.a_cfg["transport"], "port": self.port_b}
        d = HodrDaemon("a-standby", cfg, self.tmp)
        self.daemons.append(d)
        return d.start()

    def close(self) -> None:
        for d in reversed(self.daemons):
            d.stop(15)


def _status_extra(d: HodrDaemon) -> dict[str, Any]:
    st = d.status()
    return st.extra if st is not None else {}


def test_crashed_sync_primary_rewinds_in_doubt_commits_and_follows_the_new_primary(
    pg_factory, tmp_path: Path
) -> None:
    lab = Lab(pg_factory, tmp_path, sync=True)
    try:
        threads = lab.in_doubt(
            [
                "INSERT INTO acc VALUES (101, 1), (102, 2)",
                "INSERT INTO acc VALUES (103, 3)",
                "UPDATE fl SET v = 'changed' WHERE id = 1",
                "DELETE FROM fl WHERE id = 2",
                "INSERT INTO fl VALUES (50, 'new')",
            ]
        )
        lab.crash_primary(threads)
        # Committed locally: they survived the crash on a, and b never saw them.
        assert "101,1" in " ".join(lab.rows(lab.pa, "acc")).replace("(", "").replace(")", "")
        assert not lab.equal()

        lab.b.start()
        _ask(lab.b, "promote", epoch=2, deadline_s=30)
        _wait_role(lab.b, "primary")
        a2 = lab.start_old_primary_as_standby()
        a2.wait_ready()

        assert lab.equal(), "the in-doubt commits were not rewound"
        extra = _status_extra(a2)
        assert extra["diverged"] is False, extra
        term = [t for t in extra["primary_epochs"] if t["epoch"] == 1]
        assert term and term[0].get("last"), extra["primary_epochs"]
        files = list((tmp_path / "a-data" / "rewound").glob("epoch-1-*.jsonl"))
        assert len(files) == 1
        lines = [json.loads(x) for x in files[0].read_text().splitlines()]
        assert lines[0]["rewind"]["transactions"] == 5
        ops = sorted((c["op"], c["table"]) for t in lines[1:] for c in t["changes"])
        assert ops == [
            ("DELETE", "public.fl"),
            ("INSERT", "public.acc"),
            ("INSERT", "public.acc"),
            ("INSERT", "public.acc"),
            ("INSERT", "public.fl"),
            ("UPDATE", "public.fl"),
        ]
        assert "rewound 5 transactions" in a2.log_path.read_text()

        # The old primary follows the new one.
        with lab.pb.connect(DB, options="-c statement_timeout=60000") as conn:
            conn.execute("INSERT INTO acc SELECT g, g FROM generate_series(200, 220) g")
            conn.execute("UPDATE fl SET v = 'epoch2' WHERE id = 3")
        wait_for(lab.equal, 60, "the old primary to follow the new one")
        assert lab.pa.psql("SELECT count(*) FROM pg_replication_slots") == "0"
    finally:
        lab.close()


def test_commits_still_waiting_for_the_sync_ack_end_unacknowledged_when_the_node_rejoins(
    pg_factory, tmp_path: Path
) -> None:
    """Only the primary's daemon dies; its database runs on with two COMMITs waiting for the
    sync ack (Pacemaker's in-place recovery restarts a primary's database the same way, the VIP
    still pointing at it).  When the node rejoins as a standby, those sessions are ended before
    it leaves synchronous mode: their clients never get a commit OK for what is rewound."""
    lab = Lab(pg_factory, tmp_path, sync=True)
    try:
        threads = lab.in_doubt(["INSERT INTO acc VALUES (101, 1)", "INSERT INTO acc VALUES (102, 2)"])
        lab.crash_primary([], database=False)  # the sessions keep waiting
        lab.b.start()
        _ask(lab.b, "promote", epoch=2, deadline_s=30)
        _wait_role(lab.b, "primary")
        a2 = lab.start_old_primary_as_standby()
        a2.wait_ready()
        for t in threads:
            t.join(30)
        assert len(lab.outcomes) == 2 and not any(o == "committed" for o in lab.outcomes), lab.outcomes
        assert lab.equal(), "the in-doubt commits were not rewound"
        assert "rewound 2 transactions" in a2.log_path.read_text()
    finally:
        lab.close()


def test_update_without_old_row_is_not_rewound_and_node_is_held(pg_factory, tmp_path: Path) -> None:
    lab = Lab(pg_factory, tmp_path, sync=True)
    try:
        threads = lab.in_doubt(
            ["INSERT INTO acc VALUES (101, 1)", "UPDATE kd SET v = 'changed' WHERE id = 1"]
        )
        lab.crash_primary(threads)
        before = {t: lab.rows(lab.pa, t) for t in TABLES}
        a2 = lab.start_old_primary_as_standby()
        extra = wait_for(lambda: _status_extra(a2).get("diverged") and _status_extra(a2), 60, "diverged")
        assert "public.kd" in extra["diverged_reason"] and "REPLICA IDENTITY FULL" in extra["diverged_reason"]
        assert "nothing undone" in extra["diverged_reason"]
        assert {t: lab.rows(lab.pa, t) for t in TABLES} == before
        assert a2.status().role == "starting" and "held" in a2.status().sentence
    finally:
        lab.close()


def test_async_without_opt_in_is_held_and_nothing_is_undone(pg_factory, tmp_path: Path) -> None:
    lab = Lab(pg_factory, tmp_path, sync=False)
    try:
        threads = lab.in_doubt(["INSERT INTO acc VALUES (101, 1)", "INSERT INTO fl VALUES (50, 'x')"])
        lab.crash_primary(threads, database=False)
        before = {t: lab.rows(lab.pa, t) for t in TABLES}
        a2 = lab.start_old_primary_as_standby()
        extra = wait_for(lambda: _status_extra(a2).get("diverged") and _status_extra(a2), 60, "diverged")
        assert "rejoin_rewind" in extra["diverged_reason"], extra
        assert {t: lab.rows(lab.pa, t) for t in TABLES} == before
        assert list((tmp_path / "a-data" / "rewound").glob("epoch-1-*.jsonl")), "the tail was not saved"
    finally:
        lab.close()

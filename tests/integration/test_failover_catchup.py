"""A 3-node cluster survives a failover without reseeding the standby that was behind.

Real PostgreSQL servers and real ``hodr run`` daemons: a primary feeding two standbys in sync
mode with ``sync_quorum: 1``.  Standby s2 is stopped and falls behind while s1 keeps receiving;
then the primary is lost (daemon kill -9, database stopped); s1 is promoted through the control
socket.  Its outbox starts with the window its queue retained, so s2 — restarted against the same
address, now served by s1 — resumes after its own last commit (no NeedsReseed), catches up and
follows the new epoch.  s2's database keeps a ``synchronous_standby_names`` nobody satisfies, as
a demoted sync-mode primary does: the applier's commits must not wait for it.

And the quorum itself: with one of two standbys down, commits complete with ``sync_quorum: 1``
and wait (``SyncRep``) with ``sync_quorum: 2`` until the standby is back."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from hodr.pginstance import PgInstance
from tests.conftest import wait_for
from tests.harness import DB, Pair, table_rows
from tests.integration.test_switchover import _ask, _wait_role

pytestmark = pytest.mark.pg

SCHEMA = (
    "CREATE TABLE acc (id int PRIMARY KEY, v int); "
    # one row per source transaction, keyed by the writer: a transaction applied twice would
    # fail the applier on the key (and double the counter in acc)
    "CREATE TABLE audit (who text PRIMARY KEY, n int);"
)
TABLES = ["acc", "audit"]


def _write(pg: PgInstance, who: str, n: int) -> None:
    with pg.connect(DB) as conn:
        for i in range(n):
            with conn.transaction():
                conn.execute("INSERT INTO audit VALUES (%s, %s)", (f"{who}-{i}", i))
                conn.execute(
                    "INSERT INTO acc VALUES (%s, 1) ON CONFLICT (id) DO UPDATE SET v = acc.v + 1", (i % 37,)
                )


def _rows(pg: PgInstance) -> list[list[str]]:
    return [table_rows(pg, t) for t in TABLES]


def _equal(a: PgInstance, b: PgInstance) -> bool:
    return _rows(a) == _rows(b)


def _wait_equal(a: PgInstance, b: PgInstance, pair: Pair, what: str, timeout: float = 90) -> None:
    try:
        wait_for(lambda: _equal(a, b), timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{pair.logs()}") from None


def _rewrite(daemon: Any, **top: Any) -> None:
    daemon.cfg.update(top)
    daemon.write_config()


def test_failover_the_standby_that_was_behind_catches_up_from_the_promoted_one(
    pg_factory, tmp_path: Path
) -> None:
    pair = Pair.create(pg_factory, tmp_path, SCHEMA, sync=True, standbys=2, primary_names=["primary", "s1"])
    p, a, b = pair.hodr_primary, pair.hodr_standby, pair.hodr_standby2
    assert p is not None and a is not None and b is not None and pair.standby2 is not None
    pg_a, pg_b = pair.standby, pair.standby2
    try:
        _rewrite(p, sync_quorum=1)
        # s1 is configured for the day it is primary: it feeds s2 (and the old primary, which
        # is down and does not count for the quorum of 1).
        pair.s_cfg["transport"]["standbys"] = [{"name": "s2"}, {"name": "primary"}]
        _rewrite(a, sync=True, sync_quorum=1)
        # What a demoted sync-mode primary keeps: applied commits must not wait for "nobody".
        pg_b.psql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        pg_b.psql("SELECT pg_reload_conf()")
        pair.start()

        _write(pair.primary, "both", 100)
        _wait_equal(pair.primary, pg_a, pair, "s1 to apply the first writes")
        _wait_equal(pair.primary, pg_b, pair, "s2 to apply the first writes")

        # s2 stops; with sync_quorum 1 the primary's commits still complete (s1 acks them).
        b.stop(15)
        _write(pair.primary, "s1-only", 200)
        _wait_equal(pair.primary, pg_a, pair, "s1 to apply what s2 missed")
        before_loss = _rows(pair.primary)

        # The primary is lost.
        p.kill()
        pair.primary.stop("immediate")

        _ask(a, "promote", deadline_s=60)
        _wait_role(a, "primary")
        st = a.status()
        assert st is not None and st.epoch == 2
        assert _rows(pg_a) == before_loss, "a sync-mode commit (quorum 1) was lost in the failover"

        # s2 comes back against the same address, now served by s1: it resumes after its own
        # last commit from the window s1's outbox was seeded with.
        b.start()
        b.wait_ready()
        _wait_equal(pg_a, pg_b, pair, "s2 to catch up from the promoted s1")
        # New-epoch commits on s1 complete in sync mode only because s2 acks them.
        _write(pg_a, "epoch2", 100)
        _wait_equal(pg_a, pg_b, pair, "s2 to follow the new epoch")

        assert int(pg_b.psql("SELECT count(*) FROM audit", DB)) == 100 + 200 + 100
        assert int(pg_b.psql("SELECT sum(v) FROM acc", DB)) == 100 + 200 + 100  # nothing twice
        for d in (a, b):
            assert d.alive(), f"{d.name} died:\n{d.tail()}"
        log_b = b.log_path.read_text(errors="replace")
        assert "reseed" not in log_b.lower(), b.tail(40)
        st = a.status()
        assert st is not None
        peer = next(x for x in st.peers if x.name == "s2")
        assert peer.connected and not peer.detached
        wait_for(
            lambda: (
                (s := a.status()) is not None and next(x for x in s.peers if x.name == "s2").lag_bytes == 0
            ),
            30,
            "s1 to report s2 without lag",
        )
        # One slot, on the new primary; s2 never got one.
        assert pg_a.psql("SELECT count(*) FROM pg_replication_slots") == "1"
        assert pg_b.psql("SELECT count(*) FROM pg_replication_slots") == "0"
    finally:
        pair.close()


def _commit_in_thread(pg: PgInstance, who: str) -> tuple[threading.Thread, list[int]]:
    done: list[int] = []

    def run() -> None:
        with pg.connect(DB) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            done.append(-row[0])
            conn.execute("INSERT INTO audit VALUES (%s, 0)", (who,))
            done.append(row[0])

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done


def test_sync_quorum_one_of_two_commits_with_a_standby_down_two_waits(pg_factory, tmp_path: Path) -> None:
    pair = Pair.create(pg_factory, tmp_path, SCHEMA, sync=True, standbys=2)
    p, s2 = pair.hodr_primary, pair.hodr_standby2
    assert p is not None and s2 is not None and pair.standby2 is not None
    try:
        _rewrite(p, sync_quorum=1)
        pair.start()
        _write(pair.primary, "up", 5)
        _wait_equal(pair.primary, pair.standby2, pair, "s2 to apply the first writes")

        s2.stop(15)
        t, done = _commit_in_thread(pair.primary, "quorum-1")
        t.join(30)
        assert len(done) == 2, "a commit waited although one of two standbys (the quorum) had it"

        # The same with sync_quorum 2: the commit waits for s2.
        p.stop(15)
        _rewrite(p, sync_quorum=2)
        p.start()
        p.wait_ready()
        t, done = _commit_in_thread(pair.primary, "quorum-2")
        pid = -wait_for(lambda: done and done[0], 10, "the writer to connect")
        wait_for(
            lambda: (
                pair.primary.psql(f"SELECT wait_event FROM pg_stat_activity WHERE pid = {pid}") == "SyncRep"
            ),
            30,
            "the commit to wait for the second standby",
        )
        assert len(done) == 1, "commit completed with only one of two standbys (quorum 2)"
        s2.start()
        t.join(60)
        assert len(done) == 2, f"commit did not complete after s2 returned\n{pair.logs()}"
        _wait_equal(pair.primary, pair.standby2, pair, "s2 to hold everything")
    finally:
        pair.close()

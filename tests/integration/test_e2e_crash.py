"""Crash safety and sync mode with real daemons: kill -9 either side at random moments during a
workload, repeatedly; sync-mode commits wait for the standby's durable ack (RPO 0)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.harness import DB, Pair, wait_equal
from tests.workload import SCHEMA, TABLES, worker

pytestmark = pytest.mark.pg


def test_kill_9_either_side_repeatedly_loses_and_doubles_nothing(pair: Pair) -> None:
    """≥10 rounds: SIGKILL the primary-side or the standby-side daemon at a random moment while
    clients write, restart it; at the end both sides are equal.  The audit table has one row per
    source transaction under a primary key, so a transaction applied twice would stop the applier
    with a unique violation instead of converging."""
    pair.start()
    rng = random.Random(2026)
    errors: list[BaseException] = []
    stop = threading.Event()

    def load(w: int) -> None:
        n = 0
        while not stop.is_set() and not errors:
            worker(pair, w, 20, 1000 * w + n, errors, base=(w + 1) * 10**9 + n * 10**6)
            n += 1

    clients = [threading.Thread(target=load, args=(w,)) for w in range(2)]
    for t in clients:
        t.start()
    try:
        for rnd in range(10):
            victim = rng.choice([pair.hodr_primary, pair.hodr_standby])
            # A random moment inside the workload: fault injection timing, not synchronisation.
            time.sleep(rng.uniform(0.2, 1.2))
            victim.kill()
            victim.start()
            victim.wait_ready(60)
            assert not errors, f"round {rnd}: workload failed: {errors[0]!r}"
    finally:
        stop.set()
        for t in clients:
            t.join(120)
    assert not errors, f"workload failed: {errors[0]!r}"
    wait_equal(pair, TABLES, timeout=120)
    n_audit = int(pair.standby.psql("SELECT count(*) FROM audit", DB))
    assert n_audit == int(pair.primary.psql("SELECT count(*) FROM audit", DB)) > 50
    for d in pair.daemons:
        assert d.alive(), f"{d.name} died:\n{d.tail()}"


@pytest.fixture
def sync_pair(pg_factory, tmp_path: Path):
    p = Pair.create(pg_factory, tmp_path, SCHEMA, sync=True)
    yield p
    p.close()


def _commit_in_thread(pair: Pair, note: str) -> tuple[threading.Thread, list[int]]:
    done: list[int] = []

    def run() -> None:
        with pair.primary.connect(DB) as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            done.append(-pid)
            conn.execute("INSERT INTO audit VALUES (txid_current(), 0, %s)", (note,))
            done.append(pid)

    t = threading.Thread(target=run)
    t.start()
    return t, done


def test_sync_commit_waits_for_the_standby_and_survives_primary_loss(sync_pair: Pair) -> None:
    pair = sync_pair
    pair.start()
    with pair.primary.connect(DB) as conn:  # with the standby up, commits complete
        conn.execute("INSERT INTO audit VALUES (txid_current(), 0, 'first')")
    wait_for(lambda: pair.standby.psql("SELECT count(*) FROM audit", DB) == "1", 30, "first row on standby")

    pair.hodr_standby.kill()
    t, done = _commit_in_thread(pair, "while standby down")
    pid = -wait_for(lambda: done and done[0], 10, "the writer to connect")
    wait_for(
        lambda: pair.primary.psql(f"SELECT wait_event FROM pg_stat_activity WHERE pid = {pid}") == "SyncRep",
        20,
        "the commit to wait for the synchronous standby",
    )
    assert len(done) == 1, "commit completed while the standby was down"

    pair.hodr_standby.start()
    t.join(60)
    assert not t.is_alive() and len(done) == 2, "commit did not complete after the standby returned"
    wait_for(
        lambda: pair.standby.psql("SELECT count(*) FROM audit WHERE note = 'while standby down'", DB) == "1",
        30,
        "the row committed while the standby was down to reach it",
    )

    # A commit that returned in sync mode is durable on the standby: kill the primary side hard
    # right after, and it still arrives.
    with pair.primary.connect(DB) as conn:
        conn.execute("INSERT INTO audit VALUES (txid_current(), 0, 'then primary lost')")
    pair.hodr_primary.kill()
    pair.primary.crash()
    wait_for(
        lambda: pair.standby.psql("SELECT count(*) FROM audit WHERE note = 'then primary lost'", DB) == "1",
        30,
        "the last sync-committed row on the standby after the primary was lost",
    )

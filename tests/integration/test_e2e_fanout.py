"""One primary, two standbys, real PostgreSQL 15 servers and real ``hodr run`` daemons over mutual
TLS: a hostile proxy on the wire, standbys at different speeds, the slot held for the slower one,
and the lag limit that detaches a standby instead of letting it hold the primary's WAL forever.

What must hold, whatever happens on the wire: both standbys end row-by-row equal to the primary,
and no source transaction is applied twice (``audit`` has one row per source transaction under a
primary key, so a double apply would stop the applier with a unique violation)."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from hodr.status import control_request
from tests.conftest import wait_for
from tests.harness import DB, Pair, wait_equal
from tests.integration.test_transport import Proxy
from tests.workload import SCHEMA, TABLES, worker

pytestmark = pytest.mark.pg


def run_workload(pair: Pair, workers: int, txns: int, seed: int) -> None:
    """test_e2e_postgres's random transactions, in a key range of their own per ``seed`` (so that
    several rounds in one test never collide)."""
    errors: list[BaseException] = []
    threads = [
        threading.Thread(
            target=worker, args=(pair, w, txns, seed * 100 + w, errors, (seed * 10 + w + 1) * 10**7)
        )
        for w in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, f"workload failed: {errors[0]!r}"


def confirmed_flush(pair: Pair) -> int:
    """The slot's confirmed_flush_lsn as a number (what the source may recycle up to)."""
    out = pair.primary.psql("SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots")
    return int(out or 0)


def peer(pair: Pair, name: str):  # type: ignore[no-untyped-def]
    st = pair.hodr_primary.status()
    return next((p for p in st.peers if p.name == name), None) if st else None


def hostile_proxy(pair: Pair, rng: random.Random, faults: int) -> Proxy:
    """A relay that cuts the first ``faults`` connections at random points or flips a random
    byte in them (primary → standby, or rarely standby → primary); later ones pass untouched."""
    cuts: list[int | None] = []
    flips: list[int | None] = []
    up_flips: list[int | None] = []
    for _ in range(faults):
        kind = rng.random()
        cuts.append(rng.randrange(500, 300_000) if kind < 0.45 else None)
        flips.append(rng.randrange(500, 300_000) if 0.45 <= kind < 0.9 else None)
        up_flips.append(rng.randrange(50, 2_000) if kind >= 0.9 else None)
    return Proxy(pair.p_cfg["transport"]["port"], cuts=cuts, flips=flips, up_flips=up_flips)  # type: ignore[arg-type]


@pytest.fixture
def fanout(pg_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    p = Pair.create(
        pg_factory,
        tmp_path,
        SCHEMA,
        standbys=2,
        source={"logical_decoding_work_mem": "64kB"},
        transport={"compression": 3},
        standby_transport=[{}, {"bandwidth_mbit": 40}],  # s2 is the slow one
    )
    yield p
    p.close()


def test_two_standbys_through_a_hostile_proxy_end_equal_and_the_slot_waits_for_the_slower(
    fanout: Pair,
) -> None:
    pair = fanout
    rng = random.Random(505)
    proxies = [hostile_proxy(pair, rng, 8), hostile_proxy(pair, rng, 8)]
    try:
        for daemon, proxy in zip((pair.hodr_standby, pair.hodr_standby2), proxies, strict=True):
            assert daemon is not None
            daemon.cfg["transport"]["port"] = proxy.port
            daemon.write_config()
        # s2 starts late: until it has acked, the slot must not move past what it holds.
        pair.hodr_primary.start()
        pair.hodr_standby.start()
        pair.hodr_primary.wait_ready()
        pair.hodr_standby.wait_ready()
        wait_for(lambda: (p := peer(pair, "s1")) and p.acked_seq, 30, "s1 to ack the initial load")
        held = confirmed_flush(pair)
        run_workload(pair, workers=2, txns=40, seed=11)
        wait_equal(pair, TABLES, timeout=120)  # s1 is complete, through the proxy's faults
        s1, s2 = peer(pair, "s1"), peer(pair, "s2")
        assert s1 is not None and s2 is not None and s1.acked_seq > s2.acked_seq == 0
        assert confirmed_flush(pair) == held, "the slot moved past what the absent standby holds"
        outbox_segments = sorted((Path(pair.p_cfg["data_dir"]) / "outbox" / "segments").glob("*.seg"))
        assert outbox_segments and int(outbox_segments[0].stem) <= s2.acked_seq + 1

        pair.hodr_standby2.start()  # type: ignore[union-attr]
        run_workload(pair, workers=2, txns=20, seed=12)
        wait_equal(pair, TABLES, timeout=180)
        wait_equal(pair, TABLES, timeout=180, standby=pair.standby2)
        wait_for(lambda: confirmed_flush(pair) > held, 30, "the slot to advance once both acked")
        n = int(pair.primary.psql("SELECT count(*) FROM audit", DB))
        for pg in (pair.standby, pair.standby2):
            assert pg is not None and int(pg.psql("SELECT count(*) FROM audit", DB)) == n > 60
        faults = sum(p.cut_done + p.flips_done for p in proxies)
        assert faults >= 8, f"the proxies injected only {faults} faults"
        s1, s2 = peer(pair, "s1"), peer(pair, "s2")
        assert s1.compression == s2.compression == 3  # type: ignore[union-attr]
        assert 0 < s2.wire_bytes < s2.sent_bytes  # type: ignore[union-attr]
        for d in pair.daemons:
            assert d.alive(), f"{d.name} died:\n{d.tail()}"
    finally:
        pair.close()
        for p in proxies:
            p.close()


@pytest.fixture
def lagging(pg_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    p = Pair.create(
        pg_factory,
        tmp_path,
        SCHEMA,
        standbys=2,
        transport={"max_lag_mb": 1, "detach_lagging": True},
    )
    yield p
    p.close()


def test_a_standby_over_the_lag_limit_is_detached_and_stops_holding_the_slot(lagging: Pair) -> None:
    pair = lagging
    pair.hodr_primary.start()
    pair.hodr_standby.start()
    pair.hodr_primary.wait_ready()
    pair.hodr_standby.wait_ready()
    wait_for(lambda: (p := peer(pair, "s1")) and p.acked_seq, 30, "s1 to ack the initial load")
    held = confirmed_flush(pair)
    run_workload(pair, workers=2, txns=30, seed=21)  # several MiB while s2 is away
    wait_for(lambda: (p := peer(pair, "s2")) and p.detached, 30, "s2 to be detached")
    s2 = peer(pair, "s2")
    assert s2.lagging and "over transport.max_lag_mb 1;" in s2.detached  # type: ignore[union-attr]
    # (the sentence of a cycle is made before its snapshot: the next cycle says it)
    wait_for(lambda: "s2 DETACHED" in pair.hodr_primary.status().sentence, 5, "the sentence to say it")  # type: ignore[union-attr]
    log = pair.hodr_primary.log_path.read_text()
    assert "standby s2 is" in log and "standby s2 DETACHED" in log
    # s2 no longer counts: the slot follows s1 alone.
    wait_equal(pair, TABLES, timeout=120)
    wait_for(lambda: confirmed_flush(pair) > held, 30, "the slot to move on without the detached standby")

    # The detached standby is refused (fatally: it must be reseeded or attached again).
    s2d = pair.hodr_standby2
    assert s2d is not None
    s2d.start()
    wait_for(lambda: not s2d.alive(), 60, "the detached standby to give up")
    assert "detached by the primary" in s2d.tail(40)
    assert pair.standby2 is not None and pair.standby2.psql("SELECT count(*) FROM audit", DB) == "0"

    # An operator attaches it again; the outbox still holds its position, so it catches up.
    reply = control_request(pair.hodr_primary.run_dir, "attach", standby="s2")
    assert reply == {"result": "done"}
    s2d.start()
    wait_equal(pair, TABLES, timeout=120, standby=pair.standby2)
    assert not peer(pair, "s2").detached  # type: ignore[union-attr]

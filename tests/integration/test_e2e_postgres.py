"""End to end on real PostgreSQL 15 servers with real ``hodr run`` daemons: what a user cares
about is that both sides end row-by-row equal, nothing lost, nothing applied twice."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.harness import DB, Pair, wait_equal
from tests.workload import TABLES, run_workload, worker

pytestmark = pytest.mark.pg


def test_random_workload_ends_row_by_row_equal(pair: Pair) -> None:
    pair.primary.psql(
        "INSERT INTO t_all (id, txt) SELECT g, 'preexisting' FROM generate_series(1, 500) g", DB
    )
    pair.start()
    run_workload(pair, workers=3, txns=150, seed=7)
    wait_equal(pair, TABLES, timeout=120)
    st = pair.hodr_standby.status()
    assert st is not None and st.applied, st
    # The applier really streamed big transactions (parts) and kept unchanged TOAST values.
    big_on_standby = pair.standby.psql("SELECT count(*) FROM t_all WHERE length(big) >= 5000", DB)
    assert int(big_on_standby) > 0


def _status_cli(cfg_path: Path, *extra: str) -> str:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "hodr", "status", str(cfg_path), *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_initial_load_under_writes_status_and_reseed(pair: Pair) -> None:
    """The initial load runs while clients write: load ∪ stream must equal the source exactly
    (no gap, no overlap).  ``hodr status`` shows both roles; ``hodr init-load`` reseeds."""
    import json
    import subprocess
    import sys

    pair.primary.psql(
        "INSERT INTO t_all (id, txt, big) SELECT g, 'seed', repeat('s', 3000) "
        "FROM generate_series(1, 3000) g",
        DB,
    )
    errors: list[BaseException] = []
    writer = threading.Thread(target=worker, args=(pair, 0, 120, 99, errors))
    writer.start()
    pair.start()
    writer.join(300)
    assert not errors, errors
    wait_equal(pair, TABLES, timeout=120)

    text = _status_cli(pair.hodr_primary.cfg_path)
    assert "primary" in text and "standby s1: connected" in text, text
    st = json.loads(_status_cli(pair.hodr_standby.cfg_path, "--json"))
    assert st["role"] == "standby" and st["applied"] and st["primary_connected"] is True

    # Reseed: refused while the daemon runs, done once it is stopped; the standby converges again.
    proc = subprocess.run(
        [sys.executable, "-m", "hodr", "init-load", str(pair.hodr_primary.cfg_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "stop it before init-load" in proc.stderr
    pair.hodr_primary.stop()
    pair.primary.psql("UPDATE t_all SET txt = 'after' WHERE id <= 10", DB)
    proc = subprocess.run(
        [sys.executable, "-m", "hodr", "init-load", str(pair.hodr_primary.cfg_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "initial load queued" in proc.stdout, proc.stderr
    pair.hodr_primary.start().wait_ready()
    wait_equal(pair, TABLES, timeout=120)

"""Takeover in a real 3-node cluster (issue 4): PostgreSQL and hodr on every lab node, managed by
Pacemaker through ocf:hodr:hodr-replica (promotable clone) and ocf:hodr:hodr-vip, a client
writing through the VIP from the lab's client namespace.

Every scenario prints its measured RTO (primary lost -> first write the client saw succeed
through the VIP) and RPO (writes the client saw committed that the new primary lacks) as
``RTO ...``/``RPO ...`` lines (run with ``-s``). Each test builds its own lab (a scenario leaves
epochs, fencing history and sometimes a diverged node behind) and tears it down, also on failure.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hodr.lab import teardown
from hodr.lab.topology import state_dir_for
from tests.cluster.conftest import TEST_REBOOT_DELAY, logs_dir
from tests.cluster.dbcluster import CLONE, CONFIG, DbCluster, now, rto_rpo, writing
from tests.conftest import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.pg, pytest.mark.slow]

LAB = "hodrdb"
#: crash -> fenced (~4-5 s fast lab) -> promote (drain, new slot) -> VIP -> client reconnects
FAILOVER_DEADLINE = 90.0


def make_cluster(tmp_path: Path, *, sync: bool, **params: str) -> Iterator[DbCluster]:
    from hodr.lab import Lab

    teardown(LAB, state_dir_for(LAB))
    lab = Lab.create(3, name=LAB, reboot_delay=TEST_REBOOT_DELAY)
    db = DbCluster(lab, tmp_path, sync=sync, resource_params=dict(params))
    try:
        lab.up(timeout=90)
        db.provision()
        db.create_resources()
        primary = db.wait_promoted(120)
        assert primary == "node1", f"bootstrap promoted {primary}, not the YAML's primary node1"
        db.wait_standbys_connected(primary, ["node2", "node3"])
        wait_for(lambda: db.lab.locate("hodr-vip") == [primary], 60, "the VIP on the primary")
        yield db
    finally:
        db.collect_logs(logs_dir(tmp_path, f"{LAB}-logs"))
        # HODR_TEST_KEEP_LAB=1 keeps it for inspection (then `hodr lab --name hodrdb down`)
        if not os.environ.get("HODR_TEST_KEEP_LAB"):
            lab.down(logs_to=logs_dir(tmp_path, f"{LAB}-logs"))


@pytest.fixture
def async_cluster(tmp_path: Path) -> Iterator[DbCluster]:
    yield from make_cluster(tmp_path, sync=False)


@pytest.fixture
def sync_cluster(tmp_path: Path) -> Iterator[DbCluster]:
    yield from make_cluster(tmp_path, sync=True)


def pcs(db: DbCluster, cmd: str, timeout: float = 120) -> str:
    return db.lab.run(db.lab._via(None), *shlex.split(cmd), timeout=timeout).stdout


def assert_no_failed_actions(db: DbCluster) -> None:
    view = db.lab.crm_mon_xml()
    assert "<failures>" not in view or "<failure " not in view, f"failed actions:\n{db.describe()}"


class RoleWatch:
    """Samples every node's hodr role and the VIP holders from the host (~every 0.1 s) and
    records every moment two nodes claimed to be primary or held the VIP."""

    def __init__(self, db: DbCluster) -> None:
        self.db = db
        self.stop = threading.Event()
        self.samples = 0
        self.violations: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from tests.cluster.test_vip_cluster import node_holders

        while not self.stop.is_set():
            primaries = [n for n in self.db.lab.nodes if self.db.role(n) == "primary"]
            holders = sorted(node_holders(self.db.lab))
            self.samples += 1
            if len(primaries) > 1 or len(holders) > 1:
                self.violations.append(f"{time.time():.2f}: primaries {primaries}, VIP on {holders}")
            self.stop.wait(0.1)

    def __enter__(self) -> RoleWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


# ----------------------------------------------------------------------------------- drills


def test_switchover_drill_async_zero_loss_and_back(async_cluster: DbCluster, tmp_path: Path) -> None:
    """`pcs resource move hodr-clone node2 --promoted` while the client writes (async mode):
    roles swap with zero lost transactions (the old primary's final marker is drained before the
    promotion), moving back works, `pcs resource clear` leaves a stable cluster."""
    db = async_cluster
    with RoleWatch(db) as watch, writing(db, tmp_path / "writer.jsonl") as w:
        w.wait_commits(50, 60)
        for target, old in (("node2", "node1"), ("node1", "node2")):
            t0 = now()
            pcs(db, f"pcs resource move {CLONE} {target} --promoted")
            assert db.wait_promoted(FAILOVER_DEADLINE, not_on=old) == target
            wait_for(lambda t=target: db.lab.locate("hodr-vip") == [t], 60, f"the VIP on {target}")
            w.wait_commits(30, 60, after=now())
            wait_for(lambda o=old: db.role(o) == "standby", 60, f"{old} a standby again")
            _, rpo = rto_rpo(f"switchover to {target}", w, t0, db.ids(target), planned=True)
            assert rpo == 0
        pcs(db, f"pcs resource clear {CLONE}")
        w.wait_commits(30, 60, after=now())
    acked = set(w.committed())
    assert db.promoted() == ["node1"], db.describe()
    for n in ("node2", "node3"):
        db.wait_equal("node1", n)
    assert acked <= db.ids("node1"), f"lost: {sorted(acked - db.ids('node1'))[:10]}"
    # stable: nothing moves, nothing failed, the configuration verifies clean
    settled = now()
    wait_for(lambda: now() - settled > 10 and db.promoted() == ["node1"], 30, "a stable cluster")
    db.lab.run("node1", "crm_verify", "-L")
    assert_no_failed_actions(db)
    assert not watch.violations, watch.violations[:5]
    assert CONFIG  # the same YAML path on every node

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
from tests.cluster.dbcluster import CLONE, PGDATA, DbCluster, now, rto_rpo, writing
from tests.cluster.test_vip_cluster import node_holders
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
            # a short graceful stop: Pacemaker stopping every resource in order is not under
            # test here, and the nodes' databases are thrown away anyway
            lab.down(logs_to=logs_dir(tmp_path, f"{LAB}-logs"), timeout=5)


@pytest.fixture
def async_cluster(tmp_path: Path) -> Iterator[DbCluster]:
    yield from make_cluster(tmp_path, sync=False)


@pytest.fixture
def sync_cluster(tmp_path: Path) -> Iterator[DbCluster]:
    yield from make_cluster(tmp_path, sync=True)


def pcs(db: DbCluster, cmd: str, timeout: float = 120) -> str:
    return db.lab.run(db.lab._via(None), *shlex.split(cmd), timeout=timeout).stdout


def promotion_score(db: DbCluster, node: str) -> str:
    """``node``'s promotion score for the hodr clone as Pacemaker holds it ("" if unset)."""
    r = db.lab.run(
        db.lab._via(None), "crm_attribute", "--promotion", "-N", node, "-G", "-q",
        check=False, env={"OCF_RESOURCE_INSTANCE": "hodr"},
    )  # fmt: skip
    return r.stdout.strip()


def assert_no_failed_actions(db: DbCluster) -> None:
    view = db.lab.crm_mon_xml()
    assert "<failure " not in view, f"failed actions:\n{db.describe()}"


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
            # the primary's services moved too: the application unit answers through the VIP
            wait_for(lambda t=target: db.app_via_vip() == t, 30, f"the application on {target}")
            assert not db.app_running(old), f"the application still runs on the demoted {old}"
            w.wait_commits(30, 60, after=now())
            wait_for(lambda o=old: db.role(o) == "standby", 60, f"{old} a standby again")
            _, rpo = rto_rpo(f"switchover to {target}", w, t0, db, target)
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


# ---------------------------------------------------------------------------------- failover


def test_failover_on_primary_crash_sync_loses_nothing_and_old_primary_rejoins(
    sync_cluster: DbCluster, tmp_path: Path
) -> None:
    """Power off the primary's node while the client writes through the VIP (sync mode, quorum
    1): a standby is promoted after it drained its queue, the VIP follows, the client's writes
    resume; every write the client saw committed is on the new primary; the old node, rebooted
    by fencing, rewinds its unacknowledged tail, rejoins as a standby and receives the new
    changes."""
    db = sync_cluster
    with RoleWatch(db) as watch, writing(db, tmp_path / "writer.jsonl") as w:
        w.wait_commits(100, 60)
        fenced = db.lab.fence_count("node1")
        lost_at = now()
        db.lab.crash("node1")
        new = db.wait_promoted(FAILOVER_DEADLINE, not_on="node1")
        wait_for(lambda: db.lab.locate("hodr-vip") == [new], 60, f"the VIP on {new}")
        wait_for(lambda: db.app_via_vip() == new, 30, f"the application unit started on {new}")
        w.wait_commits(50, 60, after=now())
        _, rpo = rto_rpo("failover (primary node crash, sync)", w, lost_at, db, new)
        assert rpo == 0, db.describe()
        other = next(n for n in ("node2", "node3") if n != new)
        # fencing powers node1 off and on again; it rejoins as a standby of the new primary
        db.lab.wait_fenced("node1", 60, before=fenced)
        db.lab.wait_online(["node1"], 120)
        wait_for(lambda: db.role("node1") == "standby", 180, "node1 a standby again")
        db.wait_standbys_connected(new, ["node1", other], timeout=120)
        w.wait_commits(50, 60, after=now())
    acked = set(w.committed())
    assert acked <= db.ids(new), f"lost: {sorted(acked - db.ids(new))[:10]}"
    for n in ("node1", other):
        db.wait_equal(new, n)
    st = db.status("node1") or {}
    assert st.get("extra", {}).get("diverged") is False, st
    assert not db.app_running("node1") and not db.app_running(other), "application units on standbys"
    assert db.promoted() == [new]
    assert not watch.violations, watch.violations[:5]


def test_primary_database_killed_is_recovered_and_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL the primary's PostgreSQL postmaster (node, daemon and Pacemaker keep running):
    after db_down_timeout the agent's monitor reports the primary failed (9) with the
    daemon's reason, Pacemaker recovers it (the database is restarted by the agent's services,
    a primary is promoted again), the client's writes resume through the VIP and nothing it saw
    committed is lost (sync)."""
    gen = make_cluster(tmp_path, sync=True, db_down_timeout="5")
    db = next(gen)
    try:
        with RoleWatch(db) as watch, writing(db, tmp_path / "writer.jsonl") as w:
            w.wait_commits(100, 60)
            lost_at = now()
            # our own lab's postmaster, by the pid it wrote
            db.lab.run("node1", "sh", "-c", f"kill -KILL $(head -1 {PGDATA}/postmaster.pid)")
            w.wait_commits(50, FAILOVER_DEADLINE, after=now())
            new = db.wait_promoted(60)
            wait_for(lambda: db.lab.locate("hodr-vip") == [new], 60, f"the VIP on {new}")
            _, rpo = rto_rpo("primary's database killed (sync)", w, lost_at, db, new)
            assert rpo == 0, db.describe()
        failures = db.lab.crm_mon_xml()
        assert "database is unusable" in failures, f"no failure with the agent's reason:\n{db.describe()}"
        acked = set(w.committed())
        assert acked <= db.ids(new), f"lost: {sorted(acked - db.ids(new))[:10]}"
        for n in db.lab.nodes:
            if n != new:
                db.wait_equal(new, n)
        assert not watch.violations, watch.violations[:5]
    finally:
        gen.close()


@pytest.fixture
def async_cluster_degraded_after_10s(tmp_path: Path) -> Iterator[DbCluster]:
    yield from make_cluster(tmp_path, sync=False, degraded_after="10")


def test_lagging_standby_is_not_promoted_and_catches_up(
    async_cluster_degraded_after_10s: DbCluster, tmp_path: Path
) -> None:
    """node3 loses its replication link (it follows an address that does not answer) and falls
    behind while node2 keeps up: pcs status shows the replication degraded on the primary and
    on node3, and nothing moves; the primary's node crashes: node2 is promoted, never node3, and
    node3 then follows node2 and catches up from its retained history without a reseed."""
    db = async_cluster_degraded_after_10s
    with RoleWatch(db) as watch, writing(db, tmp_path / "writer.jsonl") as w:
        w.wait_commits(30, 60)
        assert db.control("node3", "follow", host="192.0.2.1", port=5440)["result"] == "done"
        w.wait_commits(100, 60, after=now())
        wait_for(lambda: db.durable("node2") > db.durable("node3"), 30, "node3 behind node2")
        wait_for(lambda: promotion_score(db, "node3") == "-1000", 60, "node3's score -1000 (disconnected)")

        def degraded() -> bool:
            view = pcs(db, "pcs status", timeout=30)
            return (
                "returned 'promoted (degraded)' (replication degraded: standby node3 disconnected for" in view
                and "on node3 returned 'OCF_DEGRADED' (replication degraded: not receiving from the "
                "primary node1 for"
                in view
            )

        wait_for(degraded, 60, "pcs status to show the replication degraded on node1 and node3")
        assert db.promoted() == ["node1"] and db.role("node3") == "standby"  # nothing moved
        w.wait_commits(10, 60, after=now())
        lost_at = now()
        db.lab.crash("node1")
        assert db.wait_promoted(FAILOVER_DEADLINE, not_on="node1") == "node2"
        w.wait_commits(50, 60, after=now())
    rto_rpo("failover with a lagging standby (async)", w, lost_at, db, "node2")
    db.wait_equal("node2", "node3", timeout=120)
    assert not any("node3" in v for v in watch.violations), watch.violations[:5]
    assert db.role("node3") == "standby"


def test_require_sync_never_promotes_a_standby_that_is_behind(tmp_path: Path) -> None:
    """With require_sync=true: both standbys lose their replication link, the primary's node
    crashes: neither standby is promoted (their promotes are refused with a reason), however
    long we watch; the old primary, rebooted by fencing, holds everything and is promoted again."""
    gen = make_cluster(tmp_path, sync=True, require_sync="true")
    db = next(gen)
    try:
        for n in ("node2", "node3"):
            assert db.control(n, "follow", host="192.0.2.1", port=5440)["result"] == "done"
        with RoleWatch(db) as watch:
            db.lab.crash("node1")
            t0 = now()
            reasons: set[str] = set()

            def watched() -> bool:
                promoted = set(db.promoted()) & {"node2", "node3"}
                assert not promoted, f"promoted {promoted} although not in sync:\n{db.describe()}"
                for line in db.lab.run(
                    db.lab._via(None), "crm_mon", "-1", "-r", timeout=15
                ).stdout.splitlines():
                    if "promote on" in line and "require_sync" in line:
                        reasons.add(line.strip())
                return now() - t0 > 30

            wait_for(watched, 60, "30 s without a standby promoted")
        assert reasons, f"no promote refused with a require_sync reason:\n{db.describe()}"
        print(f"\nrequire_sync refusals: {sorted(reasons)[:2]}")
        for n in ("node2", "node3"):
            assert db.role(n) != "primary"
        assert not any(("node2" in v or "node3" in v) and "primaries" in v for v in watch.violations)
        # the old primary, rebooted by fencing, holds everything it published: it is promoted again
        assert db.wait_promoted(120) == "node1", db.describe()
    finally:
        gen.close()


# --------------------------------------------------------------------------------- isolation


def test_isolated_primary_stops_and_never_two_primaries(sync_cluster: DbCluster, tmp_path: Path) -> None:
    """Pull the primary's network cable while the client writes: the isolated node loses quorum
    and is fenced, so it stops accepting writes and its VIP goes; a standby is promoted; at no
    sampled moment do two nodes claim to be primary or hold the VIP (hodr status and eth0
    addresses of every node polled every ~0.1 s from the host)."""
    db = sync_cluster
    with RoleWatch(db) as watch, writing(db, tmp_path / "writer.jsonl") as w:
        w.wait_commits(100, 60)
        lost_at = now()
        db.lab.isolate("node1")

        wait_for(
            lambda: not db.lab.is_running("node1") or db.role("node1") != "primary",
            60,
            "the isolated node1 no longer primary (demoted or powered off by fencing)",
        )
        new = db.wait_promoted(FAILOVER_DEADLINE, not_on="node1")
        wait_for(lambda: db.lab.locate("hodr-vip") == [new], 60, f"the VIP on {new}")
        w.wait_commits(50, 60, after=now())
        _, rpo = rto_rpo("isolation of the primary (sync)", w, lost_at, db, new)
        assert rpo == 0, db.describe()
        # the isolated node never got the VIP back and never became primary again
        wait_for(lambda: db.lab.is_running("node1"), 60, "node1 powered on again by fencing")
        settle = now()
        wait_for(lambda: now() - settle > 10, 15, "10 s of watching the isolated node")
        assert db.role("node1") != "primary"
        assert node_holders(db.lab) == frozenset({new}), "the VIP must be on the new primary only"
    print(f"\nrole samples: {watch.samples}")
    assert watch.samples > 100
    assert not watch.violations, watch.violations[:5]

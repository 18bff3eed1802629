"""Contract tests for ``ocf/hodr-replica``, one OCF action at a time, plus ocf-tester (ocf-checklist §7A).

The shim runs as a subprocess, the way Pacemaker runs it (from ``/``, ``OCF_RESKEY_*`` environment),
against ``tests/agents/fake_hodr.py``: a fake daemon that speaks the real status-file and control-socket
contract, started through ``HODR_AGENT_DAEMON_CMD``. Pacemaker's attribute tools are fakes on
``PATH`` (the same file) storing values in a directory shared by the "nodes" of a test, so elections
between several nodes run without a cluster; without that directory they answer like a node outside
any cluster. Each node is a config file with its own run and data directories.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hodr.status import Status, control_request, read_status
from tests.conftest import wait_for
from tests.ocf_meta import RNG, AgentResult, xmllint_dtd, xmllint_rng

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "ocf" / "hodr-replica"
FAKE = Path(__file__).resolve().with_name("fake_hodr.py")
RESOURCE = "hodr"
CLONE_META = {"clone_max": "3", "notify": "true", "promoted_max": "1", "clone_node_max": "1"}
NOTIFY_TYPES = ("pre", "post")
NOTIFY_OPERATIONS = ("start", "stop", "promote", "demote")


@dataclass
class Node:
    """One node: a hodr config with its own run/data dirs; runs the agent like Pacemaker does."""

    name: str
    root: Path
    bin_dir: Path
    pcmk_dir: Path | None  # shared fake attribute store, or None: "no cluster here"
    clone: bool = False
    port: int = 5440
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / f"{self.name}.yml"

    @property
    def run_dir(self) -> Path:
        return self.root / f"run-{self.name}"

    @property
    def data_dir(self) -> Path:
        return self.root / f"data-{self.name}"

    def write_config(self) -> None:
        self.config.write_text(
            f"node: {self.name}\nrole: standby\nrun_dir: {self.run_dir}\ndata_dir: {self.data_dir}\n"
            f"status_interval_s: 0.2\ntarget:\n  dsn: dbname=fake\ntransport:\n  port: {self.port}\n"
        )

    def env(self, action: str, interval_ms: int | None, timeout_ms: int) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LC_ALL": "C",
            "OCF_ROOT": "/usr/lib/ocf",
            "OCF_RESOURCE_INSTANCE": RESOURCE,
            "OCF_RESKEY_CRM_meta_timeout": str(timeout_ms),
            "OCF_RESKEY_CRM_meta_on_node": self.name,
            "OCF_RESKEY_config": str(self.config),
            "HA_RSCTMP": str(self.root / f"rsctmp-{self.name}"),
            "HODR_AGENT_DAEMON_CMD": f"{sys.executable} {FAKE}",
        }
        if interval_ms is not None:
            env["OCF_RESKEY_CRM_meta_interval"] = str(interval_ms)
        if self.pcmk_dir is not None:
            env["FAKE_PCMK_DIR"] = str(self.pcmk_dir)
        if self.clone:
            env.update({f"OCF_RESKEY_CRM_meta_{k}": v for k, v in CLONE_META.items()})
        env.update(self.extra)
        return env

    def agent(
        self,
        action: str,
        params: Mapping[str, str] | None = None,
        interval_ms: int | None = None,
        timeout_ms: int = 20_000,
        env: Mapping[str, str] | None = None,
    ) -> AgentResult:
        """``ocf/hodr-replica <action>``; monitor defaults to a recurring one, ``interval_ms=0`` probes."""
        if action == "monitor" and interval_ms is None:
            interval_ms = 16_000
        full = self.env(action, interval_ms, timeout_ms)
        full.update({f"OCF_RESKEY_{k}": v for k, v in (params or {}).items()})
        full.update(env or {})
        proc = subprocess.run(
            [str(AGENT), action],
            capture_output=True,
            text=True,
            env=full,
            cwd="/",
            timeout=timeout_ms / 1000 + 10,
        )
        return AgentResult(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, action: str, rc: int = 0, **kwargs: Any) -> AgentResult:
        result = self.agent(action, **kwargs)
        assert result.rc == rc, f"{self.name} {action}: rc {result.rc} != {rc}\n{result.stderr}"
        return result

    def notify(self, type_: str, operation: str, **lists: str) -> AgentResult:
        env = {"OCF_RESKEY_CRM_meta_notify_type": type_, "OCF_RESKEY_CRM_meta_notify_operation": operation}
        for key in ("start", "stop", "active", "promote", "demote", "promoted", "unpromoted"):
            env[f"OCF_RESKEY_CRM_meta_notify_{key}_uname"] = lists.get(key, " ")  # empty list: one space
        return self.ok("notify", env=env)

    def status(self) -> Status | None:
        return read_status(self.run_dir)

    def daemon_pid(self) -> int | None:
        status = self.status()
        return status.pid if status is not None and _alive(status.pid) else None

    def seed(self, **state: Any) -> None:
        """Durable fake-daemon state before its start (positions, primary terms, divergence)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "fake-state.json").write_text(json.dumps(state))

    def fake(self, **request: Any) -> None:
        reply = control_request(self.run_dir, "fake", timeout=5, **request)
        assert reply["result"] == "done", reply

    def requests(self, name: str) -> list[dict[str, Any]]:
        path = self.run_dir / "fake-requests.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [r for r in map(json.loads, lines) if r.get("request") == name]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _tool_shims(bin_dir: Path) -> None:
    """Fake Pacemaker tools, and ``python3`` = this interpreter (as the lab's wrapper does: the
    shim's ``#!/usr/bin/env python3`` must not pay for a pyenv shim on every call)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = bin_dir / "python3"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    for tool in ("crm_attribute", "attrd_updater", "crm_node"):
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {tool} "$@"\n')
        path.chmod(0o755)


def attrs(pcmk_dir: Path) -> dict[str, Any]:
    path = pcmk_dir / "attrs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def score(pcmk_dir: Path, node: str) -> int | None:
    value = attrs(pcmk_dir).get("status", {}).get(node, {}).get(f"master-{RESOURCE}")
    return int(value) if value is not None else None


class Cluster:
    """Nodes sharing one fake attribute store (or none: ``cluster=False``)."""

    def __init__(self, root: Path, cluster: bool) -> None:
        self.root = root
        self.bin_dir = root / "bin"
        self.pcmk_dir = root / "pcmk" if cluster else None
        self.nodes: list[Node] = []
        _tool_shims(self.bin_dir)

    def node(self, name: str, clone: bool = False, **extra: str) -> Node:
        node = Node(name, self.root, self.bin_dir, self.pcmk_dir, clone=clone, extra=dict(extra))
        node.write_config()
        self.nodes.append(node)
        return node

    def close(self) -> None:
        """Kill every fake daemon a test left behind (by the pid it wrote, never by name)."""
        for node in self.nodes:
            for pid in {node.daemon_pid(), _pid_file(node)} - {None}:
                assert pid is not None
                if _alive(pid) and FAKE.name in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                    errors="replace"
                ):
                    os.kill(pid, signal.SIGKILL)


def _pid_file(node: Node) -> int | None:
    try:
        return int((node.run_dir / "hodr.pid").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[Node]:
    """One node outside any cluster (attribute tools answer "not connected"), like ocf-tester."""
    cluster = Cluster(tmp_path, cluster=False)
    yield cluster.node("node1")
    cluster.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Nodes of a clone with notify=true, sharing a fake attribute store."""
    made = Cluster(tmp_path, cluster=True)
    yield made
    made.close()


# ------------------------------------------------------------------------------- meta-data


def test_meta_data_as_nobody_against_dtd_and_rng() -> None:
    proc = (
        subprocess.run(
            ["su", "nobody", "-s", "/bin/sh", "-c", f"{AGENT} meta-data"],
            capture_output=True,
            text=True,
            cwd="/",
        )
        if os.geteuid() == 0
        else subprocess.run([str(AGENT), "meta-data"], capture_output=True, text=True)
    )
    assert proc.returncode == 0, proc.stderr
    xml = proc.stdout
    assert xml.splitlines()[1] == '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">'
    if shutil.which("xmllint"):
        dtd = xmllint_dtd(xml)
        assert dtd.returncode == 0, dtd.stderr
        if RNG.exists():
            rng = xmllint_rng(xml)
            assert rng.returncode == 0, rng.stderr
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml.split("\n", 2)[2])
    assert {p.get("name") for p in root.iter("parameter")} == {
        "config",
        "require_sync",
        "max_lag",
        "db_down_timeout",
        "degraded_after",
        "primary_port",
    }
    monitors = {(a.get("interval"), a.get("role")) for a in root.iter("action") if a.get("name") == "monitor"}
    assert monitors == {("15s", "Promoted"), ("16s", "Unpromoted")}
    names = {a.get("name") for a in root.iter("action")}
    assert {"start", "stop", "promote", "demote", "notify", "validate-all", "meta-data"} <= names
    assert "reload-agent" not in names


# ---------------------------------------------------------------------------- validate-all


def test_validate_all_codes(lone: Node) -> None:
    assert lone.agent("validate-all").rc == 0
    missing = lone.agent("validate-all", env={"OCF_RESKEY_config": ""})
    assert missing.rc == 6 and "config is required" in missing.reasons[0]
    assert lone.agent("validate-all", {"config": "relative.yml"}).rc == 6
    assert lone.agent("validate-all", {"require_sync": "maybe"}).rc == 6
    assert lone.agent("validate-all", {"max_lag": "-5"}).rc == 6
    assert lone.agent("validate-all", {"primary_port": "70000"}).rc == 6
    assert lone.agent("validate-all", {"db_down_timeout": "soon"}).rc == 6
    assert lone.agent("validate-all", {"degraded_after": "-1"}).rc == 6
    deep = {"OCF_CHECK_LEVEL": "10"}
    assert lone.agent("validate-all", env=deep).rc == 0
    # level 0 does not look at this node: pcs validates on whatever node it runs on
    assert lone.agent("validate-all", {"config": "/nonexistent/hodr.yml"}).rc == 0
    gone = lone.agent("validate-all", {"config": "/nonexistent/hodr.yml"}, env=deep)
    assert gone.rc == 2 and "/nonexistent/hodr.yml" in gone.reasons[0]
    bad = lone.root / "bad.yml"
    bad.write_text("node: [unclosed\n")
    assert lone.agent("validate-all", {"config": str(bad)}, env=deep).rc == 2
    no_hodr = lone.agent("validate-all", env={**deep, "HODR_AGENT_DAEMON_CMD": "/nonexistent/bin/hodr"})
    assert no_hodr.rc == 5 and "not installed" in no_hodr.reasons[0]
    wrong_node = lone.agent("validate-all", env={**deep, "OCF_RESKEY_CRM_meta_on_node": "elsewhere"})
    assert wrong_node.rc == 2 and "elsewhere" in wrong_node.reasons[0]


# ------------------------------------------------------------------------ stopped instance


def test_stopped_resource_and_unusable_config(lone: Node) -> None:
    lone.ok("monitor", 7)
    lone.ok("monitor", 7, interval_ms=0)
    lone.ok("stop")
    missing = {"config": str(lone.root / "absent.yml")}
    lone.ok("monitor", 7, params=missing, interval_ms=0)  # a probe never fails hard
    assert lone.agent("monitor", missing).rc == 1  # recurring: soft, never 6
    lone.ok("stop", params=missing)
    assert lone.agent("start", missing).rc == 2  # node-local: banned from this node only


def test_unknown_action(lone: Node) -> None:
    for action in ("reload", "migrate_to", "bogus"):
        result = lone.agent(action)
        assert result.rc == 3 and result.reasons


# --------------------------------------------------------------------------- the life cycle


def test_start_promote_demote_stop(lone: Node) -> None:
    lone.ok("start")
    pid = lone.daemon_pid()
    assert pid is not None and lone.status().role == "standby"  # type: ignore[union-attr]
    lone.ok("start")  # started already: success, same daemon
    assert lone.daemon_pid() == pid
    lone.ok("monitor", 0)
    lone.ok("monitor", 0, interval_ms=0)
    lone.ok("promote")  # outside a cluster and any transition: a lone instance may
    lone.ok("promote")
    lone.ok("monitor", 8, interval_ms=15_000)
    lone.ok("monitor", 8, interval_ms=0)
    [promote] = lone.requests("promote")
    assert promote["epoch"] == 2 and promote["require_sync"] is False
    assert 0 < promote["deadline_s"] < 20
    assert (lone.run_dir / "agent-role").read_text().split() == ["primary", "2"]
    lone.ok("demote")
    lone.ok("demote")
    lone.ok("monitor", 0)
    assert len(lone.requests("demote")) == 1
    lone.ok("stop")
    assert not _alive(pid) and lone.status().role == "stopped"  # type: ignore[union-attr]
    assert not (lone.run_dir / "hodr.pid").exists()
    lone.ok("stop")
    lone.ok("monitor", 7)
    lone.ok("monitor", 7, interval_ms=0)


def test_demote_of_a_stopped_instance_starts_a_standby(lone: Node) -> None:
    lone.ok("demote")
    lone.ok("monitor", 0)
    lone.ok("stop")


def test_notify_always_succeeds(lone: Node) -> None:
    """Every type and operation → 0: stopped, running, without notify variables, with bad parameters."""
    lone.notify("pre", "promote", promote="node1")  # stopped: nothing to publish
    lone.notify("post", "promote", promote="node2")
    lone.ok("start")
    for type_ in NOTIFY_TYPES:
        for operation in NOTIFY_OPERATIONS:  # no cluster here: attribute writes fail, notify does not
            lone.notify(type_, operation, active="node1", promote="node2", promoted="node2")
    assert lone.agent("notify").rc == 0  # no notify variables at all (ocf-tester)
    assert lone.agent("notify", {"config": "relative.yml"}).rc == 0  # invalid parameters too
    lone.ok("stop")


# ----------------------------------------------------------------------- crashed instances


def test_crashed_primary(lone: Node) -> None:
    lone.ok("start")
    lone.ok("promote")
    pid = lone.daemon_pid()
    lone.fake(crash=True)
    wait_for(lambda: not _alive(pid), 10, "the fake daemon to crash")  # type: ignore[arg-type]
    crashed = lone.agent("monitor", interval_ms=15_000)
    assert crashed.rc == 9 and "died" in crashed.reasons[0]
    assert lone.agent("monitor", interval_ms=0).rc == 9  # a probe reports the failed primary too
    lone.ok("stop")
    assert (lone.run_dir / "status.last.json").exists()  # the post-mortem is kept
    lone.ok("monitor", 7)
    lone.ok("monitor", 7, interval_ms=0)


def test_crashed_primary_ahead_of_its_standbys_holds_them(cluster: Cluster) -> None:
    """Pacemaker restarts it in place rather than promote a standby that misses its last commits."""
    assert cluster.pcmk_dir is not None
    node1 = cluster.node("node1", clone=True)
    node1.seed(durable="1:0/3000")
    node1.ok("start")
    node1.ok("promote")
    peer = {"acked_seq": 0, "required": True, "lag_bytes": 0}
    node1.fake(
        set={
            "peers": [
                {"name": "node2", "connected": True, "acked": "1:0/2000", **peer},
                {"name": "node3", "connected": True, "acked": "1:0/1000", **peer},
            ]
        }
    )
    wait_for(lambda: len(node1.status().peers) == 2, 5, "peers in the snapshot")  # type: ignore[union-attr]
    node1.ok("monitor", 8, interval_ms=15_000)
    assert (score(cluster.pcmk_dir, "node2"), score(cluster.pcmk_dir, "node3")) == (1000, 990)
    pid = node1.daemon_pid()
    node1.fake(crash=True)
    wait_for(lambda: not _alive(pid), 10, "the fake daemon to crash")  # type: ignore[arg-type]
    assert node1.agent("monitor", interval_ms=15_000).rc == 9
    assert [score(cluster.pcmk_dir, n) for n in ("node1", "node2", "node3")] == [1001, -1, -1]
    node1.ok("stop")
    assert score(cluster.pcmk_dir, "node1") == 1001  # kept for the restart in place
    claim = attrs(cluster.pcmk_dir)["private"]["hodr-hodr-pos"]["node1"]
    assert claim.startswith("failed 2 1:0/3000 ")  # standbys do not score themselves back up
    node1.ok("stop")  # a second stop keeps the fresh claim
    assert attrs(cluster.pcmk_dir)["private"]["hodr-hodr-pos"]["node1"] == claim
    node1.ok("start")  # back as a standby: the claim is replaced
    assert attrs(cluster.pcmk_dir)["private"]["hodr-hodr-pos"]["node1"].startswith("standby 2 1:0/3000 ")
    node1.ok("stop")


def test_database_down_fails_the_instance_after_db_down_timeout(lone: Node) -> None:
    """The daemon runs but cannot use its database: after db_down_timeout (10 s) monitor says
    failed (9 primary, 1 standby) with the daemon's reason; a shorter outage (a restart, an
    overload) is not a failure, and db_down_timeout=0 never fails on it."""
    lone.ok("start")
    lone.ok("promote")
    refused = "source SQL connection lost: connection refused"
    lone.fake(set={"db_down_s": 4.0, "error": refused})
    wait_for(lambda: lone.status().db_down_s == 4.0, 5, "the outage in the snapshot")  # type: ignore[union-attr]
    lone.ok("monitor", 8)
    lone.fake(set={"db_down_s": 12.0})
    wait_for(lambda: lone.status().db_down_s == 12.0, 5, "the longer outage in the snapshot")  # type: ignore[union-attr]
    failed = lone.agent("monitor")
    assert failed.rc == 9, failed.stderr
    assert f"the database is unusable for 12s: {refused}" in failed.stderr
    lone.ok("monitor", 8, params={"db_down_timeout": "0"})
    lone.ok("demote", params={"db_down_timeout": "0"})  # the daemon's demote (the fake's works)
    assert len(lone.requests("demote")) == 1
    lone.ok("monitor", 1)
    lone.ok("monitor", 0, params={"db_down_timeout": "20"})
    lone.fake(set={"db_down_s": 0.0, "error": ""})
    wait_for(lambda: lone.status().db_down_s == 0.0, 5, "the database back")  # type: ignore[union-attr]
    lone.ok("monitor", 0)
    # Pacemaker's recovery of the failed primary: demote cannot go through a daemon without its
    # database (it would retry until its timeout): it is cleaned up as a crashed primary
    lone.ok("promote")
    lone.fake(set={"db_down_s": 12.0, "error": refused})
    wait_for(lambda: lone.status().db_down_s == 12.0, 5, "the outage again")  # type: ignore[union-attr]
    pid = lone.daemon_pid()
    cleaned = lone.ok("demote")
    assert "cleaning up as a crashed primary" in cleaned.stderr
    assert len(lone.requests("demote")) == 1 and not _alive(pid)  # type: ignore[arg-type]
    lone.ok("stop")
    lone.ok("monitor", 7)


def test_crashed_standby(lone: Node) -> None:
    lone.ok("start")
    pid = lone.daemon_pid()
    lone.fake(crash=True)
    wait_for(lambda: not _alive(pid), 10, "the fake daemon to crash")  # type: ignore[arg-type]
    assert lone.agent("monitor").rc == 1
    lone.ok("monitor", 7, interval_ms=0)  # nothing runs: a probe says stopped
    lone.ok("stop")
    lone.ok("monitor", 7)


@pytest.mark.parametrize(("promoted", "rc"), [(False, 1), (True, 9)])
def test_hung_daemon(lone: Node, promoted: bool, rc: int) -> None:
    lone.ok("start")
    if promoted:
        lone.ok("promote")
    pid = lone.daemon_pid()
    lone.fake(hang=True, backdate=30)
    hung = lone.agent("monitor", interval_ms=15_000, timeout_ms=5_000)
    assert hung.rc == rc and "hung" in hung.reasons[0]
    assert lone.agent("monitor", interval_ms=0, timeout_ms=5_000).rc == rc  # something runs: not 7
    started = time.monotonic()
    lone.ok("stop", timeout_ms=6_000)  # no answer, SIGTERM ignored: SIGKILL before the deadline
    assert time.monotonic() - started < 6
    assert not _alive(pid)  # type: ignore[arg-type]
    lone.ok("monitor", 7)


def test_start_failure_gives_the_daemons_reason(lone: Node) -> None:
    lone.seed(exit_on_start="target database unreachable: connection refused")
    failed = lone.agent("start")
    assert failed.rc == 1 and "target database unreachable" in failed.reasons[0]
    lone.ok("monitor", 7)
    lone.ok("stop")


def test_stop_when_the_config_vanished(lone: Node) -> None:
    lone.ok("start")
    pid = lone.daemon_pid()
    lone.config.unlink()
    lone.ok("stop")  # the cached run_dir still finds the daemon: never left running
    assert not _alive(pid)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ rejoin guard


def test_rejoin_guard_refuses_a_diverged_old_primary(cluster: Cluster) -> None:
    node = cluster.node("node1", clone=True)
    node.seed(epoch=3, durable="3:0/5000", primary_epochs=[{"epoch": 3, "last": "3:0/5000"}], diverged=True)
    assert cluster.pcmk_dir is not None
    (cluster.pcmk_dir).mkdir(parents=True, exist_ok=True)
    (cluster.pcmk_dir / "attrs.json").write_text(
        json.dumps({"status": {}, "private": {}, "crm_config": {"hodr-hodr-epoch": "4@3:0/4000"}})
    )
    refused = node.agent("start")
    assert refused.rc == 1 and "rejoin guard" in refused.reasons[0] and "epoch 4" in refused.reasons[0]
    assert node.daemon_pid() is None
    assert score(cluster.pcmk_dir, "node1") == -1000
    node.ok("monitor", 7, interval_ms=0)
    node.ok("stop")


def test_rejoin_guard_lets_the_last_primary_and_a_contained_history_rejoin(cluster: Cluster) -> None:
    assert cluster.pcmk_dir is not None
    cluster.pcmk_dir.mkdir(parents=True, exist_ok=True)
    (cluster.pcmk_dir / "attrs.json").write_text(
        json.dumps({"status": {}, "private": {}, "crm_config": {"hodr-hodr-epoch": "4@3:0/6000"}})
    )
    contained = cluster.node("node1", clone=True)  # its last position 3:0/5000 <= fork 3:0/6000
    contained.seed(
        epoch=3, durable="3:0/5000", primary_epochs=[{"epoch": 3, "last": "3:0/5000"}], diverged=True
    )
    contained.ok("start")
    latest = cluster.node("node2", clone=True)  # primary in epoch 4 = the cluster's epoch
    latest.seed(epoch=4, durable="4:0/100", primary_epochs=[{"epoch": 4, "last": "4:0/100"}], diverged=True)
    latest.ok("start")
    for node in (contained, latest):
        node.ok("stop")


def test_start_refuses_a_daemon_without_guard_facts(lone: Node) -> None:
    lone.seed(report_guard_facts=False)
    refused = lone.agent("start")
    assert refused.rc == 1 and "primary_epochs" in refused.reasons[0]
    assert lone.daemon_pid() is None


# ---------------------------------------------------------------------------------- promote


def test_require_sync_refusal(cluster: Cluster) -> None:
    assert cluster.pcmk_dir is not None
    cluster.pcmk_dir.mkdir(parents=True, exist_ok=True)
    (cluster.pcmk_dir / "attrs.json").write_text(  # a primary existed: epoch 2 was promoted
        json.dumps({"status": {}, "private": {}, "crm_config": {"hodr-hodr-epoch": "2@1:0/100"}})
    )
    node = cluster.node("node1", clone=True)
    node.seed(in_sync=False)
    node.ok("start")
    refused = node.agent("promote", {"require_sync": "true"})
    assert refused.rc == 1 and "not in sync" in refused.reasons[0]
    node.ok("monitor", 0)
    assert node.requests("promote")[-1]["require_sync"] is True
    node.ok("promote")  # the same standby without require_sync
    node.ok("monitor", 8)
    node.ok("stop")


def test_require_sync_does_not_block_the_latest_primary_coming_back(cluster: Cluster) -> None:
    """Nobody was promoted after this node's own term: it holds everything it published."""
    assert cluster.pcmk_dir is not None
    cluster.pcmk_dir.mkdir(parents=True, exist_ok=True)
    (cluster.pcmk_dir / "attrs.json").write_text(
        json.dumps({"status": {}, "private": {}, "crm_config": {"hodr-hodr-epoch": "2@1:0/100"}})
    )
    node = cluster.node("node1", clone=True)
    node.seed(in_sync=False, epoch=2, durable="2:0/5000", primary_epochs=[{"epoch": 2, "last": "2:0/5000"}])
    node.ok("start")
    node.ok("promote", params={"require_sync": "true"})
    assert node.requests("promote")[-1]["require_sync"] is False
    node.ok("stop")


def test_require_sync_does_not_block_a_brand_new_cluster(lone: Node) -> None:
    """No promotion was ever recorded: there was no primary to be out of sync with (lab: with
    require_sync the first primary was never chosen)."""
    lone.seed(in_sync=False)
    lone.ok("start")
    lone.ok("promote", params={"require_sync": "true"})
    assert lone.requests("promote")[-1]["require_sync"] is False
    lone.ok("stop")


def test_a_standby_that_missed_post_promote_follows_the_published_primary(cluster: Cluster) -> None:
    """Pacemaker may discard a notification (the DC integrating a joining node): the standby's
    next monitor sees it is disconnected while another node publishes itself primary in a newer
    epoch, and follows that node — once, not on every monitor."""
    assert cluster.pcmk_dir is not None
    node1, node2 = cluster.node("node1", clone=True), cluster.node("node2", clone=True)
    node1.seed(durable="1:0/1000", applied="1:0/1000")
    node2.seed(durable="1:0/1000", applied="1:0/1000")
    node1.ok("start")
    node2.ok("start")
    for node in (node1, node2):
        node.notify("pre", "promote", active="node1 node2", unpromoted="node1 node2", promote="node2")
    node2.ok("promote")
    node2.ok("monitor", 8, interval_ms=15_000)  # publishes "primary 2 ..."
    # node1's post-promote notification never arrives; it is not connected to anyone
    node1.fake(set={"primary_connected": False, "epoch": 2})
    wait_for(lambda: node1.status().epoch == 2, 5, "node1 at epoch 2")  # type: ignore[union-attr]
    node1.ok("monitor", 0)  # a primary of its own epoch: the one it follows, or a stale value
    assert node1.requests("follow") == []
    node1.fake(set={"epoch": 1})
    wait_for(lambda: node1.status().epoch == 1, 5, "node1 at epoch 1")  # type: ignore[union-attr]
    assert node1.status().extra["following"] == {}  # type: ignore[union-attr]
    node1.ok("monitor", 0)
    wait_for(
        lambda: node1.status().extra["following"] == {"host": "node2", "port": 5440},  # type: ignore[union-attr]
        5,
        "node1 following node2",
    )
    node1.ok("monitor", 0)
    assert len(node1.requests("follow")) == 1
    for node in (node1, node2):
        node.ok("stop")


def test_election_moves_promotion_to_the_most_advanced_node(cluster: Cluster) -> None:
    assert cluster.pcmk_dir is not None
    node1, node2 = cluster.node("node1", clone=True), cluster.node("node2", clone=True)
    node1.seed(durable="1:0/1000", applied="1:0/1000")
    node2.seed(durable="1:0/2000", applied="1:0/1800")
    node1.ok("start")
    node2.ok("start")
    for node in (node1, node2):  # the transition Pacemaker planned: promote node1
        node.notify("pre", "promote", active="node1 node2", unpromoted="node1 node2", promote="node1")
    refused = node1.agent("promote")
    assert refused.rc == 1 and "node2 is ahead" in refused.reasons[0]
    assert (score(cluster.pcmk_dir, "node1"), score(cluster.pcmk_dir, "node2")) == (1, 1000)
    node1.ok("monitor", 0)
    assert node1.requests("promote") == []
    node2.notify("post", "promote", active="node1 node2", promote="node1")  # sent after a failure too
    assert node2.status().extra["following"] == {}  # type: ignore[union-attr]
    for node in (node1, node2):  # Pacemaker re-plans: promote node2
        node.notify("pre", "promote", active="node1 node2", unpromoted="node1 node2", promote="node2")
    node2.ok("promote")
    node2.ok("monitor", 8, interval_ms=15_000)
    assert node2.requests("promote")[-1]["epoch"] == 2
    assert attrs(cluster.pcmk_dir)["crm_config"]["hodr-hodr-epoch"] == "2@1:0/2000"
    for node in (node1, node2):
        node.notify("post", "promote", active="node1 node2", unpromoted="node1", promote="node2")
    assert node1.status().extra["following"] == {"host": "node2", "port": 5440}  # type: ignore[union-attr]
    assert score(cluster.pcmk_dir, "node2") == 1001
    elect = attrs(cluster.pcmk_dir)["private"].get("hodr-hodr-elect", {})
    assert not any(elect.values())  # the election's values are cleared
    for node in (node1, node2):
        node.ok("stop")
    assert score(cluster.pcmk_dir, "node2") == 1001  # kept: its data did not go anywhere
    assert not any(attrs(cluster.pcmk_dir)["private"]["hodr-hodr-pos"].values())


def test_election_excludes_a_silent_voter(cluster: Cluster) -> None:
    node1, node2 = cluster.node("node1", clone=True), cluster.node("node2", clone=True)
    node1.ok("start")
    node2.ok("start")
    node1.notify("pre", "promote", active="node1 node2", promote="node1")  # node2's never arrives
    result = node1.ok("promote", timeout_ms=8_000)  # waits a quarter of its time for node2, then goes on
    assert "node2" in result.stderr and "excluded" in result.stderr
    node1.ok("monitor", 8)
    for node in (node1, node2):
        node.ok("stop")


def test_promote_outside_a_transition_with_other_instances(cluster: Cluster) -> None:
    node1, node2 = cluster.node("node1", clone=True), cluster.node("node2", clone=True)
    node1.ok("start")
    node2.ok("start")
    refused = node1.agent("promote")  # crm_resource --force-promote / debug-promote: no notify data
    assert refused.rc == 1 and "outside a notified transition" in refused.reasons[0]
    assert "node2" in refused.reasons[0]
    node2.ok("stop")
    node1.ok("promote")  # alone now
    node1.ok("stop")


def test_promote_outside_a_transition_while_connected_to_a_primary(lone: Node) -> None:
    lone.seed(primary_connected=True)
    lone.ok("start")
    refused = lone.agent("promote")
    assert refused.rc == 1 and "connected to a running primary" in refused.reasons[0]
    lone.ok("stop")


# ----------------------------------------------------------------------------------- scores


def test_primary_scores_its_standbys(cluster: Cluster) -> None:
    assert cluster.pcmk_dir is not None
    node1 = cluster.node("node1", clone=True, OCF_RESKEY_max_lag="1000000")
    node1.ok("start")
    node1.ok("promote")
    peer = {"acked_seq": 0, "required": True}
    node1.fake(
        set={
            "peers": [
                {"name": "node2", "connected": True, "acked": "2:0/900", "lag_bytes": 100, **peer},
                {"name": "node3", "connected": True, "acked": "2:0/800", "lag_bytes": 200, **peer},
                {"name": "node4", "connected": False, "acked": "2:0/900", "lag_bytes": 100, **peer},
                {"name": "node5", "connected": True, "acked": "2:0/100", "lag_bytes": 2_000_000, **peer},
            ]
        }
    )
    wait_for(lambda: len(node1.status().peers) == 4, 5, "peers in the snapshot")  # type: ignore[union-attr]
    degraded = node1.ok("monitor", 191, interval_ms=15_000)  # node5 is no longer a candidate
    assert degraded.reasons == ["replication degraded: standby node5 2000000 bytes behind (max_lag 1000000)"]
    got = {n: score(cluster.pcmk_dir, n) for n in ("node1", "node2", "node3", "node4", "node5")}
    assert got == {"node1": 1001, "node2": 1000, "node3": 990, "node4": -1000, "node5": -1000}
    node1.ok("stop")


def test_degraded_replication_is_reported_after_degraded_after(cluster: Cluster) -> None:
    """191 on the primary / 190 on a standby with the reason (pcs status shows it; Pacemaker
    moves nothing): a standby missing for degraded_after (60 s) or detached; a standby that has
    not received from a published primary for as long.  A shorter gap (a switchover, a
    reconnect), a probe, a lone standby without any primary, or degraded_after=0: not degraded."""
    assert cluster.pcmk_dir is not None
    node1, node2 = cluster.node("node1", clone=True), cluster.node("node2", clone=True)
    node1.ok("start")
    node1.ok("promote")
    peer = {"acked_seq": 0, "required": True, "acked": "2:0/900", "lag_bytes": 0}

    def peers(**node3: Any) -> None:
        node1.fake(
            set={"peers": [{"name": "node2", "connected": True, **peer}, {"name": "node3", **peer, **node3}]}
        )
        wait_for(lambda: node1.status().peers[1].down_s == node3.get("down_s", 0.0), 5, "the snapshot")  # type: ignore[union-attr]

    peers(connected=False, down_s=30.0)
    node1.ok("monitor", 8, interval_ms=15_000)
    peers(connected=False, down_s=61.0)
    degraded = node1.ok("monitor", 191, interval_ms=15_000)
    assert degraded.reasons == ["replication degraded: standby node3 disconnected for 61s"]
    node1.ok("monitor", 8, interval_ms=0)  # a probe only tells the role
    node1.ok("monitor", 8, interval_ms=15_000, params={"degraded_after": "0"})
    node1.ok("monitor", 191, interval_ms=15_000, params={"degraded_after": "61"})
    node1.ok("monitor", 8, interval_ms=15_000, params={"degraded_after": "62"})
    peers(connected=False, down_s=1.0, detached="over transport.max_lag_mb")
    detached = node1.ok("monitor", 191, interval_ms=15_000)
    assert detached.reasons == ["replication degraded: standby node3 detached (over transport.max_lag_mb)"]

    node2.ok("start")
    node2.fake(set={"primary_connected": False, "primary_down_s": 61.0})
    wait_for(lambda: node2.status().primary_down_s == 61.0, 5, "the snapshot")  # type: ignore[union-attr]
    epoch = node2.status().epoch  # type: ignore[union-attr]
    data = attrs(cluster.pcmk_dir)
    data["private"]["hodr-hodr-pos"] = {}  # no primary publishes: nothing to miss
    (cluster.pcmk_dir / "attrs.json").write_text(json.dumps(data))
    node2.ok("monitor", 0)
    data["private"]["hodr-hodr-pos"] = {"node1": f"primary {epoch} {epoch}:0/900 0:0/0 0 {int(time.time())}"}
    (cluster.pcmk_dir / "attrs.json").write_text(json.dumps(data))
    missing = node2.ok("monitor", 190)
    assert missing.reasons == ["replication degraded: not receiving from the primary node1 for 61s"]
    node2.ok("monitor", 0, interval_ms=0)
    node2.ok("monitor", 0, params={"degraded_after": "0"})
    node2.fake(set={"primary_connected": True, "primary_down_s": 0.0})
    wait_for(lambda: node2.status().primary_connected, 5, "the snapshot")  # type: ignore[union-attr]
    node2.ok("monitor", 0)
    node1.ok("stop")
    node2.ok("stop")


def test_standbys_score_themselves_without_a_primary(cluster: Cluster) -> None:
    assert cluster.pcmk_dir is not None
    node1, node2 = cluster.node("node1", clone=True), cluster.node("node2", clone=True)
    node1.seed(durable="3:0/100")
    node2.seed(durable="3:0/900")
    node1.ok("start")
    node2.ok("start")
    for node in (node1, node2):  # probes after a whole-cluster restart rebuild the scores
        node.ok("monitor", 0, interval_ms=0)
    assert (score(cluster.pcmk_dir, "node1"), score(cluster.pcmk_dir, "node2")) == (990, 1000)
    for node in (node1, node2):
        node.ok("stop")


# ------------------------------------------------------------------------------- clone meta


def test_clone_meta_is_checked_in_start_and_monitor(cluster: Cluster) -> None:
    node = cluster.node("node1", clone=True, OCF_RESKEY_CRM_meta_notify="false")
    bad = node.agent("start")
    assert bad.rc == 6 and "notify=true" in bad.reasons[0]
    assert node.agent("validate-all").rc == 0  # pcs validates without clone meta: not checked there
    assert node.agent("monitor").rc == 6
    node.ok("monitor", 7, interval_ms=0)  # never 6 from a probe


# ------------------------------------------------------------------------------------- cost


def test_monitor_stays_cheap(cluster: Cluster) -> None:
    """A healthy standby's monitor loads neither PyYAML nor subprocess; report its cold start."""
    lone = cluster.node("node1", clone=True)
    lone.seed(primary_connected=True)
    lone.ok("start")
    lone.ok("monitor")  # fills the config cache and the position cache
    env = lone.env("monitor", 16_000, 20_000)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(AGENT), "monitor"],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not {"yaml", "hodr.config", "subprocess"} & imported
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(AGENT), "monitor"], env=env, cwd="/", capture_output=True, check=False
        )
        times.append(time.perf_counter() - started)
    print(f"\nTIMING hodr-replica monitor cold start: best {min(times) * 1000:.0f} ms of 5")
    lone.ok("stop")


# ------------------------------------------------------------------------------- ocf-tester


@pytest.mark.skipif(shutil.which("ocf-tester") is None, reason="ocf-tester not installed")
def test_ocf_tester(lone: Node) -> None:
    env = {k: v for k, v in lone.env("monitor", None, 20_000).items() if not k.startswith("OCF_RESKEY")}
    proc = subprocess.run(
        ["ocf-tester", "-n", "hodr-tst", "-o", f"config={lone.config}", str(AGENT)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed all tests" in proc.stdout
    assert lone.daemon_pid() is None

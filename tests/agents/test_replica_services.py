"""hodr-replica with ``services:``: the node's database services around the daemon's role changes.

Every service is ``svc.sh ACTION NAME``: it appends ``ACTION NAME ROLE`` to ``services.log``, where
ROLE is the fake daemon's role in its status file at that moment (``none`` without one), and
creates or removes the marker its ``ready`` check tests. So one log line says both the order of
the services and where the daemon stood when each ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.test_replica_agent import Cluster, Node, _alive

SCRIPT = """#!/bin/sh
# svc.sh start|stop NAME: log the step with the daemon's current role, flip the ready marker
role=$(sed -n 's/.*"role": *"\\([a-z]*\\)".*/\\1/p' "{run_dir}/status.json" 2>/dev/null)
echo "$1 $2 ${{role:-none}}" >> "{root}/services.log"
case "$1" in
  start) touch "{root}/$2.up" ;;
  stop) rm -f "{root}/$2.up" ;;
esac
"""


def service(root: Path, name: str, when: str, **override: str) -> str:
    """One ``services:`` entry (YAML) for ``svc.sh``."""
    commands = {
        "start": f"{root}/svc.sh start {name}",
        "stop": f"{root}/svc.sh stop {name}",
        "ready": f"test -f {root}/{name}.up",
    }
    commands.update(override)
    lines = [f"  - name: {name}", f"    when: {when}", "    timeout_s: 3"]
    lines += [f"    {key}: '{value}'" for key, value in commands.items()]
    return "\n".join(lines) + "\n"


def with_services(node: Node, *entries: str) -> None:
    script = node.root / "svc.sh"
    script.write_text(SCRIPT.format(run_dir=node.run_dir, root=node.root))
    script.chmod(0o755)
    node.write_config()
    with node.config.open("a") as fh:
        fh.write("services:\n" + "".join(entries))


def log(node: Node) -> list[str]:
    path = node.root / "services.log"
    return path.read_text().splitlines() if path.exists() else []


def up(node: Node) -> set[str]:
    return {p.name.removesuffix(".up") for p in node.root.glob("*.up")}


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[Node]:
    """One node outside any cluster, with a database, a pooler and an application."""
    cluster = Cluster(tmp_path, cluster=False)
    node = cluster.node("node1")
    root = node.root
    with_services(
        node, service(root, "db", "always"), service(root, "pool", "primary"), service(root, "app", "primary")
    )
    yield node
    cluster.close()


def test_life_cycle_orders_services_around_the_daemon(lone: Node) -> None:
    lone.ok("start")
    assert log(lone) == ["start db none"]  # before the daemon was spawned
    assert lone.status().role == "standby"  # type: ignore[union-attr]
    lone.ok("start")  # idempotent: db is ready, not started again
    lone.ok("monitor", 0)
    assert log(lone) == ["start db none"]
    lone.ok("promote")
    assert log(lone)[1:] == ["start pool primary", "start app primary"]  # after the daemon is primary
    [promote] = lone.requests("promote")  # the drain leaves the two services' 2 x 3 s
    assert 0 < promote["deadline_s"] <= 20 - 3 - 2 - 6
    lone.ok("promote")  # already primary: services ready, nothing runs again
    assert len(log(lone)) == 3
    lone.ok("monitor", 8)
    lone.ok("demote")
    assert log(lone)[3:] == ["stop app primary", "stop pool primary"]  # before the daemon demoted
    assert lone.status().role == "standby"  # type: ignore[union-attr]
    assert up(lone) == {"db"}
    lone.ok("promote")
    assert log(lone)[5:] == ["start pool primary", "start app primary"]
    pid = lone.daemon_pid()
    lone.ok("stop")  # applications, then the daemon, then the database
    assert log(lone)[7:] == ["stop app primary", "stop pool primary", "stop db stopped"]
    assert pid is not None and not _alive(pid)
    assert up(lone) == set()
    lone.ok("monitor", 7)


def test_failing_primary_service_fails_promote_with_its_reason(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, cluster=False)
    node = cluster.node("node1")
    root = node.root
    try:
        with_services(
            node,
            service(root, "db", "always"),
            service(root, "pool", "primary"),
            service(root, "app", "primary", start=f"{root}/svc.sh start app; echo app: port busy; exit 4"),
            service(root, "web", "primary"),
        )
        node.ok("start")
        failed = node.agent("promote")
        assert failed.rc == 1
        assert failed.reasons == [
            f"service app: start failed with status 4 (start: {root}/svc.sh start app; echo app: port busy; "
            "exit 4): app: port busy"
        ]
        assert log(node) == ["start db none", "start pool primary", "start app primary"]  # web never started
        node.ok("monitor", 8)  # the daemon is primary: Pacemaker demotes next
        node.ok("demote")
        assert log(node)[3:] == ["stop web primary", "stop app primary", "stop pool primary"]
        node.ok("stop")
        assert log(node)[6:] == [
            "stop web standby",
            "stop app standby",
            "stop pool standby",
            "stop db stopped",
        ]
    finally:
        cluster.close()


def test_not_ready_service_fails_start_before_the_daemon(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, cluster=False)
    node = cluster.node("node1")
    root = node.root
    try:
        with_services(node, service(root, "db", "always", ready="echo db: no response; false"))
        failed = node.agent("start")
        assert failed.rc == 1
        assert failed.reasons[0].startswith(
            "service db: not ready after 3s (ready: echo db: no response; false)"
        )
        assert failed.reasons[0].endswith(": db: no response")
        assert node.daemon_pid() is None and not (node.run_dir / "hodr.pid").exists()
        node.ok("stop")
        assert log(node) == ["start db none", "stop db none"]
    finally:
        cluster.close()


def test_stop_fails_only_when_a_service_survives(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, cluster=False)
    node = cluster.node("node1")
    root = node.root
    try:
        with_services(node, service(root, "db", "always", stop="echo cannot stop; exit 1"))
        node.ok("start")
        survived = node.agent("stop")
        assert (
            survived.rc == 1
            and "service db: stop failed with status 1 and it is still ready" in survived.reasons[0]
        )
        assert node.daemon_pid() is None  # the daemon stopped first all the same
        (root / "db.up").unlink()  # down now (a stop that fails on a stopped database: pg_ctl)
        node.ok("stop")
    finally:
        cluster.close()


def test_stop_finds_the_services_when_the_config_vanished(lone: Node) -> None:
    lone.ok("start")
    lone.config.unlink()
    lone.ok("stop")  # the cached settings carry the services
    assert log(lone) == ["start db none", "stop app standby", "stop pool standby", "stop db stopped"]
    assert up(lone) == set()

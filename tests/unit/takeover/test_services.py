"""The service runner (hodr.takeover.services) and the ``services:`` config section.

The services are tiny shell commands writing to files in ``tmp_path``: what ran, in which order,
and whether a process a timed-out step left behind is really gone (by its pid).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from hodr.cli import main as cli_main
from hodr.config import ServiceConfig, validate
from hodr.takeover.daemonctl import pid_alive
from hodr.takeover.ocf import Deadline
from hodr.takeover.services import (
    ALWAYS,
    PRIMARY,
    Service,
    ServiceError,
    ServiceRunner,
    command_env,
    reserve,
    select,
    stop_order,
)
from tests.conftest import wait_for

LOG = logging.getLogger("test-services")


def deadline(seconds: float) -> Deadline:
    return Deadline(time.monotonic() + seconds)


def runner(tmp_path: Path) -> ServiceRunner:
    return ServiceRunner(tmp_path / "run" / "services.out", LOG, poll_s=0.05)


def svc(tmp_path: Path, name: str, timeout_s: float = 10.0, when: str = ALWAYS, **override: str) -> Service:
    """A service that logs ``start NAME``/``stop NAME`` and is ready while its marker exists."""
    log, marker = tmp_path / "order.log", tmp_path / f"{name}.up"
    commands = {
        "start": f"echo start {name} >> {log} && touch {marker}",
        "stop": f"echo stop {name} >> {log} && rm -f {marker}",
        "ready": f"test -f {marker}",
    }
    commands.update(override)
    return Service(name, timeout_s=timeout_s, when=when, **commands)


def order(tmp_path: Path) -> list[str]:
    path = tmp_path / "order.log"
    return path.read_text().splitlines() if path.exists() else []


# ------------------------------------------------------------------------------ pure helpers


def test_select_and_stop_order() -> None:
    a, b, c = (
        Service(n, "true", "true", "true", when=w) for n, w in (("a", ALWAYS), ("b", PRIMARY), ("c", ALWAYS))
    )
    assert select((a, b, c), ALWAYS) == (a, c)
    assert select((a, b, c), PRIMARY) == (b,)
    assert stop_order((a, b, c)) == (c, b, a)


def test_reserve_is_capped_by_a_share_of_the_remaining_time() -> None:
    two = (
        Service("a", "true", "true", "true", timeout_s=30),
        Service("b", "true", "true", "true", timeout_s=20),
    )
    assert reserve(two, 300) == 50
    assert reserve(two, 60) == 30  # half of what is left at most: the drain keeps the rest
    assert reserve((), 60) == 0


def test_command_env_drops_pacemakers_per_operation_variables() -> None:
    env = command_env(
        {"PATH": "/bin", "OCF_RESKEY_config": "x", "HA_RSCTMP": "/run", "HODR_AGENT_DAEMON_CMD": "fake"}
    )
    assert env == {"PATH": "/bin"}


# ------------------------------------------------------------------------------------- start


def test_start_all_in_order_and_skip_what_is_already_ready(tmp_path: Path) -> None:
    services = [svc(tmp_path, n) for n in ("db", "pool", "app")]
    (tmp_path / "pool.up").touch()  # already running: its start must not run
    runner(tmp_path).start_all(services, deadline(20))
    assert order(tmp_path) == ["start db", "start app"]
    assert all((tmp_path / f"{n}.up").exists() for n in ("db", "pool", "app"))
    runner(tmp_path).start_all(services, deadline(20))  # idempotent
    assert order(tmp_path) == ["start db", "start app"]


def test_start_polls_ready_until_it_passes(tmp_path: Path) -> None:
    """The start command returns at once; the service becomes ready a little later (in the
    background, like a database after ``systemctl start`` without waiting)."""
    marker = tmp_path / "slow.up"
    slow = svc(
        tmp_path,
        "slow",
        start=f"(n=0; while [ $n -lt 5 ]; do n=$((n+1)); sleep 0.05; done; touch {marker}) >/dev/null 2>&1 &",
    )
    began = time.monotonic()
    what = runner(tmp_path).start(slow, deadline(10))
    assert "started and ready" in what and marker.exists()
    assert time.monotonic() - began < 5


def test_not_ready_before_the_step_timeout(tmp_path: Path) -> None:
    never = svc(tmp_path, "pgbouncer", timeout_s=1, start="echo listening on 6432", ready="echo no; false")
    began = time.monotonic()
    with pytest.raises(ServiceError) as err:
        runner(tmp_path).start(never, deadline(20))
    took = time.monotonic() - began
    assert 1 <= took < 4  # the step's timeout, not the action's
    reason = str(err.value)
    assert reason.startswith("service pgbouncer: not ready after 1s (ready: echo no; false)")
    assert reason.endswith(": no")  # the ready check's last output


def test_a_hanging_ready_check_is_cut_at_the_step(tmp_path: Path) -> None:
    hangs = svc(tmp_path, "db", timeout_s=1, ready="sleep 60")
    began = time.monotonic()
    with pytest.raises(
        ServiceError, match=r"service db: not ready after 1s \(ready: sleep 60\), its ready check hangs"
    ):
        runner(tmp_path).start(hangs, deadline(20))
    assert time.monotonic() - began < 4


def test_the_action_deadline_bounds_a_step(tmp_path: Path) -> None:
    never = svc(tmp_path, "db", timeout_s=60, ready="false")
    began = time.monotonic()
    with pytest.raises(ServiceError, match="service db: not ready after"):
        runner(tmp_path).start(never, deadline(1))
    assert time.monotonic() - began < 4


def test_failing_start_names_the_service_and_the_step(tmp_path: Path) -> None:
    services = [
        svc(tmp_path, "db"),
        svc(tmp_path, "pool", start="echo one; echo 'pool: bind: address in use' >&2; exit 3"),
        svc(tmp_path, "app"),
    ]
    with pytest.raises(ServiceError) as err:
        runner(tmp_path).start_all(services, deadline(20))
    assert str(err.value) == (
        "service pool: start failed with status 3 (start: echo one; echo 'pool: bind: address in use' >&2; "
        "exit 3): one / pool: bind: address in use"
    )
    assert order(tmp_path) == ["start db"]  # stops at the failure; db keeps running
    assert (tmp_path / "db.up").exists()
    out = (tmp_path / "run" / "services.out").read_text()
    assert "start pool:" in out and "address in use" in out


def test_start_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """A hung start is killed with everything it started in its group: the background sleep too."""
    pid_file = tmp_path / "child.pid"
    hung = svc(tmp_path, "hung", timeout_s=1, start=f"sleep 60 & echo $! > {pid_file}; wait")
    began = time.monotonic()
    with pytest.raises(ServiceError, match=r"service hung: start did not finish within 1s, killed"):
        runner(tmp_path).start(hung, deadline(20))
    assert time.monotonic() - began < 4
    child = int(wait_for(lambda: pid_file.read_text().strip(), 5, "the child's pid"))
    wait_for(lambda: not pid_alive(child), 5, f"the background sleep (pid {child}) to be gone")


def test_a_finished_start_leaves_its_daemon_running(tmp_path: Path) -> None:
    """Daemons a start command leaves behind are the service: never signalled, never waited for
    (their output still goes to the open services.out, which must not block the step)."""
    pid_file = tmp_path / "daemon.pid"
    daemon = svc(
        tmp_path,
        "daemon",
        start=f"sleep 60 & echo $! > {pid_file}",
        ready=f"test -s {pid_file}",
        stop=f'kill "$(cat {pid_file})"; rm -f {pid_file}',
    )
    began = time.monotonic()
    runner(tmp_path).start(daemon, deadline(20))
    assert time.monotonic() - began < 5
    child = int(pid_file.read_text())
    assert pid_alive(child)
    assert runner(tmp_path).stop(daemon, deadline(10)) is None
    wait_for(lambda: not pid_alive(child), 5, "the daemon to stop")


# -------------------------------------------------------------------------------------- stop


def test_stop_all_in_reverse_order_even_after_a_failure(tmp_path: Path) -> None:
    failing = f"echo stop pool >> {tmp_path / 'order.log'}; exit 1"
    services = [svc(tmp_path, "db"), svc(tmp_path, "pool", stop=failing), svc(tmp_path, "app")]
    for name in ("db", "app"):
        (tmp_path / f"{name}.up").touch()
    problems = runner(tmp_path).stop_all(services, deadline(20))
    assert order(tmp_path) == ["stop app", "stop pool", "stop db"]
    assert problems == []  # pool's stop failed, but it is not ready: down (pg_ctl stop when stopped)


def test_a_service_that_survives_its_stop_is_reported(tmp_path: Path) -> None:
    stuck = svc(tmp_path, "db", stop="echo cannot stop; exit 1")
    (tmp_path / "db.up").touch()
    [problem] = runner(tmp_path).stop_all([stuck], deadline(20))
    assert problem == (
        "service db: stop failed with status 1 and it is still ready (stop: echo cannot stop; exit 1): "
        "cannot stop"
    )


def test_stop_timeout_kills_the_group_and_checks_ready(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    hung = svc(tmp_path, "db", timeout_s=1, stop=f"sleep 60 & echo $! > {pid_file}; wait")
    (tmp_path / "db.up").touch()
    [problem] = runner(tmp_path).stop_all([hung], deadline(20))
    assert problem.startswith("service db: stop did not finish in time, killed and it is still ready")
    child = int(pid_file.read_text())
    wait_for(lambda: not pid_alive(child), 5, f"the stop's sleep (pid {child}) to be gone")


# -------------------------------------------------------------------------------- the config


def _config(services: object) -> dict[str, object]:
    return {"node": "node1", "role": "standby", "target": {"dsn": "dbname=x"}, "services": services}


def test_config_services_section() -> None:
    cfg, errors = validate(
        _config(
            [
                {
                    "name": "postgresql",
                    "start": "systemctl start postgresql",
                    "stop": "systemctl stop postgresql",
                    "ready": "pg_isready -q",
                },
                {
                    "name": "pgbouncer",
                    "start": "systemctl start pgbouncer",
                    "stop": "systemctl stop pgbouncer",
                    "ready": "pg_isready -q -p 6432",
                    "timeout_s": "30",
                    "when": "primary",
                },
            ]
        )
    )
    assert errors == [] and cfg is not None
    assert cfg.services == (
        ServiceConfig(
            "postgresql", "systemctl start postgresql", "systemctl stop postgresql", "pg_isready -q"
        ),
        ServiceConfig(
            "pgbouncer",
            "systemctl start pgbouncer",
            "systemctl stop pgbouncer",
            "pg_isready -q -p 6432",
            30.0,
            "primary",
        ),
    )
    cfg, errors = validate(_config(None))
    assert errors == [] and cfg is not None and cfg.services == ()


def test_config_services_errors_one_line_each() -> None:
    ok = {"name": "db", "start": "a", "stop": "b", "ready": "c"}
    _, errors = validate(
        _config(
            [
                ok,
                {
                    "name": "bad name",
                    "start": " ",
                    "ready": 3,
                    "timeout_s": 0,
                    "when": "sometimes",
                    "restart": "x",
                },
                "pgbouncer",
                dict(ok),
            ]
        )
    )
    assert errors == [
        "services[1].restart: unknown key",
        'services[1].name: expected a service name (letters, digits, _ . -), got "bad name"',
        'services[1].start: expected a shell command, got " "',
        "services[1].stop: required",
        "services[1].ready: expected a string, got 3",
        "services[1].timeout_s: expected a number 1-3600, got 0",
        'services[1].when: expected one of always, primary, got "sometimes"',
        'services[2]: expected a mapping with name/start/stop/ready, got "pgbouncer"',
        "services: service 'db' is listed twice",
    ]
    assert all("\n" not in e for e in errors)
    _, errors = validate(_config({"name": "db"}))
    assert errors == ["services: expected a list of services, got {'name': 'db'}"]


def test_validate_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yml"
    good.write_text(
        "node: node1\nrole: standby\ntarget:\n  dsn: dbname=x\ntransport:\n  insecure: true\n"
        "services:\n  - name: postgresql\n    start: systemctl start postgresql\n"
        "    stop: systemctl stop postgresql\n    ready: pg_isready -q\n"
    )
    assert cli_main(["validate-config", str(good), "--print"]) == 0
    printed = capsys.readouterr().out
    assert "services:" in printed and "name: postgresql" in printed and "when: always" in printed
    bad = tmp_path / "bad.yml"
    bad.write_text(good.read_text() + "  - name: pgbouncer\n    start: x\n    stop: y\n    when: later\n")
    assert cli_main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "services[1].ready: required" in err and "services[1].when" in err


def test_services_out_is_where_the_output_goes(tmp_path: Path) -> None:
    r = runner(tmp_path)
    result = r.run("echo hello; echo world >&2", deadline(5), "start x")
    assert result.ok and result.output.splitlines() == ["hello", "world"]
    assert result.tail(1) == "world"
    assert os.path.exists(tmp_path / "run" / "services.out")

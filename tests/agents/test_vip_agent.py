"""Contract tests for ``ocf/hodr-vip``, one OCF action at a time, plus ocf-tester (PAF's ocft style).

The shim runs as a subprocess inside a throw-away namespace LAN (``tests/netns_fixtures.py``),
with Pacemaker's clean environment; each test gets its own LAN and removes it, also on failure.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns_fixtures import AGENT, VIP4, VIP6, Host, Lan, cleanup_stale, destroy_lan, make_lan

SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.netns

FAMILIES = {
    "ipv4": {"ip": VIP4},
    "ipv6": {"ip": VIP6},
}


@pytest.fixture
def lan(request: pytest.FixtureRequest) -> Iterator[Lan]:
    cleanup_stale()
    built = make_lan(request.node.name, hosts=1)
    request.addfinalizer(lambda: destroy_lan(built))
    yield built


@pytest.fixture
def host(lan: Lan) -> Host:
    return lan.hosts[0]


@pytest.fixture(params=sorted(FAMILIES))
def params(request: pytest.FixtureRequest) -> dict[str, str]:
    return dict(FAMILIES[request.param])


def probe(host: Host, params: dict[str, str]) -> int:
    return host.agent("monitor", params, interval_ms=0).rc


def monitor(host: Host, params: dict[str, str]) -> int:
    return host.agent("monitor", params, interval_ms=10_000).rc


def test_validate_all(host: Host, params: dict[str, str]) -> None:
    assert host.agent("validate-all", params).rc == 0
    missing = host.agent("validate-all", {})
    assert missing.rc == 6 and missing.reasons == ["parameter ip is required"]
    assert host.agent("validate-all", {**params, "cidr_netmask": "200"}).rc == 6


def test_stopped_resource(host: Host, params: dict[str, str]) -> None:
    assert monitor(host, params) == 7
    assert probe(host, params) == 7
    assert host.agent("stop", params).rc == 0


def test_start_start_monitor_probe_stop_stop(host: Host, params: dict[str, str]) -> None:
    started = host.agent("start", params)
    assert started.rc == 0, started.stderr
    assert host.has(params["ip"], "eth0")
    assert host.agent("start", params).rc == 0  # already there is success
    assert [a for a, _p, _f in host.addresses("eth0")].count(params["ip"]) == 1
    assert monitor(host, params) == 0
    assert probe(host, params) == 0
    assert host.agent("stop", params).rc == 0
    assert not host.has(params["ip"])
    assert host.agent("stop", params).rc == 0  # stopping a stopped resource is success
    assert monitor(host, params) == 7


def test_prefix_and_nic_come_from_the_route(host: Host, params: dict[str, str]) -> None:
    assert host.agent("start", params).rc == 0
    expected = 24 if ":" not in params["ip"] else 64
    assert (params["ip"], expected) in [(a, p) for a, p, _f in host.addresses("eth0")]
    assert host.agent("stop", params).rc == 0


@pytest.mark.parametrize("action", ["notify", "promote", "demote", "reload", "migrate_to", "bogus"])
def test_unimplemented_actions(host: Host, action: str) -> None:
    result = host.agent(action, {"ip": VIP4})
    assert result.rc == 3 and result.reasons


def test_inherently_invalid_parameters_per_action(host: Host) -> None:
    bad = {"ip": "192.168.77.300"}
    assert host.agent("start", bad).rc == 6
    assert monitor(host, bad) == 6
    assert probe(host, bad) == 7  # never 6 from a probe: it would stop the resource everywhere
    assert host.agent("stop", bad).rc == 0


def test_missing_nic_per_action(host: Host, params: dict[str, str]) -> None:
    p = {**params, "nic": "nosuch0"}
    assert host.agent("validate-all", p).rc == 0  # level 0: this node's interfaces are not its business
    for extra in ({}, {"cidr_netmask": "24" if "." in params["ip"] else "64"}):
        deep = host.agent("validate-all", {**p, **extra}, extra_env={"OCF_CHECK_LEVEL": "10"})
        assert deep.rc == 2 and "nosuch0" in deep.reasons[0]
    assert host.agent("validate-all", params, extra_env={"OCF_CHECK_LEVEL": "10"}).rc == 0
    start = host.agent("start", p)
    assert start.rc == 2 and "nosuch0" in start.reasons[0]
    assert monitor(host, p) == 1
    assert probe(host, p) == 7
    assert host.agent("stop", p).rc == 0


def test_no_route_to_the_address(host: Host) -> None:
    p = {"ip": "10.99.0.5"}
    start = host.agent("start", p)
    assert start.rc == 2 and "no connected route" in start.reasons[0]
    assert probe(host, p) == 7
    assert host.agent("stop", p).rc == 0
    assert not host.has("10.99.0.5")


def test_loopback_is_refused(host: Host) -> None:
    p = {"ip": "192.168.78.5", "cidr_netmask": "24", "nic": "lo"}
    result = host.agent("start", p)
    assert result.rc == 2 and "loopback" in result.reasons[0]
    assert not host.has("192.168.78.5")


def test_monitor_does_not_import_pyroute2(host: Host, params: dict[str, str]) -> None:
    assert host.agent("start", params).rc == 0
    python = shutil.which("python3") or "python3"
    env_params = {f"OCF_RESKEY_{k}": v for k, v in params.items()}
    proc = host.exec(
        "env",
        *[f"{k}={v}" for k, v in env_params.items()],
        "OCF_RESKEY_CRM_meta_interval=10000",
        python,
        "-X",
        "importtime",
        str(AGENT),
        "monitor",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pyroute2" not in proc.stderr and "asyncio" not in proc.stderr


def _lacks_pyroute2(python: str) -> bool:
    if not shutil.which(python):
        return False
    return subprocess.run([python, "-c", "import pyroute2"], capture_output=True).returncode != 0


@pytest.mark.skipif(not _lacks_pyroute2(SYSTEM_PYTHON), reason=f"needs a {SYSTEM_PYTHON} without pyroute2")
def test_interpreter_without_pyroute2(host: Host, params: dict[str, str], tmp_path: Path) -> None:
    """Pacemaker's PATH may find a python3 without pyroute2 and no .venv to continue in (the
    shim re-execs into the repository's .venv when there is one): reads still work, writes
    say so (5).  The shim runs from a copy whose directory has the package but no .venv."""
    (tmp_path / "ocf").mkdir()
    agent = tmp_path / "ocf" / "hodr-vip"
    shutil.copy2(AGENT, agent)
    (tmp_path / "hodr").symlink_to(Path(AGENT).resolve().parent.parent / "hodr")

    def run(action: str) -> subprocess.CompletedProcess[str]:
        env = [f"OCF_RESKEY_{k}={v}" for k, v in params.items()] + ["OCF_RESKEY_CRM_meta_interval=0"]
        return host.exec(
            "env", "-i", "PATH=/usr/bin:/bin", *env, SYSTEM_PYTHON, str(agent), action, check=False
        )

    assert run("validate-all").returncode == 0
    assert run("monitor").returncode == 7
    assert run("stop").returncode == 0  # nothing to remove: no pyroute2 needed
    start = run("start")
    assert start.returncode == 5 and "ocf-exit-reason:pyroute2 is not installed" in start.stderr
    assert host.agent("start", params).rc == 0
    assert run("monitor").returncode == 0
    stop = run("stop")
    assert stop.returncode == 5 and "cannot remove" in stop.stderr
    assert host.agent("stop", params).rc == 0


@pytest.mark.skipif(shutil.which("ocf-tester") is None, reason="ocf-tester not installed")
@pytest.mark.parametrize(
    "options",
    [
        pytest.param([f"ip={VIP4}"], id="ipv4-discovered"),
        pytest.param([f"ip={VIP4}", "cidr_netmask=24", "nic=eth0", "arp_mode=reply"], id="ipv4-explicit"),
        pytest.param([f"ip={VIP6}"], id="ipv6-discovered"),
        pytest.param([f"ip={VIP6}", "cidr_netmask=64", "nic=eth0"], id="ipv6-explicit"),
    ],
)
def test_ocf_tester(host: Host, options: list[str]) -> None:
    args = [arg for option in options for arg in ("-o", option)]
    proc = host.exec("ocf-tester", "-n", "vip", *args, str(AGENT), check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed all tests" in proc.stdout
    assert not host.has(options[0].split("=", 1)[1])

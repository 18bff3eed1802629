"""The cluster lab itself (docs/lab.md): formation, commands, faults, and a clean teardown.

Deadlines: fast settings form in ~5 s (lab.md §7); the deadlines here leave room for a loaded
2-core CI machine. Timings are printed as ``TIMING ...`` lines (run with ``-s`` to see them).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hodr.lab import Lab, LabError, teardown
from hodr.lab.cli import main as lab_main
from tests.cluster.conftest import (
    TEST_REBOOT_DELAY,
    HostSnapshot,
    LabFactory,
    RunningLab,
    assert_left_nothing,
    lab_netns_inodes,
)
from tests.conftest import wait_for

FORM_DEADLINE = 30.0
cluster = pytest.mark.cluster


@cluster
def test_two_nodes_form_fast_and_down_leaves_nothing(lab_factory: LabFactory) -> None:
    before = HostSnapshot.take()
    lab = lab_factory(2)
    formed = lab.up(timeout=FORM_DEADLINE)
    print(f"\nTIMING formation 2 nodes (fast): {formed:.1f}s")
    assert formed < FORM_DEADLINE
    view = lab.view("node2")
    assert view.online == {"node1", "node2"} and view.quorate and view.dc in lab.nodes
    assert lab.locate("fence-lab"), "fence device not started"
    inodes = lab_netns_inodes(lab)

    report = lab.down()
    print(f"TIMING teardown 2 nodes: {report.seconds:.1f}s")
    assert not report.problems
    assert report.seconds < 30
    assert_left_nothing(lab, before, inodes)
    assert lab.down().problems == []  # idempotent


@cluster
def test_down_cleans_a_lab_whose_runner_died(lab_factory: LabFactory) -> None:
    """A killed test run leaves no pid files or lab.json to go by: teardown by name still works."""
    before = HostSnapshot.take()
    lab = lab_factory(1, name="hodrt1")
    lab.up(timeout=FORM_DEADLINE)
    inodes = lab_netns_inodes(lab)
    for f in [
        lab.cfg.state / "lab.json",
        lab.cfg.state / "power.pid",
        *lab.cfg.state.glob("nodes/*/init.pid"),
    ]:
        f.unlink()
    report = teardown(lab.name, lab.cfg.state)
    assert not report.problems
    assert_left_nothing(lab, before, inodes)


@cluster
@pytest.mark.slow
def test_default_timings_form(lab_factory: LabFactory) -> None:
    """The realistic scenario: pacemaker's 20 s dc-deadtime and corosync's 3000 ms token."""
    lab = lab_factory(2, name="hodrt2d", fast=False)
    formed = lab.up(timeout=90)
    print(f"\nTIMING formation 2 nodes (defaults): {formed:.1f}s")
    token = lab.run("node1", "corosync-cmapctl", "-g", "runtime.config.totem.token").stdout
    assert token.strip().endswith("= 3000"), token
    assert formed > 15  # the election really waited for the default dc-deadtime


@cluster
def test_three_nodes_form_fast(lab3_running: RunningLab) -> None:
    print(f"\nTIMING formation 3 nodes (fast): {lab3_running.formed_s:.1f}s")
    assert lab3_running.formed_s < FORM_DEADLINE
    lab = lab3_running.lab
    for n in lab.nodes:  # every node agrees, not only the one asked during up
        view = lab.view(n)
        assert view.formed and view.online == set(lab.nodes), (n, view)
    assert lab.fence_history() == []
    # fast settings reached corosync: token 1000 ms + 650 ms coefficient for the third node
    token = lab.run("node1", "corosync-cmapctl", "-g", "runtime.config.totem.token").stdout
    assert token.strip().endswith("= 1650"), token
    with pytest.raises(LabError, match="already exists"):
        Lab.create(3, name=lab.name).up()
    assert lab.view("node2").formed  # the refused second `up` did not touch the running lab


@cluster
def test_exec_returns_output_and_exit_code(lab3: Lab) -> None:
    r = lab3.run("node2", "sh", "-c", "hostname; echo oops >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "node2\n", "oops\n")
    with pytest.raises(LabError, match="exited 3"):
        lab3.run("node2", "sh", "-c", "exit 3")
    # the CLI: `hodr lab exec` passes the exit code through, `client` is the application host
    cli = [sys.executable, "-m", "hodr.lab", "--name", lab3.name, "exec"]
    r2 = subprocess.run([*cli, "node3", "--", "sh", "-c", "cat /etc/hostname; hostname; exit 4"],
                        capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r2.returncode == 4 and r2.stdout.splitlines()[-1] == "node3", r2
    r3 = subprocess.run([*cli, "client", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                        capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r3.returncode == 0 and lab3.client_address in r3.stdout, r3


@cluster
def test_nodes_have_private_state_and_see_project_agents(lab3: Lab) -> None:
    env_line = lab3.run("node1", "sh", "-c", "echo $PATH $HOME").stdout.split()
    assert env_line == ["/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "/run/lab-home"]
    lab3.run("node1", "sh", "-c", "echo n1 > /run/lab-probe; echo n1 > /var/lib/hodr/probe")
    assert lab3.run("node2", "test", "-e", "/run/lab-probe", check=False).returncode == 1
    assert lab3.run("node2", "test", "-e", "/var/lib/hodr/probe", check=False).returncode == 1
    assert (lab3.host_path("node1", "/var/lib/hodr") / "probe").read_text() == "n1\n"
    for path in ("/etc/hodr", "/var/lib/postgresql", "/etc/postgresql"):
        lab3.run("node3", "test", "-d", path)
    # ocf:hodr:* come from the working tree; fence_lab and `python3 -c 'import hodr'` work inside
    ocf = lab3.run("node1", "readlink", "-f", "/usr/lib/ocf/resource.d/hodr").stdout.strip()
    assert ocf == lab3.cfg.ocf_dir
    assert "fence_lab" in lab3.run("node1", "stonith_admin", "--list-installed").stdout
    imported = lab3.run("node1", "python3", "-c", "import hodr; print(hodr.__file__)").stdout
    assert imported.startswith(lab3.cfg.package_root)
    # the client reaches every node over the bridge; nothing of this is in the root namespace
    for n in lab3.nodes:
        lab3.client_run("ping", "-c", "1", "-W", "2", lab3.address(n))


@cluster
def test_crash_is_fenced_and_node_rejoins(lab3: Lab) -> None:
    victim = "node3"
    fenced_before = lab3.fence_count(victim, via="node1")
    t0 = time.monotonic()
    lab3.crash(victim)
    assert not lab3.is_running(victim)
    assert lab3.client_run("ping", "-c", "1", "-W", "1", lab3.address(victim), check=False).returncode != 0
    lab3.wait_fenced(victim, timeout=20, before=fenced_before, via="node1")
    lab3.wait_offline(victim, timeout=10, via="node2")
    t_fenced = time.monotonic() - t0
    wait_for(lambda: lab3.is_running(victim), TEST_REBOOT_DELAY + 15, f"{victim} powered on by fence_lab")
    t_boot = time.monotonic() - t0
    lab3.wait_online([victim], timeout=30, via="node1")
    t_rejoin = time.monotonic() - t0
    print(
        f"\nTIMING crash->fenced {t_fenced:.1f}s, ->powered on {t_boot:.1f}s, ->rejoined {t_rejoin:.1f}s "
        f"(reboot delay {TEST_REBOOT_DELAY}s)"
    )
    assert t_boot >= TEST_REBOOT_DELAY  # the controller waited before powering it on


@cluster
def test_isolate_and_heal(lab3: Lab) -> None:
    victim = "node2"
    fenced_before = lab3.fence_count(victim, via="node1")
    lab3.isolate(victim)
    assert lab3.is_isolated(victim)
    # the majority loses sight of it and fences it; it comes back still cut off, without quorum
    lab3.wait_fenced(victim, timeout=25, before=fenced_before, via="node1")
    lab3.wait_offline(victim, timeout=10, via="node3")
    wait_for(lambda: lab3.is_running(victim), TEST_REBOOT_DELAY + 15, f"{victim} powered on again")
    wait_for(lambda: lab3.view(victim).dc is not None, 30, f"{victim} running its own partition")
    assert not lab3.view(victim).quorate
    assert victim not in lab3.view("node1").online
    assert lab3.status()["nodes"][victim]["state"] == "isolated"  # type: ignore[index]
    t0 = time.monotonic()
    lab3.heal(victim)
    lab3.wait_online([victim], timeout=30, via="node1")
    wait_for(lambda: lab3.view(victim).formed, 30, f"{victim} sees the whole cluster again")
    print(f"\nTIMING heal->rejoined {time.monotonic() - t0:.1f}s")


@cluster
def test_graceful_stop_is_not_fenced(lab3: Lab) -> None:
    fenced_before = lab3.fence_count("node1", via="node2")
    t0 = time.monotonic()
    assert lab3.stop("node1", timeout=60)
    lab3.wait_offline("node1", timeout=10, via="node2")
    t_stop = time.monotonic() - t0
    assert lab3.fence_count("node1", via="node2") == fenced_before
    assert not lab3.is_running("node1")
    lab3.boot("node1")
    lab3.wait_online(["node1"], timeout=30, via="node2")
    print(f"\nTIMING graceful stop {t_stop:.1f}s, boot->rejoined {time.monotonic() - t0 - t_stop:.1f}s")


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert lab_main(["up", "3"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == "hodr lab up: hodr lab needs root (it creates namespaces, mounts and veth pairs)"
    )
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("hodr.lab.lab.shutil.which", lambda b, path=None: None if b == "corosync" else "/x")
    assert lab_main(["up", "3"]) == 1
    assert "corosync not found" in capsys.readouterr().err
    monkeypatch.setattr("hodr.lab.lab.shutil.which", lambda b, path=None: "/x")
    assert lab_main(["up", "10"]) == 1
    assert capsys.readouterr().err.strip() == "hodr lab up: node count 10 out of range: 1-9"
    with pytest.raises(LabError, match="unknown node 'node4'"):
        Lab.create(3, name="hodrx").topology.node("node4")

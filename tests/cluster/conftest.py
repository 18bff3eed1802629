"""Cluster-lab fixtures: labs that are always torn down, and a check that nothing is left behind.

Test labs use their own names (``hodrt2``, ``hodrt3``, ...), never the user's ``hodrlab``; a lab
left behind by a killed test run is removed by name before the next one starts. Logs of every
lab are collected into the test's temporary directory on teardown.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hodr.lab import Lab, proc, teardown
from hodr.lab.netns import NETNS_DIR
from hodr.lab.topology import state_dir_for

#: Host state trees the lab must never write to (it gives every node empty private copies).
HOST_TREES = (
    "/etc/corosync",
    "/etc/pacemaker",
    "/var/lib/pacemaker",
    "/var/lib/corosync",
    "/var/log/pacemaker",
)
#: Entries other software on a shared test machine creates and removes concurrently.
_NOISE = re.compile(r"^(/dev/shm/PostgreSQL\.|/run/postgresql/|/run/netns)")
#: A reboot delay shorter than the default 10 s keeps the crash tests short; 5 s is still far
#: longer than the fencing result takes to reach every node (lab.md §11).
TEST_REBOOT_DELAY = 5.0


def logs_dir(default: Path, name: str) -> Path:
    """Where a test lab's logs go: ``$HODR_LAB_TEST_LOGS/<name>`` if set (kept), else ``default``."""
    root = os.environ.get("HODR_LAB_TEST_LOGS")
    return Path(root) / name if root else default / name


def _tree(root: str) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out.append((p, st.st_size, st.st_mtime_ns))
    return sorted(out)


def _listing(root: str, depth: int) -> set[str]:
    found: set[str] = set()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return found
    for e in entries:
        found.add(e.path)
        if depth > 1 and e.is_dir(follow_symlinks=False):
            found |= _listing(e.path, depth - 1)
    return found


@dataclass
class HostSnapshot:
    """What a lab could leave behind on the host, taken before ``up`` and after ``down``."""

    netns: set[str]
    links: set[str]
    mounts: set[str]
    run: set[str]
    shm: set[str]
    trees: dict[str, list[tuple[str, int, int]]]
    netns_dir: bool
    stack_pids: set[int] = field(default_factory=set)

    @classmethod
    def take(cls) -> HostSnapshot:
        links = subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
        ).stdout
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        mounts = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
        stack = {
            p
            for p in proc.all_pids()
            if (proc.cmdline(p) or [""])[0].split("/")[-1].startswith(("corosync", "pacemaker"))
        }
        return cls(
            netns={line.split()[0] for line in netns.splitlines() if line.strip()},
            links={line.split(":")[1].strip() for line in links.splitlines()},
            mounts={m for m in mounts if not _NOISE.match(m)},
            run={p for p in _listing("/run", 2) if not _NOISE.match(p)},
            shm={p for p in _listing("/dev/shm", 1) if not _NOISE.match(p)},
            trees={t: _tree(t) for t in HOST_TREES},
            netns_dir=NETNS_DIR.exists(),
            stack_pids=stack,
        )


def assert_left_nothing(lab: Lab, before: HostSnapshot, netns_inodes: list[int]) -> None:
    """The lab's teardown guarantee (docs/lab.md): compare the host with its state before ``up``."""
    after = HostSnapshot.take()
    problems = []
    ours = re.compile(rf"^{re.escape(lab.name)}-")
    if left := {n for n in after.netns if ours.match(n)}:
        problems.append(f"namespaces left: {sorted(left)}")
    if after.links != before.links:
        problems.append(
            f"root links changed: +{sorted(after.links - before.links)} -{sorted(before.links - after.links)}"
        )
    for attr in ("mounts", "run", "shm"):
        new = getattr(after, attr) - getattr(before, attr)
        if new:
            problems.append(f"new {attr} entries: {sorted(new)[:10]}")
    for t in HOST_TREES:
        if after.trees[t] != before.trees[t]:
            problems.append(f"host {t} changed")
    if not before.netns_dir and after.netns_dir and not any(NETNS_DIR.iterdir()):
        problems.append(f"{NETNS_DIR} created and left empty")
    # Only this lab's stack counts: another lab on the machine (a developer's) may start its own.
    lab_pids = set(proc.pids_in_netns(netns_inodes))
    if new_stack := (after.stack_pids - before.stack_pids) & lab_pids:
        problems.append(f"corosync/pacemaker processes left: {sorted(new_stack)}")
    state = str(lab.cfg.state)
    if mine := [p for p in proc.all_pids() if any(state in a for a in proc.cmdline(p) or [])]:
        problems.append(f"processes naming {state}: {mine}")
    if in_ns := proc.pids_in_netns(netns_inodes):
        problems.append(f"processes in the lab's network namespaces: {in_ns}")
    if lab.cfg.state.exists():
        problems.append(f"state dir {state} left")
    assert not problems, "lab left things behind:\n  " + "\n  ".join(problems)


def lab_netns_inodes(lab: Lab) -> list[int]:
    """Inodes of the lab's namespaces while it is up, to look for survivors after ``down``."""
    names = [lab.topology.netns(n) for n in lab.nodes] + [
        lab.topology.bridge_netns,
        lab.topology.client_netns,
    ]
    return [ino for n in names if (ino := proc.netns_inode(str(NETNS_DIR / n))) is not None]


LabFactory = Callable[..., Lab]


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[LabFactory]:
    """``make(size, **Lab.create kwargs)`` -> a not-yet-started Lab, torn down after the test."""
    labs: list[Lab] = []

    def make(size: int, **kwargs: object) -> Lab:
        name = str(kwargs.pop("name", f"hodrt{size}"))
        teardown(name, state_dir_for(name))  # a lab left behind by a killed run
        kwargs.setdefault("reboot_delay", TEST_REBOOT_DELAY)
        lab = Lab.create(size, name=name, **kwargs)  # type: ignore[arg-type]
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.down(logs_to=logs_dir(tmp_path, f"{lab.name}-logs"))


@dataclass
class RunningLab:
    """A started module-wide lab plus what the teardown check needs."""

    lab: Lab
    formed_s: float
    before: HostSnapshot
    inodes: list[int]


@pytest.fixture(scope="module")
def lab3_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """One 3-node lab (fast settings, fencing on) shared by a module's tests.

    Torn down at the end of the module, and the host is then checked for anything left behind.
    """
    name = "hodrt3"
    teardown(name, state_dir_for(name))
    before = HostSnapshot.take()
    lab = Lab.create(3, name=name, reboot_delay=TEST_REBOOT_DELAY)
    try:
        formed = lab.up(timeout=60)
        running = RunningLab(lab, formed, before, lab_netns_inodes(lab))
        yield running
    finally:
        rep = lab.down(logs_to=logs_dir(tmp_path_factory.getbasetemp(), "hodrt3-logs"))
        print(f"\nTIMING teardown 3 nodes: {rep.seconds:.1f}s (logs {rep.logs})")
    assert not rep.problems, rep.problems
    assert_left_nothing(lab, before, running.inodes)


@pytest.fixture
def lab3(lab3_running: RunningLab) -> Lab:
    """The shared 3-node lab, brought back to "all nodes up, cabled and online" before each test."""
    from tests.conftest import wait_for

    lab = lab3_running.lab
    for n in lab.nodes:
        if lab.is_isolated(n):
            lab.heal(n)
        if not lab.is_running(n):
            lab.boot(n)
    wait_for(lambda: lab.view("node1").formed, 60, "the 3-node lab healthy again")
    return lab


@pytest.fixture(autouse=True)
def _report_measured(request: pytest.FixtureRequest) -> Iterator[None]:
    """Hand the RTO/RPO lines a test measured to the report (tests/conftest.py prints them
    at the end, whichever worker ran the test)."""
    from tests.cluster.dbcluster import MEASURED

    first = len(MEASURED)
    yield
    for line in MEASURED[first:]:
        request.node.user_properties.append(
            ("measured", ("takeover RTO / RPO (tests/cluster/test_takeover_cluster.py)", line))
        )

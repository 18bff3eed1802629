"""Removing a lab completely, in the order of lab.md §10, also one whose runner died.

Works from ``lab.json`` if present, else assumes the largest lab, so a lab whose start crashed
half-way is found too: processes by pid file and exact command line, namespaces by name pattern.
Nothing is ever killed by process name.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hodr.lab import netns, power, proc
from hodr.lab import node as nodes
from hodr.lab.topology import DEFAULT_STATE_ROOT, LabConfig, Topology

#: Marker in the state dir: this lab's ``ip netns add`` created /run/netns, so ``down`` may
#: remove it again when it is empty.
NETNS_MARK = "netns-dir-created"


@dataclass
class TeardownReport:
    seconds: float = 0.0
    killed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    logs: Path | None = None


def teardown(
    name: str,
    state_dir: Path,
    logs_to: Path | None = None,
    timeout: float | None = None,
    reap: Sequence[subprocess.Popen[bytes]] = (),
) -> TeardownReport:
    """Remove every trace of lab ``name``; safe to run repeatedly. ``timeout``: graceful stop."""
    t0 = time.monotonic()
    rep = TeardownReport()
    try:
        cfg = LabConfig.from_json((state_dir / "lab.json").read_text())
    except (OSError, ValueError):
        cfg = LabConfig(topology=Topology(name=name, size=9), state_dir=str(state_dir))
    stop_timeout = cfg.stop_timeout if timeout is None else timeout

    # (1) the power controller's process group first: no pending fence-reboot may boot a node now
    if (cfg.state / "power").is_dir():
        (cfg.state / "power" / "closed").touch()
    ctl = set(proc.pids_with_cmdline(power.argv(cfg)))
    pid = proc.read_pid(cfg.state / "power.pid", power.argv(cfg))
    if pid:
        ctl.add(pid)
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for p in ctl:
            proc.kill_group(p, sig)
        ctl = set(proc.wait_gone(ctl, wait, reap))
    # (2) every node's PID 1: SIGTERM all at once, SIGKILL at the deadline
    inits = {n: nodes.init_pids(cfg, n) for n in cfg.topology.nodes}
    all_inits = [p for ps in inits.values() for p in ps]
    proc.signal_pids(all_inits, signal.SIGTERM)
    left = proc.wait_gone(all_inits, stop_timeout, reap)
    if left:
        rep.killed += [f"node init pid {p} (did not stop in {stop_timeout:.0f}s)" for p in left]
        proc.signal_pids(left, signal.SIGKILL)
        rep.problems += [f"pid {p} survived SIGKILL" for p in proc.wait_gone(left, 10.0, reap)]
    launchers = [
        p for n in cfg.topology.nodes for p in proc.pids_with_cmdline(nodes.launcher_argv(cfg, n)[3:])
    ]
    proc.wait_gone(launchers, 5.0, reap)
    # anything still running in the lab's network namespaces (clients, leftovers of a test)
    names = netns.existing(name)
    stray = proc.pids_in_netns(netns.inodes(names).values())
    if stray:
        rep.killed += [f"pid {p} {' '.join(proc.cmdline(p) or [])[:80]}" for p in stray]
        proc.signal_pids(stray, signal.SIGKILL)
        rep.problems += [f"pid {p} survived SIGKILL" for p in proc.wait_gone(stray, 5.0, reap)]
    # (3) namespaces: veths and the bridge go with them
    rep.problems += netns.delete(names)
    # (4) logs, then the state dir
    if logs_to is not None and cfg.state.exists():
        rep.logs = collect_logs(cfg, logs_to)
    created_netns_dir = (cfg.state / NETNS_MARK).exists()
    nodes.remove_tree(cfg.state)
    if cfg.state.parent == DEFAULT_STATE_ROOT:
        try:
            DEFAULT_STATE_ROOT.rmdir()
        except OSError:
            pass
    if created_netns_dir and netns.netns_dir_is_idle():
        netns.remove_netns_dir()
    rep.seconds = time.monotonic() - t0
    return rep


def collect_logs(cfg: LabConfig, dest: Path) -> Path:
    """Copy pacemaker/corosync/init logs per node and the controller log to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("power.log", "lab.json"):
        if (cfg.state / f).exists():
            shutil.copy2(cfg.state / f, dest / f)
    for nd in sorted((cfg.state / "nodes").glob("node*")):
        out = dest / nd.name
        out.mkdir(exist_ok=True)
        for src in [nd / "init.log", *sorted((nd / "fs" / "var-log-pacemaker").glob("*.log"))]:
            if src.is_file():
                shutil.copy2(src, out / src.name)
    return dest

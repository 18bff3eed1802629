"""Host side of one lab node: its private directories, and power on / power off / shutdown.

Shared by :class:`hodr.lab.lab.Lab` and the power controller (``hodr.lab.power``), which both
change a node's power state; a per-node ``flock`` keeps them from starting one node twice.
"""

from __future__ import annotations

import fcntl
import grp
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hodr.lab import netns, proc
from hodr.lab.topology import NODE_HOME, NODE_PATH, NODE_POWER_DIR, LabConfig, LabError

#: Host directories every node gets as an *empty* private copy (tree, owner, mode; no files),
#: with how deep the tree is copied. The host's own /var/lib/pacemaker may hold an old CIB.
STACK_DIRS: dict[str, int] = {
    "/etc/corosync": 3,
    "/etc/pacemaker": 3,
    "/var/lib/pacemaker": 3,
    "/var/lib/corosync": 3,
    "/var/log/pacemaker": 3,
    "/var/log/corosync": 3,
    "/var/lib/pcsd": 3,
    "/var/log/pcsd": 3,
    "/var/log/crmsh": 3,
    # database and hodr dirs: just the directory itself, so PostgreSQL / hodr start from nothing
    "/var/lib/postgresql": 0,
    "/etc/postgresql": 0,
    "/var/lib/hodr": 0,
    "/etc/hodr": 0,
}
#: Writable per-node overlays: a node sees the host's files but its writes stay its own, and
#: missing mount points (/etc/hodr) can be created without touching the host.
RW_OVERLAYS = ("/etc", "/var/lib", "/var/log")
#: Read-only overlays with a lab directory on top: fence_lab, ocf:hodr:*, python3/hodr wrappers.
RO_OVERLAYS = {"/usr/sbin": "sbin", "/usr/lib/ocf/resource.d": "ocf", "/usr/local/bin": "localbin"}
#: Host /run entries not recreated on the node's private /run.
RUN_SKIP = ["netns", "user", "mount"]


def _ids(user: str, group: str) -> tuple[int, int]:
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        raise LabError(f"user {user}/group {group} missing: install pacemaker") from None


def fs_name(path: str) -> str:
    """Directory name under ``nodes/<node>/fs`` for a node path: /var/lib/hodr -> var-lib-hodr."""
    return path.strip("/").replace("/", "-")


def copy_skeleton(src: Path, dst: Path, depth: int) -> None:
    """Recreate ``src``'s directory tree (no files) with owners and modes, ``depth`` levels deep."""
    if src.is_dir():
        st = src.stat()
        dst.mkdir(parents=True, exist_ok=True)
        os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        if depth > 0:
            for child in src.iterdir():
                if child.is_dir() and not child.is_symlink():
                    copy_skeleton(child, dst / child.name, depth - 1)
    else:
        dst.mkdir(parents=True, exist_ok=True)


def init_argv(cfg: LabConfig, node: str) -> list[str]:
    """Exact command line of a node's PID 1; teardown matches it verbatim."""
    return [cfg.python, "-I", str(cfg.state / "bin" / "node_init.py"), str(cfg.node_dir(node) / "init.json")]


def launcher_argv(cfg: LabConfig, node: str) -> list[str]:
    """nsenter joins the node's netns then execs unshare, whose forked child is the node's PID 1."""
    return [
        "nsenter", f"--net={netns.NETNS_DIR / cfg.topology.netns(node)}", "--",
        "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--mount-proc",
        "--propagation", "private", "--", *init_argv(cfg, node),
    ]  # fmt: skip


def corosync_conf(cfg: LabConfig) -> str:
    topo = cfg.topology
    totem = [
        "version: 2", f"cluster_name: {topo.name}", "transport: knet",
        "crypto_cipher: none", "crypto_hash: none",
    ]  # fmt: skip
    if cfg.token_ms is not None:
        totem.append(f"token: {cfg.token_ms}")
    if cfg.token_coefficient_ms is not None:
        totem.append(f"token_coefficient: {cfg.token_coefficient_ms}")
    nodes = "".join(
        f"    node {{\n        ring0_addr: {topo.address(n)}\n        name: {n}\n"
        f"        nodeid: {topo.index(n)}\n    }}\n"
        for n in topo.nodes
    )
    quorum = ["provider: corosync_votequorum"] + (["two_node: 1"] if topo.size == 2 else [])
    logging = [
        "to_logfile: yes", "logfile: /var/log/pacemaker/corosync.log", "to_syslog: no",
        "to_stderr: no", "timestamp: hires",
    ]  # fmt: skip

    def block(name: str, lines: list[str]) -> str:
        return f"{name} {{\n" + "".join(f"    {line}\n" for line in lines) + "}\n"

    return (
        block("totem", totem)
        + f"nodelist {{\n{nodes}}}\n"
        + block("quorum", quorum)
        + block("logging", logging)
    )


def seed_cib(cfg: LabConfig) -> str | None:
    """A CIB with the lab's cluster options, or None when pacemaker's defaults are wanted.

    Seeding ``dc-deadtime=2s`` before the first start cuts formation from ~23 s to ~5 s (lab.md §4).
    """
    props = {}
    if cfg.dc_deadtime:
        props["dc-deadtime"] = cfg.dc_deadtime
    if not cfg.fencing:
        props["stonith-enabled"] = "false"
    if not props:
        return None
    empty = proc.run(["cibadmin", "--empty"], timeout=10).stdout
    nvpairs = "".join(
        f'<nvpair id="cib-bootstrap-options-{k}" name="{k}" value="{v}"/>' for k, v in props.items()
    )
    opts = (
        f'<crm_config><cluster_property_set id="cib-bootstrap-options">{nvpairs}'
        "</cluster_property_set></crm_config>"
    )
    if "<crm_config/>" not in empty:
        raise LabError("cibadmin --empty: unexpected output (no <crm_config/>)")
    return empty.replace("<crm_config/>", opts, 1)


def prepare(cfg: LabConfig, node: str) -> None:
    """Create the node's private directories and files (first ``up`` only; kept across reboots)."""
    nd = cfg.node_dir(node)
    for path, depth in STACK_DIRS.items():
        copy_skeleton(Path(path), nd / "fs" / fs_name(path), depth)
    for target in RW_OVERLAYS:
        (nd / "upper" / fs_name(target)).mkdir(parents=True, exist_ok=True)
        (nd / "work" / fs_name(target)).mkdir(parents=True, exist_ok=True)
    (nd / "hosts").write_text(cfg.topology.hosts_file())
    (nd / "fs" / "etc-corosync" / "corosync.conf").write_text(corosync_conf(cfg))
    cib = seed_cib(cfg)
    if cib is not None:
        cib_dir = nd / "fs" / "var-lib-pacemaker" / "cib"
        cib_dir.mkdir(parents=True, exist_ok=True)
        uid, gid = _ids("hacluster", "haclient")
        os.chown(cib_dir, uid, gid)
        (cib_dir / "cib.xml").write_text(cib)
        os.chown(cib_dir / "cib.xml", uid, gid)
        os.chmod(cib_dir / "cib.xml", 0o600)
    (nd / "init.json").write_text(json.dumps(init_config(cfg, node), indent=2) + "\n")


def init_config(cfg: LabConfig, node: str) -> dict:
    """What ``node_init`` needs; every path is on the host outside /run, /etc and /var/lib."""
    nd = cfg.node_dir(node)
    hac_uid, hac_gid = _ids("hacluster", "haclient")
    binds = [
        {"source": str(nd / "fs" / fs_name(p)), "target": p, "create": p.startswith(RW_OVERLAYS)}
        for p in STACK_DIRS
    ]
    binds.append({"source": str(nd / "hosts"), "target": "/etc/hosts", "file": True, "create": True})
    binds.append({"source": str(cfg.state / "power"), "target": NODE_POWER_DIR, "create": True})
    return {
        "hostname": cfg.topology.node(node),
        "run_skip": RUN_SKIP,
        "run_dirs": [
            {"path": "/run/crm", "uid": hac_uid, "gid": hac_gid, "mode": 0o750},
            {"path": "/run/resource-agents", "uid": 0, "gid": 0, "mode": 0o1755},
            {"path": "/run/lock", "uid": 0, "gid": 0, "mode": 0o1777},
            {"path": NODE_HOME, "uid": 0, "gid": 0, "mode": 0o700},
        ],
        "overlays_rw": [
            {"target": t, "upper": str(nd / "upper" / fs_name(t)), "work": str(nd / "work" / fs_name(t))}
            for t in RW_OVERLAYS
        ],
        "binds": binds,
        "overlays_ro": [{"target": t, "lower": str(cfg.state / d)} for t, d in RO_OVERLAYS.items()],
        "path": NODE_PATH,
        "home": NODE_HOME,
        "corosync_wait": 10,
        "pacemaker_stop_timeout": max(cfg.stop_timeout - 40, 10),
        "corosync_stop_timeout": 30,
    }


@contextmanager
def power_lock(cfg: LabConfig, node: str) -> Iterator[None]:
    """Serialises power changes of one node between the Lab (CLI/tests) and the controller."""
    with open(cfg.node_dir(node) / "power.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def init_pids(cfg: LabConfig, node: str) -> list[int]:
    """Live PID-1 processes of ``node``: from the pid file and from an exact command-line scan."""
    argv = init_argv(cfg, node)
    found = set(proc.pids_with_cmdline(argv))
    pid = proc.read_pid(cfg.node_dir(node) / "init.pid", argv)
    if pid:
        found.add(pid)
    return sorted(found)


def pid1(cfg: LabConfig, node: str) -> int | None:
    """Host pid of the node's PID 1 while the node is powered on."""
    argv = init_argv(cfg, node)
    return proc.read_pid(cfg.node_dir(node) / "init.pid", argv) or next(
        iter(proc.pids_with_cmdline(argv)), None
    )


def is_isolated(cfg: LabConfig, node: str) -> bool:
    return (cfg.node_dir(node) / "isolated").exists()


def power_on(cfg: LabConfig, node: str, timeout: float = 10.0) -> subprocess.Popen[bytes] | None:
    """Boot the node unless it is on; returns the launcher for the caller to reap (None if on).

    The cable stays pulled across a reboot if the node was isolated (``heal`` plugs it in).
    """
    topo = cfg.topology
    with power_lock(cfg, node):
        if pid1(cfg, node):
            return None
        netns.configure_node(topo, node)
        netns.set_port(topo, node, up=not is_isolated(cfg, node))
        nd = cfg.node_dir(node)
        with open(nd / "init.log", "ab") as logf:
            launcher = subprocess.Popen(
                launcher_argv(cfg, node), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                env={"PATH": NODE_PATH, "LANG": "C.UTF-8"}, start_new_session=True, close_fds=True,
            )  # fmt: skip
        want = init_argv(cfg, node)
        deadline = time.monotonic() + timeout
        while True:
            for child in _children(launcher.pid):
                if proc.cmdline(child) == want:
                    (nd / "init.pid").write_text(f"{child}\n")
                    return launcher
            if launcher.poll() is not None or time.monotonic() > deadline:
                tail = (nd / "init.log").read_text(errors="replace")[-400:]
                raise LabError(f"{node} did not start (launcher rc {launcher.poll()}): {tail.strip()}")
            time.sleep(0.02)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def power_off(cfg: LabConfig, node: str, timeout: float = 15.0) -> bool:
    """Hard power-off: SIGKILL PID 1 (the kernel kills the whole PID namespace), pull the cable,
    flush eth0. Returns True once every process of the node is gone."""
    with power_lock(cfg, node):
        pids = init_pids(cfg, node)
        proc.signal_pids(pids, signal.SIGKILL)
        netns.set_port(cfg.topology, node, up=False)
        netns.flush_node(cfg.topology, node)
        return not proc.wait_gone(pids, timeout)


def shutdown(cfg: LabConfig, node: str, timeout: float | None = None) -> bool:
    """Graceful stop: SIGTERM PID 1 (pacemaker moves resources away first), SIGKILL at the deadline.

    Returns True if the node stopped by itself within the deadline.
    """
    pids = init_pids(cfg, node)
    proc.signal_pids(pids, signal.SIGTERM)
    left = proc.wait_gone(pids, cfg.stop_timeout if timeout is None else timeout)
    if left:
        power_off(cfg, node)
    else:
        with power_lock(cfg, node):
            netns.set_port(cfg.topology, node, up=False)
            netns.flush_node(cfg.topology, node)
    return not left


def remove_tree(path: Path) -> None:
    """rmtree that never follows symlinks (the ocf overlay links into the repository)."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)

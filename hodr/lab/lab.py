"""A Pacemaker/Corosync cluster on one machine: the :class:`Lab` API used by ``hodr lab`` and tests.

A node is a set of network + mount + UTS + IPC + PID namespaces running real corosync and
pacemakerd; nodes are wired by veth pairs to a bridge in its own namespace, and a client
namespace plays the application host (lab.md). Typical use in a test::

    lab = Lab.create(3, name="hodrt3")
    try:
        lab.up()                                   # formed, fencing device started
        lab.run("node1", "pcs", "resource", "create", "vip", "ocf:hodr:hodr-vip", ...)
        wait_for(lambda: lab.locate("vip"), 20, "vip started")
        lab.crash(lab.locate("vip")[0])
    finally:
        lab.down()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from hodr.lab import cluster, netns, power, proc
from hodr.lab import node as nodes
from hodr.lab.teardown import NETNS_MARK, TeardownReport, teardown
from hodr.lab.topology import (
    FAST_DC_DEADTIME,
    FAST_TOKEN_MS,
    NODE_HOME,
    NODE_PATH,
    LabConfig,
    LabError,
    Topology,
    lab_name,
    state_dir_for,
)

_HERE = Path(__file__).resolve().parent
#: Binaries the lab needs on the host (and therefore inside nodes), with the package to install.
REQUIRED = {
    "corosync": "corosync", "corosync-cfgtool": "corosync", "pacemakerd": "pacemaker",
    "crm_mon": "pacemaker-cli-utils", "cibadmin": "pacemaker-cli-utils",
    "stonith_admin": "pacemaker-cli-utils", "nsenter": "util-linux", "unshare": "util-linux",
    "mount": "mount", "ip": "iproute2",
}  # fmt: skip
FENCE_DEVICE = "fence-lab"


def check_host() -> None:
    """Refuse early, in one line, on what would otherwise fail deep inside ``up``."""
    if os.geteuid() != 0:
        raise LabError("hodr lab needs root (it creates namespaces, mounts and veth pairs)")
    for binary, package in REQUIRED.items():
        if shutil.which(binary, path=NODE_PATH) is None:
            raise LabError(f"{binary} not found in {NODE_PATH}: install the {package} package")


class Lab:
    """One lab; all state lives in ``cfg.state`` so another process can inspect or tear it down."""

    def __init__(self, cfg: LabConfig) -> None:
        self.cfg = cfg
        #: children of this process (node launchers, the controller), reaped so none stays a zombie
        self._launchers: list[subprocess.Popen[bytes]] = []

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        size: int = 3,
        *,
        name: str | None = None,
        state_dir: str | Path | None = None,
        subnet: str | None = None,
        fast: bool = True,
        token_ms: int | None = None,
        token_coefficient_ms: int | None = None,
        fencing: bool = True,
        reboot_delay: float = 10.0,
        stop_timeout: float = 130.0,
    ) -> Lab:
        """Describe a lab (nothing is started until :meth:`up`).

        ``fast`` seeds dc-deadtime=2s and uses a 1000 ms token; ``fast=False`` keeps pacemaker's
        and corosync's defaults for realistic timings. ``token_ms`` overrides either.
        """
        name = lab_name(name)
        topo = Topology(name=name, size=size, **({"subnet": subnet} if subnet else {}))
        cfg = LabConfig(
            topology=topo,
            state_dir=str(state_dir_for(name, state_dir)),
            dc_deadtime=FAST_DC_DEADTIME if fast else None,
            token_ms=token_ms if token_ms is not None else (FAST_TOKEN_MS if fast else None),
            token_coefficient_ms=token_coefficient_ms,
            fencing=fencing,
            reboot_delay=reboot_delay,
            stop_timeout=stop_timeout,
        )
        return cls(cfg)

    @classmethod
    def open(cls, name: str | None = None, state_dir: str | Path | None = None) -> Lab:
        """The lab that ``hodr lab up`` (maybe in another process) started."""
        name = lab_name(name)
        path = state_dir_for(name, state_dir) / "lab.json"
        try:
            return cls(LabConfig.from_json(path.read_text()))
        except FileNotFoundError:
            raise LabError(f"lab {name!r} is not up (no {path})") from None

    # -- naming -------------------------------------------------------------------------------

    @property
    def topology(self) -> Topology:
        return self.cfg.topology

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def nodes(self) -> list[str]:
        return self.topology.nodes

    @property
    def vip(self) -> str:
        return self.topology.vip

    @property
    def client_address(self) -> str:
        return self.topology.client_address

    @property
    def prefixlen(self) -> int:
        return self.topology.prefixlen

    def address(self, node: str) -> str:
        return self.topology.address(node)

    def host_path(self, node: str, path: str) -> Path:
        """Host path of a node's private directory, e.g. ``/var/lib/hodr`` or ``/var/log/pacemaker``."""
        if path not in nodes.STACK_DIRS:
            raise LabError(f"{path} is not a private node directory ({', '.join(nodes.STACK_DIRS)})")
        return self.cfg.node_dir(node) / "fs" / nodes.fs_name(path)

    # -- lifecycle ----------------------------------------------------------------------------

    def up(self, timeout: float = 90.0) -> float:
        """Create everything, boot all nodes, wait until formed; returns formation seconds.

        Fencing is configured only after every node is online: with a device present, a node
        the cluster has never seen would be fenced at startup. On any failure the lab is torn
        down (logs kept next to the state dir) before the error propagates.
        """
        check_host()
        self._refuse_existing()
        try:
            self._build()
            t0 = time.monotonic()
            for n in self.nodes:
                self.boot(n)
            formed = self.wait_formed(timeout, since=t0)
            if self.cfg.fencing:
                self.configure_fencing(timeout=max(10.0, timeout - formed))
            return formed
        except BaseException as exc:
            logs = self.cfg.state.parent / f"{self.name}-failed-logs"
            shutil.rmtree(logs, ignore_errors=True)
            self.down(logs_to=logs)
            if isinstance(exc, LabError):
                raise LabError(f"{exc} (lab torn down; logs in {logs})") from exc
            raise

    def _refuse_existing(self) -> None:
        left = netns.existing(self.name)
        if left or self.cfg.state.exists():
            raise LabError(f"lab {self.name!r} already exists ({', '.join(left) or self.cfg.state}): "
                           "run 'hodr lab down' first")  # fmt: skip

    def _build(self) -> None:
        """State dir, private copies of the long-lived scripts, overlays' lower dirs, network."""
        st = self.cfg.state
        st.mkdir(parents=True, exist_ok=True)
        (st / "lab.json").write_text(self.cfg.to_json())
        for sub in ("bin", "sbin", "ocf", "localbin", "power", "nodes"):
            (st / sub).mkdir(exist_ok=True)
        shutil.copy2(_HERE / "node_init.py", st / "bin" / "node_init.py")
        shutil.copy2(_HERE / "fence_lab.py", st / "sbin" / "fence_lab")
        os.chmod(st / "sbin" / "fence_lab", 0o755)
        ocf = Path(self.cfg.ocf_dir)
        ocf.mkdir(parents=True, exist_ok=True)
        (st / "ocf" / "hodr").symlink_to(ocf)
        self._write_wrappers(st / "localbin")
        if not netns.NETNS_DIR.exists():
            (st / NETNS_MARK).touch()
        netns.create(self.topology)
        for n in self.nodes:
            nodes.prepare(self.cfg, n)
        self._launchers.append(power.start(self.cfg))

    def _write_wrappers(self, d: Path) -> None:
        """``python3`` and ``hodr`` inside nodes: the interpreter running the lab, hodr importable.

        Nodes run everything with a fixed PATH (lab.md §11), so an agent's ``#!/usr/bin/env
        python3`` finds this wrapper (in /usr/local/bin) instead of the system python, which may
        lack hodr's dependencies.

        ``python3`` falls back to the system interpreter for a user who cannot run the lab's (one
        in a venv under /root, mode 0700): ocf-tester runs ``meta-data`` as ``nobody``, which
        needs only the standard library and hodr's source.
        """
        pp = f'PYTHONPATH="{self.cfg.package_root}${{PYTHONPATH:+:$PYTHONPATH}}"'
        py = self.cfg.python
        scripts = {
            "python3": f'#!/bin/sh\n{pp}\nexport PYTHONPATH\n[ -x "{py}" ] && exec "{py}" "$@"\n'
            'exec /usr/bin/python3 "$@"\n',
            "hodr": f'#!/bin/sh\n{pp} exec "{self.cfg.python}" -m hodr "$@"\n',
        }
        for fname, text in scripts.items():
            (d / fname).write_text(text)
            os.chmod(d / fname, 0o755)

    def down(self, logs_to: Path | None = None, timeout: float | None = None) -> TeardownReport:
        """Tear the lab down completely (idempotent; also for a lab left by a crashed run)."""
        report = teardown(self.name, self.cfg.state, logs_to=logs_to, timeout=timeout, reap=self._launchers)
        self._launchers.clear()
        return report

    # -- power and faults -----------------------------------------------------------------------

    def boot(self, node: str) -> None:
        """Power the node on (no-op if on). Does not wait for it to rejoin: see :meth:`wait_online`."""
        launcher = nodes.power_on(self.cfg, self.topology.node(node))
        if launcher is not None:
            self._launchers.append(launcher)
        self._reap()

    def crash(self, node: str) -> None:
        """Hard power-off: SIGKILL of the node's PID 1, cable pulled, addresses flushed.

        The node stays off until fenced with reboot (fence_lab powers it on after the reboot
        delay) or :meth:`boot`.
        """
        node = self.topology.node(node)
        if not nodes.power_off(self.cfg, node):
            raise LabError(f"{node} did not power off")
        self._reap()

    def stop(self, node: str, timeout: float | None = None) -> bool:
        """Graceful shutdown (SIGTERM to PID 1: pacemaker moves resources away first)."""
        ok = nodes.shutdown(self.cfg, self.topology.node(node), timeout)
        self._reap()
        return ok

    def isolate(self, node: str) -> None:
        """Pull the node's cable at the bridge; it stays pulled across reboots until :meth:`heal`."""
        node = self.topology.node(node)
        with nodes.power_lock(self.cfg, node):
            (self.cfg.node_dir(node) / "isolated").touch()
            netns.set_port(self.topology, node, up=False)

    def heal(self, node: str) -> None:
        """Plug the cable back in (only if the node is powered on; a powered-off node has no link)."""
        node = self.topology.node(node)
        with nodes.power_lock(self.cfg, node):
            (self.cfg.node_dir(node) / "isolated").unlink(missing_ok=True)
            if nodes.pid1(self.cfg, node):
                netns.set_port(self.topology, node, up=True)

    def pid(self, node: str) -> int | None:
        """Host pid of the node's PID 1, None while powered off."""
        return nodes.pid1(self.cfg, self.topology.node(node))

    def is_running(self, node: str) -> bool:
        self._reap()
        return self.pid(node) is not None

    def is_isolated(self, node: str) -> bool:
        return nodes.is_isolated(self.cfg, self.topology.node(node))

    def _reap(self) -> None:
        for p in self._launchers:
            p.poll()
        self._launchers = [p for p in self._launchers if p.returncode is None]

    # -- commands -----------------------------------------------------------------------------

    def exec_argv(self, node: str, cmd: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """argv that runs ``cmd`` inside a node: all of its namespaces, a clean environment."""
        node = self.topology.node(node)
        pid = self.pid(node)
        if pid is None:
            raise LabError(f"{node} is down")
        return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--",
                *self._clean_env(env), *cmd]  # fmt: skip

    def client_argv(self, cmd: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        return ["ip", "netns", "exec", self.topology.client_netns, *self._clean_env(env), *cmd]

    @staticmethod
    def _clean_env(env: Mapping[str, str] | None) -> list[str]:
        base = {"PATH": NODE_PATH, "HOME": NODE_HOME, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        if os.environ.get("TERM"):
            base["TERM"] = os.environ["TERM"]
        base.update(env or {})
        return ["env", "-i", *(f"{k}={v}" for k, v in base.items())]

    def run(
        self,
        node: str,
        *cmd: str,
        timeout: float = 30.0,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside ``node``; raises :class:`CommandError` on failure if ``check``."""
        return proc.run(self.exec_argv(node, cmd, env), timeout=timeout, check=check, input=input,
                        where=self.topology.node(node))  # fmt: skip

    def client_run(
        self, *cmd: str, timeout: float = 30.0, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on the client (application host) namespace."""
        return proc.run(self.client_argv(cmd), timeout=timeout, check=check, input=input, where="client")

    def client_popen(self, *cmd: str, **kwargs: object) -> subprocess.Popen[str]:
        """A long-running client command (e.g. ``ping -i 0.05 VIP``); ``down`` kills leftovers."""
        return subprocess.Popen(self.client_argv(cmd), text=True, start_new_session=True, **kwargs)  # type: ignore[call-overload]

    # -- cluster state ------------------------------------------------------------------------

    def live_nodes(self) -> list[str]:
        return [n for n in self.nodes if self.is_running(n)]

    def _via(self, via: str | None) -> str:
        if via is not None:
            return self.topology.node(via)
        live = self.live_nodes()
        preferred = [n for n in live if not self.is_isolated(n)]
        if not (preferred or live):
            raise LabError(f"lab {self.name!r}: no node is running")
        return (preferred or live)[0]

    def crm_mon_xml(self, node: str | None = None, timeout: float = 15.0) -> str:
        """``crm_mon -1 --output-as=xml`` as seen from ``node`` (default: a running node)."""
        return self.run(self._via(node), "crm_mon", "-1", "--output-as=xml", timeout=timeout).stdout

    def view(self, node: str | None = None) -> cluster.ClusterView:
        """Parsed cluster state as seen from ``node``."""
        via = self._via(node)
        return cluster.parse(self.crm_mon_xml(via), seen_from=via)

    def locate(self, resource: str, via: str | None = None, role: str | None = None) -> list[str]:
        """Nodes where ``resource`` (or a clone id) is active, optionally only in ``role``."""
        return self.view(via).locate(resource, role)

    def wait_formed(self, timeout: float, via: str | None = None, since: float | None = None) -> float:
        """Wait until all nodes are online with a quorate DC; returns seconds since ``since``."""
        t0 = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        last: object = "no answer yet"
        while time.monotonic() < deadline:
            self._check_nodes_alive()
            try:
                v = self.view(via)
                if v.formed:
                    return time.monotonic() - t0
                last = f"dc={v.dc} online={sorted(v.online)} quorate={v.quorate}"
            except LabError as exc:
                last = exc
            time.sleep(0.2)
        raise LabError(f"lab {self.name!r} did not form within {timeout:.0f}s (last: {last})")

    def _check_nodes_alive(self) -> None:
        for n in self.nodes:
            if not self.is_running(n) and not self.is_isolated(n):
                log = self.cfg.node_dir(n) / "init.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
                raise LabError(f"{n} is not running: {' | '.join(tail)}")

    def wait_online(self, nodes_: Sequence[str], timeout: float, via: str | None = None) -> float:
        """Wait until ``nodes_`` are all online as seen from ``via``; returns seconds waited."""
        want = {self.topology.node(n) for n in nodes_}
        return self._wait(lambda v: want <= v.online, timeout, via, f"{sorted(want)} online")

    def wait_offline(self, node: str, timeout: float, via: str | None = None) -> float:
        """Wait until ``node`` is cleanly offline (fenced or stopped, not UNCLEAN) from ``via``."""
        node = self.topology.node(node)

        def gone(v: cluster.ClusterView) -> bool:
            s = v.nodes.get(node)
            return s is not None and not s.online and not s.unclean

        return self._wait(gone, timeout, via, f"{node} offline")

    def _wait(self, pred: object, timeout: float, via: str | None, what: str) -> float:
        t0 = time.monotonic()
        last: object = None
        while time.monotonic() - t0 < timeout:
            try:
                v = self.view(via)
                if pred(v):  # type: ignore[operator]
                    return time.monotonic() - t0
                last = f"online={sorted(v.online)} dc={v.dc}"
            except LabError as exc:
                last = exc
            time.sleep(0.2)
        raise LabError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last})")

    def configure_fencing(self, timeout: float = 30.0) -> None:
        """Create the fence_lab device for all nodes and wait until every node has it registered."""
        hosts = " ".join(self.nodes)
        xml = (
            f'<primitive id="{FENCE_DEVICE}" class="stonith" type="fence_lab">'
            f'<instance_attributes id="{FENCE_DEVICE}-ia">'
            f'<nvpair id="{FENCE_DEVICE}-ia-hosts" name="pcmk_host_list" value="{hosts}"/>'
            f"</instance_attributes><operations>"
            f'<op id="{FENCE_DEVICE}-monitor-60s" name="monitor" interval="60s"/>'
            f"</operations></primitive>"
        )
        via = self._via(None)
        self.run(via, "cibadmin", "--create", "-o", "resources", "--xml-text", xml)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            registered = all(
                FENCE_DEVICE in self.run(n, "stonith_admin", "--list-registered", check=False).stdout
                for n in self.live_nodes()
            )
            if registered and self.locate(FENCE_DEVICE, via):
                return
            time.sleep(0.2)
        raise LabError(f"fence device {FENCE_DEVICE} not started within {timeout:.0f}s")

    def fence_history(self, via: str | None = None) -> list[dict[str, str]]:
        """Fencing events known to ``via`` (``stonith_admin --history '*' --verbose``), oldest first.

        ``--verbose`` matters: without it pacemaker 2.1.5 folds events of one requester into the
        latest one, so a second fencing by the same DC hides the first (or vice versa).
        """
        out = self.run(
            self._via(via), "stonith_admin", "--history", "*", "--verbose", "--output-as=xml"
        ).stdout
        return [dict(el.attrib) for el in ET.fromstring(out).iter("fence_event")][::-1]

    def fence_count(self, node: str, via: str | None = None) -> int:
        """Number of successful fencing events targeting ``node`` (take it before a fault)."""
        node = self.topology.node(node)
        return sum(
            1 for e in self.fence_history(via) if e.get("target") == node and e.get("status") == "success"
        )

    def wait_fenced(self, node: str, timeout: float, *, before: int, via: str | None = None) -> float:
        """Wait until ``node`` has been fenced successfully more than ``before`` times."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if self.fence_count(node, via) > before:
                    return time.monotonic() - t0
            except LabError:
                pass
            time.sleep(0.2)
        raise LabError(f"{node} was not fenced within {timeout:.0f}s")

    def controller_pid(self) -> int | None:
        """Pid of the power controller serving fence_lab, None if it is not running."""
        return proc.read_pid(self.cfg.state / "power.pid", power.argv(self.cfg))

    def status(self) -> dict[str, object]:
        """Nodes (up/down/isolated), pids, addresses and one live node's ``crm_mon -1``."""
        node_info = {}
        for n in self.nodes:
            pid = self.pid(n)
            state = "down" if pid is None else ("isolated" if self.is_isolated(n) else "up")
            node_info[n] = {
                "state": state,
                "pid": pid,
                "address": self.address(n),
                "netns": self.topology.netns(n),
            }
        summary = ""
        try:
            summary = self.run(self._via(None), "crm_mon", "-1", timeout=15).stdout
        except LabError as exc:
            summary = f"(crm_mon unavailable: {exc})"
        return {
            "name": self.name,
            "state_dir": str(self.cfg.state),
            "nodes": node_info,
            "client": {"address": self.client_address, "netns": self.topology.client_netns},
            "vip": self.vip,
            "fencing": self.cfg.fencing,
            "power_controller": self.controller_pid(),
            "token_ms": self.cfg.token_ms,
            "dc_deadtime": self.cfg.dc_deadtime,
            "crm_mon": summary,
        }

"""The lab's power switch (a PDU stand-in) on the host, serving fence_lab inside the nodes.

Run as ``python -m hodr.lab _power <state dir>`` in its own session (pid = process group), so
teardown can stop it and everything it forked first and no pending fence-reboot can start a node
during teardown (lab.md §10). It answers a reboot as soon as the node is off and powers it on
``reboot_delay`` seconds later: a node rebooting instantly rejoins before the fencing result is
broadcast, sees "We were allegedly just fenced" and stops for good (lab.md §11).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from hodr.lab import node as nodes
from hodr.lab.topology import LabConfig, LabError

POLL = 0.05


def argv(cfg: LabConfig) -> list[str]:
    """Exact command line of the controller; teardown matches it verbatim."""
    return [cfg.python, "-m", "hodr.lab", "_power", str(cfg.state)]


def power_dir(cfg: LabConfig) -> Path:
    return cfg.state / "power"


class Controller:
    def __init__(self, cfg: LabConfig) -> None:
        self.cfg = cfg
        self.dir = power_dir(cfg)
        self.pending_on: dict[str, float] = {}
        self.launchers: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def log(self, msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} power: {msg}", flush=True)

    def is_on(self, node: str) -> bool:
        return nodes.pid1(self.cfg, node) is not None

    def boot(self, node: str) -> None:
        launcher = nodes.power_on(self.cfg, node)
        if launcher is not None:
            self.launchers.append(launcher)
        self.log(f"{node} powered on")

    def handle(self, req: dict) -> dict:
        """One fence_lab request -> answer (rc 0 ok; status: 0 on, 2 off)."""
        action, port = req.get("action", ""), req.get("port", "")
        topo = self.cfg.topology
        if action == "monitor":
            return {"rc": 0}
        if action == "list":
            return {"rc": 0, "output": "\n".join(f"{n},{n}" for n in topo.nodes)}
        try:
            node = topo.node(port)
        except LabError as exc:
            return {"rc": 1, "message": str(exc)}
        if action == "status":
            return {
                "rc": 0 if self.is_on(node) else 2,
                "output": "Status: ON" if self.is_on(node) else "Status: OFF",
            }
        if action in ("off", "reboot"):
            self.pending_on.pop(node, None)
            if not nodes.power_off(self.cfg, node):
                return {"rc": 1, "message": f"{node} did not power off"}
            self.log(f"{node} powered off ({action} requested by {req.get('from', '?')})")
            if action == "reboot":
                self.pending_on[node] = time.monotonic() + self.cfg.reboot_delay
            return {"rc": 0}
        if action == "on":
            self.pending_on.pop(node, None)
            self.boot(node)
            return {"rc": 0}
        return {"rc": 1, "message": f"unsupported action {action!r}"}

    def step(self) -> None:
        for req_file in sorted(self.dir.glob("req-*.json")):
            rid = req_file.name[len("req-") : -len(".json")]
            try:
                req = json.loads(req_file.read_text())
            except (OSError, ValueError):
                continue
            req_file.unlink(missing_ok=True)
            try:
                reply = self.handle(req)
            except Exception as exc:  # noqa: BLE001 - a fence request must always get an answer
                reply = {"rc": 1, "message": f"controller error: {exc}"}
            self.log(
                f"{req.get('action')} {req.get('port', '')} from {req.get('from', '?')} -> rc {reply['rc']}"
            )
            tmp = self.dir / f".ans-{rid}"
            tmp.write_text(json.dumps(reply))
            os.replace(tmp, self.dir / f"ans-{rid}.json")
        now = time.monotonic()
        for node, when in list(self.pending_on.items()):
            if when <= now and not self.stopping:
                del self.pending_on[node]
                try:
                    self.boot(node)
                except LabError as exc:
                    self.log(f"power on of {node} failed: {exc}")
        for launcher in self.launchers:
            launcher.poll()
        self.launchers = [p for p in self.launchers if p.returncode is None]

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        self.log(f"ready, reboot delay {self.cfg.reboot_delay}s")
        while not self.stopping:
            self.step()
            time.sleep(POLL)
        self.log("stopped")
        return 0

    def _on_term(self, _sig: int, _frame: object) -> None:
        self.stopping = True
        self.pending_on.clear()


def start(cfg: LabConfig) -> subprocess.Popen[bytes]:
    """Start the controller in its own session (pid = process group); the caller reaps it."""
    d = power_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8",
           "PYTHONPATH": cfg.package_root, "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    with open(cfg.state / "power.log", "ab") as logf:
        p = subprocess.Popen(
            argv(cfg), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            env=env, cwd="/", start_new_session=True, close_fds=True,
        )  # fmt: skip
    (cfg.state / "power.pid").write_text(f"{p.pid}\n")
    return p


def main(args: list[str]) -> int:
    state = Path(args[0])
    cfg = LabConfig.from_json((state / "lab.json").read_text())
    return Controller(cfg).run()

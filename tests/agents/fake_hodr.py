"""Stand-ins for the hodr daemon and for Pacemaker's attribute tools, for the hodr-replica tests.

Why fakes are allowed here: they fake *our own* interface — the status file and control socket of
architecture §6 (written with the real ``hodr.status`` code) — so the agent is tested against the
contract, not against a pipeline, PostgreSQL or a cluster.

Two programs in one file, chosen by the first argument:

``fake_hodr.py run [--role ROLE] CONFIG``
    A fake daemon. It reads the real YAML config (``run_dir``, ``data_dir``, ``node``,
    ``status_interval_s``), writes ``status.json`` every interval and serves ``control.sock``:
    ``status``, ``promote {epoch, deadline_s, require_sync}``, ``demote``, ``follow``, ``drain``,
    ``pause-apply``, ``resume-apply``, ``stop``. Durable facts (epoch, positions, primary terms,
    divergence, knobs) live in ``<data_dir>/fake-state.json``; a test may write it before start.
    Test-only request ``fake {set: {...}, crash: bool, hang: bool, backdate: s}`` changes them at
    run time: ``crash`` exits at once leaving the snapshot behind, ``hang`` stops the status
    writes, the control replies and SIGTERM (only SIGKILL ends it) after a last snapshot dated
    ``backdate`` seconds back. Every request is appended to
    ``<run_dir>/fake-requests.jsonl``.

``fake_hodr.py crm_attribute|attrd_updater|crm_node ARGS``
    Pacemaker's tools, with their exit codes, output formats and quirks as seen on 2.1.5 (with
    ``OCF_RESKEY_CRM_meta_on_node`` set, ``attrd_updater -Q -A`` answers for that node only),
    storing values in ``$FAKE_PCMK_DIR/attrs.json``. Without ``FAKE_PCMK_DIR`` they behave like a
    node outside any cluster (exit 102, "Could not connect"). The local node is
    ``OCF_RESKEY_CRM_meta_on_node``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hodr.status import Status

STATE_FILE = "fake-state.json"
REQUESTS_FILE = "fake-requests.jsonl"
DEFAULT_STATE: dict[str, Any] = {
    "epoch": 1,
    "durable": "1:0/1000",
    "applied": "1:0/1000",
    "primary_connected": False,
    "lag_bytes": 0,
    "in_sync": True,
    "peers": [],
    "primary_epochs": [],
    "diverged": False,
    "report_guard_facts": True,
    "startup_cycles": 1,  # status cycles spent as "starting"
    "promote_cycles": 2,  # cycles a promote stays "in-progress"
    "demote_cycles": 1,
    "refuse_promote": "",
    "exit_on_start": "",  # a startup failure: write a failed status with this error, exit 1
}


class FakeDaemon:
    def __init__(self, config: str, role: str) -> None:
        from hodr.config import load  # the daemon only: the fake tools must start fast

        self.cfg = load(config)
        self.run_dir = self.cfg.run_path
        self.state_path = self.cfg.data_path / STATE_FILE
        self.cfg.data_path.mkdir(parents=True, exist_ok=True)
        saved = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(self.state_path.read_text())
        self.state = {**DEFAULT_STATE, **saved}
        self.target_role = role
        self.role = "starting"
        self.cycles = 0
        self.pending: dict[str, Any] | None = None  # a role change in progress
        self.following: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.crash = threading.Event()
        self.hang = threading.Event()

    # --------------------------------------------------------------------------- persistence
    def save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, sort_keys=True))
        os.replace(tmp, self.state_path)

    def snapshot(self) -> Status:
        from hodr.status import PeerStatus, Status

        s = self.state
        extra: dict[str, Any] = {"following": self.following, "fake": True}
        if s["report_guard_facts"]:
            extra["primary_epochs"] = s["primary_epochs"]
            extra["diverged"] = s["diverged"]
        peers = tuple(PeerStatus(**p) for p in s["peers"]) if self.role == "primary" else ()
        return Status(
            role=self.role,
            node=self.cfg.node,
            epoch=s["epoch"],
            sentence=f"fake {self.role} epoch {s['epoch']} at {s['durable']}",
            pid=os.getpid(),
            version="fake",
            wall_time=time.time(),
            monotonic=time.monotonic(),
            capture=s["durable"] if self.role == "primary" else "",
            durable_commit=s["durable"],
            applied=s["applied"],
            primary_connected=bool(s["primary_connected"]) and self.role == "standby",
            primary_down_s=float(s.get("primary_down_s", 0.0)),
            lag_bytes=s["lag_bytes"],
            peers=peers,
            error=s.get("error", ""),
            db_down_s=float(s.get("db_down_s", 0.0)),
            extra=extra,
        )

    # -------------------------------------------------------------------------------- cycle
    def cycle(self) -> None:
        from hodr.status import write_status

        with self.lock:
            if self.hang.is_set():
                return
            self.cycles += 1
            if self.role == "starting" and self.cycles > self.state["startup_cycles"]:
                self.role = self.target_role
            if self.pending is not None:
                self.pending["cycles"] -= 1
                if self.pending["cycles"] <= 0:
                    self.finish(self.pending)
                    self.pending = None
            write_status(self.run_dir, self.snapshot())

    def finish(self, change: dict[str, Any]) -> None:
        s = self.state
        if change["to"] == "primary":
            s["epoch"] = change["epoch"]
            s["primary_epochs"] = [*s["primary_epochs"], {"epoch": change["epoch"], "last": None}]
            s["diverged"] = False
            self.role = "primary"
        else:
            terms = s["primary_epochs"]
            if terms:
                terms[-1]["last"] = s["durable"]
            s["diverged"] = False  # a clean demote: the final marker was acked
            self.role = "standby"
        self.save()

    # ------------------------------------------------------------------------------ control
    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        from hodr.status import write_status

        with contextlib.suppress(OSError):
            with open(self.run_dir / REQUESTS_FILE, "a") as fh:
                fh.write(json.dumps(req) + "\n")
        if self.hang.is_set():
            threading.Event().wait()  # never answers
        what = req.get("request")
        with self.lock:
            if what == "status":
                return {"result": "done", "status": json.loads(self.snapshot().to_json())}
            if what == "stop":
                self.stop_event.set()
                return {"result": "in-progress", "sentence": "stopping"}
            if what == "fake":
                self.state.update(req.get("set", {}))
                self.save()
                if req.get("crash"):
                    self.crash.set()
                if req.get("hang"):
                    if req.get("backdate"):  # a last snapshot that is already old
                        old = self.snapshot()
                        write_status(self.run_dir, replace(old, monotonic=old.monotonic - req["backdate"]))
                    self.hang.set()
                return {"result": "done"}
            if what == "promote":
                return self.promote(req)
            if what == "demote":
                if self.role == "standby" and self.pending is None:
                    return {"result": "done"}
                if self.role != "primary":
                    return {"result": "refused", "reason": f"cannot demote: role is {self.role}"}
                if self.pending is None:
                    self.pending = {"to": "standby", "cycles": self.state["demote_cycles"]}
                return {"result": "in-progress", "sentence": "demoting"}
            if what == "follow":
                if self.role != "standby":
                    return {"result": "refused", "reason": f"cannot follow as {self.role}"}
                self.following = {"host": req.get("host"), "port": req.get("port")}
                return {"result": "done"}
            if what in ("drain", "pause-apply", "resume-apply"):
                return {"result": "done"}
        return {"result": "refused", "reason": f"unknown request {what!r}"}

    def promote(self, req: dict[str, Any]) -> dict[str, Any]:
        epoch = int(req["epoch"])
        if self.role == "primary" and self.state["epoch"] >= epoch:
            return {"result": "done"}
        if self.role != "standby":
            return {"result": "refused", "reason": f"cannot promote: role is {self.role}"}
        if self.state["refuse_promote"]:
            return {"result": "refused", "reason": self.state["refuse_promote"]}
        if req.get("require_sync") and not self.state["in_sync"]:
            return {"result": "refused", "reason": "not in sync with the last primary (require_sync)"}
        if epoch <= self.state["epoch"]:
            return {"result": "refused", "reason": f"epoch {epoch} is not above {self.state['epoch']}"}
        if self.pending is None:
            self.pending = {"to": "primary", "epoch": epoch, "cycles": self.state["promote_cycles"]}
        return {"result": "in-progress", "sentence": "draining"}

    # --------------------------------------------------------------------------------- main
    def run(self) -> int:
        from hodr.status import CONTROL_SOCKET, ControlServer, write_status

        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.state["exit_on_start"]:
            self.state["error"] = self.state["exit_on_start"]
            self.role = "failed"
            write_status(self.run_dir, self.snapshot())
            print(f"fatal: {self.state['exit_on_start']}", file=sys.stderr, flush=True)
            return 1
        server = ControlServer(self.run_dir / CONTROL_SOCKET, self.handle).start()
        interval = self.cfg.status_interval_s
        while not self.stop_event.is_set():
            if self.crash.is_set():
                os._exit(3)  # no cleanup: the snapshot and the socket stay behind
            if self.hang.is_set():
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                threading.Event().wait()
            self.cycle()
            self.stop_event.wait(min(interval, 0.05) if self.pending else interval)
        # no server.close(): its shutdown() waits out serve_forever's 0.5 s poll, per stop, in
        # every test; the socket file goes, the serving thread dies with the process
        with contextlib.suppress(FileNotFoundError):
            server.path.unlink()
        with self.lock:
            self.role = "stopped"
            write_status(self.run_dir, self.snapshot())
        return 0


# ------------------------------------------------------------------------- pacemaker tools


class ToolExit(Exception):
    def __init__(self, rc: int, stderr: str = "") -> None:
        self.rc = rc
        self.stderr = stderr


NOT_CONNECTED = {
    "crm_attribute": "Could not connect to the CIB: Transport endpoint is not connected",
    "attrd_updater": "Could not connect to attrd: Connection refused",
    "crm_node": "error: Could not connect to controller: Connection refused",
}


@contextlib.contextmanager
def attr_store(root: Path):  # type: ignore[no-untyped-def]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "attrs.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = root / "attrs.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {"status": {}, "private": {}, "crm_config": {}}
        yield data
        tmp = root / "attrs.tmp"
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)


def _opts(args: list[str], with_value: set[str]) -> tuple[dict[str, str], set[str]]:
    """A tiny getopt: ``-N x``/``--node=x``/``--node x`` → values; bare flags → set."""
    values: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            values[key] = value
        elif arg in with_value:
            values[arg] = args[i + 1]
            i += 1
        else:
            flags.add(arg)
        i += 1
    return values, flags


def _local_node() -> str:
    on_node = os.environ.get("OCF_RESKEY_CRM_meta_on_node")  # noqa: SIM112 - Pacemaker spells it so
    return on_node or os.environ.get("FAKE_PCMK_NODE") or "node1"


def crm_attribute(args: list[str], data: dict[str, Any]) -> str:
    values, flags = _opts(args, {"-N", "--node", "-v", "--update", "-n", "--name", "-t", "--type", "-l"})
    node = values.get("-N") or values.get("--node") or _local_node()
    if "--promotion" in flags or "-p" in flags:
        instance = os.environ.get("OCF_RESOURCE_INSTANCE")
        if not instance:
            raise ToolExit(64, "crm_attribute: -p/--promotion must be called from an OCF resource agent")
        name, table = f"master-{instance}", data["status"].setdefault(node, {})
    elif (values.get("--type") or values.get("-t")) == "crm_config":
        name, table = values.get("--name") or values["-n"], data["crm_config"]
    else:
        name, table = values.get("--name") or values["-n"], data["status"].setdefault(node, {})
    update = values.get("-v") or values.get("--update")
    if update is not None:
        table[name] = update
        return ""
    if "-D" in flags or "--delete" in flags:
        table.pop(name, None)
        return ""
    if name not in table:
        raise ToolExit(105, "crm_attribute: Error performing operation: No such device or address")
    if "-q" in flags or "--quiet" in flags:
        return f"{table[name]}\n"
    return f"scope=status  name={name} value={table[name]}\n"


def attrd_updater(args: list[str], data: dict[str, Any]) -> str:
    values, flags = _opts(args, {"-N", "--node", "-n", "--name", "-U", "--update"})
    name = values.get("-n") or values.get("--name")
    node = values.get("-N") or values.get("--node") or _local_node()
    table = data["private"].setdefault(name, {})
    update = values.get("-U") or values.get("--update")
    if update is not None:
        table[node] = update
        return ""
    if "-D" in flags or "--delete" in flags:
        if node in table:
            table[node] = ""
        return ""
    if "-Q" in flags or "--query" in flags:
        if not table:
            raise ToolExit(78, f"attrd_updater: Could not query value of {name}: attribute does not exist")
        nodes = sorted(table) if "-A" in flags or "--all" in flags else [node]
        if os.environ.get("OCF_RESKEY_CRM_meta_on_node"):  # noqa: SIM112 - Pacemaker spells it so
            nodes = [node]  # 2.1.5 narrows even -A to the node Pacemaker names (seen in the lab)
        return "".join(f'name="{name}" host="{n}" value="{table[n]}"\n' for n in nodes if n in table)
    raise ToolExit(64, "attrd_updater: no command")


def tool(name: str, args: list[str]) -> int:
    root = os.environ.get("FAKE_PCMK_DIR")
    if not root:
        print(f"{name}: {NOT_CONNECTED.get(name, 'not connected')}", file=sys.stderr)
        return 102
    if name == "crm_node":
        print(_local_node())
        return 0
    try:
        with attr_store(Path(root)) as data:
            out = (crm_attribute if name == "crm_attribute" else attrd_updater)(args, data)
    except ToolExit as exc:
        print(exc.stderr, file=sys.stderr)
        return exc.rc
    sys.stdout.write(out)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] in ("crm_attribute", "attrd_updater", "crm_node"):
        return tool(argv[1], argv[2:])
    if len(argv) >= 3 and argv[1] == "run":
        rest = argv[2:]
        role = "standby"
        if "--role" in rest:
            i = rest.index("--role")
            role = rest[i + 1]
            del rest[i : i + 2]
        return FakeDaemon(rest[0], role).run()
    print("usage: fake_hodr.py run [--role ROLE] CONFIG | crm_attribute|attrd_updater|crm_node ARGS")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

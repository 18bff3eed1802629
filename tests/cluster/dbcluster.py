"""A 3-node lab with PostgreSQL and hodr on every node, managed by Pacemaker (issue 4).

What each node gets, inside its own namespaces (docs/lab.md), the way a DBA would set up a VM:

- a PostgreSQL 15 cluster in the node's private ``/var/lib/postgresql`` (survives the node's
  reboots like a disk), socket in ``/var/lib/postgresql/run``, TCP on every address (the client
  reaches the primary through the VIP), started and stopped by the service script
  ``/etc/hodr/pg-service`` — the agent's ``services`` (``when: always``) run it; an application
  unit (``/etc/hodr/app-service``, ``when: primary``) answering its hostname on TCP 7000;
- ``/etc/hodr/hodr.yml`` (node1 says ``role: primary`` so it wins the bootstrap tie, the others
  standby; everyone lists the other two as standbys and all three as possible primary names)
  and a CA + certificate per node from ``hodr.certs`` in ``/etc/hodr/tls``;
- the resources from docs/replica-agent.md's pcs recipe (promotable clone, VIP colocated with
  the promoted instance, "promote, then start VIP; demote, then stop VIP").

Everything is read from the host without entering a node: hodr's status file through
``/proc/<node init>/root/run/hodr/status.json`` and the databases through their Unix sockets
under the node's host path (works while the node's network is cut).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from hodr import certs
from hodr.lab import Lab
from hodr.lab.topology import LabError
from tests.conftest import wait_for

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_HOME = "/var/lib/postgresql"
PGDATA = f"{PG_HOME}/data"
PGSOCK = f"{PG_HOME}/run"
DB = "app"
CONFIG = "/etc/hodr/hodr.yml"
RUN_DIR = "/run/hodr"
CLONE = "hodr-clone"
WRITER = Path(__file__).with_name("client_writer.py")
#: Every RTO/RPO line measured in this run; tests/cluster/conftest.py prints them at the end.
MEASURED: list[str] = []

SCHEMA = """
CREATE TABLE ledger (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
ALTER TABLE accounts REPLICA IDENTITY FULL;
INSERT INTO accounts SELECT g, 0 FROM generate_series(0, 9) g;
"""
TABLES = ("ledger", "accounts")

PG_SERVICE = f"""#!/bin/sh
# PostgreSQL of this lab node: start | stop | ready (the agent's services run it)
B={PG_BIN}; D={PGDATA}; S={PGSOCK}
ready() {{ "$B/pg_isready" -q -h "$S" -p 5432 -t 2; }}
case "$1" in
ready) ready ;;
start)
    ready && exit 0
    install -d -o postgres -g postgres -m 2775 "$S"
    # After a power loss the pid file names a pid of the previous boot, which may now be
    # another process: remove it unless that pid really is a postmaster.
    if [ -f "$D/postmaster.pid" ]; then
        pid=$(head -n 1 "$D/postmaster.pid")
        tr '\\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'bin/postgres' || rm -f "$D/postmaster.pid"
    fi
    exec runuser -u postgres -- "$B/pg_ctl" -D "$D" -l {PG_HOME}/server.log -w -t 60 start >/dev/null ;;
stop)
    [ -f "$D/postmaster.pid" ] || exit 0
    exec runuser -u postgres -- "$B/pg_ctl" -D "$D" -m fast -w -t 60 stop >/dev/null ;;
*) echo "usage: $0 start|stop|ready" >&2; exit 2 ;;
esac
"""

#: An application unit of a lab node (``when: primary``): answers its hostname on TCP 7000, so
#: the client can tell through the VIP that the new primary started its services.
APP_PORT = 7000
APP_SERVICE = f"""#!/bin/sh
# application unit of this lab node: start | stop | ready (the agent's services run it)
P={RUN_DIR}/app.pid
ready() {{
    python3 -c 'import socket; socket.create_connection(("127.0.0.1", {APP_PORT}), 1).close()' 2>/dev/null
}}
case "$1" in
ready) ready ;;
start)
    ready && exit 0
    setsid python3 -c 'import socket
s = socket.create_server(("", {APP_PORT}))
name = socket.gethostname().encode() + b"\\n"
while True:
    c, _ = s.accept()
    c.sendall(name)
    c.close()' >/dev/null 2>&1 </dev/null &
    echo $! > "$P" ;;
stop)
    [ -f "$P" ] && kill "$(cat "$P")" 2>/dev/null
    rm -f "$P"; exit 0 ;;
*) echo "usage: $0 start|stop|ready" >&2; exit 2 ;;
esac
"""

PG_CONF = {
    "listen_addresses": "'*'",
    "port": "5432",
    "unix_socket_directories": f"'{PGSOCK}'",
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "shared_buffers": "16MB",
    "max_connections": "40",
    "log_min_messages": "warning",
    "wal_sender_timeout": "30s",
}


def node_connect(lab: Lab, node: str, db: str = DB, **kw: Any) -> psycopg.Connection[Any]:
    """A connection to ``node``'s PostgreSQL through its Unix socket under the node's host path
    (works while the node's network is cut)."""
    return psycopg.connect(
        host=str(lab.host_path(node, PG_HOME) / "run"),
        port=5432,
        dbname=db,
        user="postgres",
        autocommit=True,
        connect_timeout=3,
        **kw,
    )


def init_node_db(lab: Lab, node: str) -> None:
    """initdb in ``node``'s private ``/var/lib/postgresql`` with :data:`PG_CONF`, start it once
    with ``pg_ctl`` (the service script may not exist yet), create :data:`DB` and :data:`SCHEMA`.
    Leaves the server running."""
    run = lab.run
    run(node, "chown", "postgres:postgres", PG_HOME)
    run(node, "runuser", "-u", "postgres", "--", f"{PG_BIN}/initdb", "-D", PGDATA, "-U", "postgres",
        "--auth=trust", "-E", "UTF8", "--no-sync", timeout=120)  # fmt: skip
    conf = "".join(f"{k} = {v}\n" for k, v in PG_CONF.items())
    hba = "host all all 0.0.0.0/0 trust\nhost replication all 0.0.0.0/0 trust\n"
    data = lab.host_path(node, PG_HOME) / "data"
    with open(data / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write(conf)
    with open(data / "pg_hba.conf", "a", encoding="utf-8") as fh:
        fh.write(hba)
    # The script does not exist yet (provision writes it after): start directly once.
    run(node, "install", "-d", "-o", "postgres", "-g", "postgres", PGSOCK)
    run(node, "runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", PGDATA, "-l",
        f"{PG_HOME}/server.log", "-w", "-t", "60", "start", timeout=90)  # fmt: skip
    with node_connect(lab, node, "postgres") as conn:
        conn.execute(f"CREATE DATABASE {DB}")
    with node_connect(lab, node) as conn:
        conn.execute(SCHEMA)


def db_service(timeout_s: int) -> dict[str, Any]:
    """The node's PostgreSQL as a ``when: always`` service (the pg-service script)."""
    return {
        "name": "postgresql",
        "when": "always",
        "start": "/etc/hodr/pg-service start",
        "stop": "/etc/hodr/pg-service stop",
        "ready": "/etc/hodr/pg-service ready",
        "timeout_s": timeout_s,
    }


def node_yaml(
    node: str,
    *,
    role: str,
    sync: bool,
    primary_host: str,
    standbys: list[str],
    primary_names: list[str],
    services: list[dict[str, Any]],
    data_dir: str = "/var/lib/hodr/data",
    run_dir: str = RUN_DIR,
) -> dict[str, Any]:
    """A lab node's hodr YAML: its database over the Unix socket, mTLS with the files provision
    copies to /etc/hodr/tls, short heartbeats for the tests."""
    dsn = f"host={PGSOCK} port=5432 dbname={DB} user=postgres"
    return {
        "node": node,
        "role": role,
        "sync": sync,
        "data_dir": data_dir,
        "run_dir": run_dir,
        "status_interval_s": 0.5,
        "source": {"dsn": dsn, "slot": "hodr", "publication": "hodr", "application_name": "hodr"},
        "target": {"dsn": dsn},
        "transport": {
            "listen_host": "0.0.0.0",
            "port": 5440,
            "primary_host": primary_host,
            "standbys": [{"name": n} for n in standbys],
            "primary_name": primary_names,
            "heartbeat_s": 0.5,
            "dead_peer_s": 3,
            "reconnect_max_s": 1,
            "tls_ca": "/etc/hodr/tls/ca.pem",
            "tls_cert": "/etc/hodr/tls/node.pem",
            "tls_key": "/etc/hodr/tls/node.key",
        },
        "services": services,
    }


@dataclass
class DbCluster:
    """The lab plus what the tests need to drive and observe PostgreSQL and hodr in it."""

    lab: Lab
    workdir: Path
    sync: bool
    resource_params: dict[str, str] = field(default_factory=dict)

    # -- set-up ------------------------------------------------------------------------------
    def provision(self) -> None:
        """Databases, schema, certificates, YAML and service script on every node."""
        tls = self.workdir / "tls"
        certs.init_ca(tls)
        for node in self.lab.nodes:
            self._init_db(node)
            files = certs.issue(tls, node, force=True)
            etc = self.lab.host_path(node, "/etc/hodr")
            (etc / "tls").mkdir(parents=True, exist_ok=True)
            for src, name in ((files.ca, "ca.pem"), (files.cert, "node.pem"), (files.key, "node.key")):
                dst = etc / "tls" / name
                dst.write_bytes(Path(src).read_bytes())
                dst.chmod(0o600)
            for name, text in (("pg-service", PG_SERVICE), ("app-service", APP_SERVICE)):
                script = etc / name
                script.write_text(text)
                script.chmod(0o755)
            (etc / "hodr.yml").write_text(yaml.safe_dump(self.node_config(node), sort_keys=False))

    def _init_db(self, node: str) -> None:
        init_node_db(self.lab, node)

    def node_config(self, node: str) -> dict[str, Any]:
        services = [
            db_service(60),
            {"name": "app", "when": "primary", "start": "/etc/hodr/app-service start",
             "stop": "/etc/hodr/app-service stop", "ready": "/etc/hodr/app-service ready", "timeout_s": 20},
        ]  # fmt: skip
        cfg = node_yaml(
            node,
            role="primary" if node == self.lab.nodes[0] else "standby",
            sync=self.sync,
            primary_host=self.lab.vip,
            standbys=[n for n in self.lab.nodes if n != node],
            primary_names=list(self.lab.nodes),
            services=services,
        )
        if self.sync:
            cfg["sync_quorum"] = 1  # ANY 1 of the two standbys: a lost node never blocks commits
        return cfg

    def create_resources(self, monitor_s: int = 3) -> None:
        """docs/replica-agent.md's pcs recipe, with short monitor intervals for the tests."""
        params = " ".join(f"{k}={v}" for k, v in self.resource_params.items())
        cmds = [
            f"pcs resource create hodr ocf:hodr:hodr-replica config={CONFIG} {params} "
            f"op monitor interval={monitor_s}s role=Promoted timeout=20s "
            f"op monitor interval={monitor_s + 1}s role=Unpromoted timeout=20s "
            "promotable notify=true promoted-max=1 clone-node-max=1",
            f"pcs resource meta {CLONE} migration-threshold=3",
            "pcs resource defaults update resource-stickiness=100",
            f"pcs resource create hodr-vip ocf:hodr:hodr-vip ip={self.lab.vip} cidr_netmask=24 "
            "op monitor interval=2s --disabled",
            f"pcs constraint colocation add hodr-vip with Promoted {CLONE} INFINITY",
            f"pcs constraint order promote {CLONE} then start hodr-vip symmetrical=false",
            f"pcs constraint order demote {CLONE} then stop hodr-vip symmetrical=false",
            "pcs resource enable hodr-vip",
        ]
        for c in cmds:
            self.lab.run("node1", *shlex.split(c), timeout=60)

    # -- observation -------------------------------------------------------------------------
    def status(self, node: str) -> dict[str, Any] | None:
        """hodr's status snapshot on ``node`` (None if the node or the daemon is down)."""
        pid = self.lab.pid(node)
        if pid is None:
            return None
        try:
            return json.loads(Path(f"/proc/{pid}/root{RUN_DIR}/status.json").read_text())
        except (OSError, ValueError):
            return None

    def role(self, node: str) -> str:
        st = self.status(node)
        if st is None or not self.lab.is_running(node):
            return "down"
        return str(st.get("role", "?"))

    def control(self, node: str, request: str, **args: Any) -> dict[str, Any]:
        """A control request to ``node``'s daemon through its socket (via /proc/<init>/root)."""
        from hodr.status import control_request

        pid = self.lab.pid(node)
        assert pid is not None, f"{node} is down"
        return control_request(Path(f"/proc/{pid}/root{RUN_DIR}"), request, **args)

    def durable(self, node: str) -> str:
        return str((self.status(node) or {}).get("durable_commit", ""))

    def app_running(self, node: str) -> bool:
        """Is the ``when: primary`` application unit running on ``node`` (its pid file)?"""
        pid = self.lab.pid(node)
        return pid is not None and Path(f"/proc/{pid}/root{RUN_DIR}/app.pid").exists()

    def app_via_vip(self) -> str:
        """The hostname the application unit behind the VIP answers with ("" if none)."""
        code = (
            f"import socket; s = socket.create_connection(({self.lab.vip!r}, {APP_PORT}), 2); "
            "print(s.recv(64).decode().strip())"
        )
        r = self.lab.client_run(sys.executable, "-c", code, check=False, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""

    def sock(self, node: str) -> str:
        return str(self.lab.host_path(node, PG_HOME) / "run")

    def connect(self, node: str, db: str = DB, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.sock(node),
            port=5432,
            dbname=db,
            user="postgres",
            autocommit=True,
            connect_timeout=3,
            **kw,
        )

    def rows(self, node: str, table: str) -> list[tuple[Any, ...]]:
        with self.connect(node) as conn:
            return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()

    def ids(self, node: str) -> set[int]:
        with self.connect(node) as conn:
            return {r[0] for r in conn.execute("SELECT id FROM ledger")}

    def promoted(self) -> list[str]:
        return self.lab.locate(CLONE, role="Promoted")

    def wait_promoted(self, timeout: float, *, not_on: str | None = None) -> str:
        found: list[str] = []

        def ok() -> bool:
            found[:] = self.promoted()
            return len(found) == 1 and found[0] != not_on and self.role(found[0]) == "primary"

        wait_for(ok, timeout, f"one promoted hodr instance (not on {not_on})")
        return found[0]

    def wait_standbys_connected(self, primary: str, standbys: list[str], timeout: float = 90) -> None:
        def ok() -> bool:
            st = self.status(primary) or {}
            peers = {p.get("name"): p for p in st.get("peers", [])}
            return all(peers.get(s, {}).get("connected") for s in standbys)

        wait_for(ok, timeout, f"{standbys} connected to {primary}")

    def wait_equal(self, a: str, b: str, timeout: float = 90) -> None:
        def same() -> bool:
            try:
                return all(self.rows(a, t) == self.rows(b, t) for t in TABLES)
            except psycopg.Error:
                return False

        try:
            wait_for(same, timeout, f"{a} and {b} row-by-row equal")
        except AssertionError:
            raise AssertionError(f"{a} and {b} differ:\n{self.describe()}") from None

    def describe(self) -> str:
        """Every node's role, sentence and row counts, for failure messages."""
        lines = []
        for n in self.lab.nodes:
            st = self.status(n) or {}
            try:
                counts = {t: len(self.rows(n, t)) for t in TABLES}
            except psycopg.Error as exc:
                counts = {"db": str(exc).splitlines()[0]}  # type: ignore[dict-item]
            lines.append(f"{n}: {st.get('role')} {st.get('sentence', '')!r} {counts}")
        with contextlib.suppress(Exception):
            lines.append(self.lab.run(self.lab._via(None), "crm_mon", "-1", "-r", "-f", timeout=15).stdout)
        return "\n".join(lines)

    def collect_logs(self, dest: Path) -> None:
        """Copy every running node's hodr output and logs and the PostgreSQL log to ``dest``
        (the lab's own logs cover corosync and Pacemaker)."""
        import shutil

        for n in self.lab.nodes:
            d = dest / n
            d.mkdir(parents=True, exist_ok=True)
            pid = self.lab.pid(n)
            if pid is not None:
                with contextlib.suppress(OSError):
                    shutil.copy(f"/proc/{pid}/root{RUN_DIR}/daemon.out", d / "daemon.out")
            with contextlib.suppress(OSError, LabError):
                shutil.copy(self.lab.host_path(n, PG_HOME) / "server.log", d / "postgresql.log")
            with contextlib.suppress(OSError, LabError):
                shutil.copytree(self.lab.host_path(n, "/var/lib/hodr") / "data" / "log", d / "hodr-log")


@dataclass
class Writer:
    """The application: a client process in the client namespace inserting one row per
    transaction through the VIP and logging every id whose COMMIT returned OK (what the
    application saw committed), and every failure, with timestamps."""

    proc: Any
    log: Path

    @classmethod
    def start(cls, db: DbCluster, log: Path, interval: float = 0.02) -> Writer:
        proc = db.lab.client_popen(
            sys.executable, str(WRITER), db.lab.vip, DB, str(log), str(interval),
            stdout=open(log.with_suffix(".out"), "w"), stderr=open(log.with_suffix(".err"), "w"),  # noqa: SIM115
        )  # fmt: skip
        return cls(proc, log)

    def events(self) -> list[dict[str, Any]]:
        out = []
        with contextlib.suppress(OSError):
            for line in self.log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def committed(self) -> list[int]:
        return [e["id"] for e in self.events() if "id" in e]

    def wait_commits(self, n: int, timeout: float, after: float = 0.0) -> None:
        wait_for(
            lambda: (
                sum(1 for e in self.events() if "id" in e and e["t"] > after) >= n
                or self.proc.poll() is not None
            ),
            timeout,
            f"{n} commits through the VIP",
        )
        assert self.proc.poll() is None, f"writer died: {self.log.with_suffix('.err').read_text()[-2000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except Exception:  # noqa: BLE001
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait(10)


@contextlib.contextmanager
def writing(db: DbCluster, log: Path) -> Iterator[Writer]:
    w = Writer.start(db, log)
    try:
        yield w
    finally:
        w.stop()


def rto_rpo(name: str, writer: Writer, lost_at: float, db: DbCluster, survivor: str) -> tuple[float, int]:
    """Print and return RTO and RPO.

    RTO: the client's outage — the longest stretch without a successful write through the VIP,
    from the last write before ``lost_at`` (the fault, or the move being asked for) on; a
    commit that was already under way when the fault hit does not count as recovery.  RPO: writes
    the client saw committed that ``survivor`` (the new primary) lacks — the client's log is read
    first, so a write that commits meanwhile is not miscounted as lost."""
    events = writer.events()
    survivor_ids = db.ids(survivor)
    times = sorted(e["t"] for e in events if "id" in e)
    before = [t for t in times if t <= lost_at]
    after = [t for t in times if t > lost_at]
    assert after, f"{name}: no write succeeded after the fault"
    seq = before[-1:] + after
    rto = max((b - a for a, b in zip(seq, seq[1:], strict=False)), default=0.0)
    lost = sorted({e["id"] for e in events if "id" in e} - survivor_ids)
    line = f"RTO {name}: {rto:.1f}s   RPO {name}: {len(lost)} transactions lost {lost[:10]}"
    print("\n" + line)
    MEASURED.append(line)
    return rto, len(lost)


def now() -> float:
    return time.time()

"""ocf-tester on ocf:hodr:hodr-replica inside a lab node, with the real hodr daemon and a real
PostgreSQL 15 (docs/replica-agent.md "Testing it").

A 1-node lab (``hodrot``): node1 gets a PostgreSQL cluster in its private
``/var/lib/postgresql`` (``dbcluster.init_node_db``), the service script ``/etc/hodr/pg-service``,
a CA and certificate from ``hodr.certs`` and ``/etc/hodr/tester.yml``: ``role: standby``, one
other standby (node2, which does not exist: in async mode commits never wait for it) and the
database as its only service (``when: always``). No resource is configured in the CIB:
ocf-tester calls the agent directly, as Pacemaker would, with the node's real attribute daemon
and CIB behind ``crm_attribute``/``attrd_updater``.

ocf-tester runs meta-data, validate-all, monitors and probes of a stopped and a started
instance, start, notify without variables, demote of a standby, then promote (no notified
transition: the agent accepts that for a lone instance) and demote three times ("Checking for
promote action", "promote", "Promoting resource"), a demote of a standby and a promote of a
primary in between, stop, and start/stop twice more. So the real daemon becomes primary in epochs
2, 3 and 4 against the real database and is demoted back each time. Each demote waits for node2's
ack of the end of the epoch until its deadline (~15 s of ocf-tester's 20 s action timeout), then
the daemon marks itself diverged; the rejoin guard still lets it start and promote again (it was
the latest primary: the cluster's epoch is its own). Every ``stop`` also stops the database: it
is an ``always`` service, and a stopped resource leaves no database behind that could take
writes; the next ``start`` starts it again. After the run: no daemon of this config left in the
node (pid file and command lines, never names), the database stopped, and the cluster property
``hodr-hodr-tst-epoch`` that promote records is checked and deleted.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hodr import certs
from hodr.lab import Lab, proc
from hodr.lab.netns import NETNS_DIR
from tests.cluster.conftest import LabFactory, logs_dir
from tests.cluster.dbcluster import PG_HOME, PG_SERVICE, db_service, init_node_db, node_yaml

pytestmark = [pytest.mark.cluster, pytest.mark.pg]

LAB = "hodrot"
NODE = "node1"
RSC = "hodr-tst"
CONFIG = "/etc/hodr/tester.yml"
RUN_DIR = "/run/hodr-tester"
DATA_DIR = "/var/lib/hodr/tester"
AGENT = "/usr/lib/ocf/resource.d/hodr/hodr-replica"
EPOCH_PROPERTY = f"hodr-{RSC}-epoch"


def config_for_tester(lab: Lab) -> dict[str, Any]:
    return node_yaml(
        NODE,
        role="standby",
        sync=False,
        # node2 is not part of this lab: the standby's connection attempts simply fail
        primary_host=lab.address(NODE).rsplit(".", 1)[0] + ".12",
        standbys=["node2"],
        primary_names=["node1", "node2"],
        services=[db_service(15)],  # below ocf-tester's 20 s action timeout
        data_dir=DATA_DIR,
        run_dir=RUN_DIR,
    )


def provision(lab: Lab, workdir: Path) -> None:
    """Database (left running, as an installed node has it), TLS files, service script, YAML."""
    init_node_db(lab, NODE)
    tls = workdir / "tls"
    certs.init_ca(tls)
    files = certs.issue(tls, NODE, force=True)
    etc = lab.host_path(NODE, "/etc/hodr")
    (etc / "tls").mkdir(parents=True, exist_ok=True)
    for src, name in ((files.ca, "ca.pem"), (files.cert, "node.pem"), (files.key, "node.key")):
        dst = etc / "tls" / name
        dst.write_bytes(Path(src).read_bytes())
        dst.chmod(0o600)
    script = etc / "pg-service"
    script.write_text(PG_SERVICE)
    script.chmod(0o755)
    (etc / "tester.yml").write_text(yaml.safe_dump(config_for_tester(lab), sort_keys=False))


def node_root(lab: Lab) -> Path:
    pid = lab.pid(NODE)
    assert pid is not None, f"{NODE} is down"
    return Path(f"/proc/{pid}/root")


def daemons(lab: Lab) -> list[int]:
    """Processes in the node running ``hodr … run … CONFIG`` (by command line, never by name)."""
    ino = proc.netns_inode(str(NETNS_DIR / lab.topology.netns(NODE)))
    assert ino is not None
    found = []
    for p in proc.pids_in_netns([ino]):
        argv = proc.cmdline(p) or []
        if "run" in argv and CONFIG in argv and any(a.endswith("hodr") for a in argv):
            found.append(p)
    return found


def pidfile_daemon(lab: Lab) -> str | None:
    """The pid in the agent's pid file if that process still lives (None: no file or dead)."""
    root = node_root(lab)
    try:
        pid = (root / RUN_DIR.lstrip("/") / "hodr.pid").read_text().strip()
    except OSError:
        return None
    r = lab.run(NODE, "sh", "-c", f"kill -0 {pid} 2>/dev/null", check=False)
    return pid if r.returncode == 0 else None


def tail(path: Path, lines: int = 60) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return f"({path} unreadable)"


def diagnostics(lab: Lab) -> str:
    root = node_root(lab)
    run = root / RUN_DIR.lstrip("/")
    return "\n".join(
        [
            "--- daemon.out ---",
            tail(run / "daemon.out"),
            "--- services.out ---",
            tail(run / "services.out", 30),
            "--- pacemaker.log (hodr-replica) ---",
            "\n".join(
                ln
                for ln in tail(lab.host_path(NODE, "/var/log/pacemaker") / "pacemaker.log", 2000).splitlines()
                if "hodr" in ln
            )[-6000:],
        ]
    )


def keep_logs(lab: Lab, dest: Path) -> None:
    import shutil

    pid = lab.pid(NODE)
    if pid is None:
        return
    dest.mkdir(parents=True, exist_ok=True)
    root = Path(f"/proc/{pid}/root")
    for name in ("daemon.out", "services.out", "status.json", "status.last.json"):
        with contextlib.suppress(OSError):
            shutil.copy(root / RUN_DIR.lstrip("/") / name, dest / name)
    with contextlib.suppress(OSError):
        shutil.copy(lab.host_path(NODE, PG_HOME) / "server.log", dest / "postgresql.log")


@pytest.mark.timeout(540)
def test_ocf_tester_with_the_real_daemon(lab_factory: LabFactory, tmp_path: Path) -> None:
    """ocf-tester passes on hodr-replica in a lab node running the real daemon and PostgreSQL."""
    lab = lab_factory(1, name=LAB)
    lab.up(timeout=60)
    try:
        provision(lab, tmp_path)
        t0 = time.monotonic()
        r = lab.run(NODE, "ocf-tester", "-v", "-n", RSC, "-o", f"config={CONFIG}", AGENT,
                    check=False, timeout=420)  # fmt: skip
        took = time.monotonic() - t0
        print(f"\nTIMING ocf-tester hodr-replica, real daemon and PostgreSQL: {took:.1f}s")
        out = r.stdout + r.stderr
        (tmp_path / "ocf-tester.out").write_text(out)
        assert r.returncode == 0 and "passed all tests" in r.stdout, out[-8000:] + "\n" + diagnostics(lab)

        # The daemon was really promoted and demoted by it: three terms, each with its end.
        daemon_out = (node_root(lab) / RUN_DIR.lstrip("/") / "daemon.out").read_text(errors="replace")
        last = json.loads((node_root(lab) / RUN_DIR.lstrip("/") / "status.json").read_text())
        assert last.get("role") == "stopped", last
        prop = lab.run(NODE, "crm_attribute", "--type", "crm_config", "--name", EPOCH_PROPERTY,
                       "--query", "--quiet", check=False)  # fmt: skip
        assert prop.returncode == 0, f"promote recorded no {EPOCH_PROPERTY}: {prop.stderr}"
        assert prop.stdout.strip().startswith("4@"), f"{EPOCH_PROPERTY}={prop.stdout.strip()}"
        terms = [(t["epoch"], bool(t.get("last"))) for t in last["extra"]["primary_epochs"]]
        assert terms == [(2, True), (3, True), (4, True)], f"{terms}\n{daemon_out[-3000:]}"

        # Nothing left running: no daemon (pid file, command lines), and the database is stopped
        # with the resource (an `always` service).
        assert pidfile_daemon(lab) is None, "the daemon of the pid file still runs"
        assert daemons(lab) == [], f"hodr daemons left in {NODE}: {daemons(lab)}"
        ready = lab.run(NODE, "/etc/hodr/pg-service", "ready", check=False)
        assert ready.returncode != 0, "PostgreSQL still runs after ocf-tester's last stop"
    finally:
        keep_logs(lab, logs_dir(tmp_path, f"{LAB}-logs") / NODE)
        lab.run(NODE, "crm_attribute", "--type", "crm_config", "--name", EPOCH_PROPERTY, "--delete",
                check=False)  # fmt: skip
    gone = lab.run(NODE, "crm_attribute", "--type", "crm_config", "--name", EPOCH_PROPERTY,
                   "--query", "--quiet", check=False)  # fmt: skip
    assert gone.returncode != 0, f"{EPOCH_PROPERTY} still set: {gone.stdout}"

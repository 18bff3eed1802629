"""The ``hodr`` command.

``hodr run CONFIG`` runs the role from the config (systemd Type=notify service);
``hodr validate-config CONFIG [--print]``; ``hodr status [CONFIG | --run-dir DIR] [--json]``;
``hodr init-load CONFIG`` (re)creates the slot and queues a consistent initial copy;
``hodr demo [--seconds N] [--json]`` primary + standby on this machine under load;
``hodr certs init|issue NODE [--dir DIR]`` the private CA and node certificates for mutual TLS;
``hodr lab …`` the namespace cluster for failover drills.
Heavy modules are imported inside the commands so ``status`` stays cheap.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hodr import __version__
from hodr.errors import ConfigError, HodrError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hodr", description="log-based DR replication with Pacemaker takeover")
    p.add_argument("--version", action="version", version=f"hodr {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the configured role (primary or standby) until stopped")
    r.add_argument("config")
    r.add_argument("--role", choices=("primary", "standby"), help="override the role in the config")

    v = sub.add_parser("validate-config", help="check a config file and list every problem")
    v.add_argument("config")
    v.add_argument("--print", action="store_true", help="print the merged configuration")

    s = sub.add_parser("status", help="role, positions, queue depth and lag of a running daemon")
    s.add_argument("config", nargs="?")
    s.add_argument("--run-dir", help="the daemon's run directory (instead of CONFIG)")
    s.add_argument("--json", action="store_true")

    il = sub.add_parser("init-load", help="create the slot and queue a consistent copy of the tables")
    il.add_argument("config")

    d = sub.add_parser("demo", help="a primary and a standby on this machine, hodr between them, under load")
    d.add_argument("--seconds", type=float, default=20.0, help="how long the workload runs (default 20)")
    d.add_argument("--clients", type=int, default=2, help="concurrent workload clients (default 2)")
    d.add_argument("--json", action="store_true", help="end with one JSON object of results")
    d.add_argument("--workdir", help="where the demo's servers and state live (default: a temp dir)")
    d.add_argument("--keep", action="store_true", help="leave the servers and files behind for inspection")
    d.add_argument("--sync", action="store_true", help="synchronous mode (commits wait for the standby)")

    c = sub.add_parser("certs", help="private CA and node certificates for mutual TLS")
    csub = c.add_subparsers(dest="certs_cmd", required=True)
    ci = csub.add_parser("init", help="create the CA (ca.pem, ca.key) in --dir")
    ci.add_argument("--dir", default="/etc/hodr/tls", help="where the files go (default /etc/hodr/tls)")
    ci.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    ci.add_argument(
        "--force", action="store_true", help="replace an existing CA (every node needs new certs)"
    )
    cn = csub.add_parser("issue", help="sign NODE.pem/NODE.key for a node name from the config")
    cn.add_argument("node", help="the node name (config 'node'; listed in the peers' configs)")
    cn.add_argument("--dir", default="/etc/hodr/tls", help="the CA's directory, where the files go")
    cn.add_argument("--host", action="append", default=[], help="extra SAN: DNS name or IP (repeatable)")
    cn.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    cn.add_argument("--force", action="store_true", help="replace an existing certificate and key")

    sub.add_parser(
        "lab",
        help="namespace Pacemaker cluster: hodr lab up N | down | status | exec | crash …",
        add_help=False,
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["lab"]:
        from hodr.lab.cli import main as lab_main

        return int(lab_main(args_list[1:]))
    args = _parser().parse_args(args_list)
    try:
        return int(_dispatch(args))
    except ConfigError as exc:
        print(f"hodr: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except HodrError as exc:
        print(f"hodr: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "validate-config":
        from hodr.config import load, to_dict

        cfg = load(args.config)
        from hodr.config import tls_errors

        problems = tls_errors(cfg)
        if problems:
            print(f"hodr: invalid configuration: {args.config}: {'; '.join(problems)}", file=sys.stderr)
            return 2
        if args.print:
            import yaml

            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        else:
            print(f"{args.config}: ok ({cfg.role} {cfg.node})")
        return 0
    if args.cmd == "status":
        return _status(args)
    if args.cmd == "run":
        from hodr.config import load

        cfg = load(args.config)
        if args.role:
            from dataclasses import replace

            cfg = replace(cfg, role=args.role)
        from hodr.log import setup

        setup(cfg.log.level, cfg.log_path, cfg.log.keep_days)
        from hodr.daemon import Daemon
        from hodr.replicate.pipeline import build

        return Daemon(cfg, build(cfg)).run()
    if args.cmd == "init-load":
        from hodr.config import load
        from hodr.log import setup

        cfg = load(args.config)
        setup(cfg.log.level, None)
        from hodr.replicate.pipeline import initial_load

        if cfg.role != "primary":
            print("hodr: init-load runs on the primary (role: primary in the config)", file=sys.stderr)
            return 2
        from hodr.status import read_status
        from hodr.takeover.daemonctl import pid_alive

        st = read_status(cfg.run_path)
        if st is not None and st.role not in ("stopped", "failed") and pid_alive(st.pid):
            print(f"hodr: the daemon is running (pid {st.pid}); stop it before init-load", file=sys.stderr)
            return 1
        pos = initial_load(cfg, progress=sys.stderr.isatty())
        print(f"initial load queued at {pos}; the standbys apply it when they connect")
        return 0
    if args.cmd == "certs":
        return _certs(args)
    if args.cmd == "demo":
        from hodr.demo import run_demo

        return run_demo(
            seconds=args.seconds,
            clients=args.clients,
            as_json=args.json,
            workdir=args.workdir,
            keep=args.keep,
            sync=args.sync,
        )
    raise AssertionError(args.cmd)


def _certs(args: argparse.Namespace) -> int:
    from hodr import certs

    if args.certs_cmd == "init":
        cert, key = certs.init_ca(args.dir, days=args.days, force=args.force)
        print(f"CA certificate {cert} (copy to every node: transport.tls_ca)")
        print(f"CA key         {key} (mode 0600; keep it here, never on the nodes)")
        return 0
    files = certs.issue(args.dir, args.node, hosts=args.host, days=args.days, force=args.force)
    print(f"certificate for {args.node}: {files.cert} and key {files.key} (mode 0600)")
    print("copy ca.pem, the certificate and the key to the node; its config:")
    print(f"  transport:\n    tls_ca: {files.ca}\n    tls_cert: {files.cert}\n    tls_key: {files.key}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from hodr.status import read_status

    if args.run_dir:
        run_dir = Path(args.run_dir)
    elif args.config:
        from hodr.config import load

        run_dir = load(args.config).run_path
    else:
        run_dir = Path("/run/hodr/default")
    st = read_status(run_dir)
    if st is None:
        print(f"hodr: no status in {run_dir} (daemon not running?)", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(json.loads(st.to_json()) | {"age_s": round(st.age(), 3)}, indent=2))
        return 0
    age = st.age()
    print(f"{st.node}: {st.role} (epoch {st.epoch}, pid {st.pid}, hodr {st.version}, status {age:.1f}s old)")
    print(f"  {st.sentence}")
    if st.role == "primary":
        print(f"  capture {st.capture or '-'}  released {st.released or '-'}  outbox end seq {st.outbox_end}")
        for p in st.peers:
            state = "connected" if p.connected else f"DISCONNECTED for {p.down_s:.0f}s"
            flags = "" if p.required else ", optional"
            flags += ", LAGGING" if p.lagging else ""
            flags += f", DETACHED: {p.detached}" if p.detached else ""
            print(
                f"  standby {p.name}: {state}, acked {p.acked or '-'} (seq {p.acked_seq}), "
                f"behind {p.lag_bytes} bytes, wire/raw {p.wire_bytes}/{p.sent_bytes} bytes{flags}"
            )
    else:
        link = "connected" if st.primary_connected else f"DISCONNECTED for {st.primary_down_s:.0f}s"
        print(
            f"  primary {link}; "
            f"queued seq {st.durable_seq} ({st.queue_txns} txns, {st.queue_bytes} bytes); "
            f"applied {st.applied or '-'}"
        )
        print(
            f"  lag {st.lag_s:.3f} s, {st.lag_bytes} bytes; "
            f"applied {st.txns_applied} txns, {st.rows_applied} rows"
        )
    if st.error:
        print(f"  error: {st.error}")
    return 0

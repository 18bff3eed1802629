"""``hodr lab up|down|exec|status|crash|isolate|heal|boot|stop``: the namespace cluster from a shell.

``hodr.cli`` dispatches ``hodr lab ...`` here (``main(argv[1:])``); ``python -m hodr.lab.cli``
works on its own too. Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from hodr.lab.lab import Lab, check_host
from hodr.lab.teardown import teardown
from hodr.lab.topology import MAX_NODES, LabError, lab_name, state_dir_for


def build_parser(prog: str = "hodr lab") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="A Pacemaker/Corosync cluster in namespaces on this machine."
    )
    p.add_argument("--name", help="lab name / namespace prefix (env HODR_LAB_NAME, default hodrlab)")
    p.add_argument("--dir", help="state directory (env HODR_LAB_DIR, default /var/tmp/hodr-lab/<name>)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="create the lab and wait until the cluster has formed")
    up.add_argument("size", type=int, metavar="N", help=f"number of nodes (1-{MAX_NODES})")
    up.add_argument(
        "--defaults",
        action="store_true",
        help="pacemaker/corosync default timings (dc-deadtime 20s, token 3000 ms) instead of fast ones",
    )
    up.add_argument("--token", type=int, metavar="MS", help="corosync token timeout (fast default 1000)")
    up.add_argument("--token-coefficient", type=int, metavar="MS", help="corosync token_coefficient")
    up.add_argument("--no-fencing", action="store_true", help="stonith-enabled=false, no fence_lab device")
    up.add_argument("--reboot-delay", type=float, default=10.0, metavar="S",
                    help="seconds between a fence reboot and power-on (default 10)")  # fmt: skip
    up.add_argument("--subnet", help="private IPv4 subnet used inside the lab (default 192.168.77.0/24)")
    up.add_argument("--timeout", type=float, default=90.0, metavar="S", help="formation deadline")

    down = sub.add_parser("down", help="stop everything and remove every trace of the lab")
    down.add_argument("--logs", metavar="DIR", help="copy pacemaker/corosync/init logs here first")
    down.add_argument("--timeout", type=float, metavar="S", help="graceful stop deadline before SIGKILL")

    ex = sub.add_parser("exec", help="run a command inside a node (or 'client')")
    ex.add_argument("node", help="node1..node9, 2, n2, or client")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")

    st = sub.add_parser("status", help="nodes, pids, addresses and crm_mon from a live node")
    st.add_argument("--json", action="store_true")

    for name, text in (
        ("crash", "hard power-off (fencing reboots it after the delay)"),
        ("boot", "power a node on"),
        ("stop", "graceful shutdown of a node"),
        ("isolate", "pull the node's network cable"),
        ("heal", "plug the node's network cable back in"),
    ):
        sub.add_parser(name, help=text).add_argument("node")
    return p


def _up(args: argparse.Namespace) -> int:
    lab = Lab.create(
        args.size, name=args.name, state_dir=args.dir, subnet=args.subnet, fast=not args.defaults,
        token_ms=args.token, token_coefficient_ms=args.token_coefficient, fencing=not args.no_fencing,
        reboot_delay=args.reboot_delay,
    )  # fmt: skip
    formed = lab.up(timeout=args.timeout)
    print(f"lab {lab.name}: {args.size} node(s) formed in {formed:.1f}s; "
          f"fencing {'on' if lab.cfg.fencing else 'off'}; state {lab.cfg.state}")  # fmt: skip
    for n in lab.nodes:
        print(f"  {n}  {lab.address(n)}  netns {lab.topology.netns(n)}  pid {lab.pid(n)}")
    print(f"  client {lab.client_address}  netns {lab.topology.client_netns}; VIP for tests {lab.vip}")
    return 0


def _down(args: argparse.Namespace) -> int:
    name = lab_name(args.name)
    rep = teardown(name, state_dir_for(name, args.dir), logs_to=Path(args.logs) if args.logs else None,
                   timeout=args.timeout)  # fmt: skip
    for k in rep.killed:
        print(f"killed {k}")
    if rep.logs:
        print(f"logs in {rep.logs}")
    for prob in rep.problems:
        print(f"problem: {prob}", file=sys.stderr)
    print(f"lab {name} down in {rep.seconds:.1f}s")
    return 1 if rep.problems else 0


def _exec(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise LabError("exec: no command given (hodr lab exec NODE -- CMD...)")
    lab = Lab.open(args.name, args.dir)
    argv = lab.client_argv(cmd) if args.node == "client" else lab.exec_argv(args.node, cmd)
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 127  # not reached


def _status(args: argparse.Namespace) -> int:
    st = Lab.open(args.name, args.dir).status()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    fencing = "on" if st["fencing"] else "off"
    print(
        f"lab {st['name']} ({st['state_dir']}), fencing {fencing}, "
        f"token {st['token_ms'] or 'default'} ms, dc-deadtime {st['dc_deadtime'] or 'default'}"
    )
    for n, info in st["nodes"].items():  # type: ignore[union-attr]
        print(f"  {n:6} {info['state']:9} pid {info['pid'] or '-':>7}  {info['address']}")
    print(f"  client {st['client']['address']}; VIP {st['vip']}")  # type: ignore[index]
    ctl = st["power_controller"]
    print(f"  power controller (fence_lab): {f'pid {ctl}' if ctl else 'NOT RUNNING: fencing will time out'}")
    print(st["crm_mon"])
    return 0


def _power(args: argparse.Namespace) -> int:
    lab = Lab.open(args.name, args.dir)
    node = lab.topology.node(args.node)
    t0 = time.monotonic()
    getattr(lab, args.command)(node)
    print(f"{args.command} {node}: done in {time.monotonic() - t0:.1f}s")
    return 0


COMMANDS = {"up": _up, "down": _down, "exec": _exec, "status": _status,
            "crash": _power, "boot": _power, "stop": _power, "isolate": _power, "heal": _power}  # fmt: skip


def main(argv: list[str] | None = None, prog: str = "hodr lab") -> int:
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_host()
        return COMMANDS[args.command](args)
    except LabError as exc:
        print(f"hodr lab {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hodr lab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(prog="python -m hodr.lab.cli"))

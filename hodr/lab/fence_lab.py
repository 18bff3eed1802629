#!/usr/bin/python3 -I
"""fence_lab: an RHCS-style fence agent that asks the lab's power controller to power a node off.

Installed only inside lab nodes (an overlay on /usr/sbin), run there by pacemaker-fenced or by
hand. Arguments come as ``-o ACTION -n NODE`` or, as pacemaker-fenced calls it, as ``key=value``
lines on stdin (``action``, ``port``/``plug``, ``nodename``). A request is a file written
atomically into the control directory that the host bind-mounts into every node; the agent then
waits for the controller's answer file. Standard library only: it runs under the system python.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

CONTROL = "/run/lab-power"
ANSWER_TIMEOUT = 60.0
ACTIONS = ("on", "off", "reboot", "status", "list", "monitor", "metadata", "validate-all")

METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_lab" shortdesc="Power switch of the hodr namespace lab">
<longdesc>Asks the hodr lab's host-side power controller to power a lab node off (SIGKILL of the
node's PID 1, cable pulled, addresses flushed) and, for reboot, on again after a delay.</longdesc>
<vendor-url>https://github.com/hodr</vendor-url>
<parameters>
  <parameter name="action" unique="0" required="1">
    <getopt mixed="-o, --action=[action]" />
    <content type="string" default="reboot" />
    <shortdesc lang="en">Fencing action</shortdesc>
  </parameter>
  <parameter name="port" unique="0" required="0">
    <getopt mixed="-n, --plug=[name]" />
    <content type="string" />
    <shortdesc lang="en">Lab node name (node1..node9)</shortdesc>
  </parameter>
</parameters>
<actions>
  <action name="on" automatic="0"/>
  <action name="off" />
  <action name="reboot" />
  <action name="status" />
  <action name="list" />
  <action name="monitor" />
  <action name="metadata" />
  <action name="validate-all" />
</actions>
</resource-agent>
"""


def parse(argv: list[str], stdin_text: str) -> dict[str, str]:
    """Options from argv, else ``key=value`` lines from stdin (pacemaker-fenced's way)."""
    opts: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        key, _, value = arg.partition("=")
        if key in ("-o", "--action"):
            opts["action"] = value or next(it, "")
        elif key in ("-n", "--plug", "--port"):
            opts["port"] = value or next(it, "")
        elif key == "--nodename":
            opts["nodename"] = value or next(it, "")
    if not argv:
        for line in stdin_text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                opts[key.strip()] = value.strip()
    if "plug" in opts and "port" not in opts:
        opts["port"] = opts["plug"]
    if "port" not in opts and "nodename" in opts:
        opts["port"] = opts["nodename"]
    opts.setdefault("action", "reboot")
    return opts


def request(action: str, port: str, timeout: float) -> dict:
    """Write the request atomically, wait for the answer, remove it."""
    rid = f"{time.time_ns()}-{socket.gethostname()}-{os.getpid()}"
    tmp = os.path.join(CONTROL, f".tmp-{rid}")
    with open(tmp, "w") as f:
        json.dump({"action": action, "port": port, "from": socket.gethostname()}, f)
    os.rename(tmp, os.path.join(CONTROL, f"req-{rid}.json"))
    answer = os.path.join(CONTROL, f"ans-{rid}.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(CONTROL, "closed")):
            return {"rc": 1, "message": "lab is shutting down"}
        try:
            with open(answer) as f:
                reply = json.load(f)
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
            continue
        os.unlink(answer)
        return reply
    return {"rc": 1, "message": f"no answer from the lab power controller within {timeout:.0f}s"}


def main(argv: list[str]) -> int:
    stdin_text = "" if argv or sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    opts = parse(argv, stdin_text)
    action = opts["action"]
    if action == "metadata":
        sys.stdout.write(METADATA)
        return 0
    if action not in ACTIONS:
        print(f"fence_lab: unknown action {action!r}", file=sys.stderr)
        return 1
    if not os.path.isdir(CONTROL):
        print(f"fence_lab: {CONTROL} missing: not inside a hodr lab node", file=sys.stderr)
        return 1
    if action == "validate-all":
        return 0
    port = opts.get("port", "")
    if action in ("on", "off", "reboot", "status") and not port:
        print("fence_lab: no node given (port/plug)", file=sys.stderr)
        return 1
    reply = request(action, port, 10.0 if action in ("monitor", "list", "status") else ANSWER_TIMEOUT)
    if reply.get("output"):
        print(reply["output"])
    if reply.get("message"):
        print(f"fence_lab: {reply['message']}", file=sys.stderr)
    return int(reply.get("rc", 1))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

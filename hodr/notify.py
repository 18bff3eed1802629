"""systemd notifications (``Type=notify``): READY, STATUS, WATCHDOG, STOPPING, RELOADING.

Why our own small sender next to ``sdnotify``: the sdnotify package does not support abstract
socket names (``@…``) or report send errors, and readiness is part of the product contract
(READY=1 only once the slot/queue/sockets are up).  Without NOTIFY_SOCKET every call is a no-op,
so the same daemon runs under systemd, under Pacemaker or from a shell.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when there is nowhere to send."""
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall("\n".join(lines).encode())
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *((f"STATUS={status}",) if status else ()), f"MAINPID={os.getpid()}")

    def status(self, sentence: str) -> bool:
        return self.send(f"STATUS={sentence}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1") if self.watchdog_s else False

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

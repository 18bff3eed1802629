"""The status snapshot and the control socket: the only door between takeover and the daemon.

Why a file plus a socket (architecture §6): the OCF agent's monitor must be a cheap read that works
even when the daemon is hung (a stale ``monotonic`` time then tells "hung" apart from "slow"), and
role changes must be requests the daemon carries out itself, so the agent never imports the
pipeline.  This module is kernel-level: no stage imports, no drivers.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
CONTROL_SOCKET = "control.sock"


@dataclass(frozen=True)
class PeerStatus:
    """One standby as its primary sees it."""

    name: str
    connected: bool
    acked: str  # LogPosition text of the highest durably queued commit, "" if none
    acked_seq: int
    lag_bytes: int
    required: bool = True
    sent_bytes: int = 0  # DATA bytes before compression
    wire_bytes: int = 0  # the same frames as sent (after compression, with headers)
    compression: int = 0  # level negotiated on the current (last) connection
    outbox_lag_bytes: int = 0  # outbox bytes not yet acked (what max_lag_mb is compared with)
    lagging: bool = False  # over transport.max_lag_mb
    detached: str = ""  # why the primary detached it ("" = attached)
    down_s: float = 0.0  # seconds it has not been connected (0: connected)


@dataclass(frozen=True)
class Status:
    """A snapshot written atomically once per supervisor cycle."""

    role: str  # primary | standby | stopped | starting | failed
    node: str
    epoch: int
    sentence: str
    pid: int
    version: str
    wall_time: float
    monotonic: float
    capture: str = ""  # LogPosition text: last position read from the source log
    released: str = ""  # what the source was told it may release (PG confirmed flush)
    outbox_end: int = 0
    peers: tuple[PeerStatus, ...] = ()
    primary_connected: bool = False
    primary_down_s: float = 0.0  # standby: seconds it has not been streaming (0: streaming)
    received_seq: int = 0
    durable_seq: int = 0
    durable_commit: str = ""
    applied: str = ""
    queue_txns: int = 0
    queue_bytes: int = 0
    lag_s: float = 0.0
    lag_bytes: int = 0
    txns_applied: int = 0
    rows_applied: int = 0
    txns_captured: int = 0
    error: str = ""
    #: seconds the local database has been unusable (primary: capture's source; standby: apply's
    #: target), 0 while it works: what lets the agent's monitor tell "the database is down"
    #: from "busy", without running a check of its own
    db_down_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Status:
        data = json.loads(text)
        data["peers"] = tuple(PeerStatus(**p) for p in data.get("peers", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def age(self) -> float:
        """Seconds since the snapshot was written (CLOCK_MONOTONIC, immune to clock jumps)."""
        return time.monotonic() - self.monotonic


def write_status(run_dir: Path, status: Status) -> None:
    """Atomic replace (temp file, fsync, rename): a reader never sees half a snapshot.

    The directory fsync is skipped: the file lives on /run (tmpfs) and is rebuilt every cycle.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=run_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(status.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, run_dir / STATUS_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(run_dir: Path) -> Status | None:
    try:
        return Status.from_json((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None


# --- control socket --------------------------------------------------------------------------
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Unix stream socket, mode 0600, one JSON request and one JSON reply per line.

    Replies carry ``result``: ``done`` | ``in-progress`` (with ``sentence``) | ``refused`` (with
    ``reason``).  Requests must be idempotent; the handler runs in the server's thread.
    """

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        outer = self

        class _Req(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    try:
                        req = json.loads(line)
                        if not isinstance(req, dict) or "request" not in req:
                            raise ValueError("expected an object with a 'request' key")
                        reply = handler(req)
                    except Exception as exc:  # noqa: BLE001 - a bad request never kills the daemon
                        reply = {"result": "refused", "reason": f"bad request: {exc}"}
                    self.wfile.write((json.dumps(reply) + "\n").encode())
                    self.wfile.flush()

        old = os.umask(0o177)
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(path), _Req)
        finally:
            os.umask(old)
        self._server.daemon_threads = True
        os.chmod(path, 0o600)
        self._thread = threading.Thread(target=outer._server.serve_forever, name="control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def control_request(run_dir: Path, request: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
    """Send one request to the daemon's control socket and return its reply."""
    msg = json.dumps({"request": request, **args}) + "\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(run_dir / CONTROL_SOCKET))
        s.sendall(msg.encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return dict(json.loads(buf))

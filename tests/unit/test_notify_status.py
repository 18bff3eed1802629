"""sd_notify on a real unix datagram socket; status file and control socket; the daemon cycle."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from hodr.config import Config
from hodr.daemon import Daemon
from hodr.notify import Notifier
from hodr.status import control_request, read_status
from tests.conftest import wait_for


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    yield str(path), s
    s.close()


def _recv_all(s: socket.socket) -> list[str]:
    """Drain what is queued now (the daemon keeps sending, so never wait for silence)."""
    msgs = []
    s.setblocking(False)
    try:
        while True:
            msgs.append(s.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        s.setblocking(True)
    return msgs


def test_notifier_sends_on_real_socket(notify_socket) -> None:
    path, s = notify_socket
    n = Notifier(path)
    assert n.ready("up")
    msg = s.recv(4096).decode().split("\n")
    assert "READY=1" in msg and "STATUS=up" in msg and f"MAINPID={os.getpid()}" in msg
    assert n.stopping()
    assert s.recv(4096).decode().startswith("STOPPING=1")


def test_notifier_without_socket_is_a_noop(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier().ready() is False


class FakePipeline:
    """A fake at our own RolePipeline interface: becomes ready after start."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.fail: BaseException | None = None

    def start(self) -> None:
        self.started.set()

    def stop(self, timeout: float) -> None:
        self.stopped.set()

    def ready(self) -> bool:
        return self.started.is_set()

    def error(self) -> BaseException | None:
        return self.fail

    def snapshot(self) -> dict[str, Any]:
        return {"epoch": 3, "applied": "3:0/10", "durable_seq": 7}

    def sentence(self) -> str:
        return "standby: applied 3:0/10"

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"result": "refused", "reason": f"unknown request {request['request']}"}


def test_daemon_ready_status_watchdog_and_stop(tmp_path: Path, notify_socket, monkeypatch) -> None:
    path, s = notify_socket
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    cfg = Config(
        node="n1",
        role="standby",
        data_dir=str(tmp_path / "d"),
        run_dir=str(tmp_path / "run"),
        status_interval_s=0.1,
    )
    pipe = FakePipeline()
    d = Daemon(cfg, pipe, Notifier(path))
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(d.run()))
    t.start()
    try:
        st = wait_for(lambda: read_status(cfg.run_path), 5, "a status file")
        assert st.node == "n1" and st.epoch == 3 and st.durable_seq == 7
        reply = control_request(cfg.run_path, "status")
        assert reply["result"] == "done" and reply["status"]["applied"] == "3:0/10"
        assert control_request(cfg.run_path, "promote")["result"] == "refused"
        assert oct((cfg.run_path / "control.sock").stat().st_mode & 0o777) == "0o600"
        msgs = wait_for(lambda: [m for m in _recv_all(s) if "WATCHDOG=1" in m] and True, 5, "a watchdog ping")
        assert msgs
    finally:
        assert control_request(cfg.run_path, "stop")["result"] == "in-progress"
        t.join(10)
    assert rc == [0] and pipe.stopped.is_set()
    assert read_status(cfg.run_path).role == "stopped"


def test_daemon_fails_closed_on_pipeline_error(tmp_path: Path, notify_socket) -> None:
    path, s = notify_socket
    cfg = Config(node="n1", run_dir=str(tmp_path / "run"), status_interval_s=0.05)
    pipe = FakePipeline()
    pipe.fail = RuntimeError("target schema mismatch: table public.x does not exist on the standby")
    rc = Daemon(cfg, pipe, Notifier(path)).run()
    assert rc == 1
    st = read_status(cfg.run_path)
    assert st.role == "failed" and "public.x does not exist" in st.sentence
    assert any("STOPPING=1" in m for m in _recv_all(s))

"""Outbox → TCP → durable queue over real loopback sockets, with a hostile proxy in between.

Every test checks the one property that matters: the standby's queue ends up holding exactly
the primary's sequence, each record once, bytes intact, and the primary's cursor says so.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hodr.position import LogPosition
from hodr.redo.records import UNCHANGED, Column, Op, RowChange, Table
from hodr.replicate.codec import FrameDecoder, FrameEncoder, Hello, Welcome, decode_transaction
from hodr.replicate.outbox import Outbox
from hodr.replicate.queue import DurableQueue
from hodr.replicate.transaction import Transaction
from hodr.replicate.transport import PrimaryServer, StandbyClient, TransportSettings
from tests.conftest import wait_for

FAST = TransportSettings(
    heartbeat_s=0.1,
    dead_peer_s=0.6,
    reconnect_min_s=0.01,
    reconnect_max_s=0.1,
    handshake_timeout_s=2.0,
    connect_timeout_s=2.0,
    batch_bytes=64 << 10,
    max_frame_bytes=256 << 10,
    close_timeout_s=5.0,
)


def _cols(*names: str) -> tuple[Column, ...]:
    return tuple(Column(n, "integer" if i < 2 else "text", key=(i == 0)) for i, n in enumerate(names))


ACCOUNTS = Table("public", "pgbench_accounts", _cols("aid", "bid", "abalance", "filler"))
TELLERS = Table("public", "pgbench_tellers", _cols("tid", "bid", "tbalance", "filler"))
BRANCHES = Table("public", "pgbench_branches", _cols("bid", "bbalance", "filler"))
HISTORY = Table("public", "pgbench_history", _cols("tid", "bid", "aid", "delta", "mtime", "filler"))


def pgbench_changes(i: int) -> tuple[RowChange, ...]:
    return (
        RowChange(Op.UPDATE, ACCOUNTS, None, (str(i), "1", str(-i), " " * 84)),
        RowChange(Op.UPDATE, TELLERS, None, (str(i % 10), "1", str(i), None)),
        RowChange(Op.UPDATE, BRANCHES, None, ("1", str(i * 3), UNCHANGED)),
        RowChange(Op.INSERT, HISTORY, None, (str(i % 10), "1", str(i), "-5", "2026-01-01 00:00:00", None)),
    )


def commit_of(i: int) -> LogPosition:
    return LogPosition(1, 100_000 + 16 * i)


def append_txns(ob: Outbox, first: int, last: int, *, sync_every: int = 7) -> None:
    """pgbench-like transactions ``first..last``; every 25th is split into three parts."""
    for i in range(first, last + 1):
        begin, commit = LogPosition(1, 100_000 + 16 * i - 8), commit_of(i)
        if i % 25 == 0:
            for part in range(3):
                t = Transaction(i, begin, commit, i, pgbench_changes(i), part, part == 2)
                ob.append(t, sync=False)
        else:
            ob.append(Transaction(i, begin, commit, i, pgbench_changes(i)), sync=False)
        if i % sync_every == 0:
            ob.sync()
    ob.sync()


def assert_exact_copy(ob: Outbox, q: DurableQueue) -> None:
    want = [(s, decode_transaction(p)) for s, p in ob.read_from(1)]
    got = list(q.read_from(1))
    assert [s for s, _ in got] == [s for s, _ in want]
    assert got == want


class Proxy:
    """A TCP relay between standby and primary that can cut connections or flip bytes.

    ``cuts[k]``: connection ``k`` is cut after that many primary→standby bytes.
    ``flips[k]``: the primary→standby byte at that offset of connection ``k`` is inverted;
    ``up_flips[k]`` the same for standby→primary.  Later connections pass through untouched.
    """

    def __init__(
        self,
        target_port: int,
        *,
        cuts: list[int] = (),  # type: ignore[assignment]
        flips: list[int] = (),  # type: ignore[assignment]
        up_flips: list[int] = (),  # type: ignore[assignment]
    ) -> None:
        self.target_port = target_port
        self.cuts, self.flips, self.up_flips = list(cuts), list(flips), list(up_flips)
        self.connections = 0
        self.cut_done = 0
        self.flips_done = 0
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self._spawn(self._accept)

    def _spawn(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=fn, args=args, daemon=True, name="proxy")
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.lsock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            with self._lock:
                k = self.connections
                self.connections += 1
                self._socks += [down, up]
            cut = self.cuts[k] if k < len(self.cuts) else None
            flip = self.flips[k] if k < len(self.flips) else None
            up_flip = self.up_flips[k] if k < len(self.up_flips) else None
            self._spawn(self._pump, up, down, cut, flip)
            self._spawn(self._pump, down, up, None, up_flip)

    def _pump(self, src: socket.socket, dst: socket.socket, cut: int | None, flip: int | None) -> None:
        count = 0
        try:
            while True:
                data = bytearray(src.recv(65536))
                if not data:
                    break
                if flip is not None and count <= flip < count + len(data):
                    data[flip - count] ^= 0xFF
                    with self._lock:
                        self.flips_done += 1
                if cut is not None and count + len(data) >= cut:
                    dst.sendall(data[: cut - count])
                    with self._lock:
                        self.cut_done += 1
                    break
                dst.sendall(data)
                count += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5)
        for s in socks:
            s.close()
        assert not any(t.is_alive() for t in threads)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("hodr-") and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


class Pair:
    """An outbox with a server and a queue with a client; closes everything at the end."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        settings: TransportSettings = FAST,
        via_proxy: dict | None = None,
        client_settings: TransportSettings | None = None,
    ):
        self.tmp = tmp_path
        self.settings = settings
        self.client_settings = client_settings or settings
        self.acks: list[tuple[str, int]] = []
        self.outbox = Outbox(tmp_path / "outbox", standbys=["s1"], ack_persist_interval=0.05)
        self.server = self._server(0)
        self.port = self.server.address[1]
        self.proxy = Proxy(self.port, **via_proxy) if via_proxy is not None else None
        self.queue = DurableQueue(tmp_path / "queue")
        self.client = self._client()

    def _server(self, port: int) -> PrimaryServer:
        return PrimaryServer(
            "127.0.0.1",
            port,
            self.outbox,
            ["s1"],
            settings=self.settings,
            on_ack=lambda name, seq: self.acks.append((name, seq)),
        ).start()

    def _client(self, name: str = "s1") -> StandbyClient:
        port = self.proxy.port if self.proxy is not None else self.port
        return StandbyClient("127.0.0.1", port, name, self.queue, settings=self.client_settings).start()

    def wait_synced(self, end: int, timeout: float = 30) -> None:
        wait_for(
            lambda: self.queue.durable_seq == end and self.outbox.acked("s1") == end,
            timeout,
            f"standby to hold and ack seq {end} (has {self.queue.durable_seq}, "
            f"acked {self.outbox.acked('s1')}, client {self.client.stats()})",
        )

    def close(self) -> None:
        assert self.client.close()
        assert self.server.close()
        if self.proxy is not None:
            self.proxy.close()
        self.queue.close()
        self.outbox.close()


@pytest.fixture
def pair_factory(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    made: list[Pair] = []

    def make(**kw) -> Pair:  # type: ignore[no-untyped-def]
        p = Pair(tmp_path, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_stream_transactions_exactly_once(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory()
    append_txns(p.outbox, 1, 1500)
    end = p.outbox.end_seq
    p.wait_synced(end)
    append_txns(p.outbox, 1501, 1600)  # more while connected: senders wake on append
    end = p.outbox.end_seq
    p.wait_synced(end)
    assert_exact_copy(p.outbox, p.queue)
    assert p.acks[-1] == ("s1", end) and all(
        a < b for (_, a), (_, b) in zip(p.acks, p.acks[1:], strict=False)
    )
    assert p.outbox.released_position(["s1"]) == commit_of(1600)
    assert p.queue.last_durable_commit() == commit_of(1600)
    sent, got = p.server.stats()["s1"], p.client.stats()
    assert sent.connected and sent.connections == 1 and sent.records_sent == end
    assert got.connections == 1 and got.records_received == end and got.acked_seq == end
    assert sent.bytes_raw == got.bytes_raw and sent.frames_sent == got.frames_received
    assert sent.last_ack_time > 0 and got.primary_end_seq == end


def test_compression_counts_raw_and_wire_bytes(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory(settings=TransportSettings(**{**FAST.__dict__, "compression": 3}))
    append_txns(p.outbox, 1, 800)
    p.wait_synced(p.outbox.end_seq)
    assert_exact_copy(p.outbox, p.queue)
    st = p.server.stats()["s1"]
    assert st.bytes_wire < st.bytes_raw / 2, st


@pytest.mark.parametrize("compression", [0, 3])
def test_cut_connections_lose_and_double_nothing(pair_factory, compression: int) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7 + compression)
    cuts = [rng.randrange(1, 40_000 if compression == 0 else 5_000) for _ in range(10)]
    settings = TransportSettings(**{**FAST.__dict__, "compression": compression})
    p = pair_factory(settings=settings, via_proxy={"cuts": cuts})
    producer = threading.Thread(target=append_txns, args=(p.outbox, 1, 3000))
    producer.start()
    producer.join(30)
    p.wait_synced(p.outbox.end_seq)
    # A connection that is resent only a short tail may end the stream before its cut point:
    # more transactions until every cut has happened (the test is about surviving all ten).
    first, deadline = 3001, time.monotonic() + 60
    while p.proxy.cut_done < len(cuts):
        assert time.monotonic() < deadline, f"only {p.proxy.cut_done} of {len(cuts)} cuts happened"
        append_txns(p.outbox, first, first + 199)
        first += 200
        p.wait_synced(p.outbox.end_seq)
    assert p.proxy.cut_done == len(cuts)
    assert p.proxy.connections > len(cuts)  # (a cut during the handshake is not a stream)
    assert not p.client.failed
    assert_exact_copy(p.outbox, p.queue)


def test_flipped_bytes_are_caught_and_the_stream_resumes(pair_factory) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(11)
    flips = [rng.randrange(0, 60_000) for _ in range(8)]
    up_flips = [None, None, rng.randrange(0, 200), None, rng.randrange(0, 100)]
    p = pair_factory(via_proxy={"flips": flips, "up_flips": up_flips})
    append_txns(p.outbox, 1, 3000)
    p.wait_synced(p.outbox.end_seq)
    assert p.proxy.flips_done >= 8
    assert not p.client.failed
    assert_exact_copy(p.outbox, p.queue)  # nothing corrupted slipped into the queue


def test_primary_restart_resumes_from_the_durable_ack(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory()
    append_txns(p.outbox, 1, 500)
    p.wait_synced(p.outbox.end_seq)
    lineage, held = p.outbox.lineage, p.outbox.end_seq
    assert p.server.close()
    p.outbox.close()
    wait_for(lambda: not p.client.stats().connected, 5, "the standby to notice the primary left")
    p.outbox = Outbox(p.tmp / "outbox", standbys=["s1"])
    assert p.outbox.lineage == lineage and p.outbox.acked("s1") == held
    append_txns(p.outbox, 501, 900)
    p.server = p._server(p.port)  # same port: the standby keeps dialling it
    p.wait_synced(p.outbox.end_seq)
    assert_exact_copy(p.outbox, p.queue)
    # Only what the standby did not hold was sent again.
    assert p.server.stats()["s1"].records_sent == p.outbox.end_seq - held


def test_down_s_counts_from_the_loss_of_the_stream(pair_factory) -> None:  # type: ignore[no-untyped-def]
    """How long a standby has been missing (what the agent reports as degraded): 0 while
    streaming, counted from the loss on both sides, not restarted by each failed reconnect."""
    p = pair_factory()
    append_txns(p.outbox, 1, 50)
    p.wait_synced(p.outbox.end_seq)
    assert p.server.stats()["s1"].down_s == 0.0 and p.client.stats().down_s == 0.0
    assert p.server.close()
    wait_for(lambda: not p.client.stats().connected, 5, "the standby to notice the primary left")
    # the client retries every few tens of ms meanwhile: its count goes on across the attempts
    wait_for(lambda: p.client.stats().down_s >= 1.0, 10, "the standby's outage to reach 1 s")
    assert p.server.stats()["s1"].down_s >= 1.0
    p.server = p._server(p.port)
    wait_for(lambda: p.client.stats().connected, 10, "the standby back")
    assert p.client.stats().down_s == 0.0
    wait_for(lambda: p.server.stats()["s1"].connected, 5, "the primary to see it")
    assert p.server.stats()["s1"].down_s == 0.0


def test_close_ends_a_connect_to_a_primary_that_does_not_answer(tmp_path: Path) -> None:
    """A promotion stops the receiver first; with the old primary's host gone (no answer to the
    SYN) the receiver was stuck in connect() for the whole connect timeout and the promotion
    waited with it.  Here the SYNs go unanswered (a listener whose accept queue is full) and the
    connect timeout is 60 s: close() must end the attempt and the thread well before."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    filler = socket.create_connection(lsock.getsockname(), timeout=5)  # fills the accept queue
    q = DurableQueue(tmp_path / "q")
    slow = TransportSettings(**{**FAST.__dict__, "connect_timeout_s": 60.0})
    client = StandbyClient("127.0.0.1", lsock.getsockname()[1], "s1", q, settings=slow).start()
    try:
        wait_for(lambda: client.stats().down_s >= 0.5, 10, "the receiver inside its connect attempt")
        assert client.stats().connections == 0 and not client.stats().last_error
        assert client.close(5), "the receiver thread did not end: close() waited for the connect timeout"
    finally:
        client.close(1)
        filler.close()
        lsock.close()
        q.close()


def test_standby_restart_resumes_from_its_queue(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory()
    append_txns(p.outbox, 1, 400)
    p.wait_synced(p.outbox.end_seq)
    assert p.client.close()
    p.queue.close()
    append_txns(p.outbox, 401, 700)  # the standby is away
    p.queue = DurableQueue(p.tmp / "queue")
    assert p.queue.durable_seq == 400 + 400 // 25 * 2
    p.client = p._client()
    p.wait_synced(p.outbox.end_seq)
    assert_exact_copy(p.outbox, p.queue)
    assert p.server.stats()["s1"].records_sent == p.outbox.end_seq  # nothing sent twice


def test_unknown_standby_name_is_refused(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory()
    p.client.close()
    p.client = p._client("intruder")
    wait_for(lambda: p.client.failed, 5, "the intruder to be refused")
    assert "unknown standby name 'intruder' (registered: s1)" in p.client.failed
    wait_for(lambda: not p.client.running, 5, "the client to stop retrying")
    assert p.server.connected() == () and p.queue.durable_seq == 0


def test_a_standby_the_outbox_cannot_serve_is_told_to_reseed(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory()
    p.client.close()
    p.outbox._store.max_segment_bytes = 4096
    append_txns(p.outbox, 1, 300)
    p.outbox.ack("s1", p.outbox.end_seq)
    assert p.outbox.trim() > 0
    p.client = p._client()  # a fresh queue: it would need seq 1, which is gone
    wait_for(lambda: p.client.failed, 5, "the refusal")
    assert "trimmed" in p.client.failed and "load it from a consistent copy" in p.client.failed


def test_a_standby_from_another_history_switches_after_applying(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory()
    p.client.close()
    p.queue.close()
    p.outbox.close()
    p.server.close()
    # A standby that followed an old primary up to commit_of(10), now meets a new primary
    # whose history starts exactly there.
    q = DurableQueue(p.tmp / "q2")
    q.reset_lineage("old-primary", 1)
    for i in range(1, 11):
        q.append(i, p_encode(i))
    q.sync()
    p.queue = q
    p.outbox = Outbox(p.tmp / "ob2", standbys=["s1"], base=commit_of(10))
    append_txns(p.outbox, 11, 200)
    p.server = p._server(0)
    p.port = p.server.address[1]
    p.client = p._client()
    wait_for(lambda: "applied only to" in p.client.stats().last_error, 5, "the switch to wait for apply")
    assert q.lineage == "old-primary"
    q.trim(10)  # the applier catches up
    p.wait_synced(p.outbox.end_seq)
    assert q.lineage == p.outbox.lineage
    assert [s for s, _ in q.read_from(1)] == list(range(1, p.outbox.end_seq + 1))


def p_encode(i: int) -> bytes:
    from hodr.replicate.codec import encode_transaction

    return encode_transaction(Transaction(i, commit_of(i), commit_of(i), i, pgbench_changes(i)))


def test_heartbeat_detects_a_silent_primary(tmp_path: Path) -> None:
    lsock = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def fake_primary() -> None:
        # Answers the handshake, then says nothing at all, ever.
        while not stop.is_set():
            try:
                s, _ = lsock.accept()
            except OSError:
                return
            accepted.append(s)
            dec = FrameDecoder("standby")
            while (f := dec.next_frame()) is None:
                dec.feed(s.recv(4096))
            hello = dec.decode(f)
            assert isinstance(hello, Hello)
            s.sendall(FrameEncoder().encode(Welcome("L", 1, 0)))

    t = threading.Thread(target=fake_primary, daemon=True)
    t.start()
    q = DurableQueue(tmp_path / "q")
    client = StandbyClient("127.0.0.1", lsock.getsockname()[1], "s1", q, settings=FAST).start()
    try:
        wait_for(lambda: client.stats().connected, 5, "the handshake")
        started = time.monotonic()
        wait_for(lambda: "no frame" in client.stats().last_error, 5, "the dead-peer timeout")
        elapsed = time.monotonic() - started
        assert FAST.dead_peer_s * 0.8 <= elapsed <= FAST.dead_peer_s + 1.0
        wait_for(lambda: client.stats().connections >= 2, 5, "a reconnect")
    finally:
        assert client.close()
        stop.set()
        lsock.shutdown(socket.SHUT_RDWR)
        lsock.close()
        t.join(5)
        for s in accepted:
            s.close()
        q.close()


def test_heartbeat_detects_a_silent_standby(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob", standbys=["s1"])
    server = PrimaryServer("127.0.0.1", 0, ob, ["s1"], settings=FAST).start()
    sock = socket.create_connection(server.address)
    try:
        sock.sendall(FrameEncoder().encode(Hello("s1", None, 0, None)))
        wait_for(lambda: server.connected() == ("s1",), 5, "the handshake")
        started = time.monotonic()
        wait_for(lambda: server.connected() == (), 5, "the primary to drop the silent standby")
        elapsed = time.monotonic() - started
        assert elapsed <= FAST.dead_peer_s + 1.0
        assert "no frame" in server.stats()["s1"].last_error
    finally:
        sock.close()
        assert server.close()
        ob.close()


def test_hello_counts_as_an_ack_when_the_last_ack_was_lost(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory()
    append_txns(p.outbox, 1, 200)
    end = p.outbox.end_seq
    p.wait_synced(end)
    assert p.server.close()
    # The primary dies before its cursor file caught up: it restarts believing nothing was acked.
    p.outbox._persisted["s1"] = (p.outbox.cursor("s1"), 0.0)
    p.outbox._standbys["s1"] = p.outbox.trimmed
    p.outbox.flush_acks()
    p.outbox.close()
    p.outbox = Outbox(p.tmp / "outbox", standbys=["s1"])
    assert p.outbox.acked("s1") == 0
    p.server = p._server(p.port)
    # No new transaction: only the standby's HELLO can tell the primary what it holds.
    wait_for(lambda: p.outbox.acked("s1") == end, 10, "the HELLO to count as an ack")
    assert p.outbox.released_position(["s1"]) == commit_of(200)
    assert p.acks[-1] == ("s1", end)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hodr-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_ssl_context_factories_plug_into_the_same_loop(tmp_path: Path) -> None:
    """The non-blocking loop works over SSLSocket (want-read/want-write, pending()) with any
    injected contexts; a server that asks for no client certificate checks no names (the mTLS
    contexts of tls.py and their refusals are tested below)."""
    import ssl

    cert, key = _self_signed(tmp_path)

    def server_ctx() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx

    def client_ctx() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cert)
        return ctx

    ob = Outbox(tmp_path / "ob", standbys=["s1"])
    q = DurableQueue(tmp_path / "q")
    server = PrimaryServer("127.0.0.1", 0, ob, ["s1"], settings=FAST, ssl_context=server_ctx).start()
    client = StandbyClient("127.0.0.1", server.address[1], "s1", q, settings=FAST, ssl_context=client_ctx)
    client.start()
    try:
        append_txns(ob, 1, 2000)
        wait_for(lambda: ob.acked("s1") == ob.end_seq, 30, "the TLS stream to be acked")
        assert_exact_copy(ob, q)
    finally:
        assert client.close()
        assert server.close()
        q.close()
        ob.close()


# =============================================================================================
# Issue 5: mutual TLS, compression levels, fan-out at different speeds, detach, bandwidth cap
# =============================================================================================
def _with(**kw: object) -> TransportSettings:
    return TransportSettings(**{**FAST.__dict__, **kw})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str, str]]:
    """(ca, cert, key) per case: our CA's primary/s1/s2/intruder, s1 from another CA, s1 expired."""
    import datetime as dt
    import shutil

    from hodr import certs

    d = tmp_path_factory.mktemp("pki")
    certs.init_ca(d)
    out = {}
    for n in ("primary", "s1", "s2", "intruder"):
        f = certs.issue(d, n)
        out[n] = (str(f.ca), str(f.cert), str(f.key))
    other = d / "other"
    certs.init_ca(other, name="another CA")
    f = certs.issue(other, "s1")
    out["other-ca"] = (out["s1"][0], str(f.cert), str(f.key))  # trusts our CA, signed by another
    exp = d / "expired"
    exp.mkdir()
    for name in (certs.CA_CERT, certs.CA_KEY):
        shutil.copy2(d / name, exp / name)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    f = certs.issue(exp, "s1", not_before=past - dt.timedelta(days=30), not_after=past)
    out["expired"] = (str(f.ca), str(f.cert), str(f.key))
    return out


def _tls_files(entry: tuple[str, str, str]):  # type: ignore[no-untyped-def]
    from hodr.replicate.tls import TlsFiles

    return TlsFiles(*entry)


class TlsEnds:
    """A primary with mTLS for standbys s1, s2 and one standby client with the given identity."""

    def __init__(self, tmp_path: Path, pki: dict, client: str | None, hello: str, primary_names=("primary",)):  # type: ignore[no-untyped-def]
        from hodr.replicate.tls import client_context, server_context

        self.outbox = Outbox(tmp_path / "ob", standbys=["s1", "s2"])
        self.queue = DurableQueue(tmp_path / "q")
        self.server = PrimaryServer(
            "127.0.0.1",
            0,
            self.outbox,
            ["s1", "s2"],
            settings=FAST,
            ssl_context=server_context(_tls_files(pki["primary"])),
        ).start()
        ctx = client_context(_tls_files(pki[client])) if client else None
        self.client = StandbyClient(
            "127.0.0.1",
            self.server.address[1],
            hello,
            self.queue,
            settings=FAST,
            ssl_context=ctx,
            primary_names=primary_names if client else None,
        ).start()

    def close(self) -> None:
        assert self.client.close()
        assert self.server.close()
        self.queue.close()
        self.outbox.close()


def test_mtls_with_the_right_certificates_streams(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    ends = TlsEnds(tmp_path, pki, "s1", "s1")
    try:
        append_txns(ends.outbox, 1, 600)
        wait_for(lambda: ends.outbox.acked("s1") == ends.outbox.end_seq, 20, "the mTLS stream to be acked")
        assert_exact_copy(ends.outbox, ends.queue)
        import ssl

        assert ends.client._c.connected and ends.client.stats().connections == 1
        assert ssl.TLSVersion.TLSv1_3.name in _negotiated_versions(ends.server)
    finally:
        ends.close()


def _negotiated_versions(server: PrimaryServer) -> set[str]:
    import ssl

    with server._lock:
        socks = [s._conn.sock for s in server._senders if s._conn is not None]
    return {
        ssl.TLSVersion.TLSv1_3.name if s.version() == "TLSv1.3" else str(s.version())
        for s in socks
        if isinstance(s, ssl.SSLSocket)
    }


# (client identity, HELLO name, primary names the standby accepts, primary's log, standby's log)
REFUSALS = {
    "other-ca": ("other-ca", "s1", ("primary",), "certificate rejected: unable to get local issuer", "TLS"),
    "expired": ("expired", "s1", ("primary",), "certificate rejected: certificate has expired", "TLS"),
    "name-not-configured": (
        "intruder",
        "intruder",
        ("primary",),
        "TLS certificate names intruder: not a configured standby",
        "TLS certificate names intruder: not a configured standby",
    ),
    "hello-not-the-cert": (
        "s2",
        "s1",
        ("primary",),
        "HELLO name 's1' does not match the TLS certificate (s2)",
        "HELLO name 's1' does not match the TLS certificate (s2)",
    ),
    "wrong-primary-name": (
        "s1",
        "s1",
        ("db9",),
        "closed",
        "certificate names primary, expected one of: db9",
    ),
    "plaintext-client": (None, "s1", ("primary",), "TLS handshake failed", "transport.insecure: true"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_mtls_refusals_are_logged_on_both_sides_and_nothing_is_sent(
    tmp_path: Path, pki, caplog: pytest.LogCaptureFixture, case: str
) -> None:  # type: ignore[no-untyped-def]
    import logging

    client_id, hello, primary_names, primary_says, standby_says = REFUSALS[case]
    caplog.set_level(logging.INFO, logger="hodr.replicate.transport")
    ends = TlsEnds(tmp_path, pki, client_id, hello, primary_names)
    try:
        append_txns(ends.outbox, 1, 50)

        def logged(prefix: str, text: str) -> bool:
            return any(
                r.levelno >= logging.WARNING and r.getMessage().startswith(prefix) and text in r.getMessage()
                for r in caplog.records
            )

        # The primary's line starts with "refusing <peer>" (TLS level) or "refusing <name>"
        # (HELLO level) or, when the standby hung up, "standby ... connection ended".
        wait_for(
            lambda: logged("refusing", primary_says) or logged("standby", primary_says),
            10,
            f"the primary to log {primary_says!r}",
        )
        wait_for(
            lambda: logged(f"standby {hello}:", standby_says), 10, f"the standby to log {standby_says!r}"
        )
        assert ends.server.connected() == ()
        assert ends.queue.durable_seq == 0 and ends.outbox.acked("s1") == 0 and ends.outbox.acked("s2") == 0
        assert all(st.records_sent == 0 for st in ends.server.stats().values())
    finally:
        ends.close()


@pytest.mark.parametrize("level", range(8))
def test_each_compression_level_round_trips(pair_factory, level: int) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory(settings=_with(compression=level))
    append_txns(p.outbox, 1, 300)
    p.wait_synced(p.outbox.end_seq)
    assert_exact_copy(p.outbox, p.queue)
    sent, got = p.server.stats()["s1"], p.client.stats()
    assert sent.compression == got.compression == level
    assert sent.bytes_raw == got.bytes_raw


def test_level_7_puts_far_fewer_bytes_on_the_wire_than_level_0(tmp_path: Path) -> None:
    wire = {}
    for level in (0, 7):
        p = Pair(tmp_path / str(level), settings=_with(compression=level))
        try:
            append_txns(p.outbox, 1, 600)
            p.wait_synced(p.outbox.end_seq)
            st = p.server.stats()["s1"]
            wire[level] = (st.bytes_raw, st.bytes_wire)
            assert st.records_sent == p.outbox.end_seq
        finally:
            p.close()
    raw0, wire0 = wire[0]
    raw7, wire7 = wire[7]
    assert abs(raw0 - raw7) < raw0 / 100  # the same records (batching may differ by a frame or two)
    assert wire0 > raw0  # level 0: raw plus frame headers
    assert wire7 < raw7 / 4, wire  # pgbench-like rows compress well


def test_compression_is_negotiated_down_to_the_lower_side(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory(settings=_with(compression=7), client_settings=_with(compression=2))
    append_txns(p.outbox, 1, 100)
    p.wait_synced(p.outbox.end_seq)
    assert p.server.stats()["s1"].compression == p.client.stats().compression == 2
    q = Pair(p.tmp / "off", settings=_with(compression=0), client_settings=_with(compression=5))
    try:
        append_txns(q.outbox, 1, 100)
        q.wait_synced(q.outbox.end_seq)
        st = q.server.stats()["s1"]
        assert st.compression == 0 and st.bytes_wire > st.bytes_raw
    finally:
        q.close()


def test_two_standbys_at_different_speeds_trim_and_release_only_to_the_slower(tmp_path: Path) -> None:
    """s2 reads through a 1 Mbit/s cap: s1 finishes first; until s2 acks, the outbox keeps its
    records and the released position stays at s2's commit; then both hold exact copies."""
    ob = Outbox(tmp_path / "ob", standbys=["s1", "s2"], ack_persist_interval=0.05)
    ob._store.max_segment_bytes = 16 << 10  # small segments so that trimming is visible
    q1, q2 = DurableQueue(tmp_path / "q1"), DurableQueue(tmp_path / "q2")
    server = PrimaryServer("127.0.0.1", 0, ob, ["s1", "s2"], settings=FAST).start()
    port = server.address[1]
    fast = StandbyClient("127.0.0.1", port, "s1", q1, settings=FAST).start()
    slow = StandbyClient("127.0.0.1", port, "s2", q2, settings=_with(bandwidth_mbit=1.0)).start()
    try:
        started = time.monotonic()
        append_txns(ob, 1, 1500)
        end = ob.end_seq
        wait_for(lambda: ob.acked("s1") == end, 20, "the fast standby to catch up")
        s2_acked = ob.acked("s2")
        assert s2_acked < end, "the capped standby should still be behind"
        ob.trim()
        assert ob.first_seq <= s2_acked + 1, "trimmed past the slower standby"
        assert ob.released_position(["s1", "s2"]) == ob.cursor("s2").commit < commit_of(1500)
        wait_for(lambda: ob.acked("s2") == end, 60, "the slow standby to catch up")
        elapsed = time.monotonic() - started
        raw = server.stats()["s2"].bytes_wire
        # The cap held: about 125 kB/s (burst allowance aside).
        assert raw / elapsed < 1.0 * 125_000 * 1.5, (raw, elapsed)
        first_before = ob.first_seq
        ob.trim()
        assert ob.first_seq > first_before and ob.released_position(["s1", "s2"]) == commit_of(1500)
        for q in (q1, q2):
            want = [(s, decode_transaction(pl)) for s, pl in ob.read_from(ob.first_seq)]
            got = [(s, t) for s, t in q.read_from(ob.first_seq)]
            assert got == want and q.durable_seq == end
        assert not fast.failed and not slow.failed
    finally:
        assert fast.close() and slow.close()
        assert server.close()
        q1.close()
        q2.close()
        ob.close()


def test_a_detached_standby_is_cut_off_and_refused_until_attached(pair_factory) -> None:  # type: ignore[no-untyped-def]
    p = pair_factory()
    append_txns(p.outbox, 1, 100)
    p.wait_synced(p.outbox.end_seq)
    p.server.detach("s1", "300.0 MiB behind, over transport.max_lag_mb 256")
    wait_for(lambda: p.client.failed, 5, "the detached standby to be refused")
    assert "detached by the primary: 300.0 MiB behind" in p.client.failed
    assert p.server.stats()["s1"].detached and p.server.connected() == ()
    assert p.client.close()
    p.server.attach("s1")
    append_txns(p.outbox, 101, 200)
    p.client = p._client()
    p.wait_synced(p.outbox.end_seq)
    assert_exact_copy(p.outbox, p.queue)


def test_cuts_and_flips_under_tls_and_compression_lose_and_double_nothing(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    """The hostile proxy between TLS endpoints: a flipped byte breaks the TLS record MAC (the
    frame checksum never even sees it), a cut ends the session; the stream resumes exactly."""
    from hodr.replicate.tls import client_context, server_context

    rng = random.Random(5)
    ob = Outbox(tmp_path / "ob", standbys=["s1"])
    q = DurableQueue(tmp_path / "q")
    settings = _with(compression=4)
    server = PrimaryServer(
        "127.0.0.1", 0, ob, ["s1"], settings=settings, ssl_context=server_context(_tls_files(pki["primary"]))
    ).start()
    proxy = Proxy(
        server.address[1],
        cuts=[rng.randrange(3000, 20_000) for _ in range(4)] + [0, 0, 0, 0],
        flips=[0, 0, 0, 0] + [rng.randrange(3000, 20_000) for _ in range(4)],
    )
    proxy.cuts = [c or None for c in proxy.cuts]  # type: ignore[misc]
    proxy.flips = [f or None for f in proxy.flips]  # type: ignore[misc]
    client = StandbyClient(
        "127.0.0.1",
        proxy.port,
        "s1",
        q,
        settings=settings,
        ssl_context=client_context(_tls_files(pki["s1"])),
        primary_names=["primary"],
    ).start()
    try:
        append_txns(ob, 1, 2500)
        wait_for(lambda: ob.acked("s1") == ob.end_seq, 30, "the stream to get through the proxy")
        assert proxy.cut_done == 4 and proxy.flips_done >= 4
        assert not client.failed
        assert_exact_copy(ob, q)
    finally:
        assert client.close()
        assert server.close()
        proxy.close()
        q.close()
        ob.close()

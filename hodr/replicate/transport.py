"""TCP transport between the primary's outbox and each standby's durable queue.

Who connects (why the primary listens): standbys come and go, the primary is where the VIP and the
data are; a standby dialling the primary's address needs no configuration change when another
standby is added, and the primary only needs the list of names it accepts.

Conversation (frames and messages: codec.py)::

    standby                                  primary
    HELLO {protocol, name, lineage,      →
           durable_seq, durable_commit}
                                         ←   WELCOME {lineage, start_seq, end_seq}  |  REFUSE {reason}
                                         ←   DATA (seq = first of a batch of consecutive records)
    ACK (seq = highest durably queued)   →       (after fsync only: I6)
    HEARTBEAT (both ways, when idle)

The primary resumes at the standby's ``durable_seq + 1`` for the same history (lineage), or
asks the outbox where another history's standby can continue (``Outbox.resume_point``).  The
standby appends records to its queue as they arrive, fsyncs after each burst of input, and acks
the highest durable sequence number at most every ``ack_interval_s`` (one ack covers a batch).

Compression is negotiated in the handshake: HELLO carries the standby's setting, WELCOME the level
the connection uses (the lower of the two, ``codec.negotiate_compression``).

Security (``tls.py``): with ``ssl_context`` factories every connection is TLS 1.3 with a certificate
from the private CA required both ways.  The primary accepts a standby only if its certificate
names a configured standby and that name is the one in HELLO; the standby accepts a primary only if
its certificate names one of ``primary_names``.  Every refusal — certificate from another CA,
expired, wrong name, plaintext peer — ends the connection before any record is sent, with one log
line on each side saying what was refused and why.

Bandwidth: ``bandwidth_mbit`` caps what a connection sends (primary) or reads (standby) with a
token bucket in the select loop (no sleeps: the loop waits for the bucket like for the socket).
Under a cap the primary makes DATA frames small enough to cross the link within half a heartbeat,
and a standby that reads slowly by its own choice counts received bytes as a sign of life, so a
capped link is never mistaken for a dead peer.

Failures: any bad frame, protocol violation, silent peer (no complete frame within
``dead_peer_s``) or socket error ends the connection, logged with what and where; the standby
reconnects with backoff and the stream resumes from its durable position, so nothing is lost
(the primary re-sends from there) or doubled (the decoder rejects any DATA frame that does not
start exactly at the next expected number).  Errors of the stores themselves (disk full,
corruption) are fatal: the side stops without acking anything it could not make durable.

Threads: one per connection (plus the primary's accept thread).  Each connection thread runs a
non-blocking select loop over its socket and a wake-up socket pair: new outbox data, a stop request
or a replacement connection wake it without polling.  The loop is written against non-blocking
``SSLSocket`` semantics too (want-read/want-write, ``pending()``), so TLS plugs in through the
``ssl_context`` factories without another thread model: one thread per socket also keeps
OpenSSL's "one thread per SSL object" rule.

Independence (import-linter): this module never imports the outbox or the queue; it talks to them
through the :class:`OutboxPort` and :class:`QueuePort` protocols below.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hodr.errors import HodrError, HodrFatal, Retryable, RetryableTransportError
from hodr.position import LogPosition
from hodr.replicate.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Ack,
    BadMagic,
    Data,
    FrameDecoder,
    FrameEncoder,
    Heartbeat,
    Hello,
    Refuse,
    Welcome,
    WireMessage,
    compression_for,
    negotiate_compression,
)
from hodr.replicate.tls import PeerNotAllowed, check_peer, looks_like_tls, peer_names

log = logging.getLogger("hodr.replicate.transport")

ContextFactory = Callable[[], ssl.SSLContext]
_RECV_CHUNK = 256 << 10


# =============================================================================================
# Settings and ports
# =============================================================================================
@dataclass(frozen=True)
class TransportSettings:
    """Timing and sizing of the transport (``from_config`` maps ``hodr.config.TransportConfig``)."""

    heartbeat_s: float = 1.0
    dead_peer_s: float = 10.0
    connect_timeout_s: float = 5.0
    handshake_timeout_s: float = 5.0
    reconnect_min_s: float = 0.05
    reconnect_max_s: float = 5.0
    ack_interval_s: float = 0.005
    compression: int = 0  # 0 off, 1-7 zstd level
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    batch_bytes: int = 1 << 20  # raw record bytes per DATA frame
    batch_records: int = 8192
    send_buffer_bytes: int = 4 << 20  # frames queued ahead of the socket per connection
    sync_bytes: int = 8 << 20  # standby: fsync at least after this much input
    close_timeout_s: float = 5.0
    bandwidth_mbit: float = 0.0  # 0: no cap; primary: per connection sent, standby: read

    def __post_init__(self) -> None:
        if self.dead_peer_s <= self.heartbeat_s:
            raise ValueError(
                f"dead_peer_s ({self.dead_peer_s}) must be larger than heartbeat_s ({self.heartbeat_s})"
            )
        if self.batch_bytes + 1024 > self.max_frame_bytes:
            raise ValueError("batch_bytes must leave room below max_frame_bytes")
        compression_for(self.compression)  # validates the level
        if self.bandwidth_mbit < 0:
            raise ValueError(f"bandwidth_mbit must be 0 (no cap) or positive, got {self.bandwidth_mbit}")

    @property
    def bandwidth_bytes(self) -> float:
        """The cap in bytes per second (0: none)."""
        return self.bandwidth_mbit * 125_000.0

    @property
    def frame_batch_bytes(self) -> int:
        """Raw bytes per DATA frame: ``batch_bytes``, or under a cap what crosses the link in half
        a heartbeat (the peer's dead-peer clock counts complete frames)."""
        if self.bandwidth_mbit <= 0:
            return self.batch_bytes
        return max(4096, min(self.batch_bytes, int(self.bandwidth_bytes * self.heartbeat_s / 2)))

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> TransportSettings:
        """From ``hodr.config.TransportConfig`` (duck-typed: heartbeat_s, dead_peer_s,
        reconnect_max_s, compression, bandwidth_mbit)."""
        values = {
            "heartbeat_s": cfg.heartbeat_s,
            "dead_peer_s": cfg.dead_peer_s,
            "reconnect_max_s": cfg.reconnect_max_s,
            "compression": cfg.compression,
            "bandwidth_mbit": getattr(cfg, "bandwidth_mbit", 0.0),
        }
        values.update(overrides)
        return cls(**values)


class _Record(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def payload(self) -> bytes: ...


class RecordReader(Protocol):
    def read(self, max_records: int = ..., max_bytes: int = ...) -> Sequence[_Record]: ...

    def close(self) -> None: ...


class OutboxPort(Protocol):
    """What a sender needs from the outbox (``hodr.replicate.outbox.Outbox`` satisfies it)."""

    lineage: str

    @property
    def end_seq(self) -> int: ...

    def reader(self, from_seq: int) -> RecordReader: ...

    def resume_point(self, lineage: str | None, durable_seq: int, commit: LogPosition | None) -> int: ...

    def ack(self, name: str, seq: int) -> bool: ...

    def flush_acks(self) -> None: ...

    def add_listener(self, callback: Callable[[], None]) -> None: ...

    def remove_listener(self, callback: Callable[[], None]) -> None: ...


class QueuePort(Protocol):
    """What a receiver needs from the queue (``hodr.replicate.queue.DurableQueue`` satisfies it)."""

    @property
    def lineage(self) -> str | None: ...

    @property
    def durable_seq(self) -> int: ...

    @property
    def received_seq(self) -> int: ...

    def last_durable_commit(self) -> LogPosition | None: ...

    def append(self, seq: int, payload: bytes) -> None: ...

    def sync(self) -> int: ...

    def reset_lineage(self, lineage: str, start_seq: int) -> None: ...


class ProtocolError(RetryableTransportError):
    """The peer sent a well-formed frame that makes no sense here."""


class PeerTimeout(RetryableTransportError):
    """No complete frame from the peer within ``dead_peer_s``."""


class TlsRefused(RetryableTransportError):
    """The TLS handshake failed: the peer's certificate was rejected here, or ours there."""


class Refused(RetryableTransportError):
    """The primary refused the standby; ``fatal`` when retrying cannot help."""

    def __init__(self, reason: str, fatal: bool) -> None:
        self.reason = reason
        self.fatal = fatal
        super().__init__(f"primary refused: {reason}")


class _Stop(Exception):
    """Internal: the owner asked this connection to end."""


# =============================================================================================
# Counters
# =============================================================================================
@dataclass(frozen=True, slots=True)
class SenderStats:
    """One standby as its primary sees it (cumulative over connections); frames and bytes
    count DATA frames (``bytes_raw`` before compression, ``bytes_wire`` as sent)."""

    name: str
    connected: bool
    peer: str
    connections: int
    frames_sent: int
    records_sent: int
    bytes_raw: int
    bytes_wire: int
    sent_seq: int
    acked_seq: int
    last_ack_time: float  # wall clock, 0 if never
    last_error: str
    compression: int = 0  # the level negotiated on the current (last) connection
    detached: str = ""  # why the primary detached this standby ("" = attached)
    down_s: float = 0.0  # seconds since it was last connected (or since the server started)


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """The standby's view of its primary; ``frames_received`` counts DATA frames, the byte
    counters every frame (heartbeats included)."""

    connected: bool
    primary: str
    connections: int
    frames_received: int
    records_received: int
    bytes_raw: int
    bytes_wire: int
    received_seq: int
    durable_seq: int
    acked_seq: int
    last_ack_time: float
    primary_end_seq: int
    last_error: str
    failed: str  # a fatal reason: the client stopped trying
    compression: int = 0  # the level the primary chose for the current (last) connection
    down_s: float = 0.0  # seconds since it was last streaming (or since the client started)


@dataclass
class _Counters:
    connected: bool = False
    peer: str = ""
    connections: int = 0
    frames: int = 0
    records: int = 0
    bytes_raw: int = 0
    bytes_wire: int = 0
    seq: int = 0  # sent (primary) / received (standby)
    acked_seq: int = 0
    last_ack_time: float = 0.0
    peer_end_seq: int = 0
    last_error: str = ""
    failed: str = ""
    compression: int = 0
    detached: str = ""
    #: monotonic time the stream was last lost (creation time until the first connection):
    #: how long a standby has been missing is what the agent reports as degraded
    down_since: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def disconnected(self) -> None:
        """The stream ended (call under ``lock``); a failed attempt while down changes nothing."""
        if self.connected:
            self.connected = False
            self.down_since = time.monotonic()

    def down_s(self) -> float:
        return 0.0 if self.connected else round(time.monotonic() - self.down_since, 1)


# =============================================================================================
# One non-blocking connection
# =============================================================================================
_MIN_IO = 1024  # under a bandwidth cap, wait for at least this many tokens before a syscall


class _Bucket:
    """Token bucket for a bandwidth cap: ``rate`` bytes per second, bursts of 50 ms (≥ 16 KiB).

    Why a bucket in the loop rather than sleeps: the connection thread must keep reading acks and
    heartbeats and react to wake-ups while it is holding back; the bucket only shortens the
    select() timeout and removes the socket's read or write interest while it is empty."""

    __slots__ = ("burst", "rate", "tokens", "when")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(16384.0, rate * 0.05)
        self.tokens = self.burst
        self.when = time.monotonic()

    def available(self) -> int:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.when) * self.rate)
        self.when = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        self.tokens -= n

    def wait_s(self, need: int) -> float:
        """Seconds until ``need`` bytes may pass."""
        return max(0.0, (min(need, self.burst) - self.tokens) / self.rate)


class _Conn:
    """A socket in non-blocking mode with an output buffer and a frame decoder.

    ``last_frame`` is the monotonic time of the last *complete* frame received: a peer that sends
    bytes which never complete a frame (a corrupted length) is as dead as a silent one.
    """

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        settings: TransportSettings,
        *,
        tx_cap: float = 0.0,
        rx_cap: float = 0.0,
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.settings = settings
        # Control frames only until the handshake says which level DATA frames use.
        self.encoder = FrameEncoder(None)
        self.decoder = FrameDecoder(peer, max_frame_bytes=settings.max_frame_bytes)
        self.out = bytearray()
        self.eof = False
        self.tx = _Bucket(tx_cap) if tx_cap > 0 else None
        self.rx = _Bucket(rx_cap) if rx_cap > 0 else None
        now = time.monotonic()
        self.last_frame = now
        self.last_rx = now
        self.last_send = now
        self._woken = False
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.wake_r, selectors.EVENT_READ)
        self._sock_events = 0

    def start_nonblocking(self) -> None:
        self.sock.setblocking(False)
        self._sock_events = selectors.EVENT_READ
        self.sel.register(self.sock, self._sock_events)

    def wake(self) -> None:
        """Thread-safe, never blocks: a byte in the socket pair ends the current select().
        Coalesced: the outbox calls this after every commit, one byte per loop is enough."""
        if self._woken:
            return
        self._woken = True
        try:
            self.wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (pipe full) or closed

    def send(self, msg: WireMessage) -> None:
        self.out += self.encoder.encode(msg)

    def recv_available(self, limit: int) -> int:
        """Read what the socket has (up to about ``limit`` bytes) into the decoder."""
        total = 0
        sock = self.sock
        rx = self.rx
        while total < limit:
            n = _RECV_CHUNK
            if rx is not None:
                n = min(n, rx.available())
                if n < _MIN_IO:
                    break
            try:
                data = sock.recv(n)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not data:
                self.eof = True
                break
            if rx is not None:
                rx.take(len(data))
            self.decoder.feed(data)
            total += len(data)
        if total:
            self.last_rx = time.monotonic()
        return total

    def flush_some(self) -> int:
        """Write as much of the output buffer as the socket takes now."""
        sent_total = 0
        tx = self.tx
        while self.out:
            n = _RECV_CHUNK
            if tx is not None:
                n = min(n, tx.available())
                if n < min(_MIN_IO, len(self.out)):
                    break
            try:
                with memoryview(self.out) as view:
                    sent = self.sock.send(view[:n])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break
            if tx is not None:
                tx.take(sent)
            del self.out[:sent]
            sent_total += sent
        if sent_total:
            self.last_send = time.monotonic()
        return sent_total

    def wait(self, timeout: float) -> tuple[bool, bool]:
        """select() on the socket (write interest only with pending output) and the wake pair;
        returns (readable, woken).  An empty bandwidth bucket drops the read or write interest
        and bounds the timeout by the time the bucket needs to refill."""
        want_read, want_write = True, bool(self.out)
        if self.rx is not None and self.rx.available() < _MIN_IO:
            want_read = False
            timeout = min(timeout, self.rx.wait_s(_MIN_IO))
        if want_write and self.tx is not None and self.tx.available() < min(_MIN_IO, len(self.out)):
            want_write = False
            timeout = min(timeout, self.tx.wait_s(min(_MIN_IO, len(self.out))))
        want = (selectors.EVENT_READ if want_read else 0) | (selectors.EVENT_WRITE if want_write else 0)
        if want != self._sock_events:
            if not want:
                self.sel.unregister(self.sock)
            elif not self._sock_events:
                self.sel.register(self.sock, want)
            else:
                self.sel.modify(self.sock, want)
            self._sock_events = want
        pending = want_read and isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
        readable = pending
        woken = False
        for key, events in self.sel.select(0 if pending else max(0.0, timeout)):
            if key.fileobj is self.wake_r:
                woken = True
                # Cleared before draining: a wake-up racing with the drain is not lost, because
                # the caller re-checks its sources after every wait().
                self._woken = False
                try:
                    while self.wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            elif events & selectors.EVENT_READ:
                readable = True
        return readable, woken

    def frames(self) -> Iterator[WireMessage]:
        """Every complete message buffered, one at a time, so that the frames before a bad one
        are still handled (raises FrameError at the bad one)."""
        dec = self.decoder
        while (frame := dec.next_frame()) is not None:
            self.last_frame = time.monotonic()
            yield dec.decode(frame)
        if self.eof:
            dec.check_eof()

    def last_sign_of_life(self) -> float:
        if self.rx is not None:
            # We read slowly on purpose: bytes arriving prove the peer alive even when a large
            # frame takes longer than dead_peer_s to get through our own cap.
            return max(self.last_frame, self.last_rx)
        return self.last_frame

    def check_alive(self, now: float) -> None:
        silent = now - self.last_sign_of_life()
        if silent > self.settings.dead_peer_s:
            raise PeerTimeout(
                f"{self.peer}: no frame for {silent:.1f}s (dead_peer_s {self.settings.dead_peer_s:g})"
            )

    def handshake_recv(self, deadline: float, stop: threading.Event) -> WireMessage:
        """The first message of the conversation, within ``deadline``.  Only one frame is
        decoded: the primary may send DATA right behind WELCOME, and those frames must wait until
        the receiver knows which sequence number to expect."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                self.last_frame = time.monotonic()
                return self.decoder.decode(frame)
            if self.eof:
                self.decoder.check_eof()
                raise RetryableTransportError(f"{self.peer}: connection closed during the handshake")
            now = time.monotonic()
            if stop.is_set():
                raise _Stop
            if now >= deadline:
                raise PeerTimeout(f"{self.peer}: no handshake within {self.settings.handshake_timeout_s:g}s")
            self.flush_some()
            readable, _ = self.wait(deadline - now)
            if readable:
                self.recv_available(1 << 20)

    def flush_blocking(self, deadline: float) -> None:
        """Push the output buffer out before ``deadline`` (used for WELCOME/REFUSE)."""
        while self.out:
            self.flush_some()
            if not self.out:
                return
            now = time.monotonic()
            if now >= deadline:
                raise PeerTimeout(f"{self.peer}: cannot send within the handshake timeout")
            self.wait(deadline - now)

    def close(self) -> None:
        for closer in (self.sel.close, self.sock.close, self.wake_r.close, self.wake_w.close):
            try:
                closer()
            except OSError:
                pass


def _peer_name(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr)


# =============================================================================================
# Primary side
# =============================================================================================
class PrimaryServer:
    """Listens for standbys and runs one :class:`Sender` thread per connection.

    ``standbys``: the names accepted (configuration); any other name is refused with a reason.
    ``on_ack(name, seq)`` runs in the sender's thread after the outbox recorded a new ack: the
    pipeline recomputes the released position there (``outbox.released_position(required)``,
    capped at the assembler's restart point) and tells the source.
    ``ssl_context``: a server context factory (``tls.server_context``); when its context requires
    client certificates, the certificate must name the standby that says HELLO.
    :meth:`detach` ends a standby's stream and refuses it until :meth:`attach` (the pipeline's
    lag policy decides; the transport only enforces).
    """

    def __init__(
        self,
        listen_host: str,
        port: int,
        outbox: OutboxPort,
        standbys: Collection[str],
        *,
        settings: TransportSettings | None = None,
        ssl_context: ContextFactory | None = None,
        on_ack: Callable[[str, int], None] | None = None,
    ) -> None:
        self.listen_host = listen_host
        self.port = port
        self.outbox = outbox
        self.standbys = frozenset(standbys)
        self.settings = settings or TransportSettings()
        self.ssl_context = ssl_context
        self.on_ack = on_ack
        self._lsock: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._senders: set[Sender] = set()
        self._active: dict[str, Sender] = {}
        self._counters: dict[str, _Counters] = {name: _Counters() for name in self.standbys}
        self._detached: dict[str, str] = {}
        self._accept_thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (``port`` 0 in the constructor picks a free port)."""
        assert self._lsock is not None, "start() first"
        host, port = self._lsock.getsockname()[:2]
        return host, port

    def start(self) -> PrimaryServer:
        """Bind and listen (errors surface here, before the daemon reports ready)."""
        infos = socket.getaddrinfo(self.listen_host, self.port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        lsock = socket.socket(family, socket.SOCK_STREAM)
        # A restarted primary must be able to bind its port while old connections linger in
        # TIME_WAIT; SO_REUSEADDR does not allow two live listeners on Linux.
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            lsock.bind(addr)
            lsock.listen(16)
        except OSError:
            lsock.close()
            raise
        lsock.setblocking(False)
        self._lsock = lsock
        t = threading.Thread(target=self._accept_loop, name="hodr-accept", daemon=True)
        self._accept_thread = t
        t.start()
        log.info("listening for standbys on %s", _peer_name(self.address))
        return self

    def _accept_loop(self) -> None:
        assert self._lsock is not None
        sel = selectors.DefaultSelector()
        sel.register(self._lsock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        continue
                    try:
                        sock, addr = self._lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if self._stop.is_set():
                            return
                        log.error("accept failed: %s", exc)
                        continue
                    self._spawn(sock, addr)
        finally:
            sel.close()

    def _spawn(self, sock: socket.socket, addr: Any) -> None:
        sender = Sender(self, sock, _peer_name(addr))
        t = threading.Thread(target=sender.run, name=f"hodr-sender-{sender.peer}", daemon=True)
        with self._lock:
            if self._stop.is_set():
                sock.close()
                return
            self._senders.add(sender)
            self._threads.add(t)
        t.start()

    def _claim(self, name: str, sender: Sender) -> _Counters:
        """``sender`` now serves ``name``; an older connection of the same name is ended (the
        standby reconnected before we noticed the old one was dead)."""
        with self._lock:
            old = self._active.get(name)
            self._active[name] = sender
            counters = self._counters[name]
        if old is not None:
            log.warning(
                "standby %s reconnected from %s; ending its connection from %s", name, sender.peer, old.peer
            )
            old.stop()
        with counters.lock:
            counters.connected = True
            counters.peer = sender.peer
            counters.connections += 1
            counters.compression = sender.compression
        return counters

    def detach(self, name: str, reason: str) -> None:
        """End ``name``'s stream now and refuse it (fatally: it must be reseeded or attached
        again by an operator) until :meth:`attach`."""
        with self._lock:
            self._detached[name] = reason
            sender = self._active.get(name)
        c = self._counters.get(name)
        if c is not None:
            with c.lock:
                c.detached = reason
        if sender is not None:
            log.warning("standby %s: ending its stream: detached: %s", name, reason)
            sender.stop()

    def attach(self, name: str) -> None:
        """Accept ``name`` again (it resumes from its durable position if the outbox has it)."""
        with self._lock:
            self._detached.pop(name, None)
        c = self._counters.get(name)
        if c is not None:
            with c.lock:
                c.detached = ""

    def detached(self) -> dict[str, str]:
        with self._lock:
            return dict(self._detached)

    def _release(self, sender: Sender, thread: threading.Thread) -> None:
        with self._lock:
            self._senders.discard(sender)
            self._threads.discard(thread)
            if sender.name is not None and self._active.get(sender.name) is sender:
                del self._active[sender.name]
                c = self._counters[sender.name]
                with c.lock:
                    c.disconnected()

    def stats(self) -> dict[str, SenderStats]:
        """Per registered standby counters (cumulative over its connections)."""
        out = {}
        for name, c in self._counters.items():
            with c.lock:
                out[name] = SenderStats(
                    name=name,
                    connected=c.connected,
                    peer=c.peer,
                    connections=c.connections,
                    frames_sent=c.frames,
                    records_sent=c.records,
                    bytes_raw=c.bytes_raw,
                    bytes_wire=c.bytes_wire,
                    sent_seq=c.seq,
                    acked_seq=c.acked_seq,
                    last_ack_time=c.last_ack_time,
                    last_error=c.last_error,
                    compression=c.compression,
                    detached=c.detached,
                    down_s=c.down_s(),
                )
        return out

    def connected(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._active))

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting, end every connection, join the threads within ``timeout``
        (default ``settings.close_timeout_s``); returns False if a thread did not end in time."""
        deadline = time.monotonic() + (self.settings.close_timeout_s if timeout is None else timeout)
        self._stop.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            senders = list(self._senders)
            threads = list(self._threads)
        for s in senders:
            s.stop()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._lsock is not None:
            self._lsock.close()
        self._wake_r.close()
        self._wake_w.close()
        try:
            self.outbox.flush_acks()
        except HodrError as exc:
            log.error("cannot persist standby cursors: %s", exc)
        alive = [t.name for t in threads if t.is_alive()]
        if self._accept_thread is not None and self._accept_thread.is_alive():
            alive.append(self._accept_thread.name)
        if alive:
            log.error("transport threads still running after close: %s", ", ".join(alive))
        return not alive

    def __enter__(self) -> PrimaryServer:
        return self.start() if self._lsock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sender:
    """Streams one standby from the outbox; runs in its own thread (``run``)."""

    def __init__(self, server: PrimaryServer, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.peer = peer
        self.name: str | None = None
        self.compression = 0
        self.cert_names: frozenset[str] | None = None  # None: plain TCP or no client certs asked
        self._sock = sock
        self._stopped = threading.Event()
        self._conn: _Conn | None = None

    def stop(self) -> None:
        self._stopped.set()
        conn = self._conn
        if conn is not None:
            conn.wake()

    def run(self) -> None:
        settings = self.server.settings
        counters: _Counters | None = None
        conn: _Conn | None = None
        try:
            sock = self._sock
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.server.ssl_context is not None:
                sock = self._tls_handshake(sock)
            conn = self._conn = _Conn(sock, self.peer, settings, tx_cap=settings.bandwidth_bytes)
            conn.start_nonblocking()
            if self._stopped.is_set():
                raise _Stop
            start = self._handshake(conn)
            assert self.name is not None
            counters = self.server._claim(self.name, self)
            self._stream(conn, start, counters)
        except _Stop:
            pass
        except TlsRefused as exc:
            log.error("refusing %s: %s", self.peer, exc)
        except (Retryable, OSError, ssl.SSLError) as exc:
            who = self.name or "unidentified standby"
            log.warning("standby %s (%s): connection ended: %s", who, self.peer, exc)
            if counters is not None:
                with counters.lock:
                    counters.last_error = str(exc)
        except HodrError as exc:
            # The outbox itself failed (corrupt record, disk error) or cannot serve this position
            # any more (trimmed meanwhile): this connection ends; the pipeline sees a failing
            # outbox through its own calls.
            log.error("standby %s (%s): stopping the stream: %s", self.name, self.peer, exc)
            if counters is not None:
                with counters.lock:
                    counters.last_error = str(exc)
        except Exception:
            log.exception("standby %s (%s): sender crashed", self.name, self.peer)
        finally:
            if conn is not None:
                conn.close()
            else:
                self._sock.close()
            self.server._release(self, threading.current_thread())

    def _tls_handshake(self, sock: socket.socket) -> socket.socket:
        """TLS server handshake (blocking, bounded by the handshake timeout).  A rejected client
        certificate (other CA, expired) fails here, before a byte of the protocol is read."""
        assert self.server.ssl_context is not None
        ctx = self.server.ssl_context()
        sock.settimeout(self.server.settings.handshake_timeout_s)
        try:
            tls = ctx.wrap_socket(sock, server_side=True)
        except ssl.SSLCertVerificationError as exc:
            raise TlsRefused(f"TLS client certificate rejected: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            hint = " (a plaintext client? this primary requires TLS)" if "VERSION" in str(exc).upper() else ""
            raise TlsRefused(f"TLS handshake failed: {exc.reason or exc}{hint}") from exc
        if ctx.verify_mode == ssl.CERT_REQUIRED:
            self.cert_names = peer_names(tls)
        return tls

    def _handshake(self, conn: _Conn) -> int:
        settings = self.server.settings
        deadline = time.monotonic() + settings.handshake_timeout_s
        try:
            msg = conn.handshake_recv(deadline, self._stopped)
        except BadMagic as exc:
            if exc.offset == 0 and looks_like_tls(conn.decoder.peek(2)):
                raise TlsRefused(
                    "the client speaks TLS but this primary has transport.insecure: true"
                ) from exc
            raise
        if not isinstance(msg, Hello):
            raise ProtocolError(f"{self.peer}: expected HELLO, got {type(msg).__name__}")
        outbox = self.server.outbox
        refusal: Refuse | None = None
        start = 0
        names = self.cert_names
        known = ", ".join(sorted(self.server.standbys)) or "none"
        with self.server._lock:
            detached = self.server._detached.get(msg.name)
        if msg.protocol != PROTOCOL_VERSION:
            refusal = Refuse(
                f"protocol {msg.protocol} not supported (this primary speaks {PROTOCOL_VERSION})", True
            )
        elif names is not None and not names & self.server.standbys:
            seen = ", ".join(sorted(names)) or "no name"
            refusal = Refuse(f"TLS certificate names {seen}: not a configured standby ({known})", True)
        elif names is not None and msg.name not in names:
            seen = ", ".join(sorted(names))
            refusal = Refuse(f"HELLO name {msg.name!r} does not match the TLS certificate ({seen})", True)
        elif msg.name not in self.server.standbys:
            refusal = Refuse(f"unknown standby name {msg.name!r} (registered: {known})", True)
        elif detached is not None:
            refusal = Refuse(f"detached by the primary: {detached}", True)
        else:
            try:
                start = outbox.resume_point(msg.lineage, msg.durable_seq, msg.durable_commit)
            except HodrFatal as exc:
                refusal = Refuse(str(exc), True)
            except HodrError as exc:
                refusal = Refuse(str(exc), False)
        if refusal is not None:
            log.warning("refusing %s (%s): %s", msg.name, self.peer, refusal.reason)
            conn.send(refusal)
            conn.flush_blocking(deadline)
            raise _Stop
        self.name = msg.name
        level = negotiate_compression(settings.compression, msg.compression)
        conn.send(Welcome(outbox.lineage, start, outbox.end_seq, level))
        conn.flush_blocking(deadline)
        # DATA frames of this connection use the negotiated level from here on.
        conn.encoder = FrameEncoder(compression_for(level))
        self.compression = level
        log.info(
            "standby %s connected from %s%s: streaming from seq %d (it holds %d of lineage %s), "
            "compression %d",
            msg.name,
            self.peer,
            " over TLS" if isinstance(conn.sock, ssl.SSLSocket) else "",
            start,
            msg.durable_seq,
            msg.lineage,
            level,
        )
        return start

    def _stream(self, conn: _Conn, start: int, counters: _Counters) -> None:
        settings, outbox = self.server.settings, self.server.outbox
        name = self.name
        assert name is not None
        reader = outbox.reader(start)
        outbox.add_listener(conn.wake)
        sent_seq = start - 1
        acked = start - 1
        # HELLO said "everything before start is durable here": that is an ack.  Without it an
        # ack lost with the previous connection would hold back the release (and, in sync mode,
        # a waiting commit) until the next transaction comes along.
        if acked > 0:
            self._record_ack(name, acked, counters)
        enc = conn.encoder
        try:
            while not self._stopped.is_set():
                # Fill the output buffer ahead of the socket (bounded: I10).
                while len(conn.out) < settings.send_buffer_bytes:
                    recs = reader.read(settings.batch_records, settings.frame_batch_bytes)
                    if not recs:
                        break
                    first = recs[0].seq
                    if first != sent_seq + 1 or recs[-1].seq != first + len(recs) - 1:
                        raise HodrFatal(
                            f"outbox sequence gap: after {sent_seq} read {first}..{recs[-1].seq} "
                            f"({len(recs)} records)"
                        )
                    raw0, wire0, frames0 = enc.raw_bytes, enc.wire_bytes, enc.frames
                    conn.send(Data(first, tuple(r.payload for r in recs)))
                    sent_seq = recs[-1].seq
                    with counters.lock:
                        counters.frames += enc.frames - frames0
                        counters.records += len(recs)
                        counters.bytes_raw += enc.raw_bytes - raw0
                        counters.bytes_wire += enc.wire_bytes - wire0
                        counters.seq = sent_seq
                now = time.monotonic()
                if not conn.out and now - conn.last_send >= settings.heartbeat_s:
                    conn.send(Heartbeat(outbox.end_seq))
                conn.flush_some()
                if conn.out:
                    timeout = settings.heartbeat_s
                else:
                    timeout = max(0.0, conn.last_send + settings.heartbeat_s - now)
                timeout = min(timeout, max(0.0, conn.last_sign_of_life() + settings.dead_peer_s - now) + 0.01)
                readable, _ = conn.wait(timeout)
                if readable:
                    conn.recv_available(1 << 20)
                    for msg in conn.frames():
                        if isinstance(msg, Ack):
                            if msg.seq > sent_seq:
                                raise ProtocolError(
                                    f"{self.peer}: ack of seq {msg.seq} never sent (sent {sent_seq})"
                                )
                            if msg.seq > acked:
                                acked = msg.seq
                                self._record_ack(name, acked, counters)
                        elif isinstance(msg, Heartbeat):
                            pass
                        else:
                            raise ProtocolError(
                                f"{self.peer}: unexpected {type(msg).__name__} while streaming"
                            )
                    if conn.eof:
                        raise RetryableTransportError(f"{self.peer}: standby closed the connection")
                conn.check_alive(time.monotonic())
        finally:
            outbox.remove_listener(conn.wake)
            reader.close()
            try:
                outbox.flush_acks()
            except HodrError as exc:
                log.error("cannot persist the cursor of %s: %s", name, exc)

    def _record_ack(self, name: str, seq: int, counters: _Counters) -> None:
        outbox = self.server.outbox
        if not outbox.ack(name, seq):
            return
        with counters.lock:
            counters.acked_seq = seq
            counters.last_ack_time = time.time()
        if self.server.on_ack is not None:
            try:
                self.server.on_ack(name, seq)
            except Exception:
                # The pipeline's release step failing must not tear down the stream; it reports
                # its own error (and the next ack retries the release).
                log.exception("on_ack(%s, %d) failed", name, seq)


# =============================================================================================
# Standby side
# =============================================================================================
class StandbyClient:
    """Connects to the primary, appends what it streams to the queue, acks what is durable.

    Runs one thread (``start``); reconnects with exponential backoff between
    ``reconnect_min_s`` and ``reconnect_max_s``.  A fatal refusal (unknown name, needs reseed,
    protocol, detached) or a failing queue stops it: :attr:`failed` then says why.
    ``ssl_context``: a client context factory (``tls.client_context``); ``primary_names``: the
    names the primary's certificate may carry (None: any certificate the context accepts).  TLS
    refusals are retried with backoff: the primary at a VIP may change, certificates get fixed.
    """

    def __init__(
        self,
        primary_host: str,
        port: int,
        name: str,
        queue: QueuePort,
        *,
        settings: TransportSettings | None = None,
        ssl_context: ContextFactory | None = None,
        primary_names: Collection[str] | None = None,
    ) -> None:
        self.primary_host = primary_host
        self.port = port
        self.name = name
        self.queue = queue
        self.settings = settings or TransportSettings()
        self.ssl_context = ssl_context
        self.primary_names = None if primary_names is None else frozenset(primary_names)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: _Conn | None = None
        self._c = _Counters()
        self.primary = f"{primary_host}:{port}"

    def start(self) -> StandbyClient:
        t = threading.Thread(target=self._run, name=f"hodr-receiver-{self.name}", daemon=True)
        self._thread = t
        t.start()
        return self

    @property
    def failed(self) -> str:
        """Non-empty once the client gave up (fatal refusal or queue failure)."""
        return self._c.failed

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> ReceiverStats:
        c = self._c
        with c.lock:
            return ReceiverStats(
                connected=c.connected,
                primary=self.primary,
                connections=c.connections,
                frames_received=c.frames,
                records_received=c.records,
                bytes_raw=c.bytes_raw,
                bytes_wire=c.bytes_wire,
                received_seq=self.queue.received_seq,
                durable_seq=self.queue.durable_seq,
                acked_seq=c.acked_seq,
                last_ack_time=c.last_ack_time,
                primary_end_seq=c.peer_end_seq,
                last_error=c.last_error,
                failed=c.failed,
                compression=c.compression,
                down_s=c.down_s(),
            )

    def close(self, timeout: float | None = None) -> bool:
        """Stop and join within ``timeout``; returns False if the thread is still running."""
        self._stop.set()
        conn = self._conn
        if conn is not None:
            conn.wake()
        if self._thread is not None:
            self._thread.join(self.settings.close_timeout_s if timeout is None else timeout)
            if self._thread.is_alive():
                log.error("receiver thread still running after close")
                return False
        return True

    def __enter__(self) -> StandbyClient:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.settings.reconnect_min_s
        c = self._c
        while not self._stop.is_set():
            streamed = False
            try:
                streamed = self._session()
            except _Stop:
                break
            except Refused as exc:
                self._note_error(str(exc))
                if exc.fatal:
                    log.error("standby %s: %s; not retrying", self.name, exc)
                    with c.lock:
                        c.failed = str(exc)
                    break
                log.warning("standby %s: %s; retrying", self.name, exc)
            except (TlsRefused, PeerNotAllowed) as exc:
                self._note_error(str(exc))
                log.error("standby %s: refusing the connection: %s", self.name, exc)
            except (Retryable, OSError, ssl.SSLError) as exc:
                self._note_error(str(exc))
                log.warning("standby %s: connection to %s ended: %s", self.name, self.primary, exc)
            except HodrFatal as exc:
                # The queue failed (disk full, corruption): stop before acking anything more (I9).
                self._note_error(str(exc))
                log.error("standby %s: stopping: %s", self.name, exc)
                with c.lock:
                    c.failed = str(exc)
                break
            except Exception as exc:
                log.exception("standby %s: receiver crashed", self.name)
                with c.lock:
                    c.failed = f"receiver crashed: {exc!r}"
                break
            finally:
                with c.lock:
                    c.disconnected()
            if streamed:
                backoff = self.settings.reconnect_min_s
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    def _note_error(self, text: str) -> None:
        with self._c.lock:
            self._c.last_error = text

    def _dial(self) -> socket.socket:
        """TCP connect within ``connect_timeout_s`` that :meth:`close` interrupts.

        ``socket.create_connection`` blocks for its whole timeout when the primary's host is
        gone (powered off, cable pulled: no answer at all), and a promotion stops the receiver
        first: it waited up to 5 s of RTO for a connect nobody needed any more.  A non-blocking
        connect polled with the stop event ends within 0.1 s of :meth:`close`."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        last: OSError | None = None
        for family, kind, proto, _, addr in socket.getaddrinfo(
            self.primary_host, self.port, type=socket.SOCK_STREAM
        ):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                err = sock.connect_ex(addr)
                while err in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
                    if self._stop.is_set():
                        raise _Stop()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("timed out")
                    _, writable, _ = select.select([], [sock], [], min(remaining, 0.1))
                    if writable:
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                sock.settimeout(self.settings.connect_timeout_s)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
        raise last if last is not None else OSError(f"cannot resolve {self.primary_host}")

    def _connect(self) -> _Conn:
        s = self.settings
        sock = self._dial()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock.settimeout(s.handshake_timeout_s)
                try:
                    sock = self.ssl_context().wrap_socket(sock, server_hostname=self.primary_host)
                except ssl.SSLCertVerificationError as exc:
                    raise TlsRefused(
                        f"TLS certificate of the primary at {self.primary} rejected: {exc.verify_message}"
                    ) from exc
                except ssl.SSLError as exc:
                    raise TlsRefused(
                        f"TLS handshake with the primary at {self.primary} failed: {exc.reason or exc}"
                    ) from exc
                if self.primary_names is not None:
                    check_peer(peer_names(sock), self.primary_names, f"the primary at {self.primary}")
        except BaseException:
            sock.close()
            raise
        conn = _Conn(sock, self.primary, s, rx_cap=s.bandwidth_bytes)
        conn.start_nonblocking()
        return conn

    def _session(self) -> bool:
        """One connection: handshake, then stream until something ends it.  Returns True if
        the stream got going (backoff resets)."""
        q, s, c = self.queue, self.settings, self._c
        # Whatever the last connection delivered passed its checksums: make it durable first,
        # so HELLO asks for exactly the records we do not hold.
        q.sync()
        conn = self._connect()
        self._conn = conn
        try:
            if self._stop.is_set():
                raise _Stop
            conn.send(
                Hello(self.name, q.lineage, q.durable_seq, q.last_durable_commit(), compression=s.compression)
            )
            deadline = time.monotonic() + s.handshake_timeout_s
            try:
                msg = conn.handshake_recv(deadline, self._stop)
            except BadMagic as exc:
                if exc.offset == 0 and looks_like_tls(conn.decoder.peek(2)):
                    raise TlsRefused(
                        f"the primary at {self.primary} speaks TLS but this standby has "
                        "transport.insecure: true"
                    ) from exc
                raise
            except ssl.SSLError as exc:
                # TLS 1.3: the primary checks our certificate after our side of the handshake
                # completed, so its verdict arrives as an alert on the first read.  Other alerts
                # (a bad record MAC: bytes damaged on the way) are ordinary transport errors.
                reason = str(exc.reason or exc)
                if any(w in reason.upper() for w in ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED")):
                    raise TlsRefused(
                        f"the primary at {self.primary} refused our TLS certificate: {reason} (see its log)"
                    ) from exc
                raise RetryableTransportError(
                    f"TLS error from the primary at {self.primary} during the handshake: {reason}"
                ) from exc
            except (OSError, RetryableTransportError) as exc:
                if self.ssl_context is not None:
                    raise
                # A TLS primary drops a plaintext HELLO without a word: say what is likely.
                raise RetryableTransportError(
                    f"the primary at {self.primary} ended the connection during the handshake ({exc}); "
                    "if it requires TLS: this standby has transport.insecure: true"
                ) from exc
            if isinstance(msg, Refuse):
                raise Refused(msg.reason, msg.fatal)
            if not isinstance(msg, Welcome):
                raise ProtocolError(f"{self.primary}: expected WELCOME, got {type(msg).__name__}")
            if msg.lineage != q.lineage:
                log.info(
                    "standby %s: primary history %s (was %s), starting at seq %d",
                    self.name,
                    msg.lineage,
                    q.lineage,
                    msg.start_seq,
                )
                q.reset_lineage(msg.lineage, msg.start_seq)
            if msg.start_seq != q.durable_seq + 1:
                raise ProtocolError(
                    f"{self.primary}: primary starts at seq {msg.start_seq}, we hold {q.durable_seq}"
                )
            conn.decoder.expect_seq = msg.start_seq
            with c.lock:
                c.connected = True
                c.connections += 1
                c.peer_end_seq = msg.end_seq
                c.compression = msg.compression
            log.info(
                "standby %s: streaming from %s%s at seq %d, compression %d",
                self.name,
                self.primary,
                " over TLS" if isinstance(conn.sock, ssl.SSLSocket) else "",
                msg.start_seq,
                msg.compression,
            )
            self._stream(conn)
            return True
        finally:
            self._conn = None
            conn.close()

    def _stream(self, conn: _Conn) -> None:
        q, s, c = self.queue, self.settings, self._c
        acked = q.durable_seq
        last_ack = 0.0
        dec = conn.decoder
        while not self._stop.is_set():
            now = time.monotonic()
            durable = q.durable_seq
            if durable > acked and now - last_ack >= s.ack_interval_s:
                # One ack covers everything fsynced so far (I6: never more than is durable).
                conn.send(Ack(durable))
                acked, last_ack = durable, now
                with c.lock:
                    c.acked_seq = acked
                    c.last_ack_time = time.time()
            elif now - conn.last_send >= s.heartbeat_s and not conn.out:
                conn.send(Heartbeat(durable))
            conn.flush_some()
            timeout = conn.last_send + s.heartbeat_s - now
            if durable > acked:
                timeout = min(timeout, last_ack + s.ack_interval_s - now)
            timeout = min(timeout, conn.last_sign_of_life() + s.dead_peer_s - now + 0.01)
            readable, _ = conn.wait(max(0.0, timeout))
            if readable:
                raw0, wire0 = dec.raw_bytes, dec.wire_bytes
                conn.recv_available(s.sync_bytes)
                nrec = nframes = 0
                try:
                    for msg in conn.frames():
                        if isinstance(msg, Data):
                            nframes += 1
                            seq = msg.first_seq
                            for payload in msg.records:
                                q.append(seq, payload)
                                seq += 1
                            nrec += len(msg.records)
                        elif isinstance(msg, Heartbeat):
                            with c.lock:
                                c.peer_end_seq = msg.seq
                        else:
                            raise ProtocolError(
                                f"{self.primary}: unexpected {type(msg).__name__} while streaming"
                            )
                finally:
                    if q.received_seq > q.durable_seq:
                        # Group commit: one fsync for the whole burst just read.
                        q.sync()
                    with c.lock:
                        c.frames += nframes
                        c.records += nrec
                        c.bytes_raw += dec.raw_bytes - raw0
                        c.bytes_wire += dec.wire_bytes - wire0
                        c.seq = q.received_seq
                        if q.received_seq > c.peer_end_seq:
                            c.peer_end_seq = q.received_seq
                if conn.eof:
                    raise RetryableTransportError(f"{self.primary}: primary closed the connection")
            conn.check_alive(time.monotonic())


__all__ = [
    "ContextFactory",
    "OutboxPort",
    "PeerTimeout",
    "PrimaryServer",
    "ProtocolError",
    "QueuePort",
    "ReceiverStats",
    "Refused",
    "Sender",
    "SenderStats",
    "StandbyClient",
    "TlsRefused",
    "TransportSettings",
]

"""Bytes formats: a :class:`Transaction` as a durable payload, and the wire frames between nodes.

Why one module for both: the payload written into the outbox is exactly the payload stored in
the standby's queue; the sender and receiver never re-encode it, they only wrap it in frames.

Transaction payload (``encode_transaction``)
--------------------------------------------
A fixed 70-byte header, then one msgpack object::

    version u8 | flags u8 (bit 0: final part) | part u32 | xid u64 |
    begin (epoch, lsn, seq: 3 x u64) | commit (3 x u64) | commit_time i64 |
    msgpack (tables, changes)

The fixed header lets the outbox and queue learn ``final``/``commit`` of a record without
decoding its changes (:func:`peek_transaction`).  ``tables`` lists each distinct table of the
payload once; changes refer to them by index (a pgbench-like transaction touches 3-4 tables, so
repeating the column list in every change would triple the payload).  The change tuples are
``hodr.replicate.changeobj``'s (``(0, op, table, before, after)``...) with the table replaced by
its index; :data:`~hodr.redo.records.UNCHANGED` is its msgpack extension type 1.  Decoding uses
``strict_map_key`` and msgpack's size limits (every length is bounded by the input size);
nothing is ever unpickled.

Wire frame (``FrameEncoder`` / ``FrameDecoder``)
------------------------------------------------
::

    magic "HW" | version u8 | flags u8 | kind u8 | reserved u8 (0) | length u32 | seq u64 |
    crc32 u32 | payload[length]

22 header bytes, big-endian.  The crc32 covers the first 18 header bytes and the payload as sent.
``flags`` bit 0 (:data:`FLAG_ZSTD`) says the payload is ``raw_length u32 | zstd frame``; other
compressors plug in through :class:`Compression` with their own flag bit.  ``seq`` is the first
record's sequence number for DATA frames, the acked sequence for ACK, the sender's end for
HEARTBEAT.  A DATA payload is ``count u32`` then ``count`` times ``length u32 | record``, with
consecutive sequence numbers starting at ``seq``: batching amortises the per-frame cost and gives
the compressor enough context.  Control frames carry msgpack maps with string keys.

Compression is negotiated per connection: HELLO carries the standby's ``compression`` setting,
WELCOME the level the primary chose (:func:`negotiate_compression`, the lower of the two); the
level only matters to the encoder, since every frame says in its flags whether it is compressed.

Every decoding error is a :class:`FrameError` (retryable: the connection is reset and resumes from
the last durable ack) naming the peer and the byte offset in the stream.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import msgpack

from hodr.errors import CorruptData, RetryableTransportError
from hodr.position import LogPosition
from hodr.redo.records import Change, LoadRows, Message, RowChange, Table
from hodr.replicate import changeobj
from hodr.replicate.transaction import Transaction

# =============================================================================================
# Transaction payloads
# =============================================================================================
TXN_VERSION = 1
TXN_FLAG_FINAL = 0x01
_TXN = struct.Struct(">BBIQQQQQQQq")
TXN_HEADER_SIZE = _TXN.size  # 70


@dataclass(frozen=True, slots=True)
class TxnHeader:
    """What :func:`peek_transaction` reads without decoding the changes."""

    xid: int
    begin: LogPosition
    commit: LogPosition
    commit_time: int
    part: int
    final: bool


# Tables repeat in every payload: both directions are cached (bounded; dict operations are atomic
# under the GIL, so the caches are safe to share between threads).  Decoding hands out the *same*
# Table object for equal metadata, which also keeps the applier's per-table caches warm.
_CACHE_LIMIT = 4096
_enc_cache: dict[int, tuple[Table, tuple[Any, ...]]] = {}
_dec_cache: dict[Any, Table] = {}


def _table_obj(t: Table) -> tuple[Any, ...]:
    hit = _enc_cache.get(id(t))
    if hit is not None and hit[0] is t:  # keyed by id, checked by identity (ids are reused)
        return hit[1]
    obj = changeobj.table_to_obj(t)
    if len(_enc_cache) >= _CACHE_LIMIT:
        _enc_cache.clear()
    _enc_cache[id(t)] = (t, obj)
    return obj


def _table_from(obj: Any) -> Table:
    try:
        hit = _dec_cache.get(obj)
    except TypeError:  # unhashable: not the shape we wrote; the checks below will say why
        hit = None
    if hit is not None:
        return hit
    table = changeobj.table_from_obj(obj)
    if not all(isinstance(v, str) for v in (table.schema, table.name, table.identity)) or not all(
        isinstance(c.name, str) and isinstance(c.type_name, str) for c in table.columns
    ):
        raise ValueError("table and column names must be strings")
    if len(_dec_cache) >= _CACHE_LIMIT:
        _dec_cache.clear()
    _dec_cache[obj] = table
    return table


class _Tables:
    """Interns tables for one payload: by identity first (capture reuses catalog objects), then
    by value."""

    __slots__ = ("by_id", "by_value", "objs")

    def __init__(self) -> None:
        self.by_id: dict[int, int] = {}
        self.by_value: dict[Table, int] = {}
        self.objs: list[tuple[Any, ...]] = []

    def ref(self, table: Table) -> int:
        idx = self.by_id.get(id(table))
        if idx is None:
            idx = self.by_value.get(table)
            if idx is None:
                idx = len(self.objs)
                self.objs.append(_table_obj(table))
                self.by_value[table] = idx
            self.by_id[id(table)] = idx
        return idx


def _check_widths(changes: tuple[Change, ...]) -> None:
    # Row widths are checked (a wrong width would shift values into the wrong columns); the values
    # themselves are not walked in Python: msgpack produced them and the crc vouched for the
    # bytes, and a per-value loop would cost more than the whole decode at 60-90k rows/s.
    for ch in changes:
        if type(ch) is RowChange:
            width = len(ch.table.columns)
            for row in (ch.before, ch.after):
                if row is not None and (type(row) is not tuple or len(row) != width):
                    got = len(row) if isinstance(row, tuple) else type(row).__name__
                    raise ValueError(f"row of {got} values, table {ch.table.qualified} has {width} columns")
        elif type(ch) is LoadRows:
            width = len(ch.table.columns)
            for row in ch.rows:
                if type(row) is not tuple or len(row) != width:
                    raise ValueError(f"load row of the wrong width for {ch.table.qualified}")
        elif type(ch) is Message and not isinstance(ch.content, bytes):
            raise ValueError("message content is not bytes")


def encode_transaction(txn: Transaction) -> bytes:
    """``txn`` (one part) as a durable payload."""
    tables = _Tables()
    ref = tables.ref
    changes = [changeobj.change_to_obj(c, ref) for c in txn.changes]
    body = changeobj.packb((tables.objs, changes))
    b, c = txn.begin, txn.commit
    head = _TXN.pack(
        TXN_VERSION,
        TXN_FLAG_FINAL if txn.final else 0,
        txn.part,
        txn.xid,
        b.epoch,
        b.lsn,
        b.seq,
        c.epoch,
        c.lsn,
        c.seq,
        txn.commit_time,
    )
    return head + body


def peek_transaction(payload: bytes, where: str = "payload") -> TxnHeader:
    """The header of an encoded transaction, without decoding its changes."""
    if len(payload) < TXN_HEADER_SIZE:
        raise CorruptData(f"{where}: transaction payload of {len(payload)} bytes is too short")
    version, flags, part, xid, be, bl, bs, ce, cl, cs, ctime = _TXN.unpack_from(payload)
    if version != TXN_VERSION:
        raise CorruptData(f"{where}: unknown transaction payload version {version}")
    if flags & ~TXN_FLAG_FINAL:
        raise CorruptData(f"{where}: unknown transaction flags 0x{flags:02x}")
    return TxnHeader(
        xid, LogPosition(be, bl, bs), LogPosition(ce, cl, cs), ctime, part, bool(flags & TXN_FLAG_FINAL)
    )


def decode_transaction(payload: bytes, where: str = "payload") -> Transaction:
    """Inverse of :func:`encode_transaction`; any malformation is :class:`CorruptData` naming
    ``where`` (a file and offset, or a sequence number)."""
    head = peek_transaction(payload, where)
    try:
        tables_obj, changes_obj = msgpack.unpackb(
            memoryview(payload)[TXN_HEADER_SIZE:], strict_map_key=True, **changeobj.UNPACK_OPTIONS
        )
        tables = tuple(_table_from(t) for t in tables_obj)
        table_of = tables.__getitem__
        changes = tuple(changeobj.change_from_obj(c, table_of) for c in changes_obj)
        _check_widths(changes)
    except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException) as exc:
        raise CorruptData(f"{where}: cannot decode transaction xid {head.xid}: {exc}") from exc
    return Transaction(
        xid=head.xid,
        begin=head.begin,
        commit=head.commit,
        commit_time=head.commit_time,
        changes=changes,
        part=head.part,
        final=head.final,
    )


# =============================================================================================
# Wire frames
# =============================================================================================
FRAME_MAGIC = b"HW"
FRAME_VERSION = 1
FLAG_ZSTD = 0x01
_KNOWN_FRAME_FLAGS = FLAG_ZSTD
_FHDR18 = struct.Struct(">2sBBBBIQ")
_FHDR = struct.Struct(">2sBBBBIQI")
FRAME_HEADER_SIZE = _FHDR.size  # 22
DEFAULT_MAX_FRAME_BYTES = 64 << 20
_U32 = struct.Struct(">I")
PROTOCOL_VERSION = 1


class Kind(IntEnum):
    HELLO = 1
    WELCOME = 2
    REFUSE = 3
    DATA = 4
    ACK = 5
    HEARTBEAT = 6


class FrameError(RetryableTransportError):
    """A frame failed a check; the connection is reset and resumes from the last durable ack."""

    def __init__(self, source: str, offset: int, problem: str) -> None:
        self.source = source
        self.offset = offset
        super().__init__(f"bad frame from {source} at stream offset {offset}: {problem}")


class BadMagic(FrameError):
    pass


class UnknownVersion(FrameError):
    pass


class FrameTooLarge(FrameError):
    pass


class TruncatedFrame(FrameError):
    pass


class ChecksumMismatch(FrameError):
    pass


class SequenceError(FrameError):
    """A DATA frame out of order (a gap) or replayed (a number already received)."""


class BadPayload(FrameError):
    pass


# -- compression hook -------------------------------------------------------------------------
class Compression(Protocol):
    """A payload compressor; ``flag`` is its bit in the frame header.  Instances are used by one
    connection (one thread) at a time."""

    flag: int
    name: str

    def compress(self, data: bytes) -> bytes: ...

    def decompress(self, data: bytes, raw_length: int) -> bytes: ...


class ZstdCompression:
    """zstd at a zstd ``level`` (negative = faster than 1; see :data:`ZSTD_LEVELS` for what the
    transport's 1-7 setting means)."""

    flag = FLAG_ZSTD
    name = "zstd"

    def __init__(self, level: int = 3) -> None:
        import zstandard  # only nodes that compress pay for the import

        if not -7 <= level <= 22 or level == 0:
            raise ValueError(f"zstd level must be -7..-1 or 1-22, got {level}")
        self.level = level
        self._zstd = zstandard
        self._c = zstandard.ZstdCompressor(level=level)
        self._d = zstandard.ZstdDecompressor()

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._c.compress(data)
        return out

    def decompress(self, data: bytes, raw_length: int) -> bytes:
        # The content size in a zstd frame header is trusted by decompress(), whatever
        # max_output_size says: check it against the length we already bounded, so a hostile
        # frame cannot make us allocate gigabytes.
        size = self._zstd.get_frame_parameters(data).content_size
        if size not in (raw_length, self._zstd.CONTENTSIZE_UNKNOWN):
            raise ValueError(f"zstd content size {size} differs from the frame's {raw_length}")
        out: bytes = self._d.decompress(data, max_output_size=raw_length)
        return out


#: The transport's ``compression`` setting 1-7 → zstd level, from fast to strong.
#:
#: Why not zstd 1-7 one to one: on replication payloads zstd levels 1-7 differ little in ratio
#: (bench/compression.py), so such a setting would offer seven ways to spend CPU for nothing.
#: The scale spans zstd's useful range instead: negative "fast" levels (≈ LZ4 speed, for links
#: that are merely busy) through the defaults up to a strong level for thin WAN links.  Above
#: zstd 12 the ratio gains a few percent for several times the CPU (15: ~5x slower than 12 on
#: text, 19: ~1 MB/s), and a compressor slower than the link throttles the stream.
ZSTD_LEVELS: dict[int, int] = {1: -5, 2: -1, 3: 1, 4: 3, 5: 6, 6: 9, 7: 12}


def compression_for(level: int) -> Compression | None:
    """The transport's ``compression`` setting: 0 = none, 1-7 = zstd from fast to strong."""
    if level == 0:
        return None
    if level not in ZSTD_LEVELS:
        raise ValueError(f"compression: expected 0 (off) or a zstd level 1-7, got {level}")
    return ZstdCompression(ZSTD_LEVELS[level])


def negotiate_compression(primary: int, standby: int | None) -> int:
    """The level one connection uses: the lower of the two settings.

    Why the lower: each side's setting is the most its operator allows — the primary pays the
    CPU (once per connection), the standby's operator knows its link; a standby that did not say
    (``None``, an older peer) gets the primary's setting, which every zstd-capable decoder reads."""
    if standby is None:
        return primary
    return max(0, min(primary, standby))


# -- messages ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hello:
    """Standby → primary: who I am and what I hold durably."""

    name: str
    lineage: str | None
    durable_seq: int
    durable_commit: LogPosition | None
    protocol: int = PROTOCOL_VERSION
    compression: int | None = None  # the standby's setting 0-7 (None: not said)


@dataclass(frozen=True, slots=True)
class Welcome:
    """Primary → standby: the history (lineage) and the first sequence number it will send."""

    lineage: str
    start_seq: int
    end_seq: int
    compression: int = 0  # the level DATA frames of this connection use (negotiated)


@dataclass(frozen=True, slots=True)
class Refuse:
    """Primary → standby: no stream; ``fatal`` when retrying cannot help (config, reseed)."""

    reason: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class Data:
    """Records ``first_seq, first_seq + 1, ...`` (outbox payloads, passed through untouched)."""

    first_seq: int
    records: tuple[bytes, ...]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.records) - 1


@dataclass(frozen=True, slots=True)
class Ack:
    """Standby → primary: everything up to ``seq`` is fsynced in my queue (I6)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Either way: I am alive; ``seq`` is my end (primary) or durable position (standby)."""

    seq: int


WireMessage = Hello | Welcome | Refuse | Data | Ack | Heartbeat


def _pos_obj(p: LogPosition | None) -> list[int] | None:
    return None if p is None else p.to_list()


def _control_payload(msg: WireMessage) -> tuple[Kind, int, bytes]:
    if isinstance(msg, Hello):
        body = {
            "protocol": msg.protocol,
            "name": msg.name,
            "lineage": msg.lineage,
            "durable_seq": msg.durable_seq,
            "durable_commit": _pos_obj(msg.durable_commit),
        }
        if msg.compression is not None:
            body["compression"] = msg.compression
        return Kind.HELLO, 0, msgpack.packb(body)
    if isinstance(msg, Welcome):
        body = {
            "lineage": msg.lineage,
            "start_seq": msg.start_seq,
            "end_seq": msg.end_seq,
            "compression": msg.compression,
        }
        return Kind.WELCOME, msg.start_seq, msgpack.packb(body)
    if isinstance(msg, Refuse):
        return Kind.REFUSE, 0, msgpack.packb({"reason": msg.reason, "fatal": msg.fatal})
    if isinstance(msg, Ack):
        return Kind.ACK, msg.seq, b""
    if isinstance(msg, Heartbeat):
        return Kind.HEARTBEAT, msg.seq, b""
    raise TypeError(f"not a control message: {msg!r:.100}")


def encode_data_payload(records: list[bytes] | tuple[bytes, ...]) -> bytes:
    pack = _U32.pack
    parts = [pack(len(records))]
    for r in records:
        parts.append(pack(len(r)))
        parts.append(r)
    return b"".join(parts)


class FrameEncoder:
    """Builds frames; compresses DATA payloads of at least ``min_compress`` bytes when a
    :class:`Compression` is given and it actually saves space.  Counts raw and wire bytes."""

    def __init__(self, compression: Compression | None = None, *, min_compress: int = 512) -> None:
        self.compression = compression
        self.min_compress = min_compress
        self.raw_bytes = 0
        self.wire_bytes = 0
        self.frames = 0

    def frame(self, kind: Kind, seq: int, payload: bytes) -> bytes:
        flags = 0
        raw_len = len(payload)
        comp = self.compression
        if comp is not None and raw_len >= self.min_compress:
            packed = comp.compress(payload)
            if len(packed) + 4 < raw_len:
                payload = _U32.pack(raw_len) + packed
                flags |= comp.flag
        head = _FHDR18.pack(FRAME_MAGIC, FRAME_VERSION, flags, kind, 0, len(payload), seq)
        crc = zlib.crc32(payload, zlib.crc32(head))
        self.raw_bytes += raw_len
        self.wire_bytes += FRAME_HEADER_SIZE + len(payload)
        self.frames += 1
        return b"".join((head, _U32.pack(crc), payload))

    def encode(self, msg: WireMessage) -> bytes:
        if isinstance(msg, Data):
            return self.frame(Kind.DATA, msg.first_seq, encode_data_payload(msg.records))
        kind, seq, payload = _control_payload(msg)
        return self.frame(kind, seq, payload)


@dataclass(frozen=True, slots=True)
class Frame:
    """A checked frame: ``payload`` already decompressed."""

    kind: Kind
    seq: int
    payload: bytes
    offset: int  # stream offset of the frame's first byte (for error messages)


class FrameDecoder:
    """Incremental frame parser for one connection.

    ``expect_seq``: when set, a DATA frame must start exactly there (then it advances past the
    frame), otherwise :class:`SequenceError` — a replay would double records in the queue and a
    gap would lose them.
    """

    def __init__(
        self,
        source: str,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        compressions: tuple[Compression, ...] | None = None,
    ) -> None:
        self.source = source
        self.max_frame_bytes = max_frame_bytes
        self.expect_seq: int | None = None
        self._buf = bytearray()
        self._pos = 0  # read index into _buf
        self._base = 0  # stream offset of _buf[0]
        self._comp: dict[int, Compression] | None = (
            None if compressions is None else {c.flag: c for c in compressions}
        )
        self.raw_bytes = 0
        self.wire_bytes = 0
        self.frames = 0

    @property
    def offset(self) -> int:
        """Stream offset of the next unparsed byte."""
        return self._base + self._pos

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def peek(self, n: int) -> bytes:
        """The next ``n`` unparsed bytes (or fewer): lets the transport tell a TLS record from
        a frame when a bad magic arrives at offset 0."""
        return bytes(self._buf[self._pos : self._pos + n])

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        self._buf += data

    def _error(self, cls: type[FrameError], offset: int, problem: str) -> FrameError:
        return cls(self.source, offset, problem)

    def _decompressor(self, flag: int) -> Compression:
        if self._comp is None:
            self._comp = {FLAG_ZSTD: ZstdCompression()}
        comp = self._comp.get(flag)
        if comp is None:
            raise ValueError(f"no decompressor for flag 0x{flag:02x}")
        return comp

    def next_frame(self) -> Frame | None:
        """The next complete, checked frame, or ``None`` when more bytes are needed."""
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        at = self._base + pos
        if avail < FRAME_HEADER_SIZE:
            if avail >= 2 and buf[pos : pos + 2] != FRAME_MAGIC:
                raise self._error(BadMagic, at, f"bad magic {bytes(buf[pos : pos + 2])!r}")
            return None
        magic, version, flags, kind, reserved, length, seq, crc = _FHDR.unpack_from(buf, pos)
        if magic != FRAME_MAGIC:
            raise self._error(BadMagic, at, f"bad magic {magic!r}")
        if version != FRAME_VERSION:
            raise self._error(UnknownVersion, at, f"unknown frame version {version}")
        if length > self.max_frame_bytes:
            raise self._error(
                FrameTooLarge, at, f"frame length {length} exceeds the limit {self.max_frame_bytes}"
            )
        if avail < FRAME_HEADER_SIZE + length:
            return None
        start = pos + FRAME_HEADER_SIZE
        with memoryview(buf) as view:  # released at once: a live view would pin the bytearray
            payload = bytes(view[start : start + length])
            head_crc = zlib.crc32(view[pos : pos + 18])
        if zlib.crc32(payload, head_crc) != crc:
            raise self._error(ChecksumMismatch, at, f"checksum mismatch (kind {kind}, seq {seq})")
        # From here on the bytes are what the peer sent; anything odd is a protocol problem.
        try:
            kind = Kind(kind)
        except ValueError:
            raise self._error(BadPayload, at, f"unknown frame kind {kind}") from None
        if reserved or flags & ~_KNOWN_FRAME_FLAGS:
            raise self._error(BadPayload, at, f"unknown flags 0x{flags:02x}/0x{reserved:02x}")
        if flags:
            if length < 4:
                raise self._error(BadPayload, at, "compressed payload without its length")
            (raw_len,) = _U32.unpack_from(payload)
            if raw_len > self.max_frame_bytes:
                raise self._error(FrameTooLarge, at, f"uncompressed length {raw_len} exceeds the limit")
            try:
                payload = self._decompressor(flags).decompress(payload[4:], raw_len)
            except Exception as exc:  # noqa: BLE001 - any decompressor failure is a bad frame
                raise self._error(BadPayload, at, f"cannot decompress: {exc}") from exc
            if len(payload) != raw_len:
                raise self._error(BadPayload, at, f"decompressed {len(payload)} bytes, expected {raw_len}")
        if kind is Kind.DATA and self.expect_seq is not None and seq != self.expect_seq:
            what = "replayed" if seq < self.expect_seq else "out of order (gap)"
            raise self._error(SequenceError, at, f"DATA seq {seq} {what}, expected {self.expect_seq}")
        self._pos = start + length
        self.frames += 1
        self.wire_bytes += FRAME_HEADER_SIZE + length
        self.raw_bytes += len(payload)
        return Frame(kind, seq, payload, at)

    def check_eof(self) -> None:
        """The peer closed the stream: bytes of an unfinished frame mean a truncated frame."""
        if self.buffered:
            raise self._error(
                TruncatedFrame, self.offset, f"stream ended inside a frame ({self.buffered} bytes)"
            )

    def decode(self, frame: Frame) -> WireMessage:
        """The message a frame carries; advances ``expect_seq`` past DATA frames."""
        try:
            if frame.kind is Kind.DATA:
                msg = _decode_data(frame)
                if self.expect_seq is not None:
                    self.expect_seq = msg.last_seq + 1
                return msg
            if frame.kind is Kind.ACK:
                return Ack(frame.seq)
            if frame.kind is Kind.HEARTBEAT:
                return Heartbeat(frame.seq)
            body = msgpack.unpackb(frame.payload, raw=False, strict_map_key=True, use_list=True)
            if not isinstance(body, dict):
                raise ValueError("control payload is not a map")
            if frame.kind is Kind.HELLO:
                commit = body["durable_commit"]
                lineage = body["lineage"]
                comp = body.get("compression")
                return Hello(
                    name=_str(body["name"]),
                    lineage=None if lineage is None else _str(lineage),
                    durable_seq=_uint(body["durable_seq"]),
                    durable_commit=None if commit is None else LogPosition.from_list(commit),
                    protocol=_uint(body["protocol"]),
                    compression=None if comp is None else _level(comp),
                )
            if frame.kind is Kind.WELCOME:
                return Welcome(
                    lineage=_str(body["lineage"]),
                    start_seq=_uint(body["start_seq"]),
                    end_seq=_uint(body["end_seq"]),
                    compression=_level(body.get("compression", 0)),
                )
            if frame.kind is Kind.REFUSE:
                return Refuse(reason=_str(body["reason"]), fatal=bool(body.get("fatal", False)))
        except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException) as exc:
            raise self._error(BadPayload, frame.offset, f"bad {frame.kind.name} payload: {exc}") from exc
        raise self._error(BadPayload, frame.offset, f"unexpected frame kind {frame.kind.name}")


def _str(v: Any) -> str:
    if not isinstance(v, str) or len(v) > 4096:
        raise ValueError(f"expected a string, got {type(v).__name__}")
    return v


def _level(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= 7:
        raise ValueError(f"expected a compression level 0-7, got {v!r:.40}")
    return v


def _uint(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r:.40}")
    return v


def _decode_data(frame: Frame) -> Data:
    p = frame.payload
    n = len(p)
    if n < 4:
        raise ValueError("DATA payload without a record count")
    (count,) = _U32.unpack_from(p, 0)
    if count == 0 or count > n // 4:
        raise ValueError(f"absurd record count {count}")
    unpack = _U32.unpack_from
    records: list[bytes] = []
    pos = 4
    for _ in range(count):
        if pos + 4 > n:
            raise ValueError("DATA payload ends inside a record length")
        (length,) = unpack(p, pos)
        pos += 4
        end = pos + length
        if end > n:
            raise ValueError(f"record of {length} bytes runs past the payload")
        records.append(p[pos:end])
        pos = end
    if pos != n:
        raise ValueError(f"{n - pos} bytes after the last record")
    return Data(frame.seq, tuple(records))


def decode_frame(
    data: bytes, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, source: str = "buffer"
) -> Frame:
    """One frame from a complete buffer (tests, tools): :class:`TruncatedFrame` if it is short."""
    dec = FrameDecoder(source, max_frame_bytes=max_frame_bytes)
    dec.feed(data)
    frame = dec.next_frame()
    if frame is None:
        raise TruncatedFrame(source, 0, f"{len(data)} bytes do not hold a complete frame")
    return frame


__all__ = [
    "Ack",
    "BadMagic",
    "BadPayload",
    "ChecksumMismatch",
    "Compression",
    "Data",
    "FLAG_ZSTD",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "FrameError",
    "FrameTooLarge",
    "Heartbeat",
    "Hello",
    "Kind",
    "PROTOCOL_VERSION",
    "Refuse",
    "SequenceError",
    "TruncatedFrame",
    "TxnHeader",
    "UnknownVersion",
    "Welcome",
    "WireMessage",
    "ZSTD_LEVELS",
    "ZstdCompression",
    "compression_for",
    "negotiate_compression",
    "decode_frame",
    "decode_transaction",
    "encode_data_payload",
    "encode_transaction",
    "peek_transaction",
]

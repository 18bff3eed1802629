"""Transaction payloads and wire frames: round trips and every decoding error."""

from __future__ import annotations

import struct
import zlib

import msgpack
import pytest

from hodr.errors import CorruptData, RetryableTransportError
from hodr.position import LogPosition
from hodr.redo.records import UNCHANGED, Column, LoadRows, Message, Op, RowChange, Table, Truncate
from hodr.replicate.codec import (
    FLAG_ZSTD,
    FRAME_HEADER_SIZE,
    TXN_HEADER_SIZE,
    Ack,
    BadMagic,
    BadPayload,
    ChecksumMismatch,
    Data,
    FrameDecoder,
    FrameEncoder,
    FrameTooLarge,
    Heartbeat,
    Hello,
    Kind,
    Refuse,
    SequenceError,
    TruncatedFrame,
    UnknownVersion,
    Welcome,
    ZstdCompression,
    compression_for,
    decode_frame,
    decode_transaction,
    encode_transaction,
    peek_transaction,
)
from hodr.replicate.transaction import Transaction

ACCOUNTS = Table(
    "public",
    "accounts",
    (
        Column("id", "integer", key=True, type_oid=23),
        Column("balance", "numeric(10,2)", type_oid=1700),
        Column("note", "text", type_oid=25),
        Column("tags", "text[]", type_oid=1009),
    ),
    identity="d",
    relid=16384,
)
HISTORY = Table("app", "history", (Column("x", "text"), Column("y", "jsonb")), identity="f", relid=16400)


def sample_txn(part: int = 0, final: bool = True) -> Transaction:
    return Transaction(
        xid=2**40 + 7,
        begin=LogPosition(3, 0x1_0000_0000, 0),
        commit=LogPosition(3, 0x1_0000_0100, 2),
        commit_time=1_700_000_000_123_456,
        part=part,
        final=final,
        changes=(
            RowChange(Op.INSERT, ACCOUNTS, None, ("1", "10.50", None, "{a,b}")),
            RowChange(Op.UPDATE, ACCOUNTS, None, ("1", "11.00", UNCHANGED, UNCHANGED)),
            RowChange(Op.UPDATE, ACCOUNTS, ("1", None, None, None), ("2", "11.00", "é ☃", None)),
            RowChange(Op.DELETE, ACCOUNTS, ("2", None, None, None), None),
            RowChange(Op.INSERT, HISTORY, None, ("", '{"k": [1, 2]}')),
            Truncate((ACCOUNTS, HISTORY), cascade=True, restart_identity=True),
            Message("hodr", b"\x00epoch-end\xff", transactional=False),
            LoadRows(HISTORY, (("a", None), (None, UNCHANGED), ("c", "d"))),
        ),
    )


# -- transaction payloads ---------------------------------------------------------------------
def test_every_change_kind_round_trips() -> None:
    txn = sample_txn()
    back = decode_transaction(encode_transaction(txn))
    assert back == txn
    # UNCHANGED stays the singleton and stays distinct from None (NULL).
    assert back.changes[1].after[2] is UNCHANGED  # type: ignore[union-attr]
    assert back.changes[0].after[2] is None  # type: ignore[union-attr]
    # Table metadata survives in full, and one decoded payload shares one Table object.
    assert back.changes[0].table == ACCOUNTS  # type: ignore[union-attr]
    assert back.changes[0].table is back.changes[3].table  # type: ignore[union-attr]
    assert back.changes[5].tables[1].identity == "f"  # type: ignore[union-attr]
    assert isinstance(back.changes[6].content, bytes)  # type: ignore[union-attr]


def test_parts_and_empty_transactions_round_trip() -> None:
    part = sample_txn(part=3, final=False)
    assert decode_transaction(encode_transaction(part)) == part
    empty = Transaction(1, LogPosition(1, 5), LogPosition(1, 6), 0, ())
    assert decode_transaction(encode_transaction(empty)) == empty


def test_peek_reads_the_header_without_the_changes() -> None:
    head = peek_transaction(encode_transaction(sample_txn(part=2, final=False)))
    assert (head.xid, head.part, head.final) == (2**40 + 7, 2, False)
    assert head.commit == LogPosition(3, 0x1_0000_0100, 2)
    assert head.begin == LogPosition(3, 0x1_0000_0000, 0)


def test_tables_are_written_once_per_payload() -> None:
    change = RowChange(Op.INSERT, ACCOUNTS, None, ("1", "2", "3", "4"))
    one = encode_transaction(Transaction(1, LogPosition(1, 1), LogPosition(1, 2), 0, (change,)))
    many = encode_transaction(Transaction(1, LogPosition(1, 1), LogPosition(1, 2), 0, (change,) * 20))
    per_change = (len(many) - len(one)) / 19
    assert per_change < 30  # the column list is not repeated


@pytest.mark.parametrize(
    "mangle, match",
    [
        (lambda b: b[:10], "too short"),
        (lambda b: b"\x09" + b[1:], "unknown transaction payload version 9"),
        (lambda b: b[:TXN_HEADER_SIZE] + b"\xc1", "cannot decode"),
        (lambda b: b[:-5], "cannot decode"),
        (lambda b: b[:TXN_HEADER_SIZE] + msgpack.packb(((), ((0, "I", 0, None, None),))), "cannot decode"),
        (lambda b: b[:TXN_HEADER_SIZE] + msgpack.packb(((), ((9,),))), "cannot decode"),
        (lambda b: b[:TXN_HEADER_SIZE] + msgpack.packb({1: 2}), "cannot decode"),
    ],
)
def test_malformed_payloads_are_corrupt_data(mangle, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CorruptData, match=match):
        decode_transaction(mangle(encode_transaction(sample_txn())), "queue seq 17")


def test_wrong_row_width_and_unknown_extension_types_are_rejected() -> None:
    good = encode_transaction(sample_txn())
    tables = ((("s", "t", "d", 0, (("a", "text", True, 0),)),),)
    body = msgpack.packb((tables[0], ((0, "I", 0, None, ("1", "2")),)))
    with pytest.raises(CorruptData, match="row of 2 values, table s.t has 1 columns"):
        decode_transaction(good[:TXN_HEADER_SIZE] + body)
    ext = msgpack.packb((tables[0], ((0, "I", 0, None, (msgpack.ExtType(42, b"x"),)),)))
    with pytest.raises(CorruptData, match="extension type 42"):
        decode_transaction(good[:TXN_HEADER_SIZE] + ext)


def test_encoding_refuses_values_it_cannot_represent() -> None:
    bad = RowChange(Op.INSERT, HISTORY, None, ("x", object()))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_transaction(Transaction(1, LogPosition(1, 1), LogPosition(1, 2), 0, (bad,)))


# -- frames -----------------------------------------------------------------------------------
MESSAGES = [
    Hello("node2", "abc123", 41, LogPosition(2, 99, 1)),
    Hello("node3", None, 0, None),
    Welcome("abc123", 42, 1000),
    Refuse("unknown standby name 'x'", fatal=True),
    Ack(77),
    Heartbeat(12),
    Data(5, (b"one", b"", b"three" * 100)),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg) -> None:  # type: ignore[no-untyped-def]
    wire = FrameEncoder().encode(msg)
    dec = FrameDecoder("peer")
    dec.feed(wire)
    frame = dec.next_frame()
    assert frame is not None and dec.next_frame() is None
    assert dec.decode(frame) == msg


def test_byte_by_byte_feeding_gives_the_same_frames() -> None:
    enc = FrameEncoder()
    wire = b"".join(enc.encode(m) for m in MESSAGES)
    dec = FrameDecoder("peer")
    got = []
    for i in range(len(wire)):
        dec.feed(wire[i : i + 1])
        while (f := dec.next_frame()) is not None:
            got.append(dec.decode(f))
    assert got == MESSAGES
    assert dec.offset == len(wire) and dec.buffered == 0


def test_zstd_compresses_large_data_frames_only() -> None:
    enc = FrameEncoder(ZstdCompression(3))
    big = Data(1, tuple(b"row %d of a compressible batch " % i * 4 for i in range(200)))
    wire_big = enc.encode(big)
    wire_small = enc.encode(Ack(3))
    assert wire_big[3] & FLAG_ZSTD and not wire_small[3] & FLAG_ZSTD
    assert enc.wire_bytes < enc.raw_bytes / 3
    dec = FrameDecoder("peer")
    dec.feed(wire_big + wire_small)
    assert dec.decode(dec.next_frame()) == big  # type: ignore[arg-type]
    assert dec.decode(dec.next_frame()) == Ack(3)  # type: ignore[arg-type]


def test_compression_setting() -> None:
    assert compression_for(0) is None
    assert isinstance(compression_for(7), ZstdCompression)
    with pytest.raises(ValueError, match="zstd level 1-7"):
        compression_for(8)


def _frame(kind: int, seq: int, payload: bytes, *, version: int = 1, flags: int = 0) -> bytes:
    head = struct.pack(">2sBBBBIQ", b"HW", version, flags, kind, 0, len(payload), seq)
    return head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload


def test_checksum_mismatch() -> None:
    wire = bytearray(FrameEncoder().encode(Data(1, (b"abcdef",))))
    wire[-2] ^= 0x10
    with pytest.raises(ChecksumMismatch, match="from peer at stream offset 0: checksum mismatch"):
        decode_frame(bytes(wire), source="peer")
    wire = bytearray(FrameEncoder().encode(Data(1, (b"abcdef",))))
    wire[12] ^= 0x01  # a bit of the sequence number in the header is covered too
    with pytest.raises(ChecksumMismatch):
        decode_frame(bytes(wire))


def test_truncated_frame() -> None:
    wire = FrameEncoder().encode(Data(1, (b"abcdef",)))
    with pytest.raises(TruncatedFrame):
        decode_frame(wire[:-1])
    dec = FrameDecoder("primary:5440")
    dec.feed(wire + wire[: FRAME_HEADER_SIZE + 2])
    assert dec.next_frame() is not None and dec.next_frame() is None
    with pytest.raises(TruncatedFrame, match=f"primary:5440 at stream offset {len(wire)}"):
        dec.check_eof()


def test_absurd_length_is_rejected_before_the_payload_arrives() -> None:
    dec = FrameDecoder("peer", max_frame_bytes=1000)
    dec.feed(_frame(Kind.DATA, 1, b"x" * 1001)[:FRAME_HEADER_SIZE])
    with pytest.raises(FrameTooLarge, match="1001 exceeds the limit 1000"):
        dec.next_frame()


def test_unknown_version_and_bad_magic() -> None:
    with pytest.raises(UnknownVersion, match="version 9"):
        decode_frame(_frame(Kind.ACK, 1, b"", version=9))
    with pytest.raises(BadMagic):
        decode_frame(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    dec = FrameDecoder("peer")
    dec.feed(b"XY")  # caught as soon as two bytes are there
    with pytest.raises(BadMagic):
        dec.next_frame()


def test_data_sequence_must_continue_exactly() -> None:
    enc = FrameEncoder()
    dec = FrameDecoder("peer")
    dec.expect_seq = 10
    dec.feed(enc.encode(Data(10, (b"a", b"b"))))
    assert dec.decode(dec.next_frame()) == Data(10, (b"a", b"b"))  # type: ignore[arg-type]
    assert dec.expect_seq == 12
    dec.feed(enc.encode(Data(11, (b"b",))))
    with pytest.raises(SequenceError, match="DATA seq 11 replayed, expected 12"):
        dec.next_frame()
    dec2 = FrameDecoder("peer")
    dec2.expect_seq = 12
    dec2.feed(enc.encode(Data(14, (b"d",))))
    with pytest.raises(SequenceError, match="out of order"):
        dec2.next_frame()


@pytest.mark.parametrize(
    "kind, payload, match",
    [
        (Kind.DATA, b"\x00\x00\x00\x02\x00\x00\x00\x01a", "ends inside"),
        (Kind.DATA, b"\x00\x00\x00\x01\x00\x00\x00\x09abc", "runs past"),
        (Kind.DATA, b"\x00\x00\x00\x01\x00\x00\x00\x01ab", "after the last record"),
        (Kind.DATA, b"\x00\x00\x00\x00", "absurd record count"),
        (Kind.HELLO, msgpack.packb({1: "x"}), "bad HELLO payload"),
        (Kind.HELLO, msgpack.packb({"name": "x"}), "bad HELLO payload"),
        (Kind.WELCOME, msgpack.packb({"lineage": "a", "start_seq": -1, "end_seq": 0}), "non-negative"),
        (Kind.REFUSE, msgpack.packb([1, 2]), "not a map"),
        (99, b"", "unknown frame kind 99"),
    ],
)
def test_bad_payloads_behind_a_good_checksum(kind: int, payload: bytes, match: str) -> None:
    dec = FrameDecoder("peer")
    dec.feed(_frame(kind, 1, payload))
    with pytest.raises(BadPayload, match=match):
        dec.decode(dec.next_frame())  # type: ignore[arg-type]


def test_a_zstd_bomb_is_refused() -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\0" * 10_000_000)
    dec = FrameDecoder("peer", max_frame_bytes=1 << 20)
    dec.feed(_frame(Kind.DATA, 1, struct.pack(">I", 1000) + bomb, flags=FLAG_ZSTD))
    with pytest.raises(BadPayload, match="content size"):
        dec.next_frame()
    dec = FrameDecoder("peer", max_frame_bytes=1 << 20)
    dec.feed(_frame(Kind.DATA, 1, struct.pack(">I", 10_000_000) + bomb, flags=FLAG_ZSTD))
    with pytest.raises(FrameTooLarge, match="uncompressed length"):
        dec.next_frame()


def test_frame_errors_are_retryable_transport_errors() -> None:
    # The transport resets the connection and resumes from the last durable ack.
    assert issubclass(ChecksumMismatch, RetryableTransportError)
    assert issubclass(SequenceError, RetryableTransportError)

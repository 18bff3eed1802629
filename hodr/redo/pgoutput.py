"""Pure parser of PostgreSQL's pgoutput logical replication protocol, versions 1-3 (no I/O).

Why a hand-written parser: capture must stay at a few µs of Python per message (pg-notes §6:
~2-3 µs is achievable), so every parser reads the walsender's buffer in place with precompiled
``struct.Struct`` methods and returns a ``NamedTuple`` (the cheapest immutable value to build).

Why a registry (architecture §9 item 4): :data:`DECODERS` maps the message's first byte to its
parser; :func:`decode` looks the kind up there and turns an unknown kind, a truncated buffer or a
value we cannot represent into one :class:`PgOutputError` naming the kind and the LSN, instead of a
``struct.error`` deep inside a parser (I9: fail closed with one line saying what and where).

Inside a Stream Start/Stop block (protocol ≥ 2, ``streaming 'on'``) the data messages (Relation,
Type, Insert, Update, Delete, Truncate, Message) carry the (sub)transaction id first; the caller
knows whether it is inside such a block and passes ``streaming``.

Tuple data: ``n`` → ``None`` (SQL NULL), ``u`` → :data:`~hodr.redo.records.UNCHANGED` (an
unchanged TOASTed value the log does not carry), ``t`` → ``str`` (the type's text output), ``b``
(binary, only sent when the client asks for ``binary 'true'``, which hodr never does) → error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from hodr.errors import HodrFatal
from hodr.position import format_lsn
from hodr.redo.records import UNCHANGED, Row, Value

#: Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
PG_EPOCH_OFFSET_US = 946_684_800_000_000

_U8 = struct.Struct(">B").unpack_from
_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_BEGIN = struct.Struct(">QqI").unpack_from  # final lsn, commit time, xid
_COMMIT = struct.Struct(">BQQq").unpack_from  # flags, commit lsn, end lsn, commit time
_STREAM_COMMIT = struct.Struct(">IBQQq").unpack_from  # xid, flags, commit lsn, end lsn, time
_XID_RELID = struct.Struct(">II").unpack_from
_COL = struct.Struct(">Ii").unpack_from  # type oid, typmod
_MSG_HEAD = struct.Struct(">BQ").unpack_from  # flags, lsn
_PREPARE = struct.Struct(">BQQq").unpack_from  # flags, prepare lsn, end lsn, time
_BEGIN_PREPARE = struct.Struct(">QQqI").unpack_from  # prepare lsn, end lsn, time, xid
_ROLLBACK_PREPARED = struct.Struct(">BQQqq").unpack_from  # flags, prep end, rb end, times


class PgOutputError(HodrFatal):
    """A pgoutput message hodr cannot decode; names the message kind and the LSN."""


# --- message values ------------------------------------------------------------------------------
class BeginMsg(NamedTuple):
    final_lsn: int
    commit_time: int  # µs since 2000-01-01 (PostgreSQL epoch)
    xid: int


class CommitMsg(NamedTuple):
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


class OriginMsg(NamedTuple):
    origin_lsn: int
    name: str


class RelationColumn(NamedTuple):
    flags: int  # 1 = part of the replica identity (key)
    name: str
    type_oid: int
    typmod: int

    @property
    def key(self) -> bool:
        return bool(self.flags & 1)


class RelationMsg(NamedTuple):
    xid: int  # 0 outside a stream block
    relid: int
    namespace: str
    name: str
    identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[RelationColumn, ...]


class TypeMsg(NamedTuple):
    xid: int
    oid: int
    namespace: str
    name: str


class InsertMsg(NamedTuple):
    xid: int
    relid: int
    new: Row


class UpdateMsg(NamedTuple):
    xid: int
    relid: int
    old_kind: str  # 'K' key only, 'O' full old row, '' no old tuple sent
    old: Row | None
    new: Row


class DeleteMsg(NamedTuple):
    xid: int
    relid: int
    old_kind: str  # 'K' or 'O'
    old: Row


class TruncateMsg(NamedTuple):
    xid: int
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


class LogicalMsg(NamedTuple):
    xid: int
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


class StreamStartMsg(NamedTuple):
    xid: int
    first: bool


class StreamStopMsg(NamedTuple):
    pass


class StreamCommitMsg(NamedTuple):
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


class StreamAbortMsg(NamedTuple):
    xid: int
    subxid: int


class BeginPrepareMsg(NamedTuple):
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


class PrepareMsg(NamedTuple):
    """Prepare (``P``) and Stream Prepare (``p``) share this shape; ``streamed`` tells them apart."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str
    streamed: bool


class CommitPreparedMsg(NamedTuple):
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int
    xid: int
    gid: str


class RollbackPreparedMsg(NamedTuple):
    flags: int
    prepare_end_lsn: int
    rollback_end_lsn: int
    prepare_time: int
    rollback_time: int
    xid: int
    gid: str


PgOutputMessage = (
    BeginMsg
    | CommitMsg
    | OriginMsg
    | RelationMsg
    | TypeMsg
    | InsertMsg
    | UpdateMsg
    | DeleteMsg
    | TruncateMsg
    | LogicalMsg
    | StreamStartMsg
    | StreamStopMsg
    | StreamCommitMsg
    | StreamAbortMsg
    | BeginPrepareMsg
    | PrepareMsg
    | CommitPreparedMsg
    | RollbackPreparedMsg
)

#: A parser: (buffer, offset just after the kind byte, inside a stream block?) -> message.
Parser = Callable[[bytes, int, bool], PgOutputMessage]


# --- helpers --------------------------------------------------------------------------------------
def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    """A NUL-terminated string at ``pos``; returns (text, offset after the NUL)."""
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[Row, int]:
    """TupleData at ``pos``; returns (values, offset after it).  The hot loop of capture."""
    (ncols,) = _U16(buf, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    for _ in range(ncols):
        kind = buf[pos]
        pos += 1
        if kind == 116:  # 't' text
            (length,) = _U32(buf, pos)
            pos += 4
            end = pos + length
            append(buf[pos:end].decode())
            pos = end
        elif kind == 110:  # 'n' null
            append(None)
        elif kind == 117:  # 'u' unchanged TOAST
            append(UNCHANGED)
        elif kind == 98:  # 'b' binary
            raise ValueError("binary tuple data received but hodr requests text (binary 'false')")
        else:
            raise ValueError(f"unknown tuple data kind {chr(kind)!r} (0x{kind:02x})")
    if pos > len(buf):  # a short text value slices silently; catch the truncation once here
        raise ValueError(f"tuple data truncated ({pos - len(buf)} bytes missing)")
    return tuple(values), pos


def _xid(buf: bytes, pos: int, streaming: bool) -> tuple[int, int]:
    if streaming:
        return _U32(buf, pos)[0], pos + 4
    return 0, pos


def _xid_relid(buf: bytes, pos: int, streaming: bool) -> tuple[int, int, int]:
    """The prefix of Insert/Update/Delete: in a streamed block the (sub)transaction id comes
    before the relation id.  Returns (xid or 0, relid, position after them)."""
    xid, pos = _xid(buf, pos, streaming)
    return xid, _U32(buf, pos)[0], pos + 4


# --- parsers, one per message kind -----------------------------------------------------------------
def parse_begin(buf: bytes, pos: int, streaming: bool) -> BeginMsg:
    return BeginMsg(*_BEGIN(buf, pos))


def parse_commit(buf: bytes, pos: int, streaming: bool) -> CommitMsg:
    return CommitMsg(*_COMMIT(buf, pos))


def parse_origin(buf: bytes, pos: int, streaming: bool) -> OriginMsg:
    (lsn,) = _U64(buf, pos)
    name, _ = _cstring(buf, pos + 8)
    return OriginMsg(lsn, name)


def parse_relation(buf: bytes, pos: int, streaming: bool) -> RelationMsg:
    xid, pos = _xid(buf, pos, streaming)
    (relid,) = _U32(buf, pos)
    namespace, pos = _cstring(buf, pos + 4)
    name, pos = _cstring(buf, pos)
    identity = chr(buf[pos])
    (ncols,) = _U16(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(ncols):
        flags = buf[pos]
        colname, pos = _cstring(buf, pos + 1)
        oid, typmod = _COL(buf, pos)
        pos += 8
        columns.append(RelationColumn(flags, colname, oid, typmod))
    # pgoutput sends an empty namespace for pg_catalog relations (never published in practice).
    return RelationMsg(xid, relid, namespace or "pg_catalog", name, identity, tuple(columns))


def parse_type(buf: bytes, pos: int, streaming: bool) -> TypeMsg:
    xid, pos = _xid(buf, pos, streaming)
    (oid,) = _U32(buf, pos)
    namespace, pos = _cstring(buf, pos + 4)
    name, _ = _cstring(buf, pos)
    return TypeMsg(xid, oid, namespace or "pg_catalog", name)


def parse_insert(buf: bytes, pos: int, streaming: bool) -> InsertMsg:
    xid, relid, pos = _xid_relid(buf, pos, streaming)
    if buf[pos] != 78:  # 'N'
        raise ValueError(f"Insert: expected 'N' before the new tuple, got {chr(buf[pos])!r}")
    new, _ = _tuple(buf, pos + 1)
    return InsertMsg(xid, relid, new)


def parse_update(buf: bytes, pos: int, streaming: bool) -> UpdateMsg:
    xid, relid, pos = _xid_relid(buf, pos, streaming)
    marker = buf[pos]
    old_kind = ""
    old: Row | None = None
    if marker == 75 or marker == 79:  # 'K' key / 'O' old row
        old_kind = chr(marker)
        old, pos = _tuple(buf, pos + 1)
        marker = buf[pos]
    if marker != 78:  # 'N'
        raise ValueError(f"Update: expected 'N' before the new tuple, got {chr(marker)!r}")
    new, _ = _tuple(buf, pos + 1)
    return UpdateMsg(xid, relid, old_kind, old, new)


def parse_delete(buf: bytes, pos: int, streaming: bool) -> DeleteMsg:
    xid, relid, pos = _xid_relid(buf, pos, streaming)
    marker = buf[pos]
    if marker != 75 and marker != 79:
        raise ValueError(f"Delete: expected 'K' or 'O' before the old tuple, got {chr(marker)!r}")
    old, _ = _tuple(buf, pos + 1)
    return DeleteMsg(xid, relid, chr(marker), old)


def parse_truncate(buf: bytes, pos: int, streaming: bool) -> TruncateMsg:
    xid, pos = _xid(buf, pos, streaming)
    (nrels,) = _U32(buf, pos)
    options = buf[pos + 4]
    relids = struct.unpack_from(f">{nrels}I", buf, pos + 5)
    return TruncateMsg(xid, relids, bool(options & 1), bool(options & 2))


def parse_message(buf: bytes, pos: int, streaming: bool) -> LogicalMsg:
    xid, pos = _xid(buf, pos, streaming)
    flags, lsn = _MSG_HEAD(buf, pos)
    prefix, pos = _cstring(buf, pos + 9)
    (length,) = _U32(buf, pos)
    content = bytes(buf[pos + 4 : pos + 4 + length])
    if len(content) != length:
        raise ValueError(f"Message: content truncated ({len(content)} of {length} bytes)")
    return LogicalMsg(xid, bool(flags & 1), lsn, prefix, content)


def parse_stream_start(buf: bytes, pos: int, streaming: bool) -> StreamStartMsg:
    (xid,) = _U32(buf, pos)
    return StreamStartMsg(xid, buf[pos + 4] == 1)


def parse_stream_stop(buf: bytes, pos: int, streaming: bool) -> StreamStopMsg:
    return StreamStopMsg()


def parse_stream_commit(buf: bytes, pos: int, streaming: bool) -> StreamCommitMsg:
    return StreamCommitMsg(*_STREAM_COMMIT(buf, pos))


def parse_stream_abort(buf: bytes, pos: int, streaming: bool) -> StreamAbortMsg:
    return StreamAbortMsg(*_XID_RELID(buf, pos))


def parse_begin_prepare(buf: bytes, pos: int, streaming: bool) -> BeginPrepareMsg:
    head = _BEGIN_PREPARE(buf, pos)
    gid, _ = _cstring(buf, pos + 28)
    return BeginPrepareMsg(*head, gid)


def _prepare(buf: bytes, pos: int, streamed: bool) -> PrepareMsg:
    head = _PREPARE(buf, pos)
    (xid,) = _U32(buf, pos + 25)
    gid, _ = _cstring(buf, pos + 29)
    return PrepareMsg(*head, xid, gid, streamed)


def parse_prepare(buf: bytes, pos: int, streaming: bool) -> PrepareMsg:
    return _prepare(buf, pos, False)


def parse_stream_prepare(buf: bytes, pos: int, streaming: bool) -> PrepareMsg:
    return _prepare(buf, pos, True)


def parse_commit_prepared(buf: bytes, pos: int, streaming: bool) -> CommitPreparedMsg:
    head = _PREPARE(buf, pos)
    (xid,) = _U32(buf, pos + 25)
    gid, _ = _cstring(buf, pos + 29)
    return CommitPreparedMsg(*head, xid, gid)


def parse_rollback_prepared(buf: bytes, pos: int, streaming: bool) -> RollbackPreparedMsg:
    head = _ROLLBACK_PREPARED(buf, pos)
    (xid,) = _U32(buf, pos + 33)
    gid, _ = _cstring(buf, pos + 37)
    return RollbackPreparedMsg(*head, xid, gid)


#: Message kind byte → parser.  Two-phase kinds (protocol 3) are parsed so that a consumer can
#: refuse them with a precise message; hodr never requests ``two_phase``.
DECODERS: dict[int, Parser] = {
    ord("B"): parse_begin,
    ord("C"): parse_commit,
    ord("O"): parse_origin,
    ord("R"): parse_relation,
    ord("Y"): parse_type,
    ord("I"): parse_insert,
    ord("U"): parse_update,
    ord("D"): parse_delete,
    ord("T"): parse_truncate,
    ord("M"): parse_message,
    ord("S"): parse_stream_start,
    ord("E"): parse_stream_stop,
    ord("c"): parse_stream_commit,
    ord("A"): parse_stream_abort,
    ord("b"): parse_begin_prepare,
    ord("P"): parse_prepare,
    ord("K"): parse_commit_prepared,
    ord("r"): parse_rollback_prepared,
    ord("p"): parse_stream_prepare,
}


def decode(buf: bytes, pos: int = 0, streaming: bool = False, lsn: int = 0) -> PgOutputMessage:
    """Decode the pgoutput message starting at ``buf[pos]`` (its kind byte).

    ``lsn`` (the XLogData start position) only feeds error messages.  Every failure is a
    :class:`PgOutputError`; nothing else escapes.
    """
    try:
        kind = buf[pos]
    except IndexError:
        raise PgOutputError(f"empty pgoutput message at LSN {format_lsn(lsn)}") from None
    parser = DECODERS.get(kind)
    if parser is None:
        raise PgOutputError(
            f"unknown pgoutput message kind {chr(kind)!r} (0x{kind:02x}) at LSN {format_lsn(lsn)}"
        )
    try:
        return parser(buf, pos + 1, streaming)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise PgOutputError(f"bad pgoutput message {chr(kind)!r} at LSN {format_lsn(lsn)}: {exc}") from exc


def pg_time_to_unix_us(pg_us: int) -> int:
    """PostgreSQL timestamps on the wire count µs since 2000-01-01; records use the Unix epoch."""
    return pg_us + PG_EPOCH_OFFSET_US


def kind_name(kind: int) -> str:
    """Human name of a message kind byte, for error messages and logs."""
    parser = DECODERS.get(kind)
    return parser.__name__.removeprefix("parse_") if parser else f"unknown 0x{kind:02x}"

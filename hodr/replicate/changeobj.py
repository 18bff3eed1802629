"""Changes ⇄ plain msgpack-ready objects: the one place that says how a change is serialised.

Why a module of its own: the spill files (``spill.py``) and the durable frames (``codec.py``) both
turn :data:`~hodr.redo.records.Change` values into msgpack, and two hand-written encodings of the
same values would drift apart.  This module knows nothing about files, framing or checksums.

Shape of the objects (tuples; msgpack packs them as arrays, and :func:`unpackb` gives tuples back so
rows come out as the ``Row`` tuples the records use, with no per-value work in Python):

===============  ===================================================================
``RowChange``    ``(0, op, table, before, after)``  (``op`` is ``"I"``/``"U"``/``"D"``)
``Truncate``     ``(1, (table, ...), cascade, restart_identity)``
``Message``      ``(2, prefix, content, transactional)``  (``content`` is msgpack bin)
``LoadRows``     ``(3, table, rows)``
``Table``        ``(schema, name, identity, relid, ((name, type_name, key, type_oid), ...))``
===============  ===================================================================

``table`` is whatever ``table_ref`` returns: the full table object by default, or a small integer
when the caller interns tables (a spill file writes each table once and refers to it by index).

Values: ``str`` and ``None`` map to msgpack str/nil; :data:`~hodr.redo.records.UNCHANGED` maps to
the msgpack extension type :data:`EXT_UNCHANGED` with empty data.  That mapping lives in the packer's
``default`` hook and the unpacker's ``ext_hook`` (see :func:`make_packer`, :func:`unpackb`), so the
per-value cost stays inside msgpack's C code instead of a Python loop over every column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from hodr.redo.records import (
    UNCHANGED,
    Change,
    Column,
    LoadRows,
    Message,
    Op,
    RowChange,
    Table,
    Truncate,
)

EXT_UNCHANGED = 1
"""msgpack extension type code that carries :data:`UNCHANGED` (empty payload)."""

KIND_ROW, KIND_TRUNCATE, KIND_MESSAGE, KIND_LOAD = 0, 1, 2, 3

_OPS: dict[str, Op] = {op.value: op for op in Op}
_UNCHANGED_TYPE = type(UNCHANGED)
_EXT_UNCHANGED_OBJ = msgpack.ExtType(EXT_UNCHANGED, b"")

TableRef = Callable[[Table], Any]
TableOf = Callable[[Any], Table]


# --- tables ------------------------------------------------------------------------------------
def table_to_obj(table: Table) -> tuple[Any, ...]:
    """A table as a plain tuple (inline form, used when tables are not interned)."""
    return (
        table.schema,
        table.name,
        table.identity,
        table.relid,
        tuple((c.name, c.type_name, c.key, c.type_oid) for c in table.columns),
    )


def table_from_obj(obj: Any) -> Table:
    """Inverse of :func:`table_to_obj`."""
    schema, name, identity, relid, columns = obj
    return Table(
        schema=schema,
        name=name,
        columns=tuple(Column(c[0], c[1], bool(c[2]), int(c[3])) for c in columns),
        identity=identity,
        relid=relid,
    )


# --- changes -----------------------------------------------------------------------------------
def change_to_obj(change: Change, table_ref: TableRef = table_to_obj) -> tuple[Any, ...]:
    """``change`` as a msgpack-ready tuple; ``table_ref`` encodes (or interns) its table(s).

    Rows are passed through as they are (tuples of ``str | None | UNCHANGED``); pack the result with
    a packer from :func:`make_packer` so that ``UNCHANGED`` is encoded.
    """
    kind = type(change)
    if kind is RowChange:
        return (KIND_ROW, change.op.value, table_ref(change.table), change.before, change.after)
    if kind is Message:
        return (KIND_MESSAGE, change.prefix, change.content, change.transactional)
    if kind is Truncate:
        return (
            KIND_TRUNCATE,
            tuple(table_ref(t) for t in change.tables),
            change.cascade,
            change.restart_identity,
        )
    if kind is LoadRows:
        return (KIND_LOAD, table_ref(change.table), change.rows)
    raise TypeError(f"change_to_obj: not a change: {change!r}")


def change_from_obj(obj: Any, table_of: TableOf = table_from_obj) -> Change:
    """Inverse of :func:`change_to_obj`; ``obj`` as returned by :func:`unpackb` (tuples).

    Raises ``ValueError`` for an object that is not a change, so callers can name the file or frame
    it came from.
    """
    try:
        kind = obj[0]
        if kind == KIND_ROW:
            _, op, table, before, after = obj
            return RowChange(_OPS[op], table_of(table), before, after)
        if kind == KIND_MESSAGE:
            _, prefix, content, transactional = obj
            return Message(prefix, bytes(content), bool(transactional))
        if kind == KIND_TRUNCATE:
            _, tables, cascade, restart_identity = obj
            return Truncate(tuple(table_of(t) for t in tables), bool(cascade), bool(restart_identity))
        if kind == KIND_LOAD:
            _, table, rows = obj
            return LoadRows(table_of(table), tuple(rows))
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"not an encoded change: {obj!r:.200} ({exc})") from exc
    raise ValueError(f"not an encoded change (unknown kind): {obj!r:.200}")


# --- msgpack with UNCHANGED --------------------------------------------------------------------
def _default(value: Any) -> Any:
    if value.__class__ is _UNCHANGED_TYPE:
        return _EXT_UNCHANGED_OBJ
    raise TypeError(f"cannot encode {type(value).__name__} value {value!r:.100}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_UNCHANGED:
        return UNCHANGED
    raise ValueError(f"unknown msgpack extension type {code}")


def make_packer() -> msgpack.Packer:
    """A packer that encodes ``UNCHANGED``; not thread-safe, so keep one per owner/thread."""
    return msgpack.Packer(default=_default, use_bin_type=True, autoreset=True)


UNPACK_OPTIONS: dict[str, Any] = {"raw": False, "use_list": False, "ext_hook": _ext_hook}
"""Keyword arguments for ``msgpack.unpackb``/``msgpack.Unpacker`` that invert :func:`make_packer`."""


def packb(obj: Any) -> bytes:
    """One-shot pack (convenience; hot loops should reuse :func:`make_packer`)."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpackb(data: bytes | bytearray | memoryview) -> Any:
    """One-shot unpack that gives tuples and ``UNCHANGED`` back."""
    return msgpack.unpackb(data, **UNPACK_OPTIONS)


__all__ = [
    "EXT_UNCHANGED",
    "UNPACK_OPTIONS",
    "change_from_obj",
    "change_to_obj",
    "make_packer",
    "packb",
    "table_from_obj",
    "table_to_obj",
    "unpackb",
]

"""What capture produces: engine-neutral records of the source log, in log order.

Why this shape: the assembler, the durable files, the transport and the appliers must never
import a database driver, so everything they need about a change travels in these frozen values.

Values are carried in the source engine's canonical *text* form (``str``), ``None`` for SQL NULL,
or :data:`UNCHANGED` for a column whose value the log does not carry (PostgreSQL's unchanged
TOAST marker): the applier must keep the target's value there, never write NULL.  Text form is
lossless for every PostgreSQL type (arrays, enums, ranges, json...) and is what COPY and typed
placeholders accept on the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from hodr.position import LogPosition


class _Unchanged:
    """Singleton marker: the value exists on the target and did not change."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

#: hodr's own bookkeeping schema on every node (``hodr.applied``, ``hodr.markers``): per-node
#: state that must never travel.  A ``FOR ALL TABLES`` publication includes it, so capture and
#: the initial load leave it out (a primary that was once a standby has these tables).
HODR_SCHEMA: Final = "hodr"

Value = str | None | _Unchanged
Row = tuple[Value, ...]


class Op(StrEnum):
    INSERT = "I"
    UPDATE = "U"
    DELETE = "D"


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a source table.  ``type_name`` is the SQL type as the target should spell
    it (``format_type`` on PostgreSQL: ``integer``, ``numeric(10,2)``, ``text[]``, ``public.mood``)."""

    name: str
    type_name: str
    key: bool = False
    type_oid: int = 0


@dataclass(frozen=True, slots=True)
class Table:
    """Source table metadata as known at the time of the change.

    ``identity`` is the replica identity: ``d`` default (primary key), ``i`` index, ``f`` full
    row, ``n`` nothing.  ``key`` columns are those the log uses to identify a row.
    """

    schema: str
    name: str
    columns: tuple[Column, ...]
    identity: str = "d"
    relid: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def key_indexes(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.columns) if c.key)


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row inserted, updated or deleted.

    ``before`` is the old row as the log carries it: key columns only (other columns ``None``) for
    identity default/index, the full old row for identity full, ``None`` when an UPDATE did not
    change the key (then the key is in ``after``).  ``after`` is the new row (INSERT/UPDATE).
    Both are full-width tuples aligned with ``table.columns``.
    """

    op: Op
    table: Table
    before: Row | None
    after: Row | None

    def identity(self) -> Row:
        """The values that find the row on the target, in ``table.key_indexes`` order
        (the whole old row for keyless / identity-full tables)."""
        keys = self.table.key_indexes
        row = self.before if self.before is not None else self.after
        assert row is not None
        if not keys or self.table.identity == "f":
            return row
        return tuple(row[i] for i in keys)


@dataclass(frozen=True, slots=True)
class Truncate:
    tables: tuple[Table, ...]
    cascade: bool = False
    restart_identity: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """A logical message written into the source log (``pg_logical_emit_message``); hodr uses
    the ``hodr`` prefix for its own markers (epoch end, switchover)."""

    prefix: str
    content: bytes
    transactional: bool = True


@dataclass(frozen=True, slots=True)
class LoadRows:
    """A chunk of an initial bulk load: rows of one table read from a consistent snapshot."""

    table: Table
    rows: tuple[Row, ...]


Change = RowChange | Truncate | Message | LoadRows


# --- the record stream a LogSource yields ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Begin:
    """A transaction starts (non-streamed: all its changes follow, then its Commit)."""

    xid: int
    position: LogPosition


@dataclass(frozen=True, slots=True)
class Changed:
    """A change made by top-level transaction ``xid`` under (sub)transaction ``subxid``.

    ``subxid == xid`` outside sub-transactions.  Streamed in-progress transactions interleave
    their ``Changed`` records with other transactions' records.
    """

    xid: int
    subxid: int
    position: LogPosition
    change: Change


@dataclass(frozen=True, slots=True)
class Commit:
    """Transaction ``xid`` committed; ``position`` is its commit end position (the point a
    source may be told it can release), ``commit_time`` microseconds since the Unix epoch."""

    xid: int
    position: LogPosition
    commit_time: int = 0


@dataclass(frozen=True, slots=True)
class Abort:
    """``subxid`` of top-level ``xid`` rolled back (``subxid == xid``: the whole transaction).

    A sub-transaction abort drops the changes made from the first change of ``subxid`` on
    (later sub-transactions are nested in it, PostgreSQL's own rule)."""

    xid: int
    subxid: int
    position: LogPosition


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to do up to ``position``: the source is caught up (keepalive).  Lets downstream
    stages report progress and lets capture release the log when nothing is in flight."""

    position: LogPosition


@dataclass(frozen=True, slots=True)
class RelationSeen:
    """Table metadata changed or was (re)announced; informational for catalogs and stats."""

    table: Table


Record = Begin | Changed | Commit | Abort | Idle | RelationSeen

__all__ = [
    "UNCHANGED",
    "Value",
    "Row",
    "Op",
    "Column",
    "Table",
    "RowChange",
    "Truncate",
    "Message",
    "LoadRows",
    "Change",
    "Begin",
    "Changed",
    "Commit",
    "Abort",
    "Idle",
    "RelationSeen",
    "Record",
    "field",
]

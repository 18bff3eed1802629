"""PostgreSQL target for the apply stage (psycopg 3).

How changes reach the server (pg-notes §7, §9.2): one ``execute`` per row and a round trip each
caps apply far below the native peer, so consecutive row changes of the same table, operation and
shape (same UNCHANGED columns, same NULLs in the old row...) share one prepared statement, and all
statements of an ``apply()`` call travel in one libpq pipeline without waiting for each other --
``executemany`` semantics, see :class:`_Pipe` for why it is not psycopg's ``executemany``.
Initial load chunks and long runs of INSERTs into one table use ``COPY FROM STDIN`` (text).

Values arrive in PostgreSQL's text form (``str``) and are sent as text parameters of *unknown*
type: psycopg 3 dumps a ``str`` with the unknown oid (checked: ``SELECT %s`` alone fails with
"could not determine data type"), and the pipeline below prepares its statements without
parameter types, which is the same.  The server types each placeholder from its context -- the
column in ``INSERT ... VALUES``, ``SET col = $n`` and ``col = $n`` -- so numeric, enum, array,
json, bytea (``\\x...``), interval and uuid text lands exactly as with native replication.  No
cast is added there on purpose: an explicit cast to ``varchar(n)`` would silently truncate a
value that does not fit, where the assignment coercion fails loudly (I9).  The one place that
needs a cast is matching on a column type without an equality operator (json, xml, point...):
such a column is compared as ``col::text = $n::type::text``.

Row counts are verified: an UPDATE or DELETE that matches no row means the standby diverged, and
the whole target transaction fails with one line naming the table and the key (I9); a statement
that fails names the source row behind it.

Bookkeeping (I4): ``hodr.applied`` holds one row with the applied position, updated in the same
transaction as the changes; ``hodr.markers`` records ``hodr`` logical messages (epoch markers).
The apply session runs with ``session_replication_role = replica`` (no FK checks or user
triggers firing a second time, as native logical replication does) and
``default_transaction_read_only = off``, while :func:`prepare_standby` makes the database
read-only for every other new session (I8).
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import select
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq

from hodr.errors import HodrError, HodrFatal, RetryableApplyError, SchemaMismatch
from hodr.position import LogPosition
from hodr.redo.records import UNCHANGED, Change, LoadRows, Message, Op, Row, RowChange, Table, Truncate, Value
from hodr.replicate.rowmap import RowMap, locate_sql

__all__ = ["PostgresTarget", "PostgresTxn", "prepare_standby", "release_standby", "quote_ident"]

#: Logical messages with this prefix are hodr's own markers and are recorded in ``hodr.markers``.
MARKER_PREFIX = "hodr"

#: Settings of the apply session (see the module docstring for why).  ``synchronous_commit =
#: local``: a demoted primary keeps hodr's ``synchronous_standby_names`` (sync mode) in its
#: postgresql.auto.conf, and nothing streams from it as a standby, so without it every applied
#: commit (and hodr's own DDL on a promotion) would wait forever for a synchronous standby.
SESSION_SETTINGS: tuple[tuple[str, str], ...] = (
    ("session_replication_role", "replica"),
    ("default_transaction_read_only", "off"),
    ("synchronous_commit", "local"),
)

_SETUP_SQL = (
    "CREATE SCHEMA IF NOT EXISTS hodr",
    """CREATE TABLE IF NOT EXISTS hodr.applied (
        id smallint PRIMARY KEY CHECK (id = 1),
        epoch bigint NOT NULL,
        lsn bigint NOT NULL,
        seq bigint NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())""",
    "INSERT INTO hodr.applied (id, epoch, lsn, seq) VALUES (1, 0, 0, 0) ON CONFLICT (id) DO NOTHING",
    """CREATE TABLE IF NOT EXISTS hodr.markers (
        id bigserial PRIMARY KEY,
        prefix text NOT NULL,
        content bytea NOT NULL,
        transactional boolean NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())""",
)

# Why FOR UPDATE: only one applier may write a standby (I8); if a second one ever runs, the row
# lock makes it wait for the first one's commit and then read the position that commit stored,
# so the two can never both apply the same transactions.
_READ_APPLIED_LOCKED = "SELECT epoch, lsn, seq FROM hodr.applied WHERE id = 1 FOR UPDATE"
_READ_APPLIED = "SELECT epoch, lsn, seq FROM hodr.applied WHERE id = 1"
_RECORD_APPLIED = "UPDATE hodr.applied SET epoch = %s, lsn = %s, seq = %s, applied_at = now() WHERE id = 1"
_RECORD_MARKER = "INSERT INTO hodr.markers (prefix, content, transactional) VALUES ($1, $2, $3)"

_TABLE_COLUMNS = """
SELECT c.relkind::text, a.attname::text, format_type(a.atttypid, NULL), a.attgenerated::text,
       t.typcategory::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s
"""

# Error classes after which the same work can succeed later: connection exceptions, transaction
# rollbacks (serialization failure, deadlock), operator intervention (shutdown, cancel), too
# many connections, lock not available.  Everything else is about the data or the schema and
# would fail again the same way, so it stops the stage (I9).
_RETRYABLE_CLASSES = frozenset({"08", "40", "57"})
_RETRYABLE_STATES = frozenset({"53300", "55P03"})

_BIGINT_MAX = (1 << 63) - 1


def quote_ident(name: str) -> str:
    """Always-quoted SQL identifier (any name is safe, including ``%`` and ``"``)."""
    return '"' + name.replace('"', '""') + '"'


# --- standby database role (I8) -------------------------------------------------------------
def prepare_standby(dsn: str) -> None:
    """Make the standby database read-only for applications: new sessions default to read-only
    transactions, while the applier's own session switches that off (``SESSION_SETTINGS``).

    Sessions already open keep their setting.  ``default_transaction_read_only`` guards against
    accidental writes; an application that sets it back off can still write, so application
    roles should not have write privileges on a standby either.
    """
    _set_database_read_only(dsn, True)


def release_standby(dsn: str) -> None:
    """Undo :func:`prepare_standby` (promotion: the database becomes writable for new sessions)."""
    _set_database_read_only(dsn, False)


def end_application_sessions(dsn: str) -> int:
    """Demotion: terminate every client session of this database except hodr's own, so no
    application keeps writing through a session opened while the database was writable.
    Returns how many sessions were ended; returns only once they are gone (or after 10 s each,
    with a warning from the server)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # With a timeout, pg_terminate_backend waits until the backend is gone (PostgreSQL
            # 14+): a session in the middle of COMMIT may still complete it after the signal,
            # and the end-of-epoch marker must come after every application commit.
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' AND application_name NOT LIKE 'hodr%'"
            ).fetchall()
            return sum(1 for (ok,) in rows if ok)
    except psycopg.Error as exc:
        raise _map_error(exc, None, "end application sessions") from exc


def mark_applied(dsn: str, position: LogPosition) -> None:
    """Demotion: this database *is* the history up to ``position`` (it was the source), so as a
    standby it must skip everything at or before it.  Overwrites hodr.applied unconditionally —
    only for that case."""
    target = PostgresTarget(dsn)
    try:
        target.setup()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute("SET synchronous_commit = local")
            conn.execute(
                "UPDATE hodr.applied SET epoch = %s, lsn = %s, seq = %s, applied_at = now() WHERE id = 1",
                (position.epoch, position.lsn, position.seq),
            )
    except psycopg.Error as exc:
        raise _map_error(exc, None, "record the demoted primary's position") from exc
    finally:
        target.close()


def _set_database_read_only(dsn: str, read_only: bool) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Our own session must be writable, or ALTER DATABASE itself is refused; and it must
            # not wait for a synchronous standby that may not exist (SESSION_SETTINGS).
            conn.execute("SET default_transaction_read_only = off")
            conn.execute("SET synchronous_commit = local")
            row = conn.execute("SELECT current_database()").fetchone()
            assert row is not None
            db = quote_ident(row[0])
            action = (
                "SET default_transaction_read_only = on"
                if read_only
                else "RESET default_transaction_read_only"
            )
            conn.execute(f"ALTER DATABASE {db} {action}")  # type: ignore[arg-type]
    except psycopg.Error as exc:
        what = "make the standby database read-only" if read_only else "make the database writable"
        raise _map_error(exc, None, what) from exc


# --- statements per table --------------------------------------------------------------------
_Params = Sequence[Any]
_Getter = Callable[[Row], tuple[Value, ...]]
#: (group shape, sql, params, row whose ctid the statement returns for the row map)
_Statement = tuple[tuple[Any, ...], str, _Params, Row | None]


def _getter(indexes: Sequence[int]) -> _Getter:
    """A fast ``row -> tuple(row[i] for i in indexes)``."""
    if not indexes:
        return lambda _row: ()
    if len(indexes) == 1:
        only = indexes[0]
        return lambda row: (row[only],)
    return operator.itemgetter(*indexes)  # type: ignore[return-value]


def _positions(row: Row, marker: object) -> tuple[int, ...]:
    """Indexes of *row* holding *marker* (None or UNCHANGED); the common miss costs one ``in``."""
    if marker not in row:
        return ()
    return tuple(i for i, v in enumerate(row) if v is marker)


@dataclass(frozen=True, slots=True)
class _Shape:
    """A cached statement: SQL plus the parameter getters, for one group shape."""

    sql: str
    first: _Getter
    second: _Getter


class _TablePlan:
    """SQL for one source table version, checked against the target's catalog.

    ``full`` tables (no key, or replica identity full) find a row by all its old values and
    change exactly one row (``locate_sql``); keyed tables find it by the key columns.
    """

    def __init__(self, table: Table, types: Sequence[str], comparable: Sequence[bool], mapped: bool) -> None:
        self.table = table
        self.relation = f"{quote_ident(table.schema)}.{quote_ident(table.name)}"
        self.cols = tuple(quote_ident(c.name) for c in table.columns)
        self.keys = table.key_indexes
        self.full = not self.keys or table.identity == "f"
        self.types = tuple(types)
        self.comparable = tuple(comparable)
        self.mapped = mapped and self.full
        returning = " RETURNING ctid" if self.mapped else ""
        values = ", ".join(f"${n}" for n in range(1, len(self.cols) + 1))
        self.insert_sql = (
            f"INSERT INTO {self.relation} ({', '.join(self.cols)}) OVERRIDING SYSTEM VALUE "
            f"VALUES ({values}){returning}"
        )
        self.copy_sql = f"COPY {self.relation} ({', '.join(self.cols)}) FROM STDIN"
        self._shapes: dict[tuple[Any, ...], _Shape] = {}

    # -- per change ------------------------------------------------------------------------
    def statement(self, change: RowChange, rowmap: RowMap | None) -> _Statement:
        """(shape, sql, params, row to map) for one row change."""
        if change.op is Op.INSERT:
            after = self._require(change.after, change, "new row")
            if UNCHANGED in after:
                raise HodrFatal(
                    f"apply: INSERT into {self.table.qualified} carries an unchanged-value marker"
                )
            return (Op.INSERT,), self.insert_sql, after, after if self.mapped else None
        if self.full:
            return self._full(change, rowmap)
        return self._keyed(change)

    def _keyed(self, change: RowChange) -> _Statement:
        if change.op is Op.DELETE:
            before = self._require(change.before, change, "old key")
            shape_key: tuple[Any, ...] = (Op.DELETE,)
            shape = self._shapes.get(shape_key) or self._build_keyed(shape_key)
            return shape_key, shape.sql, shape.first(before), None
        after = self._require(change.after, change, "new row")
        key_row = change.before if change.before is not None else after
        shape_key = (Op.UPDATE, change.before is not None, _positions(after, UNCHANGED))
        shape = self._shapes.get(shape_key) or self._build_keyed(shape_key)
        return shape_key, shape.sql, shape.first(after) + shape.second(key_row), None

    def _full(self, change: RowChange, rowmap: RowMap | None) -> _Statement:
        before = self._require(change.before, change, "old row")
        matched = (_positions(before, UNCHANGED), _positions(before, None))
        after: Row = ()
        if change.op is Op.UPDATE:
            after = self._require(change.after, change, "new row")
        shape_key = (change.op, _positions(after, UNCHANGED), *matched)
        shape = self._shapes.get(shape_key) or self._build_full(shape_key)
        params: tuple[Any, ...] = shape.first(after) + shape.second(before)
        new_row: Row | None = None
        if self.mapped and rowmap is not None:
            params += (rowmap.take(self, before),)
            if change.op is Op.UPDATE:
                # Why merge: an unchanged (TOASTed) value is not in the new row, but identity
                # full carries it in the old row, so the map can still know the whole new row.
                new_row = tuple(b if a is UNCHANGED else a for a, b in zip(after, before, strict=True))
        return shape_key, shape.sql, params, new_row

    def _require(self, row: Row | None, change: RowChange, what: str) -> Row:
        if row is None:
            raise HodrFatal(f"apply: {change.op.name} on {self.table.qualified} without its {what}")
        if len(row) != len(self.cols):
            raise HodrFatal(
                f"apply: {change.op.name} on {self.table.qualified} has {len(row)} values for "
                f"{len(self.cols)} columns"
            )
        return row

    # -- SQL building (once per shape) -------------------------------------------------------
    def _build_keyed(self, shape_key: tuple[Any, ...]) -> _Shape:
        keys = self.keys
        if shape_key[0] is Op.DELETE:
            where = self._equal(keys, 1)
            shape = _Shape(f"DELETE FROM {self.relation} WHERE {where}", _getter(keys), _getter(()))
        else:
            _op, key_changed, unchanged = shape_key
            sets = [i for i in range(len(self.cols)) if i not in unchanged and (key_changed or i not in keys)]
            assignments = self._assign(sets)
            where = self._equal(keys, len(sets) + 1)
            sql = f"UPDATE {self.relation} SET {assignments} WHERE {where}"
            shape = _Shape(sql, _getter(sets), _getter(keys))
        self._shapes[shape_key] = shape
        return shape

    def _build_full(self, shape_key: tuple[Any, ...]) -> _Shape:
        op, after_unchanged, before_unchanged, before_null = shape_key
        n = len(self.cols)
        sets = [i for i in range(n) if i not in after_unchanged] if op is Op.UPDATE else []
        match = [i for i in range(n) if i not in before_unchanged and i not in before_null]
        if not match and not before_null:
            raise HodrFatal(f"apply: {op.name} on {self.table.qualified}: no old value to find the row by")
        conds = self._match(match, len(sets) + 1) + [f"{self.cols[i]} IS NULL" for i in before_null]
        ctid_param = f"${len(sets) + len(match) + 1}" if self.mapped else None
        where = locate_sql(self.relation, " AND ".join(conds), ctid_param)
        if op is Op.UPDATE:
            returning = " RETURNING ctid" if self.mapped else ""
            sql = f"UPDATE {self.relation} SET {self._assign(sets)} WHERE {where}{returning}"
        else:
            sql = f"DELETE FROM {self.relation} WHERE {where}"
        shape = _Shape(sql, _getter(sets), _getter(match))
        self._shapes[shape_key] = shape
        return shape

    def _assign(self, indexes: Sequence[int]) -> str:
        if not indexes:  # nothing but unchanged values: still touch the row, so it is verified
            return f"{self.cols[0]} = {self.cols[0]}"
        return ", ".join(f"{self.cols[i]} = ${n}" for n, i in enumerate(indexes, start=1))

    def _equal(self, indexes: Sequence[int], start: int) -> str:
        return " AND ".join(f"{self.cols[i]} = ${n}" for n, i in enumerate(indexes, start=start))

    def _match(self, indexes: Sequence[int], start: int) -> list[str]:
        conds = []
        for n, i in enumerate(indexes, start=start):
            if self.comparable[i]:
                conds.append(f"{self.cols[i]} = ${n}")
            else:  # no equality operator (json, xml, point...): compare the canonical text
                conds.append(f"{self.cols[i]}::text = ${n}::{self.types[i]}::text")
        return conds


def describe(change: RowChange) -> str:
    """``public.t key (id=5)`` / ``public.t row (a=1, b=NULL)``: one line for error messages."""
    table = change.table
    try:
        values = change.identity()
    except AssertionError:
        return table.qualified
    full = not table.key_indexes or table.identity == "f"
    names = [c.name for c in table.columns] if full else [table.columns[i].name for i in table.key_indexes]
    pairs = ", ".join(f"{name}={_short(v)}" for name, v in zip(names, values, strict=False))
    return f"{table.qualified} {'row' if full else 'key'} ({pairs})"


def _short(value: Value) -> str:
    if value is None:
        return "NULL"
    if value is UNCHANGED:
        return "unchanged"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "...'"


# --- groups of statements --------------------------------------------------------------------
@dataclass(slots=True)
class _Group:
    """Consecutive changes that run as one statement shape (``executemany``) or one COPY."""

    verb: str  # for messages: INSERT, UPDATE, DELETE, TRUNCATE, LOAD, MARKER
    sql: str
    params: list[_Params]
    changes: list[Change]
    plan: _TablePlan | None = None
    key: tuple[Any, ...] = ()
    expect_one: bool = True  # every statement must affect exactly one row
    copy: bool = False
    map_rows: list[Row | None] | None = None

    @property
    def what(self) -> str:
        return f"{self.verb} on {self.plan.table.qualified}" if self.plan is not None else self.verb

    def name(self, index: int) -> str:
        """The source row behind statement *index* of this group, for error messages."""
        if 0 <= index < len(self.changes):
            change = self.changes[index]
            if isinstance(change, RowChange):
                return describe(change)
            if isinstance(change, LoadRows) and self.plan is not None:
                return f"{self.plan.table.qualified} (load chunk)"
        return self.what


class _Plans:
    """Table plans, cached per Table value, with a fast path by object identity.

    The id() fast path avoids hashing a Table on every change; the entry keeps the Table object
    so a recycled id() can never return another table's plan.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Table, _TablePlan]] = {}
        self._by_value: dict[Table, _TablePlan] = {}
        self._equality: dict[str, bool] = {}

    def reset(self) -> None:
        """Forget everything learned from a target (after reconnecting, it may have changed)."""
        self._by_id.clear()
        self._by_value.clear()
        self._equality.clear()

    def lookup(self, table: Table) -> _TablePlan | None:
        hit = self._by_id.get(id(table))
        if hit is not None and hit[0] is table:
            return hit[1]
        plan = self._by_value.get(table)
        if plan is not None:
            self._remember(table, plan)
        return plan

    def load(self, conn: psycopg.Connection[Any], table: Table, mapped: bool) -> _TablePlan:
        """Check *table* against the target's catalog (SchemaMismatch) and build its plan."""
        rows = conn.execute(_TABLE_COLUMNS, (table.schema, table.name)).fetchall()
        where = f"table {table.qualified}"
        if not rows:
            raise SchemaMismatch(f"target schema mismatch: {where} does not exist on the standby")
        if rows[0][0] not in ("r", "p"):
            raise SchemaMismatch(f"target schema mismatch: {where} is not a table on the standby")
        target = {name: (type_name, generated, category) for _k, name, type_name, generated, category in rows}
        missing = [c.name for c in table.columns if c.name not in target]
        if missing:
            noun = "column" if len(missing) == 1 else "columns"
            raise SchemaMismatch(f"target schema mismatch: {where} {noun} {', '.join(missing)} missing")
        generated = [c.name for c in table.columns if target[c.name][1]]
        if generated:
            raise SchemaMismatch(
                f"target schema mismatch: {where} column {', '.join(generated)} is generated on the standby"
            )
        types = [target[c.name][0] for c in table.columns]
        full = not table.key_indexes or table.identity == "f"
        comparable = [
            self._has_equality(conn, target[c.name][0], target[c.name][2] == "A") if full else True
            for c in table.columns
        ]
        plan = _TablePlan(table, types, comparable, mapped)
        self._by_value[table] = plan
        self._remember(table, plan)
        return plan

    def _remember(self, table: Table, plan: _TablePlan) -> None:
        if len(self._by_id) > 4096:
            self._by_id.clear()
        self._by_id[id(table)] = (table, plan)

    def _has_equality(self, conn: psycopg.Connection[Any], type_name: str, is_array: bool) -> bool:
        """Whether values of *type_name* can be compared with ``=`` (json, xml, point cannot).

        Asked of the server, in a savepoint, because the answer depends on operator classes
        (and for arrays on the element type, checked only when two arrays are compared).
        """
        known = self._equality.get(type_name)
        if known is not None:
            return known
        try:
            with conn.transaction():
                conn.execute(f"SELECT NULL::{type_name} = NULL::{type_name}")  # type: ignore[arg-type]
                if is_array:
                    conn.execute(f"SELECT '{{}}'::{type_name} = '{{}}'::{type_name}")  # type: ignore[arg-type]
            result = True
        except psycopg.errors.UndefinedFunction:
            result = False
        self._equality[type_name] = result
        return result


# --- the statement pipeline ------------------------------------------------------------------
class _Sync:
    """Marks the pipeline sync point in the queue of expected results."""


_SYNC = _Sync()


@dataclass(slots=True)
class _Prepare:
    """An expected PREPARE result; on failure the statement name is forgotten again."""

    sql: str
    group: _Group


_Expected = tuple[_Group, int] | _Prepare | _Sync


class _StatementNames:
    """SQL -> name of the prepared statement on the current connection.

    Names come from a counter that never goes back, so a name forgotten after a failed PREPARE
    is never reused for other SQL; prepared statements are not transactional, so the names
    outlive a rollback and are dropped only with the connection.
    """

    def __init__(self) -> None:
        self._names: dict[str, bytes] = {}
        self._counter = itertools.count(1)

    def get(self, sql: str) -> bytes | None:
        return self._names.get(sql)

    def add(self, sql: str) -> bytes:
        name = self._names[sql] = f"hodr_{next(self._counter)}".encode()
        return name

    def forget(self, sql: str) -> None:
        self._names.pop(sql, None)

    def clear(self) -> None:
        self._names.clear()


class _Pipe:
    """Prepared statements over libpq's pipeline mode, every result checked in order.

    Why not ``cursor.executemany()``: psycopg returns only the sum of its row counts, and its
    per-statement machinery cost ~25 µs of client CPU per row here, as much as the server's work.
    This is what ``executemany`` does underneath -- prepare once, send every row without waiting
    -- written against psycopg's public libpq wrapper (``psycopg.pq``), so each UPDATE/DELETE's
    own row count is checked (a missing row names its key) and a failing statement names the
    source row behind it.  The socket is non-blocking (psycopg connections always are); results
    are read while sending, so neither side can block the other with full buffers.
    """

    #: statements sent between two non-blocking flush-and-read rounds
    BATCH = 256

    def __init__(self, conn: psycopg.Connection[Any], names: _StatementNames, rowmap: RowMap | None) -> None:
        self.conn = conn
        self.pg = conn.pgconn
        self.names = names
        self.rowmap = rowmap
        self.expected: deque[_Expected] = deque()
        self.head_done = False  # the head's result arrived; the NULL that ends it is next
        self.unpumped = 0  # statements sent since the last flush-and-read round
        self.error: tuple[str, pq.abc.PGresult] | None = None
        self.diverged: str | None = None
        self.poll = select.poll()
        self.poll.register(self.pg.socket, select.POLLIN)

    def run(self, first: _Group, groups: Iterator[_Group]) -> _Group | None:
        """Send *first* and the groups after it up to a COPY group; raise on any failure."""
        self.pg.enter_pipeline_mode()
        group: _Group | None = first
        try:
            while group is not None and not group.copy:
                self._send(group)
                group = next(groups, None)
        except BaseException:
            # Building a statement failed half-way (or the connection broke): still end at a
            # sync point so a live connection leaves pipeline mode and can roll back; the first
            # error is the one reported.
            with contextlib.suppress(psycopg.Error):
                self._finish()
            raise
        self._finish()
        if self.error is not None:
            where, result = self.error
            raise _result_error(result, where)
        if self.diverged is not None:
            raise HodrFatal(self.diverged)
        return group

    def _finish(self) -> None:
        if self.pg.status != pq.ConnStatus.OK:
            return  # connection lost: nothing to tidy, the caller drops the connection
        self.pg.pipeline_sync()
        self.expected.append(_SYNC)
        while self.expected:
            self._pump(block=True)
        self.pg.exit_pipeline_mode()

    def _send(self, group: _Group) -> None:
        name = self.names.get(group.sql)
        if name is None:
            name = self.names.add(group.sql)
            self.pg.send_prepare(name, group.sql.encode())
            self.expected.append(_Prepare(group.sql, group))
        send, expected = self.pg.send_query_prepared, self.expected
        for index, params in enumerate(group.params):
            send(name, [None if v is None else v.encode() for v in params])
            expected.append((group, index))
            self.unpumped += 1
            if self.unpumped >= self.BATCH:
                self._pump(block=False)

    def _pump(self, block: bool) -> None:
        """Flush what is queued and read the results that are there (all of them when
        *block*, until the sync point)."""
        pg = self.pg
        self.unpumped = 0
        while True:
            unsent = pg.flush() == 1
            if unsent or block:
                self.poll.modify(pg.socket, select.POLLIN | (select.POLLOUT if unsent else 0))
                self.poll.poll()
            pg.consume_input()
            self._read()
            if not unsent and (not block or not self.expected):
                return

    def _read(self) -> None:
        pg, expected = self.pg, self.expected
        while expected and not pg.is_busy():
            result = pg.get_result()
            if result is None:  # the end of the head's results
                if not self.head_done:
                    return  # nothing there yet (defensive: libpq reports busy in that case)
                expected.popleft()
                self.head_done = False
                continue
            head = expected[0]
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                expected.popleft()
                continue
            self._check(head, result)
            self.head_done = True

    def _check(self, head: _Expected, result: pq.abc.PGresult) -> None:
        status = result.status
        if isinstance(head, _Prepare):
            if status != pq.ExecStatus.COMMAND_OK:
                self.names.forget(head.sql)  # never prepared: prepare again next time
                self._failed(f"apply failed preparing {head.group.what}", result)
            return
        assert isinstance(head, tuple)
        group, index = head
        if status == pq.ExecStatus.FATAL_ERROR:
            self._failed(f"apply failed at {group.name(index)}", result)
            return
        if status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            return  # PIPELINE_ABORTED after an earlier error, reported there
        count = result.command_tuples
        if group.expect_one and count != 1 and self.diverged is None:
            problem = "matched no row" if not count else f"matched {count} rows"
            self.diverged = f"standby diverged: {group.verb} {problem}: {group.name(index)}"
        if group.map_rows is not None and self.rowmap is not None and result.ntuples:
            row, ctid = group.map_rows[index], result.get_value(0, 0)
            if row is not None and ctid is not None:
                self.rowmap.put(group.plan, row, bytes(ctid).decode())

    def _failed(self, where: str, result: pq.abc.PGresult) -> None:
        if self.error is None:
            self.error = (where, result)


# --- the target ------------------------------------------------------------------------------
class PostgresTarget:
    """A PostgreSQL standby database as an apply ``Target``.

    ``rowmap`` enables the ctid map for keyless / identity-full tables (``hodr.replicate.rowmap``);
    ``copy_threshold`` is the length from which a run of INSERTs into one table goes through
    COPY.  The connection is opened on first use, and again after a connection failure.
    """

    def __init__(
        self,
        dsn: str,
        *,
        rowmap: bool = False,
        rowmap_max_rows: int = 1_000_000,
        copy_threshold: int = 1000,
        application_name: str = "hodr-apply",
        connect_timeout: int = 10,
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._connect_timeout = connect_timeout
        self.copy_threshold = copy_threshold
        self.rowmap: RowMap | None = RowMap(rowmap_max_rows) if rowmap else None
        self._conn: psycopg.Connection[Any] | None = None
        self._plans = _Plans()
        self._prepared = _StatementNames()
        self._set_up = False

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> PostgresTarget:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def backend_pid(self) -> int | None:
        """The server process of the apply session (diagnostics), None when not connected."""
        return self._conn.info.backend_pid if self._conn is not None and not self._conn.closed else None

    def setup(self) -> None:
        """Create the ``hodr`` schema, ``hodr.applied`` and ``hodr.markers`` if missing (idempotent)."""
        conn = self._connect()
        try:
            with conn.transaction():
                for statement in _SETUP_SQL:
                    conn.execute(statement)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            self._after_failure()
            raise _map_error(exc, conn, "set up hodr tables on the target") from exc
        self._set_up = True

    def applied_position(self) -> LogPosition:
        """The committed applied position, read outside any apply transaction (status)."""
        conn = self._connect()
        try:
            row = conn.execute(_READ_APPLIED).fetchone()
        except psycopg.Error as exc:
            self._after_failure()
            raise _map_error(exc, conn, "read applied position") from exc
        return _position(row)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PostgresTxn]:
        """One target transaction: commit on clean exit, roll back on any exception.

        A connection lost during COMMIT leaves it unknown whether the commit happened; that is
        harmless because the retry reads the applied position from the target again (I4).
        """
        conn = self._connect()
        try:
            with conn.transaction():
                yield PostgresTxn(self, conn)
        except psycopg.Error as exc:
            self._after_failure()
            raise _map_error(exc, conn, "target transaction") from exc
        except BaseException:
            self._after_failure()
            raise

    # -- internals ---------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                application_name=self._application_name,
                connect_timeout=self._connect_timeout,
                client_encoding="UTF8",  # parameters are sent as UTF-8 text
            )
        except psycopg.Error as exc:
            raise _map_error(exc, None, "connect to target") from exc
        try:
            for name, value in SESSION_SETTINGS:
                conn.execute(f"SET {name} = {value}")  # type: ignore[arg-type]
        except psycopg.Error as exc:
            conn.close()
            raise _map_error(exc, None, "set up the apply session") from exc
        self._conn = conn
        self._plans.reset()
        self._prepared.clear()
        if self.rowmap is not None:
            self.rowmap.clear()  # keyed by the plans just dropped
        if not self._set_up:
            self.setup()
        return conn

    def _after_failure(self) -> None:
        """Drop what a failed transaction may have left: map entries and a broken connection."""
        if self.rowmap is not None:
            self.rowmap.clear()
        conn = self._conn
        if conn is None:
            return
        if conn.closed or conn.broken or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            with contextlib.suppress(Exception):
                conn.close()
            self._conn = None

    def _plan(self, conn: psycopg.Connection[Any], table: Table) -> _TablePlan:
        plan = self._plans.lookup(table)
        if plan is None:
            plan = self._plans.load(conn, table, self.rowmap is not None)
        return plan

    def _check_tables(self, conn: psycopg.Connection[Any], changes: Sequence[Change]) -> None:
        """Check every table of *changes* before anything is sent (no catalog queries can run
        inside the pipeline, and a mismatch must stop the stage before it writes anything)."""
        lookup = self._plans.lookup
        for change in changes:
            if isinstance(change, RowChange | LoadRows):
                if lookup(change.table) is None:
                    self._plan(conn, change.table)
            elif isinstance(change, Truncate):
                for table in change.tables:
                    self._plan(conn, table)

    def _groups(self, changes: Sequence[Change]) -> Iterator[_Group]:
        """Consecutive changes of the same table, operation and shape, as statement groups."""
        rowmap = self.rowmap
        lookup = self._plans.lookup
        group: _Group | None = None
        for change in changes:
            if isinstance(change, RowChange):
                plan = lookup(change.table)
                assert plan is not None  # _check_tables ran first
                shape, sql, params, map_row = plan.statement(change, rowmap)
                key = (plan, shape)
                if group is not None and group.key == key:
                    group.params.append(params)
                    group.changes.append(change)
                    if group.map_rows is not None:
                        group.map_rows.append(map_row)
                    continue
                if group is not None:
                    yield self._finish(group)
                map_rows = [map_row] if plan.mapped and change.op is not Op.DELETE else None
                group = _Group(change.op.name, sql, [params], [change], plan, key, map_rows=map_rows)
                continue
            if group is not None:
                yield self._finish(group)
                group = None
            other = self._other(change)
            if other is not None:
                yield other
        if group is not None:
            yield self._finish(group)

    def _finish(self, group: _Group) -> _Group:
        """Turn a long INSERT run into a COPY (pg-notes §9.2: COPY beats per-row statements)."""
        plan = group.plan
        if plan is not None and group.key[1] == (Op.INSERT,) and len(group.params) >= self.copy_threshold:
            group.sql = plan.copy_sql
            group.copy = True
            group.map_rows = None  # COPY returns no ctids: those rows are found by value later
        return group

    def _other(self, change: Change) -> _Group | None:
        if isinstance(change, Truncate):
            return self._truncate(change)
        if isinstance(change, LoadRows):
            plan = self._plans.lookup(change.table)
            assert plan is not None
            for row in change.rows:
                if len(row) != len(plan.cols) or UNCHANGED in row:
                    raise HodrFatal(f"apply: load chunk for {change.table.qualified} has a malformed row")
            return _Group("LOAD", plan.copy_sql, list(change.rows), [change], plan, copy=True)
        if isinstance(change, Message):
            if change.prefix != MARKER_PREFIX:
                # Application messages carry no table data; native replication ignores them too.
                return None
            params = (change.prefix, "\\x" + change.content.hex(), "t" if change.transactional else "f")
            return _Group("MARKER", _RECORD_MARKER, [params], [change])
        raise HodrFatal(f"apply: unknown change type {type(change).__name__}")

    def _truncate(self, change: Truncate) -> _Group:
        names = []
        for table in change.tables:
            plan = self._plans.lookup(table)
            assert plan is not None
            names.append(plan.relation)
            if self.rowmap is not None:
                self.rowmap.forget(plan)
        sql = "TRUNCATE " + ", ".join(names)
        if change.restart_identity:
            sql += " RESTART IDENTITY"
        if change.cascade:
            sql += " CASCADE"
        verb = "TRUNCATE of " + ", ".join(t.qualified for t in change.tables)
        return _Group(verb, sql, [()], [change], expect_one=False)


@dataclass
class PostgresTxn:
    """One open apply transaction on the target (the ``TargetTxn`` port)."""

    target: PostgresTarget
    conn: psycopg.Connection[Any]
    _read: LogPosition | None = field(default=None, init=False)

    def applied_position(self) -> LogPosition:
        row = self.conn.execute(_READ_APPLIED_LOCKED).fetchone()
        self._read = _position(row)
        return self._read

    def record_applied(self, position: LogPosition) -> None:
        # Why refuse to go back: the loop records only commits after the position it read in
        # this transaction; anything else is a bug that would make a replay apply twice.
        if self._read is None or position <= self._read:
            raise HodrFatal(
                f"apply: refusing to record {position}: not after the applied position {self._read}"
            )
        if max(position.epoch, position.lsn, position.seq) > _BIGINT_MAX:
            raise HodrFatal(f"apply: position {position} does not fit hodr.applied (bigint)")
        cur = self.conn.execute(_RECORD_APPLIED, (position.epoch, position.lsn, position.seq))
        if cur.rowcount != 1:
            raise HodrFatal("apply: hodr.applied has no row (id = 1); run setup")
        self._read = position

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply *changes* in order: pipelined statement groups, COPY where it pays."""
        if not changes:
            return
        target = self.target
        target._check_tables(self.conn, changes)
        groups = target._groups(changes)
        pending = next(groups, None)
        while pending is not None:
            if pending.copy:
                self._copy(pending)
                pending = next(groups, None)
            else:
                pending = self._pipeline(pending, groups)

    # -- statement paths -------------------------------------------------------------------
    def _pipeline(self, first: _Group, groups: Iterator[_Group]) -> _Group | None:
        """Send groups through one pipeline until a COPY group (COPY cannot run in a pipeline);
        every statement's result is checked; return the COPY group, if any."""
        target = self.target
        pipe = _Pipe(self.conn, target._prepared, target.rowmap)
        try:
            return pipe.run(first, groups)
        except psycopg.Error as exc:  # the connection, not a statement (those come as results)
            raise _map_error(exc, self.conn, "apply interrupted") from exc

    def _copy(self, group: _Group) -> None:
        """COPY FROM STDIN in text format; psycopg escapes tabs, newlines and backslashes."""
        cur = self.conn.cursor()
        try:
            with cur.copy(group.sql) as copy:  # type: ignore[arg-type]
                for row in group.params:
                    copy.write_row(row)
        except psycopg.Error as exc:
            context = (exc.diag.context or "").splitlines()
            where = f"apply failed in {group.what}"
            if context:
                where += f" ({context[0]})"
            raise _map_error(exc, self.conn, where) from exc
        if cur.rowcount != len(group.params):
            raise HodrFatal(f"apply: {group.what} copied {cur.rowcount} of {len(group.params)} rows")


def _position(row: tuple[Any, ...] | None) -> LogPosition:
    if row is None:
        raise HodrFatal("apply: hodr.applied has no row (id = 1); run setup")
    epoch, lsn, seq = row
    return LogPosition(int(epoch), int(lsn), int(seq))


def _map_error(exc: psycopg.Error, conn: psycopg.Connection[Any] | None, what: str) -> HodrError:
    """Retryable for connection loss and transient server states, HodrFatal for the rest."""
    state = exc.sqlstate
    if state is None:
        broken = conn is None or conn.closed or conn.broken
        retry = broken or isinstance(exc, psycopg.OperationalError)
    else:
        retry = _retryable_state(state)
    return _error(retry, f"{what}: {_one_line(exc)}")


def _result_error(result: pq.abc.PGresult, what: str) -> HodrError:
    """The same mapping for an error result read from the pipeline."""

    def field(code: pq.DiagnosticField) -> str:
        value = result.error_field(code)
        return bytes(value).decode(errors="replace") if value else ""

    state = field(pq.DiagnosticField.SQLSTATE)
    text = field(pq.DiagnosticField.MESSAGE_PRIMARY) or "error"
    detail = field(pq.DiagnosticField.MESSAGE_DETAIL)
    if detail:
        text += f" ({detail})"
    if state:
        text += f" [{state}]"
    return _error(_retryable_state(state), f"{what}: {' '.join(text.split())}")


def _retryable_state(state: str) -> bool:
    return state[:2] in _RETRYABLE_CLASSES or state in _RETRYABLE_STATES


def _error(retry: bool, text: str) -> HodrError:
    return RetryableApplyError(text) if retry else HodrFatal(text)


def _one_line(exc: psycopg.Error) -> str:
    diag = exc.diag
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = diag.message_primary or (lines[0] if lines else type(exc).__name__)
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    if exc.sqlstate:
        text += f" [{exc.sqlstate}]"
    return " ".join(text.split())

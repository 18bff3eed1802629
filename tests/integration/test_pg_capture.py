"""PostgreSQL capture against real PostgreSQL 15 servers (marker ``pg``).

Each test gets its own server from ``pg_factory`` (destroyed afterwards, also on failure) and
reads the stream in a background thread (:class:`Reader`); every wait is a ``wait_for`` with a
deadline, never a sleep.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.adapt import Loader

from hodr.errors import HodrFatal, RetryableCaptureError
from hodr.position import LogPosition
from hodr.redo.postgres import PostgresSource
from hodr.redo.records import (
    UNCHANGED,
    Abort,
    Begin,
    Changed,
    Commit,
    Idle,
    Message,
    Op,
    Record,
    RelationSeen,
    RowChange,
    Truncate,
)
from tests.conftest import wait_for

pytestmark = pytest.mark.pg

EPOCH = 4
ORIGIN = LogPosition(EPOCH, 0)


class Reader:
    """Runs ``source.read(start)`` in a thread and collects what it yields."""

    def __init__(self, source: PostgresSource, start: LogPosition = ORIGIN) -> None:
        self.source = source
        self.start = start
        self.records: list[Record] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="capture-reader")
        self.thread.start()

    def _run(self) -> None:
        try:
            for record in self.source.read(self.start):
                with self._lock:
                    self.records.append(record)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
        finally:
            self.done.set()

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def wait(self, predicate: Callable[[list[Record]], Any], what: str, timeout: float = 30) -> Any:
        def check() -> Any:
            if self.error is not None:
                raise AssertionError(f"reader failed: {self.error!r}")
            return predicate(self.snapshot())

        return wait_for(check, timeout, what)

    def commits(self) -> list[Commit]:
        return [r for r in self.snapshot() if isinstance(r, Commit)]

    def wait_commits(self, n: int, timeout: float = 30) -> list[Commit]:
        self.wait(lambda rs: sum(isinstance(r, Commit) for r in rs) >= n, f"{n} commits", timeout)
        return self.commits()

    def stop(self) -> None:
        self.source.close()
        assert self.done.wait(10), "reader did not stop"


@pytest.fixture
def primary(pg_factory):  # type: ignore[no-untyped-def]
    return pg_factory("primary")


@pytest.fixture
def make_source(primary):  # type: ignore[no-untyped-def]
    made: list[PostgresSource] = []

    def make(**kwargs: Any) -> PostgresSource:
        params: dict[str, Any] = {
            "slot": "hodr_test",
            "publication": "hodr_test",
            "epoch": EPOCH,
            "application_name": "hodr_capture",
            "logical_decoding_work_mem": "64kB",
            "status_interval": 0.2,
        }
        params.update(kwargs)
        src = PostgresSource(primary.dsn(), **params)
        made.append(src)
        return src

    yield make
    for src in made:
        src.close()


@pytest.fixture
def sql(primary):  # type: ignore[no-untyped-def]
    conn = psycopg.connect(primary.dsn(), autocommit=True)
    yield conn
    conn.close()


def changes(records: list[Record], xid: int | None = None) -> list[Changed]:
    return [r for r in records if isinstance(r, Changed) and (xid is None or r.xid == xid)]


def row_changes(records: list[Record], table: str) -> list[RowChange]:
    out = []
    for r in changes(records):
        if isinstance(r.change, RowChange) and r.change.table.name == table:
            out.append(r.change)
    return out


def started(src: PostgresSource, tables: list[str] | None = None) -> PostgresSource:
    src.ensure_publication(tables)
    src.ensure_slot()
    return src


# --- values ---------------------------------------------------------------------------------
TYPES_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE alltypes (
    id int8 PRIMARY KEY,
    c_i2 int2, c_i4 int4, c_num numeric(12,3), c_numu numeric, c_f4 real, c_f8 double precision,
    c_text text, c_vc varchar(10), c_char char(4), c_bytea bytea, c_bool bool,
    c_date date, c_time time, c_timetz timetz, c_ts timestamp(3), c_tstz timestamptz, c_iv interval,
    c_json json, c_jsonb jsonb, c_uuid uuid, c_ia int4[], c_ta text[], c_mood mood, c_moods mood[],
    c_inet inet, c_gen int8 GENERATED ALWAYS AS (id * 2) STORED
);
"""
COLUMNS = [
    "id", "c_i2", "c_i4", "c_num", "c_numu", "c_f4", "c_f8", "c_text", "c_vc", "c_char", "c_bytea",
    "c_bool", "c_date", "c_time", "c_timetz", "c_ts", "c_tstz", "c_iv", "c_json", "c_jsonb", "c_uuid",
    "c_ia", "c_ta", "c_mood", "c_moods", "c_inet",
]  # fmt: skip
ROWS = [
    (
        "1", "-32768", "2147483647", "12345.678", "3.14159265358979323846264338327950288", "1.5",
        "0.1", "héllo\tworld\n\\ 'q' \"dq\"", "short", "ab", "\\x00ff5c0a27", "true",
        "2024-02-29", "23:59:59.999999", "12:00:00+05:30", "2024-01-02 03:04:05.678",
        "2024-06-01 12:00:00.123456+02", "1 year 2 mons 3 days 04:05:06.789",
        '{"a": [1, 2, {"b": "x\\ny"}], "c": null}', '{"z": 1, "a": [true, false], "s": "é"}',
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{1,NULL,-3}", '{"a b","c\\"d",NULL,"e\\\\f",""}',
        "happy", "{sad,ok}", "192.168.0.1/24",
    ),
    ("2",) + (None,) * 25,
    (
        "3", "0", "0", "NaN", "-0.000001", "Infinity", "-1e-300", "", "", "", "\\x", "false",
        "infinity", "00:00:00", "00:00:00-12", "-infinity", "1999-12-31 23:59:59+00",
        "-1 days +00:00:01", "[]", "{}", "00000000-0000-0000-0000-000000000000", "{}", "{}", "sad",
        "{}", "::1",
    ),
]  # fmt: skip


def insert_rows(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    cols = ", ".join(COLUMNS)
    marks = ", ".join(["%s"] * len(COLUMNS))
    types = [
        "int8", "int2", "int4", "numeric", "numeric", "real", "float8", "text", "varchar", "char",
        "bytea", "bool", "date", "time", "timetz", "timestamp", "timestamptz", "interval", "json",
        "jsonb", "uuid", "int4[]", "text[]", "mood", "mood[]", "inet",
    ]  # fmt: skip
    casted = ", ".join(f"%s::text::{t}" for t in types)
    del marks
    for row in rows:
        conn.execute(f"INSERT INTO alltypes ({cols}) VALUES ({casted})", row)


class RawText(Loader):
    """Returns a column exactly as the server's output function wrote it."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


#: Types whose ``::text`` cast is not their output function (``true`` vs ``t``, trailing blanks
#: of char(n) stripped, ``/128`` added to inet hosts); everything else must equal ``col::text``.
CAST_DIFFERS = {"c_bool", "c_char", "c_inet"}


def text_rows(conn: psycopg.Connection[Any], where: str = "TRUE") -> dict[str, tuple[Any, ...]]:
    """Every row in the canonical text form (the type output functions: what pgoutput and COPY
    send), keyed by id; also checks that it equals ``SELECT col::text`` where the cast is the
    output function."""
    query = f"SELECT {', '.join(COLUMNS)} FROM alltypes WHERE {where} ORDER BY id"
    cur = conn.cursor()
    cur.execute(query + " LIMIT 0")
    for col in cur.description or []:
        cur.adapters.register_loader(col.type_code, RawText)
    rows = {r[0]: tuple(r) for r in cur.execute(query).fetchall()}
    casts = ", ".join(f"{c}::text" for c in COLUMNS)
    for r in conn.execute(f"SELECT {casts} FROM alltypes WHERE {where} ORDER BY id").fetchall():
        for col, cast, out in zip(COLUMNS, r, rows[r[0]], strict=True):
            if col not in CAST_DIFFERS:
                assert cast == out, f"{col}: ::text {cast!r} != output {out!r}"
    return rows


def assert_same_rows(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Row by row, column by column, so a failure names the column and both texts."""
    assert sorted(got) == sorted(expected)
    diffs = [
        f"id {key} {col}: stream {g!r} != select {e!r}"
        for key in expected
        for col, g, e in zip(COLUMNS, got[key], expected[key], strict=True)
        if g != e
    ]
    assert not diffs, "; ".join(diffs)


def test_values_are_the_canonical_text_of_every_type(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute(TYPES_DDL)
    src = started(make_source())
    reader = Reader(src)
    with sql.transaction():
        insert_rows(sql, ROWS)
    expected_inserted = text_rows(sql)
    sql.execute(
        "UPDATE alltypes SET c_text = c_text || '!', c_ia = c_ia || 7, c_jsonb = '{\"n\": 2}', "
        "c_tstz = c_tstz + interval '1 hour' WHERE id IN (1, 3)"
    )
    expected_updated = text_rows(sql, "id IN (1, 3)")
    # the initial load path (COPY text parsed by psycopg) gives the very same text
    loader = make_source(slot="hodr_load")
    _, snapshot = loader.create_slot_exporting_snapshot()
    loaded = [
        row for chunk in loader.snapshot_rows(snapshot, ["alltypes"], chunk_rows=2) for row in chunk.rows
    ]
    loader.finish_snapshot()
    assert loader.drop_slot()
    assert_same_rows({r[0]: r for r in loaded}, text_rows(sql))
    sql.execute("DELETE FROM alltypes WHERE id = 2")
    sql.execute("TRUNCATE alltypes")
    reader.wait_commits(4)
    records = reader.snapshot()
    reader.stop()

    rc = row_changes(records, "alltypes")
    inserts = {c.after[0]: c.after for c in rc if c.op is Op.INSERT}
    assert_same_rows(inserts, expected_inserted)
    updates = {c.after[0]: c for c in rc if c.op is Op.UPDATE}
    assert_same_rows({k: u.after for k, u in updates.items()}, expected_updated)
    assert all(u.before is None for u in updates.values())  # key did not change
    deletes = [c for c in rc if c.op is Op.DELETE]
    assert [d.before for d in deletes] == [("2",) + (None,) * 25]  # identity default: key only
    truncs = [r.change for r in changes(records) if isinstance(r.change, Truncate)]
    assert len(truncs) == 1 and truncs[0].tables[0].name == "alltypes"

    table = rc[0].table
    assert [c.name for c in table.columns] == COLUMNS  # generated column not replicated
    names = {c.name: c.type_name for c in table.columns}
    assert names["c_num"] == "numeric(12,3)"
    assert names["c_vc"] == "character varying(10)"
    assert names["c_mood"] == "public.mood" and names["c_moods"] == "public.mood[]"
    assert names["c_ts"] == "timestamp(3) without time zone" and names["c_ia"] == "integer[]"
    assert table.key_indexes == (0,) and table.identity == "d"
    assert src.table_metadata(["public.alltypes"]) == [table]
    seen = [r.table for r in records if isinstance(r, RelationSeen)]
    assert seen and seen[0] == table


def test_toast_key_update_identity_full(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE doc (id int PRIMARY KEY, note text, body text)")
    sql.execute("ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL")  # toasted, not compressed
    sql.execute("CREATE TABLE fullrow (a int, b text)")
    sql.execute("ALTER TABLE fullrow REPLICA IDENTITY FULL")
    src = started(make_source())
    reader = Reader(src)
    big = "".join(random.Random(1).choice("abcdef0123") for _ in range(20_000))
    sql.execute("INSERT INTO doc VALUES (1, 'n', %s)", (big,))
    sql.execute("UPDATE doc SET note = 'changed' WHERE id = 1")  # body not touched: unchanged TOAST
    sql.execute("UPDATE doc SET id = 2 WHERE id = 1")  # key update: old key travels
    sql.execute("DELETE FROM doc WHERE id = 2")
    sql.execute("INSERT INTO fullrow VALUES (1, 'x')")
    sql.execute("UPDATE fullrow SET b = 'y'")
    sql.execute("DELETE FROM fullrow")
    reader.wait_commits(7)
    records = reader.snapshot()
    reader.stop()

    doc = row_changes(records, "doc")
    assert [c.op for c in doc] == [Op.INSERT, Op.UPDATE, Op.UPDATE, Op.DELETE]
    assert doc[0].after == ("1", "n", big)
    assert doc[1].before is None and doc[1].after == ("1", "changed", UNCHANGED)
    assert doc[1].after[2] is UNCHANGED
    assert doc[2].before == ("1", None, None) and doc[2].after == ("2", "changed", UNCHANGED)
    assert doc[2].identity() == ("1",)
    assert doc[3].before == ("2", None, None)
    full = row_changes(records, "fullrow")
    assert full[0].table.identity == "f" and full[0].table.key_indexes == (0, 1)
    assert full[1].before == ("1", "x") and full[1].after == ("1", "y")
    assert full[2].before == ("1", "y") and full[2].after is None


def test_logical_messages(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE t (id int PRIMARY KEY)")
    src = started(make_source())
    reader = Reader(src)
    sql.execute("SELECT pg_logical_emit_message(false, 'hodr', 'now'::bytea)")
    with sql.transaction():
        sql.execute("INSERT INTO t VALUES (1)")
        sql.execute("SELECT pg_logical_emit_message(true, 'hodr', '\\x00ff'::bytea)")
    commit = reader.wait_commits(1)[0]
    records = reader.snapshot()
    reader.stop()
    msgs = [r for r in changes(records) if isinstance(r.change, Message)]
    assert msgs[0].xid == 0 and msgs[0].change == Message("hodr", b"now", transactional=False)
    assert msgs[1].xid == commit.xid == msgs[1].subxid
    assert msgs[1].change == Message("hodr", b"\x00\xff", transactional=True)


# --- streamed (in-progress) transactions ------------------------------------------------------
def test_large_transaction_is_streamed_interleaved(make_source, sql, primary) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
    sql.execute("CREATE TABLE small (id int PRIMARY KEY)")
    src = started(make_source())
    reader = Reader(src)
    other = psycopg.connect(primary.dsn(), autocommit=True)
    try:
        with sql.transaction():
            sql.execute("INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 3000) g")
            big_xid = int(sql.execute("SELECT txid_current()").fetchone()[0])
            # part of the open transaction is on the wire before it commits
            reader.wait(lambda rs: len(changes(rs, big_xid)) > 100, "streamed changes before commit")
            other.execute("INSERT INTO small VALUES (1)")  # commits while big is open
            reader.wait(
                lambda rs: any(isinstance(r, Commit) and r.xid != big_xid for r in rs), "small commit"
            )
            sql.execute("INSERT INTO big SELECT g, 'y' FROM generate_series(3001, 5000) g")
    finally:
        other.close()
    reader.wait(lambda rs: any(isinstance(r, Commit) and r.xid == big_xid for r in rs), "big commit")
    records = reader.snapshot()
    reader.stop()

    big = changes(records, big_xid)
    assert len(big) == 5000
    assert all(r.subxid == big_xid for r in big)
    assert not any(isinstance(r, Begin) and r.xid == big_xid for r in records)  # streamed: no Begin
    idx = {id(r): i for i, r in enumerate(records)}
    small_commit = next(i for i, r in enumerate(records) if isinstance(r, Commit) and r.xid != big_xid)
    big_commit = next(i for i, r in enumerate(records) if isinstance(r, Commit) and r.xid == big_xid)
    assert idx[id(big[0])] < small_commit < idx[id(big[-1])] < big_commit
    ids = [int(r.change.after[0]) for r in big]
    assert ids == list(range(1, 5001))
    assert not any(isinstance(r, Idle) for r in records[idx[id(big[0])] : big_commit])


def test_large_rollback_and_savepoint_abort(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
    src = started(make_source())
    reader = Reader(src)
    # 1. a large transaction rolled back is streamed and then aborted as a whole
    sql.execute("BEGIN")
    sql.execute("INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 3000) g")
    xid1 = int(sql.execute("SELECT txid_current()").fetchone()[0])
    reader.wait(lambda rs: len(changes(rs, xid1)) > 0, "streamed changes of the rolled-back transaction")
    sql.execute("ROLLBACK")
    reader.wait(lambda rs: Abort in {type(r) for r in rs}, "abort of the large transaction")
    # 2. a savepoint rolled back inside a streamed transaction
    with sql.transaction():
        sql.execute("INSERT INTO big SELECT g, 'a' FROM generate_series(10001, 13000) g")
        xid2 = int(sql.execute("SELECT txid_current()").fetchone()[0])
        sql.execute("SAVEPOINT s1")
        sql.execute("INSERT INTO big SELECT g, repeat('b', 100) FROM generate_series(20001, 23000) g")
        reader.wait(
            lambda rs: any(r.subxid != xid2 for r in changes(rs, xid2)), "streamed changes of the savepoint"
        )
        sql.execute("ROLLBACK TO SAVEPOINT s1")
        sql.execute("INSERT INTO big VALUES (30000, 'after')")
    reader.wait(lambda rs: any(isinstance(r, Commit) and r.xid == xid2 for r in rs), "commit")
    records = reader.snapshot()
    reader.stop()

    aborts = [r for r in records if isinstance(r, Abort)]
    assert aborts[0].xid == aborts[0].subxid == xid1
    assert not any(isinstance(r, Commit) and r.xid == xid1 for r in records)
    sub = [r for r in aborts if r.xid == xid2]
    assert len(sub) == 1 and sub[0].subxid != xid2
    subxid = sub[0].subxid
    in_sub = [r for r in changes(records, xid2) if r.subxid == subxid]
    # only what was streamed before the rollback arrives; the server drops the rest itself
    sub_ids = [int(r.change.after[0]) for r in in_sub]
    assert sub_ids and sub_ids == list(range(20001, 20001 + len(sub_ids)))
    kept = [r for r in changes(records, xid2) if r.subxid != subxid]
    assert [int(r.change.after[0]) for r in kept] == [*range(10001, 13001), 30000]
    abort_at = records.index(sub[0])
    assert all(records.index(r) < abort_at for r in in_sub)


# --- idle, release, sync mode -----------------------------------------------------------------
def test_idle_and_release_never_beyond_released(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE t (id int PRIMARY KEY)")
    src = started(make_source())
    start_flush = src.slot_info().confirmed_flush_lsn
    reader = Reader(src)
    reader.wait(lambda rs: any(isinstance(r, Idle) for r in rs), "an Idle record while nothing happens")
    for i in range(3):
        sql.execute("INSERT INTO t VALUES (%s)", (i,))
    commits = reader.wait_commits(3)
    idle_after = reader.wait(
        lambda rs: [r for r in rs if isinstance(r, Idle) and r.position >= commits[-1].position],
        "an Idle at or after the last commit",
    )
    assert idle_after[0].position.epoch == EPOCH
    # nothing released yet: the slot has not moved, however much was read
    info = src.slot_info()
    assert info.active and info.confirmed_flush_lsn == start_flush
    assert src.current_lsn().lsn >= commits[-1].position.lsn

    src.release(commits[0].position)
    wait_for(
        lambda: src.slot_info().confirmed_flush_lsn == commits[0].position.lsn,
        10,
        "confirmed_flush_lsn to reach the first commit",
    )
    src.release(LogPosition(EPOCH, 1))  # backwards: ignored
    src.release(LogPosition(EPOCH + 1, commits[2].position.lsn + 1000))  # other epoch: ignored
    src.release(commits[1].position)
    wait_for(
        lambda: src.slot_info().confirmed_flush_lsn == commits[1].position.lsn,
        10,
        "confirmed_flush_lsn to reach the second commit",
    )
    # keepalives and periodic status updates keep coming; the slot stays where we released it
    n_idle = sum(isinstance(r, Idle) for r in reader.snapshot())
    reader.wait(lambda rs: sum(isinstance(r, Idle) for r in rs) > n_idle + 3, "more Idle records")
    assert src.slot_info().confirmed_flush_lsn == commits[1].position.lsn
    assert src.released == commits[1].position
    reader.stop()


def test_sync_commit_waits_for_release(make_source, sql, primary) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE t (id int PRIMARY KEY)")
    src = started(make_source(application_name="hodr_sync"))
    sql.execute("ALTER SYSTEM SET synchronous_standby_names = 'hodr_sync'")
    sql.execute("SELECT pg_reload_conf()")
    reader = Reader(src)
    # a walsender counts as a synchronous standby only once it has reported a flush position
    src.release(reader.wait(lambda rs: [r for r in rs if isinstance(r, Idle)], "Idle")[-1].position)
    wait_for(
        lambda: (
            sql.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'hodr_sync'"
            ).fetchall()
            == [("sync",)]
        ),
        20,
        "our walsender to be the synchronous standby",
    )

    writer = psycopg.connect(primary.dsn(), autocommit=True)
    pid = writer.info.backend_pid
    done = threading.Event()
    failure: list[BaseException] = []

    def commit_one() -> None:
        try:
            writer.execute("INSERT INTO t VALUES (1)")
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=commit_one, daemon=True)
    thread.start()
    try:
        commit = reader.wait_commits(1)[0]
        # the commit is on the wire, but the backend waits for our flush feedback
        wait_for(
            lambda: (
                sql.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
                == ("SyncRep",)
            ),
            10,
            "the committing backend to wait in SyncRep",
        )
        assert not done.is_set()
        t0 = time.monotonic()
        src.release(commit.position)
        assert done.wait(5), "commit did not complete after release()"
        assert not failure
        # feedback is sent as soon as release() wakes the reader, not at the next poll
        assert time.monotonic() - t0 < 1.0
    finally:
        sql.execute("ALTER SYSTEM RESET synchronous_standby_names")
        sql.execute("SELECT pg_reload_conf()")
        done.wait(10)
        writer.close()
        reader.stop()


# --- lifecycle --------------------------------------------------------------------------------
def test_close_and_stop_event_end_read_quickly(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE t (id int PRIMARY KEY)")
    src = started(make_source(status_interval=5.0))
    reader = Reader(src)
    reader.wait(lambda rs: any(isinstance(r, Idle) for r in rs), "first Idle")
    t0 = time.monotonic()
    src.close()
    assert reader.done.wait(2)
    assert time.monotonic() - t0 < 0.5 and reader.error is None

    stop = threading.Event()
    src2 = make_source(stop=stop, status_interval=5.0)
    reader2 = Reader(src2)
    wait_for(lambda: src2.slot_info().active, 10, "slot active again")
    t0 = time.monotonic()
    stop.set()
    assert reader2.done.wait(2)
    assert time.monotonic() - t0 < 0.5 and reader2.error is None


def test_drop_slot_waits_for_the_walsender_of_a_closed_stream(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    """A demotion stops capture and drops its slot at once; the walsender ends a moment after
    the client closed the stream (CI: "replication slot is active for PID n")."""
    sql.execute("CREATE TABLE t (id int PRIMARY KEY)")
    src = started(make_source())
    reader = Reader(src)
    reader.wait(lambda rs: any(isinstance(r, Idle) for r in rs), "first Idle")
    pid = src.slot_info().active_pid
    other = make_source()
    with pytest.raises(RetryableCaptureError, match=rf"'hodr_test' is still in use by PID {pid}"):
        other.drop_slot(wait_s=0.2)  # held by a live stream: refused, named, kept
    assert src.slot_info().active
    for _ in range(5):  # the race is short: take it several times
        reader.stop()
        assert other.drop_slot()
        assert sql.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
        src = started(make_source())
        reader = Reader(src)
        reader.wait(lambda rs: any(isinstance(r, Idle) for r in rs), "first Idle")
    reader.stop()


def test_hodrs_own_schema_is_neither_streamed_nor_loaded(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    """hodr.applied / hodr.markers are each node's own state: a primary that was once a standby
    has them, and FOR ALL TABLES publishes them.  Shipped, they broke the standby ("duplicate
    key value violates unique constraint applied_pkey") or would overwrite its position."""
    from hodr.replicate.apply.postgres import PostgresTarget

    sql.execute("CREATE TABLE t (id int PRIMARY KEY)")
    src = started(make_source())
    target = PostgresTarget(src.dsn)
    target.setup()  # creates hodr.applied with its row: an INSERT the slot sees
    target.close()
    reader = Reader(src)
    with sql.transaction():
        sql.execute("INSERT INTO t VALUES (1)")
        sql.execute("UPDATE hodr.applied SET lsn = 7 WHERE id = 1")
    sql.execute("INSERT INTO hodr.markers (prefix, content, transactional) VALUES ('x', 'y', true)")
    sql.execute("DELETE FROM hodr.markers")
    sql.execute("TRUNCATE hodr.markers, t")
    reader.wait_commits(5)  # the setup's INSERT, then the four above
    records = reader.snapshot()
    reader.stop()
    tables = {c.change.table.qualified for c in changes(records) if isinstance(c.change, RowChange)}
    truncates = [c.change for c in changes(records) if isinstance(c.change, Truncate)]
    tables |= {t.qualified for tr in truncates for t in tr.tables}
    tables |= {r.table.qualified for r in records if isinstance(r, RelationSeen)}
    assert tables == {"public.t"}, tables
    sql.execute("INSERT INTO t VALUES (2)")  # hodr.applied holds its row too: only t is loaded
    loader = make_source(slot="hodr_load")
    _, snapshot = loader.create_slot_exporting_snapshot()
    loaded = {chunk.table.qualified for chunk in loader.snapshot_rows(snapshot, None)}
    loader.finish_snapshot()
    assert loader.drop_slot()
    assert loaded == {"public.t"}, loaded


def test_connection_loss_is_retryable_and_resends_unreleased(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE t (id int PRIMARY KEY)")
    src = started(make_source())
    reader = Reader(src)
    sql.execute("INSERT INTO t VALUES (1)")
    sql.execute("INSERT INTO t VALUES (2)")
    first, second = reader.wait_commits(2)
    src.release(first.position)
    wait_for(lambda: src.slot_info().confirmed_flush_lsn == first.position.lsn, 10, "release of the first")
    sql.execute(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'hodr_test'"
    )
    assert reader.done.wait(10)
    assert isinstance(reader.error, RetryableCaptureError)
    assert "\n" not in str(reader.error)
    # reconnect from the last released position: the unreleased transaction comes again, once
    wait_for(lambda: not src.slot_info().active, 10, "slot released by the dead walsender")
    again = Reader(src, first.position)
    got = again.wait_commits(1)
    assert got[0] == second
    assert [r.change.after for r in changes(again.snapshot())] == [("2",)]
    again.stop()


def test_missing_slot_is_fatal(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE t (id int PRIMARY KEY)")
    src = make_source()
    src.ensure_publication()
    with pytest.raises(HodrFatal, match="hodr_test"):
        next(iter(src.read(LogPosition(EPOCH, 0))))


# --- setup: keyless tables, publication ----------------------------------------------------------
def test_keyless_tables(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE keyed (id int PRIMARY KEY)")
    sql.execute("CREATE TABLE nokey (a int, b text)")
    sql.execute("CREATE TABLE nothing (id int PRIMARY KEY, b text)")
    sql.execute("ALTER TABLE nothing REPLICA IDENTITY NOTHING")
    strict = make_source(set_replica_identity_full=False)
    with pytest.raises(HodrFatal) as info:
        strict.ensure_publication()
    assert "public.nokey" in str(info.value) and "public.nothing" in str(info.value)
    assert "public.keyed" not in str(info.value)
    # refused as a whole: no publication, so the application's statements keep working
    assert sql.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
    sql.execute("INSERT INTO nokey VALUES (1, 'x')")
    sql.execute("UPDATE nokey SET b = 'x'")
    # once published without an identity, the source statement itself fails (pg-notes §3)
    sql.execute("CREATE PUBLICATION hodr_test FOR ALL TABLES")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        sql.execute("UPDATE nokey SET b = 'y'")

    fixing = make_source()
    assert fixing.check_replica_identity() == ["public.nokey", "public.nothing"]
    assert fixing.check_replica_identity() == []
    idents = dict(
        sql.execute(
            "SELECT relname, relreplident FROM pg_class WHERE relname IN ('nokey', 'nothing')"
        ).fetchall()
    )
    assert idents == {"nokey": "f", "nothing": "f"}
    fixing.ensure_slot()
    reader = Reader(fixing)
    sql.execute("UPDATE nokey SET b = 'y'")
    sql.execute("DELETE FROM nokey")
    reader.wait_commits(2)
    rc = row_changes(reader.snapshot(), "nokey")
    reader.stop()
    assert rc[0].before == ("1", "x") and rc[0].after == ("1", "y")
    assert rc[1].before == ("1", "y")


def test_publishing_never_breaks_the_applications_deletes(make_source, sql, primary) -> None:  # type: ignore[no-untyped-def]
    """The publication and REPLICA IDENTITY FULL on its keyless tables commit together: while
    hodr waits for a lock on the first keyless table, the application's DELETE on the second
    one still works (published first, it failed: seen in CI as an application error)."""
    sql.execute("CREATE TABLE k1 (a int); CREATE TABLE k2 (a int)")
    sql.execute("INSERT INTO k1 VALUES (1); INSERT INTO k2 VALUES (1), (2)")
    blocker = psycopg.connect(primary.dsn())
    errors: list[BaseException] = []
    src = make_source()

    def publish() -> None:
        try:
            src.ensure_publication()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=publish, daemon=True)
    try:
        blocker.execute("LOCK TABLE k1 IN ACCESS SHARE MODE")  # hodr's ALTER TABLE k1 waits
        thread.start()
        wait_for(
            lambda: sql.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = 'k1'::regclass AND NOT granted"
            ).fetchone()[0],
            30,
            "hodr's ALTER TABLE k1 waiting for its lock",
        )
        sql.execute("DELETE FROM k2 WHERE a = 1")
    finally:
        blocker.close()
        thread.join(30)
    assert not errors and not thread.is_alive(), errors
    sql.execute("DELETE FROM k2 WHERE a = 2")  # published now, and replicable
    idents = sql.execute("SELECT relname, relreplident FROM pg_class WHERE relname IN ('k1', 'k2')")
    assert dict(idents.fetchall()) == {"k1": "f", "k2": "f"}


def test_publication_for_a_table_list(make_source, sql) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
    sql.execute("CREATE SCHEMA s; CREATE TABLE s.c (id int PRIMARY KEY)")
    src = make_source()
    src.ensure_publication(["a"])
    src.ensure_publication(["public.a", "s.c"])  # brought up to date
    pub = sql.execute("SELECT schemaname, tablename FROM pg_publication_tables ORDER BY 1, 2").fetchall()
    assert pub == [("public", "a"), ("s", "c")]
    with pytest.raises(HodrFatal, match="table list"):
        src.ensure_publication(None)
    assert [t.qualified for t in src.table_metadata()] == ["public.a", "s.c"]
    assert src.ensure_slot() is True and src.ensure_slot() is False


# --- initial load from the exported snapshot ------------------------------------------------------
def test_snapshot_load_plus_stream_is_exact(make_source, sql, primary) -> None:  # type: ignore[no-untyped-def]
    sql.execute("CREATE TABLE acc (id int PRIMARY KEY, bal int, note text)")
    sql.execute("INSERT INTO acc SELECT g, 0, 'n' || g FROM generate_series(1, 2000) g")
    src = make_source()
    src.ensure_publication(["acc"])

    stop = threading.Event()
    ops = {"n": 0}
    errors: list[BaseException] = []

    def writer() -> None:
        rnd = random.Random(7)
        next_id = 2001
        try:
            with psycopg.connect(primary.dsn(), autocommit=True) as conn:
                while not stop.is_set() or ops["n"] < 300:
                    with conn.transaction():
                        conn.execute("INSERT INTO acc VALUES (%s, 0, 'new')", (next_id,))
                        next_id += 1
                        conn.execute("UPDATE acc SET bal = bal + 1 WHERE id = %s", (rnd.randint(1, next_id),))
                        conn.execute("DELETE FROM acc WHERE id = %s", (rnd.randint(1, next_id),))
                    ops["n"] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    wait_for(lambda: ops["n"] > 50, 30, "the writer to get going")
    start, snapshot = src.create_slot_exporting_snapshot()
    assert start.epoch == EPOCH
    assert src.slot_info() is not None
    loaded: dict[str, tuple[Any, ...]] = {}
    chunks = 0
    for chunk in src.snapshot_rows(snapshot, ["public.acc"], chunk_rows=500):
        chunks += 1
        assert chunk.table.qualified == "public.acc" and len(chunk.rows) <= 500
        for row in chunk.rows:
            assert row[0] not in loaded
            loaded[row[0]] = row
    src.finish_snapshot()
    assert chunks > 1
    stop.set()
    thread.join(60)
    assert not errors and not thread.is_alive()
    end_lsn = src.current_lsn()

    reader = Reader(src, start)
    reader.wait(
        lambda rs: any(isinstance(r, Idle | Commit) and r.position >= end_lsn for r in rs),
        "the stream to reach the writer's end",
        timeout=60,
    )
    records = reader.snapshot()
    reader.stop()
    table = dict(loaded)
    for rc in row_changes(records, "acc"):
        if rc.op is Op.INSERT:
            assert rc.after[0] not in table, f"overlap: insert of {rc.after[0]} already loaded"
            table[rc.after[0]] = rc.after
        elif rc.op is Op.UPDATE:
            assert rc.after[0] in table, f"gap: update of unknown row {rc.after[0]}"
            table[rc.after[0]] = rc.after
        else:
            assert table.pop(rc.before[0], None) is not None, f"gap: delete of unknown row {rc.before[0]}"
    final = {r[0]: tuple(r) for r in sql.execute("SELECT id::text, bal::text, note FROM acc").fetchall()}
    assert table == final
    assert any(r.position > start for r in records if isinstance(r, Commit))

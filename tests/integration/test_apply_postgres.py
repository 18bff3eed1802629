"""PostgresTarget + ApplyLoop against real PostgreSQL 15 servers.

Tables are created on a *source* server and described the way capture describes them (type names
from ``format_type``, key flags from the replica identity); row values are the source's own text
output (``col::text``), which is what pgoutput sends.  The same DDL runs on the standby, the
changes are applied there, and both sides are compared in text form.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest

from hodr.errors import HodrFatal, RetryableApplyError, SchemaMismatch
from hodr.pginstance import PgInstance
from hodr.position import ZERO, LogPosition
from hodr.redo.records import (
    UNCHANGED,
    Change,
    Column,
    LoadRows,
    Message,
    Op,
    Row,
    RowChange,
    Table,
    Truncate,
)
from hodr.replicate.apply import ApplyLoop
from hodr.replicate.apply.postgres import PostgresTarget, prepare_standby, release_standby
from hodr.replicate.transaction import Transaction

pytestmark = pytest.mark.pg


# --- servers and databases -------------------------------------------------------------------
@pytest.fixture(scope="module")
def servers(pg_base) -> Iterator[tuple[PgInstance, PgInstance]]:
    """A source and a standby server shared by this module (each test gets its own databases)."""
    made: list[PgInstance] = []
    try:
        for name in ("source", "standby"):
            inst = PgInstance(pg_base, name)
            made.append(inst)
            inst.init().start()
        yield made[0], made[1]
    finally:
        for inst in made:
            inst.destroy()


_db_numbers = itertools.count(1)


class Env:
    """One fresh database on each server, plus helpers to describe and compare tables."""

    def __init__(self, source: PgInstance, standby: PgInstance, dbname: str) -> None:
        self.source_inst, self.standby_inst, self.dbname = source, standby, dbname
        self.src = source.connect(dbname)
        self.std = standby.connect(dbname)
        self.dsn = standby.dsn(dbname)
        self.targets: list[PostgresTarget] = []
        self._positions = itertools.count(1)

    def ddl(self, sql: str) -> None:
        """Run the same DDL on both sides."""
        self.src.execute(sql)
        self.std.execute(sql)

    def target(self, **kwargs: Any) -> PostgresTarget:
        target = PostgresTarget(self.dsn, **kwargs)
        self.targets.append(target)
        return target

    def table(self, name: str) -> Table:
        """The source table as capture describes it (Relation message: key flags, identity)."""
        oid, ident = self.src.execute(
            "SELECT oid, relreplident::text FROM pg_class WHERE oid = %s::regclass", [name]
        ).fetchone()
        key_attnums: set[int] = set()
        if ident in ("d", "i"):
            cond = "indisprimary" if ident == "d" else "indisreplident"
            row = self.src.execute(
                f"SELECT indkey::int2[] FROM pg_index WHERE indrelid = %s AND {cond}", [oid]
            ).fetchone()
            key_attnums = set(row[0]) if row else set()
        cols = self.src.execute(
            "SELECT attnum, attname, format_type(atttypid, atttypmod), atttypid::int FROM pg_attribute "
            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [oid],
        ).fetchall()
        columns = tuple(
            Column(n, t, key=ident == "f" or num in key_attnums, type_oid=toid) for num, n, t, toid in cols
        )
        return Table("public", name, columns, identity=ident, relid=oid)

    def source_rows(self, table: Table, order: str = "1") -> list[Row]:
        """Rows in the source's canonical text form, as pgoutput would carry them."""
        return self.rows(self.src, table, order)

    def standby_rows(self, table: Table, order: str = "1") -> list[Row]:
        """*order* refers to the text output columns; qualify (``t.id``) to sort by value."""
        return self.rows(self.std, table, order)

    @staticmethod
    def rows(conn: psycopg.Connection[Any], table: Table, order: str) -> list[Row]:
        cols = ", ".join(f'"{c.name}"::text' for c in table.columns)
        return [tuple(r) for r in conn.execute(f"SELECT {cols} FROM {table.name} ORDER BY {order}")]

    def txn(self, *changes: Change) -> Transaction:
        """A one-part source transaction with the next commit position."""
        n = next(self._positions)
        return Transaction(n, LogPosition(1, n * 100), LogPosition(1, n * 100 + 50), 0, tuple(changes))

    def big_txn(self, parts: Sequence[Sequence[Change]]) -> list[Transaction]:
        n = next(self._positions)
        begin, commit = LogPosition(1, n * 100), LogPosition(1, n * 100 + 50)
        return [
            Transaction(n, begin, commit, 0, tuple(p), part=i, final=i == len(parts) - 1)
            for i, p in enumerate(parts)
        ]

    def applied(self) -> LogPosition:
        row = self.std.execute("SELECT epoch, lsn, seq FROM hodr.applied").fetchone()
        return LogPosition(*row)

    def close(self) -> None:
        for target in self.targets:
            target.close()
        self.src.close()
        self.std.close()
        for inst in (self.source_inst, self.standby_inst):
            inst.psql(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


@pytest.fixture
def env(servers: tuple[PgInstance, PgInstance]) -> Iterator[Env]:
    source, standby = servers
    dbname = f"apply_{next(_db_numbers)}"
    for inst in servers:
        inst.psql(f'CREATE DATABASE "{dbname}"')
    e = Env(source, standby, dbname)
    yield e
    e.close()


def ins(table: Table, row: Row) -> RowChange:
    return RowChange(Op.INSERT, table, None, row)


def upd(table: Table, after: Row, before: Row | None = None) -> RowChange:
    return RowChange(Op.UPDATE, table, before, after)


def dele(table: Table, before: Row) -> RowChange:
    return RowChange(Op.DELETE, table, before, None)


def key_only(table: Table, row: Row) -> Row:
    """The old-key image pgoutput sends for identity default/index: key columns, others None."""
    return tuple(v if c.key else None for c, v in zip(table.columns, row, strict=True))


# --- every common type -----------------------------------------------------------------------
TYPES_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE {name} (
    id integer {pk}, i2 smallint, i8 bigint, num numeric(12,3), numx numeric, f4 real,
    f8 double precision, txt text, vc varchar(20), ch char(5), ba bytea, b boolean, d date,
    t time, ttz time with time zone, ts timestamp, tstz timestamptz, iv interval, j json,
    jb jsonb, u uuid, ia integer[], ta text[], e mood, ea mood[], ip inet, pt point,
    r int4range, bits bit varying(8)
)"""

TYPES_ROWS = """
INSERT INTO {name} VALUES
 (1, 32767, 9223372036854775807, 123456789.123, 0.000000000000000000000000000001, 3.14159,
  'Infinity', E'tab\\there\\nnew line \\\\ back ''quote'' "dq" ✓ é', 'héllo wörld', 'ab',
  E'\\\\x00ff10', true, '2024-02-29', '23:59:59.999999', '12:00+05:30',
  '2024-01-01 12:34:56.789', '2024-01-01 12:34:56.789+02',
  '1 year 2 mons 3 days 04:05:06.5', '{{"a": [1, 2, {{"b": null}}], "s": "\\u00e9"}}',
  '{{"k": "v", "n": 1.50}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{1,NULL,3}}',
  '{{"a b","c,d","e\\"f",NULL}}', 'happy', '{{sad,happy}}', '192.168.0.1/24', '(1.5,-2)',
  '[1,10)', B'1010'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, -32768, 0, -0.001, 'NaN', '-Infinity', -0.0, '', '', '', E'\\\\x', false, 'infinity',
  '00:00', '00:00:00-14', '-infinity', 'infinity', '-1 days -00:00:01', '[]', '{{}}',
  '00000000-0000-0000-0000-000000000000', '{{}}', '{{}}', 'sad', '{{}}', '::1', '(0,0)',
  'empty', B'')
"""


def make_types(env: Env, name: str, keyless: bool = False) -> Table:
    env.ddl(TYPES_DDL.format(name=name, pk="" if keyless else "PRIMARY KEY"))
    if keyless:
        env.src.execute(f"ALTER TABLE {name} REPLICA IDENTITY FULL")
    env.src.execute(TYPES_ROWS.format(name=name))
    return env.table(name)


def test_every_common_type_round_trips_through_insert_update_and_copy(env: Env) -> None:
    table = make_types(env, "types_t")
    rows = env.source_rows(table)
    assert rows[0][1:4] == ("32767", "9223372036854775807", "123456789.123")
    loop = ApplyLoop(env.target())
    loop.apply([env.txn(*(ins(table, r) for r in rows))])
    assert env.standby_rows(table) == rows

    # UPDATE every column: row 1 takes row 3's values and the other way round
    swapped = [(rows[0][0], *rows[2][1:]), rows[1], (rows[2][0], *rows[0][1:])]
    loop.apply([env.txn(upd(table, swapped[0]), upd(table, swapped[2]))])
    assert env.standby_rows(table) == swapped

    # the same rows through COPY (initial load) into a second table
    env.std.execute("CREATE TABLE types_c (LIKE types_t)")
    copy_table = Table("public", "types_c", table.columns, table.identity)
    loop.apply([env.txn(LoadRows(copy_table, tuple(rows)))])
    assert env.standby_rows(copy_table) == rows


@pytest.mark.parametrize("rowmap", [False, True], ids=["by-value", "rowmap"])
def test_keyless_rows_are_found_by_every_type_including_json_and_point(env: Env, rowmap: bool) -> None:
    """Identity full: the old row is matched on all columns, NULLs and types without '=' too."""
    table = make_types(env, "types_k", keyless=True)
    assert table.identity == "f"
    rows = env.source_rows(table)
    loop = ApplyLoop(env.target(rowmap=rowmap))
    loop.apply([env.txn(*(ins(table, r) for r in rows + rows))])  # every row twice
    loop.apply([env.txn(dele(table, rows[0]), dele(table, rows[2]))])
    assert env.standby_rows(table) == [rows[0], rows[1], rows[1], rows[2]]
    changed = (rows[1][0], *rows[0][1:])  # id 2 gets row 1's values
    loop.apply([env.txn(upd(table, changed, rows[1]), dele(table, rows[2]))])
    assert env.standby_rows(table, order="1, 2") == [rows[0], changed, rows[1]]


# --- row shapes ------------------------------------------------------------------------------
def test_unchanged_toast_value_keeps_the_old_large_value(env: Env) -> None:
    env.ddl("CREATE TABLE docs (id int PRIMARY KEY, body text, n int)")
    env.src.execute("INSERT INTO docs SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 8000) g")
    table = env.table("docs")
    (row,) = env.source_rows(table)
    assert len(row[1]) == 256000
    loop = ApplyLoop(env.target())
    loop.apply([env.txn(ins(table, row))])
    toasted = env.std.execute(
        "SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE relname = 'docs'"
    ).fetchone()[0]
    assert toasted, "body should be stored out of line (TOAST)"
    loop.apply([env.txn(upd(table, ("1", UNCHANGED, "7")))])
    assert env.standby_rows(table) == [("1", row[1], "7")]


def test_key_changing_update_and_delete_by_old_key(env: Env) -> None:
    env.ddl("CREATE TABLE acc (id int PRIMARY KEY, owner text, balance numeric(10,2))")
    table = env.table("acc")
    loop = ApplyLoop(env.target())
    a, b = ("1", "ann", "10.00"), ("2", "bob", "20.50")
    loop.apply([env.txn(ins(table, a), ins(table, b))])
    moved = ("5", "ann", "11.00")
    loop.apply([env.txn(upd(table, moved, before=key_only(table, a)), dele(table, key_only(table, b)))])
    assert env.standby_rows(table) == [moved]


def test_replica_identity_index_finds_rows_by_the_index_columns(env: Env) -> None:
    env.ddl("CREATE TABLE item (id int, code text NOT NULL, qty int)")
    env.ddl("CREATE UNIQUE INDEX item_code ON item (code)")
    env.src.execute("ALTER TABLE item REPLICA IDENTITY USING INDEX item_code")
    table = env.table("item")
    assert table.identity == "i" and [c.name for c in table.columns if c.key] == ["code"]
    loop = ApplyLoop(env.target())
    loop.apply([env.txn(ins(table, ("1", "a", "5")), ins(table, ("2", "b", "6")))])
    loop.apply([env.txn(upd(table, ("1", "a", "7")), upd(table, ("2", "c", "6"), before=(None, "b", None)))])
    loop.apply([env.txn(dele(table, (None, "a", None)))])
    assert env.standby_rows(table) == [("2", "c", "6")]


def test_thousands_of_mixed_statements_in_one_pipeline_are_all_checked(env: Env) -> None:
    """Alternating tables make every group one statement; results are read while sending."""
    env.ddl("CREATE TABLE a (id int PRIMARY KEY, n int); CREATE TABLE b (id int PRIMARY KEY, n int)")
    ta, tb = env.table("a"), env.table("b")
    loop = ApplyLoop(env.target())
    loop.apply([env.txn(LoadRows(ta, tuple((str(i), "0") for i in range(3000)))), env.txn(LoadRows(tb, ()))])
    mixed: list[Change] = []
    for i in range(3000):
        mixed += [upd(ta, (str(i), str(i))), ins(tb, (str(i), str(-i)))]
    loop.apply([env.txn(*mixed)])
    assert env.std.execute("SELECT sum(n) FROM a").fetchone()[0] == sum(range(3000))
    assert env.std.execute("SELECT count(*), sum(n) FROM b").fetchone() == (3000, -sum(range(3000)))
    late = [upd(ta, (str(i), "1")) for i in range(2000)] + [upd(ta, ("5000", "1")), upd(ta, ("1", "2"))]
    with pytest.raises(
        HodrFatal, match=r"^standby diverged: UPDATE matched no row: public.a key \(id='5000'\)$"
    ):
        loop.apply([env.txn(*late)])
    assert env.std.execute("SELECT sum(n) FROM a").fetchone()[0] == sum(range(3000))


def test_a_bad_change_mid_pipeline_rolls_back_and_the_connection_stays_usable(env: Env) -> None:
    env.ddl("CREATE TABLE acc (id int PRIMARY KEY, v text)")
    table = env.table("acc")
    target = env.target()
    loop = ApplyLoop(target)
    good = [ins(table, (str(i), "x")) for i in range(600)]
    with pytest.raises(HodrFatal, match="INSERT into public.acc carries an unchanged-value marker"):
        loop.apply([env.txn(*good, ins(table, ("9999", UNCHANGED)))])
    pid = target.backend_pid
    assert env.standby_rows(table) == []
    loop.apply([env.txn(*good)])
    assert target.backend_pid == pid
    assert len(env.standby_rows(table)) == 600


@pytest.mark.parametrize("rowmap", [False, True], ids=["by-value", "rowmap"])
def test_keyless_duplicates_change_exactly_one_row(env: Env, rowmap: bool) -> None:
    env.ddl("CREATE TABLE log (who text, what text, n int)")
    env.src.execute("ALTER TABLE log REPLICA IDENTITY FULL")
    table = env.table("log")
    loop = ApplyLoop(env.target(rowmap=rowmap))
    dup, other = ("ann", "x", "1"), ("bob", None, "2")
    loop.apply([env.txn(ins(table, dup), ins(table, dup), ins(table, other))])
    loop.apply([env.txn(dele(table, dup))])
    assert env.standby_rows(table) == [dup, other]
    loop.apply([env.txn(ins(table, dup))])
    loop.apply([env.txn(upd(table, ("ann", "y", "1"), before=dup))])
    assert env.standby_rows(table, order="1, 2") == [dup, ("ann", "y", "1"), other]
    loop.apply([env.txn(upd(table, ("bob", "z", "2"), before=other))])  # matched through NULL
    assert env.standby_rows(table, order="1, 2") == [dup, ("ann", "y", "1"), ("bob", "z", "2")]


def test_truncate_and_identity_always_columns(env: Env) -> None:
    env.ddl("CREATE TABLE a (id int PRIMARY KEY)")
    env.ddl("CREATE TABLE b (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)")
    ta, tb = env.table("a"), env.table("b")
    loop = ApplyLoop(env.target())
    loop.apply([env.txn(ins(ta, ("1",)), ins(tb, ("7", "x")), upd(tb, ("7", "y")))])
    assert env.standby_rows(tb) == [("7", "y")]  # the source's identity value, kept
    loop.apply([env.txn(Truncate((ta, tb), restart_identity=True), ins(ta, ("2",)))])
    assert env.standby_rows(ta) == [("2",)]
    assert env.standby_rows(tb) == []


def test_load_rows_and_long_insert_runs_go_through_copy(env: Env) -> None:
    env.ddl("CREATE TABLE big (id int PRIMARY KEY, txt text, n numeric)")
    table = env.table("big")
    tricky = ["plain", "tab\there", "new\nline", "back\\slash", "\\N", "", "✓ é", "\r\n"]
    load = tuple((str(i), tricky[i % len(tricky)] if i % 7 else None, f"{i}.5") for i in range(5000))
    run = [ins(table, (str(i), f"v{i}", None)) for i in range(5000, 5300)]
    target = env.target(copy_threshold=100)
    loop = ApplyLoop(target)
    loop.apply([env.txn(LoadRows(table, load)), env.txn(ins(table, ("9999", "x", "1")), *run)])
    expected = sorted([*load, ("9999", "x", "1"), *(c.after for c in run)], key=lambda r: int(r[0]))
    assert env.standby_rows(table, order="big.id") == expected


def test_hodr_messages_are_recorded_as_markers_others_ignored(env: Env) -> None:
    loop = ApplyLoop(env.target())
    loop.apply([env.txn(Message("hodr", b"epoch-end 1"), Message("app", b"hello"))])
    rows = env.std.execute("SELECT prefix, content FROM hodr.markers").fetchall()
    assert rows == [("hodr", b"epoch-end 1")]


# --- exactly once ----------------------------------------------------------------------------
def audit_table(env: Env) -> Table:
    env.ddl("CREATE TABLE audit (xid int, note text)")
    return env.table("audit")


def audit_counts(env: Env) -> dict[int, int]:
    rows = env.std.execute("SELECT xid, count(*) FROM audit GROUP BY xid ORDER BY xid").fetchall()
    return dict(rows)


def test_the_same_batch_twice_applies_once(env: Env) -> None:
    table = audit_table(env)
    batch = [env.txn(ins(table, (str(x), f"txn {x}"))) for x in range(1, 6)]
    batch += env.big_txn([[ins(table, ("6", f"part {p}"))] for p in range(3)])
    loop = ApplyLoop(env.target())
    assert loop.apply(batch) == batch[-1].commit
    assert loop.apply(batch) is None
    assert ApplyLoop(env.target(), max_txns=2).apply_stream(iter(batch)) == batch[-1].commit
    assert audit_counts(env) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 3}
    assert env.applied() == batch[-1].commit


def test_backend_killed_mid_batch_commits_nothing_and_the_retry_applies_once(env: Env) -> None:
    table = audit_table(env)
    small = [env.txn(ins(table, (str(x), "small"))) for x in range(1, 4)]
    big = env.big_txn([[ins(table, ("9", f"part {p}"))] for p in range(3)])
    target = env.target(application_name="hodr-apply-killed")

    def source(kill: bool) -> Iterator[Transaction]:
        yield from small
        yield big[0]
        if kill:  # part 0 and the small ones were sent inside the open target transaction
            sent = env.std.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hodr-apply-killed' "
                "AND state = 'idle in transaction'"
            ).fetchone()[0]
            assert sent == 1
            killed = env.std.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE application_name = 'hodr-apply-killed'"
            ).fetchall()
            assert killed == [(True,)]
        yield from big[1:]

    loop = ApplyLoop(target)
    with pytest.raises(RetryableApplyError) as err:
        loop.apply_stream(source(kill=True))
    assert "\n" not in str(err.value)
    assert audit_counts(env) == {}
    assert env.applied() == ZERO
    assert loop.apply_stream(source(kill=False)) == big[-1].commit  # reconnects by itself
    assert audit_counts(env) == {1: 1, 2: 1, 3: 1, 9: 3}


# --- fail closed -----------------------------------------------------------------------------
def test_unknown_table_is_a_schema_mismatch(env: Env) -> None:
    env.src.execute("CREATE TABLE only_on_source (id int PRIMARY KEY)")
    table = env.table("only_on_source")
    with pytest.raises(SchemaMismatch) as err:
        ApplyLoop(env.target()).apply([env.txn(ins(table, ("1",)))])
    assert str(err.value) == (
        "target schema mismatch: table public.only_on_source does not exist on the standby"
    )


def test_missing_column_is_a_schema_mismatch_and_nothing_is_applied(env: Env) -> None:
    env.ddl("CREATE TABLE ok (id int PRIMARY KEY)")
    env.src.execute("CREATE TABLE wide (id int PRIMARY KEY, bar text)")
    env.std.execute("CREATE TABLE wide (id int PRIMARY KEY)")
    ok, wide = env.table("ok"), env.table("wide")
    with pytest.raises(SchemaMismatch) as err:
        ApplyLoop(env.target()).apply([env.txn(ins(ok, ("1",))), env.txn(ins(wide, ("1", "x")))])
    assert str(err.value) == "target schema mismatch: table public.wide column bar missing"
    assert env.std.execute("SELECT count(*) FROM ok").fetchone()[0] == 0
    assert env.applied() == ZERO


def test_update_of_a_missing_row_fails_closed_naming_table_and_key(env: Env) -> None:
    env.ddl("CREATE TABLE acc (id int PRIMARY KEY, v text)")
    table = env.table("acc")
    loop = ApplyLoop(env.target())
    loop.apply([env.txn(ins(table, ("1", "a")), ins(table, ("3", "c")))])
    before = env.applied()
    # three UPDATEs in one executemany; the middle one has no row on the standby
    batch = [env.txn(ins(table, ("7", "new"))), env.txn(*(upd(table, (k, "x")) for k in ("1", "2", "3")))]
    with pytest.raises(HodrFatal) as err:
        loop.apply(batch)
    assert str(err.value) == "standby diverged: UPDATE matched no row: public.acc key (id='2')"
    assert env.standby_rows(table) == [("1", "a"), ("3", "c")]
    assert env.applied() == before
    with pytest.raises(HodrFatal, match=r"DELETE matched no row: public.acc key \(id='9'\)"):
        loop.apply([env.txn(dele(table, ("9", None)))])


def test_constraint_and_data_errors_name_the_table_and_key(env: Env) -> None:
    env.ddl("CREATE TABLE acc (id int PRIMARY KEY, n numeric)")
    table = env.table("acc")
    loop = ApplyLoop(env.target())
    with pytest.raises(HodrFatal) as err:
        loop.apply([env.txn(ins(table, ("1", "1")), ins(table, ("2", "2")), ins(table, ("1", "3")))])
    text = str(err.value)
    assert text.startswith("apply failed at public.acc key (id='1'): duplicate key value")
    assert "[23505]" in text and "\n" not in text
    with pytest.raises(HodrFatal, match=r"public.acc key \(id='5'\): invalid input syntax for type numeric"):
        loop.apply([env.txn(ins(table, ("4", "4")), upd(table, ("5", "abc")))])
    with pytest.raises(HodrFatal, match=r"LOAD on public.acc \(COPY acc, line 2, column n: \"x\"\)"):
        loop.apply([env.txn(LoadRows(table, (("7", "7"), ("8", "x"))))])
    assert env.standby_rows(table) == []


# --- the standby is read-only for applications ------------------------------------------------
def test_applications_cannot_write_while_hodr_can(env: Env) -> None:
    env.ddl("CREATE TABLE acc (id int PRIMARY KEY)")
    table = env.table("acc")
    prepare_standby(env.dsn)
    prepare_standby(env.dsn)  # idempotent
    with psycopg.connect(env.dsn, autocommit=True) as app:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            app.execute("INSERT INTO acc VALUES (100)")
    ApplyLoop(env.target()).apply([env.txn(ins(table, ("1",)))])
    assert env.standby_rows(table) == [("1",)]
    release_standby(env.dsn)
    with psycopg.connect(env.dsn, autocommit=True) as app:
        app.execute("INSERT INTO acc VALUES (100)")


# --- the row map -----------------------------------------------------------------------------
def seq_scans(tx_conn: psycopg.Connection[Any], table: str) -> int:
    """Sequential scans of *table* in the current transaction of that connection."""
    row = tx_conn.execute(
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = %s", [table]
    ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("rowmap", [False, True], ids=["by-value", "rowmap"])
def test_rowmap_turns_the_value_search_into_a_fetch(env: Env, rowmap: bool) -> None:
    env.ddl("CREATE TABLE k (a int, v text)")
    env.src.execute("ALTER TABLE k REPLICA IDENTITY FULL")
    table = env.table("k")
    target = env.target(rowmap=rowmap)
    rows = [(str(i), f"v{i}") for i in range(50)]
    with target.transaction() as tx:
        tx.apply([ins(table, r) for r in rows])  # RETURNING ctid fills the map after the sync
        tx.apply([upd(table, (r[0], "new"), before=r) for r in rows[:10]])
        tx.apply([dele(table, r) for r in rows[10:20]])
        scans = seq_scans(tx.conn, "k")
    assert scans == (0 if rowmap else 20)
    expected = sorted([(r[0], "new") for r in rows[:10]] + rows[20:], key=lambda r: int(r[0]))
    assert env.standby_rows(table, order="k.a") == expected
    if rowmap:
        assert target.rowmap is not None and target.rowmap.taken == 20


def test_rowmap_stays_correct_after_vacuum_full_moves_rows(env: Env) -> None:
    env.ddl("CREATE TABLE k (a int, v text)")
    env.src.execute("ALTER TABLE k REPLICA IDENTITY FULL")
    table = env.table("k")
    target = env.target(rowmap=True)
    loop = ApplyLoop(target)
    row = {i: (str(i), f"v{i}") for i in range(1, 16)}
    loop.apply([env.txn(*(ins(table, row[i]) for i in range(1, 11)))])
    loop.apply([env.txn(*(dele(table, row[i]) for i in range(1, 6)))])
    (ctid6,) = env.std.execute("SELECT ctid::text FROM k WHERE a = 6").fetchone()
    env.std.execute("VACUUM FULL k")  # rows 6..10 move to the front of the table
    loop.apply([env.txn(*(ins(table, row[i]) for i in range(11, 16)))])
    (now_there,) = env.std.execute("SELECT a FROM k WHERE ctid = %s::tid", [ctid6]).fetchone()
    assert now_there == 11, "the map's ctid for row 6 must now hold another row"
    assert target.rowmap is not None
    taken = target.rowmap.taken
    loop.apply([env.txn(upd(table, ("6", "changed"), before=row[6]), dele(table, row[7]))])
    assert target.rowmap.taken == taken + 2  # stale candidates were offered and rejected
    expected = [("6", "changed"), *(row[i] for i in range(8, 16))]
    assert env.standby_rows(table, order="k.a") == expected


# --- streaming a big transaction -------------------------------------------------------------
def test_stream_applies_a_multi_part_transaction_with_small_ones_around_it(env: Env) -> None:
    table = audit_table(env)
    stream: list[Transaction | None] = [env.txn(ins(table, ("1", "a")))]
    stream += env.big_txn([[ins(table, ("2", f"p{p}.{i}")) for i in range(100)] for p in range(5)])
    stream += [None, env.txn(ins(table, ("3", "c")))]
    reported: list[LogPosition] = []
    ApplyLoop(env.target(), max_changes=50).apply_stream(iter(stream), reported.append)
    assert reported == [stream[-3].commit, stream[-1].commit]  # type: ignore[union-attr]
    assert audit_counts(env) == {1: 1, 2: 500, 3: 1}

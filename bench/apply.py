"""Apply benchmark: hodr's standby-side apply against a simpler peer measured in the same run.

    python bench/apply.py [--txns 20000] [--keyless-rows 20000] [--keyless-updates 1000] [--json]

Two measurements, each on a fresh database of a standby server started for the run (a second,
source server only describes the tables the way capture does: type names from ``format_type``,
key flags from the replica identity):

* ``grouped``: a TPC-B-like workload (per source transaction: UPDATE of ``acc`` -- 100,000 rows
  --, ``tel`` and ``bra``, INSERT into ``his``; new rows as pgoutput sends them).  The peer is
  the naive applier, one ``execute`` (one round trip) per row and one commit per source
  transaction, on the first TXNS transactions; hodr's ``ApplyLoop(...).apply_stream`` (grouped
  commits, pipelined prepared statements) applies the next TXNS.  Check: ``his`` holds 2 x TXNS
  rows and ``hodr.applied`` is the last commit position.
* ``keyless``: a table without key (REPLICA IDENTITY FULL) of KEYLESS_ROWS rows, inserted
  through INSERT statements (not COPY: the row map learns ctids from RETURNING), then
  KEYLESS_UPDATES UPDATEs of random rows in one source transaction each.  The peer finds each
  row by value (hodr without the row map, ``PostgresTarget(rowmap=False)``); hodr with the row
  map fetches it by ctid.  Check: exactly KEYLESS_UPDATES rows changed and KEYLESS_ROWS rows
  left, for both.

Rates are rows applied per second (wall clock, one connection, one thread); the ratio is the
peer's time over hodr's, so above 1 means hodr is faster.  No numeric gate: the exit status is 0
only when every correctness check holds.  The servers live in a fresh directory under /tmp and
are destroyed on exit, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from hodr.errors import HodrError  # noqa: E402
from hodr.pginstance import PgInstance, make_base_dir  # noqa: E402
from hodr.position import LogPosition  # noqa: E402
from hodr.redo.records import Change, Column, Op, Row, RowChange, Table  # noqa: E402
from hodr.replicate.apply import ApplyLoop  # noqa: E402
from hodr.replicate.apply.postgres import PostgresTarget  # noqa: E402
from hodr.replicate.transaction import Transaction  # noqa: E402


class BenchError(Exception):
    """A step or a correctness check of the benchmark failed; the message says which."""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- one database on the source (descriptions) and on the standby (apply) ---------------------
class Pair:
    """The same database on both servers, the table descriptions and the source positions."""

    def __init__(self, source: PgInstance, standby: PgInstance, dbname: str) -> None:
        for inst in (source, standby):
            inst.psql(f'CREATE DATABASE "{dbname}"')
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

    def txn(self, *changes: Change) -> Transaction:
        """A one-part source transaction with the next commit position."""
        n = next(self._positions)
        return Transaction(n, LogPosition(1, n * 100), LogPosition(1, n * 100 + 50), 0, tuple(changes))

    def count(self, sql: str) -> int:
        return int(self.std.execute(sql).fetchone()[0])

    def close(self) -> None:
        for target in self.targets:
            target.close()
        self.src.close()
        self.std.close()


def ins(table: Table, row: Row) -> RowChange:
    return RowChange(Op.INSERT, table, None, row)


def upd(table: Table, after: Row, before: Row | None = None) -> RowChange:
    return RowChange(Op.UPDATE, table, before, after)


def check(what: str, got: int, want: int, failures: list[str]) -> None:
    if got != want:
        failures.append(f"{what}: {got:,}, expected {want:,}")


def rate(rows: int, seconds: float) -> dict[str, float]:
    return {"seconds": seconds, "rows_s": rows / seconds if seconds > 0 else 0.0}


# --- (a) grouped apply vs one execute per row --------------------------------------------------
def pgbench_tables(pair: Pair) -> tuple[Table, Table, Table, Table]:
    pair.ddl(
        "CREATE TABLE acc (aid int PRIMARY KEY, bid int, abalance int, filler char(84));"
        "CREATE TABLE tel (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));"
        "CREATE TABLE bra (bid int PRIMARY KEY, bbalance int, filler char(88));"
        "CREATE TABLE his (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))"
    )
    pair.std.execute(
        "INSERT INTO acc SELECT g, 1, 0, '' FROM generate_series(1, 100000) g;"
        "INSERT INTO tel SELECT g, 1, 0, '' FROM generate_series(1, 10) g;"
        "INSERT INTO bra VALUES (1, 0, '')"
    )
    pair.std.execute("VACUUM ANALYZE")
    return pair.table("acc"), pair.table("tel"), pair.table("bra"), pair.table("his")


def pgbench_workload(pair: Pair, tables: tuple[Table, Table, Table, Table], n: int) -> list[Transaction]:
    """TPC-B-like source transactions: 3 UPDATE + 1 INSERT, new rows as pgoutput sends them."""
    acc, tel, bra, his = tables
    rng = random.Random(42)
    f84, f88, f22 = " " * 84, " " * 88, " " * 22
    out = []
    for _ in range(n):
        aid, tid, delta = str(rng.randint(1, 100000)), str(rng.randint(1, 10)), str(rng.randint(-5000, 5000))
        out.append(
            pair.txn(
                upd(acc, (aid, "1", delta, f84)),
                upd(tel, (tid, "1", delta, f84)),
                upd(bra, ("1", delta, f88)),
                ins(his, (tid, "1", aid, delta, "2024-01-01 00:00:00", f22)),
            )
        )
    return out


def apply_one_execute_per_row(dsn: str, txns: Sequence[Transaction]) -> float:
    """The naive applier: one execute (and round trip) per row, one commit per source txn."""
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        cur = conn.cursor()
        for txn in txns:
            for change in txn.changes:
                assert isinstance(change, RowChange) and change.after is not None
                names = [c.name for c in change.table.columns]
                if change.op is Op.INSERT:
                    marks = ", ".join(["%s"] * len(names))
                    cur.execute(f"INSERT INTO {change.table.name} VALUES ({marks})", change.after)
                else:
                    sets = ", ".join(f"{n} = %s" for n in names[1:])
                    sql = f"UPDATE {change.table.name} SET {sets} WHERE {names[0]} = %s"
                    cur.execute(sql, (*change.after[1:], change.after[0]))
                    if cur.rowcount != 1:
                        raise BenchError(f"one execute per row: {sql} updated {cur.rowcount} rows, not 1")
            conn.commit()
    return time.perf_counter() - started


def bench_grouped(source: PgInstance, standby: PgInstance, txns: int) -> dict[str, Any]:
    pair = Pair(source, standby, "grouped")
    try:
        tables = pgbench_tables(pair)
        workload = pgbench_workload(pair, tables, txns * 2)
        naive_part, hodr_part = workload[:txns], workload[txns:]
        rows = 4 * txns
        say(f"apply: grouped: one execute per row, {txns:,} txns")
        naive_s = apply_one_execute_per_row(pair.dsn, naive_part)
        target = pair.target()
        target.setup()
        say(f"apply: grouped: hodr ApplyLoop.apply_stream, {txns:,} txns")
        started = time.perf_counter()
        ApplyLoop(target).apply_stream(iter(hodr_part))
        hodr_s = time.perf_counter() - started
        failures: list[str] = []
        check("rows in his", pair.count("SELECT count(*) FROM his"), 2 * txns, failures)
        applied = LogPosition(*pair.std.execute("SELECT epoch, lsn, seq FROM hodr.applied").fetchone())
        if applied != workload[-1].commit:
            failures.append(f"hodr.applied is {applied}, expected {workload[-1].commit}")
    finally:
        pair.close()
    return {
        "rows": rows,
        "peer": {"method": "one execute per row", **rate(rows, naive_s)},
        "hodr": {"method": "hodr grouped apply", **rate(rows, hodr_s)},
        "ratio": naive_s / hodr_s,
        "ok": not failures,
        "failures": failures,
    }


# --- (b) keyless UPDATEs: by value vs the row map ----------------------------------------------
def bench_keyless(source: PgInstance, standby: PgInstance, n: int, m: int) -> dict[str, Any]:
    pair = Pair(source, standby, "keyless")
    seconds: dict[bool, float] = {}
    failures: list[str] = []
    try:
        pair.ddl("CREATE TABLE k (a int, v text, pad text)")
        pair.src.execute("ALTER TABLE k REPLICA IDENTITY FULL")
        table = pair.table("k")
        for rowmap in (False, True):
            label = "rowmap" if rowmap else "by value"
            pair.std.execute("TRUNCATE k")
            rows = [(str(i), f"v{i}", "x" * 40) for i in range(n)]
            # INSERT statements, not COPY: the map learns ctids from RETURNING
            loop = ApplyLoop(pair.target(rowmap=rowmap, copy_threshold=n + 1))
            say(f"apply: keyless: {label}, {n:,} rows, {m:,} UPDATEs")
            loop.apply([pair.txn(*(ins(table, r) for r in rows))])
            picked = random.Random(7).sample(rows, m)
            started = time.perf_counter()
            loop.apply([pair.txn(upd(table, (r[0], "new", r[2]), before=r)) for r in picked])
            seconds[rowmap] = time.perf_counter() - started
            check(f"{label}: rows changed", pair.count("SELECT count(*) FROM k WHERE v = 'new'"), m, failures)
            check(f"{label}: rows in k", pair.count("SELECT count(*) FROM k"), n, failures)
    finally:
        pair.close()
    return {
        "rows": m,
        "peer": {"method": "by value", **rate(m, seconds[False])},
        "hodr": {"method": "row map", **rate(m, seconds[True])},
        "ratio": seconds[False] / seconds[True],
        "ok": not failures,
        "failures": failures,
    }


# --- the run ----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    base = make_base_dir(prefix="hodr-bench-apply-")
    made: list[PgInstance] = []
    try:
        say(f"apply: work dir {base}; 2 servers (source describes tables, standby applies)")
        for name in ("source", "standby"):
            inst = PgInstance(base, name)
            made.append(inst)
            inst.init().start()
        source, standby = made
        results = {
            "grouped": bench_grouped(source, standby, args.txns),
            "keyless": bench_keyless(source, standby, args.keyless_rows, args.keyless_updates),
        }
    finally:
        for inst in made:
            inst.destroy()
        shutil.rmtree(base, ignore_errors=True)
    params = {
        "txns": args.txns,
        "keyless_rows": args.keyless_rows,
        "keyless_updates": args.keyless_updates,
        "cpus": os.cpu_count(),
    }
    return {"params": params, "results": results}


def print_table(rep: dict[str, Any]) -> None:
    p, r = rep["params"], rep["results"]
    titles = {
        "grouped": f"pgbench-like, {p['txns']:,} txns",
        "keyless": f"keyless table of {p['keyless_rows']:,} rows",
    }
    print(f"apply on one standby connection ({p['cpus']} CPUs); ratio = peer's time / hodr's")
    print(f"{'workload':<32} {'rows':>7}  {'method':<22} {'seconds':>8} {'rows/s':>9} {'ratio':>6} {'ok':>3}")
    for name, res in r.items():
        ok = "yes" if res["ok"] else "NO"
        peer, hodr = res["peer"], res["hodr"]
        print(
            f"{titles[name]:<32} {res['rows']:>7,}  {peer['method']:<22} {peer['seconds']:>8.2f} "
            f"{peer['rows_s']:>9,.0f} {1.0:>5.1f}x {ok:>3}"
        )
        print(
            f"{'':<32} {'':>7}  {hodr['method']:<22} {hodr['seconds']:>8.2f} "
            f"{hodr['rows_s']:>9,.0f} {res['ratio']:>5.1f}x {ok:>3}"
        )
        for failure in res["failures"]:
            print(f"  {name}: WRONG: {failure}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--txns", type=int, default=20000, help="source txns per method, grouped (default 20000)")
    ap.add_argument(
        "--keyless-rows", type=int, default=20000, help="rows in the keyless table (default 20000)"
    )
    ap.add_argument(
        "--keyless-updates", type=int, default=1000, help="UPDATEs per method, keyless (default 1000)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.txns < 1 or args.keyless_rows < 1 or not 1 <= args.keyless_updates <= args.keyless_rows:
        ap.error("sizes must be positive, --keyless-updates at most --keyless-rows")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. from `timeout`) must still run the cleanup: the servers go.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        rep = run(args)
    except (BenchError, HodrError, psycopg.Error) as exc:
        say(f"apply: {exc}")
        return 1
    except KeyboardInterrupt:
        say("apply: interrupted")
        return 130
    if args.json:
        print(json.dumps(rep))
    else:
        print_table(rep)
    return 0 if all(res["ok"] for res in rep["results"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

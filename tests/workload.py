"""The randomised end-to-end workload: concurrent clients doing every kind of change hodr must
carry (every common type, TOAST updated and left unchanged, streamed big transactions with
rolled-back savepoints, PK updates, deletes, keyless duplicates, truncate, rollbacks), each
committed transaction leaving one row in an audit table keyed by its source xid."""

from __future__ import annotations

import random
import threading
from typing import Any

from tests.harness import DB, Pair

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE t_all (
    id bigint PRIMARY KEY, i2 int2, i4 int4, i8 int8, num numeric(20,6), txt text, vc varchar(50),
    ba bytea, b bool, d date, tm time, ts timestamp, tstz timestamptz, iv interval, js json,
    jb jsonb, u uuid, arr int[], tarr text[], m mood, big text
);
CREATE TABLE t_keyless (a int, b text);
CREATE TABLE t_trunc (id int PRIMARY KEY, v text);
CREATE TABLE audit (xid bigint PRIMARY KEY, worker int, note text);
"""
TABLES = ["t_all", "t_keyless", "t_trunc", "audit"]

INSERT_ALL = """INSERT INTO t_all VALUES (%(id)s, %(i2)s, %(i4)s, %(i8)s, %(num)s, %(txt)s, %(vc)s, %(ba)s,
 %(b)s, %(d)s, %(tm)s, %(ts)s, %(tstz)s, %(iv)s, %(js)s, %(jb)s, %(u)s, %(arr)s, %(tarr)s, %(m)s, %(big)s)"""


def random_row(rng: random.Random, rid: int) -> dict[str, Any]:
    import datetime as dt
    import json
    import uuid

    nul = rng.random() < 0.1
    return {
        "id": rid,
        "i2": rng.randint(-32768, 32767),
        "i4": None if nul else rng.randint(-(2**31), 2**31 - 1),
        "i8": rng.randint(-(2**63), 2**63 - 1),
        "num": f"{rng.randint(-(10**12), 10**12)}.{rng.randint(0, 999999):06d}",
        "txt": rng.choice(["", "plain", "quote ' and \\ backslash", "tab\tnew\nline", "ünïcødé ✓", None]),
        "vc": "v" * rng.randint(0, 50),
        "ba": bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))),
        "b": rng.choice([True, False, None]),
        "d": dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(0, 9000)),
        "tm": dt.time(rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999)),
        "ts": dt.datetime(2020, 1, 1)
        + dt.timedelta(seconds=rng.randint(0, 10**8), microseconds=rng.randint(0, 10**6 - 1)),
        "tstz": dt.datetime(2021, 5, 5, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randint(0, 10**8)),
        "iv": dt.timedelta(days=rng.randint(-100, 100), seconds=rng.randint(0, 86399)),
        "js": json.dumps({"k": rng.randint(0, 9), "s": "x y"}),
        "jb": json.dumps({"a": [1, 2, {"b": None}]}),
        "u": uuid.UUID(int=rng.getrandbits(128)),
        "arr": [rng.randint(-5, 5) for _ in range(rng.randint(0, 4))],
        "tarr": ["a", "b,c", 'q"t', None][: rng.randint(0, 4)],
        "m": rng.choice(["sad", "ok", "happy", None]),
        # a TOASTed value (compressible text beyond 2 kB is stored out of line, uncompressed here)
        "big": None if nul else "".join(rng.choice("abcdefghij") for _ in range(rng.choice([10, 5000]))),
    }


def worker(pair: Pair, w: int, txns: int, seed: int, errors: list[BaseException], base: int = 0) -> None:
    """One client doing random transactions in its own key range (no cross-worker conflicts)."""
    rng = random.Random(seed)
    base = base or (w + 1) * 10_000_000
    ids: list[int] = []
    next_id = base
    try:
        with pair.primary.connect(DB, autocommit=False) as conn:
            for n in range(txns):
                kind = rng.random()
                cur = conn.cursor()
                if kind < 0.04:  # a large transaction: streamed before its commit (64kB work mem)
                    rows = [random_row(rng, next_id + i) for i in range(1500)]
                    cur.executemany(INSERT_ALL, rows)
                    if rng.random() < 0.3:
                        conn.rollback()
                        continue
                    ids += [r["id"] for r in rows]
                    next_id += 1500
                    if rng.random() < 0.5:  # a rolled-back savepoint inside the big one
                        cur.execute("SAVEPOINT s")
                        cur.execute("DELETE FROM t_all WHERE id = %s", (ids[0],))
                        cur.execute("ROLLBACK TO SAVEPOINT s")
                else:
                    for _ in range(rng.randint(1, 6)):
                        op = rng.random()
                        if op < 0.35 or len(ids) < 5:
                            cur.execute(INSERT_ALL, random_row(rng, next_id))
                            ids.append(next_id)
                            next_id += 1
                        elif op < 0.55:  # update some columns, leave the TOASTed one unchanged
                            cur.execute(
                                "UPDATE t_all SET i4 = %s, txt = %s WHERE id = %s",
                                (rng.randint(0, 100), "upd", rng.choice(ids)),
                            )
                        elif op < 0.62:  # update the TOASTed value itself
                            cur.execute(
                                "UPDATE t_all SET big = %s WHERE id = %s", ("Z" * 6000, rng.choice(ids))
                            )
                        elif op < 0.68:  # primary-key update
                            old = rng.choice(ids)
                            cur.execute("UPDATE t_all SET id = %s WHERE id = %s", (next_id, old))
                            ids[ids.index(old)] = next_id
                            next_id += 1
                        elif op < 0.78:
                            victim = ids.pop(rng.randrange(len(ids)))
                            cur.execute("DELETE FROM t_all WHERE id = %s", (victim,))
                        elif op < 0.86:  # keyless: duplicates, delete exactly one of them
                            v = rng.randint(0, 3)
                            cur.execute(
                                "INSERT INTO t_keyless VALUES (%s, %s), (%s, %s)", (w, f"k{v}", w, f"k{v}")
                            )
                            cur.execute(
                                "DELETE FROM t_keyless WHERE ctid = (SELECT ctid FROM t_keyless "
                                "WHERE a = %s AND b = %s LIMIT 1)",
                                (w, f"k{v}"),
                            )
                        elif op < 0.90:
                            cur.execute(
                                "UPDATE t_keyless SET b = b || '+' WHERE a = %s AND b = %s",
                                (w, f"k{rng.randint(0, 3)}"),
                            )
                        elif op < 0.95:  # a rolled-back savepoint
                            cur.execute("SAVEPOINT sp")
                            cur.execute(INSERT_ALL, random_row(rng, next_id + 5_000_000))
                            cur.execute("UPDATE t_all SET i2 = 0 WHERE id = %s", (rng.choice(ids),))
                            cur.execute("ROLLBACK TO SAVEPOINT sp")
                        elif w == 0:
                            cur.execute(
                                "INSERT INTO t_trunc VALUES (%s, 'x') ON CONFLICT DO NOTHING",
                                (rng.randint(0, 50),),
                            )
                            if rng.random() < 0.2:
                                cur.execute("TRUNCATE t_trunc")
                    if rng.random() < 0.1:
                        conn.rollback()
                        continue
                cur.execute("INSERT INTO audit VALUES (txid_current(), %s, %s)", (w, f"txn {n}"))
                conn.commit()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def run_workload(pair: Pair, workers: int, txns: int, seed: int) -> None:
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=worker, args=(pair, w, txns, seed * 100 + w, errors)) for w in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, f"workload failed: {errors[0]!r}"

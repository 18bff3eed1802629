"""Optional row map for keyless tables: full old row -> target physical addresses (ctids).

Why only for keyless tables (pg-notes §9.4): with a key, finding a row by ctid is no faster than
by the key's index and costs HOT updates plus a map refresh per update.  Without a key, every
UPDATE/DELETE has to find its row by comparing values, which is a sequential scan unless the
target has a usable index (PostgreSQL 15's own apply scans the whole table).  The map turns that
scan into a fetch -- a hypothesis measured by the keyless benchmark in the apply tests.

Why a map can never make apply wrong: a ctid is only a *hint*.  Every UPDATE gives the row a new
ctid, VACUUM FULL / CLUSTER / table rewrites move every row, and a rolled-back target transaction
leaves ctids of rows that never existed.  So the statement built by :func:`locate_sql` re-checks
that the row at the remembered ctid still carries every expected value and falls back to the
value search in the same statement when it does not.  Rows with identical values are
interchangeable for replication (deleting either of two equal rows gives the same table), so a
verified hit on any equal row is correct.

The map is keyed by ``hash()`` of the full old row (text values as the source sends them); hash
collisions only cost a failed verification.  It is refreshed from ``RETURNING ctid`` of the
statements the applier runs (INSERT and UPDATE); rows loaded by COPY are found by value the first
time.  Memory is bounded by ``max_rows``.  No driver is needed here: the adapter runs the SQL.
"""

from __future__ import annotations

from collections.abc import Hashable

from hodr.redo.records import UNCHANGED, Row

__all__ = ["RowMap", "locate_sql"]


class RowMap:
    """Full old row -> list of candidate ctids, per table.  Not thread-safe (one applier)."""

    def __init__(self, max_rows: int = 1_000_000) -> None:
        self.max_rows = max_rows
        self._tables: dict[Hashable, dict[int, list[str]]] = {}
        self._size = 0
        self.taken = 0  # lookups that produced a candidate
        self.missed = 0  # lookups without a candidate (the value search does the work)

    def __len__(self) -> int:
        return self._size

    def take(self, table: Hashable, row: Row) -> str | None:
        """Remove and return one remembered ctid for *row*, or None.

        Removing at once is right whatever happens next: on a hit the row moves (UPDATE) or goes
        away (DELETE), on a miss the ctid is stale; either way it must not be offered again.
        """
        if UNCHANGED in row:
            self.missed += 1
            return None
        rows = self._tables.get(table)
        key = hash(row)
        bucket = rows.get(key) if rows is not None else None
        if rows is None or not bucket:
            self.missed += 1
            return None
        ctid = bucket.pop()
        self._size -= 1
        if not bucket:
            del rows[key]
        self.taken += 1
        return ctid

    def put(self, table: Hashable, row: Row, ctid: str) -> None:
        """Remember that *row* (all values known) is stored at *ctid*."""
        if UNCHANGED in row:
            return
        rows = self._tables.setdefault(table, {})
        if self._size >= self.max_rows and not self._evict(rows):
            return
        rows.setdefault(hash(row), []).append(ctid)
        self._size += 1

    def forget(self, table: Hashable) -> None:
        """Drop everything about *table* (TRUNCATE, new table metadata)."""
        rows = self._tables.pop(table, None)
        if rows:
            self._size -= sum(len(b) for b in rows.values())

    def clear(self) -> None:
        """Drop everything (after a rollback: ctids of that transaction never existed)."""
        self._tables.clear()
        self._size = 0

    def _evict(self, rows: dict[int, list[str]]) -> bool:
        """Make room by dropping the oldest bucket of the same table; False if it has none."""
        if not rows:
            return False
        oldest = next(iter(rows))
        self._size -= len(rows.pop(oldest))
        return True


def locate_sql(relation: str, match: str, ctid_param: str | None = None) -> str:
    """A WHERE condition that selects exactly one row of *relation* satisfying *match*.

    *relation* is the quoted table name, *match* a condition on its columns (all expected old
    values).  ``(tableoid, ctid)`` rather than ``ctid`` alone because ctids repeat across the
    partitions of a partitioned table.  With *ctid_param* (a placeholder such as ``$7``, NULL when
    the map has no candidate) the remembered ctid is tried first and verified against *match*;
    the value search runs only when that finds nothing (``UNION ALL`` under ``LIMIT 1`` stops
    pulling after the first row, and PostgreSQL never plans data-modifying statements in
    parallel, so the order holds).
    """
    by_value = f"SELECT tableoid, ctid FROM {relation} WHERE {match} LIMIT 1"
    if ctid_param is None:
        found = by_value
    else:
        by_ctid = f"SELECT tableoid, ctid FROM {relation} WHERE ctid = {ctid_param} AND {match} LIMIT 1"
        found = f"SELECT tableoid, ctid FROM (({by_ctid}) UNION ALL ({by_value})) AS hodr_found LIMIT 1"
    return f"(tableoid, ctid) = ({found})"

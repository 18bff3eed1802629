"""ApplyLoop against a fake Target at hodr's own port: grouping, exactly-once, never splitting;
plus the pure parts of the row map."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from hodr.errors import HodrFatal
from hodr.position import ZERO, LogPosition
from hodr.redo.records import UNCHANGED, Change, Message
from hodr.replicate.apply import ApplyLoop
from hodr.replicate.rowmap import RowMap, locate_sql
from hodr.replicate.transaction import Transaction


class Boom(Exception):
    """A crash injected into the target in the middle of a target transaction."""


class FakeTxn:
    def __init__(self, target: FakeTarget) -> None:
        self.target = target
        self.position = target.position
        self.changes: list[Change] = []

    def applied_position(self) -> LogPosition:
        return self.position

    def apply(self, changes: Sequence[Change]) -> None:
        self.target.apply_calls += 1
        if self.target.fail_on_call == self.target.apply_calls:
            raise Boom(f"crash in apply call {self.target.apply_calls}")
        self.target.events.append(("apply", len(changes)))
        self.changes.extend(changes)

    def record_applied(self, position: LogPosition) -> None:
        self.position = position


class FakeTarget:
    """Commits (changes, position) atomically; an exception discards the whole transaction."""

    def __init__(self, position: LogPosition = ZERO) -> None:
        self.position = position
        self.applied: list[Change] = []
        self.commits: list[list[Change]] = []
        self.events: list[tuple[str, object]] = []
        self.apply_calls = 0
        self.fail_on_call: int | None = None

    @contextmanager
    def transaction(self) -> Iterator[FakeTxn]:
        tx = FakeTxn(self)
        yield tx
        self.position = tx.position
        self.applied.extend(tx.changes)
        self.commits.append(tx.changes)
        self.events.append(("commit", tx.position))


def pos(n: int) -> LogPosition:
    return LogPosition(1, 1000 + n)


def change(xid: int, i: int) -> Message:
    return Message("test", f"{xid}:{i}".encode())


def txn(xid: int, n_changes: int = 2) -> Transaction:
    """A one-part transaction committed at pos(xid)."""
    return Transaction(xid, pos(xid), pos(xid), 0, tuple(change(xid, i) for i in range(n_changes)))


def parts(xid: int, n_parts: int, per_part: int = 3) -> list[Transaction]:
    """A multi-part transaction committed at pos(xid)."""
    return [
        Transaction(
            xid,
            pos(xid),
            pos(xid),
            0,
            tuple(change(xid, p * per_part + i) for i in range(per_part)),
            part=p,
            final=p == n_parts - 1,
        )
        for p in range(n_parts)
    ]


def all_changes(batch: Sequence[Transaction]) -> list[Change]:
    return [c for t in batch for c in t.changes]


# --- apply(batch) ----------------------------------------------------------------------------
def test_batch_is_one_target_transaction_recording_the_last_commit() -> None:
    target = FakeTarget()
    batch = [txn(1), txn(2), txn(3)]
    assert ApplyLoop(target).apply(batch) == pos(3)
    assert len(target.commits) == 1
    assert target.applied == all_changes(batch)
    assert target.position == pos(3)


def test_already_applied_transactions_are_skipped() -> None:
    target = FakeTarget(position=pos(2))
    batch = [txn(1), txn(2), txn(3), txn(4)]
    assert ApplyLoop(target).apply(batch) == pos(4)
    assert target.applied == all_changes(batch[2:])


def test_replay_of_an_applied_batch_is_a_no_op() -> None:
    target = FakeTarget()
    loop = ApplyLoop(target)
    batch = [txn(1), *parts(2, 3), txn(3)]
    assert loop.apply(batch) == pos(3)
    assert loop.apply(batch) is None
    assert target.applied == all_changes(batch)
    assert target.position == pos(3)


def test_batch_must_end_at_a_transaction_end() -> None:
    target = FakeTarget()
    with pytest.raises(ValueError, match="never split"):
        ApplyLoop(target).apply([txn(1), *parts(2, 3)[:2]])
    assert target.commits == []


def test_crash_mid_batch_records_nothing_and_the_retry_applies_once() -> None:
    target = FakeTarget()
    loop = ApplyLoop(target)
    batch = [txn(1), txn(2), *parts(3, 2), txn(4)]
    target.fail_on_call = 3  # calls: xids 1+2 (buffered), part 0 of xid 3, part 1 of xid 3
    with pytest.raises(Boom):
        loop.apply(batch)
    assert target.position == ZERO
    assert target.applied == []
    target.fail_on_call = None
    assert loop.apply(batch) == pos(4)
    assert target.applied == all_changes(batch)
    assert loop.apply(batch) is None
    assert target.applied == all_changes(batch)


def test_broken_part_sequence_fails_closed() -> None:
    target = FakeTarget()
    first, _second, third = parts(7, 3)
    with pytest.raises(HodrFatal, match="xid 7"):
        ApplyLoop(target).apply([first, third])
    with pytest.raises(HodrFatal, match="out of commit order"):
        ApplyLoop(target).apply([txn(2), txn(1)])
    assert target.commits == []


# --- apply_stream ----------------------------------------------------------------------------
def test_stream_groups_small_transactions_up_to_max_txns() -> None:
    target = FakeTarget()
    reported: list[LogPosition] = []
    source = [txn(x) for x in range(1, 11)]
    last = ApplyLoop(target, max_txns=3).apply_stream(iter(source), reported.append)
    assert [len(c) for c in target.commits] == [6, 6, 6, 2]
    assert reported == [pos(3), pos(6), pos(9), pos(10)]
    assert last == pos(10)
    assert target.applied == all_changes(source)


def test_stream_groups_up_to_max_changes_at_transaction_ends() -> None:
    target = FakeTarget()
    source = [txn(x, n_changes=4) for x in range(1, 6)]
    ApplyLoop(target, max_txns=100, max_changes=10).apply_stream(iter(source))
    # 4+4 < 10, 4+4+4 >= 10: the group closes after the third transaction, never inside one
    assert [len(c) for c in target.commits] == [12, 8]


def test_stream_applies_a_big_transaction_part_by_part_in_one_target_transaction() -> None:
    target = FakeTarget()
    big = parts(2, 5, per_part=3)
    pulled: list[int] = []

    def source() -> Iterator[Transaction]:
        for t in [txn(1), *big, txn(3)]:
            pulled.append(t.part)
            target.events.append(("pulled", (t.xid, t.part)))
            yield t

    ApplyLoop(target, max_txns=100, max_changes=4).apply_stream(source())
    # xid 1 (2 changes) + xid 2 (15 changes) share one commit: the limit is checked only at a
    # transaction end; xid 3 starts a new group.
    assert [len(c) for c in target.commits] == [17, 2]
    assert target.position == pos(3)
    # Small transactions are buffered (xid 1 goes to the target with the first big part), the
    # big one is streamed: each part is applied before the next one is pulled.
    events = [e for e in target.events if e[0] in ("pulled", "apply")]
    assert events[:3] == [("pulled", (1, 0)), ("pulled", (2, 0)), ("apply", 2)]
    assert events[3:12] == [("apply", 3)] + [
        e for p in range(1, 5) for e in (("pulled", (2, p)), ("apply", 3))
    ]


def test_idle_hint_commits_the_open_group_at_once() -> None:
    target = FakeTarget()
    reported: list[LogPosition] = []
    ApplyLoop(target, max_txns=100).apply_stream(iter([txn(1), txn(2), None, txn(3)]), reported.append)
    assert reported == [pos(2), pos(3)]
    assert [len(c) for c in target.commits] == [4, 2]


def test_idle_hint_inside_a_big_transaction_does_not_split_it() -> None:
    target = FakeTarget()
    first, second = parts(1, 2)
    ApplyLoop(target).apply_stream(iter([first, None, None, second]))
    assert len(target.commits) == 1
    assert target.position == pos(1)


def test_stream_ending_inside_a_transaction_rolls_it_back() -> None:
    target = FakeTarget()
    reported: list[LogPosition] = []
    stream = [txn(1), None, *parts(2, 3)[:2]]
    last = ApplyLoop(target).apply_stream(iter(stream), reported.append)
    assert last == pos(1)
    assert reported == [pos(1)]
    assert target.position == pos(1)
    assert target.applied == all_changes([txn(1)])


def test_stream_replay_skips_applied_and_still_reports_them() -> None:
    target = FakeTarget(position=pos(5))
    reported: list[LogPosition] = []
    ApplyLoop(target, max_txns=2).apply_stream(iter([txn(x) for x in range(1, 8)]), reported.append)
    assert reported == [pos(2), pos(4), pos(6), pos(7)]
    assert target.applied == all_changes([txn(6), txn(7)])
    assert target.position == pos(7)


def test_stream_crash_keeps_earlier_groups_and_loses_only_the_open_one() -> None:
    target = FakeTarget()
    source = [txn(x) for x in range(1, 7)]
    target.fail_on_call = 3  # the third group (xids 5, 6): one buffered apply call per group
    loop = ApplyLoop(target, max_txns=2)
    with pytest.raises(Boom):
        loop.apply_stream(iter(source))
    assert target.position == pos(4)
    assert target.applied == all_changes(source[:4])
    target.fail_on_call = None
    loop.apply_stream(iter(source))  # the replay starts from the beginning of the queue
    assert target.applied == all_changes(source)
    assert target.position == pos(6)


# --- RowMap, the apply stage's optional helper for keyless tables ----------------------------
def test_rowmap_hands_out_each_remembered_ctid_once() -> None:
    rows = RowMap()
    dup = ("ann", None, "1")
    rows.put("t", dup, "(0,1)")
    rows.put("t", dup, "(0,2)")
    rows.put("u", dup, "(9,9)")  # another table
    assert len(rows) == 3
    assert {rows.take("t", dup), rows.take("t", dup)} == {"(0,1)", "(0,2)"}
    assert rows.take("t", dup) is None
    assert (rows.taken, rows.missed) == (2, 1)
    assert rows.take("u", dup) == "(9,9)"
    assert len(rows) == 0


def test_rowmap_ignores_rows_with_unknown_values_and_forgets_tables() -> None:
    rows = RowMap()
    rows.put("t", ("1", UNCHANGED), "(0,1)")
    assert len(rows) == 0
    assert rows.take("t", ("1", UNCHANGED)) is None
    rows.put("t", ("1", "a"), "(0,1)")
    rows.put("u", ("1", "a"), "(0,1)")
    rows.forget("t")
    assert rows.take("t", ("1", "a")) is None
    assert len(rows) == 1
    rows.clear()
    assert rows.take("u", ("1", "a")) is None


def test_rowmap_is_bounded_by_dropping_the_oldest_rows_of_the_table() -> None:
    rows = RowMap(max_rows=3)
    for i in range(5):
        rows.put("t", (str(i),), f"(0,{i})")
    assert len(rows) == 3
    assert rows.take("t", ("0",)) is None
    assert rows.take("t", ("4",)) == "(0,4)"


def test_locate_sql_tries_the_remembered_ctid_first_and_falls_back_to_the_values() -> None:
    by_value = locate_sql('"public"."t"', '"a" = $1')
    assert by_value == '(tableoid, ctid) = (SELECT tableoid, ctid FROM "public"."t" WHERE "a" = $1 LIMIT 1)'
    mapped = locate_sql('"public"."t"', '"a" = $1', "$2")
    assert 'WHERE ctid = $2 AND "a" = $1 LIMIT 1) UNION ALL (SELECT' in mapped
    assert mapped.endswith("AS hodr_found LIMIT 1)")

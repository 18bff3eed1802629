"""Assembler: records → committed transactions in commit order, bounded memory, restartable.

Pure unit tests on synthetic record streams.  The last tests compare the assembler with a small
reference model of transactions with nested savepoints over many random interleavings.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hodr.errors import HodrFatal
from hodr.position import LogPosition
from hodr.redo.records import (
    UNCHANGED,
    Abort,
    Begin,
    Change,
    Changed,
    Column,
    Commit,
    Idle,
    Message,
    Op,
    Record,
    RelationSeen,
    RowChange,
    Table,
    Truncate,
)
from hodr.replicate.assembler import Assembler, change_size
from hodr.replicate.spill import SUFFIX
from hodr.replicate.transaction import Transaction

T = Table("public", "t", (Column("id", "integer", True), Column("v", "text"), Column("w", "text")))


def P(lsn: int, seq: int = 0) -> LogPosition:
    return LogPosition(1, lsn, seq)


def row(i: int, v: str | None = "x", w: object = None) -> RowChange:
    return RowChange(Op.INSERT, T, None, (str(i), v, w))  # type: ignore[arg-type]


def chg(xid: int, lsn: int, i: int, sub: int | None = None, **kw: object) -> Changed:
    return Changed(xid, xid if sub is None else sub, P(lsn), row(i, **kw))  # type: ignore[arg-type]


def run(asm: Assembler, records: Iterable[Record]) -> list[Transaction]:
    out: list[Transaction] = []
    for record in records:
        out.extend(asm.feed(record))
    return out


def ids(change: Change) -> int:
    assert isinstance(change, RowChange) and change.after is not None
    return int(change.after[0])  # type: ignore[arg-type]


def join(parts: Sequence[Transaction]) -> list[tuple[int, LogPosition, LogPosition, list[Change]]]:
    """Join parts back into whole transactions, checking the part protocol on the way."""
    whole: list[tuple[int, LogPosition, LogPosition, list[Change]]] = []
    expect_part = 0
    for p in parts:
        assert p.part == expect_part, f"part {p.part} where {expect_part} was due"
        if p.part == 0:
            whole.append((p.xid, p.begin, p.commit, list(p.changes)))
        else:
            xid, begin, commit, changes = whole[-1]
            assert (p.xid, p.begin, p.commit) == (xid, begin, commit)
            changes.extend(p.changes)
        assert p.changes, "empty part"
        expect_part = 0 if p.final else p.part + 1
    assert expect_part == 0, "last transaction has no final part"
    return whole


@pytest.fixture
def spill_dir(tmp_path: Path) -> Path:
    return tmp_path / "spill"


def spill_files(d: Path) -> list[Path]:
    return sorted(d.glob(f"*{SUFFIX}"))


# --- basic shapes ------------------------------------------------------------------------------
def test_non_streamed_transaction(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    out = run(asm, [Begin(7, P(100)), chg(7, 101, 1), chg(7, 102, 2), Commit(7, P(110), 1234)])
    assert out == [Transaction(7, P(100), P(110), 1234, (row(1), row(2)), 0, True)]
    assert out[0].whole
    assert asm.last_commit == P(110)
    assert asm.open_transactions() == 0
    assert asm.memory_bytes == 0


def test_interleaved_streamed_transactions_come_out_in_commit_order(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    records = [
        chg(10, 100, 1),
        chg(20, 101, 2),
        chg(10, 102, 3),
        Begin(30, P(103)),
        chg(30, 104, 4),
        Commit(30, P(105)),  # a non-streamed one completes in between
        chg(20, 106, 5),
        Commit(20, P(107)),
        chg(10, 108, 6),
        Commit(10, P(109)),
    ]
    out = run(asm, records)
    assert [(t.xid, t.begin, t.commit, [ids(c) for c in t.changes]) for t in out] == [
        (30, P(103), P(105), [4]),
        (20, P(101), P(107), [2, 5]),
        (10, P(100), P(109), [1, 3, 6]),
    ]


def test_whole_rollback_is_never_emitted(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    out = run(asm, [chg(5, 1, 1), chg(6, 2, 2), Abort(5, 5, P(3)), chg(6, 4, 3), Commit(6, P(5))])
    assert [(t.xid, [ids(c) for c in t.changes]) for t in out] == [(6, [2, 3])]
    assert asm.open_transactions() == 0 and asm.memory_bytes == 0


def test_sub_rollback_of_nested_savepoints_then_parent_continues(spill_dir: Path) -> None:
    # BEGIN; w1; SAVEPOINT a; w2 (a=101); SAVEPOINT b; w3 (b=102); ROLLBACK TO a; w4; COMMIT
    asm = Assembler(spill_dir)
    out = run(
        asm,
        [
            chg(100, 1, 1),
            chg(100, 2, 2, sub=101),
            chg(100, 3, 3, sub=102),
            Abort(100, 102, P(4)),
            Abort(100, 101, P(4)),
            chg(100, 5, 4),
            Commit(100, P(6)),
        ],
    )
    assert [ids(c) for c in out[0].changes] == [1, 4]


def test_sub_rollback_of_outer_drops_nested_even_without_its_abort(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    out = run(
        asm,
        [
            chg(100, 1, 1),
            chg(100, 2, 2, sub=101),
            chg(100, 3, 3, sub=102),
            Abort(100, 101, P(4)),  # the nested 102 is gone with it
            Abort(100, 102, P(4)),  # ... and a later abort of it is a no-op
            chg(100, 5, 5, sub=103),
            Commit(100, P(6)),
        ],
    )
    assert [ids(c) for c in out[0].changes] == [1, 5]


def test_rollback_of_inner_savepoint_only(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    out = run(
        asm,
        [
            chg(100, 1, 1),
            chg(100, 2, 2, sub=101),
            chg(100, 3, 3, sub=102),
            Abort(100, 102, P(4)),
            chg(100, 5, 4, sub=101),
            Abort(100, 999, P(6)),  # a sub-transaction that wrote nothing
            Commit(100, P(7)),
        ],
    )
    assert [ids(c) for c in out[0].changes] == [1, 2, 4]


def test_unknown_xids_and_empty_commits(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    assert run(asm, [Abort(1, 1, P(5)), Abort(1, 2, P(6))]) == []
    assert run(asm, [Commit(2, P(10))]) == []  # changes were before the restart point
    assert asm.last_commit == P(10)
    assert run(asm, [Begin(3, P(11)), Commit(3, P(12))]) == []  # empty
    assert asm.last_commit == P(12)
    assert asm.restart_position() == P(12)
    assert run(asm, [chg(4, 13, 1), Abort(4, 4, P(14)), RelationSeen(T)]) == []
    assert asm.open_transactions() == 0


def test_messages(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    marker = Message("hodr", b"epoch-end", transactional=True)
    loose = Message("hodr", b"hello", transactional=False)
    out = run(
        asm,
        [
            chg(9, 1, 1),
            Changed(9, 9, P(2), marker),
            Changed(0, 0, P(3), loose),  # emitted at once, while 9 is still open
            Commit(9, P(4)),
        ],
    )
    assert out[0] == Transaction(0, P(3), P(3), 0, (loose,))
    assert out[1].xid == 9 and out[1].changes == (row(1), marker)


def test_result_of_changed_records_can_be_ignored(spill_dir: Path) -> None:
    """feed() acts at once; only a commit's parts are lazy."""
    asm = Assembler(spill_dir)
    asm.feed(chg(1, 1, 1))
    asm.feed(chg(1, 2, 2))
    assert [ids(c) for c in next(asm.feed(Commit(1, P(3)))).changes] == [1, 2]


def test_truncate_and_unchanged_values(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    trunc = Truncate((T,), cascade=True)
    out = run(asm, [chg(1, 1, 1, v=None, w=UNCHANGED), Changed(1, 1, P(2), trunc), Commit(1, P(3))])
    assert out[0].changes == (row(1, None, UNCHANGED), trunc)


# --- ordering and failure modes ------------------------------------------------------------------
def test_out_of_order_commit_is_fatal(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    run(asm, [chg(1, 1, 1), Commit(1, P(10))])
    with pytest.raises(HodrFatal, match="out of order"):
        run(asm, [chg(2, 2, 2), Commit(2, P(10))])


def test_duplicate_begin_is_fatal(spill_dir: Path) -> None:
    asm = Assembler(spill_dir)
    with pytest.raises(HodrFatal, match="already open"):
        run(asm, [Begin(1, P(1)), chg(1, 2, 1), Begin(1, P(1))])


def test_not_a_record(spill_dir: Path) -> None:
    with pytest.raises(TypeError):
        Assembler(spill_dir).feed(row(1))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_limits(spill_dir: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="memory_budget"):
        Assembler(spill_dir, memory_budget=bad)  # type: ignore[arg-type]


# --- bounded memory and spilling -----------------------------------------------------------------
def test_spill_beyond_tiny_budget_keeps_memory_bounded(spill_dir: Path) -> None:
    budget = 4_000
    asm = Assembler(spill_dir, memory_budget=budget)
    rng = random.Random(7)
    records: list[Record] = []
    expected: dict[int, list[int]] = {1: [], 2: [], 3: []}
    for i in range(3_000):
        xid = rng.choice((1, 2, 3)) if i % 10 else 1
        records.append(chg(xid, i + 1, i, v="v" * rng.randrange(0, 60), w=rng.choice((None, UNCHANGED, "w"))))
        expected[xid].append(i)
    biggest = max(change_size(r.change) for r in records if isinstance(r, Changed))
    peak = peak_spilled = 0
    out: list[Transaction] = []
    for r in records:
        out.extend(asm.feed(r))
        peak = max(peak, asm.memory_bytes)
        peak_spilled = max(peak_spilled, asm.spilled_bytes)
    assert peak <= budget + biggest
    assert peak_spilled > 10 * budget
    assert len(spill_files(spill_dir)) == 3
    for xid, lsn_ in ((2, 5001), (1, 5002), (3, 5003)):
        out.extend(asm.feed(Commit(xid, P(lsn_))))
    got = join(out)
    assert [(x, [ids(c) for c in chs]) for x, _, _, chs in got] == [
        (2, expected[2]),
        (1, expected[1]),
        (3, expected[3]),
    ]
    # values (None, UNCHANGED, strings) survive the trip through the spill files
    by_id = {ids(c): c for _, _, _, chs in got for c in chs}
    assert all(by_id[ids(r.change)] == r.change for r in records if isinstance(r, Changed))
    assert spill_files(spill_dir) == []
    assert asm.memory_bytes == 0 and asm.spilled_bytes == 0


def test_spilled_transaction_sub_abort(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, memory_budget=600)
    recs: list[Record] = []
    # parent writes 0..9, sub 101 writes 10..19 (spilled by now), sub 102 (nested) 20..29
    recs += [chg(1, i, i) for i in range(10)]
    recs += [chg(1, i, i, sub=101) for i in range(10, 20)]
    recs += [chg(1, i, i, sub=102) for i in range(20, 30)]
    run(asm, recs)
    assert asm.spilled_bytes > 0
    size_before = asm.spilled_bytes
    run(asm, [Abort(1, 102, P(30))])  # cut inside the file or memory
    run(asm, [chg(1, 31, 31, sub=103), chg(1, 32, 32, sub=103)])
    run(asm, [Abort(1, 101, P(33))])  # first change of 101 is certainly spilled
    assert asm.spilled_bytes < size_before
    run(asm, [chg(1, 34, i) for i in range(40, 50)])
    out = run(asm, [Commit(1, P(60))])
    assert [ids(c) for _, _, _, chs in join(out) for c in chs] == [*range(10), *range(40, 50)]
    assert spill_files(spill_dir) == []


def test_sub_abort_with_first_change_in_memory_after_spill(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, memory_budget=1_000)
    run(asm, [chg(1, i, i) for i in range(40)])  # spilled
    assert asm.spilled_bytes > 0
    run(asm, [chg(1, 40, 40, sub=7), chg(1, 41, 41, sub=7), Abort(1, 7, P(42)), chg(1, 43, 43)])
    out = run(asm, [Commit(1, P(50))])
    assert [ids(c) for _, _, _, chs in join(out) for c in chs] == [*range(40), 43]


def test_abort_of_spilled_transaction_removes_its_file(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, memory_budget=500)
    run(asm, [chg(1, i, i) for i in range(50)])
    assert len(spill_files(spill_dir)) == 1
    run(asm, [Abort(1, 1, P(60))])
    assert spill_files(spill_dir) == [] and asm.spilled_bytes == 0 and asm.memory_bytes == 0


def test_stale_spill_files_are_cleared_on_start(spill_dir: Path) -> None:
    spill_dir.mkdir()
    (spill_dir / f"000001-5{SUFFIX}").write_bytes(b"left by a crash")
    (spill_dir / "notes.txt").write_text("not ours")
    Assembler(spill_dir)
    assert [p.name for p in spill_dir.iterdir()] == ["notes.txt"]


def test_close_removes_spill_files(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, memory_budget=500)
    run(asm, [chg(1, i, i) for i in range(50)])
    asm.close()
    assert spill_files(spill_dir) == []
    with pytest.raises(HodrFatal):
        asm.feed(Commit(1, P(60)))


# --- parts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [10_000_000, 800])
def test_large_transaction_comes_out_in_parts(spill_dir: Path, budget: int) -> None:
    part_bytes, part_changes = 2_000, 15
    asm = Assembler(spill_dir, memory_budget=budget, part_bytes=part_bytes, part_changes=part_changes)
    rng = random.Random(3)
    changes = [chg(1, i + 1, i, v="v" * rng.randrange(0, 300)) for i in range(400)]
    changes.append(chg(1, 401, 400, v="h" * 5_000))  # larger than a part on its own
    run(asm, [Begin(1, P(0)), *changes])
    parts = run(asm, [Commit(1, P(500), 77)])
    assert len(parts) > 400 * 120 // part_bytes
    assert [p.part for p in parts] == list(range(len(parts)))
    assert [p.final for p in parts] == [False] * (len(parts) - 1) + [True]
    assert {(p.xid, p.begin, p.commit, p.commit_time) for p in parts} == {(1, P(0), P(500), 77)}
    for p in parts:
        assert len(p.changes) <= part_changes
        assert len(p.changes) == 1 or sum(map(change_size, p.changes)) <= part_bytes
    assert [c for p in parts for c in p.changes] == [r.change for r in changes]
    assert spill_files(spill_dir) == []


def test_parts_are_lazy_and_restart_point_moves_with_the_final_part(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, memory_budget=1_000, part_changes=10)
    run(asm, [chg(1, 10 + i, i) for i in range(35)])
    assert asm.restart_position() == P(10)
    it = asm.feed(Commit(1, P(100)))
    assert asm.restart_position() == P(10)  # nothing handed out yet
    assert asm.last_commit is None
    first = next(it)
    assert not first.final and asm.restart_position() == P(10)
    rest = list(it)
    assert rest[-1].final and len(rest) == 3
    assert asm.restart_position() == P(100) and asm.last_commit == P(100)


def test_taking_the_final_part_without_exhausting_is_fine(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, part_changes=2)
    run(asm, [chg(1, 1, 1), chg(1, 2, 2), chg(1, 3, 3)])
    it = asm.feed(Commit(1, P(4)))
    assert [next(it).final, next(it).final] == [False, True]
    assert run(asm, [chg(2, 5, 5), Commit(2, P(6))])[0].xid == 2


def test_feeding_before_all_parts_are_taken_stops_the_assembler(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, memory_budget=500, part_changes=5)
    run(asm, [chg(1, i, i) for i in range(1, 30)])
    it = asm.feed(Commit(1, P(40)))
    next(it)
    with pytest.raises(HodrFatal, match="abandoned after 1 part"):
        asm.feed(chg(2, 41, 1))
    with pytest.raises(HodrFatal):
        asm.feed(Idle(P(50)))
    assert spill_files(spill_dir) == []


def test_unstarted_parts_iterator_is_caught_too(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, memory_budget=500, part_changes=5)
    run(asm, [chg(1, i, i) for i in range(1, 30)])
    asm.feed(Commit(1, P(40)))  # result dropped
    with pytest.raises(HodrFatal, match="abandoned after 0 part"):
        asm.feed(Idle(P(50)))
    assert spill_files(spill_dir) == []


# --- restart position and dedupe -----------------------------------------------------------------
def test_restart_position(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, start=P(50))
    assert asm.restart_position() == P(50)
    run(asm, [Idle(P(60))])
    assert asm.restart_position() == P(60)
    run(asm, [Idle(P(55))])  # never backwards from an Idle
    assert asm.restart_position() == P(60)
    run(asm, [chg(1, 70, 1), Begin(2, P(75)), chg(2, 76, 2)])
    assert asm.restart_position() == P(70)
    run(asm, [Idle(P(90))])  # open transactions pin it
    assert asm.restart_position() == P(70)
    run(asm, [Commit(1, P(80))])
    assert asm.restart_position() == P(75)
    # a streamed transaction that first shows up with older changes pulls it back (documented)
    run(asm, [chg(3, 72, 3)])
    assert asm.restart_position() == P(72)
    run(asm, [Abort(3, 3, P(95)), Commit(2, P(100))])
    assert asm.restart_position() == P(100)


def test_dedupe_after_restart(spill_dir: Path) -> None:
    stream: list[Record] = [
        chg(1, 1, 1),
        chg(2, 2, 2),
        Commit(1, P(10)),
        chg(3, 11, 3),
        Commit(2, P(12)),
        Commit(3, P(20, 1)),  # Oracle: two commits share SCN 20, seq breaks the tie
        chg(4, 21, 4),
        Commit(4, P(20, 2)),
        Changed(0, 0, P(21, 5), Message("hodr", b"m", transactional=False)),
        chg(5, 22, 5),
        Commit(5, P(30)),
    ]
    full = run(Assembler(spill_dir), stream)
    assert [t.xid for t in full] == [1, 2, 3, 4, 0, 5]
    for k, upto in enumerate(t.commit for t in full):
        asm = Assembler(spill_dir, skip_upto=upto)
        again = run(asm, stream)
        assert again == full[k + 1 :], f"skip_upto={upto}"
        assert asm.last_commit == P(30)


def test_reset_for_a_reconnect_drops_open_work_and_skips_finished(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, memory_budget=500)
    first_try = [chg(1, 1, 1), chg(2, 2, 2), Commit(2, P(3)), *(chg(1, 4 + i, 10 + i) for i in range(30))]
    out = run(asm, first_try)
    assert [t.xid for t in out] == [2] and spill_files(spill_dir)
    restart = asm.restart_position()
    asm.reset()  # connection lost: the server re-sends from the start of transaction 1
    assert spill_files(spill_dir) == [] and asm.open_transactions() == 0 and asm.memory_bytes == 0
    again = run(asm, [*first_try, Commit(1, P(50))])
    assert restart == P(1)
    assert [(t.xid, [ids(c) for c in t.changes]) for t in again] == [(1, [1, *range(10, 40)])]


def test_reset_after_an_abandoned_emission(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, part_changes=2)
    stream = [chg(1, 1, 1), chg(1, 2, 2), chg(1, 3, 3), Commit(1, P(4))]
    run(asm, stream[:-1])
    it = asm.feed(stream[-1])
    assert next(it).part == 0  # then the outbox write fails and the caller gives up on it
    with pytest.raises(HodrFatal):
        asm.feed(Idle(P(5)))
    asm.reset()
    parts = run(asm, stream)
    assert [p.part for p in parts] == [0, 1] and parts[-1].final


def test_skipped_transactions_still_release_spill(spill_dir: Path) -> None:
    asm = Assembler(spill_dir, memory_budget=500, skip_upto=P(100))
    assert asm.restart_position() == P(100)
    run(asm, [chg(1, i, i) for i in range(1, 40)])
    assert asm.restart_position() == P(1)
    assert run(asm, [Commit(1, P(90))]) == []
    assert spill_files(spill_dir) == [] and asm.last_commit == P(90)
    assert asm.restart_position() == P(100)


# --- randomised comparison with a reference model ------------------------------------------------
@dataclass
class _Node:
    """A (sub)transaction in the reference model: a savepoint level, maybe with an xid."""

    xid: int | None
    children: list[_Node] = field(default_factory=list)


@dataclass
class _Txn:
    top: int
    streamed: bool
    stack: list[_Node]
    changes: list[tuple[Change, list[int], int]] = field(default_factory=list)  # change, path ids, lsn
    first_lsn: int | None = None


class _Model:
    """Generates a PostgreSQL-like record stream and the transactions that must come out of it.

    Real semantics, not the assembler's rule: a change survives unless a savepoint level that was
    active when it was made is rolled back.  Sub-transaction xids are assigned at first write,
    parents first, and a rollback sends an Abort for every assigned xid of the rolled-back subtree
    (PostgreSQL lists released children in the abort record), in random order.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lsn = 0
        self.next_xid = 1000
        self.next_row = 0
        self.next_node = 0
        self.records: list[Record] = []
        self.expected: list[tuple[int, LogPosition, LogPosition, list[Change]]] = []
        self.open: dict[int, _Txn] = {}
        self.node_ids: dict[int, int] = {}

    def pos(self) -> LogPosition:
        self.lsn += 1
        return P(self.lsn)

    def new_node(self, xid: int | None) -> _Node:
        node = _Node(xid)
        self.next_node += 1
        self.node_ids[id(node)] = self.next_node
        return node

    def begin(self) -> None:
        top = self.next_xid
        self.next_xid += 1
        self.open[top] = _Txn(top, self.rng.random() < 0.7, [self.new_node(top)])

    def write(self, t: _Txn) -> None:
        for node in t.stack:  # parents get their xid first
            if node.xid is None:
                node.xid = self.next_xid
                self.next_xid += 1
        self.next_row += 1
        value = self.rng.choice(["", None, UNCHANGED, "v" * self.rng.randrange(1, 200)])
        change = row(self.next_row, v=self.rng.choice(["a", None]), w=value)
        pos = self.pos()
        if t.first_lsn is None:
            t.first_lsn = pos.lsn
        t.changes.append((change, [self.node_ids[id(n)] for n in t.stack], pos.lsn))
        if t.streamed:
            self.records.append(Changed(t.top, t.stack[-1].xid or t.top, pos, change))

    def savepoint(self, t: _Txn) -> None:
        node = self.new_node(None)
        t.stack[-1].children.append(node)
        t.stack.append(node)

    def release(self, t: _Txn) -> None:
        t.stack.pop()  # its changes now belong to the parent level (they keep its id in path)

    def rollback_to(self, t: _Txn) -> None:
        node = t.stack.pop()
        gone = self.node_ids[id(node)]
        t.changes = [c for c in t.changes if gone not in c[1]]
        xids: list[int] = []

        def collect(n: _Node) -> None:
            if n.xid is not None:
                xids.append(n.xid)
            for c in n.children:
                collect(c)

        collect(node)
        parent = t.stack[-1]
        parent.children.remove(node)
        if t.streamed:
            self.rng.shuffle(xids)
            for x in xids:
                self.records.append(Abort(t.top, x, self.pos()))

    def commit(self, t: _Txn) -> None:
        del self.open[t.top]
        if not t.streamed:
            # whole block at commit, server-side filtered, contiguous
            begin_lsn = t.first_lsn if t.first_lsn is not None else self.lsn
            self.records.append(Begin(t.top, P(begin_lsn)))
            for change, _, lsn in t.changes:
                self.records.append(Changed(t.top, t.top, P(lsn), change))
        pos = self.pos()
        self.records.append(Commit(t.top, pos, pos.lsn * 10))
        if t.changes:
            assert t.first_lsn is not None
            self.expected.append((t.top, P(t.first_lsn), pos, [c for c, _, _ in t.changes]))

    def abort(self, t: _Txn) -> None:
        del self.open[t.top]
        if t.streamed and t.first_lsn is not None:
            self.records.append(Abort(t.top, t.top, self.pos()))
        elif self.rng.random() < 0.3:
            self.records.append(Abort(t.top, t.top, self.pos()))  # unknown xid: a no-op

    def step(self) -> None:
        rng = self.rng
        if not self.open or (len(self.open) < 5 and rng.random() < 0.08):
            self.begin()
            return
        t = self.open[rng.choice(list(self.open))]
        r = rng.random()
        if r < 0.55:
            self.write(t)
        elif r < 0.65:
            self.savepoint(t)
        elif r < 0.72 and len(t.stack) > 1:
            self.release(t)
        elif r < 0.80 and len(t.stack) > 1:
            self.rollback_to(t)
        elif r < 0.86:
            self.commit(t)
        elif r < 0.88:
            self.abort(t)
        elif r < 0.90:
            self.records.append(Idle(P(self.lsn)))
        elif r < 0.91:
            pos = self.pos()
            msg = Message("hodr", str(pos.lsn).encode(), transactional=False)
            self.records.append(Changed(0, 0, pos, msg))
            self.expected.append((0, pos, pos, [msg]))

    def finish(self) -> None:
        for top in list(self.open):
            self.commit(self.open[top])


@pytest.mark.parametrize("seed", range(200))
def test_matches_reference_model(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    model = _Model(rng)
    for _ in range(rng.randrange(50, 600)):
        model.step()
    model.finish()
    budget = rng.choice([300, 2_000, 20_000, 64 << 20])
    part_bytes = rng.choice([200, 1_500, 4 << 20])
    part_changes = rng.choice([1, 3, 10_000])
    spill_dir = tmp_path / "spill"
    asm = Assembler(spill_dir, memory_budget=budget, part_bytes=part_bytes, part_changes=part_changes)
    biggest = max((change_size(r.change) for r in model.records if isinstance(r, Changed)), default=0)
    out: list[Transaction] = []
    open_begins: dict[int, LogPosition] = {}
    for r in model.records:
        out.extend(asm.feed(r))
        assert asm.memory_bytes <= budget + biggest, f"seed {seed}: memory over budget"
        # reference restart point: oldest first record of an unfinished transaction
        if isinstance(r, Begin | Changed) and not (isinstance(r, Changed) and r.xid == 0):
            open_begins.setdefault(r.xid, r.position)
        elif isinstance(r, Commit) or (isinstance(r, Abort) and r.subxid == r.xid):
            open_begins.pop(r.xid, None)
        if open_begins:
            assert asm.restart_position() == min(open_begins.values()), f"seed {seed}"
    for p in out:
        assert len(p.changes) <= part_changes
        assert len(p.changes) == 1 or sum(map(change_size, p.changes)) <= part_bytes
    assert join(out) == model.expected, f"seed {seed}"
    assert asm.open_transactions() == 0
    assert asm.memory_bytes == 0 and asm.spilled_bytes == 0
    assert spill_files(spill_dir) == []
    assert asm.restart_position() == max(model.expected[-1][2], asm.last_commit or P(0))

    # Restart after the k-th transaction: the whole stream again, nothing shipped twice.
    if model.expected:
        k = rng.randrange(len(model.expected))
        again = Assembler(spill_dir, memory_budget=budget, skip_upto=model.expected[k][2])
        redo = join(run(again, model.records))
        assert redo == model.expected[k + 1 :], f"seed {seed}"

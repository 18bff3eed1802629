"""Outbox: numbering, visibility, half-transaction recovery, cursors, release, trim, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hodr.position import LogPosition
from hodr.redo.records import Column, Op, RowChange, Table
from hodr.replicate.codec import decode_transaction, encode_transaction
from hodr.replicate.outbox import Cursor, NeedsReseed, Outbox
from hodr.replicate.segments import SeqUnavailable
from hodr.replicate.transaction import Transaction

T = Table("public", "t", (Column("id", "integer", key=True), Column("v", "text")))


def commit_of(i: int) -> LogPosition:
    return LogPosition(1, 1000 + 10 * i)


def txn(i: int, *, part: int = 0, final: bool = True, size: int = 1) -> Transaction:
    """Transaction number ``i`` (commit position grows with ``i``)."""
    changes = tuple(RowChange(Op.INSERT, T, None, (str(i), f"v{i}-{part}-{k}")) for k in range(size))
    return Transaction(i, LogPosition(1, 1000 + 10 * i - 5), commit_of(i), i, changes, part, final)


def crash(ob: Outbox) -> None:
    """Leave without the orderly close: no flush of buffered records, no cursor persistence."""
    ob._store._buf.clear()
    ob._store._close_fd()


def shipped(ob: Outbox, start: int = 1) -> list[int]:
    return [seq for seq, _ in ob.read_from(start)]


def test_append_numbers_from_one_and_publishes_complete_transactions(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        assert (ob.end_seq, ob.first_seq, ob.last_commit()) == (0, 1, LogPosition(0, 0))
        assert [ob.append(txn(i)) for i in range(1, 4)] == [1, 2, 3]
        assert ob.end_seq == 3 and ob.last_commit() == commit_of(3)
        got = list(ob.read_from(2))
        assert [s for s, _ in got] == [2, 3]
        assert decode_transaction(got[0][1]) == txn(2)


def test_parts_are_invisible_until_the_final_part_is_synced(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        ob.append(txn(1))
        ob.append(txn(2, part=0, final=False))
        ob.append(txn(2, part=1, final=False))
        ob.sync()  # even an explicit sync publishes only complete transactions
        assert ob.end_seq == 1 and shipped(ob) == [1]
        ob.append(txn(2, part=2, final=True))
        assert ob.end_seq == 4 and shipped(ob) == [1, 2, 3, 4]


def test_group_commit_publishes_at_sync(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        for i in range(1, 6):
            ob.append(txn(i), sync=False)
        assert ob.end_seq == 0 and ob.last_commit() == commit_of(5)
        woke: list[int] = []
        ob.add_listener(lambda: woke.append(ob.end_seq))
        assert ob.sync() == 5
        assert woke == [5] and ob.wait(4, timeout=0)


def test_part_order_and_commit_order_are_enforced(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        ob.append(txn(5))
        with pytest.raises(ValueError, match="not after the last commit"):
            ob.append(txn(5))
        with pytest.raises(ValueError, match="starts with part 1"):
            ob.append(txn(6, part=1))
        ob.append(txn(6, part=0, final=False))
        with pytest.raises(ValueError, match="does not continue"):
            ob.append(txn(6, part=2))
        with pytest.raises(ValueError, match="does not continue"):
            ob.append(txn(7, part=1))


def test_a_half_transaction_is_cut_on_reopen(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    ob.append(txn(1))
    ob.append(txn(2))
    ob.append(txn(3, part=0, final=False, size=50))
    ob.append(txn(3, part=1, final=False, size=50))
    ob.sync()  # the parts reach the disk, the final part never will
    assert ob._store.last_seq == 4
    lineage = ob.lineage
    crash(ob)
    with Outbox(tmp_path) as again:
        assert again.lineage == lineage
        assert (again.end_seq, again.last_commit()) == (2, commit_of(2))
        assert shipped(again) == [1, 2]
        # Capture re-sends the whole transaction; it gets the numbers the cut parts had.
        assert again.append(txn(3, part=0, final=False)) == 3
        assert again.append(txn(3, part=1, final=True)) == 4
        assert shipped(again) == [1, 2, 3, 4]
        assert decode_transaction(dict(again.read_from(3))[3]).changes == txn(3, part=0, final=False).changes


def test_unsynced_final_lost_in_a_crash_means_capture_resends(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    ob.append(txn(1))
    ob.append(txn(2), sync=False)
    crash(ob)
    with Outbox(tmp_path) as again:
        assert again.last_commit() == commit_of(1)  # dedupe point: txn 2 must be captured again
        assert again.append(txn(2)) == 2


def test_reopen_restores_end_and_last_commit_and_lineage(tmp_path: Path) -> None:
    with Outbox(tmp_path, base=LogPosition(1, 500)) as ob:
        assert ob.last_commit() == LogPosition(1, 500)
        for i in range(1, 11):
            ob.append(txn(i))
        lineage = ob.lineage
    with Outbox(tmp_path, base=LogPosition(9, 9)) as ob:  # base is fixed at creation
        assert ob.lineage == lineage and ob.base == LogPosition(1, 500)
        assert (ob.end_seq, ob.last_commit()) == (10, commit_of(10))
        assert ob.append(txn(11)) == 11
    assert Outbox(tmp_path / "other").lineage != lineage


def test_cursors_min_ack_and_released_position(tmp_path: Path) -> None:
    with Outbox(tmp_path, standbys=["a", "b"], ack_persist_interval=0) as ob:
        ob.append(txn(1))
        ob.append(txn(2, part=0, final=False))
        ob.append(txn(2, part=1, final=True))
        ob.append(txn(3))
        assert ob.released_position(["a", "b"]) == LogPosition(0, 0)
        assert ob.ack("a", 4) and ob.ack("b", 2)
        assert (ob.acked("a"), ob.acked("b")) == (4, 2)
        assert ob.min_acked(["a", "b"]) == 2 and ob.min_acked(["a"]) == 4
        # b holds only part 0 of txn 2: released is txn 1's commit.
        assert ob.released_position(["a", "b"]) == commit_of(1)
        assert ob.released_position(["a"]) == commit_of(3)
        assert not ob.ack("b", 1)  # regressions are ignored
        assert ob.ack("b", 3)
        assert ob.released_position(["a", "b"]) == commit_of(2)
        with pytest.raises(ValueError, match="beyond the shippable end"):
            ob.ack("a", 5)
        with pytest.raises(KeyError):
            ob.ack("nobody", 1)
    data = json.loads((tmp_path / "cursors" / "b.json").read_text())
    assert data["seq"] == 3 and data["commit"] == commit_of(2).to_list()
    with Outbox(tmp_path, standbys=["a", "b", "c"]) as ob:
        assert ob.cursor("a") == Cursor(4, commit_of(3))
        assert ob.cursor("b") == Cursor(3, commit_of(2))
        assert ob.acked("c") == 0
        assert ob.released_position([]) == LogPosition(0, 0)  # c never acked


def test_ack_persistence_is_rate_limited_but_flushed(tmp_path: Path) -> None:
    ob = Outbox(tmp_path, standbys=["a"], ack_persist_interval=3600)
    for i in range(1, 4):
        ob.append(txn(i))
    ob.ack("a", 1)
    ob.ack("a", 3)
    path = tmp_path / "cursors" / "a.json"
    assert not path.exists() or json.loads(path.read_text())["seq"] < 3
    ob.flush_acks()
    assert json.loads(path.read_text())["seq"] == 3
    ob.close()


def test_commit_for_seq_from_memory_and_from_disk(tmp_path: Path) -> None:
    with Outbox(tmp_path, index_limit=16, max_segment_bytes=2000) as ob:
        seq = 0
        finals = {}
        for i in range(1, 120):
            if i % 5 == 0:
                ob.append(txn(i, part=0, final=False))
                seq += 1
            seq = ob.append(txn(i, part=1 if i % 5 == 0 else 0))
            finals[seq] = commit_of(i)
        ob.register("a")
        assert len(ob._fin_seq) < 40  # the index forgot the old ones
        for s in range(1, ob.end_seq + 1):
            expect = max((c for f, c in finals.items() if f <= s), default=LogPosition(0, 0))
            assert ob.commit_for_seq(s) == expect, s
    with Outbox(tmp_path) as ob:  # after a restart only the last segment is indexed
        assert ob._fin_seq[0] > 50
        for s in range(1, ob.end_seq + 1):
            expect = max((c for f, c in finals.items() if f <= s), default=LogPosition(0, 0))
            assert ob.commit_for_seq(s) == expect, s
        ob.register("z")
        ob.ack("z", 10)
        assert ob.cursor("z").commit == max(c for f, c in finals.items() if f <= 10)


def test_trim_removes_what_every_standby_acked(tmp_path: Path) -> None:
    with Outbox(tmp_path, standbys=["a", "b"], max_segment_bytes=1500, ack_persist_interval=0) as ob:
        for i in range(1, 101):
            ob.append(txn(i))
        nseg = len(list((tmp_path / "segments").glob("*.seg")))
        assert nseg > 5
        ob.ack("a", 100)
        assert ob.trim() == 0  # b acked nothing
        ob.ack("b", 60)
        assert ob.trim() > 0
        first = ob.first_seq
        assert 1 < first <= 61
        assert shipped(ob, first)[0] == first
        with pytest.raises(SeqUnavailable):
            ob.reader(1)
        assert ob.trimmed == Cursor(first - 1, commit_of(first - 1))
        assert ob.released_position(["a", "b"]) == commit_of(60)
    with Outbox(tmp_path, standbys=["a", "b", "late"]) as ob:
        assert ob.first_seq == first and ob.end_seq == 100
        # A standby registered after the trim starts from the trim point, not from zero.
        assert ob.cursor("late") == Cursor(first - 1, commit_of(first - 1))


def test_a_detached_standby_no_longer_holds_history_back(tmp_path: Path) -> None:
    with Outbox(tmp_path, standbys=["fast", "slow"], max_segment_bytes=1500, ack_persist_interval=0) as ob:
        for i in range(1, 101):
            ob.append(txn(i))
        ob.ack("fast", 90)
        assert ob.trim() == 0  # slow acked nothing: everything is kept for it
        assert ob.trim(exclude=["slow"]) > 0  # detached: only fast's position counts
        assert 1 < ob.first_seq <= 91
        assert ob.trim(exclude=["fast", "slow"]) == 0  # nobody left to protect: keep history


def test_no_registered_standby_means_no_trim(tmp_path: Path) -> None:
    with Outbox(tmp_path, max_segment_bytes=500) as ob:
        for i in range(1, 30):
            ob.append(txn(i))
        assert ob.trim() == 0 and ob.first_seq == 1


def test_resume_point_for_the_same_history(tmp_path: Path) -> None:
    with Outbox(tmp_path, standbys=["a"], max_segment_bytes=1500, ack_persist_interval=0) as ob:
        for i in range(1, 51):
            ob.append(txn(i))
        assert ob.resume_point(ob.lineage, 0, None) == 1
        assert ob.resume_point(ob.lineage, 37, commit_of(37)) == 38
        assert ob.resume_point(ob.lineage, 50, commit_of(50)) == 51
        with pytest.raises(NeedsReseed, match="primary lost data"):
            ob.resume_point(ob.lineage, 51, None)
        ob.ack("a", 40)
        ob.trim()
        with pytest.raises(NeedsReseed, match="trimmed"):
            ob.resume_point(ob.lineage, 1, commit_of(1))


def test_resume_point_for_another_history(tmp_path: Path) -> None:
    with Outbox(tmp_path, standbys=["a"], base=LogPosition(1, 500), max_segment_bytes=1500) as ob:
        for i in range(1, 51):
            ob.append(txn(i))
        # A fresh standby, or one whose last commit is this history's base: from the start.
        assert ob.resume_point(None, 0, None) == 1
        assert ob.resume_point("old-primary", 7, LogPosition(1, 500)) == 1
        # A standby that followed another primary up to a commit this history has.
        assert ob.resume_point("old-primary", 999, commit_of(20)) == 21
        with pytest.raises(NeedsReseed, match="not a commit of this history"):
            ob.resume_point("old-primary", 3, LogPosition(1, 1003))
        with pytest.raises(NeedsReseed, match="diverged"):
            ob.resume_point("old-primary", 3, LogPosition(1, 99_999))
        with pytest.raises(NeedsReseed, match="before what this outbox still holds"):
            ob.resume_point("old-primary", 3, LogPosition(1, 400))
        ob.ack("a", 30)
        ob.trim()
        with pytest.raises(NeedsReseed, match="trimmed"):
            ob.resume_point(None, 0, None)
        point = ob.trimmed
        assert ob.resume_point("old-primary", 1, point.commit) == point.seq + 1
        with pytest.raises(NeedsReseed):
            ob.resume_point("old-primary", 1, commit_of(2))


def test_standby_names_must_be_file_safe(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob, pytest.raises(ValueError, match="standby name"):
        ob.register("../etc")


def test_lag_in_bytes_for_status(tmp_path: Path) -> None:
    from hodr.replicate.segments import HEADER_SIZE

    with Outbox(tmp_path, standbys=["a"]) as ob:
        for i in range(1, 11):
            ob.append(txn(i, size=3))
        size = {seq: HEADER_SIZE + len(p) for seq, p in ob.read_from(1)}
        assert ob.lag_bytes("a") == ob.stats().bytes == sum(size.values())
        ob.ack("a", 4)
        assert ob.lag_bytes("a") == sum(size[s] for s in range(5, 11))
        ob.append(txn(11, part=0, final=False))  # unpublished parts are not lag yet
        assert ob.lag_bytes("a") == sum(size[s] for s in range(5, 11))
        ob.ack("a", 10)
        assert ob.lag_bytes("a") == 0
    with Outbox(tmp_path, standbys=["a"]) as ob:  # offsets rebuilt on open
        seq = ob.append(txn(11, size=3))
        assert ob.lag_bytes("a") == HEADER_SIZE + len(dict(ob.read_from(seq))[seq])


def test_released_position_with_a_quorum_is_the_nth_highest_ack(tmp_path: Path) -> None:
    with Outbox(tmp_path, standbys=["a", "b", "c"]) as ob:
        for i in range(1, 11):
            ob.append(txn(i))
        ob.ack("a", 9)
        ob.ack("b", 4)  # c acked nothing
        names = ["a", "b", "c"]
        assert ob.released_position(names, 1) == commit_of(9)
        assert ob.released_position(names, 2) == commit_of(4)
        assert ob.released_position(names, 3) == LogPosition(0, 0)
        assert ob.released_position(names) == ob.released_position(names, 3)  # 0: every one
        assert ob.released_position(["a", "b"], 3) == commit_of(4)  # fewer names: all of them
        ob.ack("c", 10)
        assert ob.released_position(names, 1) == commit_of(10)
        assert ob.released_position(names, 2) == commit_of(9)


def test_a_seeded_outbox_serves_peers_from_any_commit_of_the_old_window(tmp_path: Path) -> None:
    """A promoted node's outbox: old-epoch transactions copied byte for byte, then new-epoch
    capture.  Peers at any old commit in the window, at its base, or at its end resume; the
    released position stays in the old epoch until they acked new-epoch work."""
    old = [encode_transaction(txn(i)) for i in range(21, 31)]
    with Outbox(tmp_path, standbys=["b", "old"], base=commit_of(20)) as ob:
        for payload in old:
            ob.append_payload(payload, sync=False)
        ob.sync()
        assert ob.last_commit() == commit_of(30) and ob.end_seq == 10
        assert [p for _, p in ob.read_from(1)] == old  # same bytes, new numbers
        new = Transaction(7, LogPosition(2, 100), LogPosition(2, 110), 0, txn(1).changes)
        assert ob.append(new) == 11
        assert ob.resume_point("old-lineage", 999, commit_of(20)) == 1  # at the window's base
        assert ob.resume_point("old-lineage", 999, commit_of(25)) == 6
        assert ob.resume_point("old-lineage", 999, commit_of(30)) == 11  # at the applied end
        with pytest.raises(NeedsReseed, match="before what this outbox still holds"):
            ob.resume_point("old-lineage", 999, commit_of(19))
        with pytest.raises(NeedsReseed, match="not a commit of this history"):
            ob.resume_point("old-lineage", 999, LogPosition(1, 1255))
        ob.ack("b", 5)
        assert ob.released_position(["b", "old"], 1) == commit_of(25)  # old epoch: never released
        ob.ack("b", 11)
        assert ob.released_position(["b", "old"], 1) == LogPosition(2, 110)
        assert ob.released_position(["b", "old"]) == commit_of(20)  # "old" acked nothing
        # Commit order holds across the seam: nothing of the old epoch after the new one.
        with pytest.raises(ValueError, match="commit order"):
            ob.append_payload(encode_transaction(txn(31)))


def test_append_payload_keeps_the_part_rules(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        with pytest.raises(ValueError, match="expected 0"):
            ob.append_payload(encode_transaction(txn(1, part=1)))
        ob.append_payload(encode_transaction(txn(1, part=0, final=False)))
        assert ob.end_seq == 0  # half a transaction is never shipped
        ob.append_payload(encode_transaction(txn(1, part=1, final=True)))
        assert ob.end_seq == 2 and ob.commit_for_seq(2) == commit_of(1)

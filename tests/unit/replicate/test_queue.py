"""DurableQueue: durable position, decoding reads, torn tails, trim, lineage switches."""

from __future__ import annotations

from pathlib import Path

import pytest

from hodr.errors import CorruptData
from hodr.position import LogPosition
from hodr.redo.records import Column, Op, RowChange, Table
from hodr.replicate.codec import encode_transaction, peek_transaction
from hodr.replicate.queue import DurableQueue, QueueNotApplied
from hodr.replicate.transaction import Transaction

T = Table("public", "t", (Column("id", "integer", key=True), Column("v", "text")))


def commit_of(i: int) -> LogPosition:
    return LogPosition(1, 1000 + 10 * i)


def txn(i: int, *, part: int = 0, final: bool = True) -> Transaction:
    change = RowChange(Op.INSERT, T, None, (str(i), f"v{i}-{part}"))
    return Transaction(i, LogPosition(1, 1000 + 10 * i - 5), commit_of(i), i, (change,), part, final)


def enc(i: int, **kw: object) -> bytes:
    return encode_transaction(txn(i, **kw))  # type: ignore[arg-type]


def filled(path: Path, n: int, **kw: object) -> DurableQueue:
    q = DurableQueue(path, **kw)  # type: ignore[arg-type]
    q.reset_lineage("L1", 1)
    for i in range(1, n + 1):
        q.append(i, enc(i))
    q.sync()
    return q


def test_a_fresh_queue_has_no_lineage_and_nothing_durable(tmp_path: Path) -> None:
    with DurableQueue(tmp_path) as q:
        assert (q.lineage, q.durable_seq, q.received_seq, q.last_durable_commit()) == (None, 0, 0, None)
        assert list(q.read_from(1)) == []


def test_durable_seq_moves_only_at_sync(tmp_path: Path) -> None:
    with DurableQueue(tmp_path) as q:
        q.reset_lineage("L1", 1)
        q.append(1, enc(1))
        q.append(2, enc(2, part=0, final=False))
        assert (q.received_seq, q.durable_seq) == (2, 0)
        assert list(q.read_from(1)) == []  # the applier only sees durable records
        assert q.sync() == 2
        assert q.durable_seq == 2
        # The last *complete* transaction is txn 1: part 0 of txn 2 has no final part yet.
        assert q.last_durable_commit() == commit_of(1)
        q.append(3, enc(2, part=1, final=True))
        q.sync()
        assert q.last_durable_commit() == commit_of(2)
        assert [(s, t.xid, t.part, t.final) for s, t in q.read_from(1)] == [
            (1, 1, 0, True),
            (2, 2, 0, False),
            (3, 2, 1, True),
        ]


def test_sequence_gaps_and_garbage_are_refused(tmp_path: Path) -> None:
    with DurableQueue(tmp_path) as q:
        q.reset_lineage("L1", 1)
        q.append(1, enc(1))
        with pytest.raises(ValueError, match="received seq 3, expected 2"):
            q.append(3, enc(3))
        with pytest.raises(ValueError, match="expected 2"):
            q.append(1, enc(1))
        with pytest.raises(CorruptData, match="record seq 2 from the primary"):
            q.append(2, b"not a transaction")


def test_reopen_restores_positions_and_truncates_a_torn_tail(tmp_path: Path) -> None:
    q = filled(tmp_path, 20)
    q.append(21, enc(21, part=0, final=False))
    q.sync()
    q.close()
    seg = sorted(q.segment_directory.glob("*.seg"))[-1]
    with open(seg, "ab") as f:
        f.write(b"HS\x01\x01\x00\x00")  # a record header cut short by the crash
    with DurableQueue(tmp_path) as q:
        assert q.lineage == "L1"
        assert q.durable_seq == q.received_seq == 21
        assert q.last_durable_commit() == commit_of(20)
        q.append(22, enc(21, part=1, final=True))
        q.sync()
        assert q.last_durable_commit() == commit_of(21)
        assert [s for s, _ in q.read_from(18)] == [18, 19, 20, 21, 22]


def test_trim_after_apply(tmp_path: Path) -> None:
    with filled(tmp_path, 200, max_segment_bytes=2000) as q:
        nseg = len(list(q.segment_directory.glob("*.seg")))
        assert nseg > 3
        assert q.trim(150) > 0
        assert q.applied_seq == 150
        remaining = [s for s, _ in q.read_from(1)]
        assert remaining[0] <= 151 and remaining[-1] == 200
        assert q.trim(10_000) > 0  # capped at durable_seq; the last segment stays
        assert q.applied_seq == 200
    with DurableQueue(tmp_path) as q:
        assert q.durable_seq == 200 and q.last_durable_commit() == commit_of(200)


def test_waiters_and_readers_see_new_durable_records(tmp_path: Path) -> None:
    with filled(tmp_path, 3) as q:
        reader = q.reader(1)
        assert [s for s, _ in reader.read()] == [1, 2, 3]
        assert reader.read() == [] and not q.wait(3, timeout=0.01)
        q.append(4, enc(4))
        q.sync()
        assert q.wait(3, timeout=0)
        assert [t.xid for _, t in reader.read()] == [4]
        reader.close()


def test_lineage_switch_requires_everything_applied(tmp_path: Path) -> None:
    with filled(tmp_path, 10) as q:
        q.append(11, enc(11, part=0, final=False))  # the old primary never finished txn 11
        q.sync()
        with pytest.raises(QueueNotApplied, match="applied only to 0"):
            q.reset_lineage("L2", 500)
        q.trim(9)
        with pytest.raises(QueueNotApplied):
            q.reset_lineage("L2", 500)
        reader = q.reader(1)
        assert len(reader.read()) == 11
        q.trim(10)  # every complete transaction applied; the unfinished part is dropped
        q.reset_lineage("L2", 500)
        assert (q.lineage, q.durable_seq, q.received_seq) == ("L2", 499, 499)
        assert q.last_durable_commit() == commit_of(10)
        with pytest.raises(ValueError, match="expected 500"):
            q.append(12, enc(12))
        q.append(500, enc(12))
        q.sync()
        assert [(s, t.xid) for s, t in reader.read()] == [(500, 12)]  # the reader follows
        reader.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir())[0].startswith("seg-")
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1  # the old segments are gone
    with DurableQueue(tmp_path) as q:
        assert (q.lineage, q.start_seq, q.durable_seq) == ("L2", 500, 500)
        assert q.last_durable_commit() == commit_of(12)
        assert [s for s, _ in q.read_from(1)] == [500]


def test_a_reader_follows_a_new_lineage_that_numbers_lower_than_the_old_one(tmp_path: Path) -> None:
    """A promoted peer numbers its outbox afresh: the next history may start at a lower seq than
    the old one reached.  The reader must continue at the new start, not skip to its old next
    (lab: a standby that followed two switchovers silently skipped the new primary's first
    transactions until its daemon restarted)."""
    with filled(tmp_path, 10) as q:
        reader = q.reader(1)
        assert len(reader.read()) == 10
        q.trim(10)
        q.reset_lineage("L2", 4)
        for seq, i in ((4, 11), (5, 12)):
            q.append(seq, enc(i))
        q.sync()
        assert [(s, t.xid) for s, t in reader.read()] == [(4, 11), (5, 12)]
        reader.close()


def test_an_interrupted_switch_leaves_no_old_segments(tmp_path: Path) -> None:
    with filled(tmp_path, 3) as q:
        q.trim(3)
        q.reset_lineage("L2", 10)
    stale = tmp_path / "seg-0123456789ab"
    stale.mkdir()
    (stale / "00000000000000000001.seg").write_bytes(b"old lineage")
    with DurableQueue(tmp_path) as q:
        assert not stale.exists()
        assert q.lineage == "L2" and q.durable_seq == 9


def test_stats(tmp_path: Path) -> None:
    with filled(tmp_path, 5) as q:
        q.trim(2)
        st = q.stats()
        assert (st.lineage, st.durable_seq, st.received_seq, st.applied_seq) == ("L1", 5, 5, 2)
        assert st.durable_commit == commit_of(5) and st.bytes > 0 and st.pending_records == 3


# --- retention and the window a promotion seeds its outbox with -------------------------------------
def _segments(q: DurableQueue) -> int:
    return len(list(q.segment_directory.glob("*.seg")))


def test_retention_keeps_the_newest_applied_bytes_whole_segments(tmp_path: Path) -> None:
    with filled(tmp_path / "off", 200, max_segment_bytes=2000) as plain:
        plain.trim(200)
        assert _segments(plain) == 1  # no retention: only the active segment stays
    with filled(tmp_path / "on", 200, max_segment_bytes=2000, retain_bytes=6000) as q:
        total = _segments(q)
        q.trim(200)
        kept = sorted(q.segment_directory.glob("*.seg"))
        assert 1 < len(kept) < total
        assert sum(p.stat().st_size for p in kept) >= 6000
        # dropping the oldest kept segment would leave less than the window
        assert sum(p.stat().st_size for p in kept[1:]) < 6000
        first = q.stats().first_seq
        # the commit the window continues from survives a restart
        assert q.trimmed_commit == commit_of(first - 1)
    with DurableQueue(tmp_path / "on", retain_bytes=6000) as q:
        assert q.trimmed_commit == commit_of(q.stats().first_seq - 1)


def test_retention_never_counts_unapplied_records(tmp_path: Path) -> None:
    with filled(tmp_path, 200, max_segment_bytes=2000, retain_bytes=6000) as q:
        total = _segments(q)
        assert q.trim(20) == 0  # the applied part is smaller than the window: nothing goes
        assert _segments(q) == total


def test_retained_window_is_the_applied_history_byte_for_byte(tmp_path: Path) -> None:
    with DurableQueue(tmp_path, max_segment_bytes=2000, retain_bytes=4000) as q:
        q.reset_lineage("L1", 1, base_commit=commit_of(0))
        seq = 0
        sent: dict[int, bytes] = {}
        for i in range(1, 121):
            parts = [enc(i)] if i % 10 else [enc(i, part=0, final=False), enc(i, part=1, final=True)]
            for payload in parts:
                seq += 1
                q.append(seq, payload)
                sent[seq] = payload
        q.sync()
        # Never trimmed: the window is the lineage from its start, based at its base commit.
        base, payloads = q.retained_window(commit_of(120))
        assert base == commit_of(0) and list(payloads) == [sent[s] for s in range(1, seq + 1)]
        q.trim(seq)
        first = q.stats().first_seq
        assert first > 1
        base, payloads = q.retained_window(commit_of(115))
        got = list(payloads)
        assert base == q.trimmed_commit
        # Whole transactions from the first retained one up to and including commit 115.
        first_txn = peek_transaction(got[0])
        assert first_txn.part == 0 and base < first_txn.commit
        assert peek_transaction(got[-1]).commit == commit_of(115)
        assert got == [sent[s] for s in range(first, first + len(got))]


def test_retained_window_of_an_old_queue_starts_after_its_first_final_part(tmp_path: Path) -> None:
    with filled(tmp_path, 60, max_segment_bytes=2000) as q:
        q.trim(40)
        first = q.stats().first_seq
        q.trimmed_commit = None  # as written before retention recorded it
        base, payloads = q.retained_window(commit_of(60))
        assert base == commit_of(first)
        assert [peek_transaction(p).commit for p in payloads] == [commit_of(i) for i in range(first + 1, 61)]


def test_a_fresh_history_window_has_no_base(tmp_path: Path) -> None:
    with filled(tmp_path, 5) as q:
        base, payloads = q.retained_window(commit_of(3))
        assert base is None and len(list(payloads)) == 3


def test_skip_applied_reads_headers_only_up_to_the_target_position(tmp_path: Path) -> None:
    with filled(tmp_path, 50, max_segment_bytes=2000, retain_bytes=1 << 20) as q:
        q.trim(50)
    with DurableQueue(tmp_path, retain_bytes=1 << 20) as q:
        assert q.applied_seq == 0  # after a restart only the trim point is known
        assert q.skip_applied(commit_of(30)) == 30
        assert [s for s, _ in q.read_from(q.applied_seq + 1)][0] == 31
        assert q.skip_applied(commit_of(10)) == 30  # never backwards

"""Promotion seeds the new primary's outbox from the durable queue's retained window
(ReplicaNode._seed_outbox): the old history's transactions byte for byte, ending at the applied
position, so peers that received less than the promoted node resume instead of reseeding."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from hodr.position import LogPosition
from hodr.replicate.codec import peek_transaction
from hodr.replicate.node import ReplicaNode
from hodr.replicate.outbox import NeedsReseed, Outbox
from hodr.replicate.queue import DurableQueue
from tests.unit.replicate.test_queue import commit_of, enc


def _node(data: Path) -> ReplicaNode:
    return SimpleNamespace(cfg=SimpleNamespace(data_path=data))  # type: ignore[return-value]


def _queue(data: Path, n: int, *, retain: int, applied: int) -> dict[int, bytes]:
    sent: dict[int, bytes] = {}
    with DurableQueue(data / "queue", max_segment_bytes=2000, retain_bytes=retain) as q:
        q.reset_lineage("old-primary", 1, base_commit=commit_of(0))
        for i in range(1, n + 1):
            sent[i] = enc(i)
            q.append(i, sent[i])
        q.sync()
        q.trim(applied)
    return sent


def test_promotion_seeds_the_outbox_with_the_retained_window(tmp_path: Path) -> None:
    sent = _queue(tmp_path, 200, retain=6000, applied=200)
    (tmp_path / "outbox").mkdir()  # an outbox of an older epoch: replaced
    (tmp_path / "outbox" / "stale").write_text("x")
    ReplicaNode._seed_outbox(_node(tmp_path), commit_of(200))
    assert not (tmp_path / "outbox.seed").exists()
    with Outbox(tmp_path / "outbox", standbys=["b"]) as ob:
        records = [p for _, p in ob.read_from(ob.first_seq)]
        first = 200 - len(records) + 1  # the first retained transaction (commit_of(first))
        assert peek_transaction(records[0]).commit == commit_of(first)
        assert ob.base == commit_of(first - 1)  # the last transaction trimmed from the queue
        assert records == [sent[i] for i in range(first, 201)]  # byte for byte
        assert ob.last_commit() == commit_of(200) and 1 < len(records) < 200
        # A peer that had received less (any commit in the window) resumes right after it.
        k = first + len(records) // 2
        seq = ob.resume_point("old-primary", k, commit_of(k))
        assert ob.commit_for_seq(seq - 1) == commit_of(k) and seq == k - first + 2
        assert ob.resume_point("old-primary", 200, commit_of(200)) == ob.end_seq + 1
        assert ob.resume_point("old-primary", 1, ob.base) == 1
        with pytest.raises(NeedsReseed):
            ob.resume_point("old-primary", 5, commit_of(5))  # before the window: reseed


def test_without_a_window_ending_at_applied_the_outbox_starts_empty_there(tmp_path: Path) -> None:
    _queue(tmp_path, 20, retain=0, applied=20)
    applied = LogPosition(1, 99_999)  # the target holds more than the queue ever did
    ReplicaNode._seed_outbox(_node(tmp_path), applied)
    with Outbox(tmp_path / "outbox") as ob:
        assert (ob.base, ob.end_seq, ob.last_commit()) == (applied, 0, applied)


def test_a_queue_that_kept_everything_seeds_the_whole_history(tmp_path: Path) -> None:
    with DurableQueue(tmp_path / "queue") as q:  # a fresh standby: lineage from the very start
        q.reset_lineage("old-primary", 1)
        for i in range(1, 6):
            q.append(i, enc(i))
        q.sync()
        q.trim(5)
    ReplicaNode._seed_outbox(_node(tmp_path), commit_of(5))
    with Outbox(tmp_path / "outbox") as ob:
        assert ob.base == LogPosition(0, 0) and ob.end_seq == 5
        assert ob.resume_point(None, 0, None) == 1  # even a new standby gets everything

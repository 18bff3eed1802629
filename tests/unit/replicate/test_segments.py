"""Segment files: append/sync/read, rollover and trim, crash recovery, corruption, disk errors."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from hodr.errors import CorruptData, HodrFatal
from hodr.replicate import fsutil, segments
from hodr.replicate.fsutil import StorageError, atomic_write
from hodr.replicate.segments import HEADER_SIZE, SegmentStore


def payload(seq: int, size: int = 40) -> bytes:
    return (f"record-{seq}-".encode() * size)[:size]


def fill(store: SegmentStore, first: int, last: int, *, size: int = 40, every: int = 1) -> None:
    """Append ``first..last``; every ``every``-th record is a boundary."""
    for seq in range(first, last + 1):
        store.append(seq, payload(seq, size), boundary=(seq % every == 0))
    store.sync()


def seqs(store: SegmentStore, start: int = 1) -> list[int]:
    return [s for s, _ in store.read_from(start)]


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def test_append_sync_read_roundtrip(tmp_path: Path) -> None:
    with SegmentStore(tmp_path) as store:
        fill(store, 1, 50)
        assert store.last_seq == store.synced_seq == store.published_seq == 50
        got = list(store.read_from(1))
        assert [s for s, _ in got] == list(range(1, 51))
        assert all(p == payload(s) for s, p in got)
        assert seqs(store, 37) == list(range(37, 51))
        assert seqs(store, 51) == []


def test_unsynced_records_are_invisible_to_readers(tmp_path: Path) -> None:
    with SegmentStore(tmp_path) as store:
        fill(store, 1, 3)
        store.append(4, b"not yet")
        assert seqs(store) == [1, 2, 3]
        reader = store.reader(1)
        assert [r.seq for r in reader.read()] == [1, 2, 3]
        assert reader.read() == []
        store.sync()
        assert [r.seq for r in reader.read()] == [4]
        reader.close()


def test_boundary_only_publish_hides_an_unfinished_unit(tmp_path: Path) -> None:
    with SegmentStore(tmp_path) as store:
        store.append(1, b"a")
        store.append(2, b"b-part", boundary=False)
        store.sync(boundary_only=True)
        assert store.synced_seq == 2
        assert seqs(store) == [1]
        store.append(3, b"b-final")
        store.sync(boundary_only=True)
        assert seqs(store) == [1, 2, 3]


def test_sequence_numbers_must_increase_but_may_jump(tmp_path: Path) -> None:
    with SegmentStore(tmp_path) as store:
        store.append(5, b"x")
        with pytest.raises(ValueError, match="not after 5"):
            store.append(5, b"y")
        store.append(9, b"z")
        store.sync()
        assert seqs(store) == [5, 9]
        assert seqs(store, 6) == [9]


def test_rollover_by_size_and_reads_across_segments(tmp_path: Path) -> None:
    with SegmentStore(tmp_path, max_segment_bytes=500) as store:
        fill(store, 1, 100)
        files = segment_files(tmp_path)
        assert len(files) > 5
        assert files[0].name == "00000000000000000001.seg"
        assert seqs(store) == list(range(1, 101))
        for start in (1, 13, 50, 99, 100):
            assert seqs(store, start) == list(range(start, 101))


def test_rollover_only_after_a_boundary_record(tmp_path: Path) -> None:
    with SegmentStore(tmp_path, max_segment_bytes=200) as store:
        fill(store, 1, 60, every=10)
        firsts = store.segment_firsts()
    # Every segment starts right after a boundary record (seq % 10 == 0).
    assert len(firsts) > 1
    assert all(f % 10 == 1 for f in firsts)


def test_trim_deletes_whole_segments_only_and_keeps_the_last(tmp_path: Path) -> None:
    with SegmentStore(tmp_path, max_segment_bytes=500) as store:
        fill(store, 1, 100)
        firsts = store.segment_firsts()
        upto = firsts[3] + 2  # inside the 4th segment: only the first 3 can go
        assert store.trim(upto) == 3
        assert store.first_seq == firsts[3]
        assert seqs(store, firsts[3]) == list(range(firsts[3], 101))
        assert seqs(store, 1)[0] == firsts[3]  # numbering may have gaps: start at the first kept
        store.trim(10_000)
        assert len(segment_files(tmp_path)) == 1  # the active segment survives
        assert store.last_seq == 100
    with SegmentStore(tmp_path) as store:
        assert store.last_seq == 100
        store.append(101, b"next")
        store.sync()


def test_reopen_continues_numbering(tmp_path: Path) -> None:
    with SegmentStore(tmp_path, max_segment_bytes=500) as store:
        fill(store, 1, 40)
    with SegmentStore(tmp_path, max_segment_bytes=500) as store:
        assert (store.first_seq, store.last_seq, store.published_seq) == (1, 40, 40)
        with pytest.raises(ValueError):
            store.append(40, b"again")
        fill(store, 41, 45)
        assert seqs(store) == list(range(1, 46))


def _last_file(tmp_path: Path) -> Path:
    return segment_files(tmp_path)[-1]


@pytest.mark.parametrize(
    "damage",
    ["short-header", "short-payload", "bad-crc-last", "zeros"],
)
def test_torn_tail_is_truncated_on_open(tmp_path: Path, damage: str) -> None:
    with SegmentStore(tmp_path) as store:
        fill(store, 1, 10)
    path = _last_file(tmp_path)
    good_size = path.stat().st_size
    record = HEADER_SIZE + 40
    if damage == "short-header":
        with open(path, "ab") as f:
            f.write(b"HS\x01")
        expected = list(range(1, 11))
    elif damage == "short-payload":
        os.truncate(path, good_size - 7)
        expected = list(range(1, 10))
    elif damage == "bad-crc-last":
        with open(path, "r+b") as f:
            f.seek(good_size - 3)
            f.write(b"\xff\xfe\xfd")
        expected = list(range(1, 10))
    else:
        with open(path, "ab") as f:
            f.write(b"\0" * 3 * record)
        expected = list(range(1, 11))
    with SegmentStore(tmp_path) as store:
        assert seqs(store) == expected
        assert store.last_seq == expected[-1]
        assert path.stat().st_size == len(expected) * record
        store.append(expected[-1] + 1, b"after repair")
        store.sync()
        assert seqs(store)[-1] == expected[-1] + 1


def test_corrupt_record_in_the_middle_of_the_last_segment_names_file_and_offset(tmp_path: Path) -> None:
    with SegmentStore(tmp_path) as store:
        fill(store, 1, 10)
    path = _last_file(tmp_path)
    record = HEADER_SIZE + 40
    offset = 4 * record  # record seq 5
    with open(path, "r+b") as f:
        f.seek(offset + HEADER_SIZE + 3)
        f.write(b"!")
    with pytest.raises(CorruptData) as info:
        SegmentStore(tmp_path)
    msg = str(info.value)
    assert str(path) in msg and f"offset {offset}" in msg and "checksum" in msg


def test_bad_header_in_the_middle_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    with SegmentStore(tmp_path) as store:
        fill(store, 1, 10)
    path = _last_file(tmp_path)
    offset = 2 * (HEADER_SIZE + 40)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"XX")
    with pytest.raises(CorruptData, match=rf"{path}: bad magic .* at offset {offset}"):
        SegmentStore(tmp_path)


def test_corruption_in_an_older_segment_is_found_when_read_and_by_verify(tmp_path: Path) -> None:
    with SegmentStore(tmp_path, max_segment_bytes=500) as store:
        fill(store, 1, 60)
    first = segment_files(tmp_path)[0]
    offset = HEADER_SIZE + 40  # second record
    with open(first, "r+b") as f:
        f.seek(offset + HEADER_SIZE)
        f.write(b"#")
    with SegmentStore(tmp_path, max_segment_bytes=500) as store:  # only the last one is scanned
        with pytest.raises(CorruptData, match=rf"{first}: checksum mismatch .* offset {offset}"):
            list(store.read_from(1))
        with pytest.raises(CorruptData, match=str(first)):
            store.verify()
        assert seqs(store, 30) == list(range(30, 61))  # later segments are readable


def test_truncate_after_keeps_numbering_monotonic(tmp_path: Path) -> None:
    with SegmentStore(tmp_path, max_segment_bytes=300) as store:
        fill(store, 1, 30, every=5)
        firsts = store.segment_firsts()
        store.append(31, b"p1", boundary=False)
        store.append(32, b"p2", boundary=False)
        store.sync()
        assert store.last_boundary_seq == 30
        assert store.truncate_after(30) == 2
        assert store.last_seq == 30 and seqs(store) == list(range(1, 31))
        assert store.segment_firsts() == firsts


def test_an_emptied_last_segment_keeps_its_name_as_a_numbering_floor(tmp_path: Path) -> None:
    with SegmentStore(tmp_path, max_segment_bytes=300) as store:
        fill(store, 1, 10, every=5)
        store.append(11, b"p1", boundary=False)  # rolls over: segment 11 holds only parts
        store.append(12, b"p2", boundary=False)
        store.sync()
        assert store.trim(10) == 2  # segments 1 and 6 are gone, numbers 1-10 with them
        assert store.truncate_after(10) == 2
    assert [p.name for p in segment_files(tmp_path)] == ["00000000000000000011.seg"]
    with SegmentStore(tmp_path, max_segment_bytes=300) as store:
        assert store.last_seq == 10 and store.first_seq == 11
        assert segment_files(tmp_path)[-1].stat().st_size == 0
        with pytest.raises(ValueError):
            store.append(10, b"reused number")
        store.append(11, b"ok")
        store.sync()
        assert seqs(store, 1) == [11]


def test_a_reader_follows_a_concurrent_writer_exactly_once(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path, max_segment_bytes=4096)
    total = 3000
    got: list[int] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with store.reader(1) as reader:
                while len(got) < total:
                    batch = reader.read(max_records=97)
                    if not batch:
                        store.wait_published(got[-1] if got else 0, timeout=5)
                        continue
                    for rec in batch:
                        assert rec.payload == payload(rec.seq)
                        got.append(rec.seq)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    try:
        for seq in range(1, total + 1):
            store.append(seq, payload(seq), boundary=(seq % 7 == 0))
            if seq % 13 == 0:
                store.sync()
        store.sync()
        t.join(20)
    finally:
        store.close()
    assert not t.is_alive() and not errors
    assert got == list(range(1, total + 1))


def test_listeners_and_waiters_are_told_about_new_records(tmp_path: Path) -> None:
    with SegmentStore(tmp_path) as store:
        calls: list[int] = []
        store.add_listener(lambda: calls.append(store.published_seq))
        assert not store.wait_published(0, timeout=0.01)
        store.append(1, b"x")
        assert calls == []  # nothing published before sync
        store.sync()
        assert calls == [1]
        assert store.wait_published(0, timeout=0)


def test_disk_full_stops_the_store_with_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SegmentStore(tmp_path)
    fill(store, 1, 5)

    def full(fd: int, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments, "write_all", full)
    store.append(6, b"lost before any ack")
    with pytest.raises(StorageError) as info:
        store.sync()
    msg = str(info.value)
    assert "disk full" in msg and "ENOSPC" in msg and str(tmp_path) in msg and "\n" not in msg
    assert info.value.errno == errno.ENOSPC
    assert store.published_seq == 5  # nothing past the failure became visible
    with pytest.raises(HodrFatal, match="stopped after an error"):
        store.append(7, b"x")
    monkeypatch.undo()
    store.close()
    with SegmentStore(tmp_path) as again:
        assert seqs(again) == [1, 2, 3, 4, 5]


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"old")

    def denied(fd: int, data: object) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fsutil, "write_all", denied)
    with pytest.raises(StorageError, match=rf"cannot write {target}: permission denied \(EACCES\)"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]

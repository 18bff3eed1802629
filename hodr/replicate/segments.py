"""Append-only segment files: the durable log under the outbox (primary) and the queue (standby).

Why a log of segments (architecture I5): appending is the only write pattern that a crash cannot
turn into a mix of old and new data, and deleting whole files is the cheapest way to trim.  Each
record is::

    magic "HS" | version u8 | flags u8 | length u32 | seq u64 | crc32 u32 | payload[length]

(big-endian, 20 bytes of header).  The crc32 covers the first 16 header bytes *and* the payload,
so a flipped bit in ``seq`` or ``length`` is caught as well as one in the data.  ``flags`` bit 0
(:data:`FLAG_BOUNDARY`) marks the last record of a unit that must not be split (the final part of a
transaction): a segment only rolls over after such a record, so every segment starts at a unit
boundary and whole-segment trimming never cuts a transaction in two.

Files are named after the sequence number of their first record (``00000000000000000042.seg``),
so a reader finds the right file by bisection without opening any.

Crash rules, applied on open:

* a torn last record (short header, short payload, or a checksum failure on the very last record
  of the last segment, or a run of zeros to the end of that file) is truncated: it was being
  written when the process died and was never synced, so never acknowledged;
* a bad header or checksum anywhere else raises :class:`~hodr.errors.CorruptData` naming the file
  and the offset (fail closed, I9): data that was synced and acked has changed on disk.

Only the last segment is fully checked on open (it is the only one that can be torn); the others
are checked record by record as they are read, and :meth:`SegmentStore.verify` checks everything.

Concurrency: one writer thread calls :meth:`~SegmentStore.append`/:meth:`~SegmentStore.sync`;
any number of readers read concurrently.  Readers only ever see *published* records: complete
and fsynced (optionally only up to the last boundary record), never bytes that are still being
written.  ``fsync`` runs outside the state lock so readers are never blocked by a slow disk.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hodr.errors import CorruptData, HodrError, HodrFatal
from hodr.replicate.fsutil import StorageError, fsync_dir, make_dirs, storage_errors, write_all

log = logging.getLogger("hodr.replicate.segments")

MAGIC = b"HS"
VERSION = 1
FLAG_BOUNDARY = 0x01
_KNOWN_FLAGS = FLAG_BOUNDARY

_HDR16 = struct.Struct(">2sBBIQ")  # what the crc covers besides the payload
_HDR = struct.Struct(">2sBBIQI")
HEADER_SIZE = _HDR.size  # 20

DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_MAX_RECORD_BYTES = 256 << 20
_WRITE_BUFFER = 1 << 20  # records are gathered and written in ~1 MiB os.write calls
_READ_CHUNK = 1 << 20
_MARK_EVERY = 1 << 20  # a sparse (seq, offset) mark every MiB makes read_from(seq) seek quickly
_NAME = re.compile(r"^(\d{20})\.seg$")


class SeqUnavailable(HodrError):
    """The requested sequence number is older than the first retained record (trimmed)."""


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """One record as a reader sees it."""

    seq: int
    flags: int
    payload: bytes

    @property
    def boundary(self) -> bool:
        return bool(self.flags & FLAG_BOUNDARY)


@dataclass(eq=False, slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int  # bytes in the file (for the active segment: written + buffered)
    marks: list[tuple[int, int]] = field(default_factory=list)  # sparse (seq, offset), ascending

    def seek_hint(self, seq: int) -> int:
        """Offset of a record at or before ``seq`` (0 when no mark helps)."""
        i = bisect.bisect_right(self.marks, (seq, 1 << 62)) - 1
        return self.marks[i][1] if i >= 0 else 0


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


class _Chunks:
    """Reads a file through a cache of one chunk; never reads past ``limit`` so that the cache
    only ever holds published (immutable) bytes of a segment that is still being appended to."""

    __slots__ = ("fd", "buf", "off")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.off = 0

    def get(self, pos: int, n: int, limit: int) -> tuple[bytes, int] | None:
        """``(buffer, index)`` such that ``buffer[index:index+n]`` are the file's bytes at
        ``pos``; ``None`` when the file (or ``limit``) ends first."""
        rel = pos - self.off
        if rel < 0 or rel + n > len(self.buf):
            want = min(max(n, _READ_CHUNK), limit - pos)
            if want < n:
                return None
            self.buf = os.pread(self.fd, want, pos)
            self.off = pos
            rel = 0
            if len(self.buf) < n:
                return None
        return self.buf, rel


def _decode_header(chunks: _Chunks, pos: int, limit: int, max_record: int) -> tuple[int, int, int, int] | str:
    """``(flags, length, seq, crc)`` of the record at ``pos``, or a string saying why not
    (``"short"`` when the file ends inside the header, else the problem)."""
    got = chunks.get(pos, HEADER_SIZE, limit)
    if got is None:
        return "short"
    buf, i = got
    magic, version, flags, length, seq, crc = _HDR.unpack_from(buf, i)
    if magic != MAGIC:
        return f"bad magic {magic!r}"
    if version != VERSION:
        return f"unknown record version {version}"
    if flags & ~_KNOWN_FLAGS:
        return f"unknown flags 0x{flags:02x}"
    if length > max_record:
        return f"absurd record length {length}"
    return flags, length, seq, crc


def _read_payload(chunks: _Chunks, pos: int, length: int, limit: int) -> bytes | None:
    start = pos + HEADER_SIZE
    got = chunks.get(start, length, limit)
    if got is None:
        return None
    buf, i = got
    return buf[i : i + length] if (i or len(buf) != length) else buf


def _crc(flags: int, length: int, seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_HDR16.pack(MAGIC, VERSION, flags, length, seq)))


def _zeros_to_end(fd: int, pos: int, size: int) -> bool:
    while pos < size:
        chunk = os.pread(fd, min(_READ_CHUNK, size - pos), pos)
        if not chunk or chunk.count(0) != len(chunk):
            return False
        pos += len(chunk)
    return True


class SegmentStore:
    """A directory of append-only segment files holding ``(seq, payload)`` records.

    ``seq`` must strictly increase (gaps are allowed: the queue's numbers come from the primary).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        fsync: bool = True,
    ) -> None:
        self.directory = make_dirs(directory)
        self.max_segment_bytes = max_segment_bytes
        self.max_record_bytes = max_record_bytes
        self._fsync = fsync  # False only for benchmarks that isolate CPU cost
        self._lock = threading.Lock()  # guards the segment list and the published position
        self._changed = threading.Condition(self._lock)
        self._wlock = threading.Lock()  # serialises writers (append/sync/truncate/close)
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # the active (last) segment, opened for append
        self._buf = bytearray()
        self._dir_dirty = False
        self._failed: BaseException | None = None
        self._closed = False
        self._listeners: list[Callable[[], None]] = []
        # Positions.  "floor" is the highest seq known to have existed even if its segment is
        # gone (an empty trailing segment's name proves everything before it was used).
        self._floor = 0
        self._last_seq = 0
        self._last_boundary = 0
        self._last_is_boundary = True
        self._synced_seq = 0
        self._last_boundary_end: tuple[_Segment, int] | None = None
        self._pub_seq = 0
        self._pub: tuple[_Segment, int] | None = None  # (segment, end offset) of published data
        self._open()

    # -- opening ------------------------------------------------------------------------------
    def _open(self) -> None:
        with storage_errors("list", self.directory):
            names = sorted(n for n in os.listdir(self.directory) if _NAME.match(n))
        for name in names:
            path = self.directory / name
            with storage_errors("stat", path):
                size = path.stat().st_size
            self._segments.append(_Segment(int(name[:20]), path, size))
        if not self._segments:
            return
        last = self._segments[-1]
        self._scan_last(last)
        # The last segment's name proves that every number below it was used, even when the
        # segment is empty (a rollover that crashed before its first record, or a recovery
        # truncation): numbering must never go backwards, so it is kept as the active segment.
        self._floor = last.first_seq - 1
        self._last_seq = max(self._floor, self._last_seq)
        if self._last_boundary_end is None:
            if len(self._segments) > 1:
                # The last segment holds no complete unit; by the rollover rule the previous
                # segment ends with a boundary record.
                prev = self._segments[-2]
                self._last_boundary = self._last_seq_of(prev)
                self._last_boundary_end = (prev, prev.size)
            else:
                self._last_boundary = self._floor
                self._last_boundary_end = (last, 0)
        with storage_errors("open", last.path):
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            # Records that survived a process crash may still sit only in the page cache; they
            # become part of the durable history now, so make them durable before anything
            # built on them (an ack, a released position) can be sent.
            if self._fsync:
                os.fsync(self._fd)
        self._synced_seq = self._pub_seq = self._last_seq
        self._pub = (last, last.size)

    def _scan_last(self, seg: _Segment) -> None:
        """Check every record of the last segment; truncate a torn tail, fail on corruption."""
        with storage_errors("read", seg.path):
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            chunks = _Chunks(fd)
            pos = 0
            prev = seg.first_seq - 1
            torn: str | None = None
            next_mark = 0
            while pos < size:
                hdr = _decode_header(chunks, pos, size, self.max_record_bytes)
                if isinstance(hdr, str):
                    if hdr == "short" or _zeros_to_end(fd, pos, size):
                        torn = "short header" if hdr == "short" else "zero-filled tail"
                        break
                    raise CorruptData(f"{seg.path}: {hdr} in record header at offset {pos}")
                flags, length, seq, crc = hdr
                end = pos + HEADER_SIZE + length
                payload = _read_payload(chunks, pos, length, size) if end <= size else None
                if payload is None:
                    torn = "short payload"
                    break
                if _crc(flags, length, seq, payload) != crc:
                    if end == size:
                        torn = "checksum mismatch in the last record"
                        break
                    raise CorruptData(f"{seg.path}: checksum mismatch in record at offset {pos}")
                if seq <= prev:
                    raise CorruptData(
                        f"{seg.path}: sequence {seq} out of order at offset {pos} (after {prev})"
                    )
                if pos >= next_mark:
                    seg.marks.append((seq, pos))
                    next_mark = pos + _MARK_EVERY
                prev = seq
                self._last_seq = seq
                self._last_is_boundary = bool(flags & FLAG_BOUNDARY)
                pos = end
                if self._last_is_boundary:
                    self._last_boundary = seq
                    self._last_boundary_end = (seg, pos)
        finally:
            os.close(fd)
        if torn is not None:
            log.warning("%s: truncating torn tail at offset %d (%s)", seg.path, pos, torn)
            with storage_errors("truncate", seg.path):
                os.truncate(seg.path, pos)
                fd = os.open(seg.path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        seg.size = pos

    def _last_seq_of(self, seg: _Segment) -> int:
        last = 0
        for rec in self._iter_segment(seg, seg.size, 0):
            last = rec.seq
        return last

    def _iter_segment(self, seg: _Segment, limit: int, from_seq: int) -> Iterator[SegmentRecord]:
        """Every checked record of ``seg`` up to ``limit`` bytes with ``seq >= from_seq``."""
        with storage_errors("read", seg.path):
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = _Chunks(fd)
            pos = seg.seek_hint(from_seq)
            while pos < limit:
                rec, pos = _checked_record(seg, chunks, pos, limit, self.max_record_bytes)
                if rec.seq >= from_seq:
                    yield rec
        finally:
            os.close(fd)

    # -- properties ---------------------------------------------------------------------------
    @property
    def first_seq(self) -> int:
        """Sequence number of the first retained record (``last_seq + 1`` when empty)."""
        with self._lock:
            return self._segments[0].first_seq if self._segments else self._last_seq + 1

    @property
    def last_seq(self) -> int:
        """Last appended record (written or buffered, maybe not yet synced); 0 when none ever."""
        return self._last_seq

    @property
    def last_boundary_seq(self) -> int:
        """Last appended record that carried :data:`FLAG_BOUNDARY`."""
        return self._last_boundary

    @property
    def synced_seq(self) -> int:
        """Last record known to be fsynced."""
        return self._synced_seq

    @property
    def published_seq(self) -> int:
        """Last record readers may see."""
        return self._pub_seq

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments)

    def segment_paths(self) -> list[Path]:
        with self._lock:
            return [s.path for s in self._segments]

    def segment_firsts(self) -> list[int]:
        """First sequence number of every retained segment (a segment's name)."""
        with self._lock:
            return [s.first_seq for s in self._segments]

    def first_seq_after_trim(self, upto_seq: int) -> int:
        """The first retained sequence number :meth:`trim` ``(upto_seq)`` would leave."""
        with self._lock:
            n = self._trim_count(upto_seq)
            if n:
                return self._segments[n].first_seq
            return self._segments[0].first_seq if self._segments else self._last_seq + 1

    def _trim_count(self, upto_seq: int) -> int:
        n = 0
        while n + 1 < len(self._segments) and self._segments[n + 1].first_seq <= upto_seq + 1:
            n += 1
        return n

    # -- writing ------------------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._failed is not None:
            raise HodrFatal(f"{self.directory}: segment store stopped after an error: {self._failed}")
        if self._closed:
            raise HodrFatal(f"{self.directory}: segment store is closed")

    def append(self, seq: int, payload: bytes, *, boundary: bool = True) -> None:
        """Append one record (buffered; call :meth:`sync` before acknowledging it to anyone).

        ``boundary=False`` marks a record that must stay in the same segment as the records that
        follow it up to the next boundary record (the non-final parts of a transaction).
        """
        with self._wlock:
            self._check_usable()
            if seq <= self._last_seq:
                raise ValueError(f"{self.directory}: sequence {seq} is not after {self._last_seq}")
            length = len(payload)
            if length > self.max_record_bytes:
                raise ValueError(
                    f"{self.directory}: record of {length} bytes exceeds the limit {self.max_record_bytes}"
                )
            try:
                seg = self._segments[-1] if self._fd is not None else None
                if seg is None or (seg.size >= self.max_segment_bytes and self._last_is_boundary):
                    seg = self._roll(seq)
                flags = FLAG_BOUNDARY if boundary else 0
                hdr16 = _HDR16.pack(MAGIC, VERSION, flags, length, seq)
                offset = seg.size
                buf = self._buf
                buf += hdr16
                buf += zlib.crc32(payload, zlib.crc32(hdr16)).to_bytes(4, "big")
                buf += payload
                seg.size = offset + HEADER_SIZE + length
                if not seg.marks or offset - seg.marks[-1][1] >= _MARK_EVERY:
                    with self._lock:
                        seg.marks.append((seq, offset))
                if len(buf) >= _WRITE_BUFFER:
                    self._write_out(seg)
            except StorageError as exc:
                self._failed = exc
                raise
            self._last_seq = seq
            self._last_is_boundary = boundary
            if boundary:
                self._last_boundary = seq
                self._last_boundary_end = (seg, seg.size)

    def _write_out(self, seg: _Segment) -> None:
        if self._buf and self._fd is not None:
            with storage_errors("write", seg.path):
                write_all(self._fd, self._buf)
            self._buf.clear()

    def _roll(self, seq: int) -> _Segment:
        """Close the active segment (fsynced) and start a new one named after ``seq``."""
        if self._fd is not None:
            old = self._segments[-1]
            self._write_out(old)
            with storage_errors("fsync", old.path):
                # sync() only fsyncs the active file, so the one we leave must be made durable
                # now; once per segment, negligible next to the per-commit fsyncs.
                if self._fsync:
                    os.fsync(self._fd)
                os.close(self._fd)
            self._fd = None
        seg = _Segment(seq, self.directory / segment_name(seq), 0)
        with storage_errors("create", seg.path):
            self._fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC)
        # The new file's directory entry must be durable before any record in it is acked; the
        # directory is fsynced at the next sync(), which always precedes an ack.
        self._dir_dirty = True
        with self._lock:
            self._segments.append(seg)
        return seg

    def sync(self, *, boundary_only: bool = False) -> int:
        """Make every appended record durable and publish it to readers; returns the published seq.

        ``boundary_only`` publishes only up to the last boundary record (the outbox never lets a
        sender see the parts of a transaction whose final part is not written yet), although
        everything appended is fsynced.
        """
        with self._wlock:
            self._check_usable()
            if not self._segments:
                return self._pub_seq
            seg = self._segments[-1]
            target_seq = self._last_seq
            try:
                self._write_out(seg)
                if self._fsync and self._synced_seq < target_seq:
                    # The ack/visibility contract (I5, I6): a record is published only after
                    # fsync returned, so nobody can act on data that a power cut would erase.
                    with storage_errors("fsync", seg.path):
                        assert self._fd is not None
                        os.fsync(self._fd)
                if self._dir_dirty:
                    fsync_dir(self.directory)
                    self._dir_dirty = False
            except StorageError as exc:
                self._failed = exc
                raise
            self._synced_seq = target_seq
            if boundary_only:
                pub_seq, pub = self._last_boundary, self._last_boundary_end
            else:
                pub_seq, pub = target_seq, (seg, seg.size)
            with self._lock:
                if pub is not None and pub_seq > self._pub_seq:
                    self._pub_seq, self._pub = pub_seq, pub
                self._changed.notify_all()
                listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return self._pub_seq

    def truncate_after(self, seq: int) -> int:
        """Drop every record with a sequence number above ``seq``; returns how many were dropped.

        Only for recovery right after opening (before any reader exists): the outbox uses it to
        cut the parts of a transaction whose final part never reached the disk (their numbers are
        reused: nobody saw them).  The last segment is never deleted, only emptied, so that its
        name keeps numbering monotonic when every earlier segment was already trimmed.
        """
        with self._wlock:
            self._check_usable()
            if not self._segments or seq >= self._last_seq:
                return 0
            self._write_out(self._segments[-1])
            dropped = 0
            while len(self._segments) > 1 and self._segments[-1].first_seq > seq:
                seg = self._segments[-1]
                dropped += sum(1 for _ in self._iter_segment(seg, seg.size, 0))
                self._close_fd()
                with storage_errors("remove", seg.path):
                    seg.path.unlink()
                with self._lock:
                    self._segments.pop()
                self._dir_dirty = True
            seg = self._segments[-1]
            cut, last, last_flags = 0, seg.first_seq - 1, FLAG_BOUNDARY
            boundary: tuple[int, int] | None = None
            for rec, end in self._iter_with_ends(seg):
                if rec.seq > seq:
                    dropped += 1
                    continue
                cut, last, last_flags = end, rec.seq, rec.flags
                if rec.boundary:
                    boundary = (rec.seq, end)
            self._close_fd()
            with storage_errors("truncate", seg.path):
                os.truncate(seg.path, cut)
                self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                # The cut records' numbers are about to be reused: the shorter file must be what
                # a crash brings back, never the old tail followed by new records.
                os.fsync(self._fd)
            seg.size = cut
            with self._lock:
                seg.marks = [m for m in seg.marks if m[1] < cut]
            if self._dir_dirty:
                fsync_dir(self.directory)
                self._dir_dirty = False
            self._floor = seg.first_seq - 1
            self._last_seq = max(last, self._floor)
            self._last_is_boundary = bool(last_flags & FLAG_BOUNDARY)
            if boundary is not None:
                self._last_boundary, end = boundary
                self._last_boundary_end = (seg, end)
            elif len(self._segments) > 1:
                prev = self._segments[-2]
                self._last_boundary = self._last_seq_of(prev)
                self._last_boundary_end = (prev, prev.size)
            else:
                self._last_boundary = self._floor
                self._last_boundary_end = (seg, 0)
            self._synced_seq = self._last_seq
            with self._lock:
                self._pub_seq = self._last_seq
                self._pub = (seg, cut)
        return dropped

    def _iter_with_ends(self, seg: _Segment) -> Iterator[tuple[SegmentRecord, int]]:
        with storage_errors("read", seg.path):
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = _Chunks(fd)
            pos = 0
            while pos < seg.size:
                rec, pos = _checked_record(seg, chunks, pos, seg.size, self.max_record_bytes)
                yield rec, pos
        finally:
            os.close(fd)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def trim(self, upto_seq: int) -> int:
        """Delete every segment whose records are all ``<= upto_seq``; returns how many.

        The active (last) segment is never deleted: it carries the highest sequence number,
        which must survive so that numbering continues after a restart.
        """
        with self._lock:
            n = self._trim_count(upto_seq)
            doomed = self._segments[:n]
            del self._segments[:n]
        for seg in doomed:
            with storage_errors("remove", seg.path):
                try:
                    seg.path.unlink()
                except FileNotFoundError:
                    pass
        if doomed:
            # Not needed for safety (a resurrected old segment only holds records below the
            # trim point), but keeps a crash from resurrecting gigabytes of trimmed data.
            fsync_dir(self.directory)
        return len(doomed)

    # -- reading ------------------------------------------------------------------------------
    def reader(self, from_seq: int) -> SegmentReader:
        """A reader positioned at the first record with ``seq >= from_seq``.

        The store allows gaps in numbering, so it cannot tell a trimmed number from one that
        never existed: owners with consecutive numbers check against :attr:`first_seq` first.
        """
        return SegmentReader(self, from_seq)

    def read_from(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """Every published record from ``seq`` on as ``(seq, payload)``; stops at the current end."""
        reader = self.reader(seq)
        try:
            while batch := reader.read():
                for rec in batch:
                    yield rec.seq, rec.payload
        finally:
            reader.close()

    def wait_published(self, after_seq: int, timeout: float | None) -> bool:
        """Block until a record beyond ``after_seq`` is published (or the store closes)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._pub_seq > after_seq or self._closed, timeout=timeout
            ) and (self._pub_seq > after_seq)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs (in the writer's thread, after publishing) whenever new records
        become visible; it must be quick and must not call back into the store's writer."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._lock:
            try:
                self._listeners.remove(callback)
            except ValueError:
                pass

    def verify(self) -> int:
        """Check every record of every segment; returns the record count or raises CorruptData."""
        with self._lock:
            segs = list(self._segments)
            pub = self._pub
        count = 0
        for seg in segs:
            limit = pub[1] if pub is not None and pub[0] is seg else seg.size
            prev = seg.first_seq - 1
            for rec in self._iter_segment(seg, limit, 0):
                if rec.seq <= prev:
                    raise CorruptData(f"{seg.path}: sequence {rec.seq} out of order (after {prev})")
                prev = rec.seq
                count += 1
        return count

    def _snapshot(self) -> tuple[list[_Segment], int, tuple[_Segment, int] | None]:
        with self._lock:
            return list(self._segments), self._pub_seq, self._pub

    def close(self) -> None:
        """Write out and fsync what was appended, close the files, wake every waiting reader."""
        with self._wlock:
            if self._closed:
                return
            try:
                if self._failed is None and self._segments:
                    self._write_out(self._segments[-1])
                    if self._fsync and self._fd is not None:
                        with storage_errors("fsync", self._segments[-1].path):
                            os.fsync(self._fd)
            finally:
                self._close_fd()
                with self._lock:
                    self._closed = True
                    self._changed.notify_all()

    def __enter__(self) -> SegmentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked_record(
    seg: _Segment, chunks: _Chunks, pos: int, limit: int, max_record: int
) -> tuple[SegmentRecord, int]:
    """The record at ``pos`` (fully checked) and the offset after it; strict: a record that
    does not fit before ``limit`` is corruption here (only the open-time scan forgives a tail)."""
    hdr = _decode_header(chunks, pos, limit, max_record)
    if isinstance(hdr, str):
        what = "truncated record header" if hdr == "short" else f"{hdr} in record header"
        raise CorruptData(f"{seg.path}: {what} at offset {pos}")
    flags, length, seq, crc = hdr
    payload = _read_payload(chunks, pos, length, limit)
    if payload is None:
        raise CorruptData(f"{seg.path}: truncated record at offset {pos} (length {length})")
    if _crc(flags, length, seq, payload) != crc:
        raise CorruptData(f"{seg.path}: checksum mismatch in record at offset {pos} (seq {seq})")
    return SegmentRecord(seq, flags, payload), pos + HEADER_SIZE + length


class SegmentReader:
    """Reads published records in order across segments, while the writer keeps appending.

    Keeps its current file open, so a concurrent trim (which unlinks files) cannot pull data
    from under it; a reader that falls behind the trim point gets :class:`SeqUnavailable`.
    """

    def __init__(self, store: SegmentStore, from_seq: int) -> None:
        self._store = store
        self._next = from_seq
        self._seg: _Segment | None = None
        self._fd: int | None = None
        self._chunks: _Chunks | None = None
        self._pos = 0

    @property
    def next_seq(self) -> int:
        """The sequence number this reader will return next (at least)."""
        return self._next

    def _open(self, seg: _Segment, pos: int) -> None:
        self.close()
        try:
            self._fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SeqUnavailable(
                f"{seg.path}: segment was trimmed while sequence {self._next} was still wanted"
            ) from None
        except OSError as exc:
            raise StorageError("open", seg.path, exc) from exc
        self._seg, self._pos, self._chunks = seg, pos, _Chunks(self._fd)

    def _position(self, segs: list[_Segment]) -> bool:
        if not segs:
            return False
        firsts = [s.first_seq for s in segs]
        i = max(0, bisect.bisect_right(firsts, self._next) - 1)
        seg = segs[i]
        with self._store._lock:
            hint = seg.seek_hint(self._next)
        self._open(seg, hint)
        return True

    def read(self, max_records: int = 4096, max_bytes: int = 4 << 20) -> list[SegmentRecord]:
        """Up to ``max_records`` / about ``max_bytes`` of the next published records; ``[]`` when
        caught up (call again later: :meth:`SegmentStore.wait_published` or a listener)."""
        segs, pub_seq, pub = self._store._snapshot()
        if pub is None or self._next > pub_seq:
            return []
        if self._seg is None and not self._position(segs):
            return []
        out: list[SegmentRecord] = []
        nbytes = 0
        max_record = self._store.max_record_bytes
        while len(out) < max_records and nbytes < max_bytes:
            seg = self._seg
            assert seg is not None and self._chunks is not None
            if seg.first_seq > pub_seq:
                break  # a segment past the published one holds nothing readable yet
            at_pub = seg is pub[0]
            limit = pub[1] if at_pub else seg.size
            if self._pos >= limit:
                if at_pub:
                    break
                nxt = next((s for s in segs if s.first_seq > seg.first_seq), None)
                if nxt is None:
                    break
                self._open(nxt, 0)
                continue
            rec, self._pos = _checked_record(seg, self._chunks, self._pos, limit, max_record)
            if rec.seq < self._next:
                continue
            out.append(rec)
            nbytes += len(rec.payload)
            self._next = rec.seq + 1
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._chunks = None

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FLAG_BOUNDARY",
    "HEADER_SIZE",
    "SegmentReader",
    "SegmentRecord",
    "SegmentStore",
    "SeqUnavailable",
    "segment_name",
]

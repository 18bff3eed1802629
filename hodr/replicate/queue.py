"""The durable queue on a standby: what the primary sent, fsynced before it is acked (I6).

Why a queue between receiver and applier: the ack must mean "durable here" regardless of how fast
the target database applies, so the receiver only appends and fsyncs, and the applier follows at
its own pace, trimming what it committed.  Records keep the primary's sequence numbers (so a
reconnect resumes exactly after :attr:`DurableQueue.durable_seq`) and the payload bytes exactly
as the primary's outbox wrote them (no re-encoding; see codec.py).

Layout of ``directory``::

    meta.json      lineage (the primary history these numbers belong to), segment directory,
                   start_seq (first number of this lineage here), base_commit   (atomic_write)
    <segdir>/*.seg the records (segments.py); a final part carries the boundary flag

A new lineage (the standby now follows another primary's history) gets a new segment directory,
switched to by rewriting meta.json: the switch is one atomic rename, and leftovers of the old
directory are removed on the next open.

Retention (``retain_bytes``, ``target.queue_retain_mb``): applied records are not deleted at once;
the newest ``retain_bytes`` of applied records stay (trimming stays whole segments, so somewhat
more is kept).  Why: after a failover this standby may be promoted, and its peers that had
durably received *less* from the old primary must then resume from it.  The promotion seeds the
new primary's outbox with this window (:meth:`DurableQueue.retained_window`), so a peer whose last
durable commit is any commit in the window continues right after it instead of being reseeded.
``meta.json`` records the commit of the last transaction trimmed away (``trimmed_commit``), the
commit the window continues from.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hodr.errors import CorruptData, RetryableTransportError
from hodr.position import LogPosition
from hodr.replicate.codec import TxnHeader, decode_transaction, peek_transaction
from hodr.replicate.fsutil import atomic_write, fsync_dir, make_dirs, read_small, storage_errors
from hodr.replicate.segments import DEFAULT_SEGMENT_BYTES, SegmentReader, SegmentStore
from hodr.replicate.transaction import Transaction

log = logging.getLogger("hodr.replicate.queue")

META_FILE = "meta.json"
META_FORMAT = 1


class QueueNotApplied(RetryableTransportError):
    """A lineage switch was asked while transactions of the old lineage are still unapplied."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    lineage: str | None
    first_seq: int
    received_seq: int
    durable_seq: int
    applied_seq: int
    durable_commit: LogPosition | None
    bytes: int  # segment bytes on disk (applied records stay until their segment is trimmed)

    @property
    def pending_records(self) -> int:
        """Durable records the applier has not reported applied."""
        return max(0, self.durable_seq - self.applied_seq)


def _pos_json(p: LogPosition | None) -> list[int] | None:
    return None if p is None else p.to_list()


class DurableQueue:
    """Append (receiver thread), sync, read (applier thread), trim (applier thread)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
        retain_bytes: int = 0,
    ) -> None:
        self.directory = make_dirs(directory)
        self.retain_bytes = max(0, retain_bytes)
        self._seg_opts = {"max_segment_bytes": max_segment_bytes, "fsync": fsync}
        self._meta_path = self.directory / META_FILE
        self._lock = threading.Lock()  # guards the store swap on a lineage change
        self._listeners: list[Callable[[], None]] = []
        self.generation = 0
        self._load_meta()
        self._open_store()

    # -- meta and opening ---------------------------------------------------------------------
    def _load_meta(self) -> None:
        raw = read_small(self._meta_path)
        if raw is None:
            self.lineage: str | None = None
            self.start_seq = 1
            self.base_commit: LogPosition | None = None
            self.trimmed_commit: LogPosition | None = None
            self._segdir = "segments"
            self._write_meta()
            return
        try:
            meta = json.loads(raw)
            if meta.get("format") != META_FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            lineage = meta["lineage"]
            self.lineage = None if lineage is None else str(lineage)
            self.start_seq = int(meta["start_seq"])
            base = meta["base_commit"]
            self.base_commit = None if base is None else LogPosition.from_list(base)
            trimmed = meta.get("trimmed_commit")  # absent in queues written before retention
            self.trimmed_commit = None if trimmed is None else LogPosition.from_list(trimmed)
            self._segdir = str(meta["segdir"])
            if "/" in self._segdir or self._segdir.startswith("."):
                raise ValueError(f"bad segment directory {self._segdir!r}")
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise CorruptData(f"{self._meta_path}: unreadable queue meta: {exc}") from exc

    def _write_meta(self) -> None:
        meta = {
            "format": META_FORMAT,
            "lineage": self.lineage,
            "segdir": self._segdir,
            "start_seq": self.start_seq,
            "base_commit": _pos_json(self.base_commit),
            "trimmed_commit": _pos_json(self.trimmed_commit),
            "written": time.time(),
        }
        atomic_write(self._meta_path, json.dumps(meta, sort_keys=True).encode())

    def _open_store(self) -> None:
        # Segment directories that meta.json does not name belong to a lineage we already left
        # (a switch interrupted after the meta rename): they are garbage by construction.
        for entry in os.listdir(self.directory):
            path = self.directory / entry
            if entry != self._segdir and path.is_dir() and (entry == "segments" or entry.startswith("seg-")):
                log.info("%s: removing segments of a previous lineage", path)
                with storage_errors("remove", path):
                    shutil.rmtree(path)
                fsync_dir(self.directory)
        store = SegmentStore(self.directory / self._segdir, **self._seg_opts)  # type: ignore[arg-type]
        if store.last_seq and store.last_seq < self.start_seq - 1:
            raise CorruptData(
                f"{store.directory}: holds seq {store.last_seq}, before this lineage's start {self.start_seq}"
            )
        self._store = store
        self._received = max(store.last_seq, self.start_seq - 1)
        self._last_final: tuple[int, LogPosition | None] = (self.start_seq - 1, self.base_commit)
        last_b = store.last_boundary_seq
        if last_b >= self.start_seq and last_b >= store.first_seq:
            with store.reader(last_b) as reader:
                recs = reader.read(max_records=1)
            if recs and recs[0].seq == last_b:
                self._last_final = (last_b, peek_transaction(recs[0].payload, self._where(last_b)).commit)
        self._durable_final = self._last_final
        self._applied = store.first_seq - 1 if store.last_seq else self._received
        store.add_listener(self._notify)

    def _where(self, seq: int) -> str:
        return f"{self._store.directory} seq {seq}"

    @property
    def segment_directory(self) -> Path:
        """Where the current lineage's segment files are."""
        return self._store.directory

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    # -- receiver side ------------------------------------------------------------------------
    def append(self, seq: int, payload: bytes) -> None:
        """Append the primary's record ``seq`` (must be the next number: a gap would be loss)."""
        if seq != self._received + 1:
            raise ValueError(f"{self._store.directory}: received seq {seq}, expected {self._received + 1}")
        head = peek_transaction(payload, f"record seq {seq} from the primary")
        self._store.append(seq, payload, boundary=head.final)
        self._received = seq
        if head.final:
            self._last_final = (seq, head.commit)

    def sync(self) -> int:
        """fsync what was appended; returns :attr:`durable_seq`, the position that may be acked."""
        target = self._last_final
        self._store.sync()
        self._durable_final = target
        return self.durable_seq

    @property
    def received_seq(self) -> int:
        """Last appended record (maybe not yet durable)."""
        return self._received

    @property
    def durable_seq(self) -> int:
        """Last record fsynced: what the receiver may ack (I6)."""
        return max(self._store.synced_seq, self.start_seq - 1)

    def last_durable_commit(self) -> LogPosition | None:
        """Commit of the last complete transaction that is durable here (``base_commit`` of the
        lineage when none; ``None`` for a queue that never held anything)."""
        return self._durable_final[1]

    # -- applier side -------------------------------------------------------------------------
    def reader(self, from_seq: int) -> QueueReader:
        """A reader of durable records from ``from_seq``, decoded; follows lineage switches."""
        return QueueReader(self, from_seq)

    def read_from(self, seq: int) -> Iterator[tuple[int, Transaction]]:
        """``(seq, Transaction)`` for every durable record from ``seq`` to the current end."""
        with self.reader(seq) as reader:
            while batch := reader.read():
                yield from batch

    def wait(self, after_seq: int, timeout: float | None) -> bool:
        """Block until a record beyond ``after_seq`` is durable (False on timeout/close)."""
        return self._store.wait_published(after_seq, timeout)

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    def trim(self, upto_seq: int) -> int:
        """The applier committed everything up to ``upto_seq``: delete whole segments below it,
        except the newest ``retain_bytes`` of applied records (see the module docstring)."""
        with self._lock:
            upto = min(upto_seq, self.durable_seq)
            self._applied = max(self._applied, upto)
            cut = self._retention_cut(upto)
            store = self._store
            new_first = store.first_seq_after_trim(cut)
            if new_first <= store.first_seq:
                return 0
            # Closed segments end with a final part (they roll only at a boundary), so the record
            # before the new first one is the last transaction trimmed away.  Made durable before
            # any segment goes: the window then always knows the commit it continues from.
            self.trimmed_commit = self._final_commit_at(new_first - 1)
            self._write_meta()
            return store.trim(cut)

    def _retention_cut(self, upto: int) -> int:
        """The highest seq :meth:`trim` may delete up to while at least ``retain_bytes`` of
        applied records stay: walk back from the segment holding ``upto`` adding segment sizes."""
        if self.retain_bytes <= 0:
            return upto
        firsts = self._store.segment_firsts()
        paths = self._store.segment_paths()
        kept = 0
        for first, path in reversed(list(zip(firsts, paths, strict=True))):
            if first > upto:
                continue  # nothing applied in it yet: it does not count towards the window
            try:
                kept += os.stat(path).st_size
            except FileNotFoundError:
                continue
            if kept >= self.retain_bytes:
                return min(upto, first - 1)
        return min(upto, firsts[0] - 1) if firsts else upto

    def _final_commit_at(self, seq: int) -> LogPosition | None:
        """Commit of record ``seq`` if it is a final part (None if it is not, or is gone)."""
        with self._store.reader(seq) as reader:
            recs = reader.read(max_records=1)
        if not recs or recs[0].seq != seq or not recs[0].boundary:
            return None
        return peek_transaction(recs[0].payload, self._where(seq)).commit

    def _headers(self, from_seq: int) -> Iterator[tuple[int, bool, TxnHeader, bytes]]:
        """``(seq, boundary, header, payload)`` of every durable record from ``from_seq``."""
        end = self.durable_seq
        with self._store.reader(from_seq) as reader:
            while batch := reader.read():
                for rec in batch:
                    if rec.seq > end:
                        return
                    head = peek_transaction(rec.payload, self._where(rec.seq))
                    yield rec.seq, rec.boundary, head, rec.payload

    def skip_applied(self, applied: LogPosition) -> int:
        """Mark as applied every retained record of a transaction committed at or before
        ``applied`` (the target's position), reading only record headers; returns
        :attr:`applied_seq`.  Why: after a restart the queue only knows that records below its
        first retained one were applied, and with retention the applier would otherwise decode
        the whole window again only to skip it."""
        with self._lock:
            last = self._applied
            for seq, boundary, head, _ in self._headers(self._applied + 1):
                if head.commit > applied:
                    break
                if boundary:
                    last = seq
            self._applied = max(self._applied, last)
            return self._applied

    def retained_window(self, upto: LogPosition) -> tuple[LogPosition | None, Iterator[bytes]]:
        """The applied transactions this queue still holds, for seeding a promoted node's outbox:
        ``(base, payloads)``.  ``payloads`` are the records' bytes exactly as the old primary's
        outbox wrote them, whole transactions only (part 0 to final part), every commit at or
        before ``upto``.  ``base`` is the commit of the last transaction before the first one
        yielded (``None``: the window starts at the beginning of the old primary's history).

        Only for a queue nobody appends to or trims (the promotion has stopped the receiver and
        the applier)."""
        first = max(self._store.first_seq, self.start_seq)
        base = self.base_commit if self._store.first_seq <= self.start_seq else self.trimmed_commit
        # Without a known start (a queue written before retention kept trimmed_commit) the
        # window starts after the first final part; so it does if it begins mid-transaction.
        known = base is not None or self._store.first_seq <= self.start_seq

        def payloads() -> Iterator[bytes]:
            nonlocal base, known
            started = False
            for _seq, boundary, head, payload in self._headers(first):
                if not started:
                    if known and head.part == 0:
                        started = True
                    else:
                        if boundary:
                            base, known = head.commit, True
                        continue
                if head.commit > upto:
                    return
                yield payload

        gen = payloads()
        # The base may only be learnt while reading: read up to the first record of the window.
        head = next(gen, None)
        if head is None:
            return base, iter(())
        return base, _chain_one(head, gen)

    @property
    def applied_seq(self) -> int:
        """Highest sequence number reported applied through :meth:`trim` (since open)."""
        return self._applied

    # -- lineage ------------------------------------------------------------------------------
    def reset_lineage(self, lineage: str, start_seq: int, *, base_commit: LogPosition | None = None) -> None:
        """Follow another primary history: the next record will be ``start_seq`` of ``lineage``.

        Only allowed when every complete transaction of the old lineage has been applied (the
        applier reported it through :meth:`trim`); otherwise :class:`QueueNotApplied` (retry
        once the applier has caught up).  The unfinished tail of an old-lineage transaction (parts
        without their final part) is discarded: that history ends here.  ``base_commit``
        (default: the last durable commit) is what the standby reports as its position until the
        new lineage delivers a complete transaction.
        """
        with self._lock:
            done_seq, done_commit = self._durable_final
            if self._applied < done_seq and self._store.last_seq >= self._store.first_seq:
                raise QueueNotApplied(
                    f"{self.directory}: cannot switch to lineage {lineage}: transactions up to "
                    f"seq {done_seq} of lineage {self.lineage} are durable but applied only to "
                    f"{self._applied}"
                )
            if self._received > done_seq:
                log.warning(
                    "%s: discarding seq %d-%d, parts of an unfinished transaction of lineage %s",
                    self.directory,
                    done_seq + 1,
                    self._received,
                    self.lineage,
                )
            old_dir = self._store.directory
            self._store.remove_listener(self._notify)
            self._store.close()
            self._segdir = f"seg-{uuid.uuid4().hex[:12]}"
            make_dirs(self.directory / self._segdir)
            self.lineage = lineage
            self.start_seq = start_seq
            self.base_commit = base_commit if base_commit is not None else done_commit
            self.trimmed_commit = None
            # One atomic rename switches lineage; the old directory is garbage from this instant.
            self._write_meta()
            with storage_errors("remove", old_dir):
                shutil.rmtree(old_dir, ignore_errors=False)
            fsync_dir(self.directory)
            self._open_store()
            self.generation += 1
        log.info("%s: now following lineage %s from seq %d", self.directory, lineage, start_seq)
        self._notify()

    # -- status and shutdown ------------------------------------------------------------------
    def stats(self) -> QueueStats:
        return QueueStats(
            lineage=self.lineage,
            first_seq=self._store.first_seq,
            received_seq=self._received,
            durable_seq=self.durable_seq,
            applied_seq=self._applied,
            durable_commit=self.last_durable_commit(),
            bytes=self._store.size_bytes,
        )

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> DurableQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chain_one(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest


class QueueReader:
    """Decoded durable records in order; after a lineage switch it continues at the new
    lineage's start (the switch is only allowed once everything before was applied)."""

    def __init__(self, queue: DurableQueue, from_seq: int) -> None:
        self._queue = queue
        self._next = from_seq
        self._generation = queue.generation
        self._reader: SegmentReader = queue._store.reader(from_seq)

    @property
    def next_seq(self) -> int:
        return self._next

    def read(self, max_records: int = 1024, max_bytes: int = 4 << 20) -> list[tuple[int, Transaction]]:
        q = self._queue
        if self._generation != q.generation:
            self._reader.close()
            self._generation = q.generation
            # The new lineage has its own numbering, unrelated to the old one's (a promoted
            # peer numbers its seeded window afresh): continue exactly at its start, never at
            # max(old, start) — that skipped the new history's first records whenever the old
            # primary's numbers ran higher (seen in the lab's switchover drill).
            self._next = q.start_seq
            self._reader = q._store.reader(self._next)
        out = []
        for rec in self._reader.read(max_records, max_bytes):
            out.append((rec.seq, decode_transaction(rec.payload, f"{q.directory} seq {rec.seq}")))
            self._next = rec.seq + 1
        return out

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> QueueReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DurableQueue", "QueueNotApplied", "QueueReader", "QueueStats"]

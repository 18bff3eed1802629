"""The durable source cache on the primary: committed transactions, numbered, kept until acked.

Why an outbox at all: the source log (PostgreSQL slot, Oracle archives) may only be released once
every required standby holds the data durably (I6), and standbys connect and disconnect at their
own pace.  The outbox decouples capture from shipping: capture appends each transaction once,
every standby is streamed from its own cursor, and the source is told to release only the commit
position that every required standby has acknowledged.

Layout of ``directory``::

    meta.json          lineage (uuid of this history), base position, trim point   (atomic_write)
    segments/*.seg     the records (see segments.py), one transaction part per record
    cursors/<name>.json  per-standby acked (seq, commit)                          (atomic_write)

Sequence numbers start at 1 and are consecutive.  A record is one ``Transaction`` part encoded by
:func:`~hodr.replicate.codec.encode_transaction`; the final part carries the segment boundary flag,
so a segment never starts in the middle of a transaction.

Crash rules:

* Parts of a transaction whose final part never reached the disk are cut on open, and senders
  never see them before the final part is synced: a half transaction is never shipped; capture
  re-reads the whole transaction from its restart point (I7), using :meth:`Outbox.last_commit` to
  drop what is already here.
* Records are published to senders only after ``fsync`` (at every final part by default; the
  pipeline may group several finals under one :meth:`Outbox.sync`).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hodr.errors import CorruptData, HodrFatal
from hodr.position import ZERO, LogPosition
from hodr.replicate.codec import encode_transaction, peek_transaction
from hodr.replicate.fsutil import atomic_write, make_dirs, read_small
from hodr.replicate.segments import (
    DEFAULT_SEGMENT_BYTES,
    HEADER_SIZE,
    SegmentReader,
    SegmentStore,
    SeqUnavailable,
)
from hodr.replicate.transaction import Transaction

log = logging.getLogger("hodr.replicate.outbox")

META_FILE = "meta.json"
META_FORMAT = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_INDEX_LIMIT = 1 << 20  # finals kept in memory for seq → commit (32 bytes each)


class NeedsReseed(HodrFatal):
    """The standby cannot be served from this outbox (trimmed, other history, diverged)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A standby's durable ack: every record up to ``seq`` is durable on it, and ``commit`` is
    the commit position of the last complete transaction at or before ``seq``."""

    seq: int
    commit: LogPosition


@dataclass(frozen=True, slots=True)
class OutboxStats:
    lineage: str
    first_seq: int
    end_seq: int
    last_commit: LogPosition
    bytes: int
    acked: dict[str, Cursor]


def check_standby_name(name: str) -> str:
    """Standby names become file names: keep them to ``[A-Za-z0-9_.-]``, 1-64 characters."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"standby name {name!r}: expected 1-64 characters [A-Za-z0-9_.-]")
    return name


def _pos_json(p: LogPosition | None) -> list[int] | None:
    return None if p is None else p.to_list()


def _pos_from(v: object, where: str) -> LogPosition | None:
    if v is None:
        return None
    try:
        return LogPosition.from_list(v)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError) as exc:
        raise CorruptData(f"{where}: not a log position: {v!r:.80}") from exc


class Outbox:
    """Durable, numbered transactions with per-standby cursors.  One writer thread appends; any
    number of senders read; acks may come from any thread."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        standbys: Iterable[str] = (),
        base: LogPosition = ZERO,
        max_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
        ack_persist_interval: float = 0.1,
        index_limit: int = DEFAULT_INDEX_LIMIT,
    ) -> None:
        self.directory = make_dirs(directory)
        self.ack_persist_interval = ack_persist_interval
        self._index_limit = max(16, index_limit)
        self._meta_path = self.directory / META_FILE
        self._load_meta(base)
        self._store = SegmentStore(
            self.directory / "segments", max_segment_bytes=max_segment_bytes, fsync=fsync
        )
        self._cursor_dir = make_dirs(self.directory / "cursors")
        self._lock = threading.Lock()  # index + cursors
        # seq → commit of final parts appended (or found on open), oldest first.
        self._fin_seq = array("Q")
        self._fin_e = array("Q")
        self._fin_l = array("Q")
        self._fin_t = array("Q")
        self._fin_off = array("Q")  # byte offset after each final part (for lag in bytes)
        self._end_off = 0
        self._open_xid: int | None = None
        self._open_part = 0
        self._open_commit: LogPosition | None = None
        self._standbys: dict[str, Cursor] = {}
        self._persisted: dict[str, tuple[Cursor, float]] = {}
        self._ack_locks: dict[str, threading.Lock] = {}
        self._recover()
        for name in standbys:
            self.register(name)

    # -- meta ---------------------------------------------------------------------------------
    def _load_meta(self, base: LogPosition) -> None:
        raw = read_small(self._meta_path)
        if raw is None:
            seg_dir = self.directory / "segments"
            if seg_dir.is_dir() and any(seg_dir.iterdir()):
                raise CorruptData(f"{self._meta_path}: missing, but {seg_dir} holds segments")
            self.lineage = uuid.uuid4().hex
            self.base = base
            self.trimmed = Cursor(0, base)
            # meta.json is written before the first segment exists: segments without meta would
            # be a history nobody can name.
            self._write_meta()
            log.info("%s: new outbox, lineage %s, base %s", self.directory, self.lineage, base)
            return
        try:
            meta = json.loads(raw)
            if meta.get("format") != META_FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            self.lineage = str(meta["lineage"])
            self.base = _pos_from(meta["base"], str(self._meta_path)) or ZERO
            trimmed_commit = _pos_from(meta["trimmed_commit"], str(self._meta_path)) or self.base
            self.trimmed = Cursor(int(meta["trimmed_seq"]), trimmed_commit)
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptData(f"{self._meta_path}: unreadable outbox meta: {exc}") from exc

    def _write_meta(self) -> None:
        meta = {
            "format": META_FORMAT,
            "lineage": self.lineage,
            "base": _pos_json(self.base),
            "trimmed_seq": self.trimmed.seq,
            "trimmed_commit": _pos_json(self.trimmed.commit),
            "written": time.time(),
        }
        atomic_write(self._meta_path, json.dumps(meta, sort_keys=True).encode())

    # -- recovery -----------------------------------------------------------------------------
    def _recover(self) -> None:
        store = self._store
        if store.last_seq > store.last_boundary_seq:
            # The final part of the last transaction never reached the disk: cut its parts, so
            # that no sender ever ships half a transaction; capture sends all of it again.
            dropped = store.truncate_after(store.last_boundary_seq)
            log.warning(
                "%s: dropped %d part(s) of an unfinished transaction after seq %d",
                self.directory,
                dropped,
                store.last_boundary_seq,
            )
        self._last_commit = self.trimmed.commit
        firsts = store.segment_firsts()
        if not firsts or store.last_boundary_seq <= self.trimmed.seq:
            return
        # Index the last segment (acks near the end then resolve from memory); start at the last
        # final part when the last segment holds none (it may be empty after a crash).
        start = min(firsts[-1], store.last_boundary_seq)
        found: list[tuple[int, LogPosition, int]] = []
        total = 0
        with store.reader(start) as reader:
            while batch := reader.read():
                for rec in batch:
                    total += HEADER_SIZE + len(rec.payload)
                    if rec.boundary:
                        commit = peek_transaction(rec.payload, self._where(rec.seq)).commit
                        found.append((rec.seq, commit, total))
        # Offsets count from the start of the first segment retained at open.
        self._end_off = store.size_bytes
        base = self._end_off - total
        for seq, commit, end in found:
            self._index_add(seq, commit, base + end)
        if self._fin_seq:
            self._last_commit = self._index_commit(len(self._fin_seq) - 1)

    def _where(self, seq: int) -> str:
        return f"{self._store.directory} seq {seq}"

    # -- index --------------------------------------------------------------------------------
    def _index_add(self, seq: int, commit: LogPosition, end_off: int) -> None:
        if len(self._fin_seq) >= 2 * self._index_limit:
            # Bounded memory (I10): forget the older half; lookups there fall back to a scan.
            for arr in (self._fin_seq, self._fin_e, self._fin_l, self._fin_t, self._fin_off):
                del arr[: self._index_limit]
        self._fin_seq.append(seq)
        self._fin_e.append(commit.epoch)
        self._fin_l.append(commit.lsn)
        self._fin_t.append(commit.seq)
        self._fin_off.append(end_off)

    def _index_commit(self, i: int) -> LogPosition:
        return LogPosition(self._fin_e[i], self._fin_l[i], self._fin_t[i])

    def _index_lookup(self, seq: int) -> LogPosition | None:
        """Commit of the last final part at or before ``seq`` if the index knows it."""
        i = bisect.bisect_right(self._fin_seq, seq) - 1
        return self._index_commit(i) if i >= 0 else None

    def _scan_commit(self, seq: int, start: Cursor | None = None) -> LogPosition:
        """Commit of the last final part at or before ``seq``, by reading forward from a known
        point (``start``, else the best cursor, else the trim point)."""
        if start is None:
            known = [self.trimmed] + [c for c in self._standbys.values() if c.seq <= seq]
            start = max(known, key=lambda c: c.seq)
        commit = start.commit
        if seq <= start.seq:
            return commit
        try:
            with self._store.reader(start.seq + 1) as reader:
                while batch := reader.read():
                    for rec in batch:
                        if rec.seq > seq:
                            return commit
                        if rec.boundary:
                            commit = peek_transaction(rec.payload, self._where(rec.seq)).commit
        except SeqUnavailable as exc:
            raise NeedsReseed(f"{self.directory}: cannot resolve seq {seq}: {exc}") from exc
        return commit

    def commit_for_seq(self, seq: int) -> LogPosition:
        """Commit position of the last complete transaction whose final part is at or before
        ``seq`` (``base`` or the trim point when there is none)."""
        if seq > self.end_seq:
            raise ValueError(f"{self.directory}: seq {seq} is beyond the end {self.end_seq}")
        with self._lock:
            hit = self._index_lookup(seq)
        return hit if hit is not None else self._scan_commit(seq)

    # -- writing ------------------------------------------------------------------------------
    def append(self, txn: Transaction, *, sync: bool = True) -> int:
        """Append one part of a transaction; returns its sequence number.

        Parts must come in order (``part`` 0, 1, ... with the same ``xid`` and ``commit``) and
        commits strictly increase (I2; the capture's dedupe by :meth:`last_commit` relies on it).
        With ``sync`` (default) a final part is fsynced and published before this returns; the
        pipeline may pass ``sync=False`` and call :meth:`sync` once for a group of transactions
        (group commit: one fsync for many commits).
        """
        self._check_next(txn.xid, txn.part, txn.commit)
        return self._append(txn.xid, txn.part, txn.final, txn.commit, encode_transaction(txn), sync)

    def append_payload(self, payload: bytes, *, sync: bool = True) -> int:
        """Append one transaction part already encoded by :func:`encode_transaction` (another
        node's outbox wrote it; a standby's queue kept it byte for byte), with the same rules
        as :meth:`append`.  Used to seed a promoted node's outbox with the old history's
        transactions it still holds: numbered here, content and commit positions unchanged."""
        head = peek_transaction(payload, f"{self.directory}: seeded record {self._store.last_seq + 1}")
        self._check_next(head.xid, head.part, head.commit)
        return self._append(head.xid, head.part, head.final, head.commit, payload, sync)

    def _check_next(self, xid: int, part: int, commit: LogPosition) -> None:
        if self._open_xid is None:
            if part != 0:
                raise ValueError(f"outbox: xid {xid} starts with part {part}, expected 0")
            if commit <= self._last_commit:
                raise ValueError(
                    f"outbox: commit {commit} of xid {xid} is not after the last "
                    f"commit {self._last_commit} (commit order, I2)"
                )
        elif (xid, part, commit) != (self._open_xid, self._open_part + 1, self._open_commit):
            raise ValueError(
                f"outbox: part {part} of xid {xid} does not continue xid {self._open_xid} "
                f"part {self._open_part}"
            )

    def _append(
        self, xid: int, part: int, final: bool, commit: LogPosition, payload: bytes, sync: bool
    ) -> int:
        seq = self._store.last_seq + 1
        self._store.append(seq, payload, boundary=final)
        self._end_off += HEADER_SIZE + len(payload)
        if final:
            self._open_xid = self._open_commit = None
            self._last_commit = commit
            with self._lock:
                self._index_add(seq, commit, self._end_off)
            if sync:
                self.sync()
        else:
            self._open_xid, self._open_part, self._open_commit = xid, part, commit
        return seq

    def sync(self) -> int:
        """fsync everything appended and publish complete transactions to senders; returns
        :attr:`end_seq`.  Senders are woken through the listeners."""
        return self._store.sync(boundary_only=True)

    def last_commit(self) -> LogPosition:
        """Commit of the last complete transaction appended (``base`` when none): after a
        restart capture drops every commit at or before it (I7)."""
        return self._last_commit

    @property
    def end_seq(self) -> int:
        """Last sequence number senders may ship (the final part of a synced transaction)."""
        return self._store.published_seq

    @property
    def first_seq(self) -> int:
        """First retained sequence number."""
        return self._store.first_seq

    # -- reading ------------------------------------------------------------------------------
    def reader(self, from_seq: int) -> SegmentReader:
        """A reader for a sender: complete transactions only, from ``from_seq`` on."""
        first = self._store.first_seq
        if from_seq < first:
            raise SeqUnavailable(f"{self.directory}: seq {from_seq} was trimmed (first retained is {first})")
        return self._store.reader(from_seq)

    def read_from(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """``(seq, payload)`` of every shippable record from ``seq`` to the current end."""
        self.reader(seq).close()  # the trim check
        return self._store.read_from(seq)

    def wait(self, after_seq: int, timeout: float | None) -> bool:
        """Block until a record beyond ``after_seq`` is shippable."""
        return self._store.wait_published(after_seq, timeout)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` after every publish (senders poke their socket loop with it)."""
        self._store.add_listener(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self._store.remove_listener(callback)

    # -- standbys and acks --------------------------------------------------------------------
    def register(self, name: str) -> None:
        """Make ``name`` a standby whose ack holds back trimming (its cursor file is loaded)."""
        check_standby_name(name)
        with self._lock:
            if name in self._standbys:
                return
            cursor = self._load_cursor(name)
            self._standbys[name] = cursor
            self._persisted[name] = (cursor, time.monotonic())
            self._ack_locks[name] = threading.Lock()

    @property
    def standbys(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._standbys)

    def _cursor_path(self, name: str) -> Path:
        return self._cursor_dir / f"{name}.json"

    def _load_cursor(self, name: str) -> Cursor:
        path = self._cursor_path(name)
        raw = read_small(path)
        if raw is None:
            # A standby that never acked can be served from the trim point at best.
            return self.trimmed
        try:
            obj = json.loads(raw)
            if obj.get("lineage") != self.lineage:
                log.warning("%s: cursor of another outbox history ignored", path)
                return self.trimmed
            commit = _pos_from(obj["commit"], str(path)) or self.base
            cursor = Cursor(int(obj["seq"]), commit)
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptData(f"{path}: unreadable standby cursor: {exc}") from exc
        if cursor.seq > self._store.last_seq:
            raise CorruptData(
                f"{path}: standby {name!r} acked seq {cursor.seq} beyond the outbox end "
                f"{self._store.last_seq} (outbox lost data?)"
            )
        return max(cursor, self.trimmed, key=lambda c: c.seq)

    def _persist_cursor(self, name: str, cursor: Cursor) -> None:
        body = {"lineage": self.lineage, "seq": cursor.seq, "commit": _pos_json(cursor.commit)}
        atomic_write(self._cursor_path(name), json.dumps(body, sort_keys=True).encode())
        self._persisted[name] = (cursor, time.monotonic())

    def ack(self, name: str, seq: int) -> bool:
        """Standby ``name`` holds every record up to ``seq`` durably; False if nothing new.

        The cursor file is rewritten at most every ``ack_persist_interval`` seconds (and by
        :meth:`flush_acks`/:meth:`close`).  Why that is safe: the cursor only drives trimming and
        the released position; a restart with an older cursor trims less and reports an older
        release, both conservative (the source never un-releases, the standby resumes from its
        own durable position, not from this file).
        """
        lock = self._ack_locks.get(name)
        if lock is None:
            raise KeyError(f"outbox: {name!r} is not a registered standby")
        with lock:
            current = self._standbys[name]
            if seq <= current.seq:
                return False
            if seq > self.end_seq:
                raise ValueError(
                    f"outbox: standby {name!r} acked seq {seq} beyond the shippable end {self.end_seq}"
                )
            with self._lock:
                commit = self._index_lookup(seq)
            if commit is None:
                commit = self._scan_commit(seq, current)
            cursor = Cursor(seq, max(commit, current.commit))
            with self._lock:
                self._standbys[name] = cursor
            if time.monotonic() - self._persisted[name][1] >= self.ack_persist_interval:
                self._persist_cursor(name, cursor)
        return True

    def flush_acks(self) -> None:
        """Persist every cursor that moved since it was last written."""
        for name in self.standbys:
            with self._ack_locks[name]:
                cursor = self._standbys[name]
                if self._persisted[name][0] != cursor:
                    self._persist_cursor(name, cursor)

    def acked(self, name: str) -> int:
        """Highest sequence number ``name`` acknowledged (the trim point if never)."""
        with self._lock:
            return self._standbys[name].seq

    def cursor(self, name: str) -> Cursor:
        with self._lock:
            return self._standbys[name]

    def lag_bytes(self, name: str) -> int:
        """Bytes of shippable records ``name`` has not acked (status; exact while the acked
        position is in the in-memory index, else an upper bound: every retained byte)."""
        with self._lock:
            acked = self._standbys[name].seq
            end = self.end_seq
            if acked >= end:
                return 0
            j = bisect.bisect_right(self._fin_seq, end) - 1
            i = bisect.bisect_right(self._fin_seq, acked) - 1
            if i < 0 or j < 0:
                return self._store.size_bytes
            return self._fin_off[j] - self._fin_off[i]

    def min_acked(self, required: Iterable[str]) -> int:
        """Lowest ack over ``required`` standbys (every registered one if empty)."""
        with self._lock:
            names = list(required) or list(self._standbys)
            return min((self._standbys[n].seq for n in names), default=0)

    def released_position(self, required: Iterable[str], quorum: int = 0) -> LogPosition:
        """The highest commit position whose transaction is durable on every ``required``
        standby: what capture may tell the source to release (I6).

        ``quorum`` N (1..): durable on at least N of them instead (the N-th highest acked
        commit, like PostgreSQL's ``ANY N (...)``); 0 or more than there are names: on every
        one.  Safe because the outbox keeps every record for each standby until *it* acked it
        (trimming is per standby), so the slower ones still get everything from here."""
        with self._lock:
            names = list(required) or list(self._standbys)
            if not names:
                return self.base
            commits = sorted((self._standbys[n].commit for n in names), reverse=True)
        n = quorum if 0 < quorum <= len(commits) else len(commits)
        return commits[n - 1]

    # -- handshake support --------------------------------------------------------------------
    def resume_point(self, lineage: str | None, durable_seq: int, commit: LogPosition | None) -> int:
        """First sequence number to send a standby that says it holds ``durable_seq`` of history
        ``lineage`` (last complete commit ``commit``).  Raises :class:`NeedsReseed`.

        Same history: resume right after ``durable_seq``.  Another history (a fresh standby, or
        one that followed a previous primary): resume after the transaction whose commit equals
        the standby's last commit; an exact match is required, because a commit this history
        does not contain means the standby holds transactions nobody here has (diverged) or
        misses some (behind this history's start).
        """
        end, first = self.end_seq, self.first_seq
        if lineage == self.lineage:
            if durable_seq > end:
                raise NeedsReseed(
                    f"standby holds seq {durable_seq} but this outbox ends at {end} "
                    f"(lineage {self.lineage}): the primary lost data, reseed the standby"
                )
            if durable_seq + 1 < first:
                raise NeedsReseed(
                    f"standby resumes at seq {durable_seq + 1} but the outbox was trimmed to {first}: "
                    "load it from a consistent copy"
                )
            return durable_seq + 1
        if commit is None:
            if self.trimmed.seq == 0:
                return first  # a fresh standby and an outbox that still holds everything
            raise NeedsReseed(
                f"new standby (no durable commit) but the outbox was trimmed up to seq "
                f"{self.trimmed.seq}: load it from a consistent copy"
            )
        if commit == self.trimmed.commit:
            return self.trimmed.seq + 1
        if commit == self.base and self.trimmed.seq == 0:
            return first
        if commit < self.trimmed.commit:
            raise NeedsReseed(
                f"standby's last commit {commit} is before what this outbox still holds "
                f"({self.trimmed.commit}, base {self.base}): reseed or catch up elsewhere"
            )
        if commit > self._last_commit:
            raise NeedsReseed(
                f"standby's last commit {commit} is after this primary's last commit "
                f"{self._last_commit}: it holds transactions this history does not (diverged)"
            )
        seq = self._find_commit(commit)
        if seq is None:
            raise NeedsReseed(
                f"standby's last commit {commit} is not a commit of this history "
                f"(lineage {self.lineage}): diverged, reseed the standby"
            )
        return seq + 1

    def _find_commit(self, commit: LogPosition) -> int | None:
        """Sequence number of the final part whose commit is exactly ``commit``."""
        key = (commit.epoch, commit.lsn, commit.seq)
        with self._lock:
            n = len(self._fin_seq)

            def at(i: int) -> tuple[int, int, int]:
                return (self._fin_e[i], self._fin_l[i], self._fin_t[i])

            if n and at(0) <= key:
                i = bisect.bisect_left(range(n), key, key=at)
                return self._fin_seq[i] if i < n and at(i) == key else None
        with self._store.reader(self.trimmed.seq + 1) as reader:
            while batch := reader.read():
                for rec in batch:
                    if rec.boundary:
                        c = peek_transaction(rec.payload, self._where(rec.seq)).commit
                        if c == commit:
                            return rec.seq
                        if c > commit:
                            return None
        return None

    # -- trimming -----------------------------------------------------------------------------
    def trim(self, exclude: Iterable[str] = ()) -> int:
        """Delete segments every registered standby has acked; returns how many were removed.

        ``exclude`` names standbys detached for lagging too far: they no longer hold history
        back (that is the point of detaching them; they need a reseed to come back in full)."""
        skip = set(exclude)
        with self._lock:
            keep = [c.seq for n, c in self._standbys.items() if n not in skip]
            if not keep:
                return 0  # nobody to protect is not a licence to drop history
            upto = min(keep)
        new_first = self._store.first_seq_after_trim(upto)
        if new_first <= self._store.first_seq:
            return 0
        point = Cursor(new_first - 1, self.commit_for_seq(new_first - 1))
        # The trim point is made durable before any segment is deleted: after a crash the meta
        # may claim more was trimmed than really was (harmless), never less (a standby on another
        # history would be resumed across a hole).
        self.trimmed = point
        self._write_meta()
        removed = self._store.trim(upto)
        log.info("%s: trimmed %d segment(s) up to seq %d", self.directory, removed, point.seq)
        return removed

    # -- status and shutdown ------------------------------------------------------------------
    def stats(self) -> OutboxStats:
        with self._lock:
            acked = dict(self._standbys)
        return OutboxStats(
            lineage=self.lineage,
            first_seq=self.first_seq,
            end_seq=self.end_seq,
            last_commit=self._last_commit,
            bytes=self._store.size_bytes,
            acked=acked,
        )

    def close(self) -> None:
        """Persist the cursors and close the segment files (appended records are fsynced)."""
        try:
            self.flush_acks()
        finally:
            self._store.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Cursor", "NeedsReseed", "Outbox", "OutboxStats", "check_standby_name"]

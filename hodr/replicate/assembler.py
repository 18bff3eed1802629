"""Records → whole committed transactions, in commit order, in bounded memory.

The assembler sits between capture (a ``LogSource`` yielding :mod:`hodr.redo.records`) and the
durable outbox.  Its promises, each tied to an architecture invariant:

* **Commit order (I2)**: a transaction is emitted when its ``Commit`` record is fed, and records
  are fed in log order, so emission order is commit order.  A commit position that is not after
  the previous one is refused (:class:`~hodr.errors.HodrFatal`): later stages dedupe by position
  (``commit > applied``), so an out-of-order commit would be silently skipped downstream.
* **Only committed work (I3)**: rolled-back transactions are dropped whole; a rolled-back
  sub-transaction drops every change of its transaction from that sub-transaction's first change
  on.  That is PostgreSQL's own rule (its streaming apply worker cuts its spool file the same
  way): sub-transaction ids are assigned in first-write order and any sub-transaction that first
  wrote later is nested in the aborted one or was already merged into it.
* **Bounded memory (I10)**: open transactions share one budget (estimated bytes, see
  :func:`change_size`); beyond it the largest open transaction's in-memory changes move to its
  spill file (:mod:`hodr.replicate.spill`), and a large committed transaction is handed out as
  several :class:`~hodr.replicate.transaction.Transaction` parts, never materialised whole.
* **Restartable (I7)**: :meth:`Assembler.restart_position` is the begin of the oldest open
  transaction, or the end of the last finished commit (or the last ``Idle`` position) when none is
  open; after a restart, ``skip_upto`` drops every transaction the outbox already holds.

Threading: one assembler belongs to the capture thread; other threads should read the values it
publishes (the pipeline copies ``restart_position()`` etc. into the status), not call it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Final

from hodr.errors import HodrFatal
from hodr.position import ZERO, LogPosition
from hodr.redo.records import (
    Abort,
    Begin,
    Change,
    Changed,
    Commit,
    Idle,
    LoadRows,
    Message,
    Record,
    RelationSeen,
    Row,
    RowChange,
    Truncate,
)
from hodr.replicate.spill import SpillFile, clear_spill_dir
from hodr.replicate.transaction import Transaction

MiB: Final = 1 << 20
DEFAULT_MEMORY_BUDGET: Final = 64 * MiB
DEFAULT_PART_BYTES: Final = 4 * MiB
DEFAULT_PART_CHANGES: Final = 10_000

# Rough CPython object sizes (measured with tracemalloc on 3.11: within ~10 % for rows of short
# values, closer for wide ones): the change object, each row tuple, one tuple slot per value and a
# str header per text value.  Table objects are shared between changes and not counted.
_CHANGE_OVERHEAD: Final = 64
_ROW_OVERHEAD: Final = 56
_VALUE_OVERHEAD: Final = 8
_STR_OVERHEAD: Final = 49
_TABLE_OVERHEAD: Final = 8

_NOTHING: Final[tuple[Transaction, ...]] = ()


def _row_size(row: Row) -> int:
    return (
        _ROW_OVERHEAD
        + _VALUE_OVERHEAD * len(row)
        + sum([len(v) + _STR_OVERHEAD for v in row if v.__class__ is str])
    )


def change_size(change: Change) -> int:
    """Cheap estimate of the memory a change holds: value lengths plus a fixed overhead.

    Used for the memory budget and for the size of emitted parts; it runs once per change, so it
    stays a few attribute reads and one C-level ``sum``.
    """
    cls = change.__class__
    if cls is RowChange:
        size = _CHANGE_OVERHEAD
        row = change.before  # type: ignore[union-attr]
        if row is not None:
            size += _row_size(row)
        row = change.after  # type: ignore[union-attr]
        if row is not None:
            size += _row_size(row)
        return size
    if cls is Message:
        return _CHANGE_OVERHEAD + len(change.prefix) + len(change.content)  # type: ignore[union-attr]
    if cls is Truncate:
        return _CHANGE_OVERHEAD + _TABLE_OVERHEAD * len(change.tables)  # type: ignore[union-attr]
    if cls is LoadRows:
        return _CHANGE_OVERHEAD + sum([_row_size(r) for r in change.rows])  # type: ignore[union-attr]
    raise TypeError(f"not a change: {change!r:.200}")


class _Open:
    """Mutable state of one open (not yet committed or rolled back) transaction.

    Its changes, in order, are: the ``spill.count`` changes in ``spill`` (if any), then ``mem``.
    ``subs`` maps each live sub-transaction id to the index of its first change, in insertion
    order, which is also ascending index order; ``sub_offsets`` holds the spill-file offset of
    those first changes that have been spilled.
    """

    __slots__ = ("xid", "begin", "mem", "mem_bytes", "subs", "sub_offsets", "spill")

    def __init__(self, xid: int, begin: LogPosition) -> None:
        self.xid = xid
        self.begin = begin
        self.mem: list[Change] = []
        self.mem_bytes = 0
        self.subs: dict[int, int] = {}
        self.sub_offsets: dict[int, int] = {}
        self.spill: SpillFile | None = None

    def count(self) -> int:
        return (self.spill.count if self.spill is not None else 0) + len(self.mem)


class _Emission:
    """A multi-part emission in progress: the generator and how far the consumer got."""

    __slots__ = ("txn", "commit", "gen", "parts_out", "final_out")

    def __init__(self, txn: _Open, commit: Commit) -> None:
        self.txn = txn
        self.commit = commit
        self.gen: Iterator[Transaction] | None = None
        self.parts_out = 0
        self.final_out = False


class Assembler:
    """Turns a source's record stream into committed :class:`Transaction` parts in commit order.

    ``spill_dir``: directory for spill files; stale ``*.spill`` files in it are deleted here,
    because they belong to a previous process and the source will send their transactions again.
    ``memory_budget``: estimated bytes of changes held in memory over all open transactions.
    ``part_bytes`` / ``part_changes``: upper bounds of one emitted part (a single change larger
    than ``part_bytes`` still makes one part on its own).
    ``skip_upto``: commits at or before this position are already durable downstream (the
    outbox's last commit); they are dropped, not emitted again.
    ``start``: the position the source reads from; :meth:`restart_position` reports it until
    the stream says otherwise.  Defaults to ``skip_upto``.  On Oracle pass the persisted restart
    point, which can be older than ``skip_upto`` (an open transaction began before it).
    """

    def __init__(
        self,
        spill_dir: Path | str,
        *,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        part_bytes: int = DEFAULT_PART_BYTES,
        part_changes: int = DEFAULT_PART_CHANGES,
        skip_upto: LogPosition | None = None,
        start: LogPosition | None = None,
    ) -> None:
        for name, value in (
            ("memory_budget", memory_budget),
            ("part_bytes", part_bytes),
            ("part_changes", part_changes),
        ):
            if type(value) is not int or value <= 0:
                raise ValueError(f"Assembler.{name}: expected a positive integer, got {value!r}")
        self._dir = Path(spill_dir)
        clear_spill_dir(self._dir)
        self._budget = memory_budget
        self._part_bytes = part_bytes
        self._part_changes = part_changes
        self._skip_upto = skip_upto
        self._open: dict[int, _Open] = {}
        self._memory = 0
        self._spilled = 0
        self._spill_serial = 0
        self._last_commit: LogPosition | None = None
        # Restart point when nothing is open; only moves forward.
        self._horizon: LogPosition = start if start is not None else (skip_upto or ZERO)
        self._emission: _Emission | None = None
        self._broken: str | None = None
        self._handlers: dict[type, Callable[..., Iterator[Transaction] | tuple[Transaction, ...]]] = {
            Changed: self._on_changed,
            Begin: self._on_begin,
            Commit: self._on_commit,
            Abort: self._on_abort,
            Idle: self._on_idle,
            RelationSeen: self._on_relation,
        }

    # --- public API ----------------------------------------------------------------------------
    def feed(self, record: Record) -> Iterator[Transaction]:
        """Apply ``record``; return the transaction parts it completes, in order.

        The record's effect on the assembler happens *now*, not when the result is iterated, so
        a caller that ignores the (empty) result of a ``Changed`` record loses nothing.  A large
        transaction's parts are produced lazily, one at a time, so the caller can write each to
        the outbox before the next is read from the spill file.  All parts must be taken before
        the next ``feed()``: feeding earlier would interleave two transactions, so it stops the
        assembler (:class:`HodrFatal`; restart capture from :meth:`restart_position`).
        """
        if self._emission is not None:
            self._settle_emission()
        if self._broken is not None:
            raise HodrFatal(self._broken)
        handler = self._handlers.get(record.__class__)
        if handler is None:
            raise TypeError(f"Assembler.feed: not a record: {record!r:.200}")
        return iter(handler(record))

    def restart_position(self) -> LogPosition:
        """Where capture must restart after a crash so that nothing is lost (I7).

        The begin of the oldest open transaction (including one whose parts are being handed
        out), else the end of the last finished commit or the last ``Idle`` position.  The value
        read after a part was handed out is the one to persist together with that part: it moves
        past a transaction only once its final part is out.

        It can move backwards when a transaction first shows up with a begin older than commits
        already emitted: PostgreSQL sends a transaction at its commit (its Begin carries its first
        LSN), or streams it once it outgrows ``logical_decoding_work_mem``.  That is harmless
        there (the server keeps the WAL of in-progress transactions itself, and the flush position
        hodr reports must never go backwards anyway, so the reporter keeps its own maximum).
        Oracle rows arrive in SCN order, so a transaction's first row comes before any later
        commit.
        """
        begins = [t.begin for t in self._open.values()]
        em = self._emission
        if em is not None and not em.final_out:
            begins.append(em.txn.begin)
        return min(begins) if begins else self._horizon

    def open_transactions(self) -> int:
        """Number of open transactions (begun or with changes, not yet committed/rolled back)."""
        return len(self._open)

    @property
    def memory_bytes(self) -> int:
        """Estimated bytes of changes currently held in memory (budget: ``memory_budget``)."""
        return self._memory

    @property
    def spilled_bytes(self) -> int:
        """Bytes currently in spill files."""
        return self._spilled

    @property
    def last_commit(self) -> LogPosition | None:
        """Commit position of the last finished transaction: emitted (final part out), empty,
        or skipped as already durable.  ``None`` until the first one."""
        return self._last_commit

    def reset(self) -> None:
        """Forget every open transaction (deleting its spill file) because the source re-reads.

        Call it whenever the record stream restarts in the same process (a reconnect after a
        retryable capture error), before feeding the first record of the new stream.  Why: the
        source re-sends every transaction that commits after the position it restarts from, *from
        its first change* (PostgreSQL re-streams in-progress transactions too), so keeping what
        this assembler holds would duplicate changes inside a transaction, which nothing
        downstream could detect.  Commits already finished here are skipped on the re-read
        (``skip_upto`` moves up to :attr:`last_commit`).  An emission in progress is abandoned;
        its transaction comes again, from its first part, in the new stream.  The new stream must
        start at or before :meth:`restart_position` as read before this call.
        """
        if self._emission is not None:
            self._settle_emission()
        for txn in self._open.values():
            self._discard(txn)
        self._open.clear()
        last = self._last_commit
        if last is not None and (self._skip_upto is None or last > self._skip_upto):
            self._skip_upto = last
        self._broken = None

    def close(self) -> None:
        """Drop all open state and delete spill files (shutdown; idempotent)."""
        if self._emission is not None:
            self._settle_emission()
        for txn in self._open.values():
            self._discard(txn)
        self._open.clear()
        self._broken = "assembler: closed"

    # --- record handlers -----------------------------------------------------------------------
    def _on_changed(self, rec: Changed) -> tuple[Transaction, ...]:
        # The hot path (one call per change): keep it to dict lookups and additions.
        change = rec.change
        if change.__class__ is Message and not change.transactional:  # type: ignore[union-attr]
            return self._emit_message(rec)
        xid = rec.xid
        txn = self._open.get(xid)
        if txn is None:
            # A streamed transaction has no Begin: its first record is its begin (I7).
            txn = self._open[xid] = _Open(xid, rec.position)
        sub = rec.subxid
        if sub != xid and sub not in txn.subs:
            txn.subs[sub] = txn.count()
        txn.mem.append(change)
        size = change_size(change)
        txn.mem_bytes += size
        self._memory += size
        if self._memory > self._budget:
            self._relieve()
        return _NOTHING

    def _on_begin(self, rec: Begin) -> tuple[Transaction, ...]:
        if rec.xid in self._open:
            # A second Begin would mean the source re-sent a transaction into a live assembler
            # (e.g. a reconnect without a new assembler): merging would duplicate its changes.
            raise HodrFatal(
                f"assembler: Begin of xid {rec.xid} at {rec.position}, but it is already open since "
                f"{self._open[rec.xid].begin}; the source must restart with a new assembler"
            )
        self._open[rec.xid] = _Open(rec.xid, rec.position)
        return _NOTHING

    def _on_commit(self, rec: Commit) -> Iterator[Transaction] | tuple[Transaction, ...]:
        txn = self._open.pop(rec.xid, None)
        pos = rec.position
        skip = self._skip_upto is not None and pos <= self._skip_upto
        if txn is None or skip or txn.count() == 0:
            # Unknown xid (its changes were before the restart point, or it had none), empty,
            # or already durable downstream: nothing to ship, but the source may release it.
            if txn is not None:
                self._discard(txn)
            self._finish(pos)
            return _NOTHING
        self._check_order(pos, rec.xid)
        if txn.spill is None and len(txn.mem) <= self._part_changes and txn.mem_bytes <= self._part_bytes:
            self._memory -= txn.mem_bytes
            self._finish(pos)
            return (Transaction(rec.xid, txn.begin, pos, rec.commit_time, tuple(txn.mem)),)
        em = self._emission = _Emission(txn, rec)
        em.gen = self._parts(em)
        return em.gen

    def _on_abort(self, rec: Abort) -> tuple[Transaction, ...]:
        txn = self._open.get(rec.xid)
        if txn is None:
            return _NOTHING  # never seen (no changes, or before the restart point): nothing to drop
        if rec.subxid == rec.xid:
            del self._open[rec.xid]
            self._discard(txn)
            return _NOTHING
        cut = txn.subs.get(rec.subxid)
        if cut is None:
            return _NOTHING  # the sub-transaction made no changes
        offset = txn.sub_offsets.get(rec.subxid)
        # Forget the aborted sub-transaction and every one that first wrote after it (nested).
        while True:
            sub, _ = txn.subs.popitem()
            txn.sub_offsets.pop(sub, None)
            if sub == rec.subxid:
                break
        spill = txn.spill
        spilled = spill.count if spill is not None else 0
        if cut >= spilled:
            keep = cut - spilled
            freed = sum([change_size(c) for c in txn.mem[keep:]])
            del txn.mem[keep:]
        else:
            assert spill is not None and offset is not None, "spilled sub-transaction without offset"
            before = spill.size
            spill.truncate(offset, cut)
            self._spilled -= before - spill.size
            freed = txn.mem_bytes
            txn.mem = []
        txn.mem_bytes -= freed
        self._memory -= freed
        return _NOTHING

    def _on_idle(self, rec: Idle) -> tuple[Transaction, ...]:
        if rec.position > self._horizon:
            self._horizon = rec.position
        return _NOTHING

    def _on_relation(self, rec: RelationSeen) -> tuple[Transaction, ...]:
        return _NOTHING

    # --- emission ------------------------------------------------------------------------------
    def _emit_message(self, rec: Changed) -> tuple[Transaction, ...]:
        """A non-transactional message is its own unit, committed at its position, right now."""
        pos = rec.position
        if self._skip_upto is not None and pos <= self._skip_upto:
            self._finish(pos)
            return _NOTHING
        self._check_order(pos, rec.xid)
        self._finish(pos)
        return (Transaction(rec.xid, pos, pos, 0, (rec.change,)),)

    def _parts(self, em: _Emission) -> Iterator[Transaction]:
        """Hand out a large transaction part by part, holding at most one part in memory.

        A part is only handed out once the next change exists, so the last one can carry
        ``final=True``.  The assembler's state (last commit, restart point) moves past the
        transaction just before the final part goes out: that is the value the caller persists
        with it, and a crash before that point leaves the restart point at or before its begin.
        """
        txn, rec = em.txn, em.commit
        xid, begin, pos, when = rec.xid, txn.begin, rec.position, rec.commit_time
        limit_bytes, limit_changes = self._part_bytes, self._part_changes
        try:
            source = chain(txn.spill.read(), txn.mem) if txn.spill is not None else txn.mem
            part: list[Change] = []
            part_bytes = 0
            number = 0
            for change in source:
                size = change_size(change)
                if part and (part_bytes + size > limit_bytes or len(part) >= limit_changes):
                    em.parts_out = number + 1
                    yield Transaction(xid, begin, pos, when, tuple(part), number, False)
                    number += 1
                    part = []
                    part_bytes = 0
                part.append(change)
                part_bytes += size
            self._discard(txn)
            self._finish(pos)
            em.final_out = True
            yield Transaction(xid, begin, pos, when, tuple(part), number, True)
        finally:
            if not em.final_out:
                self._abandon(em)
            self._emission = None

    def _settle_emission(self) -> None:
        """Called by ``feed()`` while a multi-part emission exists: close it if the final part
        is out, otherwise the caller skipped parts and the assembler must stop."""
        em = self._emission
        assert em is not None and em.gen is not None
        em.gen.close()  # runs the generator's finally (if it started)
        if self._emission is not None:  # never started: close() does not run its finally
            self._abandon(em)
            self._emission = None

    def _abandon(self, em: _Emission) -> None:
        self._discard(em.txn)
        self._broken = (
            f"assembler: transaction xid {em.commit.xid} (commit {em.commit.position}) was abandoned "
            f"after {em.parts_out} part(s); restart capture from the restart point"
        )

    # --- bookkeeping ---------------------------------------------------------------------------
    def _check_order(self, pos: LogPosition, xid: int) -> None:
        last = self._last_commit
        if last is not None and pos <= last:
            raise HodrFatal(
                f"assembler: commit of xid {xid} at {pos} is not after the previous commit at {last}: "
                "the source delivered commits out of order (I2)"
            )

    def _finish(self, pos: LogPosition) -> None:
        # max(): an empty or already-durable commit never moves these backwards.
        if self._last_commit is None or pos > self._last_commit:
            self._last_commit = pos
        if pos > self._horizon:
            self._horizon = pos

    def _discard(self, txn: _Open) -> None:
        """Forget a transaction's changes: memory accounting and its spill file."""
        self._memory -= txn.mem_bytes
        txn.mem_bytes = 0
        txn.mem = []
        if txn.spill is not None:
            self._spilled -= txn.spill.size
            txn.spill.delete()
            txn.spill = None

    def _relieve(self) -> None:
        """Spill the largest open transactions until memory is within budget.

        Largest first: it frees the most memory per file write, and a big transaction is the one
        most likely to keep growing (the same choice PostgreSQL makes when it streams or spills).
        """
        while self._memory > self._budget:
            victim = max(self._open.values(), key=lambda t: t.mem_bytes, default=None)
            if victim is None or victim.mem_bytes == 0:
                return
            self._spill(victim)

    def _spill(self, txn: _Open) -> None:
        spill = txn.spill
        if spill is None:
            self._spill_serial += 1
            spill = txn.spill = SpillFile(self._dir, f"{self._spill_serial:06d}-{txn.xid}")
        first = spill.count
        # Sub-transactions whose first change is in the batch being spilled: remember where it
        # lands in the file, so a later rollback of that sub-transaction can truncate there.
        marked: list[tuple[int, int]] = []
        for sub, index in reversed(txn.subs.items()):
            if index < first:
                break
            marked.append((index - first, sub))
        marked.reverse()
        size_before = spill.size
        offsets = spill.append(txn.mem, [m for m, _ in marked])
        for (_, sub), offset in zip(marked, offsets, strict=True):
            txn.sub_offsets[sub] = offset
        self._spilled += spill.size - size_before
        self._memory -= txn.mem_bytes
        txn.mem = []
        txn.mem_bytes = 0


__all__ = [
    "Assembler",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_PART_BYTES",
    "DEFAULT_PART_CHANGES",
    "change_size",
]

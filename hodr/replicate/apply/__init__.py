"""The apply stage, engine-neutral: the ``Target`` port and the exactly-once ``ApplyLoop``.

Why this module holds no driver: the loop decides *what* is applied and *when* a position is
recorded (architecture I2, I4); the engine adapters (``apply/postgres.py``, ``apply/oracle.py``)
only decide *how* statements reach the database.  Unit tests drive the loop with a fake target.

Exactly once by construction (I4): the loop opens one target transaction, reads the applied
position *from the target* inside it, skips every source transaction whose commit position is at
or before it, applies the rest, records the commit position of the last complete source
transaction in the same target transaction, and commits.  A crash anywhere either loses the whole
target transaction (and the replay applies it again) or keeps it together with its position (and
the replay skips it).  Several small source transactions share one target transaction (the
measured speed-up is large, pg-notes §9.1); a source transaction is never split, so a group ends
only at a part with ``final=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from hodr.errors import HodrFatal
from hodr.position import LogPosition
from hodr.redo.records import Change
from hodr.replicate.transaction import Transaction

__all__ = ["ApplyLoop", "Target", "TargetTxn"]


class TargetTxn(Protocol):
    """One open transaction on the target database."""

    def applied_position(self) -> LogPosition:
        """The position recorded by the last committed target transaction (``ZERO`` if none),
        read inside this transaction so that the skip decision and the changes are atomic."""
        ...

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply *changes* in order; raise on any failure (the transaction is then rolled back)."""
        ...

    def record_applied(self, position: LogPosition) -> None:
        """Store *position* as the applied position, in this transaction."""
        ...


class Target(Protocol):
    """A target database: ``transaction()`` commits on clean exit and rolls back on exception."""

    def transaction(self) -> AbstractContextManager[TargetTxn]: ...


class _PartOrder:
    """Checks that parts arrive as whole source transactions in commit order (I2).

    A broken sequence means a corrupt or mis-wired stream; applying it could split or reorder a
    source transaction, so it stops the stage (I9) instead of being skipped.
    """

    def __init__(self) -> None:
        self._open: Transaction | None = None
        self._last_commit: LogPosition | None = None

    @property
    def inside(self) -> bool:
        """True between the first and the final part of a multi-part transaction."""
        return self._open is not None

    def check(self, part: Transaction) -> None:
        if self._open is not None:
            prev = self._open
            if part.xid != prev.xid or part.commit != prev.commit or part.part != prev.part + 1:
                raise HodrFatal(
                    f"apply: transaction xid {prev.xid} (commit {prev.commit}) broken after part "
                    f"{prev.part}: got xid {part.xid} part {part.part} (commit {part.commit})"
                )
        else:
            if part.part != 0:
                raise HodrFatal(
                    f"apply: transaction xid {part.xid} (commit {part.commit}) starts at part "
                    f"{part.part}, expected part 0"
                )
            if self._last_commit is not None and part.commit <= self._last_commit:
                raise HodrFatal(
                    f"apply: transactions out of commit order: {part.commit} (xid {part.xid}) "
                    f"after {self._last_commit}"
                )
        if part.final:
            self._open = None
            self._last_commit = part.commit
        else:
            self._open = part


class _Group:
    """The source transactions applied inside one target transaction.

    Changes of whole (one-part) transactions are buffered and handed to the target in one
    ``apply()`` call, up to ``flush_at`` changes: an adapter pays its per-call cost (a pipeline
    sync, a round trip) once per buffer instead of once per small transaction.  Parts of a
    multi-part transaction go through one call each, so memory stays bounded by a part.
    """

    def __init__(self, tx: TargetTxn, flush_at: int) -> None:
        self.tx = tx
        self.flush_at = flush_at
        self._buffer: list[Change] = []
        # Why read it here: the resume point must come from the target itself, in the same
        # transaction that applies and records, never from a local file or memory (I4).
        self.done = tx.applied_position()
        self.to_record: LogPosition | None = None
        self.last_seen: LogPosition | None = None
        self.txns = 0
        self.changes = 0

    def add(self, part: Transaction) -> None:
        # Why "<= done" skips: everything at or before the recorded position is already in the
        # target (it was committed together with that position); parts of one transaction share
        # its commit position, so a transaction is skipped or applied as a whole.
        if part.commit > self.done:
            if part.whole:
                self._buffer.extend(part.changes)
                if len(self._buffer) >= self.flush_at:
                    self.flush()
            else:
                self.flush()  # keep the order of changes
                self.tx.apply(part.changes)
            self.changes += len(part.changes)
            if part.final:
                self.to_record = part.commit
        if part.final:
            self.txns += 1
            self.last_seen = part.commit

    def flush(self) -> None:
        if self._buffer:
            self.tx.apply(self._buffer)
            self._buffer = []

    def record(self) -> LogPosition | None:
        """Record the commit of the last applied *complete* transaction (never a partial one)."""
        self.flush()
        if self.to_record is not None:
            self.tx.record_applied(self.to_record)
        return self.to_record

    def covered(self) -> LogPosition | None:
        """The highest position this group proves applied: recorded now or skipped as done."""
        return self.to_record if self.to_record is not None else self.last_seen


class _StreamEnded(Exception):
    """The part source ended inside a multi-part transaction: roll the target transaction back."""


class ApplyLoop:
    """Applies committed source transactions to a ``Target`` exactly once, grouped.

    ``max_txns`` / ``max_changes`` bound a group in the streaming form: a group is committed at
    the first transaction end where either limit is reached (a single big transaction may exceed
    ``max_changes``; its parts flow through one at a time, so memory stays bounded).

    Why 200 by default: bigger groups save commits (WAL flushes), but every UPDATE of a row that
    is already updated in the same target transaction walks that row's version chain, so a hot
    row (pgbench's branch) costs O(group size) per update.  On the pgbench-like benchmark (2
    shared vCPUs) groups of 2000 used ~30 % more server CPU than groups of 200 for the same
    throughput within noise; groups of 20 or fewer lost to commit cost.
    """

    def __init__(self, target: Target, max_txns: int = 200, max_changes: int = 20000) -> None:
        if max_txns < 1 or max_changes < 1:
            raise ValueError("ApplyLoop: max_txns and max_changes must be at least 1")
        self._target = target
        self.max_txns = max_txns
        self.max_changes = max_changes

    # -- one batch -----------------------------------------------------------------------------
    def apply(self, batch: Sequence[Transaction]) -> LogPosition | None:
        """Apply *batch* (whole transactions, parts in order) in one target transaction.

        Returns the position recorded, or None when the target already had all of it.  Raises
        ``ValueError`` for a batch that does not end at a transaction end: recording a position
        inside a transaction would split it (I4).
        """
        if not batch:
            return None
        if not batch[-1].final:
            raise ValueError(
                f"ApplyLoop.apply: batch ends inside transaction xid {batch[-1].xid} "
                f"(part {batch[-1].part} is not final); a source transaction is never split"
            )
        order = _PartOrder()
        for part in batch:
            order.check(part)
        with self._target.transaction() as tx:
            group = _Group(tx, self.max_changes)
            for part in batch:
                group.add(part)
            return group.record()

    # -- a stream of parts ---------------------------------------------------------------------
    def apply_stream(
        self,
        parts: Iterable[Transaction | None],
        on_applied: Callable[[LogPosition], None] = lambda _pos: None,
    ) -> LogPosition | None:
        """Pull parts and apply them in groups until *parts* is exhausted.

        ``None`` from *parts* means "nothing ready right now": the open group is committed at
        once (at a transaction end), so a quiet source does not hold changes back until a size
        limit is reached.  After every commit ``on_applied(pos)`` reports the highest position
        the target now holds, including positions skipped as already applied, so the caller can
        trim its queue after a replay too.  If *parts* ends inside a multi-part transaction, the
        open target transaction is rolled back (that transaction is re-sent after a restart).
        Returns the last position reported.
        """
        it = iter(parts)
        order = _PartOrder()
        reported: LogPosition | None = None
        first = _next_part(it)
        while first is not None:
            try:
                covered = self._stream_group(it, first, order)
            except _StreamEnded:
                return reported
            if covered is not None:
                on_applied(covered)
                reported = covered
            first = _next_part(it)
        return reported

    def _stream_group(
        self, it: Iterator[Transaction | None], first: Transaction, order: _PartOrder
    ) -> LogPosition | None:
        """Apply and commit one group starting at *first*; returns the position it covers."""
        with self._target.transaction() as tx:
            group = _Group(tx, self.max_changes)
            part: Transaction | None = first
            while part is not None:
                order.check(part)
                group.add(part)
                if order.inside:
                    part = _next_in_transaction(it)
                    continue
                if group.txns >= self.max_txns or group.changes >= self.max_changes:
                    break
                part = next(it, None)  # None: idle or exhausted, commit what we have
            group.record()
        return group.covered()


def _next_part(it: Iterator[Transaction | None]) -> Transaction | None:
    """The next part, skipping idle hints; None when the source is exhausted."""
    for part in it:
        if part is not None:
            return part
    return None


def _next_in_transaction(it: Iterator[Transaction | None]) -> Transaction:
    """The next part of an open multi-part transaction; idle hints cannot end it."""
    part = _next_part(it)
    if part is None:
        raise _StreamEnded()
    return part

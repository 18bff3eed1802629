"""A bounded handover between two threads that carries the producer's first error.

Why (architecture I10 and §9 item 6): every hand-off between pipeline threads must be bounded in
count *and* bytes, so that a fast producer (capture) cannot fill memory when the consumer (outbox
writer, applier) is slow: :meth:`Handover.put` blocks instead.  And a producer that dies must not
leave its consumer waiting forever for items that will never come: the producer's first error is
re-raised in the consumer, after the items handed over before it (they are complete and valid;
dropping them would only redo work).  The consumer can cancel, which makes a blocked producer fail
fast instead of hanging at shutdown.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hodr.errors import HodrError

T = TypeVar("T")


class HandoverClosed(HodrError):
    """The other side is gone: ``put`` after cancel/close, or ``get`` after the end of stream."""


class Handover(Generic[T]):
    """FIFO of at most ``max_items`` items and about ``max_bytes`` bytes.

    ``size_of(item)`` gives an item's weight in bytes (without it, items weigh 0 bytes unless
    ``put`` is given a ``size``: the count bound alone applies).
    One item larger than ``max_bytes`` is still accepted when the handover is empty, otherwise it
    could never pass.
    """

    def __init__(
        self,
        max_items: int,
        max_bytes: int,
        size_of: Callable[[T], int] | None = None,
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("handover bounds must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._finished = False  # producer said no more items
        self._cancelled = False  # consumer gave up

    # -- producer -----------------------------------------------------------------------------
    def put(self, item: T, size: int | None = None, timeout: float | None = None) -> None:
        """Hand ``item`` over, blocking while full; ``TimeoutError`` after ``timeout`` seconds.

        Raises :class:`HandoverClosed` if the consumer cancelled or the producer already
        finished/failed.
        """
        if size is None:
            size = self._size_of(item) if self._size_of is not None else 0
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._cancelled:
                    raise HandoverClosed("handover: the consumer stopped")
                if self._finished or self._error is not None:
                    raise HandoverClosed("handover: put after close/fail")
                if not self._items or (
                    len(self._items) < self.max_items and self._bytes + size <= self.max_bytes
                ):
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"handover full ({len(self._items)} items, {self._bytes} bytes)")
                self._cond.wait(remaining)
            self._items.append((item, size))
            self._bytes += size
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """The producer failed: the consumer gets ``exc`` after the items already handed over.
        Only the first error is kept (later ones are consequences)."""
        with self._cond:
            if self._error is None and not self._finished:
                self._error = exc
            self._cond.notify_all()

    def close(self) -> None:
        """The producer is done: the consumer's iteration ends after the last item."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    # -- consumer -----------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> T:
        """The next item; re-raises the producer's error once the items before it are consumed;
        :class:`HandoverClosed` at the end of stream; ``TimeoutError`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._error is not None:
                    raise self._error
                if self._finished or self._cancelled:
                    raise HandoverClosed("handover: end of stream")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("handover empty")
                self._cond.wait(remaining)
            item, size = self._items.popleft()
            self._bytes -= size
            self._cond.notify_all()
            return item

    def cancel(self) -> None:
        """The consumer stops: a blocked or later ``put`` raises :class:`HandoverClosed`."""
        with self._cond:
            self._cancelled = True
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()

    def __iter__(self) -> Iterator[T]:
        """Items until the producer closes (or its error is raised)."""
        while True:
            try:
                yield self.get()
            except HandoverClosed:
                return

    # -- status -------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def bytes(self) -> int:
        with self._cond:
            return self._bytes


__all__ = ["Handover", "HandoverClosed"]

"""The unit that flows from the assembler to the applier: a committed transaction, in parts.

Why parts: a transaction can be larger than memory (architecture I10).  The assembler emits it
as parts ``0..n-1`` that share ``xid`` and ``commit``; only the last has ``final=True``.  Every
later stage is FIFO, so parts arrive in order; the applier applies all parts of one source
transaction inside one target transaction and records the commit position with the final part,
so a transaction is never split across target commits (I4).  Small transactions are one part.
"""

from __future__ import annotations

from dataclasses import dataclass

from hodr.position import LogPosition
from hodr.redo.records import Change


@dataclass(frozen=True, slots=True)
class Transaction:
    """One committed source transaction (or one part of it), in commit order."""

    xid: int
    begin: LogPosition
    commit: LogPosition
    commit_time: int
    changes: tuple[Change, ...]
    part: int = 0
    final: bool = True

    @property
    def whole(self) -> bool:
        """True when this object is the complete transaction (a single part)."""
        return self.part == 0 and self.final

"""The one coordinate every stage shares: a point in a primary's log history.

Why a dedicated type (architecture I1): histories of different primaries are not comparable by
LSN/SCN alone, so every promotion bumps ``epoch`` and positions compare epoch first.  Values are
plain integers, never floats or strings, and never anything that resets when a process restarts
(the cause of stale standbys being promoted in other HA tools).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_PACK = struct.Struct(">QQQ")


@dataclass(frozen=True, order=True, slots=True)
class LogPosition:
    """A point in a primary's log history; totally ordered, shared by every stage.

    ``lsn`` is a PostgreSQL LSN or an Oracle SCN as a plain int; ``seq`` breaks ties when several
    commits share one SCN (Oracle), and is 0 on PostgreSQL.
    """

    epoch: int
    lsn: int
    seq: int = 0

    def __post_init__(self) -> None:
        for name in ("epoch", "lsn", "seq"):
            value = getattr(self, name)
            if type(value) is not int or value < 0 or value >= 1 << 64:
                raise ValueError(f"LogPosition.{name}: expected an integer 0..2^64-1, got {value!r}")

    # -- text forms -------------------------------------------------------------------------
    def __str__(self) -> str:
        text = f"{self.epoch}:{format_lsn(self.lsn)}"
        return f"{text}.{self.seq}" if self.seq else text

    @classmethod
    def parse(cls, text: str) -> LogPosition:
        """Inverse of ``str()``: ``"E:XXXXXXXX/YYYYYYYY[.seq]"``."""
        try:
            epoch_s, rest = text.split(":", 1)
            lsn_s, _, seq_s = rest.partition(".")
            return cls(int(epoch_s), parse_lsn(lsn_s), int(seq_s) if seq_s else 0)
        except ValueError as exc:
            raise ValueError(f"not a log position: {text!r} (expected EPOCH:HI/LO[.SEQ])") from exc

    # -- binary / JSON forms ----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return _PACK.pack(self.epoch, self.lsn, self.seq)

    @classmethod
    def from_bytes(cls, data: bytes) -> LogPosition:
        return cls(*_PACK.unpack(data))

    def to_list(self) -> list[int]:
        return [self.epoch, self.lsn, self.seq]

    @classmethod
    def from_list(cls, values: list[int] | tuple[int, ...]) -> LogPosition:
        return cls(int(values[0]), int(values[1]), int(values[2]) if len(values) > 2 else 0)


ZERO = LogPosition(0, 0, 0)


def format_lsn(lsn: int) -> str:
    """PostgreSQL's ``XXXXXXXX/YYYYYYYY`` form of a 64-bit LSN."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Parse ``XXXXXXXX/YYYYYYYY`` (PostgreSQL) or a plain decimal (Oracle SCN)."""
    if "/" in text:
        hi, lo = text.split("/", 1)
        return (int(hi, 16) << 32) | int(lo, 16)
    return int(text)

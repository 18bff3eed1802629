"""Per-transaction overflow files: where open transactions go when the memory budget is full.

Why files at all (architecture I10): a source transaction can be far larger than the memory hodr
may use, and with PostgreSQL ``streaming on`` (and always on Oracle LogMiner) its changes arrive
long before its commit.  The assembler keeps open transactions in memory up to a budget and moves
the largest one's changes here beyond it.

Why no fsync, ever (architecture I3): a spill file is a *cache*.  Until the assembler's restart
point (I7) has passed a transaction, the source log can produce it again, and a new assembler
deletes every spill file on start.  So a crash may leave garbage, never a hole.

Format: a sequence of records ``[u32 big-endian length][msgpack body]``, one per change, body as
produced by :mod:`hodr.replicate.changeobj` with tables *interned*: a change refers to its table by
an index into a list kept in this object's memory.  The list never needs to be on disk, because
only the process that wrote a spill file ever reads it (the file is private and short-lived), and
it costs one entry per distinct table object instead of the table's columns in every record.

One record per change (rather than batches) so that a sub-transaction rollback can cut the file at
the exact change where that sub-transaction started: the assembler asks :meth:`SpillFile.append`
for the offsets of those changes and later calls :meth:`SpillFile.truncate`.

No file descriptor stays open between calls: a busy server can have thousands of open (spilled)
transactions, and one descriptor per transaction would hit the process limit.  Each append
opens, writes and closes; appends are large batches, so this costs little.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgpack

from hodr.errors import CorruptData, HodrFatal
from hodr.redo.records import Change, Table
from hodr.replicate.changeobj import change_from_obj, change_to_obj, make_packer, unpackb

SUFFIX = ".spill"
_LEN = struct.Struct(">I")
_MAX_RECORD = (1 << 32) - 1
_WRITE_CHUNK = 1 << 20  # hand the kernel ~1 MiB at a time: few syscalls, no giant joined buffer
_READ_CHUNK = 1 << 20


class SpillError(HodrFatal):
    """A spill file could not be written or removed (disk full, permissions).

    Fatal for this assembler: its in-memory picture no longer matches the file.  Capture restarts
    from the restart point (I7) with a fresh assembler, which is always safe because spill files
    are only a cache.
    """


def clear_spill_dir(directory: Path) -> int:
    """Create ``directory`` if needed and delete every stale ``*.spill`` file in it.

    Called when an assembler starts: files left by a crashed process describe transactions the
    source will send again, so they are garbage.  Only files with our suffix are touched, so a
    misconfigured directory shared with other data loses nothing else.  Returns how many were
    removed.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        removed = 0
        for entry in os.scandir(directory):
            if entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        return removed
    except OSError as exc:
        raise SpillError(f"spill directory {directory}: cannot clear stale spill files: {exc}") from exc


class SpillFile:
    """The overflow of one open transaction: an append-only file of its changes, in order.

    ``size`` (bytes) and ``count`` (changes) describe the file's valid content; both shrink on
    :meth:`truncate`.  Not thread-safe: it belongs to the assembler's thread.
    """

    __slots__ = ("path", "size", "count", "_tables", "_table_ids", "_packer")

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / f"{name}{SUFFIX}"
        self.size = 0
        self.count = 0
        self._tables: list[Table] = []
        # Keyed by id(): hashing a Table hashes all its columns on every call, while capture
        # hands out the same Table object for a relation until its definition changes.  The
        # list above keeps each object alive, so an id is never reused while it is a key here.
        self._table_ids: dict[int, int] = {}
        self._packer = make_packer()
        try:
            # "wb" truncates: a same-named leftover can never leak old records into this one.
            with open(self.path, "wb"):
                pass
        except OSError as exc:
            raise SpillError(f"spill file {self.path}: cannot create: {exc}") from exc

    def _table_ref(self, table: Table) -> int:
        index = self._table_ids.get(id(table))
        if index is None:
            index = self._table_ids[id(table)] = len(self._tables)
            self._tables.append(table)
        return index

    def append(self, changes: Sequence[Change], marks: Sequence[int] = ()) -> list[int]:
        """Append ``changes``; return the file offset of ``changes[i]`` for each ``i`` in ``marks``.

        ``marks`` must be ascending.  The assembler marks the first change of each sub-transaction
        so that it can later cut the file there.
        """
        pack = self._packer.pack
        ref = self._table_ref
        header = _LEN.pack
        offsets: list[int] = []
        mark_iter = iter(marks)
        next_mark = next(mark_iter, -1)
        offset = self.size
        buf = bytearray()
        try:
            with open(self.path, "ab") as f:
                for i, change in enumerate(changes):
                    if i == next_mark:
                        offsets.append(offset + len(buf))
                        next_mark = next(mark_iter, -1)
                    body = pack(change_to_obj(change, ref))
                    if len(body) > _MAX_RECORD:
                        raise SpillError(f"spill file {self.path}: one change is {len(body)} bytes")
                    buf += header(len(body))
                    buf += body
                    if len(buf) >= _WRITE_CHUNK:
                        f.write(buf)
                        offset += len(buf)
                        buf.clear()
                if buf:
                    f.write(buf)
                    offset += len(buf)
        except OSError as exc:
            raise SpillError(f"spill file {self.path}: write failed at offset {offset}: {exc}") from exc
        self.size = offset
        self.count += len(changes)
        return offsets

    def truncate(self, offset: int, count: int) -> None:
        """Cut the file back to ``offset`` bytes, which hold the first ``count`` changes."""
        if not 0 <= offset <= self.size or not 0 <= count <= self.count:
            raise ValueError(f"spill file {self.path}: bad truncate to {offset} bytes / {count} changes")
        try:
            os.truncate(self.path, offset)
        except OSError as exc:
            raise SpillError(f"spill file {self.path}: truncate to {offset} failed: {exc}") from exc
        self.size = offset
        self.count = count

    def read(self) -> Iterator[Change]:
        """Yield the spilled changes in order, reading ~1 MiB at a time (never the whole file).

        A short file or a record that does not decode raises :class:`CorruptData` naming the file
        and offset: it would mean something other than this object wrote to it.
        """
        tables = self._tables.__getitem__
        unpack_len = _LEN.unpack_from
        base = 0  # file offset of data[0]
        yielded = 0
        remaining = self.size
        tail = b""
        need = 0
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - must stay open across yields
        except OSError as exc:
            raise SpillError(f"spill file {self.path}: cannot open: {exc}") from exc
        with f:
            while remaining > 0:
                chunk = f.read(min(max(_READ_CHUNK, need), remaining))
                if not chunk:
                    raise CorruptData(
                        f"spill file {self.path}: ends at {base + len(tail)}, expected {self.size} bytes"
                    )
                remaining -= len(chunk)
                data = tail + chunk if tail else chunk
                view = memoryview(data)
                pos, n, need = 0, len(data), 0
                while n - pos >= 4:
                    (length,) = unpack_len(data, pos)
                    end = pos + 4 + length
                    if end > n:
                        need = end - n
                        break
                    try:
                        change = change_from_obj(unpackb(view[pos + 4 : end]), tables)
                    except (ValueError, IndexError, msgpack.UnpackException) as exc:
                        raise CorruptData(
                            f"spill file {self.path}: bad record at {base + pos}: {exc}"
                        ) from exc
                    yielded += 1
                    yield change
                    pos = end
                view.release()
                tail = data[pos:]
                base += pos
        if tail or yielded != self.count:
            raise CorruptData(
                f"spill file {self.path}: {yielded} changes and {len(tail)} stray bytes, "
                f"expected {self.count} changes"
            )

    def delete(self) -> None:
        """Remove the file (idempotent)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SpillError(f"spill file {self.path}: cannot remove: {exc}") from exc
        self.size = 0
        self.count = 0


__all__ = ["SUFFIX", "SpillError", "SpillFile", "clear_spill_dir"]

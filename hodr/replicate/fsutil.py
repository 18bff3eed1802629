"""Durable small files, the boring way (architecture I5), and one error for a failing disk.

Why this module: every stage that keeps state on disk (outbox cursors, queue meta, segment files)
must survive a crash at any instruction and a power cut at any moment.  Small state files are
therefore never rewritten in place: we write a temporary file in the *same directory* (a rename
is only atomic within one file system), ``fsync`` it (so its contents exist before its name
does), ``os.replace`` it over the old name (atomic: a reader sees the old or the new file,
never a mix), then ``fsync`` the directory (so the rename itself survives a power cut).

A failing disk (ENOSPC, EACCES, EIO, EROFS...) must stop the stage with one line naming the
path, never be retried blindly or swallowed: :class:`StorageError` is a :class:`HodrFatal`, and
since no ack is ever sent for data that did not reach the disk, stopping loses nothing (I6, I9).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hodr.errors import HodrFatal

StrPath = str | os.PathLike[str]

_HINTS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EIO: "I/O error",
}


class StorageError(HodrFatal):
    """A file operation failed; the stage must stop (nothing is acked past what was fsynced).

    ``path`` names the file or directory, ``errno`` the OS error (``None`` when unknown).
    """

    def __init__(self, action: str, path: StrPath, exc: OSError) -> None:
        self.path = os.fspath(path)
        self.errno = exc.errno
        hint = _HINTS.get(exc.errno or -1, exc.strerror or type(exc).__name__)
        code = errno.errorcode.get(exc.errno or -1, "")
        detail = f"{hint} ({code})" if code else hint
        super().__init__(f"cannot {action} {self.path}: {detail}")


@contextmanager
def storage_errors(action: str, path: StrPath) -> Iterator[None]:
    """Turn any ``OSError`` inside the block into a one-line :class:`StorageError` naming ``path``.

    Why every OSError and not only ENOSPC/EACCES: after a failed ``fsync`` (EIO) the kernel may
    already have dropped the dirty pages, so retrying would report success for lost data
    ("fsyncgate"); the only safe reaction to any write-path error is to stop.
    """
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(action, path, exc) from exc


def fsync_dir(path: StrPath) -> None:
    """``fsync`` a directory so that creations, renames and deletions in it survive a power cut."""
    with storage_errors("fsync directory", path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (a regular file may accept a short write)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: StrPath, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that after a crash it holds the old or the new content.

    Order (each step is required, see the module docstring): temp file in the same directory →
    write → fsync(file) → ``os.replace`` → fsync(directory).  The temp file is removed on every
    error path so a full disk does not also leak files.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    with storage_errors("write", target):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            try:
                write_all(fd, data)
                # The content must be on disk before the new name points at it, or a power cut
                # right after the rename could leave an empty or partial file under the real name.
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    # The rename is a directory change: without this fsync the old file may come back.
    fsync_dir(target.parent)


def read_small(path: StrPath) -> bytes | None:
    """Contents of a small state file, ``None`` if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError("read", path, exc) from exc


def make_dirs(path: StrPath) -> Path:
    """Create ``path`` (and parents) durably: the new directory entry is fsynced in its parent."""
    p = Path(path)
    if p.is_dir():
        return p
    with storage_errors("create directory", p):
        p.mkdir(parents=True, exist_ok=True)
    fsync_dir(p.parent)
    return p


__all__ = [
    "StorageError",
    "atomic_write",
    "fsync_dir",
    "make_dirs",
    "read_small",
    "storage_errors",
    "write_all",
]

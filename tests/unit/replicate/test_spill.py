"""Spill files and the change ⇄ msgpack object helpers (hodr.replicate.spill / changeobj)."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest

from hodr.errors import CorruptData
from hodr.redo.records import (
    UNCHANGED,
    Column,
    LoadRows,
    Message,
    Op,
    RowChange,
    Table,
    Truncate,
)
from hodr.replicate.changeobj import (
    change_from_obj,
    change_to_obj,
    make_packer,
    packb,
    table_from_obj,
    table_to_obj,
    unpackb,
)
from hodr.replicate.spill import SUFFIX, SpillFile, clear_spill_dir

T1 = Table(
    "public",
    "accounts",
    (Column("id", "integer", True, 23), Column("name", "text", False, 25), Column("doc", "jsonb")),
    identity="d",
    relid=16384,
)
T2 = Table("s", "keyless", (Column("a", "text"), Column("b", "bytea")), identity="f", relid=16390)


def sample_changes() -> list:
    return [
        RowChange(Op.INSERT, T1, None, ("1", "ann", None)),
        RowChange(Op.UPDATE, T1, ("1", None, None), ("1", "anne", UNCHANGED)),
        RowChange(Op.UPDATE, T1, None, ("2", UNCHANGED, UNCHANGED)),
        RowChange(Op.DELETE, T2, ("x", "\\x00ff"), None),
        RowChange(Op.INSERT, T1, None, ("3", "", "é ✓ \U0001f600")),  # empty string is not NULL
        Truncate((T1, T2), cascade=True, restart_identity=False),
        Message("hodr", b"\x00epoch-end\xff", transactional=True),
        Message("other", b"", transactional=False),
        LoadRows(T2, (("a", None), (None, UNCHANGED), ("c", "d"))),
    ]


# --- changeobj ---------------------------------------------------------------------------------
def test_changeobj_round_trip_inline_tables() -> None:
    for change in sample_changes():
        data = packb(change_to_obj(change))
        assert change_from_obj(unpackb(data)) == change


def test_changeobj_keeps_unchanged_identity_and_null_distinct() -> None:
    change = RowChange(Op.UPDATE, T1, None, ("1", None, UNCHANGED))
    back = change_from_obj(unpackb(make_packer().pack(change_to_obj(change))))
    assert back.after[1] is None
    assert back.after[2] is UNCHANGED
    assert isinstance(back.after, tuple)


def test_changeobj_table_round_trip() -> None:
    assert table_from_obj(unpackb(packb(table_to_obj(T1)))) == T1


def test_changeobj_interned_tables() -> None:
    tables = [T1, T2]
    change = Truncate((T2, T1))
    obj = change_to_obj(change, tables.index)
    assert obj[1] == (1, 0)
    assert change_from_obj(unpackb(packb(obj)), tables.__getitem__) == change


def test_changeobj_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not an encoded change"):
        change_from_obj((9, "x"))
    with pytest.raises(ValueError, match="not an encoded change"):
        change_from_obj((0, "Z", table_to_obj(T1), None, ("1",)))
    with pytest.raises(ValueError, match="extension type 7"):
        unpackb(msgpack.packb(msgpack.ExtType(7, b"")))
    with pytest.raises(TypeError):
        change_to_obj("not a change")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot encode"):
        packb(object())


# --- spill files -------------------------------------------------------------------------------
def test_spill_round_trip_and_interning(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, "t1")
    changes = sample_changes()
    spill.append(changes[:4])
    spill.append(changes[4:])
    assert spill.count == len(changes)
    assert spill.size == os.path.getsize(spill.path)
    assert list(spill.read()) == changes
    # Tables are written by reference: the file does not repeat T1's column names per change.
    data = spill.path.read_bytes()
    assert data.count(b"accounts") == 0


def test_spill_marks_and_truncate(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, "t2")
    a = [RowChange(Op.INSERT, T1, None, (str(i), "v" * i, None)) for i in range(10)]
    offsets = spill.append(a[:6], marks=[0, 2, 5])
    assert offsets[0] == 0 and offsets[0] < offsets[1] < offsets[2] < spill.size
    more = spill.append(a[6:], marks=[1])
    size_full = spill.size
    assert list(spill.read()) == a
    # cut where a[7] starts, then continue appending
    spill.truncate(more[0], 7)
    assert spill.size < size_full and os.path.getsize(spill.path) == spill.size
    assert list(spill.read()) == a[:7]
    spill.truncate(offsets[1], 2)
    spill.append([a[9]])
    assert list(spill.read()) == [a[0], a[1], a[9]]
    spill.truncate(0, 0)
    assert list(spill.read()) == []
    with pytest.raises(ValueError):
        spill.truncate(10, 0)


def test_spill_records_larger_than_read_chunk(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, "big")
    big = RowChange(Op.INSERT, T1, None, ("1", "x" * (3 << 20), None))
    small = [RowChange(Op.INSERT, T1, None, (str(i), None, None)) for i in range(2000)]
    spill.append([*small, big, *small])
    assert list(spill.read()) == [*small, big, *small]


def test_spill_detects_damage(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, "dmg")
    spill.append(sample_changes())
    os.truncate(spill.path, spill.size - 3)
    with pytest.raises(CorruptData, match=r"dmg\.spill"):
        list(spill.read())


def test_spill_delete_is_idempotent(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path, "gone")
    spill.append(sample_changes())
    spill.delete()
    assert not spill.path.exists()
    spill.delete()
    assert spill.size == 0 and spill.count == 0


def test_spill_file_name_reuse_starts_empty(tmp_path: Path) -> None:
    first = SpillFile(tmp_path, "same")
    first.append(sample_changes())
    second = SpillFile(tmp_path, "same")
    assert second.path.stat().st_size == 0
    assert list(second.read()) == []


def test_clear_spill_dir_removes_only_spill_files(tmp_path: Path) -> None:
    d = tmp_path / "new" / "spill"
    assert clear_spill_dir(d) == 0 and d.is_dir()
    (d / f"000001-42{SUFFIX}").write_bytes(b"stale")
    (d / f"x{SUFFIX}").write_bytes(b"")
    (d / "keep.txt").write_text("not ours")
    (d / f"subdir{SUFFIX}").mkdir()
    assert clear_spill_dir(d) == 2
    assert sorted(p.name for p in d.iterdir()) == ["keep.txt", f"subdir{SUFFIX}"]

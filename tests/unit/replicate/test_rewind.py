"""Undo statements of the crashed-primary rewind, and when a rewind is due (no database here;
tests/integration/test_rewind.py runs them on real servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hodr.config import Config
from hodr.position import LogPosition
from hodr.redo.records import UNCHANGED, Column, Message, Op, RowChange, Table, Truncate
from hodr.replicate.nodestate import NodeState
from hodr.replicate.rewind import (
    TailTxn,
    Unrewindable,
    needs_rewind,
    record_primary_term,
    undo_plan,
    undo_statement,
)

KEYED = Table("public", "acc", (Column("id", "integer", key=True), Column("v", "text")), identity="d")
FULL = Table("public", "log", (Column("a", "integer", key=True), Column("b", "text", key=True)), identity="f")


def test_insert_on_keyed_table_deletes_by_key_and_checks_the_rest() -> None:
    undo = undo_statement(RowChange(Op.INSERT, KEYED, None, ("5", None)))
    assert undo is not None
    assert undo.sql == 'DELETE FROM "public"."acc" WHERE "id" = %s AND "v" IS NULL'
    assert undo.params == ("5",)


def test_insert_on_full_table_deletes_one_equal_row() -> None:
    undo = undo_statement(RowChange(Op.INSERT, FULL, None, ("1", "x")))
    assert undo is not None
    assert undo.sql.startswith('DELETE FROM "public"."log" WHERE (tableoid, ctid) = (SELECT')
    assert '"a"::text = %s::integer::text AND "b"::text = %s::text::text LIMIT 1' in undo.sql
    assert undo.params == ("1", "x")


def test_update_with_full_identity_restores_only_changed_columns() -> None:
    undo = undo_statement(RowChange(Op.UPDATE, FULL, ("1", "old"), ("1", "new")))
    assert undo is not None
    assert undo.sql.startswith('UPDATE "public"."log" SET "b" = %s WHERE (tableoid, ctid) = (SELECT')
    assert undo.params == ("old", "1", "new")


def test_update_with_unchanged_toast_value_matches_the_old_value() -> None:
    undo = undo_statement(RowChange(Op.UPDATE, FULL, ("1", "big"), ("2", UNCHANGED)))
    assert undo is not None
    assert undo.params == ("1", "2", "big")


def test_delete_with_full_identity_reinserts_the_old_row() -> None:
    undo = undo_statement(RowChange(Op.DELETE, FULL, ("1", None), None))
    assert undo is not None
    assert undo.sql == 'INSERT INTO "public"."log" ("a", "b") OVERRIDING SYSTEM VALUE VALUES (%s, %s)'
    assert undo.params == ("1", None)


@pytest.mark.parametrize(
    "change",
    [
        RowChange(Op.UPDATE, KEYED, None, ("1", "new")),
        RowChange(Op.UPDATE, KEYED, ("1", None), ("2", "new")),
        RowChange(Op.DELETE, KEYED, ("1", None), None),
    ],
)
def test_without_full_identity_update_and_delete_cannot_be_undone(change: RowChange) -> None:
    with pytest.raises(
        Unrewindable, match=r"public\.acc.*REPLICA IDENTITY DEFAULT.*needs REPLICA IDENTITY FULL"
    ):
        undo_statement(change)


def test_truncate_cannot_be_undone_and_messages_need_nothing() -> None:
    with pytest.raises(Unrewindable, match=r"TRUNCATE of public\.acc"):
        undo_statement(Truncate((KEYED,)))
    assert undo_statement(Message("hodr", b"x")) is None


def test_quotes_and_percent_in_names_are_safe() -> None:
    t = Table("s", 'we"ird%', (Column("k%", "integer", key=True),), identity="d")
    undo = undo_statement(RowChange(Op.INSERT, t, None, ("1",)))
    assert undo is not None
    assert undo.sql == 'DELETE FROM "s"."we""ird%%" WHERE "k%%" = %s'


def test_plan_undoes_last_change_first() -> None:
    p = LogPosition(1, 10)
    t1 = TailTxn(
        1,
        p,
        0,
        (RowChange(Op.INSERT, KEYED, None, ("1", "a")), RowChange(Op.INSERT, KEYED, None, ("2", "b"))),
    )
    t2 = TailTxn(2, LogPosition(1, 20), 0, (RowChange(Op.INSERT, KEYED, None, ("3", "c")),))
    assert [u.params[0] for u in undo_plan([t1, t2])] == ["3", "2", "1"]


def test_when_a_rewind_is_due(tmp_path: Path) -> None:
    assert not needs_rewind(NodeState())  # never primary
    assert needs_rewind(NodeState(epoch=1, slot_ready=True))  # old file: primary by config, no term
    assert needs_rewind(NodeState(epoch=2, primary_epochs=({"epoch": 2, "start": "1:0/10"},)))
    assert not needs_rewind(
        NodeState(epoch=2, slot_ready=True, primary_epochs=({"epoch": 2, "last": "2:0/20"},))
    )


def test_primary_start_records_an_open_term(tmp_path: Path) -> None:
    cfg = Config(role="primary", data_dir=str(tmp_path))
    NodeState(epoch=1, primary_epochs=({"epoch": 1, "last": "1:0/10"},)).save(tmp_path)
    record_primary_term(cfg)
    assert NodeState.load(tmp_path).primary_epochs == ({"epoch": 1},)
    record_primary_term(cfg)
    assert NodeState.load(tmp_path).primary_epochs == ({"epoch": 1},)

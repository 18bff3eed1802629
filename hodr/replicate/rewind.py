"""Rewind of a crashed primary's unacknowledged tail, so it can rejoin as a standby by itself.

Why this exists: a primary that crashes never demotes, so it never learns where its standbys
stopped.  Its database may hold transactions no standby received -- in sync mode exactly the
commits that were written locally and still waited for the standby's ack when it died (their
clients never got a commit OK).  Streaming the new primary's history on top of that database
would either apply history twice or silently run on a diverged copy.

What it does, when the daemon starts as a standby and its node state says it was primary in its
current epoch without a clean demote (no ``last`` recorded for that term):

1. The database is made read-only for applications, their open sessions are ended (a COMMIT
   still waiting for the synchronous standby is ended unacknowledged), and only then is hodr's
   own name taken out of ``synchronous_standby_names`` (the walsender it named belonged to the
   term that ended; left there, every commit on this standby -- the applier's too -- would wait
   forever; taken out earlier, it would release those waiting commits as successful).
2. The node's own logical slot still exists after a crash.  The transactions after the last
   commit the required standbys acknowledged (the slot's confirmed position, and the acks this
   node persisted in its outbox, whichever is later) are read from it up to the WAL end as of
   now, through the ordinary capture path (:class:`~hodr.redo.postgres.PostgresSource` and the
   :class:`~hodr.replicate.assembler.Assembler`).
3. The tail is saved as JSON lines under ``<data_dir>/rewound/`` (fsynced) before anything is
   undone: in async mode a client may have seen those commits, so they must never just vanish.
4. Every change is undone in reverse commit order in one database transaction
   (``session_replication_role = replica``, ``synchronous_commit = local``), which also records
   the base commit as the applied position (the same row :func:`mark_applied` writes) and a
   ``hodr.markers`` row, so a crash half-way is recognised and never undoes anything twice.
   INSERT → delete that row; UPDATE → restore the old row; DELETE → insert the old row back.  The
   old row is only in the log with REPLICA IDENTITY FULL, which hodr sets on keyless tables
   only: on tables with a primary key only inserts can be undone.  Anything that cannot be undone
   exactly (old values missing, TRUNCATE, a row not found as expected) undoes nothing and marks
   the node diverged with a one-line reason; the agent's rejoin guard then refuses it.
5. The slot is dropped, the standby queue starts a new lineage at the base commit, the term's
   ``last`` is the base commit, and the node goes on as a standby of the new primary, which
   serves it from that commit if its outbox holds it (else the transport asks for a reseed).

Automatic only in sync mode (the tail is in doubt, never acknowledged); in async mode only with
``rejoin_rewind: true``.  An empty tail needs no decision: nothing is undone, nothing is lost.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from hodr.config import Config
from hodr.errors import HodrError
from hodr.position import LogPosition, format_lsn, parse_lsn
from hodr.redo.records import UNCHANGED, Change, LoadRows, Message, Op, Row, RowChange, Table, Truncate, Value
from hodr.replicate.fsutil import atomic_write
from hodr.replicate.nodestate import NodeState

log = logging.getLogger("hodr.rewind")

#: More changes than this in the tail are not undone (kept in memory; a tail this large is not a
#: handful of in-doubt commits but a node far ahead of its standbys: an operator's decision).
MAX_CHANGES = 100_000
#: How long reading the tail from the slot may take.
READ_TIMEOUT_S = 120.0
#: ``hodr.markers`` content written by the undo transaction: ``rewound epoch E to POSITION``.
MARKER_TEXT = "rewound epoch {epoch} to {base}"


class Unrewindable(Exception):
    """A change that cannot be undone exactly; the message is the one-line reason."""


@dataclass(frozen=True, slots=True)
class Undo:
    """One statement that undoes one row change; it must affect exactly one row."""

    sql: str
    params: tuple[Value, ...]
    what: str


@dataclass(frozen=True, slots=True)
class TailTxn:
    """A committed transaction of the tail with its row changes (messages left out)."""

    xid: int
    commit: LogPosition
    commit_time: int
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :func:`rejoin` did: ``rewound`` (possibly 0 transactions) or ``diverged``."""

    diverged: bool
    reason: str = ""
    base: LogPosition | None = None
    txns: int = 0
    file: Path | None = None


# --- when ---------------------------------------------------------------------------------------
def needs_rewind(state: NodeState) -> bool:
    """Was this node primary in its current epoch without a clean demote?

    A term of the current epoch without ``last`` says so.  State files written before terms were
    recorded for primaries started by configuration only have ``slot_ready``: a node whose
    capture set up a slot was primary, and with no term at all it never demoted.
    """
    term = current_term(state)
    if term is not None:
        return not term.get("last")
    return state.slot_ready


def current_term(state: NodeState) -> dict[str, Any] | None:
    return next((t for t in state.primary_epochs if t.get("epoch") == state.epoch), None)


def record_primary_term(cfg: Config) -> None:
    """Starting as primary: this epoch is (again) a term of this node, still open (no ``last``).

    Why: only promotions recorded terms, so a node that was primary by configuration looked
    "never primary" to the rejoin guard and to :func:`needs_rewind` after a crash."""
    state = NodeState.load(cfg.data_path)
    term = current_term(state)
    if term is not None and not term.get("last"):
        return
    others = tuple(t for t in state.primary_epochs if t.get("epoch") != state.epoch)
    opened = {k: v for k, v in (term or {"epoch": state.epoch}).items() if k != "last"}
    state.with_(primary_epochs=(*others, opened)).save(cfg.data_path)


# --- undo statements (pure) -----------------------------------------------------------------------
def _ident(name: str) -> str:
    # Always quoted; '%' doubled because psycopg reads %s placeholders in the text.
    return ('"' + name.replace('"', '""') + '"').replace("%", "%%")


def _relation(table: Table) -> str:
    return f"{_ident(table.schema)}.{_ident(table.name)}"


def _match(table: Table, row: Row, keyed: bool) -> tuple[str, tuple[Value, ...]]:
    """Conditions that find ``row``: key columns compared by value (index), every other column
    by its canonical text (types without an equality operator compare too); NULL as IS NULL."""
    conds: list[str] = []
    params: list[Value] = []
    keys = set(table.key_indexes) if keyed else set()
    for i, (col, value) in enumerate(zip(table.columns, row, strict=True)):
        name = _ident(col.name)
        if value is UNCHANGED:
            continue
        if value is None:
            conds.append(f"{name} IS NULL")
        elif i in keys:
            conds.append(f"{name} = %s")
            params.append(value)
        else:
            conds.append(f"{name}::text = %s::{col.type_name.replace('%', '%%')}::text")
            params.append(value)
    return " AND ".join(conds) or "true", tuple(params)


def _one_row(relation: str, where: str, keyed: bool) -> str:
    """Keyed: the key finds at most one row.  Otherwise pick one of the equal rows (equal rows
    are interchangeable), by (tableoid, ctid) as the applier does (``rowmap.locate_sql``)."""
    if keyed:
        return where
    return f"(tableoid, ctid) = (SELECT tableoid, ctid FROM {relation} WHERE {where} LIMIT 1)"


def _full_row(change: RowChange, row: Row | None, what: str) -> Row:
    t = change.table
    if t.identity != "f" or row is None:
        ident = {"d": "DEFAULT", "i": "USING INDEX", "n": "NOTHING"}.get(t.identity, t.identity)
        raise Unrewindable(
            f"{change.op.name} on {t.qualified}: the log holds {'only its key' if row else 'no'} "
            f"{what} (REPLICA IDENTITY {ident}); undoing it needs REPLICA IDENTITY FULL"
        )
    if UNCHANGED in row or len(row) != len(t.columns):
        raise Unrewindable(
            f"{change.op.name} on {t.qualified}: the log does not hold every value of the {what}"
        )
    return row


def undo_statement(change: Change) -> Undo | None:
    """The statement that undoes ``change`` (None: nothing to undo, e.g. a logical message).

    Raises :class:`Unrewindable` naming the table and what is missing."""
    if isinstance(change, Message):
        return None
    if isinstance(change, Truncate):
        names = ", ".join(t.qualified for t in change.tables)
        raise Unrewindable(f"TRUNCATE of {names}: the removed rows are not in the log")
    if isinstance(change, LoadRows):
        raise Unrewindable(f"initial load of {change.table.qualified} in the tail")
    t = change.table
    rel = _relation(t)
    keyed = bool(t.key_indexes) and t.identity != "f"
    if change.op is Op.INSERT:
        after = change.after
        if after is None or UNCHANGED in after or len(after) != len(t.columns):
            raise Unrewindable(f"INSERT into {t.qualified}: the log does not hold the new row")
        where, params = _match(t, after, keyed)
        return Undo(
            f"DELETE FROM {rel} WHERE {_one_row(rel, where, keyed)}", params, f"delete {t.qualified} row"
        )
    if change.op is Op.UPDATE:
        before = _full_row(change, change.before, "old row")
        after = change.after
        if after is None or len(after) != len(t.columns):
            raise Unrewindable(f"UPDATE on {t.qualified}: the log does not hold the new row")
        # The row as it is now: unchanged (TOAST) values are the old ones.
        now = tuple(b if a is UNCHANGED else a for a, b in zip(after, before, strict=True))
        sets = [i for i in range(len(t.columns)) if now[i] != before[i]]
        if not sets:
            return None  # an UPDATE that changed nothing leaves nothing to undo
        assign = ", ".join(f"{_ident(t.columns[i].name)} = %s" for i in sets)
        where, params = _match(t, now, False)
        return Undo(
            f"UPDATE {rel} SET {assign} WHERE {_one_row(rel, where, False)}",
            tuple(before[i] for i in sets) + params,
            f"restore {t.qualified} row",
        )
    before = _full_row(change, change.before, "old row")
    cols = ", ".join(_ident(c.name) for c in t.columns)
    values = ", ".join("%s" for _ in t.columns)
    return Undo(
        f"INSERT INTO {rel} ({cols}) OVERRIDING SYSTEM VALUE VALUES ({values})",
        before,
        f"re-insert {t.qualified} row",
    )


def undo_plan(txns: Sequence[TailTxn]) -> list[Undo]:
    """Every undo statement, last change of the last transaction first."""
    plan: list[Undo] = []
    for txn in reversed(txns):
        for change in reversed(txn.changes):
            undo = undo_statement(change)
            if undo is not None:
                plan.append(undo)
    return plan


# --- the tail file --------------------------------------------------------------------------------
def _value_json(v: Value) -> Any:
    return {"unchanged": True} if v is UNCHANGED else v


def _change_json(change: Change) -> dict[str, Any]:
    if isinstance(change, RowChange):
        return {
            "op": change.op.name,
            "table": change.table.qualified,
            "columns": [c.name for c in change.table.columns],
            "before": None if change.before is None else [_value_json(v) for v in change.before],
            "after": None if change.after is None else [_value_json(v) for v in change.after],
        }
    if isinstance(change, Truncate):
        return {"op": "TRUNCATE", "tables": [t.qualified for t in change.tables]}
    if isinstance(change, LoadRows):
        return {"op": "LOAD", "table": change.table.qualified, "rows": len(change.rows)}
    return {"op": "MESSAGE", "prefix": change.prefix, "content": change.content.decode(errors="replace")}


def save_tail(data_dir: Path, epoch: int, header: dict[str, Any], txns: Sequence[TailTxn]) -> Path:
    """``<data_dir>/rewound/epoch-<E>-<UTC time>.jsonl``: a header line, then one line per
    transaction in commit order; written atomically and fsynced before anything is undone."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = data_dir / "rewound" / f"epoch-{epoch}-{stamp}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"rewind": header}, sort_keys=True)]
    for txn in txns:
        body = {
            "xid": txn.xid,
            "commit": str(txn.commit),
            "commit_time_us": txn.commit_time,
            "changes": [_change_json(c) for c in txn.changes],
        }
        lines.append(json.dumps(body))
    atomic_write(path, ("\n".join(lines) + "\n").encode())
    return path


# --- the database side ------------------------------------------------------------------------------
def _connect(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    from hodr.redo.postgres import SESSION_SETTINGS

    settings = {
        **SESSION_SETTINGS,
        "session_replication_role": "replica",
        "default_transaction_read_only": "off",
        "synchronous_commit": "local",
    }
    options = " ".join(f"-c {k}={v}" for k, v in settings.items())
    try:
        return psycopg.connect(dsn, autocommit=autocommit, options=options, application_name="hodr-rewind")
    except psycopg.OperationalError as exc:
        raise HodrError(f"rewind: cannot connect to the database: {_one_line(exc)}") from exc


def _leave_synchronous(dsn: str, application_name: str) -> None:
    """Take hodr's own walsender out of ``synchronous_standby_names`` (see the module doc)."""

    def current() -> str:
        with _connect(dsn) as conn:
            row = conn.execute("SELECT current_setting('synchronous_standby_names')").fetchone()
        return str(row[0] if row else "")

    text = current()
    if application_name.lower() not in text.lower():
        return
    with _connect(dsn) as conn:
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
        conn.execute("SELECT pg_reload_conf()")
    log.warning("rewind: synchronous_standby_names was %r, now '' (this node is a standby)", text)
    deadline = time.monotonic() + 10
    while current():  # new sessions must see it before anything else commits
        if time.monotonic() > deadline:
            raise HodrError("rewind: synchronous_standby_names did not take effect after the reload")
        time.sleep(0.05)


def _done_marker(conn: psycopg.Connection[Any], epoch: int) -> LogPosition | None:
    """The base of a rewind of ``epoch`` that already committed (a crash came after it)."""
    prefix = MARKER_TEXT.format(epoch=epoch, base="").encode()
    row = conn.execute(
        "SELECT content FROM hodr.markers WHERE prefix = 'hodr' AND substr(content, 1, %s) = %s "
        "ORDER BY id DESC LIMIT 1",
        (len(prefix), prefix),
    ).fetchone()
    return LogPosition.parse(bytes(row[0])[len(prefix) :].decode()) if row else None


def _acked_base(cfg: Config, epoch: int, confirmed: int) -> LogPosition:
    """The last commit every required standby acknowledged: the last commit of the outbox at or
    before the slot's confirmed position, or the commit the persisted standby acks name, whichever
    is later (both are only lower bounds after a crash: PostgreSQL saves a slot's confirmed
    position at checkpoints, the outbox its acks every 0.1 s)."""
    from hodr.replicate.codec import peek_transaction
    from hodr.replicate.outbox import Outbox

    path = cfg.data_path / "outbox"
    if not (path / "meta.json").exists():
        raise Unrewindable(f"no outbox in {path}: the last acknowledged commit is unknown")
    required = [p.name for p in cfg.transport.standbys if p.required]
    with Outbox(path, standbys=required) as outbox:
        base = outbox.trimmed.commit
        for _seq, payload in outbox.read_from(outbox.first_seq):
            head = peek_transaction(payload)
            if head.final and head.commit.epoch == epoch and head.commit.lsn <= confirmed:
                base = max(base, head.commit)
        if required:
            base = max(base, outbox.released_position(required, getattr(cfg, "sync_quorum", 0)))
    return base


def _read_tail(cfg: Config, dsn: str, epoch: int, confirmed: int, base: LogPosition) -> list[TailTxn]:
    """Committed transactions after ``base`` up to the WAL end as of now, in commit order."""
    from hodr.redo.postgres import PostgresSource
    from hodr.redo.records import Idle
    from hodr.replicate.assembler import Assembler

    with _connect(dsn) as conn:
        # A transactional message marks "now": once its commit is decoded, every earlier
        # commit was too (pg_current_wal_lsn() may point past the last record's end).
        row = conn.execute(
            "SELECT pg_logical_emit_message(true, 'hodr', 'rewind: end of tail')::text"
        ).fetchone()
    assert row is not None
    end = parse_lsn(row[0])
    stop = threading.Event()
    timer = threading.Timer(READ_TIMEOUT_S, stop.set)
    timer.daemon = True
    spill = cfg.data_path / "rewind-spill"
    parts: dict[int, list[Change]] = {}
    txns: list[TailTxn] = []
    count = 0
    src = PostgresSource(
        dsn,
        slot=cfg.source.slot,
        publication=cfg.source.publication,
        epoch=epoch,
        application_name=f"{cfg.source.application_name}_rewind",
        set_replica_identity_full=False,
        status_interval=0.2,
        stop=stop,
    )
    asm = Assembler(spill, skip_upto=base, start=LogPosition(epoch, confirmed))
    timer.start()
    reached = False
    try:
        for rec in src.read(LogPosition(epoch, confirmed)):
            if isinstance(rec, Idle):
                if rec.position.lsn >= end and asm.open_transactions() == 0:
                    reached = True
                    break
                continue
            for txn in asm.feed(rec):
                changes = parts.setdefault(txn.xid, [])
                changes.extend(c for c in txn.changes if _undoable(c))
                count += len(txn.changes)
                if count > MAX_CHANGES:
                    raise Unrewindable(f"the tail holds more than {MAX_CHANGES} changes")
                if txn.final:
                    done = parts.pop(txn.xid)
                    if done:
                        txns.append(TailTxn(txn.xid, txn.commit, txn.commit_time, tuple(done)))
    finally:
        timer.cancel()
        asm.close()
        src.close()
        shutil.rmtree(spill, ignore_errors=True)
    if not reached:
        raise HodrError(
            f"rewind: slot {cfg.source.slot} was not read up to {format_lsn(end)} "
            f"within {READ_TIMEOUT_S:.0f}s"
        )
    return txns


def _undoable(change: Change) -> bool:
    """Application data only: logical messages carry no rows, and the ``hodr`` schema is hodr's
    own bookkeeping (``hodr.applied`` is written by the rewind itself)."""
    if isinstance(change, Message):
        return False
    return not (isinstance(change, RowChange) and change.table.schema == "hodr")


def _undo(dsn: str, plan: Sequence[Undo], epoch: int, base: LogPosition) -> None:
    """Run ``plan`` and record ``base`` as applied, all in one transaction; any statement that
    does not change exactly one row rolls everything back (:class:`Unrewindable`)."""
    conn = _connect(dsn, autocommit=False)
    try:
        with conn.transaction():
            for undo in plan:
                try:
                    cur = conn.execute(undo.sql, undo.params)  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    raise Unrewindable(f"{undo.what}: {_one_line(exc)}") from exc
                if cur.rowcount != 1:
                    raise Unrewindable(
                        f"{undo.what}: {cur.rowcount} rows matched, expected 1 (row not as logged)"
                    )
            conn.execute(
                "UPDATE hodr.applied SET epoch = %s, lsn = %s, seq = %s, applied_at = now() WHERE id = 1",
                (base.epoch, base.lsn, base.seq),
            )
            conn.execute(
                "INSERT INTO hodr.markers (prefix, content, transactional) VALUES ('hodr', %s, true)",
                (MARKER_TEXT.format(epoch=epoch, base=base).encode(),),
            )
    except psycopg.OperationalError as exc:
        raise HodrError(f"rewind: database connection lost: {_one_line(exc)}") from exc
    finally:
        conn.close()


# --- the hook ------------------------------------------------------------------------------------
def rejoin(cfg: Config) -> Outcome | None:
    """Run before the standby pipeline starts.  None when there is nothing to decide (never
    primary in this epoch, or demoted cleanly); otherwise what was done, already recorded in the
    node state (``diverged`` with its reason, or the term's ``last``)."""
    state = NodeState.load(cfg.data_path)
    if cfg.role != "standby" or not needs_rewind(state):
        return None
    from hodr.replicate.apply.postgres import PostgresTarget, end_application_sessions, prepare_standby

    epoch = state.epoch
    dsn = cfg.source.dsn or cfg.target.dsn
    log.info("rejoin: this node was primary in epoch %d and did not demote: checking its tail", epoch)
    # In this order: an application session whose COMMIT waits for the synchronous standby is
    # ended while it waits (its client never gets a commit OK); taking hodr out of
    # synchronous_standby_names first would release it, and the client would see a commit OK
    # for a transaction the rewind then undoes (seen in the lab: the primary's database killed
    # and restarted in place, the VIP still on the node).
    prepare_standby(dsn)
    ended = end_application_sessions(dsn)
    if ended:
        log.info("rejoin: ended %d application sessions", ended)
    _leave_synchronous(dsn, cfg.source.application_name)
    target = PostgresTarget(dsn)
    try:
        target.setup()  # hodr.applied and hodr.markers, also on a node that was never a standby
    finally:
        target.close()
    with _connect(dsn) as conn:
        done = _done_marker(conn, epoch)
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (cfg.source.slot,),
        ).fetchone()
    if done is not None:
        log.info("rejoin: the rewind of epoch %d to %s had committed before a restart", epoch, done)
        return _finish(cfg, state, dsn, done, [], None)
    if row is None or row[0] is None:
        return _diverged(
            cfg, state, f"slot {cfg.source.slot} is gone: which transactions no standby received is unknown"
        )
    confirmed = parse_lsn(row[0])
    try:
        base = _acked_base(cfg, epoch, confirmed)
        txns = _read_tail(cfg, dsn, epoch, confirmed, base)
    except Unrewindable as exc:
        return _diverged(cfg, state, str(exc))
    if not txns:
        return _finish(cfg, state, dsn, base, [], None)
    header = {
        "node": cfg.node,
        "epoch": epoch,
        "slot": cfg.source.slot,
        "base": str(base),
        "first": str(txns[0].commit),
        "last": str(txns[-1].commit),
        "transactions": len(txns),
        "sync": cfg.sync,
        "written": time.time(),
    }
    path = save_tail(cfg.data_path, epoch, header, txns)
    what = f"{len(txns)} transactions after {base} (up to {txns[-1].commit}, saved in {path})"
    if not cfg.sync and not cfg.rejoin_rewind:
        return _diverged(
            cfg, state, f"{what} reached no standby; async mode without rejoin_rewind: true: not undone"
        )
    try:
        plan = undo_plan(txns)
        _undo(dsn, plan, epoch, base)
    except Unrewindable as exc:
        return _diverged(cfg, state, f"{exc}; nothing undone of {what}")
    return _finish(cfg, state, dsn, base, txns, path)


def _diverged(cfg: Config, state: NodeState, reason: str) -> Outcome:
    reason = " ".join(f"rewind refused: {reason}".split())
    state.with_(diverged=True, diverged_reason=reason).save(cfg.data_path)
    log.error("rejoin: %s (this node stays out: reseed it)", reason)
    return Outcome(True, reason)


def _finish(
    cfg: Config, state: NodeState, dsn: str, base: LogPosition, txns: Sequence[TailTxn], path: Path | None
) -> Outcome:
    """After the undo committed (or with nothing to undo): this database is the history up to
    ``base``; the old slot goes, the queue follows a new lineage from ``base``, the term ends."""
    from hodr.redo.postgres import PostgresSource
    from hodr.replicate.apply.postgres import mark_applied
    from hodr.replicate.queue import DurableQueue

    if not txns:
        mark_applied(dsn, base)
    with PostgresSource(dsn, slot=cfg.source.slot, publication=cfg.source.publication) as src:
        src.drop_slot()
    shutil.rmtree(cfg.data_path / "queue", ignore_errors=True)
    q = DurableQueue(cfg.data_path / "queue")
    q.reset_lineage(f"rewound-{uuid.uuid4().hex}", 1, base_commit=base)
    q.close()
    epochs = tuple(
        {**t, "last": str(base)} if t.get("epoch") == state.epoch else t for t in state.primary_epochs
    )
    if current_term(state) is None:
        epochs = (*epochs, {"epoch": state.epoch, "last": str(base)})
    state.with_(primary_epochs=epochs, diverged=False, diverged_reason="").save(cfg.data_path)
    if txns:
        log.warning(
            "rejoin: rewound %d transactions of epoch %d (%s .. %s) back to %s; saved in %s",
            len(txns),
            state.epoch,
            txns[0].commit,
            txns[-1].commit,
            base,
            path,
        )
    else:
        log.info("rejoin: nothing after %s to rewind; standby from there", base)
    return Outcome(False, "", base, len(txns), path)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "Outcome",
    "TailTxn",
    "Undo",
    "Unrewindable",
    "needs_rewind",
    "record_primary_term",
    "rejoin",
    "undo_plan",
]

"""Relation cache of the PostgreSQL capture: pgoutput relation id → :class:`Table`.

Why a cache replaced on every Relation message (pg-notes §3): the walsender announces a
relation before its first change in a session and again after every schema change, and the
changes that follow refer to it only by relid.  The newest announcement is the truth for the
changes after it, so an entry is replaced, never merged.

Why type names come from the server: ``Column.type_name`` must be spelled the way the target can
use it (``numeric(10,2)``, ``character varying(20)``, ``public.mood``), which is exactly what
``format_type(oid, typmod)`` returns.  pgoutput only sends oids and typmods, so names are looked
up over a normal SQL connection (through the ``type_namer`` callable, which keeps this module
free of any driver) and cached per (oid, typmod) for the life of the process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from hodr.errors import HodrFatal
from hodr.position import format_lsn
from hodr.redo.pgoutput import RelationMsg, TypeMsg
from hodr.redo.records import Column, Table

TypeKey = tuple[int, int]
#: Looks up ``format_type(oid, typmod)`` for every key given; must return all of them.
TypeNamer = Callable[[Iterable[TypeKey]], Mapping[TypeKey, str]]


class UnknownRelation(HodrFatal):
    """A change referred to a relid that no Relation message announced (protocol violation)."""


class Catalog:
    """relid → :class:`Table`, with SQL type names resolved and cached per (oid, typmod).

    Not thread-safe: it belongs to the capture reader thread.
    """

    def __init__(self, type_namer: TypeNamer) -> None:
        self._type_namer = type_namer
        self._tables: dict[int, Table] = {}
        self._type_names: dict[TypeKey, str] = {}
        #: oid → (namespace, name) of every non-builtin type the walsender announced.
        self.types: dict[int, tuple[str, str]] = {}

    def update(self, msg: RelationMsg) -> Table:
        """Replace the entry for ``msg.relid`` and return the new :class:`Table`."""
        keys = [(c.type_oid, c.typmod) for c in msg.columns]
        names = self.type_names(keys)
        columns = tuple(
            Column(name=c.name, type_name=names[k], key=c.key, type_oid=c.type_oid)
            for c, k in zip(msg.columns, keys, strict=True)
        )
        table = Table(
            schema=msg.namespace, name=msg.name, columns=columns, identity=msg.identity, relid=msg.relid
        )
        self._tables[msg.relid] = table
        return table

    def record_type(self, msg: TypeMsg) -> None:
        """Remember a custom type (enum, domain, composite…) the walsender announced."""
        self.types[msg.oid] = (msg.namespace, msg.name)

    def get(self, relid: int, lsn: int = 0) -> Table:
        """The current :class:`Table` of ``relid``; a missing one is a protocol violation
        (``lsn`` of the change only names the place in the error)."""
        table = self._tables.get(relid)
        if table is None:
            raise UnknownRelation(
                f"change for relation id {relid} at LSN {format_lsn(lsn)} before any Relation message for it"
            )
        return table

    def __contains__(self, relid: int) -> bool:
        return relid in self._tables

    def __len__(self) -> int:
        return len(self._tables)

    def clear(self) -> None:
        """Forget relations (a new walsender session re-announces every relation it uses)."""
        self._tables.clear()

    def type_names(self, keys: Iterable[TypeKey]) -> dict[TypeKey, str]:
        """``format_type`` names for ``keys``, asking the server once for all missing ones."""
        wanted = list(dict.fromkeys(keys))
        missing = [k for k in wanted if k not in self._type_names]
        if missing:
            found = self._type_namer(missing)
            for key in missing:
                name = found.get(key)
                if not name or name == "???":
                    raise HodrFatal(f"type oid {key[0]} (typmod {key[1]}) is unknown to the source server")
                self._type_names[key] = name
        return {k: self._type_names[k] for k in wanted}

"""Small durable facts about this node that outlive restarts: the epoch and whether the source
slot and its initial load are complete.

``primary_epochs`` and ``diverged`` feed the agent's rejoin guard: they must survive every
restart, or a node that was primary rejoins as if it never had been.

Why a file and not the database: the capture must know, before it touches the source, whether a
slot it finds was left by a load that crashed half-way (then the slot is dropped and the load
redone), and a promotion must bump the epoch durably (I1).  Written the boring way (I5).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hodr.errors import CorruptData
from hodr.replicate.fsutil import atomic_write, read_small

STATE_FILE = "state.json"


@dataclass(frozen=True)
class NodeState:
    epoch: int = 1
    slot_ready: bool = False  # slot exists and the initial load (if any) is durable in the outbox
    slot: str = ""
    # Rejoin guard (ocf-checklist §5.9): the epochs this node was primary in, with the position
    # it started at and its last durable position then; ``diverged`` when a demotion could not
    # prove that the standbys received everything (this node may hold transactions nobody has).
    primary_epochs: tuple[dict[str, Any], ...] = ()
    diverged: bool = False
    diverged_reason: str = ""  # one line: why (e.g. the rewind of a crashed primary refused)

    @classmethod
    def load(cls, data_dir: Path) -> NodeState:
        raw = read_small(data_dir / STATE_FILE)
        if raw is None:
            return cls()
        try:
            data = json.loads(raw)
            # Older files lack primary_epochs/diverged (never primary, never diverged); a list
            # that is there but malformed is corrupt: read as "never primary" it would let the
            # agent's rejoin guard wave a diverged node through.
            epochs = data.get("primary_epochs", [])
            if not isinstance(epochs, list) or not all(
                isinstance(e, dict) and isinstance(e.get("epoch"), int) for e in epochs
            ):
                raise ValueError(f"primary_epochs: expected a list of {{epoch, ...}}, got {epochs!r:.80}")
            diverged = data.get("diverged", False)
            if not isinstance(diverged, bool):
                raise ValueError(f"diverged: expected true or false, got {diverged!r:.80}")
            return cls(
                epoch=int(data["epoch"]),
                slot_ready=bool(data["slot_ready"]),
                slot=str(data.get("slot", "")),
                primary_epochs=tuple(epochs),
                diverged=diverged,
                diverged_reason=str(data.get("diverged_reason", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptData(f"{data_dir / STATE_FILE}: unreadable node state: {exc}") from exc

    def save(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(data_dir / STATE_FILE, json.dumps(asdict(self), sort_keys=True).encode())

    def with_(self, **changes: object) -> NodeState:
        return replace(self, **changes)  # type: ignore[arg-type]

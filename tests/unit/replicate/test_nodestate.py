"""NodeState round trip: the rejoin guard's facts (primary_epochs, diverged) survive restarts,
and state files written before those facts existed stay readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hodr.errors import CorruptData
from hodr.replicate.nodestate import STATE_FILE, NodeState


def test_primary_epochs_and_diverged_survive_a_restart(tmp_path: Path) -> None:
    state = NodeState(
        epoch=3,
        slot_ready=True,
        slot="hodr",
        primary_epochs=({"epoch": 1, "last": "1/0/10/0"}, {"epoch": 3, "start": "2/0/20/0"}),
        diverged=True,
        diverged_reason="rewind: UPDATE on public.t without its old row",
    )
    state.save(tmp_path)
    assert NodeState.load(tmp_path) == state


def test_old_state_file_reads_as_never_primary(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"epoch": 2, "slot_ready": True, "slot": "hodr"}))
    state = NodeState.load(tmp_path)
    assert (state.epoch, state.slot_ready, state.slot) == (2, True, "hodr")
    assert state.primary_epochs == () and state.diverged is False and state.diverged_reason == ""


@pytest.mark.parametrize(
    "extra",
    [{"primary_epochs": "1"}, {"primary_epochs": [{"last": "x"}]}, {"diverged": "no"}],
)
def test_malformed_guard_facts_are_corrupt_not_never_primary(tmp_path: Path, extra: dict) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"epoch": 1, "slot_ready": False, **extra}))
    with pytest.raises(CorruptData, match="unreadable node state"):
        NodeState.load(tmp_path)

"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Pair
from tests.workload import SCHEMA


@pytest.fixture
def pair(pg_factory, tmp_path: Path):
    """A primary and a standby with the randomised workload's schema, big transactions streamed
    (logical_decoding_work_mem 64kB); the daemons are stopped after the test."""
    p = Pair.create(pg_factory, tmp_path, SCHEMA, source={"logical_decoding_work_mem": "64kB"})
    yield p
    p.close()

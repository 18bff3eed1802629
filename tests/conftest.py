"""Shared test plumbing: marker gating and deadlines.

Markers (pyproject.toml): ``pg`` real PostgreSQL servers, ``cluster`` real Pacemaker lab,
``netns`` network namespaces, ``oracle`` (only with HODR_ORACLE_DSN), ``slow``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """With pytest-xdist workers (``./run test`` uses two): every test under tests/cluster/ on
    one worker, one after another, in file order; the rest spread over both.

    Why: the cluster tests share lab names, and a lab's fencing and failover timings are what
    they measure; two labs at once would only halve the machine for both.  Everything else
    (PostgreSQL pairs on kernel-assigned ports, network namespaces named per process, unit
    tests) runs beside them.  A scheduler of our own rather than ``--dist loadgroup``: with
    pytest 9 the ``xdist_group`` marker no longer groups anything (xdist renames
    ``item._nodeid``, which pytest no longer reads)."""
    from xdist.scheduler import LoadScopeScheduling

    class ClusterTestsInSeries(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "cluster" if nodeid.startswith("tests/cluster/") else nodeid

    return ClusterTestsInSeries(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_oracle = pytest.mark.skip(reason="HODR_ORACLE_DSN is not set")
    not_root = pytest.mark.skip(reason="needs root (namespaces)")
    for item in items:
        if "oracle" in item.keywords and not os.environ.get("HODR_ORACLE_DSN"):
            item.add_marker(no_oracle)
        if ("cluster" in item.keywords or "netns" in item.keywords) and os.geteuid() != 0:
            item.add_marker(not_root)


# --- measured numbers printed at the end (RTO/RPO of the takeover scenarios) ------------------
#: ``(section, line)`` pairs reported by tests through ``user_properties`` ("measured", ...);
#: collected from the reports, so it works the same with and without pytest-xdist workers.
_MEASURED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _MEASURED.extend(v for k, v in report.user_properties if k == "measured")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Measured numbers (the takeover scenarios' RTO/RPO), also when output is captured (CI
    runs ``-q``)."""
    sections: dict[str, list[str]] = {}
    for section, line in _MEASURED:
        sections.setdefault(section, []).append(line)
    for section, lines in sections.items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass.

    Tests synchronise on conditions with deadlines, never on sleeps; the failure names the
    condition that was not met.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - report the last error if the deadline passes
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


# --- real PostgreSQL servers (marker ``pg``) ---------------------------------------------------
@pytest.fixture(scope="module")
def pg_base():
    """A base directory for this module's servers, removed afterwards."""
    import shutil

    from hodr.pginstance import make_base_dir

    base = make_base_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_factory(tmp_path_factory):
    """Make started PostgreSQL 15 servers: ``pg_factory("primary", settings={...})``.
    Every server made is destroyed after the test, also on failure."""
    import shutil

    from hodr.pginstance import PgInstance, make_base_dir

    base = make_base_dir()
    made: list[PgInstance] = []

    def make(name: str = "pg", settings: dict[str, str] | None = None, start: bool = True) -> PgInstance:
        inst = PgInstance(base, name, settings=dict(settings or {}))
        made.append(inst)
        inst.init()
        if start:
            inst.start()
        return inst

    yield make
    for inst in made:
        inst.destroy()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_pair(pg_factory):
    """A started (primary, standby) pair of PostgreSQL 15 servers."""
    return pg_factory("primary"), pg_factory("standby")

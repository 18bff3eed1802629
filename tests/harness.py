"""End-to-end harness: a primary and a standby PostgreSQL with real ``hodr run`` daemons between
them, started, killed (-9) and restarted by PID, and a row-by-row comparison of both sides.

The daemons speak mutual TLS with certificates made by ``hodr.certs`` in the work directory (what
an operator does with ``hodr certs``), so every end-to-end test also proves the mTLS path;
``tls=False`` runs them with ``transport.insecure: true``.  ``standbys=2`` adds a second standby
database and daemon (``standby2`` / ``hodr_standby2``) fed by the same primary."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hodr import certs
from hodr.daemonproc import DaemonProcess
from hodr.errors import HodrError
from hodr.pginstance import PgInstance, free_port
from hodr.status import Status
from tests.conftest import wait_for

DB = "app"


class HodrDaemon(DaemonProcess):
    """A real ``hodr run`` subprocess (``hodr.daemonproc``); test failures name its output."""

    def wait_ready(self, timeout: float = 60) -> Status:
        try:
            return super().wait_ready(timeout)
        except HodrError as exc:
            raise AssertionError(str(exc)) from None


@dataclass
class Pair:
    """A primary and a standby database with hodr daemons configured between them."""

    primary: PgInstance
    standby: PgInstance
    workdir: Path
    p_cfg: dict[str, Any]
    s_cfg: dict[str, Any]
    daemons: list[HodrDaemon] = field(default_factory=list)
    hodr_primary: HodrDaemon | None = None
    hodr_standby: HodrDaemon | None = None
    standby2: PgInstance | None = None
    s2_cfg: dict[str, Any] | None = None
    hodr_standby2: HodrDaemon | None = None

    @classmethod
    def create(
        cls,
        pg_factory: Any,
        workdir: Path,
        schema: str,
        *,
        sync: bool = False,
        source: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        standby_schema: str | None = None,
        tls: bool = True,
        standbys: int = 1,
        transport: dict[str, Any] | None = None,
        standby_transport: list[dict[str, Any]] | None = None,
        primary_names: list[str] | None = None,
    ) -> Pair:
        """``transport``: extra keys for every node's transport section; ``standby_transport``:
        extra keys per standby (index 0 = s1), e.g. a bandwidth cap on one of them;
        ``primary_names``: the certificate names the standbys accept from a primary (default
        ``primary``; add ``s1`` when s1 may be promoted and the other standby follow it)."""
        assert standbys in (1, 2)
        primary = pg_factory("primary")
        standby = pg_factory("standby")
        standby2 = pg_factory("standby2") if standbys == 2 else None
        dbs = [primary, standby] + ([standby2] if standby2 else [])
        for pg in dbs:
            pg.psql(f"CREATE DATABASE {DB}")
        primary.psql(schema, DB)
        for pg in dbs[1:]:
            pg.psql(schema if standby_schema is None else standby_schema, DB)
        names = ["s1", "s2"][:standbys]
        security = _security(workdir, ["primary", *names], tls, primary_names)
        extra = transport or {}
        per_standby = list(standby_transport or []) + [{}] * standbys
        port = free_port()
        p_cfg = {
            "node": "primary",
            "role": "primary",
            "sync": sync,
            "data_dir": str(workdir / "p-data"),
            "run_dir": str(workdir / "p-run"),
            "status_interval_s": 0.2,
            "source": {
                "dsn": primary.dsn(DB),
                "slot": "hodr",
                "publication": "hodr",
                "application_name": "hodr_s1",
                **(source or {}),
            },
            "transport": {
                "listen_host": "127.0.0.1",
                "port": port,
                "standbys": [{"name": n} for n in names],
                "heartbeat_s": 0.5,
                "dead_peer_s": 3,
                "reconnect_max_s": 0.5,
                **security["primary"],
                **extra,
            },
        }

        def standby_cfg(i: int, pg: PgInstance) -> dict[str, Any]:
            tag = "s" if i == 0 else f"s{i + 1}"
            return {
                "node": names[i],
                "role": "standby",
                "data_dir": str(workdir / f"{tag}-data"),
                "run_dir": str(workdir / f"{tag}-run"),
                "status_interval_s": 0.2,
                "target": {"dsn": pg.dsn(DB), **(target or {})},
                "transport": {
                    "primary_host": "127.0.0.1",
                    "port": port,
                    "heartbeat_s": 0.5,
                    "dead_peer_s": 3,
                    "reconnect_max_s": 0.5,
                    **security[names[i]],
                    **extra,
                    **per_standby[i],
                },
            }

        s_cfg = standby_cfg(0, standby)
        if sync:
            primary.psql("ALTER SYSTEM SET synchronous_standby_names = 'hodr_s1'")
            primary.psql("SELECT pg_reload_conf()")
        pair = cls(primary, standby, workdir, p_cfg, s_cfg)
        pair.hodr_primary = HodrDaemon("primary", p_cfg, workdir)
        pair.hodr_standby = HodrDaemon("standby", s_cfg, workdir)
        pair.daemons = [pair.hodr_primary, pair.hodr_standby]
        if standby2 is not None:
            pair.standby2 = standby2
            pair.s2_cfg = standby_cfg(1, standby2)
            pair.hodr_standby2 = HodrDaemon("standby2", pair.s2_cfg, workdir)
            pair.daemons.append(pair.hodr_standby2)
        return pair

    def start(self) -> Pair:
        for d in self.daemons:
            d.start()
        for d in self.daemons:
            d.wait_ready()
        return self

    def close(self) -> None:
        for d in reversed(self.daemons):
            with contextlib.suppress(Exception):
                d.stop(15)

    def logs(self) -> str:
        return "\n".join(f"--- {d.name}:\n{d.tail(30)}" for d in self.daemons)


def _security(
    workdir: Path, nodes: list[str], tls: bool, primary_names: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Per node transport keys: TLS files made with hodr.certs (CA + one certificate per node,
    the standbys told the primary's name, or ``primary_names``), or ``insecure: true``."""
    if not tls:
        return {n: {"insecure": True} for n in nodes}
    d = workdir / "tls"
    if not (d / certs.CA_CERT).exists():
        certs.init_ca(d)
    out: dict[str, dict[str, Any]] = {}
    for n in nodes:
        files = certs.issue(d, n, force=True)
        out[n] = {"tls_ca": str(files.ca), "tls_cert": str(files.cert), "tls_key": str(files.key)}
        if n != nodes[0]:
            out[n]["primary_name"] = primary_names or nodes[0]
    return out


def table_rows(pg: PgInstance, table: str, order_by: str | None = None) -> list[str]:
    """Every row of ``table`` as its text form, in a deterministic order (row-by-row compare)."""
    order = order_by or "x::text"
    return pg.psql(f"SELECT x::text FROM {table} x ORDER BY {order}", DB).splitlines()


def same_rows(pair: Pair, tables: list[str], standby: PgInstance | None = None) -> bool:
    other = standby or pair.standby
    return all(table_rows(pair.primary, t) == table_rows(other, t) for t in tables)


def wait_equal(pair: Pair, tables: list[str], timeout: float = 60, standby: PgInstance | None = None) -> None:
    """Wait until every table is row-by-row equal on ``standby`` (default: the first one); on
    timeout show the first difference."""
    other = standby or pair.standby
    try:
        wait_for(
            lambda: same_rows(pair, tables, other), timeout, f"tables {tables} to be equal on both sides"
        )
    except AssertionError:
        for t in tables:
            a, b = table_rows(pair.primary, t), table_rows(other, t)
            if a != b:
                only_a = sorted(set(a) - set(b))[:3]
                only_b = sorted(set(b) - set(a))[:3]
                raise AssertionError(
                    f"{t}: primary {len(a)} rows, standby {len(b)} rows; only on primary {only_a}, "
                    f"only on standby {only_b}\n{pair.logs()}"
                ) from None
        raise


def peer_config(
    name: str,
    role: str,
    pg: PgInstance,
    port: int,
    peer: str,
    workdir: Path,
    sec: dict[str, Any],
    *,
    sync: bool = False,
) -> dict[str, Any]:
    """YAML of node ``name`` of a two-node pair ``a``/``b`` where either may be primary (role
    changes through the control socket): listens on ``port``, lists ``peer`` as its standby,
    accepts both names as primary; ``sec`` from :func:`_security`."""
    tls = {k: v for k, v in sec.items() if k != "primary_name"}
    return {
        "node": name,
        "role": role,
        "sync": sync,
        "data_dir": str(workdir / f"{name}-data"),
        "run_dir": str(workdir / f"{name}-run"),
        "status_interval_s": 0.2,
        "source": {
            "dsn": pg.dsn(DB),
            "slot": "hodr",
            "publication": "hodr",
            "application_name": f"hodr_{name}",
        },
        "target": {"dsn": pg.dsn(DB)},
        "transport": {
            "listen_host": "127.0.0.1",
            "port": port,
            "primary_host": "127.0.0.1",
            "standbys": [{"name": peer}],
            "primary_name": ["a", "b"],
            "heartbeat_s": 0.5,
            "dead_peer_s": 3,
            "reconnect_max_s": 0.5,
            **tls,
        },
    }

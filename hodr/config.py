"""Configuration: defaults ⊕ YAML file ⊕ ``HODR_*`` environment, checked by a small schema.

Why a schema that returns a list (Patroni's validator idea): an operator fixing a config file
wants every problem at once, each as ``key.path: problem`` (``transport.port: expected an integer
1-65535, got "abc"``), not one exception per run.  The checked result is a tree of frozen
dataclasses so no stage can change configuration behind another's back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from hodr.errors import ConfigError

ENV_PREFIX = "HODR_"


@dataclass(frozen=True)
class SourceConfig:
    """The primary database that capture reads (PostgreSQL: logical slot + publication)."""

    engine: str = "postgres"
    dsn: str = ""
    slot: str = "hodr"
    publication: str = "hodr"
    tables: tuple[str, ...] = ()  # empty = all tables
    application_name: str = "hodr"
    initial_load: bool = True
    set_replica_identity_full: bool = True
    memory_budget_mb: int = 64
    logical_decoding_work_mem: str = ""  # e.g. "64kB": lowers the server's streaming threshold


@dataclass(frozen=True)
class TargetConfig:
    """The standby database the applier writes."""

    engine: str = "postgres"
    dsn: str = ""
    batch_txns: int = 200  # larger groups grow hot rows' version chains (apply benchmark)
    batch_changes: int = 20000
    read_only: bool = True  # database read-only for applications (I8)
    # Applied transactions kept in the durable queue (MiB, whole segments; 0 = trim at once):
    # after a failover, this node's promotion serves peers that were behind from this window.
    queue_retain_mb: int = 256


@dataclass(frozen=True)
class StandbyPeer:
    name: str
    required: bool = True


@dataclass(frozen=True)
class TransportConfig:
    """How nodes talk: addresses, timing, compression, mutual TLS and the lag policy.

    TLS is the default: ``tls_ca``/``tls_cert``/``tls_key`` name PEM files from ``hodr certs``;
    plaintext needs ``insecure: true`` (logged as a warning at every start).  ``primary_name``
    (standby side) lists the names the primary's certificate may carry — one node, or every node
    a VIP may move between.  ``max_lag_mb``: a standby further behind is marked and alerted, and
    with ``detach_lagging`` detached (it stops holding back the source log; it needs a reseed or
    ``attach``).  ``bandwidth_mbit``: cap per connection (primary: sent, standby: read), 0 = none.
    """

    listen_host: str = "127.0.0.1"
    port: int = 5440
    primary_host: str = "127.0.0.1"
    standbys: tuple[StandbyPeer, ...] = ()
    heartbeat_s: float = 1.0
    dead_peer_s: float = 10.0
    reconnect_max_s: float = 5.0
    compression: int = 0  # 0 off, 1-7 zstd from fast to strong; the lower of both sides is used
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    insecure: bool = False
    primary_name: tuple[str, ...] = ()
    max_lag_mb: float = 4096.0  # 0: no limit
    detach_lagging: bool = False
    bandwidth_mbit: float = 0.0


@dataclass(frozen=True)
class LogConfig:
    dir: str = ""  # empty: <data_dir>/log
    level: str = "info"
    keep_days: int = 14


@dataclass(frozen=True)
class ServiceConfig:
    """A database service hodr-replica starts and stops on this node (``services:``).

    ``when: always``: a standby needs it too (the database), started before the daemon and stopped
    after it; ``when: primary``: only on the primary (pooler, listener, applications), started
    after a promotion, stopped before a demotion. ``ready`` exits 0 when the service is usable;
    ``timeout_s`` bounds each step (docs/replica-agent.md, "Services").
    """

    name: str
    start: str
    stop: str
    ready: str
    timeout_s: float = 60.0
    when: str = "always"


@dataclass(frozen=True)
class Config:
    node: str = "node1"
    role: str = "standby"
    data_dir: str = "/var/lib/hodr/default"
    run_dir: str = "/run/hodr/default"
    sync: bool = False
    rejoin_rewind: bool = False  # async: a crashed primary may undo its unshipped tail (rewind.py)
    # Release (and in sync mode: let commits return) once this many of the counted standbys
    # (the required ones) durably hold a commit, like PostgreSQL's ANY N; 0 = all of them.
    sync_quorum: int = 0
    source: SourceConfig = field(default_factory=SourceConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    log: LogConfig = field(default_factory=LogConfig)
    status_interval_s: float = 1.0
    services: tuple[ServiceConfig, ...] = ()  # in start order

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)

    @property
    def log_path(self) -> Path:
        return Path(self.log.dir) if self.log.dir else self.data_path / "log"


# --- schema ------------------------------------------------------------------------------
Checker = Callable[[Any], tuple[Any, str | None]]


def _int(lo: int, hi: int) -> Checker:
    def check(v: Any) -> tuple[Any, str | None]:
        if isinstance(v, bool):
            return v, f"expected an integer {lo}-{hi}, got {_show(v)}"
        if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
            v = int(v)
        if not isinstance(v, int) or not lo <= v <= hi:
            return v, f"expected an integer {lo}-{hi}, got {_show(v)}"
        return v, None

    return check


def _float(lo: float, hi: float) -> Checker:
    def check(v: Any) -> tuple[Any, str | None]:
        try:
            if isinstance(v, bool):
                raise ValueError
            f = float(v)
        except (TypeError, ValueError):
            return v, f"expected a number {lo:g}-{hi:g}, got {_show(v)}"
        if not lo <= f <= hi:
            return v, f"expected a number {lo:g}-{hi:g}, got {_show(v)}"
        return f, None

    return check


def _bool(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, bool):
        return v, None
    if isinstance(v, str) and v.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return v.lower() in ("true", "yes", "on", "1"), None
    return v, f"expected true or false, got {_show(v)}"


def _str(pattern: str | None = None, what: str = "") -> Checker:
    def check(v: Any) -> tuple[Any, str | None]:
        if not isinstance(v, str):
            return v, f"expected a string, got {_show(v)}"
        if pattern and not re.fullmatch(pattern, v):
            return v, f"expected {what}, got {_show(v)}"
        return v, None

    return check


def _choice(*options: str) -> Checker:
    def check(v: Any) -> tuple[Any, str | None]:
        if v not in options:
            return v, f"expected one of {', '.join(options)}, got {_show(v)}"
        return v, None

    return check


def _names(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    if not isinstance(v, list | tuple) or not all(isinstance(s, str) and s for s in v):
        return v, f"expected a list of table names, got {_show(v)}"
    return tuple(v), None


_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


def _node_names(v: Any) -> tuple[Any, str | None]:
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    if not isinstance(v, list | tuple) or not all(isinstance(s, str) and re.fullmatch(_NAME, s) for s in v):
        return v, f"expected a node name or a list of node names, got {_show(v)}"
    return tuple(v), None


_IDENT = r"[a-z_][a-z0-9_]{0,62}"

SCHEMA: dict[str, dict[str, Checker]] = {
    "": {
        "node": _str(_NAME, "a node name (letters, digits, _ . -)"),
        "role": _choice("primary", "standby"),
        "data_dir": _str(r".+", "a directory path"),
        "run_dir": _str(r".+", "a directory path"),
        "sync": _bool,
        "rejoin_rewind": _bool,
        "sync_quorum": _int(1, 1000),
        "status_interval_s": _float(0.1, 60),
    },
    "source": {
        "engine": _choice("postgres", "oracle"),
        "dsn": _str(),
        "slot": _str(_IDENT, "a slot name (lower-case letters, digits, _)"),
        "publication": _str(_IDENT, "a publication name (lower-case letters, digits, _)"),
        "tables": _names,
        "application_name": _str(_NAME, "an application name"),
        "initial_load": _bool,
        "set_replica_identity_full": _bool,
        "memory_budget_mb": _int(1, 1 << 20),
        "logical_decoding_work_mem": _str(r"(\d+\s*(kB|MB|GB)?)?", "a size like 64kB"),
    },
    "target": {
        "engine": _choice("postgres", "oracle"),
        "dsn": _str(),
        "batch_txns": _int(1, 1_000_000),
        "batch_changes": _int(1, 10_000_000),
        "read_only": _bool,
        "queue_retain_mb": _int(0, 1 << 20),
    },
    "transport": {
        "listen_host": _str(r".+", "a host name or address"),
        "port": _int(1, 65535),
        "primary_host": _str(r".+", "a host name or address"),
        "heartbeat_s": _float(0.05, 60),
        "dead_peer_s": _float(0.2, 3600),
        "reconnect_max_s": _float(0.05, 600),
        "compression": _int(0, 7),
        "tls_ca": _str(),
        "tls_cert": _str(),
        "tls_key": _str(),
        "insecure": _bool,
        "primary_name": _node_names,
        "max_lag_mb": _float(0, 1 << 30),
        "detach_lagging": _bool,
        "bandwidth_mbit": _float(0, 1_000_000),
    },
    "log": {
        "dir": _str(),
        "level": _choice("debug", "info", "warning", "error"),
        "keep_days": _int(1, 3650),
    },
}


def _show(v: Any) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "nothing"
    return repr(v)


def _check_standbys(value: Any, errors: list[str]) -> tuple[StandbyPeer, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        errors.append(f"transport.standbys: expected a list of standbys, got {_show(value)}")
        return ()
    out: list[StandbyPeer] = []
    for i, item in enumerate(value):
        where = f"transport.standbys[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            errors.append(f"{where}: expected a name or a mapping with name/required, got {_show(item)}")
            continue
        unknown = set(item) - {"name", "required"}
        for key in sorted(unknown):
            errors.append(f"{where}.{key}: unknown key")
        name, err = _str(_NAME, "a node name")(item.get("name"))
        if err:
            errors.append(f"{where}.name: {err}")
            continue
        required, err = _bool(item.get("required", True))
        if err:
            errors.append(f"{where}.required: {err}")
            continue
        out.append(StandbyPeer(name=name, required=required))
    names = [p.name for p in out]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"transport.standbys: standby {dup!r} is listed twice")
    return tuple(out)


_SERVICE_KEYS: dict[str, Checker] = {
    "name": _str(_NAME, "a service name (letters, digits, _ . -)"),
    "start": _str(r"(?s).*\S.*", "a shell command"),
    "stop": _str(r"(?s).*\S.*", "a shell command"),
    "ready": _str(r"(?s).*\S.*", "a shell command"),
    "timeout_s": _float(1, 3600),
    "when": _choice("always", "primary"),
}
_SERVICE_REQUIRED = ("name", "start", "stop", "ready")


def _check_services(value: Any, errors: list[str]) -> tuple[ServiceConfig, ...]:
    """``services:``: a list of mappings, each error one line naming ``services[i].key``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        errors.append(f"services: expected a list of services, got {_show(value)}")
        return ()
    out: list[ServiceConfig] = []
    for i, item in enumerate(value):
        where = f"services[{i}]"
        if not isinstance(item, Mapping):
            errors.append(f"{where}: expected a mapping with name/start/stop/ready, got {_show(item)}")
            continue
        checked: dict[str, Any] = {}
        ok = True
        for key in sorted(set(item) - set(_SERVICE_KEYS), key=str):
            errors.append(f"{where}.{key}: unknown key")
            ok = False
        for key, checker in _SERVICE_KEYS.items():
            if key not in item:
                if key in _SERVICE_REQUIRED:
                    errors.append(f"{where}.{key}: required")
                    ok = False
                continue
            val, err = checker(item[key])
            if err:
                errors.append(f"{where}.{key}: {err}")
                ok = False
            else:
                checked[key] = val
        if ok:
            out.append(ServiceConfig(**checked))
    names = [s.name for s in out]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"services: service {dup!r} is listed twice")
    return tuple(out)


def validate(raw: Mapping[str, Any]) -> tuple[Config | None, list[str]]:
    """Check a merged mapping; return the Config (or None) and every error found."""
    errors: list[str] = []
    if not isinstance(raw, Mapping):
        return None, [f"top level: expected a mapping of settings, got {_show(raw)}"]
    sections: dict[str, dict[str, Any]] = {s: {} for s in SCHEMA}
    for key, value in raw.items():
        if key == "services":
            sections[""]["services"] = _check_services(value, errors)
            continue
        if key in SCHEMA and key != "":
            if value is None:
                continue
            if not isinstance(value, Mapping):
                errors.append(f"{key}: expected a mapping, got {_show(value)}")
                continue
            for sub, subval in value.items():
                if key == "transport" and sub == "standbys":
                    sections[key]["standbys"] = _check_standbys(subval, errors)
                    continue
                checker = SCHEMA[key].get(sub)
                if checker is None:
                    errors.append(f"{key}.{sub}: unknown key")
                    continue
                val, err = checker(subval)
                if err:
                    errors.append(f"{key}.{sub}: {err}")
                else:
                    sections[key][sub] = val
        else:
            checker = SCHEMA[""].get(key)
            if checker is None:
                errors.append(f"{key}: unknown key")
                continue
            val, err = checker(value)
            if err:
                errors.append(f"{key}: {err}")
            else:
                sections[""][key] = val
    cfg = Config(
        **sections[""],
        source=SourceConfig(**sections["source"]),
        target=TargetConfig(**sections["target"]),
        transport=TransportConfig(**sections["transport"]),
        log=LogConfig(**sections["log"]),
    )
    errors += _cross_checks(cfg)
    return (None if errors else cfg), errors


def _cross_checks(cfg: Config) -> list[str]:
    errors: list[str] = []
    if cfg.role == "primary":
        if not cfg.source.dsn:
            errors.append("source.dsn: required when role is primary")
        if not cfg.transport.standbys:
            errors.append("transport.standbys: a primary needs at least one standby to feed")
    if cfg.role == "standby" and not cfg.target.dsn:
        errors.append("target.dsn: required when role is standby")
    if cfg.sync and cfg.role == "primary" and not any(p.required for p in cfg.transport.standbys):
        errors.append("sync: needs at least one standby with required: true")
    if cfg.sync_quorum:
        standbys = cfg.transport.standbys
        counted = sum(1 for p in standbys if p.required) or len(standbys)
        if 0 < counted < cfg.sync_quorum:
            errors.append(
                f"sync_quorum: expected 1-{counted} (the required standbys in transport.standbys), "
                f"got {cfg.sync_quorum}"
            )
    if cfg.transport.dead_peer_s <= cfg.transport.heartbeat_s:
        errors.append(
            f"transport.dead_peer_s: must be larger than transport.heartbeat_s "
            f"({cfg.transport.heartbeat_s:g}), got {cfg.transport.dead_peer_s:g}"
        )
    return errors


def tls_errors(cfg: Config) -> list[str]:
    """Problems that keep this node from speaking mutual TLS, as ``transport.key: problem``.

    Why apart from :func:`validate`: these look at files on this node (exist, readable, key not
    readable by others), so the pipeline runs them where the files are used, at start, and
    ``validate()`` stays a pure check of the settings.  Nothing to check with ``insecure``.
    """
    t = cfg.transport
    if t.insecure:
        return []
    missing = [k for k in ("tls_ca", "tls_cert", "tls_key") if not getattr(t, k)]
    if missing:
        return [
            f"transport.{'/'.join(missing)}: required unless transport.insecure is true "
            "(create them with 'hodr certs init' and 'hodr certs issue NODE')"
        ]
    errors: list[str] = []
    for key in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(t, key)
        if not os.path.isfile(path):
            errors.append(f"transport.{key}: file {path} not found")
        elif not os.access(path, os.R_OK):
            errors.append(f"transport.{key}: file {path} is not readable")
    if os.path.isfile(t.tls_key):
        mode = os.stat(t.tls_key).st_mode & 0o777
        if mode & 0o077:
            # Refused like OpenSSH refuses such a key: whoever can read it can be this node.
            errors.append(
                f"transport.tls_key: {t.tls_key} is readable by others (mode {mode:04o}); chmod 600 it"
            )
    if cfg.role == "standby" and not t.primary_name:
        errors.append(
            "transport.primary_name: required with TLS on a standby (the name(s) the primary's "
            "certificate may carry)"
        )
    return errors


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``HODR_SOURCE__DSN=…`` → ``{"source": {"dsn": "…"}}``; ``HODR_ROLE=primary`` → top level.

    Only the variables that name a known key are taken, so unrelated ``HODR_*`` variables (the
    tests' ``HODR_ORACLE_DSN``) never cause errors."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if len(path) == 1 and path[0] in SCHEMA[""]:
            out[path[0]] = value
        elif len(path) == 2 and path[0] in SCHEMA and path[1] in SCHEMA[path[0]]:
            out.setdefault(path[0], {})[path[1]] = value
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge and check a config file; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", str(p)) from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML{where}: {problem}", str(p)) from exc
    base = raw if isinstance(raw, Mapping) else {"__top__": raw}
    merged = merge(base, env_overrides(os.environ if environ is None else environ))
    if "__top__" in merged:
        raise ConfigError(f"top level: expected a mapping of settings, got {_show(raw)}", str(p))
    cfg, errors = validate(merged)
    if errors:
        raise ConfigError(errors, str(p))
    assert cfg is not None
    return cfg


def to_dict(cfg: Any) -> Any:
    """Config → plain data (for ``validate-config --print`` and status)."""
    if hasattr(cfg, "__dataclass_fields__"):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    return cfg

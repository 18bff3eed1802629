"""Config: every problem reported at once as ``key.path: problem``; env overrides; good files load."""

from __future__ import annotations

from pathlib import Path

import pytest

from hodr.config import load, validate
from hodr.errors import ConfigError

GOOD_PRIMARY = """
node: db1
role: primary
data_dir: /var/lib/hodr/main
source: {dsn: "dbname=app", slot: hodr, tables: [public.a, public.b]}
transport: {port: 5440, standbys: [{name: db2}, {name: db3, required: false}]}
"""


def test_good_primary_loads(tmp_path: Path) -> None:
    p = tmp_path / "c.yml"
    p.write_text(GOOD_PRIMARY)
    cfg = load(p, environ={})
    assert cfg.role == "primary" and cfg.transport.port == 5440
    assert [s.name for s in cfg.transport.standbys] == ["db2", "db3"]
    assert cfg.transport.standbys[1].required is False
    assert cfg.source.tables == ("public.a", "public.b")


def test_every_error_is_listed_with_its_key_path(tmp_path: Path) -> None:
    p = tmp_path / "c.yml"
    p.write_text("role: primary\ntransport: {port: abc, compression: 9}\nsource: {slot: Bad-Slot}\nfoo: 1\n")
    with pytest.raises(ConfigError) as ei:
        load(p, environ={})
    errors = ei.value.errors
    assert 'transport.port: expected an integer 1-65535, got "abc"' in errors
    assert "transport.compression: expected an integer 0-7, got 9" in errors
    assert any(e.startswith("source.slot: expected a slot name") for e in errors)
    assert "foo: unknown key" in errors
    assert "source.dsn: required when role is primary" in errors
    assert str(p) in str(ei.value)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yml"
    p.write_text("role: primary\ntransport: {port: 1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load(p, environ={})


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load("/nonexistent/hodr.yml", environ={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yml"
    p.write_text(GOOD_PRIMARY)
    cfg = load(p, environ={"HODR_TRANSPORT__PORT": "6000", "HODR_SYNC": "true", "HODR_ORACLE_DSN": "x"})
    assert cfg.transport.port == 6000 and cfg.sync is True


def test_sync_needs_a_required_standby() -> None:
    cfg, errors = validate(
        {
            "role": "primary",
            "sync": True,
            "source": {"dsn": "x"},
            "transport": {"standbys": [{"name": "s", "required": False}]},
        }
    )
    assert cfg is None and "sync: needs at least one standby with required: true" in errors


def test_standby_needs_target() -> None:
    _, errors = validate({"role": "standby"})
    assert errors == ["target.dsn: required when role is standby"]


def test_sync_quorum_counts_the_required_standbys() -> None:
    base = {"role": "primary", "sync": True, "source": {"dsn": "x"}}
    three = {"standbys": ["a", "b", {"name": "c", "required": False}]}
    cfg, errors = validate({**base, "transport": three})
    assert errors == [] and cfg is not None and cfg.sync_quorum == 0  # default: all required
    cfg, errors = validate({**base, "sync_quorum": 2, "transport": three})
    assert errors == [] and cfg is not None and cfg.sync_quorum == 2
    _, errors = validate({**base, "sync_quorum": 3, "transport": three})
    assert errors == ["sync_quorum: expected 1-2 (the required standbys in transport.standbys), got 3"]
    _, errors = validate({**base, "sync_quorum": 0, "transport": three})
    assert errors == ["sync_quorum: expected an integer 1-1000, got 0"]


def test_queue_retention_defaults_to_256_mib_and_0_turns_it_off() -> None:
    cfg, _ = validate({"role": "standby", "target": {"dsn": "x"}})
    assert cfg is not None and cfg.target.queue_retain_mb == 256
    cfg, _ = validate({"role": "standby", "target": {"dsn": "x", "queue_retain_mb": 0}})
    assert cfg is not None and cfg.target.queue_retain_mb == 0
    _, errors = validate({"role": "standby", "target": {"dsn": "x", "queue_retain_mb": -1}})
    assert errors == ["target.queue_retain_mb: expected an integer 0-1048576, got -1"]

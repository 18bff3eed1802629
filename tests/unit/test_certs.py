"""hodr.certs: a private CA and node certificates whose names are node names; keys 0600; nothing
overwritten without force; and the config check that refuses unusable TLS files."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from hodr import certs
from hodr.cli import main
from hodr.config import tls_errors, validate


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_and_issue_write_keys_0600_and_name_the_node(tmp_path: Path) -> None:
    from cryptography import x509

    ca_cert, ca_key = certs.init_ca(tmp_path)
    files = certs.issue(tmp_path, "db2", hosts=["127.0.0.1", "db2.example"])
    assert _mode(ca_key) == 0o600 and _mode(files.key) == 0o600
    assert _mode(ca_cert) == 0o644 and _mode(files.cert) == 0o644
    assert certs.cert_names(files.cert) == ("db2", "db2.example")
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_keys_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0)
    try:
        _, key = certs.init_ca(tmp_path)
        files = certs.issue(tmp_path, "n1")
    finally:
        os.umask(old)
    assert _mode(key) == 0o600 and _mode(files.key) == 0o600


def test_nothing_is_overwritten_without_force(tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    files = certs.issue(tmp_path, "db1")
    before = files.key.read_bytes(), (tmp_path / certs.CA_KEY).read_bytes()
    with pytest.raises(certs.CertsError, match=r"refusing to overwrite .*ca\.pem.*--force"):
        certs.init_ca(tmp_path)
    with pytest.raises(certs.CertsError, match=r"refusing to overwrite .*db1\.pem"):
        certs.issue(tmp_path, "db1")
    assert (files.key.read_bytes(), (tmp_path / certs.CA_KEY).read_bytes()) == before
    again = certs.issue(tmp_path, "db1", force=True)
    assert again.key.read_bytes() != before[0] and _mode(again.key) == 0o600


def test_issue_needs_a_ca_and_a_valid_name(tmp_path: Path) -> None:
    with pytest.raises(certs.CertsError, match="run 'hodr certs init' first"):
        certs.issue(tmp_path, "db1")
    certs.init_ca(tmp_path)
    with pytest.raises(certs.CertsError, match="node name 'bad/name'"):
        certs.issue(tmp_path, "bad/name")


def test_validity_window_can_be_set_for_expiry_drills(tmp_path: Path) -> None:
    from cryptography import x509

    certs.init_ca(tmp_path)
    past = dt.datetime(2020, 1, 2, tzinfo=dt.UTC)
    f = certs.issue(tmp_path, "old", not_before=past - dt.timedelta(days=1), not_after=past)
    cert = x509.load_pem_x509_certificate(f.cert.read_bytes())
    assert cert.not_valid_after_utc == past


def test_cli_certs_init_and_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "tls"
    assert main(["certs", "init", "--dir", str(d)]) == 0
    assert main(["certs", "issue", "db3", "--dir", str(d), "--host", "10.0.0.3"]) == 0
    out = capsys.readouterr().out
    assert f"tls_cert: {d / 'db3.pem'}" in out and f"tls_key: {d / 'db3.key'}" in out
    assert _mode(d / "db3.key") == 0o600
    assert main(["certs", "issue", "db3", "--dir", str(d)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


# --- the configuration's TLS check ---------------------------------------------------------------
def _cfg(transport: dict, role: str = "standby"):  # type: ignore[no-untyped-def]
    raw = {"role": role, "target": {"dsn": "x"}, "source": {"dsn": "x"}, "transport": transport}
    if role == "primary":
        transport.setdefault("standbys", ["s1"])
    cfg, errors = validate(raw)
    assert not errors, errors
    return cfg


def test_tls_is_required_unless_insecure(tmp_path: Path) -> None:
    assert tls_errors(_cfg({"insecure": True})) == []
    errors = tls_errors(_cfg({}))
    assert len(errors) == 1
    assert errors[0].startswith("transport.tls_ca/tls_cert/tls_key: required unless transport.insecure")
    assert "hodr certs init" in errors[0]


def test_tls_files_must_exist_and_the_key_must_be_private(tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    f = certs.issue(tmp_path, "s1")
    good = {"tls_ca": str(f.ca), "tls_cert": str(f.cert), "tls_key": str(f.key)}
    assert tls_errors(_cfg({**good, "primary_name": "db1"})) == []
    assert tls_errors(_cfg(dict(good), role="primary")) == []
    (no_name,) = tls_errors(_cfg(dict(good)))
    assert no_name.startswith("transport.primary_name: required with TLS on a standby")
    missing = tls_errors(_cfg({**good, "tls_cert": str(tmp_path / "nope.pem"), "primary_name": "db1"}))
    assert missing == [f"transport.tls_cert: file {tmp_path / 'nope.pem'} not found"]
    f.key.chmod(0o644)
    loose = tls_errors(_cfg({**good, "primary_name": "db1"}))
    assert loose == [f"transport.tls_key: {f.key} is readable by others (mode 0644); chmod 600 it"]


def test_new_transport_keys_are_validated() -> None:
    cfg, errors = validate(
        {
            "role": "standby",
            "target": {"dsn": "x"},
            "transport": {
                "primary_name": "db1, db2",
                "max_lag_mb": "512",
                "detach_lagging": "yes",
                "bandwidth_mbit": 20,
                "insecure": "false",
            },
        }
    )
    assert not errors and cfg is not None
    t = cfg.transport
    assert t.primary_name == ("db1", "db2") and t.max_lag_mb == 512.0 and t.detach_lagging
    assert t.bandwidth_mbit == 20.0 and t.insecure is False
    _, errors = validate(
        {"transport": {"primary_name": ["ok", "not ok"], "max_lag_mb": -1, "bandwidth_mbit": "fast"}}
    )
    assert any(e.startswith("transport.primary_name: expected a node name or a list") for e in errors)
    assert any(e.startswith("transport.max_lag_mb: expected a number") for e in errors)
    assert any(e.startswith("transport.bandwidth_mbit: expected a number") for e in errors)

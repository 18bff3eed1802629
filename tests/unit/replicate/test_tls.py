"""tls.py: TLS 1.3 minimum, certificates required both ways, names checked against peer lists.

Over a real loopback socket pair (a handshake needs two ends), without the transport."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest

from hodr import certs
from hodr.errors import ConfigError
from hodr.replicate.tls import (
    MIN_VERSION,
    PeerNotAllowed,
    TlsFiles,
    check_peer,
    client_context,
    looks_like_tls,
    peer_names,
    server_context,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    d = tmp_path_factory.mktemp("pki")
    certs.init_ca(d)
    out = {
        n: TlsFiles(*(str(p) for p in (f.ca, f.cert, f.key)))
        for n in ("p", "s1")
        for f in [certs.issue(d, n)]
    }
    other = d / "other"
    certs.init_ca(other)
    f = certs.issue(other, "s1")
    out["foreign"] = TlsFiles(out["s1"].ca, str(f.cert), str(f.key))
    exp = d / "exp"
    exp.mkdir()
    for name in (certs.CA_CERT, certs.CA_KEY):
        shutil.copy2(d / name, exp / name)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    f = certs.issue(exp, "s1", not_before=past - dt.timedelta(days=9), not_after=past)
    out["expired"] = TlsFiles(out["s1"].ca, str(f.cert), str(f.key))
    return out


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[object, object]:
    """Run both handshakes (and one byte each way, where TLS 1.3 reports a refused client
    certificate); returns (server result, client result): a names set or the exception."""
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    result: dict[str, object] = {}

    def serve() -> None:
        try:
            s = server_ctx.wrap_socket(a, server_side=True)
            result["server"] = peer_names(s)
            s.sendall(b"x")
            s.recv(1)
            s.close()
        except (ssl.SSLError, OSError) as exc:
            result["server"] = exc
            a.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        c = client_ctx.wrap_socket(b, server_hostname="localhost")
        names = peer_names(c)
        c.sendall(b"y")
        c.recv(1)
        result["client"] = names
        c.close()
    except (ssl.SSLError, OSError) as exc:
        result["client"] = exc
        b.close()
    t.join(10)
    assert not t.is_alive()
    return result["server"], result["client"]


def test_contexts_require_tls_13_and_certificates_both_ways(pki: dict[str, TlsFiles]) -> None:
    for factory in (server_context(pki["p"]), client_context(pki["s1"])):
        ctx = factory()
        assert ctx.minimum_version == MIN_VERSION == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname


def test_the_right_certificates_connect_and_name_each_other(pki: dict[str, TlsFiles]) -> None:
    server, client = _handshake(server_context(pki["p"])(), client_context(pki["s1"])())
    assert server == frozenset({"s1"}) and client == frozenset({"p"})
    assert check_peer(server, ["s1", "s2"], "standby") == "s1"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "case, why",
    [("foreign", "unable to get local issuer certificate"), ("expired", "certificate has expired")],
)
def test_a_client_from_another_ca_or_expired_is_refused(
    pki: dict[str, TlsFiles], case: str, why: str
) -> None:
    server, client = _handshake(server_context(pki["p"])(), client_context(pki[case])())
    assert isinstance(server, ssl.SSLCertVerificationError) and why in server.verify_message
    assert isinstance(client, ssl.SSLError | OSError)


def test_a_primary_from_another_ca_is_refused_by_the_standby(pki: dict[str, TlsFiles]) -> None:
    server, client = _handshake(server_context(pki["foreign"])(), client_context(pki["s1"])())
    assert isinstance(client, ssl.SSLCertVerificationError)
    assert "unable to get local issuer certificate" in client.verify_message
    assert isinstance(server, ssl.SSLError | OSError)


def test_a_tls_12_peer_is_refused(pki: dict[str, TlsFiles]) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.check_hostname = False
    old.load_verify_locations(pki["s1"].ca)
    old.load_cert_chain(pki["s1"].cert, pki["s1"].key)
    server, client = _handshake(server_context(pki["p"])(), old)
    assert isinstance(server, ssl.SSLError) and isinstance(client, ssl.SSLError)


def test_check_peer_names_both_sides_in_its_message() -> None:
    with pytest.raises(
        PeerNotAllowed, match=r"primary at h:1: certificate names evil, expected one of: db1, db2"
    ):
        check_peer(frozenset({"evil"}), ["db2", "db1"], "primary at h:1")
    assert check_peer(None, ["db1"], "plain") is None


def test_bad_files_are_config_errors_naming_the_key(tmp_path: Path, pki: dict[str, TlsFiles]) -> None:
    with pytest.raises(ConfigError, match=r"transport.tls_ca: cannot load .*nope"):
        server_context(TlsFiles(str(tmp_path / "nope"), pki["p"].cert, pki["p"].key))
    with pytest.raises(ConfigError, match=r"transport.tls_cert/tls_key: cannot load"):
        client_context(TlsFiles(pki["p"].ca, pki["p"].cert, pki["s1"].key))  # key of another cert


def test_looks_like_tls() -> None:
    assert looks_like_tls(b"\x16\x03\x01\x02\x00") and looks_like_tls(b"\x15\x03\x03")
    assert not looks_like_tls(b"HW\x01") and not looks_like_tls(b"\x16")

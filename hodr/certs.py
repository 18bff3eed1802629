"""A private CA and node certificates for hodr's mutual TLS (``hodr certs init`` / ``hodr certs issue``).

Why a private CA of hodr's own: every hodr connection is authenticated both ways by a certificate
whose *name* is a node name from the configuration (architecture §2: "framed, mTLS, zstd").  A
public CA would vouch for host names, not for "this peer is standby db2"; a CA that signs nothing
but hodr nodes makes "signed by our CA and named like a configured peer" a complete check.

Layout of the directory (default ``/etc/hodr/tls``)::

    ca.pem          the CA certificate: copy it to every node (transport.tls_ca)
    ca.key          the CA private key (0600): keep it where certificates are issued, only there
    NODE.pem        a node certificate, CN and SAN DNS = NODE (transport.tls_cert)
    NODE.key        its private key (0600)                    (transport.tls_key)

Keys are ECDSA P-256: small, fast handshakes, supported by every OpenSSL that speaks TLS 1.3.
Private keys are created with mode 0600 from the first byte (``os.open`` with the mode, not a
chmod after the write, so there is no window in which another user could read them), written the
boring way (temp file, fsync, rename) and never overwritten unless ``force`` is given: replacing
a CA key by accident would lock every node out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hodr.errors import HodrError

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
DEFAULT_DIR = "/etc/hodr/tls"
CA_DAYS = 3650
NODE_DAYS = 825  # the longest validity common TLS clients accept for leaf certificates
_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # the config's node-name rule


class CertsError(HodrError):
    """A certificate could not be created (exists without ``force``, bad name, missing CA)."""


@dataclass(frozen=True)
class NodeFiles:
    """The three files a node's ``transport`` section names."""

    ca: Path
    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Temp file created with ``mode`` → write → fsync → rename → fsync(dir)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it further; never wider than asked
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _refuse_existing(paths: Sequence[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise CertsError(f"refusing to overwrite {', '.join(existing)} (use --force to replace)")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def init_ca(
    directory: str | os.PathLike[str] = DEFAULT_DIR,
    *,
    name: str = "hodr CA",
    days: int = CA_DAYS,
    force: bool = False,
) -> tuple[Path, Path]:
    """Create ``ca.pem`` and ``ca.key`` (0600) in ``directory``; returns (cert, key)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = d / CA_CERT, d / CA_KEY
    _refuse_existing([cert_path, key_path], force)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock differences
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    # The key first: a CA certificate without its key is useless, a key without the
    # certificate is caught by the refuse-to-overwrite check on the next attempt.
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, _cert_pem(cert), 0o644)
    return cert_path, key_path


def issue(
    directory: str | os.PathLike[str],
    node: str,
    *,
    hosts: Sequence[str] = (),
    days: int = NODE_DAYS,
    force: bool = False,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> NodeFiles:
    """Sign a certificate for ``node`` with the CA in ``directory``: ``NODE.pem`` + ``NODE.key``.

    The certificate's CN and first SAN DNS name are the node name — that is what the peer checks
    against its configured peer list.  ``hosts`` adds SAN entries (DNS names or IP addresses) for
    tools that verify host names; hodr itself checks the node name only.  ``not_before`` /
    ``not_after`` override the validity window (tests and expiry drills).
    """
    if not _NODE_RE.match(node):
        raise CertsError(f"node name {node!r}: expected 1-63 characters [A-Za-z0-9_.-]")
    d = Path(directory)
    ca_cert_path, ca_key_path = d / CA_CERT, d / CA_KEY
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertsError(f"no CA in {d}: {exc.filename} is missing (run 'hodr certs init' first)") from exc
    except ValueError as exc:
        raise CertsError(f"cannot read the CA in {d}: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertsError(f"{ca_key_path}: expected an EC private key")
    cert_path, key_path = d / f"{node}.pem", d / f"{node}.key"
    _refuse_existing([cert_path, key_path], force)
    sans: list[x509.GeneralName] = [x509.DNSName(node)]
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    start = not_before or now - dt.timedelta(minutes=5)
    end = not_after or now + dt.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # Both usages: the same node is a TLS server as primary and a client as standby.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, _cert_pem(cert), 0o644)
    return NodeFiles(ca=ca_cert_path, cert=cert_path, key=key_path)


def cert_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """CN and SAN DNS names of a PEM certificate (for messages and tests)."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [n for n in san.get_values_for_type(x509.DNSName) if n not in names]
    return tuple(names)


__all__ = ["CA_CERT", "CA_KEY", "DEFAULT_DIR", "CertsError", "NodeFiles", "cert_names", "init_ca", "issue"]

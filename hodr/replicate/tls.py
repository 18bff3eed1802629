"""Mutual TLS for the transport: SSLContext factories and the peer-name check.

Why both sides check a *name*, not just the CA: every node of a hodr cluster holds a certificate
from the same private CA (``hodr certs``), so "signed by our CA" only says "some hodr node".  The
primary accepts a standby only if its certificate names a configured standby *and* that name is
the one the standby announces in HELLO (a node cannot stream someone else's position or ack in
someone else's name); a standby accepts a primary only if its certificate names one of the
configured primaries (``transport.primary_name``: one name, or the nodes a VIP may move between).

What the stdlib does and what is left here: the contexts require TLS 1.3 and a certificate from
the configured CA both ways (``CERT_REQUIRED``), which covers "another CA" and "expired";
``check_hostname`` stays off because hodr peers are named by node, not by the address dialled (a
VIP), and :func:`peer_names` + :func:`check_peer` do the name check with a message that says which
names were seen and which were expected.

No stage imports, no drivers: the transport imports this module, the pipeline builds the
factories from the configuration.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from hodr.errors import ConfigError, RetryableTransportError

ContextFactory = Callable[[], ssl.SSLContext]
MIN_VERSION = ssl.TLSVersion.TLSv1_3


class PeerNotAllowed(RetryableTransportError):
    """The peer's certificate is valid but names nobody this node is configured to talk to."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one node: the CA that signs every peer, this node's certificate and key."""

    ca: str
    cert: str
    key: str


def _context(files: TlsFiles, purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = MIN_VERSION
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False  # names are checked by check_peer (node names, not addresses)
    # Only our private CA: the system trust store would let any public certificate in.
    try:
        ctx.load_verify_locations(cafile=files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"transport.tls_ca: cannot load {files.ca}: {_why(exc)}") from exc
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"transport.tls_cert/tls_key: cannot load {files.cert} with {files.key}: {_why(exc)}"
        ) from exc
    return ctx


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def server_context(files: TlsFiles) -> ContextFactory:
    """The primary's factory: TLS 1.3, client certificate from our CA required.

    The context is built (and the files read) here, once, so that a bad file is a start-up error
    with its config key, not a failure of every later connection; the factory hands out the same
    context (``SSLContext.wrap_socket`` is safe to share between threads)."""
    ctx = _context(files, ssl.PROTOCOL_TLS_SERVER)
    return lambda: ctx


def client_context(files: TlsFiles) -> ContextFactory:
    """The standby's factory: TLS 1.3, the primary's certificate must come from our CA."""
    ctx = _context(files, ssl.PROTOCOL_TLS_CLIENT)
    return lambda: ctx


def peer_names(sock: Any) -> frozenset[str] | None:
    """CN and SAN DNS names of a verified peer certificate; None for a plain socket.

    Only meaningful after a handshake under ``CERT_REQUIRED`` (``getpercert()`` returns the
    parsed certificate only when it was verified)."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert = sock.getpeercert()
    if not cert:
        return frozenset()
    names: set[str] = set()
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            names.add(str(value))
    return frozenset(names)


def check_peer(names: frozenset[str] | None, allowed: Collection[str], who: str) -> str | None:
    """The allowed name the certificate carries, or :class:`PeerNotAllowed` naming both sides.

    ``names`` None (plain TCP, ``transport.insecure``) passes unchecked: the caller decided."""
    if names is None:
        return None
    hit = sorted(names & set(allowed))
    if not hit:
        seen = ", ".join(sorted(names)) or "no name"
        want = ", ".join(sorted(allowed)) or "none configured"
        raise PeerNotAllowed(f"{who}: certificate names {seen}, expected one of: {want}")
    return hit[0]


def looks_like_tls(data: bytes) -> bool:
    """A TLS record header (handshake or alert, version 3.x) at the start of ``data``: a plaintext
    peer that sees this talks to a TLS peer (or the other way round) — worth saying so."""
    return len(data) >= 2 and data[0] in (0x15, 0x16) and data[1] == 0x03


__all__ = [
    "MIN_VERSION",
    "ContextFactory",
    "PeerNotAllowed",
    "TlsFiles",
    "check_peer",
    "client_context",
    "looks_like_tls",
    "peer_names",
    "server_context",
]

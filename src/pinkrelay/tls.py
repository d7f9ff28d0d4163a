"""TLS 1.3 on the button and console listeners and in the clients, carrying the same v1 frames.

The relay's sessions and the clients' links read and write plaintext
sockets directly (``recv_some`` and the SendQueue's ``sendmsg`` on the file
descriptor), and their priority rules live in that send queue. TLS keeps
them unchanged: a connection's TLS side (``trio.SSLStream``) is bridged to
one end of a socketpair, and the session or link works on the other end as
if the network were plaintext. This is the pure-Python path; it costs a hop
per read and per write, which is what a compiled data plane with libssl
removes.

A device maker's side of it is in docs/protocol.md §13: TLS 1.3, the relay's
certificate checked against the deployment's CA (``pinkrelay certs init``)
or pinned by its SHA-256, and on buttons an optional client certificate
whose CN is the button id.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .errors import ConfigError, ConnectionRefused

#: The first byte of a TLS record carrying a handshake (a ClientHello starts with it).
TLS_HANDSHAKE = 0x16
PUMP_BYTES = 64 * 1024


def server_context(cert: Path | str, key: Path | str, client_ca: Path | str | None = None) -> ssl.SSLContext:
    """A TLS 1.3 server context; with ``client_ca`` a client certificate signed by it is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"TLS certificate {cert} / key {key}: {getattr(error, 'strerror', None) or error} "
                          "(make them with 'pinkrelay certs init DIR')") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"tls_client_ca {client_ca}: {getattr(error, 'strerror', None) or error}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass(frozen=True, slots=True)
class ClientTls:
    """How a client checks the relay: a CA, or a pinned certificate, or both; optionally its own certificate."""

    context: ssl.SSLContext
    #: SHA-256 of the relay certificate (hex, colons allowed); empty: the CA decides alone.
    pin: str = ""
    server_hostname: str | None = None


def client_tls(*, ca: Path | str | None = None, pin: str = "", cert: Path | str | None = None,
               key: Path | str | None = None, server_hostname: str | None = None) -> ClientTls:
    """A client's TLS settings.

    With ``ca`` the relay's certificate must chain to it; with only a ``pin``
    it is trusted by its hash alone; with neither, by the system's CAs.
    """
    pin = pin.replace(":", "").lower()
    if pin and (len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin)):
        raise ConfigError(f"certificate pin {pin!r} is not a SHA-256 in hex (64 digits, colons allowed)")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if ca is not None:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"CA file {ca}: {getattr(error, 'strerror', None) or error}") from None
    elif pin:  # pinned: the hash is the trust
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert is not None or key is not None:
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError, TypeError) as error:
            raise ConfigError(f"client certificate {cert} / key {key}: {getattr(error, 'strerror', None) or error}"
                              ) from None
    return ClientTls(context=context, pin=pin, server_hostname=server_hostname)


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex: what ``--pin`` takes (``openssl x509 -fingerprint -sha256``)."""
    return hashlib.sha256(der).hexdigest()


def certificate_common_name(stream: trio.SSLStream[Any]) -> str:
    """The CN of the peer's verified certificate, or "" when it sent none."""
    peer = stream.getpeercert()
    for entry in (peer or {}).get("subject", ()):
        for key, value in entry:
            if key == "commonName":
                return str(value)
    return ""


async def looks_like_tls(stream: trio.SocketStream, timeout: float) -> bool | None:
    """Peek at the first byte: a TLS record (True), something else (False), nothing in time (None)."""
    with trio.move_on_after(timeout):
        try:
            first = await stream.socket.recv(1, socket.MSG_PEEK)
        except OSError:
            return None
        return first[0] == TLS_HANDSHAKE if first else None
    return None


def socketpair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """(the end a session or link works on, the end the bridge pumps)."""
    near, far = trio.socket.socketpair()
    return trio.SocketStream(near), trio.SocketStream(far)


async def bridge(secure: trio.SSLStream[Any], plain: trio.SocketStream,
                 on_end: Callable[[str], None] | None = None) -> None:
    """Pump bytes both ways until either side ends; then close both."""
    reason = "closed"

    async def inbound() -> None:
        nonlocal reason
        try:
            while data := await secure.receive_some(PUMP_BYTES):
                await plain.send_all(data)
            reason = "peer closed the TLS connection"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            reason = f"TLS connection lost: {error.__cause__ or error}"
        await _close(plain)

    async def outbound() -> None:
        nonlocal reason
        try:
            while data := await plain.receive_some(PUMP_BYTES):
                await secure.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await _close(secure)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(inbound)
        nursery.start_soon(outbound)
    if on_end is not None:
        on_end(reason)


async def _close(stream: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def client_handshake(stream: trio.SocketStream, tls: ClientTls, host: str) -> trio.SSLStream[Any]:
    """TLS handshake with the relay, then the pin; ConnectionRefused for a certificate it must not trust."""
    secure = trio.SSLStream(stream, tls.context, server_hostname=tls.server_hostname or host)
    try:
        await secure.do_handshake()
    except trio.BrokenResourceError as error:
        cause = error.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise ConnectionRefused(f"the relay's TLS certificate is not trusted: {cause.verify_message} "
                                    "(is --ca the deployment's CA?)", code="tls") from None
        raise OSError(f"TLS handshake with the relay failed: {cause or error} (does the relay serve TLS on "
                      "this port?)") from None
    if tls.pin:
        der = secure.getpeercert(binary_form=True) or b""
        if fingerprint(der) != tls.pin:
            await _close(secure)
            raise ConnectionRefused(f"the relay's TLS certificate has SHA-256 {fingerprint(der)}, not the pinned "
                                    f"{tls.pin}", code="tls")
    return secure

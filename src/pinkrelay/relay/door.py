"""The relay's door: what happens to a connection before it becomes a session.

Two things can happen there: a refusal by the abuse limits (limits.py), told
to the peer in one plaintext ``error`` frame, and, on a TLS listener, the
TLS handshake. A TLS listener peeks at the first byte: a peer that speaks
plaintext v1 (a device not set up for TLS) gets a plaintext ``error``
``tls-required`` it can read, instead of a TLS alert it cannot; one that
fails the handshake (wrong CA, expired or missing client certificate) is
named in the log with OpenSSL's reason.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import trio

from .._core import encode_frame, recv_some
from ..protocol import Error, encode_body, frame_lane
from ..tls import certificate_common_name, looks_like_tls


async def refuse(stream: trio.SocketStream, error: Error) -> None:
    """Send one error frame if the socket takes it now, then close the connection."""
    frame = encode_frame(error.frame_type, frame_lane(error.frame_type), 0, 0, 0, encode_body(error))
    fd = stream.socket.fileno()
    try:
        os.write(fd, frame)  # non-blocking: a full socket simply misses the explanation
        # Read what the peer already sent, so closing does not reset the connection
        # (a reset can discard the error frame before the peer reads it).
        while recv_some(fd, 65536):
            pass
    except OSError:
        pass
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        await stream.aclose()


class TlsRefused(Exception):
    """The TLS handshake did not complete; ``reason`` names why, ``kind`` is the metric's label."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


async def accept_tls(stream: trio.SocketStream, context: ssl.SSLContext, timeout: float
                     ) -> tuple[trio.SSLStream[Any], str]:
    """The TLS handshake of a new connection: (its TLS stream, the client certificate's CN or "")."""
    first = await looks_like_tls(stream, timeout)
    if first is None:
        await _close(stream)
        raise TlsRefused("timeout", f"sent nothing that starts a TLS handshake within {timeout:g} s")
    if first is False:
        await refuse(stream, Error(code="tls-required", fatal=True, message=(
            "this listener speaks TLS 1.3 only: connect with TLS (pinkrelay clients: --tls --ca FILE)")))
        raise TlsRefused("plaintext", "sent plaintext to a TLS listener")
    secure = trio.SSLStream(stream, context, server_side=True)
    try:
        with trio.fail_after(timeout):
            await secure.do_handshake()
    except trio.TooSlowError:
        await _close(stream)
        raise TlsRefused("timeout", f"did not complete the TLS handshake within {timeout:g} s") from None
    except trio.BrokenResourceError as error:
        await _close(stream)
        cause = error.__cause__
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or str(cause or error)
        raise TlsRefused("handshake", f"TLS handshake failed: {reason}") from None
    return secure, certificate_common_name(secure)


async def _close(stream: trio.SocketStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        await stream.aclose()

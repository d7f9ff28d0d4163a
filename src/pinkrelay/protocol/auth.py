"""Challenge-response authentication for buttons and consoles.

A client never sends its secret. The relay sends a fresh 32-byte nonce; the
client answers with HMAC-SHA256(secret, context) where the context binds the
nonce, the role, the identity and a counter that must grow with every
session. A captured handshake is useless: the next session has another
nonce, and a replayed counter is refused even if a nonce ever repeated.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

from ..errors import AuthenticationFailed

NONCE_BYTES = 32
_DOMAIN = b"pinkrelay-v1-auth\x00"


def make_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def default_counter() -> int:
    """A counter for devices that keep no state: microseconds since the epoch.

    A device that can store a number should persist and increment its own
    instead, so a wrong clock cannot lock it out.
    """
    return time.time_ns() // 1000


def proof_context(nonce: bytes, role: str, identity: str, counter: int) -> bytes:
    """The bytes the HMAC covers (documented byte for byte in docs/protocol.md)."""
    return b"".join(
        (
            _DOMAIN,
            nonce,
            role.encode("ascii"),
            b"\x00",
            identity.encode("utf-8"),
            b"\x00",
            counter.to_bytes(8, "big"),
        )
    )


def compute_proof(secret: bytes, nonce: bytes, role: str, identity: str, counter: int) -> bytes:
    return hmac.new(secret, proof_context(nonce, role, identity, counter), hashlib.sha256).digest()


def verify_proof(
    secret: bytes,
    nonce: bytes,
    role: str,
    identity: str,
    counter: int,
    proof: bytes,
    last_counter: int,
) -> None:
    """Raise AuthenticationFailed unless ``proof`` is right and ``counter`` is new."""
    expected = compute_proof(secret, nonce, role, identity, counter)
    if not hmac.compare_digest(expected, proof):
        raise AuthenticationFailed(f"{role} {identity!r}: wrong proof (secret does not match)")
    if counter <= last_counter:
        raise AuthenticationFailed(
            f"{role} {identity!r}: counter {counter} is not above the last accepted "
            f"{last_counter} (replayed handshake, or the device's counter went back)",
            public_reason="authentication failed: stale counter",
        )

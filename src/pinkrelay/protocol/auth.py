"""Challenge-response authentication for buttons and consoles.

Two forms share the same context bytes. Buttons and console tokens use
HMAC-SHA256 with the shared secret as key. Operator accounts use a SCRAM
proof (RFC 5802's idea with scrypt), so the relay stores only a hash that
cannot be used to sign in: see ``scram_keys`` and pinkrelay/operators.py.

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
    check_counter(role, identity, counter, last_counter)


def check_counter(role: str, identity: str, counter: int, last_counter: int) -> None:
    """Refuse a counter that is not above the last one accepted for this identity."""
    if counter <= last_counter:
        raise AuthenticationFailed(
            f"{role} {identity!r}: counter {counter} is not above the last accepted "
            f"{last_counter} (replayed handshake, or the device's counter went back)",
            public_reason="authentication failed: stale counter",
        )


_CLIENT_KEY = b"pinkrelay client key"
#: The most expensive scrypt a client accepts from a relay's challenge.
MAX_SCRYPT_N = 2**20


def parse_kdf(kdf: str) -> tuple[int, int, int]:
    """``scrypt:N:R:P`` -> (N, R, P), refusing absurd costs a hostile relay might ask for."""
    try:
        name, n, r, p = kdf.split(":")
        values = int(n), int(r), int(p)
    except ValueError:
        raise AuthenticationFailed(f"unsupported key derivation {kdf!r}") from None
    n, r, p = values
    power_of_two = n & (n - 1) == 0
    if name != "scrypt" or not (2 <= n <= MAX_SCRYPT_N and power_of_two and 1 <= r <= 32 and 1 <= p <= 16):
        raise AuthenticationFailed(f"unsupported key derivation {kdf!r}")
    return values


def scram_keys(secret: bytes, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    """(client_key, stored_key) for an operator secret; only stored_key is kept."""
    salted = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    client_key = hmac.new(salted, _CLIENT_KEY, hashlib.sha256).digest()
    return client_key, hashlib.sha256(client_key).digest()


def scram_proof(client_key: bytes, stored_key: bytes, context: bytes) -> bytes:
    signature = hmac.new(stored_key, context, hashlib.sha256).digest()
    return bytes(a ^ b for a, b in zip(client_key, signature, strict=True))


def scram_verify(stored_key: bytes, context: bytes, proof: bytes) -> bool:
    """Recover the client key from the proof and check it hashes to ``stored_key``."""
    signature = hmac.new(stored_key, context, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


def decoy_salt(relay_key: bytes, identity: str) -> bytes:
    """A stable salt for a name with no account, so a challenge reveals nothing."""
    return hmac.new(relay_key, b"decoy salt\x00" + identity.encode("utf-8"), hashlib.sha256).digest()[:16]

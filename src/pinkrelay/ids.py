"""Identifiers made at the edge: UUIDv7 alert ids (RFC 9562).

A UUIDv7 starts with the creation time in milliseconds, so alert ids made by
different buttons sort by time and a journal index on them stays compact,
and 74 random bits make a collision between buttons practically impossible.
"""

from __future__ import annotations

import os
import time
import uuid


def uuid7(now_ns: int | None = None) -> str:
    """A new UUIDv7 as a string."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((random >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= random & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))

"""The trio relay: listeners, sessions, alert lane, fan-out hub, supervision."""

from __future__ import annotations

from .events import AuthRefused, ClientConnected, ClientDisconnected, ProtocolViolation
from .server import Relay, open_relay, read_console_tokens

__all__ = [
    "AuthRefused",
    "ClientConnected",
    "ClientDisconnected",
    "ProtocolViolation",
    "Relay",
    "open_relay",
    "read_console_tokens",
]

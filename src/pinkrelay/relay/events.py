"""What an embedding service hears from a running relay (``Relay.events()``).

Alerts and button state changes arrive as the protocol's own ``Alert`` and
``ButtonState`` events; the classes here report the relay's own decisions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConnected:
    role: str
    identity: str
    peer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientDisconnected:
    role: str
    identity: str
    peer: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRefused:
    """A button or console could not prove who it is (the reason is for logs only)."""

    role: str
    identity: str
    peer: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolViolation:
    """A peer broke the protocol and was disconnected."""

    role: str
    identity: str
    peer: str
    reason: str

"""Wire protocol v1, sans-IO: connections that turn bytes into events and back.

Nothing in this package opens a socket, imports trio or reads a clock:
time is an argument. ``docs/protocol.md`` is the specification.
"""

from __future__ import annotations

from .auth import compute_proof, default_counter, make_nonce, verify_proof
from .connection import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LIMITS,
    DEFAULT_SUPERVISION_WINDOW,
    ButtonConnection,
    Connection,
    ConsoleConnection,
    ProtocolLimits,
    RelayConnection,
    frame_lane,
)
from .events import (
    Alert,
    AlertAck,
    AlertUpdate,
    Authenticate,
    ButtonState,
    Challenge,
    ConnectionClosed,
    Error,
    Event,
    Goodbye,
    Heartbeat,
    Hello,
    KeyframeRequest,
    Media,
    PeerSilent,
    Site,
    StreamDescription,
    Subscribe,
    Subscribed,
    TalkBack,
    TrackDescription,
    Unsubscribe,
    Welcome,
)
from .messages import decode_body, encode_body
from .state import State

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_LIMITS",
    "DEFAULT_SUPERVISION_WINDOW",
    "Alert",
    "AlertAck",
    "AlertUpdate",
    "Authenticate",
    "ButtonConnection",
    "ButtonState",
    "Challenge",
    "Connection",
    "ConnectionClosed",
    "ConsoleConnection",
    "Error",
    "Event",
    "Goodbye",
    "Heartbeat",
    "Hello",
    "KeyframeRequest",
    "Media",
    "PeerSilent",
    "ProtocolLimits",
    "RelayConnection",
    "Site",
    "State",
    "StreamDescription",
    "Subscribe",
    "Subscribed",
    "TalkBack",
    "TrackDescription",
    "Unsubscribe",
    "Welcome",
    "compute_proof",
    "decode_body",
    "default_counter",
    "encode_body",
    "frame_lane",
    "make_nonce",
    "verify_proof",
]

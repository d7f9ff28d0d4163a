"""pinkrelay: the relay between panic buttons and the police control room.

The public API for services that embed it::

    import pinkrelay
    async with pinkrelay.open_relay(pinkrelay.RelayConfig()) as relay:
        async for event in relay.events(name="dispatch-bridge"):
            ...

The relay never waits for an event reader: one that leaves more than its
buffer unread loses events, with a warning naming it in the relay's log
(``Relay.publish_event``); every alert also stays in the journal.

Buttons embed ``ButtonClient``; control-room applications ``ConsoleClient``.
Everything not re-exported here is private or lives in a subpackage
(``pinkrelay.protocol`` for the sans-IO wire protocol, ``pinkrelay.media``
for PyAV encoding and decoding).
"""

from __future__ import annotations

from .clients import ButtonClient, ConsoleClient, Disconnected, PressReceipt, Reconnected
from .config import Address, RelayConfig, load_config
from .errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionRefused,
    FrameError,
    LimitExceeded,
    MessageError,
    PinkRelayError,
    ProtocolError,
    RegistryError,
    SlowConsumer,
    StateError,
    TalkBackRefused,
)
from .protocol import (
    Alert,
    AlertAck,
    AlertUpdate,
    ButtonState,
    Media,
    Site,
    StreamDescription,
    Subscribed,
    TalkBack,
    TrackDescription,
)
from .registry import Button, Registry, load_registry
from .relay import AuthRefused, ClientConnected, ClientDisconnected, ProtocolViolation, Relay, open_relay

__version__ = "0.1.0"

__all__ = [
    "Address",
    "Alert",
    "AlertAck",
    "AlertUpdate",
    "AuthRefused",
    "AuthenticationFailed",
    "Button",
    "ButtonClient",
    "ButtonState",
    "ClientConnected",
    "ClientDisconnected",
    "ConfigError",
    "ConnectionRefused",
    "ConsoleClient",
    "Disconnected",
    "FrameError",
    "LimitExceeded",
    "Media",
    "MessageError",
    "PinkRelayError",
    "PressReceipt",
    "ProtocolError",
    "ProtocolViolation",
    "Reconnected",
    "Registry",
    "RegistryError",
    "Relay",
    "RelayConfig",
    "Site",
    "SlowConsumer",
    "StateError",
    "StreamDescription",
    "Subscribed",
    "TalkBack",
    "TalkBackRefused",
    "TrackDescription",
    "load_config",
    "load_registry",
    "open_relay",
]

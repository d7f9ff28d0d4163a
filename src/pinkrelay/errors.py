"""Every exception pinkrelay raises, in one place.

Each class inherits a builtin as well as the package base, so callers that
only know ``except ValueError`` or ``except ConnectionError`` still catch it.
Messages name what was wrong (field, value, limit) and what happens next.
"""

from __future__ import annotations


class PinkRelayError(Exception):
    """Base class of every pinkrelay error."""


class ProtocolError(PinkRelayError, ValueError):
    """The peer sent bytes that break wire protocol v1.

    The connection that produced them cannot be trusted any further: the
    receiver sends an ``error`` frame if it can, then closes that connection.
    Other connections are unaffected.
    """

    #: Short machine-readable reason, also sent in the ``error`` frame's ``code``.
    code: str = "protocol"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class FrameError(ProtocolError):
    """A frame header is malformed: bad magic, version, type, lane or flags."""

    code = "bad-frame"


class LimitExceeded(ProtocolError):
    """A length, count or depth is above the configured limit.

    Raised before anything of the declared size is allocated, so a lying
    length field costs the receiver nothing.
    """

    code = "limit"


class MessageError(ProtocolError):
    """A control message body is not valid msgpack or breaks its schema."""

    code = "bad-message"


class StateError(ProtocolError):
    """A frame arrived that the connection's state does not allow.

    Example: media before authentication, or a second ``hello``.
    """

    code = "bad-state"


class AuthenticationFailed(PinkRelayError, PermissionError):
    """A button or console could not prove who it is.

    The relay refuses the connection with a generic reason (so it does not
    reveal which ids exist) and logs the precise one.
    """

    code = "auth"

    def __init__(self, message: str, *, public_reason: str = "authentication failed") -> None:
        super().__init__(message)
        self.public_reason = public_reason


class TalkBackRefused(PinkRelayError, PermissionError):
    """An operator may not talk to that button now; the message says why and who may.

    Only the operator who holds the button's alert (acknowledged it) or a
    supervisor may talk, to a connected button that can play talk-back, one
    voice at a time.
    """


class ConfigError(PinkRelayError, ValueError):
    """A configuration file, environment variable or flag is invalid."""


class RegistryError(ConfigError):
    """The button registry is unreadable or has an invalid entry."""


class ConnectionRefused(PinkRelayError, ConnectionError):
    """The relay refused this client (it sent an ``error`` frame and closed)."""

    def __init__(self, message: str, *, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


class SlowConsumer(PinkRelayError, ConnectionError):
    """A subscriber stayed behind the live stream past the configured limit."""


class DeliveryFailed(PinkRelayError, ConnectionError):
    """A sink did not confirm a delivery; the outbox keeps it and retries.

    ``retry_after`` is the earliest retry the peer asked for (HTTP
    ``Retry-After``), in seconds, or None.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

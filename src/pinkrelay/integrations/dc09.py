"""The SIA DC-09 sink: alert steps to an alarm receiving centre over TCP, with supervision.

One connection, opened when needed and kept; one message in flight at a
time (the receiver answers in order). A delivery is confirmed by an ACK that
names its sequence number. A NAK (the receiver rejects the timestamp or could
not read the message) makes the sink send the message again at once with a
new timestamp (same sequence number), up to ``NAK_RETRANSMISSIONS`` times; no
answer within ``ack_timeout`` closes the connection and the dispatcher tries
again after its backoff. A DUH (understood, but not the content), garbage or
a CRC that does not match fail the delivery with a message naming what came.
While idle, a NULL message every ``supervision`` seconds keeps the link (and
the centre's line supervision) alive; a failed NULL is logged and counted.

The wire format is pinkrelay/integrations/dc09_codec.py (sans-IO).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import trio

from ..errors import DeliveryFailed
from .dc09_codec import Dc09Error, Link, ResponseReader, event_data, message, parse_response
from .outbox import Delivery
from .settings import Dc09Config

log = logging.getLogger("pinkrelay.integrations")

NAK_RETRANSMISSIONS = 2


class Dc09Sink:
    """Sends each delivery as one DC-09 event message and waits for its ACK."""

    def __init__(self, config: Dc09Config, *, registry: Callable[[], Any]) -> None:
        self.config = config
        self._registry = registry
        #: Longest one delivery can take: connecting, then each send and its wait for an answer.
        self.attempt_limit = config.timeout + (NAK_RETRANSMISSIONS + 1) * config.ack_timeout
        self._link = Link(receiver=config.receiver, line=config.line, key=config.key)
        self._stream: trio.SocketStream | None = None
        self._reader = ResponseReader()
        self._sequence = 0
        self._sequences: dict[int, int] = {}
        self._lock = trio.Lock()
        self._last_sent = 0.0
        #: NULL supervision messages that got no ACK (the web room and metrics show them).
        self.supervision_failures = 0
        #: Steps that this content format has no code for (confirmed without sending).
        self.not_sent = 0

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % 9999 + 1
        return self._sequence

    def _account_and_zone(self, button_id: str) -> tuple[str, int]:
        button = self._registry().get(button_id)
        account = (button.alarm_account if button is not None else "") or self.config.account
        zone = (button.alarm_zone if button is not None else 0) or 1
        return account, zone

    async def deliver(self, delivery: Delivery) -> None:
        account, zone = self._account_and_zone(delivery.button)
        data = event_data(self.config.format, account, delivery.alert_kind, delivery.step, delivery.state, zone)
        if data is None:
            self.not_sent += 1
            log.debug("sink %s: %s has no %s code for step %s/%s; not sent", self.config.name,
                      delivery.idempotency_key, self.config.format, delivery.step, delivery.state)
            return
        # Every transmission of one event keeps its sequence number, so the
        # receiver can tell a retransmission from a new event.
        sequence = self._sequences.setdefault(delivery.cursor, self._next_sequence())
        async with self._lock:
            await self._exchange(self.config.format, account, data, sequence)
        del self._sequences[delivery.cursor]

    async def _exchange(self, token: str, account: str, data: str, sequence: int) -> None:
        """Send one message until ACKed (NAK: again with a fresh timestamp); raise DeliveryFailed."""
        for attempt in range(NAK_RETRANSMISSIONS + 1):
            frame = message(self._link, token, sequence, account, data, datetime.now(timezone.utc))
            response = await self._send_and_read(frame)
            if response.kind in ("ACK", "RSP") and response.sequence == sequence:
                return
            if response.kind == "DUH":
                raise DeliveryFailed(
                    f"receiver {self._address} answered DUH to {token} message {sequence:04d}: it does "
                    f"not understand the content; check format ({self.config.format}) and account {account}")
            if response.kind == "NAK":
                log.warning("sink %s: receiver %s answered NAK to message %04d; sending it again with a new "
                            "timestamp (%d of %d)", self.config.name, self._address, sequence, attempt + 1,
                            NAK_RETRANSMISSIONS)
                continue
            await self._close()
            raise DeliveryFailed(f"receiver {self._address} answered {response.kind} for sequence "
                                 f"{response.sequence:04d} to message {sequence:04d}; connection reset")
        raise DeliveryFailed(f"receiver {self._address} answered NAK {NAK_RETRANSMISSIONS + 1} times; "
                             "check the relay's clock and the receiver's account and key settings")

    @property
    def _address(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    async def _send_and_read(self, frame: bytes) -> Any:
        try:
            if self._stream is None:
                with trio.move_on_after(self.config.timeout):
                    self._stream = await trio.open_tcp_stream(self.config.host, self.config.port)
                if self._stream is None:
                    raise DeliveryFailed(f"receiver {self._address}: no connection within "
                                         f"{self.config.timeout:g} s")
                self._reader = ResponseReader()
            await self._stream.send_all(frame)
            self._last_sent = trio.current_time()
            with trio.move_on_after(self.config.ack_timeout):
                while True:
                    data = await self._stream.receive_some(4096)
                    if not data:
                        raise DeliveryFailed(f"receiver {self._address} closed the connection before answering")
                    frames = self._reader.feed(data)
                    if frames:
                        return parse_response(frames[0])
        except OSError as error:
            await self._close()
            raise DeliveryFailed(f"receiver {self._address}: {error.strerror or error}") from None
        except trio.BrokenResourceError as error:
            await self._close()
            raise DeliveryFailed(f"receiver {self._address}: connection broken ({error})") from None
        except Dc09Error as error:
            await self._close()
            raise DeliveryFailed(f"receiver {self._address}: {error}; connection reset") from None
        except DeliveryFailed:
            await self._close()
            raise
        await self._close()
        raise DeliveryFailed(f"receiver {self._address} sent no answer within ack_timeout "
                             f"{self.config.ack_timeout:g} s; will send again")

    async def _close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def run(self) -> None:
        """NULL supervision messages while no event was sent for ``supervision`` seconds."""
        if not self.config.supervision:
            return
        self._last_sent = trio.current_time()
        while True:
            await trio.sleep_until(self._last_sent + self.config.supervision)
            if trio.current_time() < self._last_sent + self.config.supervision:
                continue
            async with self._lock:
                try:
                    await self._exchange("NULL", self.config.account, "", self._next_sequence())
                except DeliveryFailed as error:
                    self.supervision_failures += 1
                    self._last_sent = trio.current_time()
                    log.warning("sink %s: supervision (NULL) message failed: %s", self.config.name, error)

    async def aclose(self) -> None:
        await self._close()

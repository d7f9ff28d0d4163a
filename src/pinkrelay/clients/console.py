"""ConsoleClient: what a control-room application embeds.

It signs in as an operator, then yields everything the relay says, in
order: alerts, button state changes, lifecycle updates, subscription
confirmations, stream descriptions and media packets (``events()``). It
reconnects with backoff after a drop, re-subscribes to every button it
was watching and resumes the alert feed after the last cursor it saw, so a
brief network loss loses nothing (``Reconnected`` marks the gap).

Backpressure is real: when the application stops reading ``events()``, the
client stops reading the socket and the relay drops this console's video
back to the next keyframe, never its alerts, and never anyone else's video.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from ..config import Address
from ..errors import ConnectionRefused
from ..protocol import (
    Alert,
    AlertUpdate,
    ConsoleConnection,
    Heartbeat,
    KeyframeRequest,
    State,
    Subscribe,
    Unsubscribe,
)
from ..tls import ClientTls
from .link import Link, RelayRotation

log = logging.getLogger("pinkrelay.console")


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected:
    """The relay connection dropped; the client is reconnecting."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconnected:
    """The client is connected again (subscriptions restored)."""

    attempt: int


class ConsoleClient:
    """An operator's connection to the relay. Run ``run()`` in a nursery, read ``events()``."""

    def __init__(
        self,
        relay: Address | str | Sequence[Address | str],
        operator: str,
        token: bytes,
        *,
        reconnect: bool = True,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        connect_timeout: float = 5.0,
        tls: ClientTls | None = None,
        buffer: int = 256,
    ) -> None:
        #: The relays to connect to: one, or several of a cluster (tried in turn after a failed attempt).
        self.relays = RelayRotation(relay)
        self.operator = operator
        self._token = token
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        #: TLS to the relay (pinkrelay.tls.client_tls); None: plaintext.
        self.tls = tls
        self.link: Link | None = None
        self.connected = trio.Event()
        self.watching: set[str] = set()
        #: The last alert cursor seen; a reconnect resumes after it.
        self.cursor = 0
        self.reconnects = 0
        self._send, self._receive = trio.open_memory_channel[Any](buffer)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected until cancelled. A refusal raises ConnectionRefused."""
        delay = self.backoff_initial
        started = False
        attempt = 0
        while True:
            conn = ConsoleConnection(self.operator, self._token, protocol=2)
            conn.resume_cursor = self.cursor
            try:
                link = await Link.open(self.relays.current, conn, connect_timeout=self.connect_timeout, tls=self.tls)
            except ConnectionRefused:
                raise
            except OSError as error:
                self.relays.failed()
                if not self.reconnect and self.relays.each_tried:
                    raise
                if not self.reconnect:
                    continue  # without reconnecting, each relay is still tried once
                log.warning("console %s: %s; retrying in %.1f s", self.operator, error, delay)
                await trio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = self.backoff_initial
            self.relays.connected()
            self.link = link
            for button in sorted(self.watching):
                link.send(Subscribe(button=button))
            self.connected.set()
            if attempt:
                await self._send.send(Reconnected(attempt=attempt))
            if not started:
                task_status.started(self)
                started = True
            reason = await link.serve(self._deliver)
            self.connected = trio.Event()
            if not self.reconnect:
                await self._send.send(Disconnected(reason=reason))
                return
            attempt += 1
            self.reconnects += 1
            await self._send.send(Disconnected(reason=reason))
            await trio.sleep(self.backoff_initial * random.random())

    async def _deliver(self, event: Any) -> None:
        if isinstance(event, (Alert, AlertUpdate)) and event.cursor > self.cursor:
            self.cursor = event.cursor
        if not isinstance(event, Heartbeat):
            await self._send.send(event)

    async def events(self) -> AsyncIterator[Any]:
        """Every event from the relay, in order, across reconnects."""
        async for event in self._receive:
            yield event

    async def next_event(self) -> Any:
        return await self._receive.receive()

    def _link(self) -> Link | None:
        link = self.link
        if link is not None and link.conn.state is State.READY and not link.closed_reason:
            return link
        return None

    def subscribe(self, button: str) -> None:
        """Watch a button's live stream (kept across reconnects)."""
        self.watching.add(button)
        link = self._link()
        if link is not None:
            link.send(Subscribe(button=button))

    def unsubscribe(self, button: str) -> None:
        self.watching.discard(button)
        link = self._link()
        if link is not None:
            link.send(Unsubscribe(button=button))

    def request_keyframe(self, button: str) -> None:
        link = self._link()
        if link is not None:
            link.send(KeyframeRequest(button=button))

    def update_alert(self, alert_id: str, state: str, *, note: str = "", unit: str = "",
                     outcome: str = "", category: str = "") -> None:
        """Ask the relay to move an alert along its lifecycle (acknowledge, dispatch, resolve with an outcome...)."""
        link = self._link()
        if link is None:
            raise ConnectionError("not connected to the relay; the action was not sent")
        link.send(AlertUpdate(alert_id=alert_id, state=state, operator=self.operator, note=note, unit=unit,
                              outcome=outcome, category=category))

    def close(self, reason: str = "console closed") -> None:
        self.reconnect = False
        if self.link is not None:
            self.link.close(reason)

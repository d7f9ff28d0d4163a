"""Events for a service that embeds the relay, in streams that never hold up an alert.

``Relay.events()`` and ``open_event_stream()`` hand alerts, button states
and relay decisions to code in the same process (the web control room, an
integration). A reader that falls behind loses events, loudly, rather than
delay an alert to anyone else.

A part of ``Relay`` (server.py), which is composed of these desks; they
share its state, set up in ``Relay.__init__``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..logs import event as log_event
from ..protocol import (
    Alert,
)

log = logging.getLogger("pinkrelay.relay")

#: Events an embedding service may leave unread before the relay drops its events (publish_event).
EVENT_BUFFER = 1000


class EventStreams:
    """Events for a service that embeds the relay, in streams that never hold up an alert."""

    @asynccontextmanager
    async def open_event_stream(
        self, buffer: int = EVENT_BUFFER, *, name: str = ""
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        """A channel of alerts, button states and relay decisions, from now on.

        ``buffer`` events may wait unread; past that the relay drops this
        stream's events rather than wait for it (see ``publish_event``).
        ``name`` says who reads it in the relay's log when that happens.
        """
        send, receive = trio.open_memory_channel[Any](buffer)
        self._event_streams_opened += 1
        stream = _EventStream(name or f"event stream {self._event_streams_opened}", send, buffer)
        self._event_streams.append(stream)
        try:
            async with receive:
                yield receive
        finally:
            if stream in self._event_streams:
                self._event_streams.remove(stream)

    async def events(self, *, name: str = "") -> AsyncIterator[Any]:
        """Iterate relay events (see ``open_event_stream`` for a bounded, closable form)."""
        async with self.open_event_stream(name=name) as channel:
            async for item in channel:
                yield item

    def publish_event(self, item: Any) -> None:
        """Hand ``item`` to every event stream, never waiting for one.

        It is called on the alert path: an alert is published before it is
        committed and acknowledged to its button. Waiting here for a slow
        embedding service would delay every alert to every console and every
        acknowledgement, so a stream whose buffer is full loses the event
        instead, and never silently: the first drop logs a warning naming the
        stream, every dropped alert is logged as an error with its id and
        button, the count is kept in ``event_drops[name]`` (and
        ``counters["dropped_events"]``), and when the stream takes events again
        a warning says how many it missed. Every alert is in the journal
        (``pinkrelay alerts``), so a service that missed some can read them there.
        """
        for stream in list(self._event_streams):
            try:
                stream.channel.send_nowait(item)
            except trio.WouldBlock:
                self._event_dropped(stream, item)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Its reader closed the channel before leaving open_event_stream.
                self._event_streams.remove(stream)
            else:
                if stream.missed:
                    self._event_stream_resumed(stream)

    def _event_dropped(self, stream: _EventStream, item: Any) -> None:
        stream.missed += 1
        self.event_drops[stream.name] = self.event_drops.get(stream.name, 0) + 1
        self.counters["dropped_events"] += 1
        if stream.missed == 1:
            log_event(log, logging.WARNING, f"{stream.name} has {stream.buffer} unread events: dropping "
                      "its events until it reads again (every alert stays in the journal)",
                      decision="drop", consumer=stream.name, buffer=stream.buffer)
        if isinstance(item, Alert):
            stream.missed_alerts += 1
            log_event(log, logging.ERROR, f"{stream.name} missed alert {item.alert_id} from button "
                      f"{item.button}: it has {stream.buffer} unread events ({stream.missed} dropped since "
                      "it fell behind)", decision="drop", consumer=stream.name, alert_id=item.alert_id,
                      button=item.button, dropped=stream.missed)

    def _event_stream_resumed(self, stream: _EventStream) -> None:
        log_event(log, logging.WARNING, f"{stream.name} reads events again; it missed {stream.missed} "
                  f"events, {stream.missed_alerts} of them alerts ({self.event_drops[stream.name]} in all)",
                  decision="drop", consumer=stream.name, dropped=stream.missed,
                  dropped_alerts=stream.missed_alerts, dropped_total=self.event_drops[stream.name])
        stream.missed = stream.missed_alerts = 0


class _EventStream:
    """One reader of ``Relay.events()``: its channel and what it missed while behind."""

    __slots__ = ("name", "channel", "buffer", "missed", "missed_alerts")

    def __init__(self, name: str, channel: trio.MemorySendChannel[Any], buffer: int) -> None:
        self.name = name
        self.channel = channel
        self.buffer = buffer
        #: Events dropped since it last took one, and how many of them were alerts.
        self.missed = 0
        self.missed_alerts = 0

"""Media: track ids, streams and watchers, bitrate limits, subscriptions, keyframe requests.

The hub (hub.py) moves the messages; this desk decides which track ids a
button uses, which console watches which button, what a late joiner gets
first, and reports what slow consoles lost.

A part of ``Relay`` (server.py), which is composed of these desks; they
share its state, set up in ``Relay.__init__``.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ..errors import ProtocolError
from ..logs import event as log_event
from ..outbox import Outbox
from ..protocol import (
    Error,
    KeyframeRequest,
    StreamDescription,
    Subscribed,
)
from ..protocol.media_rules import checking
from .data_plane import describe_tracks
from .limits import MediaRate, Verdict
from .sessions import ButtonSession, ConsoleSession, Session
from .._core.wire import MAX_TRACK_ID
from .tracks import TrackSpaceFull

log = logging.getLogger("pinkrelay.relay")

KEYFRAME_REQUEST_INTERVAL = 0.5

DROP_REPORT_INTERVAL = 5.0

#: What ``Relay.traffic()`` counts.
TRAFFIC_KEYS = ("media_messages_in", "media_bytes_in", "bytes_out", "dropped_video", "dropped_audio")


class MediaDesk:
    """Media: track ids, streams and watchers, bitrate limits, subscriptions, keyframe requests."""

    def _track_block(self, button_id: str, *, wide: bool = False) -> tuple[int, ...]:
        """Relay-wide track ids for a button while it is connected or watched (relay/tracks.py).

        ``wide``: the button speaks protocol v2 and may be given ids above 65535.
        """
        try:
            return self.tracks.acquire(button_id, wide=wide)
        except TrackSpaceFull as full:
            raise ProtocolError(f"the relay has no track ids left for button {button_id}: {full}",
                                code="capacity") from None

    def _media_sink(self, session: ButtonSession, stream: Any) -> Any:
        """Where a button's media messages go: the hub, through its bitrate limit when one is set."""
        publish = self.hub.publish
        if stream.publisher is not None:
            inject = stream.publisher.inject

            def publish(stream: Any, message: Any) -> None:
                inject(b"".join(bytes(chunk) for chunk in message.chunks), message.lane, message.track,
                       message.keyframe)

        if not self.config.max_button_bitrate:
            return lambda message: publish(stream, message)
        rate = MediaRate(self.config.max_button_bitrate, close_after=self.config.media_overrun_close,
                         now=trio.current_time())
        limit = f"max_button_bitrate {self.config.max_button_bitrate} bit/s"

        def sink(message: Any) -> None:
            now = trio.current_time()
            verdict = rate.offer(message.wire_size, now)
            if verdict is Verdict.PASS:
                publish(stream, message)
                return
            self.counters["media_over_bitrate"] += 1
            if verdict is Verdict.CLOSE:
                self.counters["closed_over_bitrate"] += 1
                error = ProtocolError(f"media above {limit} for {self.config.media_overrun_close:g} s "
                                      f"(button {session.identity}); connection closed", code="limit")
                log_event(log, logging.WARNING, f"closing button {session.identity} ({session.peer}): {error}",
                          decision="disconnect", button=session.identity, reason="bitrate")
                session.refuse(error)
                return
            held = self.admission.logs.due((session.identity, "bitrate"), now)
            if held is not None:
                log_event(log, logging.WARNING, f"button {session.identity} sends media above {limit}: "
                          f"dropping what is over ({rate.dropped} messages so far); it is disconnected after "
                          f"{self.config.media_overrun_close:g} s over the limit",
                          decision="drop", button=session.identity, reason="bitrate", dropped=rate.dropped)

        return sink

    def stream_described(self, session: ButtonSession, description: StreamDescription) -> None:
        if session.stream_state is None:
            return
        stream = session.stream_state
        if session.conn.media_sink is None:
            session.conn.media_sink = checking(self._media_sink(session, stream))
        if stream.publisher is not None:
            describe_tracks(stream.publisher, stream.track_ids, description.tracks)
        self.hub.describe(stream, description.tracks)
        self._notify_watchers(session.identity, StreamDescription(button=session.identity, tracks=description.tracks))
        log_event(log, logging.INFO, f"button {session.identity} described {len(description.tracks)} track(s): "
                  + ", ".join(f"{t.track_id}={t.kind}/{t.codec}" for t in description.tracks),
                  button=session.identity)

    def _notify_watchers(self, button_id: str, description: StreamDescription) -> None:
        for console in self.consoles:
            if console.outbox in self.hub.watchers.get(button_id, ()):
                console.send(description)
                _start_at_keyframe(console.outbox, description.tracks)

    def subscribe(self, session: ConsoleSession, button_id: str, now: float) -> None:
        if button_id not in self.registry:
            session.send(Error(code="unknown-button", message=f"no button {button_id!r} in the registry", fatal=False))
            return
        block = self.tracks.block_of(button_id)
        if block is not None and block[-1] > MAX_TRACK_ID and session.conn.hello.protocol < 2:
            self.counters["subscriptions_refused"] += 1
            session.send(Error(code="unsupported", fatal=False, message=(
                f"button {button_id} streams on track ids above 65535 (protocol v2), and console "
                f"{session.identity} said protocol {session.conn.hello.protocol} in its hello; a console "
                "that reads protocol v2 headers (docs/protocol.md §2.5) can watch it")))
            return
        limit = self.config.max_subscriptions_per_console
        if session.outbox not in self.hub.watchers.get(button_id, ()) and self.hub.watching(session.outbox) >= limit:
            self.counters["subscriptions_refused"] += 1
            session.send(Error(code="subscription-limit", fatal=False, message=(
                f"console {session.identity} already watches {limit} buttons (max_subscriptions_per_console); "
                f"unsubscribe from one before watching {button_id}")))
            return
        stream = self.hub.subscribe(button_id, session.outbox)
        if stream is None and self.cluster is not None:
            self.cluster.media.watch(button_id)  # held by another relay: pull it from there
        if self.data_plane is not None:
            self._subscribe_in_data_plane(session, button_id, stream, now)
            return
        catchup = self.hub.catchup(stream)
        if stream is not None and stream.gop_bytes > session.outbox.max_video_bytes:
            catchup = []  # it would be dropped on arrival; start at the next keyframe instead
        if not catchup and stream is not None:
            _start_at_keyframe(session.outbox, stream.tracks.values())
        tracks = tuple(stream.tracks.values()) if stream is not None else ()
        session.send(Subscribed(button=button_id, tracks=tracks, catchup_frames=len(catchup)))
        self.hub.push_gop(session.outbox, catchup, now)
        if stream is not None and (not catchup or now - stream.gop_started_at > self.config.join_keyframe_age):
            self.request_keyframe(button_id, now, requested_by=session.identity)
        log_event(log, logging.INFO, f"console {session.identity} watching button {button_id} "
                  f"({len(catchup)} cached frames)", operator=session.identity, button=button_id,
                  action="subscribe")

    def _subscribe_in_data_plane(self, session: ConsoleSession, button_id: str, stream: Any, now: float) -> None:
        """The data plane queues the GOP cache and holds the console's media until ``subscribed`` is queued."""
        outbox = session.outbox
        publisher = stream.publisher if stream is not None else None
        cached = publisher.subscribe(outbox.handle, outbox.max_video_bytes) if publisher is not None else 0
        tracks = tuple(stream.tracks.values()) if stream is not None else ()
        session.send(Subscribed(button=button_id, tracks=tracks, catchup_frames=cached))
        outbox.handle.release()
        if stream is not None:
            self.request_keyframe(button_id, now, requested_by=session.identity)
        log_event(log, logging.INFO, f"console {session.identity} watching button {button_id} "
                  f"({cached} cached frames)", operator=session.identity, button=button_id,
                  action="subscribe")

    def request_keyframe(self, button_id: str, now: float, *, requested_by: str = "") -> None:
        session = self.sessions_by_button.get(button_id)
        if session is None and self.cluster is not None:
            self.cluster.media.request_keyframe(button_id)
        if session is None or not session.ready:
            return
        if now - self._keyframe_requested.get(button_id, float("-inf")) < KEYFRAME_REQUEST_INTERVAL:
            return
        self._keyframe_requested[button_id] = now
        session.send(KeyframeRequest(button=button_id))

    async def _report_drops(self) -> None:
        """One log line per slow console and interval: media dropped to keep it live."""
        reported: dict[Session, tuple[int, int]] = {}
        while True:
            await trio.sleep(DROP_REPORT_INTERVAL)
            for session in list(self.consoles):
                outbox = session.outbox
                before = reported.get(session, (0, 0))
                now = (outbox.dropped_video, outbox.dropped_audio)
                if now != before:
                    log_event(log, logging.WARNING,
                              f"console {session.identity} ({session.peer}) is behind: dropped "
                              f"{now[0] - before[0]} video and {now[1] - before[1]} audio messages in the "
                              f"last {DROP_REPORT_INTERVAL:g} s (video restarts at the next keyframe)",
                              decision="drop", operator=session.identity, peer=session.peer,
                              dropped_video=now[0] - before[0], dropped_audio=now[1] - before[1])
                    reported[session] = now
            for session in [s for s in reported if s not in self.consoles]:
                del reported[session]

    def traffic(self) -> dict[str, int]:
        """Media in, bytes out and media dropped for slow consoles, since the relay started.

        Read at a metrics scrape, never on the per-frame path: it walks the sessions.
        """
        totals = dict(self._ended_traffic)
        for session in self.sessions:
            for key, value in _session_traffic(session).items():
                totals[key] += value
        return totals


def _session_traffic(session: Session) -> dict[str, int]:
    outbox = session.outbox
    stream = getattr(session, "stream_state", None)
    messages = stream.messages_in if stream is not None else 0
    nbytes = stream.bytes_in if stream is not None else 0
    if stream is not None and stream.publisher is not None:
        counted = stream.publisher.stats()
        messages += counted["messages_in"]
        nbytes += counted["bytes_in"]
    return {
        "media_messages_in": messages,
        "media_bytes_in": nbytes,
        "bytes_out": outbox.bytes_sent,
        "dropped_video": outbox.dropped_video,
        "dropped_audio": outbox.dropped_audio,
    }


def _start_at_keyframe(outbox: Outbox, tracks: Any) -> None:
    """A subscriber gets a stream's video from a keyframe on, never a frame it cannot decode."""
    for track in tracks:
        if track.kind == "video":
            outbox.wait_for_keyframe(track.track_id)

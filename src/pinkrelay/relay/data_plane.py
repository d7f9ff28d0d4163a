"""The relay's side of the compiled data plane (``_core/dataplane.h``): handing sockets over, and events back.

With ``data_threads`` > 0 a button's socket is read by a data thread once
its session is READY, and every console's writes go through the data
plane's send queue from the start, so that media never passes through
Python per message. The handshake, authentication and every control message
stay in the sans-IO connection and trio: a control frame read by a data
thread comes back here (``ControlFrames``), in arrival order, and the button
is not read further until its session has acted on it. That keeps the
alert path's guarantees (an alert is handled before any more media from its
button; an alert to a console goes ahead of every queued media byte,
because the alert lane is in the same queue).

``PlaneOutbox`` is what a console session uses in place of ``Outbox``:
the same methods the relay calls, backed by the data plane's queue.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import trio

from .._core import HEADER_SIZE, FrameDecoder, Message
from ..config import RelayConfig
from ..errors import ProtocolError

log = logging.getLogger("pinkrelay.relay")

try:
    from .._core import _dataplane
except ImportError:  # the pure-Python core: no data plane
    _dataplane = None  # type: ignore[assignment]


def available() -> bool:
    from .._core import COMPILED

    return bool(COMPILED) and _dataplane is not None


class DataPlaneLink:
    """The data threads, and the task that passes their events to sessions."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.plane = _dataplane.DataPlane(config.data_threads, config.gop_cache_bytes, config.audio_hold)
        # Evidence pre-roll lives in the data plane's own structures: the wire bytes it already holds.
        self.plane.set_preroll(config.pre_roll, config.preroll_budget_bytes)
        #: Sessions by the id of their publisher or subscriber handle.
        self.sessions: dict[int, Any] = {}
        #: What feeds each publisher without a socket (``relayed_publisher``), by handle id.
        self.relayed: dict[int, Any] = {}

    def publisher(self, session: Any) -> Any:
        config = self.config
        rate = config.max_button_bitrate
        handle = self.plane.publisher(
            session.stream.socket.fileno(),
            max_frame_bytes=config.max_frame_bytes,
            max_message_bytes=config.max_message_bytes,
            max_chunks_per_message=session.conn.limits.max_chunks_per_message,
            bits_per_second=float(rate),
            close_after=config.media_overrun_close,
        )
        self.sessions[handle.id] = session
        return handle

    def relayed_publisher(self, owner: Any) -> Any:
        """A publisher with no socket, for media another relay sends (cluster/media.py): it is injected.

        ``owner.stream_state`` is the hub's stream, for the recording taps; the
        data threads never read anything for it, so it gets no other event.
        """
        config = self.config
        handle = self.plane.publisher(-1, max_frame_bytes=config.max_frame_bytes,
                                      max_message_bytes=config.max_message_bytes, max_chunks_per_message=1 << 16)
        self.relayed[handle.id] = owner
        return handle

    def subscriber(self, session: Any) -> Any:
        config = self.config
        handle = self.plane.subscriber(
            session.stream.socket.fileno(),
            max_video_bytes=config.max_video_queue_bytes,
            max_audio_bytes=config.max_audio_queue_bytes,
            max_control_bytes=config.max_control_queue_bytes,
            stall_timeout=config.stall_timeout,
        )
        self.sessions[handle.id] = session
        return handle

    def forget(self, handle: Any) -> None:
        """The session is over: no thread touches its socket after this (it may be closed)."""
        handle.remove()
        self.sessions.pop(handle.id, None)
        self.relayed.pop(handle.id, None)

    async def run(self) -> None:
        plane = self.plane
        try:
            while True:
                await trio.lowlevel.wait_readable(plane.fileno())
                for kind, conn_id, data in plane.events():
                    session = self.sessions.get(conn_id)
                    if session is None:
                        if kind == MEDIA and conn_id in self.relayed:
                            self._tapped(self.relayed[conn_id], data)
                        continue
                    if kind == MEDIA:
                        self._tapped(session, data)
                    else:
                        session.data_plane_event(kind, data)
        finally:
            plane.stop()

    def _tapped(self, source: Any, data: bytes) -> None:
        """A message of a button that is being recorded: to the stream's taps (the evidence writer)."""
        stream = source.stream_state
        if stream is None or not stream.taps:
            return
        message = as_message(data[0], int.from_bytes(data[2:6], "big"), bool(data[1]), data[6:])
        now = trio.current_time()
        for tap in stream.taps:
            tap.offer(message, now)

    def stats(self) -> dict[str, int]:
        return {f"data_plane_{key}": value for key, value in self.plane.stats().items()}


def as_message(lane: int, track: int, keyframe: bool, wire: bytes) -> Any:
    """A ``Message`` around a message's wire bytes (its frames), as the trio path hands to taps."""
    frames = FrameDecoder(max_frame_bytes=len(wire)).decode(wire)
    first = frames[0]
    return Message(track, lane, first.seq, first.timestamp, keyframe, tuple(f.wire for f in frames),
                   len(wire) - HEADER_SIZE * len(frames))


#: Event kinds (see dataplane.h).
CONTROL = getattr(_dataplane, "CONTROL", 1)
HANDBACK = getattr(_dataplane, "HANDBACK", 2)
CLOSED = getattr(_dataplane, "CLOSED", 3)
OVERRATE = getattr(_dataplane, "OVERRATE", 4)
FAILED = getattr(_dataplane, "FAILED", 5)
MEDIA = getattr(_dataplane, "MEDIA", 6)


def overrate_error(config: RelayConfig, button: str) -> ProtocolError:
    return ProtocolError(f"media above max_button_bitrate {config.max_button_bitrate} bit/s for "
                         f"{config.media_overrun_close:g} s (button {button}); connection closed", code="limit")


class PlaneOutbox:
    """A console's send queue in the data plane, with the methods the relay uses on an ``Outbox``."""

    def __init__(self, link: DataPlaneLink, session: Any, config: RelayConfig) -> None:
        self.link = link
        self.handle = link.subscriber(session)
        self.max_video_bytes = config.max_video_queue_bytes
        self.max_control_bytes = config.max_control_queue_bytes
        self.stall_timeout = config.stall_timeout
        self._failure: str | None = None
        self._on_fail = session._outbox_failed
        self._done = trio.Event()

    @property
    def failure(self) -> str | None:
        return self._failure

    def send(self, lane: int, chunks: Sequence[Any], now: float) -> None:
        if self._failure is not None:
            return
        if not self.handle.send(lane, b"".join(bytes(c) for c in chunks) if len(chunks) != 1 else bytes(chunks[0])):
            self.fail(f"control queue above {self.max_control_bytes} bytes: the peer reads too slowly "
                      "to be sent alerts; disconnecting it so it can reconnect and resume")

    def fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
            self._done.set()
            self._on_fail(reason)

    def wait_for_keyframe(self, track: int) -> None:
        self.handle.wait_for_keyframe(track)

    def attention(self) -> None:
        """Nothing to do: the data plane writes and reports failures itself."""

    def flush(self) -> None:
        """Nothing to do: the data plane writes as soon as a frame is queued."""

    def detach(self) -> None:
        self.link.forget(self.handle)
        if self._failure is None:
            self._failure = "closed"
        self._done.set()

    async def run(self) -> None:
        await self._done.wait()

    def _stat(self, key: str) -> int:
        return int(self.handle.stats()[key])

    def lane_bytes(self, lane: int) -> int:
        return int(self.handle.stats()["lane_bytes"][lane])

    @property
    def empty(self) -> bool:
        return self._stat("queued_bytes") == 0

    @property
    def pending_bytes(self) -> int:
        return self._stat("queued_bytes")

    @property
    def blocked(self) -> bool:
        return False

    @property
    def bytes_sent(self) -> int:
        return self._stat("bytes_sent")

    @property
    def dropped_video(self) -> int:
        return self._stat("dropped_video")

    @property
    def dropped_audio(self) -> int:
        return self._stat("dropped_audio")


def describe_tracks(publisher: Any, track_ids: Sequence[int], tracks: Sequence[Any]) -> None:
    """Tell the publisher which of its ids carry media now and on which lane; the others are forgotten."""
    described = {track.track_id for track in tracks}
    for track_id in track_ids:
        if track_id not in described:
            publisher.describe(track_id, 0)
    for track in tracks:
        publisher.describe(track.track_id, track.lane)


def join_watchers(publisher: Any, watchers: Sequence[Any]) -> None:
    """Consoles that watched the button before its stream opened get its media from now on."""
    for outbox in watchers:
        publisher.subscribe(outbox.handle, 0)
        outbox.handle.release()

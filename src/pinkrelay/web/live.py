"""Live video and audio for browsers: one internal console subscription per watched button.

The web control room signs in to its own relay as a console, with the
in-memory service credential (``relay.service_operator``), over loopback
TCP: the same door, queues and fast-join logic as any console, no private
shortcut into the hub. One connection serves every browser. A button is
subscribed while at least one browser watches it.

Each media packet goes to each watching browser's WebSocket as one binary
message: a 12-byte header and the encoded payload exactly as the button sent
it (H.264 Annex B access unit, Opus or AAC frame)::

    offset  size  field
    0       1     version (1)
    1       1     flags: 1 keyframe, 2 audio (else video), 4 catch-up
    2       2     track id (big-endian; ``stream`` messages map it to a button)
    4       8     capture time, µs since the UNIX epoch (button's clock)
    12      ...   payload

The page decodes with WebCodecs (``VideoDecoder``/``AudioDecoder``), not Media
Source Extensions: MSE needs fragmented MP4 (a muxer here, per-fragment
boxing delay) and buffers a few hundred milliseconds before it plays, while
WebCodecs hands each access unit to the decoder as it arrives and gives the
frame back to draw at once; and the capture time travels with every frame,
so the page shows the true end-to-end latency under the picture.

Fast join: ``Subscribed.catchup_frames`` cached frames follow a subscription;
they are flagged catch-up (decode, don't draw). A browser that joins a
button already watched by another gets this bridge's own copy of the
current GOP, flagged the same way, so it starts on a keyframe at once.

A slow browser never slows the relay or the others: each WebSocket has a
bounded media queue; past it, that browser's video is dropped back to the
next keyframe and its audio dropped, never its alerts.
"""

from __future__ import annotations

import base64
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from ..clients.console import ConsoleClient, Disconnected, Reconnected
from ..config import Address
from ..errors import ConnectionRefused
from ..protocol import Media, StreamDescription, Subscribed, TrackDescription

log = logging.getLogger("pinkrelay.web")

#: version, flags, track id (32 bits: protocol v2 track ids exceed 16), capture time in µs.
HEADER = struct.Struct(">BBIQ")
VERSION = 2
FLAG_KEYFRAME = 1
FLAG_AUDIO = 2
FLAG_CATCHUP = 4
#: Bytes of video kept per watched button since its last keyframe, for late joiners.
GOP_CACHE_BYTES = 8 * 1024 * 1024


def pack(flags: int, track_id: int, timestamp_us: int, payload: bytes) -> bytes:
    return HEADER.pack(VERSION, flags, track_id, timestamp_us) + payload


def as_catchup(packet: bytes) -> bytes:
    return packet[:1] + bytes([packet[1] | FLAG_CATCHUP]) + packet[2:]


def track_json(track: TrackDescription) -> dict[str, Any]:
    return {
        "track_id": track.track_id,
        "kind": track.kind,
        "codec": track.codec,
        "width": track.width,
        "height": track.height,
        "fps": track.fps,
        "sample_rate": track.sample_rate,
        "channels": track.channels,
        "extradata": base64.b64encode(track.extradata).decode("ascii"),
    }


class Viewer:
    """One browser's WebSocket as the bridge sees it: control messages first, media bounded.

    Media waits in a queue bounded in bytes and in age: a packet that waited
    longer than ``max_media_age`` (the browser or its network is slower than
    the stream) is dropped rather than shown late, and that button's video
    then skips to its next keyframe, so what the operator sees stays live.
    """

    def __init__(
        self,
        *,
        max_media_bytes: int = 2 * 1024 * 1024,
        max_media_age: float = 1.0,
        max_control: int = 10_000,
    ) -> None:
        self.control: deque[str] = deque()
        self.media: deque[tuple[float, bytes]] = deque()
        self.media_bytes = 0
        self.max_media_bytes = max_media_bytes
        self.max_media_age = max_media_age
        self.max_control = max_control
        #: Video tracks this viewer dropped frames of; skipped until their next keyframe.
        self.needs_keyframe: set[int] = set()
        self.dropped = 0
        self.closing: tuple[int, str] | None = None
        self._wakeup = trio.Event()

    def close(self, code: int, reason: str) -> None:
        """Close the socket after what is being written now (nothing else queued is sent)."""
        if self.closing is None:
            self.closing = (code, reason)
        self._wakeup.set()

    def send_json_text(self, text: str) -> None:
        if len(self.control) >= self.max_control:
            self.close(4408, "browser too slow to read the board's events")
            return
        self.control.append(text)
        self._wakeup.set()

    def send_media(self, packet: bytes) -> None:
        if self.media_bytes + len(packet) > self.max_media_bytes:
            self._drop(packet)
            return
        self.media.append((trio.current_time(), packet))
        self.media_bytes += len(packet)
        self._wakeup.set()

    def _drop(self, packet: bytes) -> None:
        self.dropped += 1
        if not packet[1] & FLAG_AUDIO:
            self.needs_keyframe.add(int.from_bytes(packet[2:6], "big"))

    def _keep(self, packet: bytes, queued_at: float) -> bool:
        flags = packet[1]
        if trio.current_time() - queued_at > self.max_media_age:
            self._drop(packet)
            return False
        if not flags & FLAG_AUDIO:
            track_id = int.from_bytes(packet[2:6], "big")
            if track_id in self.needs_keyframe:
                if not flags & FLAG_KEYFRAME:
                    self.dropped += 1
                    return False
                self.needs_keyframe.discard(track_id)
        return True

    async def next_message(self) -> str | bytes | tuple[int, str]:
        """The next message to write: a close first, then control before media."""
        while True:
            if self.closing is not None:
                return self.closing
            if self.control:
                return self.control.popleft()
            while self.media:
                queued_at, packet = self.media.popleft()
                self.media_bytes -= len(packet)
                if self._keep(packet, queued_at):
                    return packet
            await self._wakeup.wait()
            self._wakeup = trio.Event()


@dataclass(eq=False)
class WatchedStream:
    button: str
    viewers: set[Viewer] = field(default_factory=set)
    tracks: dict[int, TrackDescription] = field(default_factory=dict)
    subscribed: bool = False
    pending_catchup: int = 0
    gop: list[bytes] = field(default_factory=list)
    gop_bytes: int = 0
    gop_valid: bool = False
    packets: int = 0

    def remember(self, packet: bytes, keyframe: bool) -> None:
        if keyframe:
            self.gop, self.gop_bytes, self.gop_valid = [packet], len(packet), True
        elif self.gop_valid:
            if self.gop_bytes + len(packet) > GOP_CACHE_BYTES:
                self.gop, self.gop_bytes, self.gop_valid = [], 0, False
            else:
                self.gop.append(packet)
                self.gop_bytes += len(packet)

    def forget_gop(self) -> None:
        self.gop, self.gop_bytes, self.gop_valid = [], 0, False


def loopback(address: Address) -> Address:
    """Where a service in this process reaches a listener bound to ``address``."""
    if address.host in ("0.0.0.0", ""):
        return Address("127.0.0.1", address.port)
    if address.host == "::":
        return Address("::1", address.port)
    return address


class LiveBridge:
    """Subscribes to buttons for browsers and fans media out to their WebSockets."""

    def __init__(self, relay: Any, encode: Any) -> None:
        self.relay = relay
        self._encode = encode
        self.streams: dict[str, WatchedStream] = {}
        self.client: ConsoleClient | None = None
        self.connected = False

    # -- browsers ----------------------------------------------------------------------

    def watch(self, button: str, viewer: Viewer) -> None:
        stream = self.streams.get(button)
        if stream is None:
            stream = self.streams[button] = WatchedStream(button)
        if viewer in stream.viewers:
            return
        stream.viewers.add(viewer)
        if stream.subscribed:
            catchup = [as_catchup(packet) for packet in stream.gop] if stream.gop_valid else []
            viewer.send_json_text(self._stream_message(stream, len(catchup)))
            for packet in catchup:
                viewer.send_media(packet)
            if not catchup and self.client is not None:
                self.client.request_keyframe(button)
        elif len(stream.viewers) == 1 and self.client is not None:
            self.client.subscribe(button)

    def unwatch(self, button: str, viewer: Viewer) -> None:
        stream = self.streams.get(button)
        if stream is None:
            return
        stream.viewers.discard(viewer)
        if not stream.viewers:
            del self.streams[button]
            if self.client is not None:
                self.client.unsubscribe(button)

    def drop(self, viewer: Viewer) -> None:
        for button in [b for b, s in self.streams.items() if viewer in s.viewers]:
            self.unwatch(button, viewer)

    def request_keyframe(self, button: str) -> None:
        if self.client is not None and button in self.streams:
            self.client.request_keyframe(button)

    def _stream_message(self, stream: WatchedStream, catchup: int) -> str:
        return self._encode(
            {
                "type": "stream",
                "button": stream.button,
                "tracks": [track_json(t) for t in stream.tracks.values()],
                "catchup_frames": catchup,
            }
        )

    def _tell(self, stream: WatchedStream, message: str) -> None:
        for viewer in stream.viewers:
            viewer.send_json_text(message)

    # -- the relay side ----------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the service console connected; a refusal is logged and retried."""
        started = False
        while True:
            address = loopback(self.relay.consoles_address)
            client = ConsoleClient(
                address,
                self.relay.service_operator,
                self.relay.console_tokens[self.relay.service_operator],
                buffer=1024,
            )
            client.watching.update(self.streams)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(client.run)
                    self.client = client
                    self.connected = True
                    for stream in self.streams.values():
                        stream.subscribed = False
                    if not started:
                        task_status.started()
                        started = True
                    async for event in client.events():
                        self._on_event(event)
            except (ConnectionRefused, OSError) as error:
                log.error("web control room: live video connection to the relay failed: %s", error)
            finally:
                self.client = None
                self.connected = False
            if not started:
                task_status.started()
                started = True
            await trio.sleep(1.0)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Media):
            self._on_media(event)
        elif isinstance(event, Subscribed):
            stream = self.streams.get(event.button)
            if stream is None:
                return
            stream.subscribed = True
            stream.tracks = {t.track_id: t for t in event.tracks}
            stream.pending_catchup = event.catchup_frames
            stream.forget_gop()
            self._tell(stream, self._stream_message(stream, event.catchup_frames))
        elif isinstance(event, StreamDescription):
            stream = self.streams.get(event.button)
            if stream is None:
                return
            stream.tracks = {t.track_id: t for t in event.tracks}
            stream.pending_catchup = 0
            stream.forget_gop()
            self._tell(stream, self._stream_message(stream, 0))
        elif isinstance(event, Disconnected):
            for stream in self.streams.values():
                stream.subscribed = False
                stream.forget_gop()
                self._tell(stream, self._encode({"type": "stream-interrupted", "button": stream.button,
                                                 "reason": event.reason}))
        elif isinstance(event, Reconnected):
            log.info("web control room: live video connection to the relay restored")

    def _on_media(self, media: Media) -> None:
        stream = self.streams.get(media.button)
        if stream is None:
            return
        track = stream.tracks.get(media.track_id)
        if track is None:
            return
        audio = track.kind == "audio"
        flags = (FLAG_KEYFRAME if media.keyframe else 0) | (FLAG_AUDIO if audio else 0)
        packet = pack(flags, media.track_id, media.timestamp, media.data)
        stream.packets += 1
        if not audio:
            stream.remember(packet, media.keyframe)
            if stream.pending_catchup > 0:
                stream.pending_catchup -= 1
                packet = as_catchup(packet)
        for viewer in stream.viewers:
            viewer.send_media(packet)

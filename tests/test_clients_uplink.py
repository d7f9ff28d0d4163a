"""What ButtonClient sends when its connection is cut: a lost acknowledgement, a relay restart.

A small TCP proxy sits between the button and the real relay and reads the
button's frames as they pass (with the core's own FrameDecoder). It can end
a connection right after forwarding an alert, before the relay's AlertAck
gets back, which is what a radio link that drops at the wrong moment does.
The console and the journal then show whether the retried press was kept
once, and the frames on each connection show whether video restarted on a
keyframe.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay._core import FrameDecoder, FrameType, Lane
from pinkrelay.media import Decoder, TrackInfo, encode_clip
from pinkrelay.protocol import Alert, Media, StreamDescription, Subscribed

from relay_helpers import (
    button_ids,
    console_client,
    make_registry,
    relay_config,
    running_relay,
    secret_for,
    stream_honouring_keyframes,
    wait_until,
    wall_us,
)


@dataclass(eq=False)
class Passage:
    """One button connection through the proxy: the frames the button sent, in order."""

    frames: list[tuple[int, int, bool, bool]] = field(default_factory=list)  # type, lane, keyframe, end
    cut: bool = False

    @property
    def video(self) -> list[bool]:
        """Keyframe flag of each video message (its last chunk, the one flagged END)."""
        return [
            key for kind, lane, key, end in self.frames if kind == FrameType.MEDIA and lane == Lane.VIDEO and end
        ]

    @property
    def alerts(self) -> int:
        return sum(kind == FrameType.ALERT for kind, _, _, _ in self.frames)


class UplinkTap:
    """A loopback TCP proxy to the relay's button port that records what buttons send.

    ``cut_next_alert()`` arms it: the next connection carrying an alert frame
    forwards that frame to the relay, then the button's side is closed at
    once and nothing the relay answers (its AlertAck) is passed back.
    """

    def __init__(self, upstream: pinkrelay.Address) -> None:
        self.upstream = upstream
        self.address: pinkrelay.Address | None = None
        self.passages: list[Passage] = []
        self._cut_armed = False

    def cut_next_alert(self) -> None:
        self._cut_armed = True

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.address = pinkrelay.Address("127.0.0.1", port)
        task_status.started(self.address)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, downstream: trio.SocketStream) -> None:
        passage = Passage()
        self.passages.append(passage)
        try:
            upstream = await trio.open_tcp_stream(self.upstream.host, self.upstream.port)
        except OSError:
            await downstream.aclose()  # relay down: the button sees the connection end at once
            return
        async with downstream, upstream:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._uplink, passage, downstream, upstream)
                nursery.start_soon(self._downlink, passage, upstream, downstream, nursery.cancel_scope)

    async def _uplink(self, passage: Passage, downstream: trio.SocketStream, upstream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        while True:
            try:
                data = await downstream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                break
            frames = decoder.decode(data)
            passage.frames.extend((frame.type, frame.lane, frame.keyframe, frame.end) for frame in frames)
            if self._cut_armed and any(frame.type == FrameType.ALERT for frame in frames):
                # Set before the first await, so the downlink forwards nothing from now on.
                self._cut_armed = False
                passage.cut = True
                await upstream.send_all(data)
                await downstream.aclose()
                break
            try:
                await upstream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
        # Half-close: the relay reads everything forwarded, then sees the end.
        try:
            await upstream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _downlink(
        self,
        passage: Passage,
        upstream: trio.SocketStream,
        downstream: trio.SocketStream,
        scope: trio.CancelScope,
    ) -> None:
        with trio.move_on_after(30):
            while True:
                try:
                    data = await upstream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not data:
                    break
                if passage.cut:
                    continue  # the acknowledgement is lost here
                try:
                    await downstream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
        scope.cancel()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _collect(console: pinkrelay.ConsoleClient, events: list[Any]) -> None:
    async for event in console.events():
        events.append((trio.current_time(), event))


@trio_test
async def test_a_lost_acknowledgement_is_retried_and_the_alert_is_kept_once(tmp_path):
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path, registry_size=2) as relay, trio.open_nursery() as nursery:
        assert relay.buttons_address is not None
        tap = UplinkTap(relay.buttons_address)
        address = await nursery.start(tap.serve)
        console = console_client(relay)
        await nursery.start(console.run)
        events: list[Any] = []
        nursery.start_soon(_collect, console, events)
        button = pinkrelay.ButtonClient(
            address, button_id, secret_for(button_id), retry_interval=0.5, backoff_initial=0.05, backoff_max=0.2
        )
        await nursery.start(button.run)

        tap.cut_next_alert()
        with trio.fail_after(10):
            receipt = await button.press()
        await trio.sleep(1.0)  # time for a duplicate, if the relay were to announce one
        journal_rows = [a for a in await relay.journal.recent_alerts(0) if a.button == button_id]
        stored = await relay.journal.get(receipt.alert_id)
        counters = dict(relay.counters)
        nursery.cancel_scope.cancel()

    cut = [p for p in tap.passages if p.cut]
    assert len(cut) == 1, "the proxy never cut a connection carrying the alert"
    assert cut[0].alerts == 1
    after_cut = tap.passages[tap.passages.index(cut[0]) + 1 :]
    assert any(p.alerts for p in after_cut), "the button never sent the alert again on a new connection"
    assert button.reconnects >= 1
    assert receipt.attempts >= 2 and receipt.duplicate, receipt

    alerts = [event for _, event in events if isinstance(event, Alert) and event.alert_id == receipt.alert_id]
    assert len(alerts) == 1, alerts
    assert alerts[0].button == button_id and alerts[0].state == "raised"
    assert [a.alert_id for a in journal_rows] == [receipt.alert_id]
    assert stored is not None and stored.state == "raised"
    assert counters["alerts"] == 1 and counters["duplicate_alerts"] >= 1, counters


@trio_test
async def test_after_a_relay_restart_the_button_resumes_on_a_keyframe_and_the_console_decodes_it(tmp_path):
    # Keyframes only every 5 s: a button that did not start the new connection
    # with one would leave the console waiting (or decoding garbage) for seconds.
    clip = encode_clip(10, width=320, height=240, fps=15, bitrate=300_000, label="gop", gop_seconds=5)
    assert sum(p.keyframe for p in clip.packets if p.kind == "video") == 2
    config = relay_config(tmp_path).replace(
        buttons_listen=pinkrelay.Address("127.0.0.1", _free_port()),
        consoles_listen=pinkrelay.Address("127.0.0.1", _free_port()),
    )
    registry = make_registry(2)
    button_id = button_ids(1)[0]
    events: list[Any] = []
    async with trio.open_nursery() as outer:
        first_relay = pinkrelay.Relay(config, registry=registry)
        relay_scope = trio.CancelScope()

        async def run_first(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with relay_scope:
                await first_relay.serve(task_status=task_status)

        await outer.start(run_first)
        tap = UplinkTap(config.buttons_listen)
        address = await outer.start(tap.serve)
        button = pinkrelay.ButtonClient(
            address, button_id, secret_for(button_id), tracks=[clip.video.to_dict(), clip.audio.to_dict()],
            backoff_initial=0.1, backoff_max=0.3,
        )
        console = console_client(first_relay, backoff_initial=0.1, backoff_max=0.3)
        await outer.start(button.run)
        await outer.start(console.run)
        console.subscribe(button_id)
        outer.start_soon(_collect, console, events)
        outer.start_soon(stream_honouring_keyframes, button, clip)
        await wait_until(lambda: sum(isinstance(e, Media) for _, e in events) > 20, 5, "media before the restart")
        await trio.sleep(1.0)  # well inside the first 5 s group of pictures

        await first_relay.shutdown("restart for the test")
        relay_scope.cancel()
        await trio.sleep(0.3)
        restarted_at = len(events)
        second_relay = pinkrelay.Relay(config, registry=registry)
        await outer.start(second_relay.serve)
        restarted = trio.current_time()

        def video_after() -> list[tuple[float, Media]]:
            return [(t, e) for t, e in events[restarted_at:] if isinstance(e, Media) and e.lane == Lane.VIDEO]

        await wait_until(lambda: len(video_after()) >= 20, 6, "20 video frames after the restart")
        outer.cancel_scope.cancel()

    carried_video = [p for p in tap.passages if p.video]
    assert len(carried_video) >= 2, "no connection after the restart carried video"
    for passage in carried_video:
        assert passage.video[0], "a connection's first video frame was not a keyframe"
    assert button.reconnects >= 1

    later = [e for _, e in events[restarted_at:]]
    descriptions = [e for e in later if isinstance(e, (Subscribed, StreamDescription)) and e.tracks]
    assert descriptions, "the console never learnt the resumed stream's tracks"
    track = next(t for t in descriptions[-1].tracks if t.kind == "video")
    video = video_after()
    assert video[0][0] - restarted < 3.0, "the stream came back only at the clip's next scheduled keyframe"
    assert video[0][1].keyframe
    decoder = Decoder(TrackInfo(kind="video", codec="h264", width=track.width, height=track.height,
                                fps=track.fps, extradata=track.extradata))
    frames = [frame for _, message in video for frame in decoder.decode(message.data)]
    assert decoder.skipped_packets == 0
    assert len(frames) == len(video)
    assert {(frame.width, frame.height) for frame in frames} == {(320, 240)}


@trio_test
async def test_a_new_connection_drops_video_delta_frames_until_a_keyframe(tmp_path):
    """The library, not only a well-behaved caller, keeps a connection's video decodable from its start."""
    clip = encode_clip(1, width=160, height=120, fps=10, bitrate=100_000, label="delta")
    keyframe = next(p for p in clip.packets if p.kind == "video" and p.keyframe)
    delta = next(p for p in clip.packets if p.kind == "video" and not p.keyframe)
    audio = next(p for p in clip.packets if p.kind == "audio")
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path, registry_size=2) as relay, trio.open_nursery() as nursery:
        assert relay.buttons_address is not None
        tap = UplinkTap(relay.buttons_address)
        address = await nursery.start(tap.serve)
        button = pinkrelay.ButtonClient(
            address, button_id, secret_for(button_id), tracks=[clip.video.to_dict(), clip.audio.to_dict()],
            backoff_initial=0.05, backoff_max=0.1,
        )
        await nursery.start(button.run)
        now = wall_us()
        first = [
            button.send_media("video", delta.data, now, False),
            button.send_media("audio", audio.data, now, True),
            button.needs_keyframe,
            button.send_media("video", keyframe.data, now + 1, True),
            button.send_media("video", delta.data, now + 2, False),
            button.needs_keyframe,
        ]
        await trio.sleep(0.2)
        link = button.link
        assert link is not None
        link.close("cut by the test")
        await wait_until(lambda: button.connected.is_set() and button.link is not link, 5, "the reconnect")
        now = wall_us()
        second = [
            button.needs_keyframe,
            button.send_media("video", delta.data, now, False),
            button.send_media("video", keyframe.data, now + 1, True),
            button.send_media("video", delta.data, now + 2, False),
            button.needs_keyframe,
        ]
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()

    assert first == [False, True, True, True, True, False]
    assert second == [True, False, True, True, False]
    carried = [p.video for p in tap.passages if p.video]
    assert carried == [[True, False], [True, False]]

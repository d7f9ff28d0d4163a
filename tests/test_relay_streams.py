"""Media through the real relay: slow consumers, fast join, decodable starts."""

from __future__ import annotations

import socket

import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.media import Decoder, TrackInfo, encode_clip
from pinkrelay.protocol import Alert, Media, Subscribe, Subscribed

from relay_helpers import (
    button_client,
    button_ids,
    console_client,
    handshake,
    raw_console,
    running_relay,
    stream_clip,
    wall_us,
)


@pytest.fixture(scope="module")
def clip():
    return encode_clip(3, width=320, height=240, fps=30, bitrate=500_000, label="join")


def tracks_of(clip):
    return [clip.video.to_dict(), clip.audio.to_dict()]


@trio_test
async def test_paused_console_neither_slows_others_nor_grows_without_bound(tmp_path, clip):
    ids = button_ids(6)
    config = dict(stall_timeout=2.0, max_video_queue_bytes=512 * 1024, max_video_queue_age=0.5)
    disconnects = []
    async with running_relay(tmp_path, **config) as relay, trio.open_nursery() as nursery:
        async with relay.open_event_stream() as relay_events:

            async def collect():
                async for event in relay_events:
                    if isinstance(event, pinkrelay.ClientDisconnected):
                        disconnects.append(event)

            nursery.start_soon(collect)
            # The paused console: tiny receive buffer, subscribes, then never reads.
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect((relay.consoles_address.host, relay.consoles_address.port))
            paused = trio.SocketStream(sock)
            paused_conn = raw_console("desk-2", "console-token-for-tests-0001-2")
            await handshake(paused, paused_conn)
            for button_id in ids:
                await paused.send_all(paused_conn.send(Subscribe(button=button_id)))

            healthy = console_client(relay)
            await nursery.start(healthy.run)
            for button_id in ids:
                healthy.subscribe(button_id)
            buttons = [button_client(relay, button_id, tracks_of(clip)) for button_id in ids]
            for button in buttons:
                await nursery.start(button.run)
                nursery.start_soon(lambda b=button: stream_clip(b, clip, seconds=5.0))

            latencies: list[float] = []
            alerts: list[Alert] = []
            peak_pending = 0

            async def watch():
                async for event in healthy.events():
                    if isinstance(event, Media):
                        latencies.append((wall_us() - event.timestamp) / 1000)
                    elif isinstance(event, Alert):
                        alerts.append(event)

            async def sample():
                nonlocal peak_pending
                while True:
                    for session in list(relay.consoles):
                        if session.identity == "desk-2":
                            peak_pending = max(peak_pending, session.outbox.pending_bytes)
                    await trio.sleep(0.05)

            nursery.start_soon(watch)
            nursery.start_soon(sample)
            await trio.sleep(2.5)
            receipt = await buttons[2].press(timeout=5)
            await trio.sleep(1.5)
            nursery.cancel_scope.cancel()

    assert [a.alert_id for a in alerts] == [receipt.alert_id]
    latencies.sort()
    assert len(latencies) > 6 * 30 * 3, "the healthy console lost media"
    p95 = latencies[int(len(latencies) * 0.95)]
    assert p95 < 250, f"healthy console's media p95 latency {p95:.1f} ms: the paused one slowed it"
    bound = 512 * 1024 + pinkrelay._core.QueueDefaults.MAX_AUDIO_BYTES + 64 * 1024
    assert 0 < peak_pending <= bound, f"paused console queue reached {peak_pending} bytes"
    dropped = [d for d in disconnects if d.identity == "desk-2"]
    assert dropped and "stopped reading" in dropped[0].reason


@trio_test
async def test_console_joining_mid_gop_decodes_from_its_first_frame(tmp_path, clip):
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        button = button_client(relay, button_ids(1)[0], tracks_of(clip))
        await nursery.start(button.run)
        nursery.start_soon(lambda: stream_clip(button, clip, seconds=3.0))
        await trio.sleep(1.45)  # 0.45 s into the second one-second GOP

        console = console_client(relay)
        await nursery.start(console.run)
        subscribed_at = trio.current_time()
        console.subscribe(button.button_id)
        subscribed = None
        video: list[Media] = []
        arrival: list[float] = []
        with trio.move_on_after(3):
            async for event in console.events():
                if isinstance(event, Subscribed):
                    subscribed = event
                elif isinstance(event, Media) and event.lane == pinkrelay._core.Lane.VIDEO:
                    video.append(event)
                    arrival.append(trio.current_time() - subscribed_at)
                    if len(video) >= 40:
                        break
        nursery.cancel_scope.cancel()

    assert subscribed is not None and subscribed.tracks
    assert subscribed.catchup_frames >= 5, "a mid-GOP join should come with the GOP so far"
    assert video[0].keyframe, "the first video frame a joining console gets must be a keyframe"
    catchup_done = arrival[subscribed.catchup_frames - 1]
    assert catchup_done < 0.5, f"catch-up frames took {catchup_done:.2f} s to arrive"
    description = next(t for t in subscribed.tracks if t.kind == "video")
    decoder = Decoder(TrackInfo(kind="video", codec="h264", width=description.width,
                                height=description.height, fps=description.fps,
                                extradata=description.extradata))
    first = decoder.decode(video[0].data)
    assert first, "the first frame did not decode"
    assert (first[0].width, first[0].height) == (320, 240)
    for message in video[1:]:
        decoder.decode(message.data)
    assert decoder.skipped_packets == 0
    assert decoder.decoded_frames >= len(video) - 2

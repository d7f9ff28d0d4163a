"""A console that reads, but slower than the stream: what it loses, and what nobody else loses.

Real relay on 127.0.0.1, a real ButtonClient replaying H.264 + Opus encoded
with PyAV, a fast ConsoleClient and a slow console on a raw socket with a
tiny receive buffer that reads a little every 50 ms (well below the
stream's bitrate). The relay must drop the slow console's video back to a
keyframe (never leave it a frame it cannot decode), keep its audio and its
alerts, and leave the fast console and the button's alert path alone
(docs/protocol.md §9.5).
"""

from __future__ import annotations

import socket

import pytest
import trio
from trio.testing import trio_test

from pinkrelay._core import Lane
from pinkrelay.media import Decoder, TrackInfo, encode_clip
from pinkrelay.protocol import Alert, Media, StreamDescription, Subscribe, Subscribed, TrackDescription

from relay_helpers import (
    button_client,
    button_ids,
    console_client,
    handshake,
    raw_console,
    running_relay,
    wall_us,
)

STREAM_SECONDS = 4.0
SLOW_READ_BYTES = 600
SLOW_READ_PAUSE = 0.05  # about 12 KB/s, against about 31 KB/s of video and 5 KB/s of audio


@pytest.fixture(scope="module")
def clip():
    # Half-second GOPs: several keyframes, so several chances to resume, in a short test.
    return encode_clip(2, width=320, height=240, fps=30, bitrate=1_200_000, gop_seconds=0.5, label="slow")


def kind_of(event: Media) -> str:
    return "video" if event.lane == Lane.VIDEO else "audio"


def decoder_for(track: TrackDescription) -> Decoder:
    return Decoder(
        TrackInfo(kind=track.kind, codec=track.codec, width=track.width, height=track.height, fps=track.fps,
                  sample_rate=track.sample_rate, channels=track.channels, extradata=track.extradata)
    )


@trio_test
async def test_slow_console_loses_video_back_to_keyframes_keeps_audio_and_slows_nobody(tmp_path, clip):
    button_id = button_ids(1)[0]
    config = dict(max_video_queue_bytes=32 * 1024, max_video_queue_age=0.5)
    sent: dict[str, list[int]] = {"video": [], "audio": []}
    keyframes: set[int] = set()
    fast: dict[str, list[Media]] = {"video": [], "audio": []}
    slow: dict[str, list[Media]] = {"video": [], "audio": []}
    slow_alerts: list[Alert] = []
    slow_tracks: dict[str, TrackDescription] = {}
    draining = trio.Event()

    async with running_relay(tmp_path, **config) as relay, trio.open_nursery() as nursery:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((relay.consoles_address.host, relay.consoles_address.port))
        slow_stream = trio.SocketStream(sock)
        slow_conn = raw_console("desk-2", "console-token-for-tests-0001-2")
        await handshake(slow_stream, slow_conn)
        await slow_stream.send_all(slow_conn.send(Subscribe(button=button_id)))

        async def read_slowly():
            while True:
                data = await slow_stream.receive_some(65536 if draining.is_set() else SLOW_READ_BYTES)
                slow_conn.receive_data(data, trio.current_time())
                for event in slow_conn.events():
                    if isinstance(event, Media):
                        slow[kind_of(event)].append(event)
                    elif isinstance(event, Alert):
                        slow_alerts.append(event)
                    elif isinstance(event, (Subscribed, StreamDescription)):
                        slow_tracks.update({track.kind: track for track in event.tracks})
                if not data:
                    return
                if not draining.is_set():
                    await trio.sleep(SLOW_READ_PAUSE)

        fast_console = console_client(relay)
        await nursery.start(fast_console.run)
        fast_console.subscribe(button_id)

        async def read_fast():
            async for event in fast_console.events():
                if isinstance(event, Media):
                    fast[kind_of(event)].append(event)

        nursery.start_soon(read_slowly)
        nursery.start_soon(read_fast)
        button = button_client(relay, button_id, [clip.video.to_dict(), clip.audio.to_dict()])
        await nursery.start(button.run)
        await trio.sleep(0.2)  # both subscriptions in place before the first keyframe
        idle = await button.press(timeout=5)

        async def stream():
            start_wall, start = wall_us(), trio.current_time()
            calls = {"video": 0, "audio": 0}
            for packet in clip.replay(0):
                if packet.pts_us / 1e6 > STREAM_SECONDS:
                    return
                await trio.sleep_until(start + packet.pts_us / 1e6)
                seq = calls[packet.kind]  # ButtonClient numbers every call, sent or not
                calls[packet.kind] += 1
                if button.send_media(packet.kind, packet.data, start_wall + packet.pts_us, packet.keyframe):
                    sent[packet.kind].append(seq)
                    if packet.kind == "video" and packet.keyframe:
                        keyframes.add(seq)

        async with trio.open_nursery() as streaming:
            streaming.start_soon(stream)
            await trio.sleep(STREAM_SECONDS / 2)  # the slow console is well behind by now
            backlog = next(s for s in relay.consoles if s.identity == "desk-2").outbox.pending_bytes
            receipt = await button.press(timeout=5)
        # The stream is over: let both consoles catch up with what is still queued for them.
        draining.set()
        with trio.move_on_after(5):
            while (
                len(slow_alerts) < 2
                or not slow["audio"] or slow["audio"][-1].seq != sent["audio"][-1]
                or not fast["video"] or fast["video"][-1].seq != sent["video"][-1]
                or not fast["audio"] or fast["audio"][-1].seq != sent["audio"][-1]
            ):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()

    assert backlog > 0, "the slow console was never behind: the test did not test anything"
    # The disk sets the idle figure (the ack waits for the commit); a slow console must add nothing.
    bound = max(250.0, 4 * idle.latency_ms)
    assert receipt.latency_ms < bound, (
        f"alert ack took {receipt.latency_ms:.0f} ms while a console was slow "
        f"(idle: {idle.latency_ms:.0f} ms)"
    )

    # The fast console got every message the button sent, in order.
    for kind in ("video", "audio"):
        assert [m.seq for m in fast[kind]] == sent[kind], f"fast console lost {kind}"

    # The slow console: video with gaps, each gap ending on a keyframe.
    video = slow["video"]
    seqs = [m.seq for m in video]
    assert seqs == sorted(set(seqs)), "slow console's video out of order or repeated"
    assert set(seqs) <= set(sent["video"])
    assert video[0].keyframe and video[0].seq in keyframes
    gaps = [(a.seq, b) for a, b in zip(video, video[1:]) if b.seq != a.seq + 1]
    assert gaps, f"no video dropped for the slow console ({len(video)} of {len(sent['video'])} arrived)"
    for before, after in gaps:
        assert after.keyframe and after.seq in keyframes, (
            f"video resumed after seq {before} on seq {after.seq}, not a keyframe"
        )
    assert len(video) < len(sent["video"])

    # Its audio and its alert: all of them.
    assert [m.seq for m in slow["audio"]] == sent["audio"], "the slow console lost audio"
    assert [a.alert_id for a in slow_alerts] == [idle.alert_id, receipt.alert_id]

    # Everything it got decodes.
    video_decoder = decoder_for(slow_tracks["video"])
    for message in video:
        video_decoder.decode(message.data, message.timestamp)
    video_decoder.flush()
    assert video_decoder.skipped_packets == 0
    assert video_decoder.decoded_frames == len(video)
    audio_decoder = decoder_for(slow_tracks["audio"])
    for message in slow["audio"]:
        audio_decoder.decode(message.data, message.timestamp)
    audio_decoder.flush()
    assert audio_decoder.decoded_frames >= len(slow["audio"]) - 1

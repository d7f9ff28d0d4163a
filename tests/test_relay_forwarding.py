"""What the relay forwards between consoles and buttons besides media (docs/protocol.md §9.2).

Real relay on 127.0.0.1. Keyframe requests reach the button, but at most one
per 0.5 s however often consoles ask; an unsubscribed console gets no more
of that button's media while others still do; a subscription to a button
that is not in the registry is refused without ending the session.
"""

from __future__ import annotations

import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.clients import Disconnected
from pinkrelay.media import encode_clip
from pinkrelay.protocol import (
    Alert,
    Error,
    KeyframeRequest,
    Media,
    StreamDescription,
    Subscribe,
    Subscribed,
    TrackDescription,
)

from relay_helpers import (
    TOKEN,
    button_client,
    button_ids,
    console_client,
    raw_button,
    raw_console,
    raw_session,
    running_relay,
    stream_clip,
)

#: The relay's limit (relay/media_desk.py, KEYFRAME_REQUEST_INTERVAL), as documented in §9.2.
INTERVAL = 0.5


@pytest.fixture(scope="module")
def clip():
    return encode_clip(2, width=320, height=240, fps=30, bitrate=300_000, label="fwd")


async def pump(stream: trio.SocketStream, conn, sink: list) -> None:
    """Read a raw session until it closes, keeping (arrival time, event)."""
    while True:
        data = await stream.receive_some(65536)
        conn.receive_data(data, trio.current_time())
        sink.extend((trio.current_time(), event) for event in conn.events())
        if not data:
            return


@trio_test
async def test_keyframe_requests_reach_the_button_at_most_once_per_half_second(tmp_path):
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        button = raw_button(button_id)
        button_stream = await raw_session(relay.buttons_address, button)
        video = TrackDescription(
            track_id=button.track_ids[0], kind="video", codec="h264", width=320, height=240
        )
        await button_stream.send_all(button.send(StreamDescription(tracks=(video,))))
        at_button: list = []
        nursery.start_soon(pump, button_stream, button, at_button)

        console = raw_console()
        console_stream = await raw_session(relay.consoles_address, console)
        at_console: list = []
        nursery.start_soon(pump, console_stream, console, at_console)
        # Subscribing to a stream with nothing cached asks for a keyframe itself (§9.3)...
        await console_stream.send_all(console.send(Subscribe(button=button_id)))
        started = trio.current_time()
        # ...and then the console asks every 0.1 s for 1.2 s, for a track the relay ignores.
        for _ in range(12):
            await console_stream.send_all(console.send(KeyframeRequest(button=button_id, track_id=77)))
            await trio.sleep(0.1)
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()

    requests = [(t, e) for t, e in at_button if isinstance(e, KeyframeRequest)]
    assert all(e == KeyframeRequest(button=button_id, track_id=0) for _, e in requests), requests
    times = [t - started for t, _ in requests]
    # 1.2 s of asking, plus the subscription's own request: three windows of 0.5 s.
    assert 2 <= len(times) <= 3, f"button got keyframe requests at {times}"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= INTERVAL - 0.05, f"keyframe requests {gaps} s apart; the limit is {INTERVAL} s"
    assert any(isinstance(e, Subscribed) for _, e in at_console)
    assert not any(isinstance(e, Error) for _, e in at_console + at_button)


@trio_test
async def test_unsubscribe_stops_that_consoles_media_and_nobody_elses(tmp_path, clip):
    button_id = button_ids(1)[0]
    media: dict[str, list[float]] = {"desk-1": [], "desk-2": []}
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        leaver = console_client(relay)
        stayer = console_client(relay, "desk-2", TOKEN + "-2")
        for console in (leaver, stayer):
            await nursery.start(console.run)
            console.subscribe(button_id)

            async def watch(console=console):
                async for event in console.events():
                    if isinstance(event, Media):
                        media[console.operator].append(trio.current_time())

            nursery.start_soon(watch)
        button = button_client(relay, button_id, [clip.video.to_dict(), clip.audio.to_dict()])
        await nursery.start(button.run)
        nursery.start_soon(lambda: stream_clip(button, clip, seconds=3.0))

        await trio.sleep(1.0)
        leaver.unsubscribe(button_id)
        unsubscribed_at = trio.current_time()
        await trio.sleep(0.3)  # frames already on the wire may still arrive (and be ignored)
        settled_at = trio.current_time()
        assert leaver.link is not None
        ignored_before = leaver.link.conn.ignored_media
        await trio.sleep(1.0)
        ignored_after = leaver.link.conn.ignored_media
        nursery.cancel_scope.cancel()

    assert len([t for t in media["desk-1"] if t < unsubscribed_at]) > 20, "it got no media while subscribed"
    assert not [t for t in media["desk-1"] if t >= unsubscribed_at], "media reached it after unsubscribe"
    # The relay itself stopped: not even frames the console would have ignored arrive.
    assert ignored_after == ignored_before, f"{ignored_after - ignored_before} media frames kept coming"
    assert len([t for t in media["desk-2"] if t >= settled_at]) > 20, "the other console lost its stream"


@trio_test
async def test_subscribing_to_an_unknown_button_is_refused_and_the_console_goes_on(tmp_path, clip):
    button_id = button_ids(1)[0]
    seen: list = []
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        button = button_client(relay, button_id, [clip.video.to_dict(), clip.audio.to_dict()])
        await nursery.start(button.run)

        async def wait_for(predicate):
            with trio.fail_after(5):
                async for event in console.events():
                    seen.append(event)
                    if predicate(event):
                        return event

        console.subscribe("kp-no-such-button")
        refusal = await wait_for(lambda e: isinstance(e, Error))
        console.subscribe(button_id)
        nursery.start_soon(lambda: stream_clip(button, clip, seconds=2.0))
        subscribed = await wait_for(lambda e: isinstance(e, Subscribed) and e.button == button_id)
        await wait_for(lambda e: isinstance(e, Media) and e.button == button_id)
        receipt = await button.press(timeout=5)
        alert = await wait_for(lambda e: isinstance(e, Alert) and e.alert_id == receipt.alert_id)
        nursery.cancel_scope.cancel()

    assert refusal.code == "unknown-button" and refusal.fatal is False
    assert "kp-no-such-button" in refusal.message and "registry" in refusal.message
    # The tracks: in `subscribed`, or, when the button described them after the console subscribed, next.
    described = [e.tracks for e in seen if isinstance(e, StreamDescription) and e.button == button_id]
    assert (subscribed.tracks or described) and alert.button == button_id
    assert not [e for e in seen if isinstance(e, (Disconnected, pinkrelay.Reconnected))], seen
    assert not [e for e in seen if isinstance(e, Subscribed) and e.button == "kp-no-such-button"]

"""ConsoleClient.request_keyframe and unsubscribe through the real relay, with a real button.

The button streams a clip whose keyframes are 5 s apart, so a keyframe that
reaches the console within a second of asking can only be the one the
request produced. Two consoles watch; one stops, the other shows the
button kept streaming, so "no more media" means the unsubscribe worked,
not that the stream ended.
"""

from __future__ import annotations

from typing import Any

import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay._core import Lane
from pinkrelay.media import encode_clip
from pinkrelay.protocol import Media

from relay_helpers import (
    OPERATOR,
    TOKEN,
    button_client,
    button_ids,
    console_client,
    running_relay,
    stream_honouring_keyframes,
    wait_until,
    wall_us,
)


async def _collect(console: pinkrelay.ConsoleClient, events: list[tuple[float, Any]]) -> None:
    async for event in console.events():
        events.append((trio.current_time(), event))


def _media(events: list[tuple[float, Any]], since: int = 0) -> list[tuple[float, Media]]:
    return [(t, e) for t, e in events[since:] if isinstance(e, Media)]


@trio_test
async def test_request_keyframe_reaches_the_button_and_unsubscribe_stops_the_stream(tmp_path):
    clip = encode_clip(10, width=160, height=120, fps=15, bitrate=150_000, label="watch", gop_seconds=5)
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path, registry_size=2) as relay, trio.open_nursery() as nursery:
        button = button_client(relay, button_id, [clip.video.to_dict(), clip.audio.to_dict()])
        await nursery.start(button.run)
        nursery.start_soon(stream_honouring_keyframes, button, clip)
        leaving = console_client(relay, backoff_initial=0.05, backoff_max=0.1)
        staying = console_client(relay, "desk-2", TOKEN + "-2")
        assert leaving.operator == OPERATOR
        left: list[tuple[float, Any]] = []
        stayed: list[tuple[float, Any]] = []
        for console, events in ((leaving, left), (staying, stayed)):
            await nursery.start(console.run)
            nursery.start_soon(_collect, console, events)
            console.subscribe(button_id)
        await wait_until(lambda: len(_media(left)) > 10 and len(_media(stayed)) > 10, 5, "media on both consoles")
        await trio.sleep(0.7)  # past the relay's limit of one keyframe request per 0.5 s

        requests = button.keyframe_requests
        since = len(left)
        asked_at, asked_us = trio.current_time(), wall_us()
        leaving.request_keyframe(button_id)
        await wait_until(lambda: button.keyframe_requests > requests, 2, "the KeyframeRequest at the button")

        def fresh_keyframes() -> list[tuple[float, Media]]:
            return [(t, m) for t, m in _media(left, since) if m.lane == Lane.VIDEO and m.keyframe]

        await wait_until(fresh_keyframes, 2, "a keyframe at the console after asking for one")
        arrived, keyframe = fresh_keyframes()[0]
        assert keyframe.button == button_id and keyframe.timestamp >= asked_us
        assert arrived - asked_at < 1.5

        leaving.unsubscribe(button_id)
        assert button_id not in leaving.watching
        await trio.sleep(0.5)  # what was already in flight arrives
        link = leaving.link
        assert link is not None
        link.close("dropped by the test")  # a reconnect must not subscribe again
        await wait_until(lambda: leaving.connected.is_set() and leaving.link is not link, 5, "the console's reconnect")
        left_count, stayed_count, sent = len(_media(left)), len(_media(stayed)), button.sent_messages
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()

    assert len(_media(left)) == left_count, "media kept arriving after unsubscribe"
    assert any(isinstance(e, pinkrelay.Reconnected) for _, e in left)
    assert len(_media(stayed)) - stayed_count >= 15, "the other console's stream stopped too"
    assert button.sent_messages - sent >= 40

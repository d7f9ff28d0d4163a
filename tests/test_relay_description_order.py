"""A subscriber never gets media for a track before the description naming it (protocol.md §6.5).

Real relay on 127.0.0.1, real H.264 from PyAV. A button sends its first
stream description and its first keyframe in one write, so the relay reads
both in one turn, while a console's subscription races it by a few hundred
microseconds either way. Run in both core modes (compiled and
``PINKRELAY_PUREPYTHON=1``): the ordering lives in the connection, not the core.
"""

from __future__ import annotations

import random

import pytest
import trio
from trio.testing import trio_test

from pinkrelay.media import encode_clip
from pinkrelay.protocol import Error, Media, StreamDescription, Subscribe, Subscribed, TrackDescription

from relay_helpers import button_ids, raw_button, raw_console, raw_session, running_relay

ROUNDS = 40


@pytest.fixture(scope="module")
def clip():
    return encode_clip(0.5, width=160, height=120, fps=10, bitrate=100_000, label="order")


@trio_test
async def test_subscribe_racing_the_first_description_never_sees_media_first(tmp_path, clip):
    keyframe = next(p for p in clip.packets if p.kind == "video" and p.keyframe)
    jitter = random.Random(16)
    async with running_relay(tmp_path, registry_size=ROUNDS) as relay:
        console = raw_console()
        console_stream = await raw_session(relay.consoles_address, console)
        for button_id in button_ids(ROUNDS):
            button = raw_button(button_id)
            button_stream = await raw_session(relay.buttons_address, button)
            video = TrackDescription(track_id=button.track_ids[0], **clip.video.to_dict())
            first_write = button.send(StreamDescription(tracks=(video,))) + b"".join(
                button.send_media(video.track_id, 0, 1, keyframe.data, keyframe=True)
            )

            async def press_subscribe(delay: float) -> None:
                await trio.sleep(delay)
                await console_stream.send_all(console.send(Subscribe(button=button_id)))

            async def describe(delay: float) -> None:
                await trio.sleep(delay)
                await button_stream.send_all(first_write)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(press_subscribe, jitter.uniform(0, 0.002))
                nursery.start_soon(describe, jitter.uniform(0, 0.002))

            seen: list = []
            with trio.move_on_after(5):
                while not any(isinstance(e, Media) and e.button == button_id for e in seen):
                    data = await console_stream.receive_some(65536)
                    assert data, "the relay closed the console"
                    console.receive_data(data, trio.current_time())
                    seen.extend(e for e in console.events() if getattr(e, "button", button_id) == button_id)
                    if console.ignored_media:
                        break
            assert not any(isinstance(e, Error) for e in seen), seen
            assert any(isinstance(e, Media) for e in seen) or console.ignored_media, (
                f"{button_id}: no media within 5 s; the relay lost the first keyframe (events: {seen})"
            )
            assert console.ignored_media == 0, (
                f"{button_id}: the console got media for a track not yet described; events: {seen}"
            )
            first_media = next(e for e in seen if isinstance(e, Media) and e.button == button_id)
            assert first_media.keyframe and first_media.track_id == video.track_id
            named = [
                e for e in seen[: seen.index(first_media)]
                if isinstance(e, (Subscribed, StreamDescription)) and any(t.track_id == video.track_id for t in e.tracks)
            ]
            assert named, f"{button_id}: media arrived before any description of track {video.track_id}"
            await button_stream.aclose()

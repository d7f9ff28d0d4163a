"""The relay's cheap H.264 checks (protocol.md §5.17): Annex B start, KEYFRAME flag agreeing with NAL types.

Real relay on 127.0.0.1, real H.264 from PyAV. A button whose video breaks
a rule gets ``error {code: "bad-message"}`` naming the message and the rule,
and is disconnected; a second button streaming at the same time, and the
console watching it, are not disturbed.
"""

from __future__ import annotations

import pytest

from trio.testing import trio_test

from pinkrelay.media import encode_clip
from pinkrelay.protocol import Error, Media, StreamDescription, Subscribe, TrackDescription

from relay_helpers import button_ids, raw_button, raw_console, raw_session, read_events, running_relay


@pytest.fixture(scope="module")
def clip():
    return encode_clip(1, width=160, height=120, fps=10, bitrate=100_000, label="rules")


def _video(clip, kind: str) -> bytes:
    return next(p.data for p in clip.packets if p.kind == "video" and p.keyframe == (kind == "key"))


@pytest.mark.parametrize("case,payload,keyframe,words", [
    ("delta flagged as keyframe", "delta", True, "has the KEYFRAME flag but no IDR slice"),
    ("keyframe without the flag", "key", False, "begins with NAL type 7 (SPS) but has no KEYFRAME flag"),
    ("length-prefixed (avcC) instead of Annex B", "avcc", True, "does not start with an Annex B start code"),
])
@trio_test
async def test_a_broken_video_message_is_refused_and_nobody_else_notices(tmp_path, clip, case, payload, keyframe,
                                                                         words):
    good_id, bad_id = button_ids(2)
    key, delta = _video(clip, "key"), _video(clip, "delta")
    data = {"key": key, "delta": delta, "avcc": len(key[4:]).to_bytes(4, "big") + key[4:]}[payload]
    async with running_relay(tmp_path) as relay:
        console = raw_console()
        console_stream = await raw_session(relay.consoles_address, console)
        await console_stream.send_all(console.send(Subscribe(button=good_id)))
        good = raw_button(good_id)
        good_stream = await raw_session(relay.buttons_address, good)
        good_video = TrackDescription(track_id=good.track_ids[0], **clip.video.to_dict())
        await good_stream.send_all(good.send(StreamDescription(tracks=(good_video,))))

        bad = raw_button(bad_id)
        bad_stream = await raw_session(relay.buttons_address, bad)
        bad_video = TrackDescription(track_id=bad.track_ids[0], **clip.video.to_dict())
        await bad_stream.send_all(bad.send(StreamDescription(tracks=(bad_video,)))
                                  + b"".join(bad.send_media(bad_video.track_id, 0, 1, data, keyframe=keyframe)))
        refusal = await read_events(bad_stream, bad, until=lambda e: any(isinstance(x, Error) for x in e), timeout=5)

        for seq, packet in enumerate((key, delta, delta)):
            await good_stream.send_all(b"".join(good.send_media(good_video.track_id, seq, seq + 1, packet,
                                                                keyframe=packet is key)))
        seen = await read_events(console_stream, console,
                                 until=lambda e: sum(isinstance(x, Media) for x in e) == 3, timeout=5)

    errors = [e for e in refusal if isinstance(e, Error)]
    assert errors and errors[0].code == "bad-message" and errors[0].fatal, (case, refusal)
    assert words in errors[0].message and f"track {bad_video.track_id}" in errors[0].message
    media = [e for e in seen if isinstance(e, Media)]
    assert [m.keyframe for m in media] == [True, False, False], f"{case}: the other button's stream suffered"
    assert not any(isinstance(e, Error) for e in seen)

"""Fuzzing the compiled data plane at the socket: what it takes, what it gives Python, and nothing else.

A button's byte stream is built from pieces: valid media messages (one or
several chunks, video and audio, on tracks described or not), control
frames, and every kind of bad piece the relay must refuse (garbage, a
version nobody speaks, reserved flags, a lying length, the wrong lane, an
undescribed track, video that is not Annex B, a keyframe flag without an
IDR), sent in random slices through a real socket pair to a real data
thread. A model says what must happen, and the plane must agree exactly:

- each valid media message before the first bad piece is taken, its exact
  wire bytes counted once, and reaches a watching subscriber byte for byte;
- control frames go to Python in arrival order, and nothing behind them is
  read until Python says so;
- from the first bad piece on, every byte is handed back to Python,
  unchanged, and the pure-Python reference decoder (``_core/reference.py``)
  or the relay's media rules name the error.

``PINKRELAY_FUZZ_EXAMPLES`` sets how many streams hypothesis tries (60 in
``make test``; ``make fuzz`` runs many more).
"""

from __future__ import annotations

import os
import select
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinkrelay._core import Lane, encode_frame, encode_media, reference
from pinkrelay._core.wire import FrameType
from pinkrelay.errors import FrameError, LimitExceeded

dataplane = pytest.importorskip("pinkrelay._core._dataplane", reason="the data plane is compiled code")
pytestmark = pytest.mark.compiled_only

EXAMPLES = int(os.environ.get("PINKRELAY_FUZZ_EXAMPLES", "60"))
FUZZ = settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow,
                                                                               HealthCheck.data_too_large])
MAX_FRAME = 16 * 1024
LIMITS = dict(max_frame_bytes=MAX_FRAME, max_message_bytes=1024 * 1024, max_chunks_per_message=64)
SUB_LIMITS = dict(max_video_bytes=64 * 1024 * 1024, max_audio_bytes=64 * 1024 * 1024,
                  max_control_bytes=1024 * 1024, stall_timeout=30.0)
VIDEO, AUDIO, WIDE, UNDESCRIBED = 3, 4, 70_000, 9
DESCRIBED = {VIDEO: Lane.VIDEO, AUDIO: Lane.AUDIO, WIDE: Lane.VIDEO}


# -- the pieces of a stream ----------------------------------------------------------------

def _nal(kind: int, size: int) -> bytes:
    return b"\x00\x00\x00\x01" + bytes([kind]) + b"\xab" * size


@st.composite
def good_media(draw):
    """(wire bytes, keyframe, track) of a valid message, in one chunk or several."""
    track = draw(st.sampled_from(sorted(DESCRIBED)))
    lane = DESCRIBED[track]
    size = draw(st.integers(0, 3 * MAX_FRAME))
    if lane == Lane.VIDEO:
        keyframe = draw(st.booleans())
        payload = _nal(0x65 if keyframe else 0x41, size)
    else:
        keyframe, payload = False, draw(st.binary(min_size=1, max_size=200)) + b"\x00" * size
    seq = draw(st.integers(0, 2**32 - 1))
    timestamp = draw(st.integers(-(2**63), 2**63 - 1))
    chunks = encode_media(track, lane, seq, timestamp, payload, keyframe, MAX_FRAME)
    return b"".join(bytes(c) for c in chunks), keyframe, track


def control() -> st.SearchStrategy[bytes]:
    return st.integers(1, 2**31).map(lambda seq: encode_frame(FrameType.HEARTBEAT, Lane.CONTROL, 0, seq, 0,
                                                              b"\x81\xa1t\x00"))


def _header_with(byte: int, value: int, media: bytes) -> bytes:
    return media[:byte] + bytes([value]) + media[byte + 1:]


@st.composite
def bad_piece(draw):
    """(name, bytes) of a piece the data plane must not take."""
    video = b"".join(bytes(c) for c in encode_media(VIDEO, Lane.VIDEO, 1, 1, _nal(0x41, 50), False, MAX_FRAME))
    kind = draw(st.sampled_from(["garbage", "version", "flags", "length", "lane", "track", "annex-b",
                                 "keyframe-without-idr", "idr-without-keyframe"]))
    if kind == "garbage":
        data = draw(st.binary(min_size=24, max_size=200).filter(lambda b: b[:2] != b"PR"))
    elif kind == "version":
        data = _header_with(2, draw(st.sampled_from([0, 3, 7, 255])), video)
    elif kind == "flags":
        data = _header_with(4, 0x02 | draw(st.sampled_from([0x04, 0x08, 0x80])), video)
    elif kind == "length":
        data = video[:20] + draw(st.integers(MAX_FRAME + 1, 2**32 - 1)).to_bytes(4, "big") + video[24:]
    elif kind == "lane":
        data = _header_with(5, Lane.AUDIO, video)
    elif kind == "track":
        data = b"".join(bytes(c) for c in encode_media(UNDESCRIBED, Lane.VIDEO, 1, 1, _nal(0x41, 9), False,
                                                       MAX_FRAME))
    elif kind == "annex-b":
        data = b"".join(bytes(c) for c in encode_media(VIDEO, Lane.VIDEO, 1, 1, b"\x12\x34" + bytes(40), False,
                                                       MAX_FRAME))
    elif kind == "keyframe-without-idr":
        data = b"".join(bytes(c) for c in encode_media(VIDEO, Lane.VIDEO, 1, 1, _nal(0x41, 30), True, MAX_FRAME))
    else:
        data = b"".join(bytes(c) for c in encode_media(VIDEO, Lane.VIDEO, 1, 1, _nal(0x65, 30), False, MAX_FRAME))
    return kind, data, draw(st.binary(max_size=64))  # and whatever the device sends after it


piece = st.one_of(good_media().map(lambda m: ("media", m)), control().map(lambda c: ("control", c)))
streams = st.tuples(st.lists(piece, max_size=12), st.one_of(st.none(), bad_piece()),
                    st.lists(st.integers(1, 40_000), min_size=1, max_size=8))

#: Pieces that the header checks of the pure-Python decoder refuse (protocol.md §2.3).
HEADER_FAULTS = {"garbage", "version", "flags", "length"}


# -- plumbing ------------------------------------------------------------------------------

def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def _drain(sock: socket.socket, into: bytearray) -> None:
    while select.select([sock], [], [], 0)[0]:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return
        into += chunk


@pytest.fixture(scope="module")
def plane():
    plane = dataplane.DataPlane(2, 64 * 1024 * 1024)
    yield plane
    plane.stop()


@FUZZ
@given(stream=streams)
def test_the_data_plane_takes_exactly_the_valid_media_and_hands_back_the_rest(plane, stream) -> None:
    pieces, bad, slices = stream
    wire = b"".join(data[0] if kind == "media" else data for kind, data in pieces)
    tail = bad[1] + bad[2] if bad is not None else b""
    sent = wire + tail
    expect_media = [data[0] for kind, data in pieces if kind == "media"]
    expect_control = [data for kind, data in pieces if kind == "control"]

    button_far, button = _pair()
    near, far = _pair()
    pub = plane.publisher(button_far.fileno(), **LIMITS)
    sub = plane.subscriber(near.fileno(), **SUB_LIMITS)
    try:
        for track, lane in DESCRIBED.items():
            pub.describe(track, lane)
        pub.resume()
        pub.subscribe(sub, 0)
        for track in (VIDEO, WIDE):
            sub.wait_for_keyframe(track)  # as the relay does for a new watcher
        sub.release()
        button.setblocking(False)
        cuts = iter(slices * (len(sent) // sum(slices) + 1))  # random splits of the whole stream
        at, size = 0, next(cuts)
        controls, handed_back, delivered = [], None, bytearray()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if at < len(sent):
                try:
                    sent_now = button.send(sent[at:at + size])
                except BlockingIOError:
                    sent_now = 0  # the plane paused for Python, or the kernel buffer is full
                at += sent_now
                size = size - sent_now or next(cuts)
                if at < len(sent):
                    deadline = time.monotonic() + 3
            _drain(far, delivered)  # a watcher that reads: the plane never stalls on it
            for kind, conn, data in plane.events():
                assert conn == pub.id
                if kind == dataplane.CONTROL:
                    controls.append(data)
                    pub.resume()  # Python acted on them: read on
                else:
                    assert kind == dataplane.HANDBACK, (kind, data)
                    handed_back = data
            if handed_back is not None:
                break  # the plane reads this button no more; what is still unsent stays with it
            stats = pub.stats()
            if at >= len(sent) and stats["messages_in"] == len(expect_media) and (
                    b"".join(controls) == b"".join(expect_control) and bad is None):
                break
            select.select([plane.fileno(), far], [button] if at < len(sent) else [], [], 0.05)
        stats = pub.stats()
        assert stats["messages_in"] == len(expect_media), "every valid message before the bad piece, once"
        assert stats["bytes_in"] == sum(map(len, expect_media)), "their exact wire bytes"
        assert b"".join(controls) == b"".join(expect_control), "control frames to Python, in order"
        if bad is None:
            assert handed_back is None
        else:
            # From the bad piece on, byte for byte: what the plane had read, then what it left in the socket.
            unread = bytearray()
            button_far.setblocking(False)
            _drain(button_far, unread)
            assert handed_back + bytes(unread) == sent[len(wire):at], f"{bad[0]}: handed back as sent"
            if bad[0] in HEADER_FAULTS:
                with pytest.raises((FrameError, LimitExceeded)):
                    reference.FrameDecoder(max_frame_bytes=MAX_FRAME).decode(handed_back)
            else:
                # Well-formed frames that the relay's session refuses (track, lane, H.264 rules).
                assert reference.FrameDecoder(max_frame_bytes=MAX_FRAME).decode(bad[1])
        # What a watcher got: from the first keyframe of each video track on, every message, byte for byte.
        expected = _watched(pieces)
        got: dict[int, list[bytes]] = {}
        deadline = time.monotonic() + 3
        while got != expected and time.monotonic() < deadline:
            select.select([far], [], [], 0.05)
            _drain(far, delivered)
            got = _messages(bytes(delivered))
        assert got == expected, "the watcher's messages, per track"
    finally:
        sub.remove()
        pub.remove()
        for sock in (button, button_far, near, far):
            sock.close()


def _watched(pieces) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    started: set[int] = set()
    for kind, data in pieces:
        if kind != "media":
            continue
        message, keyframe, track = data
        if DESCRIBED[track] == Lane.VIDEO and track not in started:
            if not keyframe:
                continue
            started.add(track)
        out.setdefault(track, []).append(message)
    return out


def _messages(wire: bytes) -> dict[int, list[bytes]]:
    """The subscriber's whole messages so far, per track (lanes interleave; a track never reorders)."""
    out: dict[int, list[bytes]] = {}
    partial: dict[int, bytearray] = {}
    for frame in reference.FrameDecoder(max_frame_bytes=MAX_FRAME).decode(wire):
        buf = partial.setdefault(frame.track, bytearray())
        buf += frame.wire
        if frame.end:
            out.setdefault(frame.track, []).append(bytes(buf))
            del partial[frame.track]
    return out

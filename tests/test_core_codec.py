"""The frame codec, reassembly and send queue of whichever core is selected.

``pinkrelay._core`` picks the compiled core unless PINKRELAY_PUREPYTHON=1, so
`make test` runs this file once against each. Expectations are computed here
from ``wire.py`` (struct layout, tables), not from either core.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import random
import socket
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinkrelay._core import (
    DROPPED,
    OVERFLOW,
    QUEUED,
    FrameDecoder,
    Reassembler,
    SendQueue,
    deliver,
    encode_frame,
    encode_media,
)
from pinkrelay._core.wire import HEADER, HEADER_SIZE, TYPE_LANE, Flag, FrameType, Limits
from pinkrelay.errors import FrameError, LimitExceeded, ProtocolError

KEY = int(Flag.KEYFRAME)
END = int(Flag.END)
MEDIA = int(FrameType.MEDIA)
CONTROL_TYPES = sorted(int(t) for t in TYPE_LANE)

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def header(type_, flags, lane, track, seq, timestamp, length, magic=b"PR", version=1):
    return HEADER.pack(magic, version, type_, flags, lane, track, seq, timestamp, length)


def control(type_, seq=1, payload=b"\x80", timestamp=0):
    return encode_frame(type_, int(TYPE_LANE[type_]), 0, seq, timestamp, payload)


def decode_all(data, cuts=(), **limits):
    decoder = FrameDecoder(**limits)
    frames = []
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    for start, stop in itertools.pairwise(bounds):
        frames += decoder.decode(data[start:stop])
    return decoder, frames


# -- strategies -----------------------------------------------------------------

seqs = st.integers(0, 0xFFFFFFFF)
timestamps = st.integers(-(2**63), 2**63 - 1)


@st.composite
def control_frames(draw):
    type_ = draw(st.sampled_from(CONTROL_TYPES))
    payload = draw(st.binary(max_size=600))
    return ("control", type_, int(TYPE_LANE[type_]), draw(seqs), draw(timestamps), payload)


@st.composite
def media_messages(draw):
    size = draw(st.integers(0, 6000))
    payload = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    return (
        "media",
        draw(st.integers(1, 4)),  # track
        draw(st.sampled_from([2, 3])),  # lane
        draw(seqs),
        draw(timestamps),
        payload,
        draw(st.booleans()),  # keyframe
        draw(st.integers(max(1, size // 40), 3000)),  # chunk size: at most ~40 chunks
    )


def expected_frames(item):
    """(type, flags, lane, track, seq, timestamp, wire) of every frame, from wire.py alone."""
    if item[0] == "control":
        _, type_, lane, seq, ts, payload = item
        return [
            (
                type_,
                END,
                lane,
                0,
                seq,
                ts,
                header(type_, END, lane, 0, seq, ts, len(payload)) + payload,
            )
        ]
    _, track, lane, seq, ts, payload, keyframe, chunk = item
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    out = []
    for i, piece in enumerate(pieces):
        flags = (KEY if keyframe else 0) | (END if i == len(pieces) - 1 else 0)
        out.append(
            (
                MEDIA,
                flags,
                lane,
                track,
                seq,
                ts,
                header(MEDIA, flags, lane, track, seq, ts, len(piece)) + piece,
            )
        )
    return out


def encode_item(item):
    if item[0] == "control":
        _, type_, lane, seq, ts, payload = item
        return [encode_frame(type_, lane, 0, seq, ts, payload)]
    _, track, lane, seq, ts, payload, keyframe, chunk = item
    return encode_media(track, lane, seq, ts, payload, keyframe=keyframe, chunk_size=chunk)


# -- round trips ----------------------------------------------------------------


@SETTINGS
@given(
    items=st.lists(st.one_of(control_frames(), media_messages()), max_size=8),
    cuts=st.lists(st.integers(0, 60000), max_size=12),
)
def test_encode_then_decode_at_any_split(items, cuts):
    wires = []
    want = []
    for item in items:
        encoded = encode_item(item)
        expected = expected_frames(item)
        assert encoded == [e[-1] for e in expected]
        wires += encoded
        want += expected
    stream = b"".join(wires)
    decoder, frames = decode_all(stream, cuts)
    assert [f.as_tuple() for f in frames] == want
    assert decoder.buffered == 0
    assert decoder.frames_decoded == len(want)
    assert decoder.bytes_received == len(stream)
    for frame, expected in zip(frames, want):
        assert bytes(frame.payload) == expected[-1][HEADER_SIZE:]
        assert frame.keyframe == bool(expected[1] & KEY)
        assert frame.end == bool(expected[1] & END)
    # feed() + next_frame(): one byte at a time for a short stream, else at the cuts.
    decoder = FrameDecoder()
    got = []
    step = 1 if len(stream) < 300 else 997
    for start in range(0, len(stream), step):
        decoder.feed(stream[start : start + step])
        while (frame := decoder.next_frame()) is not None:
            got.append(frame.as_tuple())
    assert got == want
    assert decoder.next_frame() is None


@SETTINGS
@given(
    messages=st.lists(media_messages(), max_size=8),
    controls=st.lists(control_frames(), max_size=4),
    seed=st.integers(0, 2**32),
)
def test_reassembly_with_interleaved_tracks_and_control(messages, controls, seed):
    """Chunks of different tracks and control frames may sit between a message's chunks."""
    rng = random.Random(seed)
    per_track = {}
    for item in messages:
        per_track.setdefault(item[1], []).append(item)
    queues = [[w for item in items for w in encode_item(item)] for items in per_track.values()]
    queues.append([encode_item(c)[0] for c in controls])
    stream = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        stream.append(q.pop(0))
    _, frames = decode_all(b"".join(stream), [rng.randrange(1, 40000) for _ in range(5)])
    reassembler = Reassembler()
    got = {}
    for frame in frames:
        if frame.type == MEDIA:
            message = reassembler.add(frame)
            if message is not None:
                got.setdefault(message.track, []).append(message)
    assert reassembler.partial_tracks == 0
    for track, items in per_track.items():
        assert [m.payload() for m in got[track]] == [item[5] for item in items]
        for message, item in zip(got[track], items):
            _, _, lane, seq, ts, payload, keyframe, _ = item
            assert (message.lane, message.seq, message.timestamp, message.keyframe) == (
                lane,
                seq,
                ts,
                keyframe,
            )
            assert message.size == len(payload)
            assert message.chunks == tuple(encode_item(item))
            assert message.wire_size == sum(len(c) for c in message.chunks)
    assert set(got) == set(per_track)


def test_encode_media_accepts_any_buffer_and_empty_payload():
    data = bytearray(b"abcdefgh")
    for payload in (bytes(data), data, memoryview(data)):
        chunks = encode_media(7, 2, 3, 4, payload, chunk_size=3)
        assert [c[HEADER_SIZE:] for c in chunks] == [b"abc", b"def", b"gh"]
        assert [c[4] for c in chunks] == [0, 0, END]
    (only,) = encode_media(7, 2, 3, 4, b"", keyframe=True)
    assert only == header(MEDIA, KEY | END, 2, 7, 3, 4, 0)
    assert (
        encode_frame(0x07, 1, 0, 1, 2, memoryview(b"xyz"))
        == header(0x07, END, 1, 0, 1, 2, 3) + b"xyz"
    )


# -- encoder refusals -----------------------------------------------------------


@pytest.mark.parametrize(
    "call, cls, words",
    [
        (lambda: encode_media(-1, 2, 0, 0, b"x"), FrameError, "track -1 out of range 0..4194303"),
        (
            lambda: encode_media(4194304, 2, 0, 0, b"x"),
            FrameError,
            "track 4194304 out of range 0..4194303",
        ),
        (
            lambda: encode_media(1, 2, -1, 0, b"x"),
            FrameError,
            "sequence -1 out of range 0..4294967295",
        ),
        (
            lambda: encode_media(1, 2, 2**32, 0, b"x"),
            FrameError,
            "sequence 4294967296 out of range",
        ),
        (lambda: encode_media(0, 2, 0, 0, b"x"), FrameError, "media frame on track 0"),
        (lambda: encode_media(1, 1, 0, 0, b"x"), FrameError, "media frame in lane 1"),
        (
            lambda: encode_media(1, 2, 0, 0, b"x", chunk_size=0),
            ValueError,
            "chunk_size must be at least 1, not 0",
        ),
        (
            lambda: encode_frame(0x10, 1, 0, 0, 0, b""),
            FrameError,
            "frame type 0x10 in lane 1; it belongs in lane 0",
        ),
        (lambda: encode_frame(0x07, 1, 3, 0, 0, b""), FrameError, "frame type 0x07 on track 3"),
        (
            lambda: encode_frame(0x07, 1, 0, 0, 0, b"", flags=0),
            FrameError,
            "frame type 0x07 has flags 0x00",
        ),
        (lambda: encode_frame(0x99, 1, 0, 0, 0, b""), FrameError, "unknown frame type 0x99"),
        (
            lambda: encode_frame(MEDIA, 2, 1, 0, 0, b"", flags=0x10),
            FrameError,
            "reserved flag bits 0x10",
        ),
        (
            lambda: encode_frame(MEDIA, 2, 2**22, 0, 0, b""),
            FrameError,
            "track 4194304 out of range 0..4194303",
        ),
        (
            lambda: encode_frame(0x07, 1, 0, 2**32, 0, b""),
            FrameError,
            "sequence 4294967296 out of range",
        ),
        (
            lambda: encode_frame(0x07, 1, 0, 0, 2**63, b""),
            FrameError,
            "timestamp 9223372036854775808 out of range -9223372036854775808..9223372036854775807",
        ),
        (
            lambda: encode_media(1, 3, 0, -(2**63) - 1, b"x"),
            FrameError,
            "timestamp -9223372036854775809 out of range",
        ),
        (
            lambda: encode_frame(2**40, 1, 0, 0, 0, b""),
            FrameError,
            "unknown frame type 0x10000000000",
        ),
        (
            lambda: encode_media(2**40, 3, 0, 0, b"x"),
            FrameError,
            "track 1099511627776 out of range 0..4194303",
        ),
        (
            lambda: encode_media(1, 2**40, 0, 0, b"x"),
            FrameError,
            "media frame in lane 1099511627776",
        ),
    ],
)
def test_encoder_refuses_bad_fields(call, cls, words):
    with pytest.raises(cls) as info:
        call()
    assert words in str(info.value)


# -- protocol v2: track ids above 65535 (protocol.md §2.5) -------------------------


@pytest.mark.parametrize("track", [65536, 70000, 0x3FFFFF])
def test_a_wide_track_travels_in_a_version_2_header_and_decodes_back(track):
    frames = encode_media(track, 3, 9, 123, b"k" * 700, keyframe=True, chunk_size=256)
    assert all(frame[2] == 2 and frame[5] & 3 == 3 and frame[5] >> 2 == track >> 16 for frame in frames)
    decoded = FrameDecoder().decode(b"".join(frames))
    assert [(f.track, f.lane, f.keyframe) for f in decoded] == [(track, 3, True)] * 3
    assert encode_frame(MEDIA, 2, track, 1, 0, b"a")[2] == 2


def test_tracks_up_to_65535_and_control_frames_keep_version_1_byte_for_byte():
    assert encode_media(65535, 3, 1, 2, b"x")[0][:8] == bytes.fromhex("5052014002 03ffff".replace(" ", ""))
    assert encode_frame(0x07, 1, 0, 0, 0, b"")[2] == 1


def test_a_version_2_header_with_a_bad_lane_or_a_v1_header_with_high_lane_bits_is_refused():
    with pytest.raises(FrameError, match="lane"):
        FrameDecoder().decode(header(MEDIA, END, 1 | (1 << 2), 5, 0, 0, 0, version=2))  # lane 1 for media
    with pytest.raises(FrameError):
        FrameDecoder().decode(header(MEDIA, END, 3 | (1 << 2), 5, 0, 0, 0, version=1))


# -- decoder refusals -----------------------------------------------------------

BAD_HEADERS = [
    # (bytes, class, words that must appear in the message)
    (b"PY" + bytes(22), FrameError, ["bad magic 5059", "expected 5052"]),
    (b"X", FrameError, ["bad magic 58"]),
    (
        header(0x07, END, 1, 0, 0, 0, 0, version=3),
        FrameError,
        ["unsupported protocol version 3", "speaks 1 and 2"],
    ),
    (b"PR\x00", FrameError, ["unsupported protocol version 0"]),
    (header(0x99, END, 1, 0, 0, 0, 0), FrameError, ["unknown frame type 0x99"]),
    (b"PR\x01\x00", FrameError, ["unknown frame type 0x00"]),
    (
        header(MEDIA, 0x05, 2, 1, 0, 0, 0),
        FrameError,
        ["reserved flag bits 0x04", "frame type 0x40"],
    ),
    (
        header(0x10, END, 1, 0, 0, 0, 0),
        FrameError,
        ["frame type 0x10 in lane 1", "belongs in lane 0"],
    ),
    (
        header(0x07, END, 0, 0, 0, 0, 0),
        FrameError,
        ["frame type 0x07 in lane 0", "belongs in lane 1"],
    ),
    (
        header(MEDIA, END, 0, 1, 0, 0, 0),
        FrameError,
        ["media frame in lane 0", "lane 2 (audio) or 3 (video)"],
    ),
    (header(MEDIA, END, 4, 1, 0, 0, 0), FrameError, ["media frame in lane 4"]),
    (header(MEDIA, END, 3, 0, 0, 0, 0), FrameError, ["media frame on track 0"]),
    (
        header(0x07, KEY | END, 1, 0, 0, 0, 0),
        FrameError,
        ["frame type 0x07 has flags 0x03", "exactly the END flag"],
    ),
    (header(0x07, 0, 1, 0, 0, 0, 0), FrameError, ["frame type 0x07 has flags 0x00"]),
    (
        header(0x07, END, 1, 9, 0, 0, 0),
        FrameError,
        ["frame type 0x07 on track 9", "control frames use track 0"],
    ),
    (
        header(MEDIA, END, 3, 5, 0, 0, 0xFFFFFFFF),
        LimitExceeded,
        ["frame length 4294967295 exceeds max_frame_bytes 65536 (track 5)"],
    ),
    (
        header(MEDIA, END, 3, 5, 0, 0, 65537),
        LimitExceeded,
        ["frame length 65537 exceeds max_frame_bytes 65536"],
    ),
    (
        header(0x10, END, 0, 0, 0, 0, 16385),
        LimitExceeded,
        ["control frame type 0x10 length 16385 exceeds max_control_bytes 16384"],
    ),
    (
        header(0x07, END, 1, 0, 0, 0, 0xFFFFFFFF),
        LimitExceeded,
        ["control frame type 0x07 length 4294967295 exceeds max_control_bytes 16384"],
    ),
]


@pytest.mark.parametrize("data, cls, words", BAD_HEADERS)
@pytest.mark.parametrize("how", ["decode", "feed", "bytewise", "after-frame"])
def test_decoder_refuses_bad_headers(data, cls, words, how):
    decoder = FrameDecoder()
    good = control(0x07, seq=42)
    if how == "decode":
        with pytest.raises(cls) as info:
            decoder.decode(data)
    elif how == "feed":
        decoder.feed(data)
        with pytest.raises(cls) as info:
            decoder.next_frame()
    elif how == "bytewise":
        with pytest.raises(cls) as info:
            for i in range(len(data)):
                assert decoder.decode(data[i : i + 1]) == []
    else:
        # A valid frame before the bad one comes out first; the error follows.
        frames = decoder.decode(good + data)
        assert [f.wire for f in frames] == [good]
        assert isinstance(decoder.error, cls)
        with pytest.raises(cls) as info:
            decoder.decode(b"")
        assert info.value is decoder.error
    error = info.value
    assert type(error) is cls
    assert isinstance(error, ProtocolError) and isinstance(error, ValueError)
    for word in words:
        assert word in str(error), str(error)
    assert decoder.error is error
    # Dead for good: every later call raises the same error, whatever comes next.
    for later in (lambda: decoder.decode(good), lambda: decoder.feed(good), decoder.next_frame):
        with pytest.raises(cls) as again:
            later()
        assert again.value is error
    assert decoder.buffered <= HEADER_SIZE


def test_lying_length_is_refused_before_anything_is_allocated():
    lie = header(MEDIA, END, 3, 1, 0, 0, 0xFFFFFFFF)
    tracemalloc.start()
    try:
        decoder = FrameDecoder()
        with pytest.raises(LimitExceeded) as info:
            decoder.decode(lie + b"\x00" * 100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "4294967295" in str(info.value) and "65536" in str(info.value)
    assert peak < 1 << 20
    assert decoder.buffered <= len(lie) + 100
    # Also when the lying header arrives in pieces after some buffered data.
    decoder = FrameDecoder(max_frame_bytes=1 << 30)
    decoder.decode(header(MEDIA, END, 3, 1, 0, 0, 5))
    assert decoder.buffered == HEADER_SIZE
    assert len(decoder.decode(b"12345")) == 1
    decoder2 = FrameDecoder()
    assert decoder2.decode(lie[:10]) == []
    with pytest.raises(LimitExceeded):
        decoder2.decode(lie[10:])
    assert decoder2.buffered <= HEADER_SIZE


def test_limits_are_inclusive_and_configurable():
    media_ok = encode_media(2, 3, 1, 0, bytes(1000), chunk_size=1000)[0]
    control_ok = control(0x07, payload=bytes(100))
    _, frames = decode_all(media_ok + control_ok, max_frame_bytes=1000, max_control_bytes=100)
    assert [f.wire for f in frames] == [media_ok, control_ok]
    with pytest.raises(
        LimitExceeded, match="frame length 1000 exceeds max_frame_bytes 999 \\(track 2\\)"
    ):
        decode_all(media_ok, max_frame_bytes=999)
    with pytest.raises(
        LimitExceeded, match="control frame type 0x07 length 100 exceeds max_control_bytes 99"
    ):
        decode_all(control_ok, max_control_bytes=99)
    # Defaults: exactly the limit is fine.
    big = encode_media(1, 3, 0, 0, bytes(Limits.MAX_FRAME_BYTES), chunk_size=Limits.MAX_FRAME_BYTES)
    assert len(big) == 1
    assert decode_all(big[0], [1, 30000])[1][0].wire == big[0]
    biggest_control = control(0x10, payload=bytes(Limits.MAX_CONTROL_BYTES))
    assert decode_all(biggest_control)[1][0].wire == biggest_control


def test_error_after_several_frames_keeps_every_valid_frame():
    good = [control(0x07, seq=i) for i in range(3)] + encode_media(
        1, 2, 9, 0, b"abcdef", chunk_size=2
    )
    bad = header(0x07, END, 1, 0, 0, 0, 0, version=9)
    decoder = FrameDecoder()
    assert decoder.decode(b"".join(good[:2]) + good[2][:5]) != []
    frames = decoder.decode(good[2][5:] + b"".join(good[3:]) + bad + b"more")
    assert [f.wire for f in frames] == good[2:]
    assert decoder.frames_decoded == len(good)
    assert "unsupported protocol version 9" in str(decoder.error)
    with pytest.raises(FrameError) as info:
        decoder.decode(b"")
    assert info.value is decoder.error


# -- reassembly refusals --------------------------------------------------------


def frame_of(wire_bytes):
    (frame,) = FrameDecoder().decode(wire_bytes)
    return frame


def media_frame(track=1, lane=3, seq=1, ts=0, payload=b"x", flags=0):
    return frame_of(encode_frame(MEDIA, lane, track, seq, ts, payload, flags=flags))


@pytest.mark.parametrize(
    "second, words",
    [
        ({"seq": 2}, "message seq 1 on track 1 interrupted by a chunk of seq 2"),
        ({"ts": 5}, "(timestamp 5, lane 3, keyframe False)"),
        ({"lane": 2}, "(timestamp 0, lane 2, keyframe False)"),
        ({"flags": KEY}, "(timestamp 0, lane 3, keyframe True)"),
    ],
)
def test_reassembler_refuses_interrupted_message(second, words):
    reassembler = Reassembler()
    assert reassembler.add(media_frame()) is None
    with pytest.raises(FrameError) as info:
        reassembler.add(media_frame(**second))
    assert words in str(info.value)
    assert "before its END chunk" in str(info.value)


def test_reassembler_limits():
    # Too many chunks: the limit is inclusive.
    reassembler = Reassembler(max_chunks_per_message=4)
    chunks = [frame_of(w) for w in encode_media(3, 2, 8, 0, b"abcde", chunk_size=1)]
    for frame in chunks[:4]:
        assert reassembler.add(frame) is None
    with pytest.raises(LimitExceeded) as info:
        reassembler.add(chunks[4])
    assert str(info.value).startswith("message seq 8 on track 3 exceeds max_chunks_per_message 4")
    message = Reassembler(max_chunks_per_message=5)
    for frame in chunks:
        done = message.add(frame)
    assert done.payload() == b"abcde" and len(done.chunks) == 5
    # Too big, across chunks and in a single chunk.
    reassembler = Reassembler(max_message_bytes=1000)
    parts = [frame_of(w) for w in encode_media(1, 3, 4, 0, bytes(1001), chunk_size=600)]
    reassembler.add(parts[0])
    with pytest.raises(LimitExceeded) as info:
        reassembler.add(parts[1])
    assert "message seq 4 on track 1 reached 1001 bytes, above max_message_bytes 1000" in str(
        info.value
    )
    with pytest.raises(LimitExceeded, match="reached 1001 bytes, above max_message_bytes 1000"):
        Reassembler(max_message_bytes=1000).add(media_frame(payload=bytes(1001), flags=END))
    assert (
        Reassembler(max_message_bytes=1000).add(media_frame(payload=bytes(1000), flags=END)).size
        == 1000
    )
    # Too many half-received tracks.
    reassembler = Reassembler(max_partial_tracks=2)
    reassembler.add(media_frame(track=1))
    reassembler.add(media_frame(track=2))
    assert reassembler.partial_tracks == 2
    with pytest.raises(LimitExceeded, match="more than 2 tracks with a half-received message"):
        reassembler.add(media_frame(track=3))
    # A whole single-chunk message on a third track needs no partial slot.
    assert reassembler.add(media_frame(track=3, flags=END)).track == 3
    reassembler.discard(1)
    assert reassembler.partial_tracks == 1
    assert reassembler.add(media_frame(track=3)) is None


# -- send queue -----------------------------------------------------------------


def drain(queue, step=None):
    out = bytearray()
    while not queue.empty:
        buffers = queue.peek()
        data = b"".join(bytes(b) for b in buffers)
        n = len(data) if step is None else min(step, len(data))
        out += data[:n]
        queue.consume(n)
    assert queue.pending_bytes == 0
    return bytes(out)


def test_send_queue_alert_overtakes_everything_not_begun():
    queue = SendQueue()
    video = encode_media(1, 3, 1, 0, bytes(50000), keyframe=True, chunk_size=10000)
    assert queue.push(3, video, track=1, keyframe=True) == QUEUED
    audio = encode_media(2, 2, 1, 0, bytes(300))
    assert queue.push(2, audio, track=2) == QUEUED
    assert queue.pending_bytes == sum(map(len, video + audio))
    first = bytes(queue.peek()[0])
    assert first == audio[0]  # audio outranks video
    queue.consume(len(audio[0]) + 100)  # 100 bytes into the first video chunk
    alert = control(0x10, seq=77)
    assert queue.push(0, [alert]) == QUEUED
    rest = drain(queue, step=333)
    # Only the rest of the video chunk already begun goes before the alert.
    assert rest[: len(video[0]) - 100] == video[0][100:]
    assert rest[len(video[0]) - 100 :].startswith(alert)
    assert queue.bytes_sent == sum(map(len, video + audio)) + len(alert)
    with pytest.raises(ValueError, match="consume\\(\\) of more bytes than were queued"):
        queue.consume(1)


def test_send_queue_flood_of_alerts_still_lets_video_through():
    queue = SendQueue()
    video = encode_media(1, 3, 1, 0, bytes(100), keyframe=True, chunk_size=10)
    queue.push(3, video, track=1, keyframe=True)
    for i in range(150):
        queue.push(0, [control(0x10, seq=i)])
    _, frames = decode_all(drain(queue))
    lanes = [f.lane for f in frames]
    assert (
        lanes[:64] == [0] * 64 and lanes[64] == 3 and lanes[65:129] == [0] * 64 and lanes[129] == 3
    )


def test_send_queue_control_overflow_enqueues_nothing():
    queue = SendQueue(max_control_bytes=100)
    frame = control(0x07, payload=bytes(40))  # 64 bytes on the wire
    assert queue.push(1, [frame]) == QUEUED
    before = (queue.pending_bytes, [bytes(b) for b in queue.peek()])
    assert queue.push(0, [control(0x10, payload=bytes(40))]) == OVERFLOW
    assert (queue.pending_bytes, [bytes(b) for b in queue.peek()]) == before
    assert queue.push(0, [control(0x10, payload=bytes(12))]) == QUEUED  # exactly 100
    assert queue.pending_bytes == 100
    with pytest.raises(ValueError, match="lane 4 out of range 0..3"):
        queue.push(4, [frame])


def test_send_queue_video_drops_until_keyframe():
    queue = SendQueue(max_video_bytes=3100, max_video_age=1.0)  # three 1024-byte messages fit

    def vid(track, seq, key, size=1000):
        return encode_media(track, 3, seq, 0, bytes(size), keyframe=key)

    assert queue.push(3, vid(1, 0, True), track=1, keyframe=True, now=0.0) == QUEUED
    assert queue.push(3, vid(1, 1, False), track=1, now=0.1) == QUEUED
    assert queue.push(3, vid(2, 0, True), track=2, keyframe=True, now=0.1) == QUEUED
    # Over max_video_bytes: every message not begun is dropped, both tracks wait.
    assert queue.push(3, vid(1, 2, False), track=1, now=0.2) == DROPPED
    assert queue.dropped_video == 4
    assert queue.empty and queue.waiting_for_keyframe(1) and queue.waiting_for_keyframe(2)
    assert queue.push(3, vid(2, 1, False, 10), track=2, now=0.3) == DROPPED
    assert queue.push(3, vid(2, 2, True, 10), track=2, keyframe=True, now=0.3) == QUEUED
    assert not queue.waiting_for_keyframe(2) and queue.waiting_for_keyframe(1)
    assert queue.push(3, vid(1, 3, True, 10), track=1, keyframe=True, now=0.3) == QUEUED
    # Too old: the head waited more than max_video_age.
    head = bytes(queue.peek()[0])[:10]
    queue.consume(10)  # begin track 2's keyframe: it survives the next drop
    assert queue.push(3, vid(2, 3, False, 10), track=2, now=1.5) == DROPPED
    assert queue.oldest_age(2.0) == pytest.approx(1.7)
    assert queue.dropped_video == 5 + 2
    _, frames = decode_all(head + drain(queue))
    assert [(f.track, f.seq, f.keyframe) for f in frames] == [(2, 2, True)]


def test_send_queue_audio_drops_oldest():
    queue = SendQueue(max_audio_bytes=1000)
    frames = [encode_media(1, 2, i, i, bytes(276)) for i in range(5)]  # 300 bytes each
    results = [queue.push(2, f, track=1, now=i) for i, f in enumerate(frames)]
    assert results == [QUEUED] * 5
    assert queue.dropped_audio == 2 and queue.lane_bytes(2) == 900
    _, got = decode_all(drain(queue))
    assert [f.seq for f in got] == [2, 3, 4]


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda q: q.push(1, []), "a message needs at least one chunk"),
        (lambda q: q.push(3, (), track=1, keyframe=True), "a message needs at least one chunk"),
        (lambda q: q.push(1, [b""]), "chunk 0 of the message is empty"),
        (lambda q: q.push(2, [b"x" * 30, b""], track=1), "chunk 1 of the message is empty"),
        (lambda q: q.push(4, [b"x" * 30]), "lane 4 out of range 0..3"),
        (lambda q: q.lane_bytes(-1), "lane -1 out of range 0..3"),
        (lambda q: q.lane_bytes(4), "lane 4 out of range 0..3"),
        (lambda q: deliver([], 7, [b"x" * 30]), "lane 7 out of range 0..3"),
        (lambda q: deliver([q], 0, []), "a message needs at least one chunk"),
    ],
)
def test_send_queue_refuses_bad_input(call, words):
    queue = SendQueue()
    with pytest.raises(ValueError) as info:
        call(queue)
    assert str(info.value) == words
    assert queue.empty and queue.pending_bytes == 0 and queue.peek() == []
    assert queue.write_to(-1) == 0


def test_peek_shows_more_than_one_write_batch_when_asked():
    queue = SendQueue()
    for i in range(120):
        queue.push(0, [control(0x10, seq=i)])
    assert len(queue.peek()) == 64
    assert [bytes(b) for b in queue.peek(100, 1 << 20)] == [
        control(0x10, seq=i) for i in range(100)
    ]
    assert len(queue.peek(500, 1 << 20)) == 120


def _socketpair(sndbuf=4096):
    writer, reader = socket.socketpair()
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    writer.setblocking(False)
    reader.setblocking(False)
    return writer, reader


def _read_available(sock):
    data = bytearray()
    while True:
        try:
            piece = sock.recv(1 << 16)
        except BlockingIOError:
            return bytes(data)
        if not piece:
            return bytes(data)
        data += piece


def test_write_to_socket_until_full_then_resume():
    writer, reader = _socketpair()
    with writer, reader:
        queue = SendQueue(writer.fileno())
        sent = []
        for i in range(20):
            chunks = encode_media(1, 3, i, i, bytes([i]) * 5000, keyframe=True, chunk_size=1500)
            assert queue.push(3, chunks, track=1, keyframe=True) == QUEUED
            sent += chunks
        alert = control(0x10, seq=5)
        received = bytearray()
        written = queue.write_to()
        assert 0 < written < sum(map(len, sent))  # socket full: EAGAIN, not an exception
        assert not queue.empty
        queue.push(0, [alert])
        rounds = 0
        while not queue.empty:
            received += _read_available(reader)
            queue.write_to()
            rounds += 1
            assert rounds < 10000
        received += _read_available(reader)
        assert queue.bytes_sent == len(received) == sum(map(len, sent)) + len(alert)
        _, frames = decode_all(bytes(received))
        wires = [f.wire for f in frames]
        assert sorted(wires) == sorted(sent + [alert])
        assert [w for w in wires if w != alert] == sent
        # The alert overtook every chunk that had not begun when it was pushed.
        assert wires.index(alert) <= wires.index(sent[-1])


def test_deliver_fans_out_and_reports_blocked_and_broken_peers():
    pairs = [_socketpair() for _ in range(4)]
    try:
        queues = [SendQueue(w.fileno()) for w, _ in pairs]
        pairs[3][1].close()  # this peer is gone
        audio = encode_media(5, 2, 1, 1000, bytes(200))
        attention = deliver(queues, 2, audio, track=5)
        assert attention == [queues[3]]
        assert isinstance(queues[3].error, (BrokenPipeError, ConnectionResetError))
        assert queues[3].error.errno in (errno.EPIPE, errno.ECONNRESET)
        for (_, reader), queue in zip(pairs[:3], queues[:3]):
            assert _read_available(reader) == audio[0]
            assert queue.empty and not queue.blocked and queue.error is None
        # Reader 2 stops reading: its queue blocks and asks for attention once.
        blocked_at = None
        for i in range(2, 200):
            chunks = encode_media(5, 3, i, i, bytes(3000), keyframe=True)
            attention = deliver(queues[:3], 3, chunks, track=5, keyframe=True)
            _read_available(pairs[0][1])
            _read_available(pairs[1][1])
            if attention:
                assert attention == [queues[2]] and queues[2].blocked
                blocked_at = i
                break
        assert blocked_at is not None
        assert deliver(queues[:3], 0, [control(0x10, seq=1)]) == []
        assert _read_available(pairs[0][1]) == control(0x10, seq=1)
        assert not queues[2].empty and queues[2].error is None
    finally:
        for w, r in pairs:
            w.close()
            r.close()


def test_queue_many_messages_then_write_each_subscriber_once():
    """deliver(write=False) then flush(): several messages leave in one write per subscriber."""
    import socket

    from pinkrelay._core import FrameDecoder, SendQueue, deliver, encode_media, flush

    pairs = [socket.socketpair() for _ in range(3)]
    try:
        queues = []
        for writer, _ in pairs:
            writer.setblocking(False)
            queues.append(SendQueue(fd=writer.fileno()))
        messages = [encode_media(5, 3, seq, 1000 + seq, bytes([seq]) * 900, keyframe=seq == 0) for seq in range(4)]
        for chunks in messages:
            assert deliver(queues, 3, chunks, 5, False, 0.0, False) == []
        assert all(q.pending_bytes == sum(len(c[0]) for c in messages) for q in queues)
        assert flush(queues + queues) == []  # a repeated queue costs nothing
        for queue, (_, reader) in zip(queues, pairs, strict=True):
            assert queue.empty and queue.bytes_sent == sum(len(c[0]) for c in messages)
            frames = FrameDecoder().decode(reader.recv(1 << 16))
            assert [f.seq for f in frames] == [0, 1, 2, 3]
    finally:
        for writer, reader in pairs:
            writer.close()
            reader.close()


def test_overflow_is_flagged_on_the_queue():
    from pinkrelay._core import OVERFLOW, SendQueue, deliver, encode_frame

    queue = SendQueue(max_control_bytes=1000)
    alert = encode_frame(0x10, 0, 0, 1, 0, b"x" * 600)
    assert queue.push(0, [alert]) != OVERFLOW and not queue.overflowed
    assert deliver([queue], 0, [alert]) == [queue]
    assert queue.overflowed


def test_a_subscriber_told_to_wait_gets_video_from_the_next_keyframe():
    from pinkrelay._core import DROPPED, QUEUED, SendQueue, encode_media

    queue = SendQueue()
    queue.wait_for_keyframe(9)
    assert queue.waiting_for_keyframe(9)
    assert queue.push(3, encode_media(9, 3, 1, 0, b"p" * 100), 9, False, 0.0) == DROPPED
    assert queue.push(2, encode_media(10, 2, 1, 0, b"a" * 50), 10, False, 0.0) == QUEUED  # audio flows
    assert queue.push(3, encode_media(9, 3, 2, 0, b"k" * 100, keyframe=True), 9, True, 0.0) == QUEUED
    assert queue.push(3, encode_media(9, 3, 3, 0, b"p" * 100), 9, False, 0.0) == QUEUED
    assert not queue.waiting_for_keyframe(9)


# -- Fanout: rounds, bounded slices, audio riding with video ---------------------------------


def _message(track, lane, seq, payload, keyframe=False):
    from pinkrelay._core import Message

    chunks = tuple(encode_media(track, lane, seq, seq, payload, keyframe=keyframe))
    return Message(track, lane, seq, seq, keyframe, chunks, len(payload))


def _fanout_pairs(count, sndbuf=1 << 20):
    pairs = [_socketpair(sndbuf) for _ in range(count)]
    return pairs, [SendQueue(w.fileno()) for w, _ in pairs]


def _seqs(reader):
    return [(f.lane, f.seq) for f in FrameDecoder().decode(_read_available(reader))]


def test_fanout_writes_each_subscriber_once_per_round():
    from pinkrelay._core import Fanout

    pairs, queues = _fanout_pairs(3)
    try:
        fanout = Fanout()
        subscribers = tuple(queues)
        for seq in range(1, 5):
            fanout.add(subscribers, _message(8, 3, seq, bytes([seq]) * 700, keyframe=seq == 1))
        assert fanout.busy and fanout.pending == 4
        assert fanout.run(0.0) == []
        assert not fanout.busy and fanout.pending == 0
        assert (fanout.messages, fanout.deliveries, fanout.rounds, fanout.writes) == (4, 12, 1, 3)
        for _, reader in pairs:
            assert _seqs(reader) == [(3, 1), (3, 2), (3, 3), (3, 4)]
    finally:
        for w, r in pairs:
            w.close()
            r.close()


def test_fanout_audio_rides_with_the_next_video_frame_or_leaves_when_due():
    from pinkrelay._core import Fanout

    pairs, queues = _fanout_pairs(2)
    (_, first), (_, second) = pairs
    try:
        fanout = Fanout(audio_hold=0.035)
        both = tuple(queues)
        fanout.add(both, _message(9, 2, 1, b"a" * 200))
        fanout.run(1.000)
        assert _read_available(first) == b"" and fanout.writes == 0
        assert fanout.next_due == pytest.approx(1.035)
        # A video frame 20 ms later takes the waiting audio along: one write per subscriber.
        fanout.add(both, _message(8, 3, 1, b"v" * 3000, keyframe=True))
        fanout.run(1.020)
        assert fanout.writes == 2
        assert _seqs(first) == _seqs(second) == [(2, 1), (3, 1)]
        assert fanout.next_due == float("inf")  # it left: nothing to wake up for
        # Audio with no video to ride goes on its own once audio_hold has passed.
        fanout.add(both, _message(9, 2, 2, b"a" * 200))
        fanout.run(1.040)
        assert _read_available(first) == b"" and fanout.next_due == pytest.approx(1.075)
        fanout.run(1.074)
        assert _read_available(first) == b"" and fanout.writes == 2
        fanout.run(1.075)
        assert fanout.writes == 4 and fanout.next_due == float("inf")
        assert _seqs(first) == _seqs(second) == [(2, 2)]
        # Only a queue holding nothing but young audio waits; anything else is written.
        fanout.add(both[:1], _message(9, 2, 3, b"a" * 200))
        fanout.run(1.100)
        assert queues[0].audio_waits(1.100, 0.035) and not queues[0].audio_waits(1.135, 0.035)
        queues[0].push(1, [control(0x07, seq=5)])
        assert not queues[0].audio_waits(1.100, 0.035)
        fanout.add(both[:1], _message(8, 3, 2, b"v" * 100))
        fanout.run(1.101)
        assert _seqs(first) == [(1, 5), (2, 3), (3, 2)] and _seqs(second) == []
    finally:
        for w, r in pairs:
            w.close()
            r.close()


def test_fanout_without_audio_hold_sends_audio_at_once():
    from pinkrelay._core import Fanout

    pairs, queues = _fanout_pairs(1)
    try:
        fanout = Fanout(audio_hold=0.0)
        fanout.add(tuple(queues), _message(9, 2, 1, b"a" * 200))
        fanout.run(0.0)
        assert _seqs(pairs[0][1]) == [(2, 1)] and fanout.next_due == float("inf")
    finally:
        pairs[0][0].close()
        pairs[0][1].close()


def test_fanout_slices_stop_at_the_socket_and_byte_bounds():
    from pinkrelay._core import Fanout

    pairs, queues = _fanout_pairs(5)
    try:
        fanout = Fanout(slice_sockets=2, slice_bytes=10**9)
        fanout.add(tuple(queues), _message(8, 3, 1, b"v" * 1000, keyframe=True))
        written = []
        while fanout.busy:
            fanout.run(0.0)
            written.append(sum(1 for _, r in pairs if _read_available(r)))
        assert written == [2, 2, 1]
        fanout = Fanout(slice_sockets=100, slice_bytes=1500)
        fanout.add(tuple(queues), _message(8, 3, 2, b"v" * 1000))
        fanout.run(0.0)
        assert sum(1 for _, r in pairs if _read_available(r)) == 2  # 1024 + 1024 bytes >= 1500
        assert fanout.busy
    finally:
        for w, r in pairs:
            w.close()
            r.close()


def test_fanout_reports_blocked_broken_and_overflowed_subscribers():
    from pinkrelay._core import Fanout

    pairs, queues = _fanout_pairs(3, sndbuf=4096)
    try:
        pairs[2][1].close()  # gone
        overflowing = SendQueue(max_control_bytes=300)
        overflowing.push(1, [control(0x07, payload=b"x" * 250)])
        fanout = Fanout()
        from pinkrelay._core import Message

        control_message = Message(0, 1, 1, 0, False, (control(0x07, payload=b"y" * 100),), 100)
        fanout.add((overflowing,), control_message)
        assert fanout.run(0.0) == [overflowing] and overflowing.overflowed
        for seq in range(1, 40):
            fanout.add(tuple(queues), _message(8, 3, seq, b"v" * 3000, keyframe=True))
        attention = fanout.run(0.0)
        assert queues[2] in attention and isinstance(queues[2].error, OSError)
        assert queues[1] in attention and queues[1].blocked and queues[1].error is None
        assert queues[0].blocked  # nobody reads either: both fill up, both reported
    finally:
        for w, r in pairs:
            w.close()
            with contextlib.suppress(OSError):
                r.close()


def test_fanout_refuses_bad_settings():
    from pinkrelay._core import Fanout

    for kwargs in ({"audio_hold": -0.001}, {"audio_hold": float("nan")}, {"slice_sockets": 0},
                   {"slice_bytes": 0}, {"round_pushes": 0}):
        with pytest.raises(ValueError):
            Fanout(**kwargs)


def test_recv_some_reads_what_waits_says_none_when_nothing_and_empty_at_eof():
    from pinkrelay._core import recv_some

    writer, reader = socket.socketpair()
    try:
        reader.setblocking(False)
        assert recv_some(reader.fileno(), 4096) is None
        writer.sendall(b"x" * 100_000)
        first = recv_some(reader.fileno(), 1 << 20)
        assert first is not None and 0 < len(first) <= 64 * 1024  # capped at 64 KiB a call
        assert recv_some(reader.fileno(), 10) == b"x" * 10
        rest = bytearray()
        while (piece := recv_some(reader.fileno(), 4096)) is not None:
            rest += piece
        assert len(first) + 10 + len(rest) == 100_000
        writer.close()
        assert recv_some(reader.fileno(), 4096) == b""
        with pytest.raises(ValueError):
            recv_some(reader.fileno(), 0)
    finally:
        reader.close()
    with pytest.raises(OSError):
        recv_some(reader.fileno(), 4096)  # closed: fileno() is -1

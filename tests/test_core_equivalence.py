"""The compiled core and the reference behave identically (the reference is the spec).

Both modules are imported explicitly and fed the same inputs: frame sequences
split at arbitrary points, garbage and mutated streams, crafted bad headers,
random send-queue programs, and real sockets. Every observable result is
compared: frames, messages, exception class and message, ``buffered``,
queue state and the bytes written. Invariants of the scheduler (alert
priority, message order, drop-to-keyframe, control overflow) are checked on
the emitted byte stream.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import signal
import socket

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pinkrelay._core import reference as R
from pinkrelay._core.wire import (
    DROPPED,
    HEADER,
    HEADER_SIZE,
    LANE_WEIGHTS,
    OVERFLOW,
    QUEUED,
    TYPE_LANE,
    Flag,
    FrameType,
    Lane,
)
from pinkrelay.errors import FrameError, LimitExceeded, ProtocolError

from pinkrelay._core import _cpinkrelay as C  # noqa: E402 - a missing build fails, never skips

pytestmark = pytest.mark.compiled_only

CORES = (R, C)
KEY = int(Flag.KEYFRAME)
END = int(Flag.END)
MEDIA = int(FrameType.MEDIA)
CONTROL_TYPES = sorted(int(t) for t in TYPE_LANE)
ALERT_TYPES = sorted(int(t) for t, lane in TYPE_LANE.items() if lane == Lane.ALERT)
OTHER_CONTROL_TYPES = sorted(int(t) for t, lane in TYPE_LANE.items() if lane == Lane.CONTROL)

SETTINGS = settings(
    deadline=None,
    max_examples=80,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextlib.contextmanager
def time_limit(seconds):
    """Fail instead of hanging: a decoder must always return or raise."""

    def expired(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def header(type_, flags, lane, track, seq, timestamp, length, magic=b"PR", version=1):
    return HEADER.pack(magic, version, type_, flags, lane, track, seq, timestamp, length)


# -- strategies -----------------------------------------------------------------

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=25,
)


@st.composite
def control_items(draw):
    type_ = draw(st.sampled_from(CONTROL_TYPES))
    if draw(st.booleans()):
        payload = msgpack.packb(draw(msgpack_values))
    else:  # a few KB, e.g. a stream description or a big error text
        payload = msgpack.packb(
            {
                "blob": random.Random(draw(st.integers(0, 2**32))).randbytes(
                    draw(st.integers(0, 4000))
                )
            }
        )
    return (
        "control",
        type_,
        int(TYPE_LANE[type_]),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(-(2**63), 2**63 - 1)),
        payload,
    )


@st.composite
def media_items(draw, max_size=40000, tracks=(1, 6)):
    size = draw(st.integers(0, max_size))
    payload = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    chunk = draw(st.integers(max(1, math.ceil(size / 100)), 16384))
    return (
        "media",
        draw(st.integers(*tracks)),
        draw(st.sampled_from([int(Lane.AUDIO), int(Lane.VIDEO)])),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(-(2**63), 2**63 - 1)),
        payload,
        draw(st.booleans()),
        chunk,
    )


def encode_item(mod, item):
    if item[0] == "control":
        _, type_, lane, seq, ts, payload = item
        return [mod.encode_frame(type_, lane, 0, seq, ts, payload)]
    _, track, lane, seq, ts, payload, keyframe, chunk = item
    return mod.encode_media(track, lane, seq, ts, payload, keyframe=keyframe, chunk_size=chunk)


def expected_tuples(item):
    """What the decoder must return for ``item``, computed from wire.py alone."""
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


def split_bounds(length, cuts, bytewise_from=None, bytewise_count=0):
    points = {0, length}
    points.update(c for c in cuts if 0 < c < length)
    if bytewise_from is not None:
        points.update(
            range(min(bytewise_from, length), min(bytewise_from + bytewise_count, length))
        )
    return sorted(points)


# -- running a decoder and recording everything observable ----------------------


def signature(error):
    return None if error is None else (type(error), str(error))


def run_decode(mod, stream, bounds, **limits):
    """decode() at every piece: frames, or the error; ``buffered`` after each call."""
    decoder = mod.FrameDecoder(**limits)
    log = []
    for start, stop in itertools.pairwise(bounds):
        try:
            frames = decoder.decode(stream[start:stop])
        except ProtocolError as error:
            assert error is decoder.error
            log.append(("error", type(error), str(error), decoder.buffered))
        else:
            log.append(
                (
                    "frames",
                    [f.as_tuple() for f in frames],
                    decoder.buffered,
                    signature(decoder.error),
                )
            )
    log.append(
        (
            "end",
            decoder.frames_decoded,
            decoder.bytes_received,
            decoder.buffered,
            signature(decoder.error),
        )
    )
    return log


def run_feed(mod, stream, bounds, **limits):
    """feed() each piece, then next_frame() until it needs more bytes."""
    decoder = mod.FrameDecoder(**limits)
    log = []
    for start, stop in itertools.pairwise(bounds):
        try:
            decoder.feed(stream[start:stop])
        except ProtocolError as error:
            assert error is decoder.error
            log.append(("feed-error", type(error), str(error)))
            continue
        while True:
            try:
                frame = decoder.next_frame()
            except ProtocolError as error:
                assert error is decoder.error
                log.append(("error", type(error), str(error), decoder.buffered))
                break
            if frame is None:
                log.append(("more", decoder.buffered))
                break
            log.append(("frame", frame.as_tuple()))
    log.append(
        (
            "end",
            decoder.frames_decoded,
            decoder.bytes_received,
            decoder.buffered,
            signature(decoder.error),
        )
    )
    return log


def check_decode_log(log):
    """The documented contract of decode() on one core's log."""
    dead = None
    for i, entry in enumerate(log[:-1]):
        if dead is not None:
            assert entry[0] == "error" and (entry[1], entry[2]) == dead, "decoder came back to life"
            continue
        if entry[0] == "error":
            dead = (entry[1], entry[2])
        elif entry[3] is not None:
            # Frames came before the error: they are returned, the error waits.
            assert entry[1], "decode() swallowed an error without returning frames"
            dead = entry[3]
            if i + 1 < len(log) - 1:
                assert log[i + 1][0] == "error" and (log[i + 1][1], log[i + 1][2]) == dead
    return dead


def frames_of_decode_log(log):
    return [t for entry in log if entry[0] == "frames" for t in entry[1]]


def frames_of_feed_log(log):
    return [entry[1] for entry in log if entry[0] == "frame"]


def compare_decoders(stream, bounds, in_hypothesis=True, **limits):
    """Both cores, both APIs: identical logs; returns (frames, error signature)."""
    with time_limit(20):
        logs = [run_decode(mod, stream, bounds, **limits) for mod in CORES]
        feeds = [run_feed(mod, stream, bounds, **limits) for mod in CORES]
    assert logs[0] == logs[1]
    assert feeds[0] == feeds[1]
    dead = check_decode_log(logs[0])
    frames = frames_of_decode_log(logs[0])
    assert frames_of_feed_log(feeds[0]) == frames
    feed_errors = [(e[1], e[2]) for e in feeds[0] if e[0] in ("error", "feed-error")]
    assert (feed_errors[0] if feed_errors else None) == dead
    assert all(e == feed_errors[0] for e in feed_errors)
    if in_hypothesis:
        event(
            "decoder: "
            + ("ok" if dead is None else f"{dead[0].__name__}: {' '.join(dead[1].split(' ')[:2])}")
        )
    return frames, dead


def reassemble(mod, frames, **limits):
    """Media frames into messages; stops at the first error, which is recorded."""
    reassembler = mod.Reassembler(**limits)
    out = []
    for t in frames:
        if t[0] != MEDIA:
            continue
        frame = mod.Frame(*t)
        try:
            message = reassembler.add(frame)
        except ProtocolError as error:
            out.append(("error", type(error), str(error)))
            break
        if message is not None:
            out.append(("message", message.as_tuple(), message.payload(), message.wire_size))
    out.append(("partial", reassembler.partial_tracks))
    return out


# -- valid streams ----------------------------------------------------------------


@SETTINGS
@given(items=st.lists(st.one_of(control_items(), media_items()), max_size=10), data=st.data())
def test_valid_streams_encode_decode_and_reassemble_identically(items, data):
    wires = []
    want = []
    for item in items:
        encoded = [encode_item(mod, item) for mod in CORES]
        assert encoded[0] == encoded[1]
        assert all(type(w) is bytes for w in encoded[1])
        expected = expected_tuples(item)
        assert encoded[0] == [e[-1] for e in expected]
        wires += encoded[0]
        want += expected
    stream = b"".join(wires)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=25), label="cuts")
    bytewise_from = data.draw(st.integers(0, max(0, len(stream) - 1)), label="bytewise_from")
    bounds = split_bounds(len(stream), cuts, bytewise_from, 150)
    frames, dead = compare_decoders(stream, bounds)
    assert dead is None
    assert frames == want
    results = [reassemble(mod, frames) for mod in CORES]
    assert results[0] == results[1]
    messages = [r for r in results[0] if r[0] == "message"]
    media = [item for item in items if item[0] == "media"]
    # Each track's messages are consecutive here, so every one comes back whole.
    assert [m[2] for m in messages] == [item[5] for item in media]
    assert [m[1][:5] for m in messages] == [(i[1], i[2], i[3], i[4], i[6]) for i in media]
    assert results[0][-1] == ("partial", 0)


@SETTINGS
@given(
    messages=st.lists(media_items(max_size=20000, tracks=(1, 5)), max_size=10),
    controls=st.lists(control_items(), max_size=5),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_interleaved_tracks_reassemble_identically(messages, controls, seed, data):
    rng = random.Random(seed)
    per_track = {}
    for item in messages:
        per_track.setdefault(item[1], []).append(item)
    queues = [[w for item in items for w in encode_item(R, item)] for items in per_track.values()]
    queues.append([encode_item(C, item)[0] for item in controls])
    pieces = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        pieces.append(queue.pop(0))
    stream = b"".join(pieces)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=15), label="cuts")
    frames, dead = compare_decoders(stream, split_bounds(len(stream), cuts))
    assert dead is None
    results = [reassemble(mod, frames) for mod in CORES]
    assert results[0] == results[1]
    assert results[0][-1] == ("partial", 0)
    got = {}
    for entry in results[0][:-1]:
        assert entry[0] == "message"
        got.setdefault(entry[1][0], []).append(entry[2])
    assert got == {track: [item[5] for item in items] for track, items in per_track.items()}


# -- garbage and mutated streams --------------------------------------------------

where = st.floats(0, 1, exclude_max=True)  # a position, as a fraction of the stream's length

mutations = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), where, st.integers(1, 255)),
        st.tuples(st.just("truncate"), where),
        st.tuples(st.just("insert"), where, st.binary(min_size=1, max_size=40)),
        st.tuples(st.just("delete"), where, st.integers(1, 30)),
        st.tuples(st.just("header"), where, st.binary(min_size=21, max_size=21)),
        # One header field of one frame: type, flags, lane, track, sequence, length...
        st.tuples(st.just("field"), where, st.integers(3, 23), st.integers(1, 255)),
        st.tuples(
            st.just("field"), where, st.sampled_from([3, 4, 5, 7, 20, 21, 22]), st.integers(1, 255)
        ),
    ),
    min_size=1,
    max_size=4,
)


def mutate(stream, ops):
    data = bytearray(stream)
    starts = []
    offset = 0
    for frame in R.FrameDecoder().decode(stream):
        starts.append(offset)
        offset += len(frame.wire)
    for op in ops:
        at = int(op[1] * len(data))
        if op[0] == "field":
            if starts:
                position = starts[int(op[1] * len(starts))] + op[2]
                if position < len(data):
                    data[position] ^= op[3]
        elif op[0] == "flip":
            if data:
                data[at] ^= op[2]
        elif op[0] == "truncate":
            del data[at:]
        elif op[0] == "insert":
            data[at:at] = op[2]
        elif op[0] == "delete":
            del data[at : at + op[2]]
        else:  # a plausible header: right magic and version, random fields
            data[at:at] = b"PR\x01" + op[2]
    return bytes(data)


@settings(SETTINGS, max_examples=500)
@given(
    items=st.lists(st.one_of(control_items(), media_items(max_size=6000)), min_size=1, max_size=6),
    ops=mutations,
    data=st.data(),
)
def test_mutated_streams_fail_identically(items, ops, data):
    stream = mutate(b"".join(w for item in items for w in encode_item(R, item)), ops)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    bytewise_from = data.draw(st.integers(0, max(0, len(stream) - 1)), label="bytewise_from")
    small = data.draw(st.booleans(), label="small_limits")
    limits = {"max_frame_bytes": 3000, "max_control_bytes": 1500} if small else {}
    frames, dead = compare_decoders(
        stream, split_bounds(len(stream), cuts, bytewise_from, 60), **limits
    )
    if dead is not None:
        assert dead[0] in (FrameError, LimitExceeded)
    reassembly_limits = {
        "max_message_bytes": 20000,
        "max_chunks_per_message": 12,
        "max_partial_tracks": 3,
    }
    results = [reassemble(mod, frames, **reassembly_limits) for mod in CORES]
    assert results[0] == results[1]


@settings(SETTINGS, max_examples=500)
@given(
    garbage=st.one_of(
        st.binary(max_size=3000),
        st.binary(max_size=200).map(lambda b: b"PR\x01" + b),
        st.lists(st.binary(min_size=21, max_size=60), max_size=20).map(
            lambda bs: b"".join(b"PR\x01" + b for b in bs)
        ),
    ),
    data=st.data(),
)
def test_garbage_fails_identically(garbage, data):
    cuts = data.draw(st.lists(st.integers(0, len(garbage)), max_size=10), label="cuts")
    bounds = split_bounds(len(garbage), cuts, data.draw(st.integers(0, 64)), 40)
    frames, dead = compare_decoders(garbage, bounds)
    if garbage and garbage[0] != 0x50:
        assert dead is not None and "bad magic" in dead[1]
    results = [
        reassemble(mod, frames, max_partial_tracks=2, max_chunks_per_message=3) for mod in CORES
    ]
    assert results[0] == results[1]


def run_mixed(mod, stream, bounds, plan, **limits):
    """decode(), feed() and next_frame() mixed: each piece goes in one way or the other."""
    decoder = mod.FrameDecoder(**limits)
    log = []
    for (start, stop), (use_decode, takes) in zip(itertools.pairwise(bounds), plan):
        try:
            if use_decode:
                frames = decoder.decode(stream[start:stop])
                log.append(("frames", [f.as_tuple() for f in frames]))
            else:
                decoder.feed(stream[start:stop])
                for _ in range(takes):
                    frame = decoder.next_frame()
                    log.append(("frame", None if frame is None else frame.as_tuple()))
        except ProtocolError as error:
            assert error is decoder.error
            log.append(("error", type(error), str(error)))
        log.append(("buffered", decoder.buffered))
    log.append(("end", decoder.frames_decoded, decoder.bytes_received, signature(decoder.error)))
    return log


@settings(SETTINGS, max_examples=300)
@given(
    items=st.lists(st.one_of(control_items(), media_items(max_size=20000)), max_size=8),
    ops=st.lists(mutations, max_size=1),
    data=st.data(),
)
def test_feed_next_frame_and_decode_mixed_identically(items, ops, data):
    """Frames fed but not yet taken, then a decode(): both cores agree, valid or not."""
    stream = b"".join(w for item in items for w in encode_item(R, item))
    if ops:
        stream = mutate(stream, ops[0])
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts")
    bounds = split_bounds(len(stream), cuts, data.draw(st.integers(0, len(stream))), 30)
    plan = data.draw(
        st.lists(
            st.tuples(st.booleans(), st.integers(0, 2)),
            min_size=len(bounds) - 1,
            max_size=len(bounds) - 1,
        ),
        label="plan",
    )
    with time_limit(20):
        logs = [run_mixed(mod, stream, bounds, plan) for mod in CORES]
    assert logs[0] == logs[1]
    if not ops:
        # Valid stream: frames come out in stream order, whichever call returns them,
        # and what was not taken yet is still buffered.
        want = [t for item in items for t in expected_tuples(item)]
        got = []
        for entry in logs[0]:
            if entry[0] == "frames":
                got += entry[1]
            elif entry[0] == "frame" and entry[1] is not None:
                got.append(entry[1])
            assert entry[0] != "error"
        assert got == want[: len(got)]
        if stream:
            assert logs[0][-2] == ("buffered", len(stream) - sum(len(t[-1]) for t in got))


# -- crafted bad input, both cores -------------------------------------------------


def _media_chunks(track, seq, n, size=10, keyframe=False, lane=3, ts=0):
    return R.encode_media(track, lane, seq, ts, bytes(size * n), keyframe=keyframe, chunk_size=size)


CRAFTED = {
    "lying length media": header(MEDIA, END, 3, 1, 0, 0, 0xFFFFFFFF) + b"\x00" * 64,
    "lying length control": header(0x10, END, 0, 0, 0, 0, 0xFFFFFFFF),
    "oversize control": header(0x07, END, 1, 0, 0, 0, 16385) + bytes(16385),
    "oversize media": header(MEDIA, END, 2, 9, 0, 0, 65537) + bytes(65537),
    "wrong version": header(0x07, END, 1, 0, 0, 0, 0, version=3),
    "version zero, partial": b"PR\x00",
    "bad magic": b"pr\x01" + bytes(30),
    "unknown type": header(0x08, END, 1, 0, 0, 0, 0),
    "unknown type, partial": b"PR\x01\xff",
    "reserved flags": header(MEDIA, 0x80 | END, 3, 1, 0, 0, 0),
    "reserved flags control": header(0x07, 0x42, 1, 0, 0, 0, 0),
    "control not END": header(0x07, KEY | END, 1, 0, 0, 0, 0),
    "alert in control lane": header(0x10, END, 1, 0, 0, 0, 0),
    "control in alert lane": header(0x01, END, 0, 0, 0, 0, 0),
    "media in control lane": header(MEDIA, END, 1, 1, 0, 0, 0),
    "media in lane 200": header(MEDIA, END, 200, 1, 0, 0, 0),
    "media on track 0": header(MEDIA, END, 3, 0, 0, 0, 0),
    "control on a track": header(0x13, END, 0, 4, 0, 0, 0),
    "interrupted by other seq": b"".join(_media_chunks(1, 5, 3)[:2] + _media_chunks(1, 6, 2)),
    "interrupted by keyframe": b"".join(
        _media_chunks(1, 5, 3)[:2] + _media_chunks(1, 5, 2, keyframe=True)
    ),
    "interrupted by other timestamp": b"".join(
        _media_chunks(1, 5, 3)[:1] + _media_chunks(1, 5, 2, ts=7)
    ),
    "interrupted by other lane": b"".join(
        _media_chunks(1, 5, 3)[:1] + _media_chunks(1, 5, 2, lane=2)
    ),
    "too many chunks": b"".join(_media_chunks(2, 1, 300, size=1)),
    "message too big": b"".join(_media_chunks(3, 1, 80, size=60000)),
    "too many partial tracks": b"".join(_media_chunks(t, 1, 2)[0] for t in range(1, 70)),
    "valid then bad": b"".join(_media_chunks(1, 5, 3)) + header(0x07, END, 2, 0, 0, 0, 0),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
@pytest.mark.parametrize("split", ["whole", "bytewise-head", "pieces"])
def test_crafted_bad_input_fails_identically(name, split):
    stream = CRAFTED[name]
    if split == "whole":
        bounds = [0, len(stream)]
    elif split == "bytewise-head":
        bounds = split_bounds(len(stream), [], 0, 80)
    else:
        bounds = split_bounds(len(stream), list(range(0, len(stream), 4093)) + [23, 24, 25, 47, 48])
    frames, dead = compare_decoders(stream, bounds, in_hypothesis=False)
    results = [reassemble(mod, frames) for mod in CORES]
    assert results[0] == results[1]
    failure = dead if dead is not None else (results[0][-2][1], results[0][-2][2])
    assert failure[0] in (FrameError, LimitExceeded), (name, failure)


def test_lying_length_never_buffers_the_declared_size():
    lie = header(MEDIA, END, 3, 1, 0, 0, 0xFFFFFFFF)
    for mod in CORES:
        for prefix in (b"", R.encode_frame(0x07, 1, 0, 1, 0, b"hb")):
            decoder = mod.FrameDecoder()
            stream = prefix + lie + bytes(1000)
            cut = len(prefix) + HEADER_SIZE  # the lying header is complete: refused now
            try:
                got = decoder.decode(stream[:cut])
            except LimitExceeded:
                got = None
            assert type(decoder.error) is LimitExceeded
            assert str(decoder.error).startswith(
                "frame length 4294967295 exceeds max_frame_bytes 65536"
            )
            assert decoder.buffered == HEADER_SIZE  # the bad header, nothing more
            if prefix:
                assert [f.wire for f in got] == [prefix]
            else:
                assert got is None
            with pytest.raises(LimitExceeded) as info:
                decoder.decode(stream[cut:])
            assert info.value is decoder.error
            assert decoder.buffered == HEADER_SIZE


def test_expected_error_messages_are_identical():
    expected = {
        "lying length media": (
            LimitExceeded,
            "frame length 4294967295 exceeds max_frame_bytes 65536 (track 1)",
        ),
        "oversize control": (
            LimitExceeded,
            "control frame type 0x07 length 16385 exceeds max_control_bytes 16384",
        ),
        "wrong version": (FrameError, "unsupported protocol version 3 (this side speaks 1 and 2)"),
        "unknown type": (FrameError, "unknown frame type 0x08"),
        "reserved flags": (FrameError, "reserved flag bits 0x80 set in frame type 0x40"),
        "media on track 0": (FrameError, "media frame on track 0"),
        "alert in control lane": (FrameError, "frame type 0x10 in lane 1; it belongs in lane 0"),
    }
    for name, (cls, words) in expected.items():
        for mod in CORES:
            with pytest.raises(cls) as info:
                mod.FrameDecoder().decode(CRAFTED[name])
            assert str(info.value).startswith(words), (mod.__name__, name, str(info.value))
    for name, (cls, words) in {
        "too many chunks": (
            LimitExceeded,
            "message seq 1 on track 2 exceeds max_chunks_per_message 256",
        ),
        "message too big": (
            LimitExceeded,
            "message seq 1 on track 3 reached 4200000 bytes, above max_message_bytes 4194304",
        ),
        "too many partial tracks": (
            LimitExceeded,
            "more than 64 tracks with a half-received message",
        ),
        "interrupted by other seq": (
            FrameError,
            "message seq 5 on track 1 interrupted by a chunk of seq 6",
        ),
    }.items():
        for mod in CORES:
            reassembler = mod.Reassembler()
            with pytest.raises(cls) as info:
                for frame in mod.FrameDecoder().decode(CRAFTED[name]):
                    reassembler.add(frame)
            assert str(info.value).startswith(words), (mod.__name__, name, str(info.value))


@pytest.mark.parametrize(
    "args",
    [
        (-1, 2, 0, 0, b"x"),
        (2**22, 3, 0, 0, b"x"),
        (0, 3, 0, 0, b"x"),
        (1, 1, 0, 0, b"x"),
        (1, 4, 0, 0, b"x"),
        (1, 2, -1, 0, b"x"),
        (1, 2, 2**32, 0, b"x"),
    ],
)
def test_encode_media_refusals_identical(args):
    outcomes = []
    for mod in CORES:
        try:
            outcomes.append(("ok", mod.encode_media(*args)))
        except (ValueError, OverflowError) as error:
            outcomes.append((type(error), str(error)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] is FrameError


def huge(small):
    """Mostly plausible values, sometimes ones no C integer holds."""
    return st.one_of(small, small, small, st.integers(-(2**70), 2**70))


def outcome(func, *args):
    try:
        result = func(*args)
    except (ValueError, TypeError, OverflowError) as error:
        return (type(error), str(error))
    return ("ok", result)


@st.composite
def frame_fields(draw):
    """A valid frame's fields, then perhaps one or two of them made wrong."""
    type_ = draw(st.sampled_from(CONTROL_TYPES + [MEDIA] * 8))
    if type_ == MEDIA:
        fields = {
            "type_": type_,
            "lane": draw(st.sampled_from([2, 3])),
            "track": draw(st.integers(1, 65535)),
            "flags": draw(st.integers(0, 3)),
        }
    else:
        fields = {"type_": type_, "lane": int(TYPE_LANE[type_]), "track": 0, "flags": END}
    fields["seq"] = draw(st.integers(0, 2**32 - 1))
    fields["timestamp"] = draw(st.integers(-(2**63), 2**63 - 1))
    wrong = {
        "type_": st.integers(0, 255),
        "lane": st.integers(-1, 5),
        "track": st.integers(-2, 70000) | st.sampled_from([0, 65535, 65536]),
        "flags": st.integers(0, 255),
        "seq": st.sampled_from([-1, 2**32 - 1, 2**32]),
        "timestamp": st.sampled_from([-(2**63), -(2**63) - 1, 2**63 - 1, 2**63]),
    }
    for name in draw(st.lists(st.sampled_from(sorted(wrong)), max_size=2)):
        fields[name] = draw(huge(wrong[name]))
    return fields


@settings(SETTINGS, max_examples=500)
@given(fields=frame_fields(), payload=st.binary(max_size=50))
def test_encode_frame_accepts_and_refuses_identically(fields, payload):
    f = fields
    outcomes = [
        outcome(
            mod.encode_frame,
            *(f["type_"], f["lane"], f["track"], f["seq"], f["timestamp"], payload, f["flags"]),
        )
        for mod in CORES
    ]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] in ("ok", FrameError), outcomes[0]
    words = [] if outcomes[0][0] == "ok" else outcomes[0][1].split()[:5]
    event(
        "encode_frame: " + (" ".join(w for w in words if not any(c.isdigit() for c in w)) or "ok")
    )
    if outcomes[0][0] == "ok":
        (frame,) = R.FrameDecoder().decode(outcomes[0][1])
        assert frame.as_tuple() == (
            f["type_"],
            f["flags"],
            f["lane"],
            f["track"],
            f["seq"],
            f["timestamp"],
            outcomes[0][1],
        )


@settings(SETTINGS, max_examples=200)
@given(
    track=huge(st.integers(-2, 70000)),
    lane=huge(st.integers(-1, 5)),
    seq=huge(st.integers(-2, 2**32 + 2)),
    timestamp=huge(st.integers(-(2**63), 2**63 - 1)) | st.sampled_from([-(2**63) - 1, 2**63]),
    payload=st.binary(max_size=300),
    keyframe=st.booleans(),
    chunk_size=huge(st.integers(-1, 400)),
)
def test_encode_media_accepts_and_refuses_identically(
    track, lane, seq, timestamp, payload, keyframe, chunk_size
):
    outcomes = [
        outcome(mod.encode_media, track, lane, seq, timestamp, payload, keyframe, chunk_size)
        for mod in CORES
    ]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] in ("ok", FrameError, ValueError), outcomes[0]


# -- send queues ----------------------------------------------------------------

queue_ops = st.lists(
    st.one_of(
        st.tuples(st.just("alert"), st.integers(0, 400)),
        st.tuples(st.just("control"), st.integers(0, 900)),
        st.tuples(
            st.just("audio"), st.integers(10, 11), st.integers(20, 700), st.integers(100, 1000)
        ),
        st.tuples(
            st.just("audio"), st.integers(10, 11), st.integers(20, 700), st.integers(100, 1000)
        ),
        st.tuples(
            st.just("video"),
            st.integers(1, 3),
            st.integers(0, 9000),
            st.integers(300, 16384),
            st.booleans(),
        ),
        st.tuples(
            st.just("video"),
            st.integers(1, 3),
            st.integers(0, 9000),
            st.integers(300, 16384),
            st.booleans(),
        ),
        st.tuples(
            st.just("video"),
            st.integers(1, 3),
            st.integers(0, 9000),
            st.integers(300, 16384),
            st.booleans(),
        ),
        st.tuples(st.just("consume"), st.floats(0, 1)),
        st.tuples(st.just("consume"), st.floats(0, 0.1)),
        st.tuples(st.just("consume"), st.floats(0, 1)),
        st.tuples(st.just("peek"), st.integers(-1, 100), st.integers(-1, 300000)),
        st.tuples(st.just("time"), st.floats(0, 0.3)),
    ),
    min_size=5,
    max_size=80,
)

queue_bounds = st.fixed_dictionaries(
    {
        "max_video_bytes": st.integers(3000, 40000),
        "max_video_age": st.floats(0.1, 1.0),
        "max_audio_bytes": st.integers(500, 3000),
        "max_control_bytes": st.integers(500, 4000),
    }
)


def queue_state(queue, now):
    return (
        [bytes(b) for b in queue.peek()],
        queue.pending_bytes,
        queue.empty,
        queue.dropped_video,
        queue.dropped_audio,
        queue.bytes_sent,
        [queue.lane_bytes(lane) for lane in range(4)],
        queue.oldest_age(now),
        [queue.waiting_for_keyframe(t) for t in (1, 2, 3)],
    )


def build_message(op, seq, now):
    """Wire chunks, lane, track and keyframe for one push op (built once, pushed to both)."""
    kind = op[0]
    ts = int(now * 1e6)
    if kind == "alert":
        type_ = ALERT_TYPES[seq % len(ALERT_TYPES)]
        return [R.encode_frame(type_, 0, 0, seq, ts, bytes(op[1]))], 0, 0, False
    if kind == "control":
        type_ = OTHER_CONTROL_TYPES[seq % len(OTHER_CONTROL_TYPES)]
        return [R.encode_frame(type_, 1, 0, seq, ts, bytes(op[1]))], 1, 0, False
    if kind == "audio":
        _, track, size, chunk = op
        return (
            R.encode_media(track, 2, seq, ts, bytes([seq % 256]) * size, chunk_size=chunk),
            2,
            track,
            False,
        )
    _, track, size, chunk, keyframe = op
    return (
        R.encode_media(
            track, 3, seq, ts, bytes([seq % 256]) * size, keyframe=keyframe, chunk_size=chunk
        ),
        3,
        track,
        keyframe,
    )


def as_container(chunks, how):
    """Push accepts any sequence of buffers; vary the container and buffer types."""
    if how == 0:
        return list(chunks)
    if how == 1:
        return tuple(chunks)
    if how == 2:
        return [bytearray(c) for c in chunks]
    return [memoryview(c) for c in chunks]


def take(queue, n):
    """consume(n) the way a writer does: bytes from the front of peek()."""
    out = bytearray()
    while n > 0:
        data = b"".join(bytes(b) for b in queue.peek())
        k = min(n, len(data))
        assert k > 0
        out += data[:k]
        queue.consume(k)
        n -= k
    return bytes(out)


@settings(SETTINGS, max_examples=600)
@given(ops=queue_ops, bounds=queue_bounds, containers=st.integers(0, 3))
def test_send_queues_schedule_identically_and_keep_their_promises(ops, bounds, containers):
    queues = [mod.SendQueue(**bounds) for mod in CORES]
    emitted = [bytearray(), bytearray()]
    now = 0.0
    seq = 0
    pushes = []  # (seq, lane, track, keyframe, status, emitted offset at push time, chunks)
    for op in ops:
        kind = op[0]
        if kind == "time":
            now += op[1]
        elif kind == "peek":
            max_buffers = op[1] if op[1] >= 0 else 64
            max_bytes = op[2] if op[2] >= 0 else 262144
            peeks = [[bytes(b) for b in q.peek(max_buffers, max_bytes)] for q in queues]
            assert peeks[0] == peeks[1]
            assert len(peeks[0]) <= max(1, max_buffers)
        elif kind == "consume":
            n = int(op[1] * queues[0].pending_bytes)
            for i, q in enumerate(queues):
                emitted[i] += take(q, n)
        else:
            seq += 1
            chunks, lane, track, keyframe = build_message(op, seq, now)
            size = sum(map(len, chunks))
            control_room = queues[0].lane_bytes(0) + queues[0].lane_bytes(1)
            before = queue_state(queues[0], now)
            statuses = [
                q.push(
                    lane, as_container(chunks, containers), track=track, keyframe=keyframe, now=now
                )
                for q in queues
            ]
            assert statuses[0] == statuses[1]
            status = statuses[0]
            if lane in (0, 1):
                assert status == (
                    OVERFLOW if control_room + size > bounds["max_control_bytes"] else QUEUED
                )
                if status == OVERFLOW:
                    assert queue_state(queues[0], now) == before  # nothing enqueued
            elif lane == 2:
                assert status == QUEUED
            else:
                assert status in (QUEUED, DROPPED)
            pushes.append((seq, lane, track, keyframe, status, len(emitted[0]), chunks))
        states = [queue_state(q, now) for q in queues]
        assert states[0] == states[1]
        assert emitted[0] == emitted[1]
    for status in sorted({p[4] for p in pushes}):
        event(f"queue: some push returned {status}")
    if queues[0].dropped_audio:
        event("queue: audio dropped")
    if queues[0].dropped_video > sum(p[4] == DROPPED for p in pushes):
        event("queue: queued video dropped later")
    for i, q in enumerate(queues):
        emitted[i] += take(q, q.pending_bytes)
        assert q.empty
    assert emitted[0] == emitted[1]
    assert queue_state(queues[0], now) == queue_state(queues[1], now)
    check_schedule(bytes(emitted[0]), pushes, queues[0])


def check_schedule(stream, pushes, queue):
    """The promises of SendQueue, checked on what it emitted."""
    frames = R.FrameDecoder().decode(stream)
    assert sum(len(f.wire) for f in frames) == len(stream) == queue.bytes_sent
    starts = []
    offset = 0
    for f in frames:
        starts.append(offset)
        offset += len(f.wire)
    by_seq = {}
    for index, f in enumerate(frames):
        by_seq.setdefault(f.seq, []).append(index)
    # Every chunk of a message goes out, in order; the receiver can reassemble them.
    reassembler = R.Reassembler()
    emitted = {}
    for f in frames:
        if f.type == MEDIA:
            message = reassembler.add(f)
            if message is not None:
                emitted[message.seq] = message
        else:
            emitted[f.seq] = f
    assert reassembler.partial_tracks == 0
    for seq, lane, track, keyframe, status, at, chunks in pushes:
        if seq in emitted:
            assert status == QUEUED
            got = emitted[seq].chunks if lane >= 2 else (emitted[seq].wire,)
            assert got == tuple(chunks)
        elif lane < 2:
            assert status == OVERFLOW
    # Each lane is FIFO.
    for lane in range(4):
        order = [seq for seq, l, *_ in pushes if l == lane and seq in emitted]
        first_index = [by_seq[seq][0] for seq in order]
        assert first_index == sorted(first_index)
    # Accounting: every message pushed is sent, dropped or refused.
    video = [p for p in pushes if p[1] == 3]
    audio = [p for p in pushes if p[1] == 2]
    assert len(video) == sum(p[0] in emitted for p in video) + queue.dropped_video
    assert len(audio) == sum(p[0] in emitted for p in audio) + queue.dropped_audio
    # A video track that lost a message resumes only at a keyframe.
    for track in {p[2] for p in video}:
        history = [(p[0] in emitted, p[3]) for p in video if p[2] == track]
        for i, (sent, _) in enumerate(history):
            if not sent:
                later = [key for ok, key in history[i + 1 :] if ok]
                assert not later or later[0], f"track {track} resumed without a keyframe"
    # Alerts overtake every chunk not yet begun when they were pushed; only a chunk
    # already on the wire (at most one) or alerts queued earlier go first, except
    # that a flood of alerts lets the other lanes through once per round.
    alert_pushes = [p for p in pushes if p[1] == 0 and p[4] == QUEUED]
    for seq, lane, track, keyframe, status, at, chunks in alert_pushes:
        index = by_seq[seq][0]
        before = [i for i in range(index) if starts[i] >= at]
        straddling = [i for i in range(index) if starts[i] < at < starts[i] + len(frames[i].wire)]
        assert len(straddling) <= 1
        if straddling:
            event("queue: alert pushed while a chunk was on the wire")
        if any(starts[i] >= at and frames[i].lane != 0 for i in range(index + 1, len(frames))):
            event("queue: alert overtook queued chunks")
        others = [i for i in before if frames[i].lane != 0]
        alerts_between = len(before) - len(others)
        if len(alert_pushes) <= LANE_WEIGHTS[0]:
            assert others == [], (
                f"alert seq {seq} waited behind chunks that began after it was pushed"
            )
        else:
            assert len(others) <= sum(LANE_WEIGHTS[1:]) * (1 + alerts_between // LANE_WEIGHTS[0])


@pytest.mark.parametrize(
    "call",
    [
        lambda mod, q: q.push(4, [b"x" * 30]),
        lambda mod, q: q.push(-1, [b"x" * 30]),
        lambda mod, q: q.push(1, []),
        lambda mod, q: q.push(3, (), track=1, keyframe=True),
        lambda mod, q: q.push(1, [b""]),
        lambda mod, q: q.push(2, [b"x" * 30, b""], track=1),
        lambda mod, q: q.push(1, [5]),
        lambda mod, q: q.lane_bytes(-1),
        lambda mod, q: q.lane_bytes(4),
        lambda mod, q: mod.deliver([], 7, [b"x" * 30]),
        lambda mod, q: mod.deliver([], 1, []),
        lambda mod, q: mod.deliver([q], 1, [b""]),
        lambda mod, q: mod.deliver([q], -1, [b"x"]),
    ],
)
def test_send_queue_refuses_bad_input_identically(call):
    """A bad lane or an empty message or chunk is refused and nothing is queued.

    (An empty chunk used to wedge the queue: write_to() spun on it forever in
    both cores, and the compiled peek() read past the end of an empty message.)
    """
    outcomes = []
    for mod in CORES:
        queue = mod.SendQueue()
        with time_limit(5):
            result = outcome(call, mod, queue)
        outcomes.append(result)
        assert queue.empty and queue.pending_bytes == 0 and queue.peek() == []
        assert queue.write_to(-1) == 0
    assert outcomes[0][0] in (ValueError, TypeError)
    if outcomes[0][0] is TypeError:  # the words of a TypeError come from Python itself
        assert outcomes[1][0] is TypeError
    else:
        assert outcomes[0] == outcomes[1]


def test_peek_beyond_the_write_batch_identically():
    """peek(max_buffers) above the 64 buffers one write takes still shows them all."""
    shown = []
    for mod in CORES:
        queue = mod.SendQueue()
        for i in range(150):
            queue.push(i % 2, [R.encode_frame(0x10 if i % 2 == 0 else 0x07, i % 2, 0, i, 0, b"z")])
        take(queue, 10)
        shown.append(
            [[bytes(b) for b in queue.peek(n, 1 << 30)] for n in (0, 1, 64, 65, 100, 1000)]
        )
        assert [len(p) for p in shown[-1]] == [1, 1, 64, 65, 100, 150]
    assert shown[0] == shown[1]


def test_alert_flood_still_bounded_identically():
    """More than LANE_WEIGHTS[0] alerts per round: the other lanes get their turn."""
    streams = []
    for mod in CORES:
        queue = mod.SendQueue()
        queue.push(
            3,
            R.encode_media(1, 3, 1, 0, bytes(1000), keyframe=True, chunk_size=100),
            track=1,
            keyframe=True,
        )
        queue.push(2, R.encode_media(2, 2, 2, 0, bytes(1000), chunk_size=100), track=2)
        queue.push(1, [R.encode_frame(0x07, 1, 0, 3, 0, b"")] * 30)
        head = take(queue, 5)  # a control chunk is now on the wire
        for i in range(200):
            assert queue.push(0, [R.encode_frame(0x10, 0, 0, 100 + i, 0, b"!")]) == QUEUED
        streams.append(head + take(queue, queue.pending_bytes))
    assert streams[0] == streams[1]
    lanes = [f.lane for f in R.FrameDecoder().decode(streams[0])]
    assert len(lanes) == 30 + 10 + 10 + 200
    # The chunk in progress, 64 alerts, then the rest of the round's credits
    # (15 control, 4 audio, 1 video), then alerts again.
    assert lanes[0] == 1
    assert lanes[1:65] == [0] * 64
    assert lanes[65:85] == [1] * 15 + [2] * 4 + [3]
    assert lanes[85:149] == [0] * 64
    assert lanes[149:170] == [1] * 14 + [2] * 4 + [3] + [0, 0]


# -- real sockets ----------------------------------------------------------------


def socketpair(sndbuf=4096):
    writer, reader = socket.socketpair()
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    writer.setblocking(False)
    reader.setblocking(False)
    return writer, reader


def read_available(sock):
    data = bytearray()
    while True:
        try:
            piece = sock.recv(1 << 16)
        except BlockingIOError:
            return bytes(data)
        if not piece:
            return bytes(data)
        data += piece


def write_until_empty(queue, writer, reader, on_full=None):
    received = bytearray()
    full = 0
    while not queue.empty:
        queue.write_to(writer.fileno())
        if not queue.empty:
            full += 1
            if on_full is not None:
                on_full()
        received += read_available(reader)
        assert full < 100000
    received += read_available(reader)
    return bytes(received), full


push_batches = st.lists(
    st.one_of(
        st.tuples(st.just("alert"), st.integers(0, 200)),
        st.tuples(st.just("control"), st.integers(0, 600)),
        st.tuples(
            st.just("audio"), st.integers(10, 11), st.integers(20, 700), st.integers(100, 1000)
        ),
        st.tuples(
            st.just("video"),
            st.integers(1, 3),
            st.integers(0, 40000),
            st.integers(1000, 16384),
            st.booleans(),
        ),
        st.tuples(
            st.just("video"),
            st.integers(1, 3),
            st.integers(20000, 40000),
            st.integers(1000, 16384),
            st.booleans(),
        ),
    ),
    min_size=3,
    max_size=30,
)


@settings(SETTINGS, max_examples=60)
@given(batch=push_batches, sndbuf=st.sampled_from([2048, 4096, 16384]))
def test_write_to_socket_matches_the_schedule(batch, sndbuf):
    """What arrives is exactly what peek()/consume() schedule; both cores alike."""
    received = []
    for mod in CORES:
        twin = mod.SendQueue(max_video_bytes=10**8, max_control_bytes=10**8)
        queue = mod.SendQueue(max_video_bytes=10**8, max_control_bytes=10**8)
        for seq, op in enumerate(batch, 1):
            chunks, lane, track, keyframe = build_message(op, seq, 0.0)
            assert (
                queue.push(lane, chunks, track, keyframe)
                == twin.push(lane, chunks, track, keyframe)
                == QUEUED
            )
        writer, reader = socketpair(sndbuf)
        with writer, reader:
            got, full = write_until_empty(queue, writer, reader)
        if full:
            event("socket: write_to stopped at a full socket")
        assert got == take(twin, twin.pending_bytes)
        assert queue.bytes_sent == len(got)
        received.append(got)
    assert received[0] == received[1]
    frames = R.FrameDecoder().decode(received[0])
    assert sum(len(f.wire) for f in frames) == len(received[0])


@settings(SETTINGS, max_examples=60)
@given(batch=push_batches)
def test_write_to_with_pushes_while_blocked(batch):
    """Pushes between writes: the socket gets what a twin queue consuming the same counts emits."""
    for mod in CORES:
        twin = mod.SendQueue(max_video_bytes=10**8, max_control_bytes=10**8)
        queue = mod.SendQueue(max_video_bytes=10**8, max_control_bytes=10**8)
        writer, reader = socketpair(4096)
        expected = bytearray()
        received = bytearray()
        with writer, reader:
            for seq, op in enumerate(batch, 1):
                chunks, lane, track, keyframe = build_message(op, seq, 0.0)
                queue.push(lane, chunks, track, keyframe)
                twin.push(lane, chunks, track, keyframe)
                n = queue.write_to(writer.fileno())
                expected += take(twin, n)
                if not queue.empty:
                    event("socket: pushed while the socket was full")
                if seq % 3 == 0:
                    received += read_available(reader)
            while not queue.empty:
                expected += take(twin, queue.write_to(writer.fileno()))
                received += read_available(reader)
            received += read_available(reader)
        assert bytes(received) == bytes(expected)
        assert twin.empty


def test_deliver_identically_to_readers_blocked_and_closed_peers():
    results = []
    for mod in CORES:
        pairs = [socketpair(4096 if i == 3 else 1 << 20) for i in range(5)]
        try:
            queues = [mod.SendQueue(w.fileno()) for w, _ in pairs]
            pairs[4][1].close()  # gone
            log = []
            stuck = 3  # never reads
            readers = [0, 1, 2]
            received = {i: bytearray() for i in readers}
            for seq in range(1, 120):
                lane = (0, 1, 2, 3)[seq % 4]
                if lane == 0:
                    chunks, track, keyframe = (
                        [R.encode_frame(0x10, 0, 0, seq, 0, b"alert")],
                        0,
                        False,
                    )
                elif lane == 1:
                    chunks, track, keyframe = [R.encode_frame(0x07, 1, 0, seq, 0, b"")], 0, False
                elif lane == 2:
                    chunks, track, keyframe = R.encode_media(7, 2, seq, 0, bytes(180)), 7, False
                else:
                    chunks, track, keyframe = (
                        R.encode_media(8, 3, seq, 0, bytes(5000), keyframe=True, chunk_size=2000),
                        8,
                        True,
                    )
                attention = mod.deliver(queues, lane, chunks, track, keyframe, now=seq * 0.001)
                log.append([queues.index(q) for q in attention])
                for i in readers:
                    received[i] += read_available(pairs[i][1])
                    assert queues[i].empty and not queues[i].blocked
            # The closed peer is broken at once, the stuck one blocks once its socket fills.
            assert log[0] == [4]
            assert isinstance(queues[4].error, (BrokenPipeError, ConnectionResetError))
            blocked_at = [i for i, entry in enumerate(log) if stuck in entry]
            assert len(blocked_at) == 1, log
            assert queues[stuck].blocked and queues[stuck].error is None and not queues[stuck].empty
            assert all(entry == [] for entry in log[1 : blocked_at[0]] + log[blocked_at[0] + 1 :])
            streams = {i: bytes(received[i]) for i in readers}
            assert streams[0] == streams[1] == streams[2]
            frames = R.FrameDecoder().decode(streams[0])
            assert sorted({f.seq for f in frames}) == list(range(1, 120))
            results.append(
                (
                    log,
                    streams[0],
                    queues[stuck].pending_bytes,
                    queues[stuck].dropped_video,
                    type(queues[4].error),
                )
            )
        finally:
            for w, r in pairs:
                w.close()
                r.close()
    assert results[0] == results[1]


fanout_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from(["audio", "video", "key", "control"]),
            st.integers(1, 15),  # which of the four subscribers (bit mask)
            st.integers(1, 9000),
        ),
        st.tuples(st.just("run"), st.integers(0, 30)),  # milliseconds later
        st.tuples(st.just("read"), st.integers(0, 3)),
    ),
    max_size=60,
)


@settings(SETTINGS, max_examples=150)
@given(
    ops=fanout_ops,
    hold=st.sampled_from([0.0, 0.01, 0.035]),
    slice_sockets=st.integers(1, 5),
    slice_bytes=st.sampled_from([1, 5000, 1 << 20]),
    round_pushes=st.integers(1, 9),
)
def test_fanout_identically(ops, hold, slice_sockets, slice_bytes, round_pushes):
    """Both Fanouts write the same bytes to the same sockets, report the same queues, count the same."""
    results = []
    for mod in CORES:
        pairs = [socketpair(8192) for _ in range(4)]
        try:
            queues = [mod.SendQueue(w.fileno(), max_video_bytes=10**8) for w, _ in pairs]
            fanout = mod.Fanout(hold, slice_sockets, slice_bytes, round_pushes)
            received = [bytearray() for _ in pairs]
            log = []
            now = 10.0
            for seq, op in enumerate(ops, 1):
                if op[0] == "add":
                    _, kind, mask, size = op
                    lane = {"audio": 2, "video": 3, "key": 3, "control": 1}[kind]
                    if lane == 1:
                        chunks = (R.encode_frame(0x07, 1, 0, seq, 0, bytes(size % 600)),)
                    else:
                        chunks = tuple(
                            R.encode_media(lane, lane, seq, seq, bytes([seq % 256]) * size,
                                           keyframe=kind == "key", chunk_size=4096)
                        )
                    message = mod.Message(lane, lane, seq, seq, kind == "key", chunks, size)
                    fanout.add(tuple(q for i, q in enumerate(queues) if mask >> i & 1), message)
                elif op[0] == "run":
                    now += op[1] / 1000
                    attention = fanout.run(now)
                    log.append([queues.index(q) for q in attention])
                    for queue in attention:  # the owner drains a blocked queue later
                        queue.blocked = False
                else:
                    received[op[1]] += read_available(pairs[op[1]][1])
                log.append((fanout.busy, fanout.pending, fanout.next_due))
            for i, (_, reader) in enumerate(pairs):
                received[i] += read_available(reader)
            results.append(
                (
                    log,
                    [bytes(r) for r in received],
                    [q.pending_bytes for q in queues],
                    (fanout.messages, fanout.deliveries, fanout.rounds, fanout.writes),
                )
            )
        finally:
            for w, r in pairs:
                w.close()
                r.close()
    assert results[0] == results[1]

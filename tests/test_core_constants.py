"""The compiled core's wire constants and tables agree with ``wire.py``.

The compiled core keeps its own copies of the header layout, the type→lane
table, the lane weights and the write limits (C enums and arrays). The ones
it exports are compared directly; the ones it does not are probed through
behaviour: every frame type × lane × flags × track combination is decoded,
and the scheduler's order over a full round is observed.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import pinkrelay._core as core
from pinkrelay._core import checks, reference, wire
from pinkrelay.errors import FrameError, LimitExceeded, ProtocolError

HEADER = wire.HEADER
END = int(wire.Flag.END)
MEDIA = int(wire.FrameType.MEDIA)


def _compiled():
    """The compiled core; a build that is missing or broken fails here, it is never skipped."""
    return importlib.import_module("pinkrelay._core._cpinkrelay")


def _both():
    """Parameters over both cores; the compiled one only where it is needed."""
    return [
        pytest.param("reference", id="reference"),
        pytest.param("compiled", id="compiled", marks=pytest.mark.compiled_only),
    ]


def _module(name):
    return reference if name == "reference" else _compiled()


# -- the selection in pinkrelay._core ------------------------------------------


def test_loaded_core_is_the_one_the_environment_asks_for():
    """make test runs the suite twice: once compiled (the build must be there), once pure."""
    pure = os.environ.get("PINKRELAY_PUREPYTHON", "").strip().lower() not in ("", "0", "false", "no")
    expected = reference if pure else _compiled()
    assert core.COMPILED is (not pure)
    for name in ("Frame", "FrameDecoder", "Message", "Reassembler", "SendQueue"):
        assert getattr(core, name) is getattr(expected, name), name
    assert core.encode_frame is expected.encode_frame
    assert core.encode_media is expected.encode_media
    assert core.deliver is expected.deliver


def _compiled_flag_in_subprocess(**env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINKRELAY_")}
    env.update(env_overrides)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pinkrelay._core as c; print(c.COMPILED, c.Frame.__module__)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.split()


def test_purepython_variable_selects_reference_in_a_fresh_interpreter():
    assert _compiled_flag_in_subprocess(PINKRELAY_PUREPYTHON="1") == [
        "False",
        "pinkrelay._core.reference",
    ]


@pytest.mark.compiled_only
def test_compiled_core_is_the_default_in_a_fresh_interpreter():
    _compiled()
    assert _compiled_flag_in_subprocess() == ["True", "pinkrelay._core._cpinkrelay"]


# -- constants ------------------------------------------------------------------


def test_wire_tables_are_self_consistent():
    assert HEADER.size == wire.HEADER_SIZE == 24
    assert wire.MAGIC == b"PR" and len(wire.MAGIC) == 2
    assert wire.LANE_COUNT == len(wire.Lane) == len(wire.LANE_WEIGHTS)
    assert set(wire.TYPE_LANE) == set(wire.FrameType) - {wire.FrameType.MEDIA}
    assert wire.FLAGS_KNOWN == 0x03
    assert checks.KNOWN_TYPES == {int(t) for t in wire.FrameType}
    assert checks._TYPE_LANE == {int(k): int(v) for k, v in wire.TYPE_LANE.items()}
    # Urgent lanes get at least as many turns as less urgent ones.
    assert list(wire.LANE_WEIGHTS) == sorted(wire.LANE_WEIGHTS, reverse=True)
    assert (wire.QUEUED, wire.DROPPED, wire.OVERFLOW) == (0, 1, 2)


def test_error_classes_are_protocol_and_value_errors():
    for cls in (FrameError, LimitExceeded):
        assert issubclass(cls, ProtocolError)
        assert issubclass(cls, ValueError)
    assert FrameError("x").code == "bad-frame"
    assert LimitExceeded("x").code == "limit"


@pytest.mark.compiled_only
def test_compiled_header_layout_matches_wire():
    compiled = _compiled()
    assert compiled.COMPILED is True
    assert reference.COMPILED is False
    assert compiled.HEADER_LAYOUT == (
        wire.HEADER_SIZE,
        wire.VERSION,
        wire.MAGIC[0],
        wire.MAGIC[1],
        int(wire.Flag.KEYFRAME),
        int(wire.Flag.END),
        int(wire.FrameType.MEDIA),
    )


@pytest.mark.parametrize("name", _both())
def test_encoded_header_layout_matches_wire_struct(name):
    mod = _module(name)
    payload = b"\x81\xa1k\x01"
    wire_bytes = mod.encode_frame(0x10, 0, 0, 0x01020304, -5, payload)
    assert wire_bytes == HEADER.pack(b"PR", 1, 0x10, END, 0, 0, 0x01020304, -5, 4) + payload
    chunks = mod.encode_media(
        0xBEEF, 3, 0xFFFFFFFF, 2**63 - 1, b"v" * 5, keyframe=True, chunk_size=3
    )
    assert chunks == [
        HEADER.pack(b"PR", 1, MEDIA, 0x01, 3, 0xBEEF, 0xFFFFFFFF, 2**63 - 1, 3) + b"vvv",
        HEADER.pack(b"PR", 1, MEDIA, 0x03, 3, 0xBEEF, 0xFFFFFFFF, 2**63 - 1, 2) + b"vv",
    ]
    frame = mod.FrameDecoder().decode(chunks[0])[0]
    assert frame.as_tuple() == (MEDIA, 0x01, 3, 0xBEEF, 0xFFFFFFFF, 2**63 - 1, chunks[0])


def _header_is_valid(type_, flags, lane, track):
    """The rule straight from wire.py's tables, independent of checks.py."""
    if flags & ~wire.FLAGS_KNOWN:
        return False
    if type_ == MEDIA:
        return lane in (wire.Lane.AUDIO, wire.Lane.VIDEO) and track != 0
    if type_ not in wire.TYPE_LANE:
        return False
    return lane == wire.TYPE_LANE[type_] and flags == END and track == 0


@pytest.mark.parametrize("name", _both())
def test_type_lane_table_matches_wire_for_every_type(name):
    """Every type 0..255 × lanes × flags × track: valid exactly as wire.py says."""
    mod = _module(name)
    for type_ in range(256):
        for lane in (0, 1, 2, 3, 4, 255):
            for flags in (0, 0x01, END, 0x03, 0x06, 0x80):
                for track in (0, 1):
                    header = HEADER.pack(b"PR", 1, type_, flags, lane, track, 7, 9, 0)
                    decoder = mod.FrameDecoder()
                    try:
                        frames = decoder.decode(header)
                    except FrameError:
                        valid = False
                    else:
                        valid = True
                        assert [f.as_tuple() for f in frames] == [
                            (type_, flags, lane, track, 7, 9, header)
                        ]
                    assert valid == _header_is_valid(type_, flags, lane, track), (
                        type_,
                        flags,
                        lane,
                        track,
                    )
        # A header cut after its type byte already refuses an unknown type.
        decoder = mod.FrameDecoder()
        known = type_ in checks.KNOWN_TYPES
        try:
            assert decoder.decode(bytes([0x50, 0x52, 1, type_])) == []
        except FrameError as error:
            assert not known
            assert f"unknown frame type {type_:#04x}" in str(error)
        else:
            assert known


@pytest.mark.parametrize("name", _both())
def test_lane_weights_match_wire(name):
    """With every lane busy, one scheduler round is LANE_WEIGHTS chunks of each lane."""
    mod = _module(name)
    queue = mod.SendQueue()
    rounds = 3
    for lane, weight in enumerate(wire.LANE_WEIGHTS):
        for i in range(weight * rounds + 2):
            if lane < 2:
                type_ = 0x10 if lane == 0 else 0x07
                chunks = [mod.encode_frame(type_, lane, 0, i, 0, b"")]
            else:
                chunks = mod.encode_media(1, lane, i, 0, b"x")
            assert (
                queue.push(lane, chunks, track=1 if lane >= 2 else 0, keyframe=True) == wire.QUEUED
            )
    order = []
    for _ in range(sum(wire.LANE_WEIGHTS) * rounds):
        (buffer,) = queue.peek(max_buffers=1)
        order.append(bytes(buffer)[5])  # the lane byte
        queue.consume(len(buffer))
    one_round = [lane for lane, weight in enumerate(wire.LANE_WEIGHTS) for _ in range(weight)]
    assert order == one_round * rounds


@pytest.mark.parametrize("name", _both())
def test_default_limits_match_wire(name):
    mod = _module(name)
    decoder = mod.FrameDecoder()
    assert decoder.max_frame_bytes == wire.Limits.MAX_FRAME_BYTES
    assert decoder.max_control_bytes == wire.Limits.MAX_CONTROL_BYTES
    reassembler = mod.Reassembler()
    assert reassembler.max_message_bytes == wire.Limits.MAX_MESSAGE_BYTES
    assert reassembler.max_chunks_per_message == wire.Limits.MAX_CHUNKS_PER_MESSAGE
    queue = mod.SendQueue()
    assert queue.max_video_bytes == wire.QueueDefaults.MAX_VIDEO_BYTES
    assert queue.max_video_age == wire.QueueDefaults.MAX_VIDEO_AGE
    assert queue.max_audio_bytes == wire.QueueDefaults.MAX_AUDIO_BYTES
    assert queue.max_control_bytes == wire.QueueDefaults.MAX_CONTROL_BYTES
    # Default chunking is CHUNK_SIZE payload bytes per frame.
    chunks = mod.encode_media(1, 3, 0, 0, bytes(wire.Limits.CHUNK_SIZE + 1))
    assert [len(c) - wire.HEADER_SIZE for c in chunks] == [wire.Limits.CHUNK_SIZE, 1]


@pytest.mark.parametrize("name", _both())
def test_write_batch_limits_match_reference(name):
    """peek() defaults: at most 64 buffers, stopping once 256 KiB are offered."""
    mod = _module(name)
    queue = mod.SendQueue()
    for i in range(100):
        queue.push(0, [mod.encode_frame(0x10, 0, 0, i, 0, b"a")])
    assert len(queue.peek()) == reference._IOV_MAX_BUFFERS == 64
    queue = mod.SendQueue()
    big = mod.encode_media(1, 3, 0, 0, bytes(60000), keyframe=True, chunk_size=60000)
    for _ in range(10):
        queue.push(3, big, track=1, keyframe=True)
    offered = queue.peek()
    sizes = [len(b) for b in offered]
    assert sum(sizes[:-1]) < reference._WRITE_MAX_BYTES <= sum(sizes)

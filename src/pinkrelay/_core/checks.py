"""Header rules and the errors that report their breach, shared by both cores.

The compiled core tests the same rules in C and calls these functions only on
the error path, so both cores raise the same class with the same words.
The order of the checks in ``check_fields`` is part of the specification:
the first failing check names the error, whatever else is wrong.
"""

from __future__ import annotations

from typing import NoReturn

from ..errors import FrameError, LimitExceeded
from .wire import FLAGS_KNOWN, MAGIC, TYPE_LANE, VERSIONS, Flag, FrameType, Lane

_END = int(Flag.END)
_MEDIA = int(FrameType.MEDIA)
KNOWN_TYPES = frozenset(int(t) for t in FrameType)
_TYPE_LANE = {int(k): int(v) for k, v in TYPE_LANE.items()}


def check_fields(type: int, flags: int, lane: int, track: int) -> None:
    """Raise FrameError for a header whose fields contradict each other."""
    if type not in KNOWN_TYPES:
        raise FrameError(f"unknown frame type {type:#04x}; closing the connection")
    if flags & ~FLAGS_KNOWN:
        raise FrameError(
            f"reserved flag bits {flags & ~FLAGS_KNOWN:#04x} set in frame type {type:#04x}; "
            "closing the connection"
        )
    if type == _MEDIA:
        if lane != Lane.AUDIO and lane != Lane.VIDEO:
            raise FrameError(f"media frame in lane {lane}; media uses lane 2 (audio) or 3 (video)")
        if track == 0:
            raise FrameError("media frame on track 0; media tracks are numbered from 1")
        return
    expected = _TYPE_LANE[type]
    if lane != expected:
        raise FrameError(f"frame type {type:#04x} in lane {lane}; it belongs in lane {expected}")
    if flags != _END:
        raise FrameError(
            f"frame type {type:#04x} has flags {flags:#04x}; control frames are never "
            "chunked and carry exactly the END flag (0x02)"
        )
    if track != 0:
        raise FrameError(f"frame type {type:#04x} on track {track}; control frames use track 0")


def bad_magic(magic: bytes) -> NoReturn:
    raise FrameError(
        f"bad magic {magic.hex()} (expected {MAGIC.hex()}): not a pinkrelay v1 stream, "
        "or the stream lost its framing; closing the connection"
    )


def bad_version(version: int) -> NoReturn:
    raise FrameError(
        f"unsupported protocol version {version} (this side speaks {' and '.join(map(str, VERSIONS))}); "
        "closing the connection"
    )


def frame_too_long(length: int, limit: int, track: int) -> NoReturn:
    raise LimitExceeded(
        f"frame length {length} exceeds max_frame_bytes {limit} (track {track}); "
        "closing the connection"
    )


def control_too_long(type: int, length: int, limit: int) -> NoReturn:
    raise LimitExceeded(
        f"control frame type {type:#04x} length {length} exceeds max_control_bytes {limit}; "
        "closing the connection"
    )


def message_too_big(track: int, seq: int, size: int, limit: int) -> NoReturn:
    raise LimitExceeded(
        f"message seq {seq} on track {track} reached {size} bytes, above "
        f"max_message_bytes {limit}; closing the connection"
    )


def too_many_chunks(track: int, seq: int, limit: int) -> NoReturn:
    raise LimitExceeded(
        f"message seq {seq} on track {track} exceeds max_chunks_per_message {limit}; "
        "closing the connection"
    )


def too_many_partial_tracks(limit: int) -> NoReturn:
    raise LimitExceeded(
        f"more than {limit} tracks with a half-received message; closing the connection"
    )


def message_interrupted(
    track: int, seq: int, new_seq: int, timestamp: int, lane: int, keyframe: bool
) -> NoReturn:
    raise FrameError(
        f"message seq {seq} on track {track} interrupted by a chunk of seq {new_seq} "
        f"(timestamp {timestamp}, lane {lane}, keyframe {keyframe}) before its END chunk; "
        "closing the connection"
    )


def check_prefix(prefix: bytes) -> None:
    """Check the first bytes of a header that has not fully arrived yet."""
    if len(prefix) >= 1 and prefix[0] != MAGIC[0]:
        bad_magic(prefix[:2])
    if len(prefix) >= 2 and prefix[1] != MAGIC[1]:
        bad_magic(prefix[:2])
    if len(prefix) >= 3 and prefix[2] not in VERSIONS:
        bad_version(prefix[2])
    if len(prefix) >= 4 and prefix[3] not in KNOWN_TYPES:
        check_fields(prefix[3], _END, 0, 0)

"""Wire protocol v1 constants: the one table both cores and the docs agree on.

``docs/protocol.md`` is the prose for these numbers. The compiled core
declares the same values in its ``cdef enum``; ``tests/test_core_constants.py``
checks that the two never drift apart.
"""

from __future__ import annotations

import enum
import struct

MAGIC = b"PR"
VERSION = 1
#: The header version of a frame whose track id is above 65535 (docs/protocol.md §2.5): only peers that
#: offered version 2 in ``hello`` are given such ids. Every other frame keeps version 1.
VERSION_WIDE = 2
VERSIONS = (VERSION, VERSION_WIDE)

#: magic, version, type, flags, lane, track, sequence, timestamp (µs), payload length
HEADER = struct.Struct(">2sBBBBHIqI")
HEADER_SIZE = HEADER.size  # 24 bytes

MAX_TRACK_ID = 0xFFFF
#: Protocol v2 (negotiated in hello/welcome) widens the track id to 22 bits (docs/protocol.md §2.5).
MAX_TRACK_ID_V2 = 0x3FFFFF
MAX_SEQUENCE = 0xFFFFFFFF


class FrameType(enum.IntEnum):
    """What a frame carries. Every type except MEDIA has a msgpack body."""

    HELLO = 0x01
    CHALLENGE = 0x02
    AUTH = 0x03
    WELCOME = 0x04
    ERROR = 0x05
    GOODBYE = 0x06
    HEARTBEAT = 0x07
    ALERT = 0x10
    ALERT_ACK = 0x11
    ALERT_UPDATE = 0x12
    BUTTON_STATE = 0x13
    STREAM_DESCRIPTION = 0x20
    SUBSCRIBE = 0x21
    UNSUBSCRIBE = 0x22
    KEYFRAME_REQUEST = 0x23
    SUBSCRIBED = 0x24
    TALKBACK = 0x30
    MEDIA = 0x40


class Lane(enum.IntEnum):
    """Priority lanes, most urgent first. A sender drains lower numbers first."""

    ALERT = 0
    CONTROL = 1
    AUDIO = 2
    VIDEO = 3


class Flag(enum.IntFlag):
    """Header flags. Bits not named here are reserved and must be zero."""

    KEYFRAME = 0x01
    END = 0x02


FLAGS_KNOWN = int(Flag.KEYFRAME | Flag.END)
LANE_COUNT = 4

#: The lane every non-media frame type must travel in. MEDIA uses AUDIO or VIDEO.
TYPE_LANE: dict[int, int] = {
    FrameType.HELLO: Lane.CONTROL,
    FrameType.CHALLENGE: Lane.CONTROL,
    FrameType.AUTH: Lane.CONTROL,
    FrameType.WELCOME: Lane.CONTROL,
    FrameType.ERROR: Lane.CONTROL,
    FrameType.GOODBYE: Lane.CONTROL,
    FrameType.HEARTBEAT: Lane.CONTROL,
    FrameType.ALERT: Lane.ALERT,
    FrameType.ALERT_ACK: Lane.ALERT,
    FrameType.ALERT_UPDATE: Lane.ALERT,
    FrameType.BUTTON_STATE: Lane.ALERT,
    FrameType.STREAM_DESCRIPTION: Lane.CONTROL,
    FrameType.SUBSCRIBE: Lane.CONTROL,
    FrameType.UNSUBSCRIBE: Lane.CONTROL,
    FrameType.KEYFRAME_REQUEST: Lane.CONTROL,
    FrameType.SUBSCRIBED: Lane.CONTROL,
    # An operator's voice to a button: only the alert lane goes ahead of it (protocol.md §4.1).
    FrameType.TALKBACK: Lane.CONTROL,
}

#: Scheduler weights: chunks a lane may send per round while every lane has
#: work queued. Alerts win every round; video still gets one chunk in 85.
LANE_WEIGHTS = (64, 16, 4, 1)


class Limits:
    """Default receive limits. Exceeding one is a protocol error.

    The relay announces its own values in ``welcome``; these are the
    defaults every implementation must accept at least.
    """

    MAX_FRAME_BYTES = 64 * 1024
    MAX_CONTROL_BYTES = 16 * 1024
    MAX_MESSAGE_BYTES = 4 * 1024 * 1024
    MAX_CHUNKS_PER_MESSAGE = 256
    MAX_MSGPACK_DEPTH = 8
    MAX_TRACKS = 8
    CHUNK_SIZE = 16 * 1024


#: Queue bounds for one outbound connection (see SendQueue).
class QueueDefaults:
    MAX_VIDEO_BYTES = 4 * 1024 * 1024
    MAX_VIDEO_AGE = 1.0
    MAX_AUDIO_BYTES = 256 * 1024
    MAX_CONTROL_BYTES = 2 * 1024 * 1024


#: What SendQueue.push reports.
QUEUED = 0
DROPPED = 1
OVERFLOW = 2

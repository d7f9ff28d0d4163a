"""What the relay checks in an H.264 media message before it forwards it (docs/protocol.md §5.17).

Only what is cheap: a video message must begin with an Annex B start code,
and its KEYFRAME flag must agree with its NAL unit types. The flag is what
the relay's GOP cache and every console's "start at a keyframe" rule trust,
so a lie in either direction would leave consoles without a decodable
picture; the button is told at once (``bad-message``) instead. A message
without the flag costs five bytes of reading; one with it (about one a
second per stream) is scanned for an IDR slice. That a message holds exactly
one access unit is a rule the relay does not check. Sans-IO: bytes in, an
exception out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._core import HEADER_SIZE, Lane
from ..errors import MessageError

_START = b"\x00\x00\x01"
NAL_IDR = 5
NAL_SPS = 7


def check_h264(message: Any) -> None:
    """Raise MessageError if an H.264 message is not Annex B or its KEYFRAME flag contradicts its NAL types."""
    head = bytes(message.chunks[0][HEADER_SIZE : HEADER_SIZE + 5])
    if head[:3] == _START:
        first = head[3] & 0x1F if len(head) > 3 else -1
    elif head[:4] == b"\x00" + _START:
        first = head[4] & 0x1F if len(head) > 4 else -1
    else:
        raise MessageError(
            f"video message {message.seq} on track {message.track} does not start with an Annex B start code "
            f"(00 00 01 or 00 00 00 01; it starts {head[:4].hex(' ')}): send one H.264 access unit per "
            "message, in Annex B form (§5.17); closing the connection"
        )
    if message.keyframe:
        if not _has_idr(message.payload()):
            raise MessageError(
                f"video message {message.seq} on track {message.track} has the KEYFRAME flag but no IDR slice "
                "(NAL type 5): set the flag on IDR access units only (§5.17); closing the connection"
            )
    elif first in (NAL_IDR, NAL_SPS):
        raise MessageError(
            f"video message {message.seq} on track {message.track} begins with NAL type {first} "
            f"({'IDR slice' if first == NAL_IDR else 'SPS'}) but has no KEYFRAME flag: set the flag on every IDR "
            "access unit (§5.17); closing the connection"
        )


def _has_idr(payload: bytes) -> bool:
    size = len(payload)
    find = payload.find
    at = find(_START)
    while at != -1:
        if at + 3 < size and payload[at + 3] & 0x1F == NAL_IDR:
            return True
        at = find(_START, at + 3)
    return False


def checking(sink: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap a relay's media sink (``Connection.media_sink``) so that every video message is checked first.

    Video lanes carry only H.264 (§5.12), so the lane alone says which
    messages to check; a failed check raises inside ``receive_data`` and
    fails the connection like any other protocol error.
    """

    def checked(message: Any, video: int = Lane.VIDEO) -> None:
        if message.lane == video:
            check_h264(message)
        sink(message)

    return checked

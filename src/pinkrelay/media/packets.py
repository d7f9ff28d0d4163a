"""The unit of encoded media that travels from a button to the control room."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EncodedPacket"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedPacket:
    """One compressed video frame or audio frame, independent of any PyAV object.

    Timestamps are integer microseconds counted from the start of the stream so
    that every layer above the media package can reason about time without
    knowing codec time bases. Video ``data`` is H.264 Annex B (start codes);
    audio ``data`` is one raw Opus packet or one raw AAC access unit (no ADTS).
    The class deliberately does no validation: load generators create tens of
    thousands of these per second.
    """

    kind: str
    data: bytes
    pts_us: int
    duration_us: int
    keyframe: bool

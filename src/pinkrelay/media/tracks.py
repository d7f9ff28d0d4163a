"""Description of one encoded track, small enough to travel in a protocol message."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["AUDIO_CODECS", "VIDEO_CODECS", "TrackInfo"]

VIDEO_CODECS = frozenset({"h264"})
AUDIO_CODECS = frozenset({"opus", "aac"})

_FIELD_TYPES: dict[str, type] = {
    "kind": str,
    "codec": str,
    "width": int,
    "height": int,
    "fps": float,
    "sample_rate": int,
    "channels": int,
    "bitrate": int,
    "extradata": bytes,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackInfo:
    """What a receiver needs to decode or record a track without seeing its encoder.

    ``extradata`` is codec configuration in the form decoders expect from an
    elementary stream: for H.264 the SPS and PPS as Annex B (start codes), for
    AAC the AudioSpecificConfig, for Opus the 19-byte ``OpusHead``. It may be
    empty for H.264 before the first keyframe has been encoded; the parameter
    sets are repeated in-band in every keyframe anyway.
    """

    kind: str
    codec: str
    width: int = 0
    height: int = 0
    fps: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    bitrate: int = 0
    extradata: bytes = b""

    def __post_init__(self) -> None:
        if self.kind == "video":
            if self.codec not in VIDEO_CODECS:
                raise ValueError(
                    f"video track codec {self.codec!r} is not supported; use one of {sorted(VIDEO_CODECS)}"
                )
        elif self.kind == "audio":
            if self.codec not in AUDIO_CODECS:
                raise ValueError(
                    f"audio track codec {self.codec!r} is not supported; use one of {sorted(AUDIO_CODECS)}"
                )
        else:
            raise ValueError(f"track kind {self.kind!r} is invalid; use 'video' or 'audio'")

    def to_dict(self) -> dict[str, Any]:
        """Return the track as plain str/int/float/bytes values, ready for msgpack."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackInfo:
        """Rebuild a track from :meth:`to_dict` output, rejecting wrongly typed values.

        Unknown keys are ignored so that newer senders can add fields without
        breaking older receivers.
        """
        if not isinstance(data, dict):
            raise TypeError(f"track info must be a dict, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for name, expected in _FIELD_TYPES.items():
            if name not in data:
                continue
            value = data[name]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif expected is bytes and isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ValueError(
                    f"track info field {name!r} must be {expected.__name__}, got {type(value).__name__}"
                )
            values[name] = value
        for required in ("kind", "codec"):
            if required not in values:
                raise ValueError(f"track info is missing the required field {required!r}")
        return cls(**values)

"""Media capture, encoding, decoding and recording for pinkrelay.

This package is the only part of pinkrelay that imports PyAV (``av``). The
rest of the system sees :class:`EncodedPacket` and :class:`TrackInfo`, plain
values with microsecond timestamps and bytes payloads, and the exceptions in
:mod:`pinkrelay.media.errors`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Where each public name lives. They are imported on first use (PEP 562), so that importing a
#: light module of this package (errors, packets, tracks, h264) does not load PyAV and numpy:
#: a relay without evidence recording never needs them, and they cost it about 35 MB.
_WHERE = {
    "AudioEncoder": "audio_encoder", "opus_available": "audio_encoder",
    "CameraSource": "camera", "Microphone": "camera",
    "Clip": "clip", "encode_clip": "clip",
    "Decoder": "decoder",
    "CodecUnavailable": "errors", "MediaError": "errors", "SourceUnavailable": "errors",
    "FileSource": "file_source",
    "EncodedPacket": "packets",
    "TestPatternSource": "pattern",
    "Recorder": "recorder",
    "RtspSource": "rtsp", "UnsupportedStream": "rtsp",
    "MediaSource": "sources", "SyntheticSource": "sources", "open_source": "sources",
    "ToneSource": "tone",
    "TrackInfo": "tracks",
    "VideoEncoder": "video_encoder",
    "h264": "h264",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    loaded = importlib.import_module(f".{module}", __name__)
    value = loaded if name == module else getattr(loaded, name)
    globals()[name] = value
    return value


__all__ = [
    "AudioEncoder",
    "CameraSource",
    "Clip",
    "CodecUnavailable",
    "Decoder",
    "EncodedPacket",
    "FileSource",
    "MediaError",
    "MediaSource",
    "Microphone",
    "Recorder",
    "RtspSource",
    "SourceUnavailable",
    "SyntheticSource",
    "TestPatternSource",
    "ToneSource",
    "TrackInfo",
    "UnsupportedStream",
    "VideoEncoder",
    "encode_clip",
    "h264",
    "opus_available",
    "open_source",
]

"""Media capture, encoding, decoding and recording for pinkrelay.

This package is the only part of pinkrelay that imports PyAV (``av``). The
rest of the system sees :class:`EncodedPacket` and :class:`TrackInfo`, plain
values with microsecond timestamps and bytes payloads, and the exceptions in
:mod:`pinkrelay.media.errors`.
"""

from __future__ import annotations

from . import h264
from .audio_encoder import AudioEncoder, opus_available
from .camera import CameraSource, Microphone
from .clip import Clip, encode_clip
from .decoder import Decoder
from .errors import CodecUnavailable, MediaError, SourceUnavailable
from .file_source import FileSource
from .packets import EncodedPacket
from .pattern import TestPatternSource
from .recorder import Recorder
from .rtsp import RtspSource, UnsupportedStream
from .sources import MediaSource, SyntheticSource, open_source
from .tone import ToneSource
from .tracks import TrackInfo
from .video_encoder import VideoEncoder

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

"""Decoder for received tracks, used by consoles, recorders that transcode, and tests."""

from __future__ import annotations

import av

from . import h264
from ._audio import channel_layout
from ._timebase import MICROSECOND
from .errors import CodecUnavailable, MediaError
from .packets import EncodedPacket
from .tracks import TrackInfo

__all__ = ["Decoder"]

_DECODERS = {"h264": "h264", "opus": "opus", "aac": "aac"}


class Decoder:
    """Turn :class:`EncodedPacket` objects (or raw payload bytes) back into PyAV frames.

    H.264 decoding can begin at any keyframe: packets before the first
    keyframe are skipped (counted in ``skipped_packets``) instead of producing
    broken pictures, which is what a console joining a running stream needs.
    Video uses slice threading only, so each packet yields its frame at once.
    Frames carry ``pts`` in microseconds (``time_base`` 1/1000000).
    """

    def __init__(self, track_info: TrackInfo, *, threads: int = 0) -> None:
        self.track_info = track_info
        name = _DECODERS[track_info.codec]
        try:
            context = av.CodecContext.create(name, "r")
        except (av.FFmpegError, ValueError) as err:
            raise CodecUnavailable(
                f"{track_info.codec} decoder is not available in this PyAV build ({err}); "
                "install the PyPI 'av' wheel, which includes it"
            ) from err
        if track_info.extradata:
            context.extradata = track_info.extradata
        if track_info.kind == "video":
            context.thread_type = "SLICE"
            context.thread_count = threads
        else:
            if track_info.sample_rate:
                context.sample_rate = track_info.sample_rate
            if track_info.channels:
                context.layout = channel_layout(track_info.channels)
        try:
            context.open()
        except av.FFmpegError as err:
            raise MediaError(f"cannot open the {track_info.codec} decoder for {track_info}: {err}") from err
        self._context = context
        self._video = track_info.kind == "video"
        self._waiting_for_keyframe = self._video
        self.decoded_frames = 0
        self.skipped_packets = 0

    def decode(self, packet: EncodedPacket | bytes, pts_us: int | None = None) -> list[av.VideoFrame | av.AudioFrame]:
        """Decode one packet; ``pts_us`` overrides (or, for bytes, supplies) its timestamp."""
        if isinstance(packet, EncodedPacket):
            data = packet.data
            keyframe = packet.keyframe
            pts = packet.pts_us if pts_us is None else pts_us
        else:
            data = bytes(packet)
            keyframe = self._video and h264.is_keyframe(data)
            pts = pts_us
        if self._waiting_for_keyframe:
            if not keyframe:
                self.skipped_packets += 1
                return []
            self._waiting_for_keyframe = False
        av_packet = av.Packet(data)
        if pts is not None:
            av_packet.pts = pts
            av_packet.dts = pts
            av_packet.time_base = MICROSECOND
        try:
            frames = self._context.decode(av_packet)
        except av.FFmpegError as err:
            raise MediaError(
                f"cannot decode {self.track_info.codec} packet of {len(data)} bytes at pts {pts} us: {err}; "
                "for video, restart from the next keyframe"
            ) from err
        self.decoded_frames += len(frames)
        return frames

    def flush(self) -> list[av.VideoFrame | av.AudioFrame]:
        """Return frames still held by the decoder at the end of a stream."""
        try:
            frames = self._context.decode(None)
        except av.EOFError:
            return []
        self.decoded_frames += len(frames)
        return frames

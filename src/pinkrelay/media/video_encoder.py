"""Live H.264 encoder tuned for panic-button streams.

Consoles join a stream at arbitrary moments and must show a picture quickly,
so the encoder uses a fixed GOP with closed, IDR-only keyframes, repeats
SPS/PPS in front of every IDR, never uses B-frames (no reordering delay,
``dts == pts``) and runs x264's zero-latency tuning.
"""

from __future__ import annotations

import av

from . import h264
from ._timebase import MICROSECOND, frame_rate, to_us
from .errors import CodecUnavailable, MediaError
from .packets import EncodedPacket
from .tracks import TrackInfo

__all__ = ["VideoEncoder"]

_PRESETS = ("ultrafast", "superfast", "veryfast")


class VideoEncoder:
    """Encode ``av.VideoFrame`` objects to Annex B H.264 :class:`EncodedPacket` objects.

    Frames of another size or pixel format are converted on the way in.
    Timestamps come from the frame (``pts`` and ``time_base``) when present,
    otherwise from the frame count and ``fps``; they are forced to increase.
    The caller's frame is left unchanged.
    The encoder's time base is one microsecond, so packet ``pts_us`` is exact.
    ``track_info.extradata`` holds SPS+PPS (Annex B) once the first keyframe
    has been produced.
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        bitrate: int,
        gop_seconds: float = 1.0,
        *,
        preset: str = "ultrafast",
        threads: int = 0,
    ) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"video size {width}x{height} is invalid; H.264 4:2:0 needs positive even dimensions")
        if bitrate <= 0:
            raise ValueError(f"video bitrate must be positive bits/s, got {bitrate}")
        if preset not in _PRESETS:
            raise ValueError(f"x264 preset {preset!r} is not allowed for live video; use one of {_PRESETS}")
        rate = frame_rate(fps)
        keyint = max(1, round(float(rate) * gop_seconds))
        try:
            context = av.CodecContext.create("libx264", "w")
        except (av.FFmpegError, ValueError) as err:
            raise CodecUnavailable(
                f"H.264 encoder libx264 is not available in this PyAV build ({err}); install the PyPI 'av' wheel, "
                "which bundles libx264"
            ) from err
        context.width = width
        context.height = height
        context.pix_fmt = "yuv420p"
        context.time_base = MICROSECOND
        context.framerate = rate
        context.bit_rate = bitrate
        context.gop_size = keyint
        context.max_b_frames = 0
        context.thread_count = threads
        kbits = max(1, bitrate // 1000)
        context.options = {
            "preset": preset,
            "tune": "zerolatency",
            "forced-idr": "1",
            "x264-params": (
                f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0:open-gop=0:"
                f"repeat-headers=1:vbv-maxrate={kbits}:vbv-bufsize={kbits}"
            ),
        }
        try:
            context.open()
        except av.FFmpegError as err:
            raise MediaError(f"cannot open libx264 for {width}x{height} at {fps} fps, {bitrate} b/s: {err}") from err
        self._context = context
        self._rate = rate
        self._frame_duration_us = round(1_000_000 / rate)
        self._keyint = keyint
        self._count = 0
        self._last_pts_us = -1
        self._force_keyframe = False
        self._pict_type_i = av.video.frame.PictureType.I
        self._pict_type_none = av.video.frame.PictureType.NONE
        self._info = TrackInfo(kind="video", codec="h264", width=width, height=height, fps=float(rate), bitrate=bitrate)

    @property
    def track_info(self) -> TrackInfo:
        """The track description; ``extradata`` is empty until the first keyframe is out."""
        return self._info

    @property
    def keyframe_interval(self) -> int:
        """Frames from one scheduled keyframe to the next (``fps * gop_seconds``)."""
        return self._keyint

    def force_keyframe(self) -> None:
        """Make the next encoded frame an IDR, e.g. when a console asks for a fresh picture.

        The regular GOP then restarts from that frame.
        """
        self._force_keyframe = True

    def encode(self, frame: av.VideoFrame) -> list[EncodedPacket]:
        """Encode one frame; with zero-latency tuning this returns its packet right away."""
        context = self._context
        if frame.width != context.width or frame.height != context.height or frame.format.name != "yuv420p":
            frame = frame.reformat(width=context.width, height=context.height, format="yuv420p")
        if frame.pts is not None and frame.time_base is not None:
            pts_us = to_us(frame.pts, frame.time_base)
        else:
            pts_us = round(self._count * 1_000_000 / self._rate)
        if pts_us <= self._last_pts_us:
            pts_us = self._last_pts_us + 1
        self._last_pts_us = pts_us
        self._count += 1
        saved = (frame.pts, frame.time_base, frame.pict_type)
        frame.pts = pts_us
        frame.time_base = MICROSECOND
        frame.pict_type = self._pict_type_i if self._force_keyframe else self._pict_type_none
        self._force_keyframe = False
        try:
            packets = context.encode(frame)
        except av.FFmpegError as err:
            raise MediaError(f"H.264 encoding failed at pts {pts_us} us: {err}") from err
        finally:
            frame.pts, frame.time_base, frame.pict_type = saved
        return self._convert(packets)

    def flush(self) -> list[EncodedPacket]:
        """Drain the encoder at the end of a stream; it cannot be used afterwards."""
        try:
            return self._convert(self._context.encode(None))
        except av.EOFError:
            return []

    def _convert(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        out = []
        for packet in packets:
            data = bytes(packet)
            keyframe = packet.is_keyframe
            if keyframe and not self._info.extradata:
                self._learn_parameter_sets(data)
            out.append(
                EncodedPacket(
                    kind="video",
                    data=data,
                    pts_us=packet.pts,
                    duration_us=self._frame_duration_us,
                    keyframe=keyframe,
                )
            )
        return out

    def _learn_parameter_sets(self, data: bytes) -> None:
        sps, pps = h264.parameter_sets(data)
        if sps and pps:
            self._info = TrackInfo(
                kind="video",
                codec="h264",
                width=self._info.width,
                height=self._info.height,
                fps=self._info.fps,
                bitrate=self._info.bitrate,
                extradata=h264.join_annexb(sps + pps),
            )

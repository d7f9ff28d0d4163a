"""Live audio encoder: Opus for speech at low bitrate, AAC where Opus is missing or unwanted."""

from __future__ import annotations

from fractions import Fraction

import av

from ._audio import channel_layout
from ._timebase import to_us
from .errors import CodecUnavailable, MediaError
from .packets import EncodedPacket
from .tracks import TrackInfo

__all__ = ["AudioEncoder", "opus_available"]

_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


def opus_available() -> bool:
    """Tell whether this PyAV build can encode Opus (through libopus)."""
    return "libopus" in av.codecs_available


class AudioEncoder:
    """Encode ``av.AudioFrame`` objects to raw Opus or AAC :class:`EncodedPacket` objects.

    Input of any sample format, layout, rate or frame size is converted and
    re-framed to what the codec needs; input timestamps are ignored because
    captured audio is continuous, and packets are stamped by sample count.
    ``codec="opus"`` falls back to AAC when libopus is not built in; check
    ``track_info.codec`` for what was chosen.

    The first packet has ``pts_us == 0``: the encoder's priming samples (312
    for Opus, 1024 for AAC) are counted as part of the stream rather than
    given negative timestamps, which delays the audio by at most 21 ms.
    ``track_info.extradata`` is the ``OpusHead`` or the AAC AudioSpecificConfig.
    """

    def __init__(self, codec: str = "opus", sample_rate: int = 48000, channels: int = 1, bitrate: int = 32000) -> None:
        if codec not in ("opus", "aac"):
            raise ValueError(f"audio codec {codec!r} is not supported; use 'opus' or 'aac'")
        if bitrate <= 0:
            raise ValueError(f"audio bitrate must be positive bits/s, got {bitrate}")
        layout = channel_layout(channels)
        if codec == "opus" and not opus_available():
            codec = "aac"
        if codec == "opus" and sample_rate not in _OPUS_RATES:
            raise ValueError(f"Opus cannot run at {sample_rate} Hz; use one of {_OPUS_RATES}")
        encoder_name = "libopus" if codec == "opus" else "aac"
        try:
            context = av.CodecContext.create(encoder_name, "w")
        except (av.FFmpegError, ValueError) as err:
            raise CodecUnavailable(
                f"audio encoder {encoder_name} is not available in this PyAV build ({err}); "
                "install the PyPI 'av' wheel, which bundles libopus and the native AAC encoder"
            ) from err
        formats = [f.name for f in context.codec.audio_formats or ()]
        context.format = "s16" if "s16" in formats else formats[0]
        context.sample_rate = sample_rate
        context.layout = layout
        context.bit_rate = bitrate
        context.time_base = Fraction(1, sample_rate)
        if codec == "opus":
            context.options = {"application": "voip", "frame_duration": "20"}
        try:
            context.open()
        except av.FFmpegError as err:
            raise MediaError(
                f"cannot open {encoder_name} at {sample_rate} Hz, {channels} channel(s), {bitrate} b/s: {err}"
            ) from err
        self._context = context
        self._format = context.format.name
        self._layout = layout
        self._sample_rate = sample_rate
        self._frame_size = context.frame_size
        self._time_base = context.time_base
        self._resampler: av.AudioResampler | None = None
        self._samples = 0
        self._shift: int | None = None
        self._info = TrackInfo(
            kind="audio",
            codec=codec,
            sample_rate=sample_rate,
            channels=channels,
            bitrate=bitrate,
            extradata=bytes(context.extradata or b""),
        )

    @property
    def track_info(self) -> TrackInfo:
        """The track description, including codec extradata."""
        return self._info

    @property
    def frame_size(self) -> int:
        """Samples per channel in each encoded packet (960 for 20 ms Opus at 48 kHz, 1024 for AAC)."""
        return self._frame_size

    def encode(self, frame: av.AudioFrame) -> list[EncodedPacket]:
        """Encode one frame of any size; returns the packets completed so far (possibly none)."""
        if self._resampler is None and self._fits(frame):
            return self._encode_native(frame)
        if self._resampler is None:
            self._resampler = av.AudioResampler(
                format=self._format, layout=self._layout, rate=self._sample_rate, frame_size=self._frame_size
            )
        packets: list[EncodedPacket] = []
        for converted in self._resampler.resample(frame):
            packets += self._encode_native(converted)
        return packets

    def flush(self) -> list[EncodedPacket]:
        """Encode any buffered samples and drain the encoder; it cannot be used afterwards."""
        packets: list[EncodedPacket] = []
        if self._resampler is not None:
            for converted in self._resampler.resample(None):
                packets += self._encode_native(converted)
        try:
            packets += self._convert(self._context.encode(None))
        except av.EOFError:
            pass
        return packets

    def _fits(self, frame: av.AudioFrame) -> bool:
        return (
            frame.samples == self._frame_size
            and frame.sample_rate == self._sample_rate
            and frame.format.name == self._format
            and frame.layout.name == self._layout
        )

    def _encode_native(self, frame: av.AudioFrame) -> list[EncodedPacket]:
        saved = (frame.pts, frame.time_base)
        frame.pts = self._samples
        frame.time_base = self._time_base
        self._samples += frame.samples
        try:
            packets = self._context.encode(frame)
        except av.FFmpegError as err:
            raise MediaError(f"{self._info.codec} encoding failed at sample {frame.pts}: {err}") from err
        finally:
            frame.pts, frame.time_base = saved
        return self._convert(packets)

    def _convert(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        out = []
        time_base = self._time_base
        for packet in packets:
            if self._shift is None:
                self._shift = max(0, -packet.pts)
            out.append(
                EncodedPacket(
                    kind="audio",
                    data=bytes(packet),
                    pts_us=to_us(packet.pts + self._shift, time_base),
                    duration_us=to_us(packet.duration or self._frame_size, time_base),
                    keyframe=True,
                )
            )
        return out

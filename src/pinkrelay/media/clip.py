"""Pre-encoded clips: encode once, replay for any number of simulated buttons."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .audio_encoder import AudioEncoder
from .packets import EncodedPacket
from .pattern import TestPatternSource
from .tone import ToneSource
from .tracks import TrackInfo
from .video_encoder import VideoEncoder

__all__ = ["Clip", "encode_clip"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Clip:
    """Encoded video and audio of a test pattern, packets interleaved in ``pts_us`` order.

    Encoding live video for hundreds of simulated buttons would need hundreds
    of CPU cores; replaying one clip costs almost nothing. The clip starts
    with a keyframe, so every repetition is decodable on its own.
    """

    video: TrackInfo
    audio: TrackInfo
    packets: tuple[EncodedPacket, ...]
    duration_us: int

    def replay(self, start_pts_us: int = 0) -> Iterator[EncodedPacket]:
        """Yield the clip's packets forever, shifted to start at ``start_pts_us``.

        Each repetition is offset by ``duration_us``, so timestamps keep
        increasing per track across the loop. Packet payloads are shared, not
        copied. Pacing in real time is the caller's job.
        """
        offset = start_pts_us
        packets = self.packets
        duration = self.duration_us
        while True:
            for packet in packets:
                yield EncodedPacket(
                    kind=packet.kind,
                    data=packet.data,
                    pts_us=packet.pts_us + offset,
                    duration_us=packet.duration_us,
                    keyframe=packet.keyframe,
                )
            offset += duration


def encode_clip(
    seconds: float,
    width: int = 640,
    height: int = 360,
    fps: float = 30,
    bitrate: int = 1_000_000,
    audio: str = "opus",
    label: str = "clip",
    *,
    gop_seconds: float = 1.0,
    sample_rate: int = 48000,
    channels: int = 1,
    audio_bitrate: int = 32000,
) -> Clip:
    """Encode ``seconds`` of test pattern (with ``label``) and tone into a :class:`Clip`.

    The clip lasts a whole number of video frames; audio packets starting
    after its end are dropped so repetitions do not overlap.
    """
    pattern = TestPatternSource(width, height, fps, label, start_time=0.0)
    frame_count = round(seconds * pattern.fps)
    if frame_count < 1:
        raise ValueError(f"a clip of {seconds} s at {fps} fps has no frames; ask for at least one frame's worth")
    video_encoder = VideoEncoder(width, height, fps, bitrate, gop_seconds)
    video_packets: list[EncodedPacket] = []
    for n in range(frame_count):
        video_packets += video_encoder.encode(pattern.frame(n))
    video_packets += video_encoder.flush()
    duration_us = round(frame_count * pattern.time_base * 1_000_000)

    tone = ToneSource(sample_rate, channels)
    audio_encoder = AudioEncoder(audio, sample_rate, channels, audio_bitrate)
    audio_packets: list[EncodedPacket] = []
    tone_frames = -(-duration_us * sample_rate // (1_000_000 * tone.samples_per_frame))
    for n in range(tone_frames):
        audio_packets += audio_encoder.encode(tone.frame(n))
    audio_packets += audio_encoder.flush()
    audio_packets = [packet for packet in audio_packets if packet.pts_us < duration_us]

    order = {"video": 0, "audio": 1}
    packets = sorted(video_packets + audio_packets, key=lambda p: (p.pts_us, order[p.kind]))
    return Clip(
        video=video_encoder.track_info,
        audio=audio_encoder.track_info,
        packets=tuple(packets),
        duration_us=duration_us,
    )

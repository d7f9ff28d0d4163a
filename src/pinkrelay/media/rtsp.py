"""An IP camera's RTSP stream as encoded packets: H.264 is passed through, never re-encoded.

PyAV opens the stream over RTSP/TCP and demuxes it; each packet becomes an
EncodedPacket with microsecond timestamps from the stream's own clock.
Video must be H.264 (the relay and every console decode only that) and
audio, if any, AAC or Opus. A camera that sends another codec (HEVC, MJPEG)
is refused with a message saying which setting to change. Blocking calls
(opening, reading) run in a worker thread of the caller's choosing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import av

from . import h264
from .errors import MediaError, SourceUnavailable
from .packets import EncodedPacket
from .tracks import AUDIO_CODECS, VIDEO_CODECS, TrackInfo

__all__ = ["RtspSource", "UnsupportedStream"]


class UnsupportedStream(MediaError, ValueError):
    """The camera's stream uses a codec the relay does not carry; the message names the camera setting."""


@dataclass(frozen=True, slots=True)
class _Track:
    index: int
    kind: str
    time_base: float


class RtspSource:
    """One open RTSP session; ``tracks`` describe it, ``packets()`` yields until it ends or fails."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self._stopping = False
        try:
            self._container = av.open(url, options={"rtsp_transport": "tcp"}, timeout=(timeout, timeout))
        except (av.FFmpegError, OSError) as error:
            raise SourceUnavailable(f"camera {url}: cannot open the RTSP stream ({error}); check the URL, "
                                    "the camera's address and that it is on") from None
        try:
            self.tracks, self._by_index = self._describe()
        except MediaError:
            self._container.close()
            raise

    def _describe(self) -> tuple[list[TrackInfo], dict[int, _Track]]:
        video = self._container.streams.video
        if not video:
            raise UnsupportedStream(f"camera {self.url} sends no video; enable its video stream")
        stream = video[0]
        codec = stream.codec_context.name
        if codec not in VIDEO_CODECS:
            raise UnsupportedStream(
                f"camera {self.url} sends {codec.upper()} video; pinkrelay relays H.264 only without "
                "re-encoding: set the camera's video encoding to H.264")
        extradata = bytes(stream.codec_context.extradata or b"")
        if extradata[:1] == b"\x01":  # avcC: the protocol carries Annex B parameter sets
            extradata = h264.avcc_to_annexb(extradata)
        rate = stream.average_rate or stream.guessed_rate
        tracks = [TrackInfo(kind="video", codec="h264", width=stream.codec_context.width,
                            height=stream.codec_context.height, fps=float(rate) if rate else 0.0,
                            extradata=extradata)]
        by_index = {stream.index: _Track(stream.index, "video", float(stream.time_base or 0))}
        for audio in self._container.streams.audio[:1]:
            name = audio.codec_context.name
            if name in AUDIO_CODECS:
                tracks.append(TrackInfo(kind="audio", codec=name, sample_rate=audio.codec_context.sample_rate,
                                        channels=audio.codec_context.channels,
                                        extradata=bytes(audio.codec_context.extradata or b"")))
                by_index[audio.index] = _Track(audio.index, "audio", float(audio.time_base or 0))
        return tracks, by_index

    @property
    def has_audio(self) -> bool:
        return any(track.kind == "audio" for track in self.tracks)

    def packets(self) -> Iterator[EncodedPacket]:
        """Packets as they arrive; raises SourceUnavailable when the stream stops or breaks.

        Ends quietly after ``stop()``, at the next packet or read timeout.
        The thread that reads must also ``close()``: FFmpeg must not have the
        container closed under a read in progress.
        """
        streams = [self._container.streams[index] for index in self._by_index]
        try:
            for packet in self._container.demux(streams):
                if self._stopping:
                    return
                track = self._by_index.get(packet.stream.index)
                if track is None or packet.size == 0 or packet.pts is None:
                    continue
                yield EncodedPacket(kind=track.kind, data=bytes(packet), pts_us=round(packet.pts * track.time_base * 1e6),
                                    duration_us=round((packet.duration or 0) * track.time_base * 1e6),
                                    keyframe=bool(packet.is_keyframe) if track.kind == "video" else True)
        except (av.FFmpegError, OSError) as error:
            raise SourceUnavailable(f"camera {self.url}: the stream broke off ({error})") from None
        raise SourceUnavailable(f"camera {self.url}: the stream ended")

    def stop(self) -> None:
        """Ask the reading thread to end (any thread may call it)."""
        self._stopping = True

    def close(self) -> None:
        """Close the session; only in the thread that reads, or when nothing reads."""
        self._container.close()

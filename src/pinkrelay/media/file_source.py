"""Media file as a button's camera and microphone, for demos and replaying incidents."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from os import PathLike, fspath
from pathlib import Path
from types import TracebackType

import av

from .errors import MediaError, SourceUnavailable

__all__ = ["FileSource"]


class FileSource:
    """Decoded video and audio frames from a media file, with the file's own timestamps.

    The file is checked when the source is created (it must exist and hold a
    video stream). Each call to :meth:`video_frames` or :meth:`audio_frames`
    opens its own demuxer, so video and audio can be consumed independently,
    e.g. from two threads. With ``loop=True`` the file repeats forever and
    timestamps keep increasing across repetitions.
    """

    def __init__(self, path: str | PathLike[str], *, loop: bool = False) -> None:
        self.path = Path(fspath(path))
        self.loop = loop
        if not self.path.exists():
            raise SourceUnavailable(
                f"media file {self.path} not found; check the path, or use the synthetic source 'test'"
            )
        if not self.path.is_file():
            raise SourceUnavailable(f"media file {self.path} is not a regular file; pass the path of a video file")
        with self._open() as container:
            if not container.streams.video:
                raise SourceUnavailable(
                    f"media file {self.path} has no video stream; a button source needs video, use e.g. an MP4 "
                    "with an H.264 track"
                )
            video = container.streams.video[0]
            self.width = video.codec_context.width
            self.height = video.codec_context.height
            rate = video.average_rate or video.guessed_rate or Fraction(30)
            self.fps = float(rate)
            if container.streams.audio:
                audio = container.streams.audio[0].codec_context
                self.sample_rate = audio.sample_rate
                self.channels = audio.channels
            else:
                self.sample_rate = 0
                self.channels = 0

    def _open(self) -> av.container.InputContainer:
        try:
            return av.open(fspath(self.path))
        except (av.FFmpegError, OSError) as err:
            raise SourceUnavailable(
                f"media file {self.path} cannot be read as audio/video ({err.strerror or err}); "
                "check the file is a complete video file (MP4, MKV, ...) and readable by this user"
            ) from err

    def video_frames(self) -> Iterator[av.VideoFrame]:
        """Yield the decoded frames of the first video stream."""
        return self._frames("video")

    def audio_frames(self) -> Iterator[av.AudioFrame]:
        """Yield the decoded frames of the first audio stream (nothing if the file has none)."""
        if not self.sample_rate:
            return iter(())
        return self._frames("audio")

    def _frames(self, kind: str) -> Iterator[av.VideoFrame | av.AudioFrame]:
        offset = 0
        while True:
            end = offset
            with self._open() as container:
                stream = (container.streams.video if kind == "video" else container.streams.audio)[0]
                stream.thread_type = "AUTO"
                time_base = stream.time_base or Fraction(1, 1_000_000)
                try:
                    for frame in container.decode(stream):
                        if frame.pts is not None:
                            frame.pts += offset
                            end = max(end, frame.pts + self._length(frame, time_base))
                        yield frame
                except av.FFmpegError as err:
                    raise MediaError(f"media file {self.path} is damaged; decoding {kind} stopped: {err}") from err
            if not self.loop or end == offset:
                return
            offset = end

    def _length(self, frame: av.VideoFrame | av.AudioFrame, time_base: Fraction) -> int:
        """Duration of ``frame`` in ``time_base`` units, for stitching loop repetitions together."""
        if frame.duration:
            return frame.duration
        if isinstance(frame, av.AudioFrame):
            return max(1, round(Fraction(frame.samples, frame.sample_rate) / time_base))
        return max(1, round(1 / (Fraction(self.fps).limit_denominator(1001) * time_base)))

    def close(self) -> None:
        """Nothing to release: each frame iterator closes its own demuxer when exhausted."""

    def __enter__(self) -> FileSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

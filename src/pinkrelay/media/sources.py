"""Choosing where a button's picture and sound come from: synthetic, a file, or real devices."""

from __future__ import annotations

import time
from collections.abc import Iterator
from os import PathLike, fspath
from types import TracebackType
from typing import Protocol, runtime_checkable

import av

from .camera import CameraSource
from .file_source import FileSource
from .pattern import TestPatternSource
from .tone import ToneSource

__all__ = ["MediaSource", "SyntheticSource", "open_source"]


@runtime_checkable
class MediaSource(Protocol):
    """What every source offers; ``sample_rate`` and ``channels`` are 0 when there is no audio.

    ``video_frames()`` and ``audio_frames()`` are separate iterators because
    live devices deliver at their own pace and are best read from separate
    threads. Frames carry ``pts`` and ``time_base``.
    """

    width: int
    height: int
    fps: float
    sample_rate: int
    channels: int

    def video_frames(self) -> Iterator[av.VideoFrame]: ...

    def audio_frames(self) -> Iterator[av.AudioFrame]: ...

    def close(self) -> None: ...


class SyntheticSource:
    """A :class:`TestPatternSource` and a :class:`ToneSource` presented as one source.

    Frames are produced as fast as they are pulled; pace them in real time
    (``fps`` video frames and 50 audio frames per second) when simulating a
    live button. Both iterators share ``start_time``, so the burned-in clock
    and the audio stay aligned. Arguments are checked on construction so a
    bad size or rate is reported when the source is opened.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: float = 30.0,
        label: str = "test",
        *,
        sample_rate: int = 48000,
        channels: int = 1,
        frequency: float = 440.0,
        start_time: float | None = None,
    ) -> None:
        self.width = width
        self.height = height
        self.fps = float(fps)
        self.label = label
        self.sample_rate = sample_rate
        self.channels = channels
        self.frequency = frequency
        self.start_time = time.time() if start_time is None else start_time
        self._pattern: TestPatternSource | None = TestPatternSource(
            width, height, fps, label, start_time=self.start_time
        )
        self._tone: ToneSource | None = ToneSource(sample_rate, channels, frequency)

    def video_frames(self) -> Iterator[av.VideoFrame]:
        """An endless test pattern iterator starting at frame 0 (a new one on every call)."""
        pattern, self._pattern = self._pattern, None
        return pattern or TestPatternSource(self.width, self.height, self.fps, self.label, start_time=self.start_time)

    def audio_frames(self) -> Iterator[av.AudioFrame]:
        """An endless tone iterator starting at frame 0 (a new one on every call)."""
        tone, self._tone = self._tone, None
        return tone or ToneSource(self.sample_rate, self.channels, self.frequency)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> SyntheticSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_source(
    spec: str | PathLike[str],
    *,
    width: int = 640,
    height: int = 360,
    fps: float = 30.0,
    label: str = "test",
    sample_rate: int = 48000,
    channels: int = 1,
    audio_device: str | None = None,
    loop: bool = False,
) -> MediaSource:
    """Open a source from a command-line style spec.

    ``"test"`` gives a :class:`SyntheticSource` (``label`` burned in);
    ``"/dev/videoN"`` a :class:`CameraSource`, with the ALSA microphone
    ``audio_device`` (e.g. ``"default"``) when given; anything else is a media
    file path for :class:`FileSource` (``loop`` repeats it). ``width``,
    ``height`` and ``fps`` apply to synthetic and camera sources; a file keeps
    its own. Raises :class:`SourceUnavailable` when the device or file cannot
    be used.
    """
    text = fspath(spec)
    if text == "test":
        return SyntheticSource(width, height, fps, label, sample_rate=sample_rate, channels=channels)
    if text.startswith("/dev/video"):
        return CameraSource(
            text,
            width=width,
            height=height,
            fps=fps,
            audio_device=audio_device,
            sample_rate=sample_rate,
            channels=channels,
        )
    return FileSource(text, loop=loop)

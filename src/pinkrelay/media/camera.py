"""Real capture devices on a button: a V4L2 camera and an ALSA microphone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType

import av

from .errors import MediaError, SourceUnavailable

__all__ = ["CameraSource", "Microphone"]



def _has_input(name: str) -> bool:
    """Whether this PyAV build has the input format ``name``.

    ``av.formats_available`` names a format with all its aliases in one
    entry, e.g. ``'video4linux2,v4l2'``.
    """
    return any(name in entry.split(",") for entry in av.formats_available)


class Microphone:
    """Audio frames captured from an ALSA device such as ``"default"`` or ``"hw:1,0"``."""

    def __init__(self, device: str = "default", *, sample_rate: int = 48000, channels: int = 1) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self.channels = channels
        if not _has_input("alsa"):
            raise SourceUnavailable(
                f"microphone {device!r} cannot be opened: this PyAV build has no ALSA input; "
                "install PyAV built against a system FFmpeg with libavdevice, or run without audio"
            )
        try:
            self._container = av.open(
                device, format="alsa", options={"sample_rate": str(sample_rate), "channels": str(channels)}
            )
        except (av.FFmpegError, OSError) as err:
            raise SourceUnavailable(
                f"microphone {device!r} cannot be opened ({err.strerror or err}); list capture devices "
                "with `arecord -l` and pass one such as 'hw:1,0', check the user is in the 'audio' group, "
                "or run without audio"
            ) from err

    def frames(self) -> Iterator[av.AudioFrame]:
        """Yield captured frames until :meth:`close`; blocks while waiting for the device."""
        try:
            yield from self._container.decode(audio=0)
        except av.FFmpegError as err:
            raise MediaError(f"microphone {self.device!r} stopped delivering audio: {err}") from err

    def close(self) -> None:
        """Release the device."""
        self._container.close()

    def __enter__(self) -> Microphone:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class CameraSource:
    """Video from a V4L2 camera (``/dev/videoN``), optionally with an ALSA microphone.

    Capture blocks, so run :meth:`video_frames` and :meth:`audio_frames` in
    separate threads. Frames carry the device's timestamps.
    """

    def __init__(
        self,
        device: str,
        *,
        width: int = 640,
        height: int = 360,
        fps: float = 30.0,
        audio_device: str | None = None,
        sample_rate: int = 48000,
        channels: int = 1,
    ) -> None:
        self.device = device
        if not os.path.exists(device):
            raise SourceUnavailable(
                f"camera {device} not found; connect a USB (UVC) camera and check `ls /dev/video*`, "
                "or use the synthetic source 'test'"
            )
        if not _has_input("v4l2"):
            raise SourceUnavailable(
                f"camera {device} cannot be opened: this PyAV build has no V4L2 input; install PyAV built "
                "against a system FFmpeg with libavdevice (pip install av --no-binary av), or use 'test'"
            )
        try:
            self._container = av.open(
                device,
                format="v4l2",
                options={"video_size": f"{width}x{height}", "framerate": f"{fps:g}"},
            )
        except (av.FFmpegError, OSError) as err:
            raise SourceUnavailable(
                f"camera {device} cannot be opened ({err.strerror or err}); check no other program is "
                "using it, that this user is in the 'video' group, and that it supports the requested "
                "size and frame rate"
            ) from err
        stream = self._container.streams.video[0]
        self.width = stream.codec_context.width
        self.height = stream.codec_context.height
        self.fps = float(stream.average_rate or fps)
        self._microphone: Microphone | None = None
        if audio_device is not None:
            try:
                self._microphone = Microphone(audio_device, sample_rate=sample_rate, channels=channels)
            except SourceUnavailable:
                self._container.close()
                raise
        self.sample_rate = sample_rate if self._microphone else 0
        self.channels = channels if self._microphone else 0

    def video_frames(self) -> Iterator[av.VideoFrame]:
        """Yield captured frames until :meth:`close`; blocks while waiting for the camera."""
        try:
            yield from self._container.decode(video=0)
        except av.FFmpegError as err:
            raise MediaError(f"camera {self.device} stopped delivering video: {err}") from err

    def audio_frames(self) -> Iterator[av.AudioFrame]:
        """Yield microphone frames, or nothing when no audio device was given."""
        if self._microphone is None:
            return iter(())
        return self._microphone.frames()

    def close(self) -> None:
        """Release the camera and microphone."""
        self._container.close()
        if self._microphone is not None:
            self._microphone.close()

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

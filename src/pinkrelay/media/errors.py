"""Exceptions raised by the media layer.

They live here, next to the only code that talks to PyAV, so that callers can
handle media failures without importing ``av``. ``SourceUnavailable`` is also
an ``OSError`` and ``CodecUnavailable`` a ``RuntimeError`` so generic handlers
keep working.
"""

from __future__ import annotations

__all__ = ["CodecUnavailable", "MediaError", "SourceUnavailable"]


class MediaError(Exception):
    """Base class for every failure in capturing, encoding, decoding or recording media."""


class SourceUnavailable(MediaError, OSError):
    """A camera, microphone or media file is missing, busy or not readable."""


class CodecUnavailable(MediaError, RuntimeError):
    """The installed FFmpeg/PyAV build lacks a codec this stream needs."""

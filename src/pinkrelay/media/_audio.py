"""Channel-count to FFmpeg layout mapping shared by the audio modules."""

from __future__ import annotations

_LAYOUTS = {1: "mono", 2: "stereo"}


def channel_layout(channels: int) -> str:
    """Return the FFmpeg layout name for a mono or stereo stream."""
    try:
        return _LAYOUTS[channels]
    except KeyError:
        raise ValueError(f"{channels} audio channels are not supported; use 1 (mono) or 2 (stereo)") from None

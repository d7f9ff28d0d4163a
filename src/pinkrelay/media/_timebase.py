"""Time base conversions shared by sources, encoders, decoder and recorder.

Everything outside this package speaks integer microseconds; PyAV speaks
``pts * time_base`` fractions. Keeping the conversions in one place keeps the
rounding identical everywhere.
"""

from __future__ import annotations

from fractions import Fraction

MICROSECOND = Fraction(1, 1_000_000)


def frame_rate(fps: float) -> Fraction:
    """Return ``fps`` as an exact fraction, recognising NTSC rates such as 29.97."""
    if not fps > 0:
        raise ValueError(f"frame rate must be positive, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def to_us(pts: int, time_base: Fraction) -> int:
    """Convert a timestamp in ``time_base`` units to whole microseconds (rounded)."""
    return round(pts * time_base * 1_000_000)

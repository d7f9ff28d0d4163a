"""Synthetic microphone: a continuous sine tone cut into 20 ms frames."""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from ._audio import channel_layout

__all__ = ["ToneSource"]

_FRAME_SECONDS = Fraction(1, 50)


class ToneSource:
    """Endless interleaved ``s16`` audio; frame ``n`` has ``pts = n * samples_per_frame`` in ``1/sample_rate``.

    20 ms frames (960 samples at 48 kHz) match Opus' default frame size, so
    the Opus encoder can take them without re-buffering. The phase is computed
    from the absolute sample index, so :meth:`frame` is deterministic and
    consecutive frames join without clicks.
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        channels: int = 1,
        frequency: float = 440.0,
        *,
        amplitude: float = 0.25,
    ) -> None:
        if sample_rate <= 0 or (sample_rate * _FRAME_SECONDS).denominator != 1:
            raise ValueError(
                f"sample rate {sample_rate} Hz does not divide into 20 ms frames; use e.g. 8000, 16000 or 48000"
            )
        if not 0.0 <= amplitude <= 1.0:
            raise ValueError(f"tone amplitude must be within 0..1, got {amplitude}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frequency = float(frequency)
        self.layout = channel_layout(channels)
        self.samples_per_frame = int(sample_rate * _FRAME_SECONDS)
        self.time_base = Fraction(1, sample_rate)
        self._step = 2.0 * math.pi * self.frequency / sample_rate
        self._ramp = np.arange(self.samples_per_frame, dtype=np.float64) * self._step
        self._scale = amplitude * 32767.0
        self._phase = np.empty(self.samples_per_frame, dtype=np.float64)
        self._next = 0

    def frame(self, n: int) -> av.AudioFrame:
        """Render frame ``n`` (any order; the result depends only on ``n``)."""
        if n < 0:
            raise ValueError(f"frame number must be >= 0, got {n}")
        first = n * self.samples_per_frame
        start = 2.0 * math.pi * math.fmod(self.frequency * first, self.sample_rate) / self.sample_rate
        np.add(self._ramp, start, out=self._phase)
        np.sin(self._phase, out=self._phase)
        self._phase *= self._scale
        samples = self._phase.astype(np.int16)
        if self.channels > 1:
            samples = np.repeat(samples, self.channels)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=self.layout)
        frame.sample_rate = self.sample_rate
        frame.pts = first
        frame.time_base = self.time_base
        return frame

    def __iter__(self) -> Iterator[av.AudioFrame]:
        return self

    def __next__(self) -> av.AudioFrame:
        frame = self.frame(self._next)
        self._next += 1
        return frame

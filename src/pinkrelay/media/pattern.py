"""Synthetic camera: colour bars, a moving box, the button id and a running clock.

Load generators run hundreds of these, so the picture is built in YUV 4:2:0
(what the encoder consumes) and only the parts that change from frame to frame
(the box and the clock) are redrawn into one reused buffer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import av
import numpy as np

from ._timebase import frame_rate
from .font import CELL_WIDTH, GLYPH_HEIGHT, char_indices, glyph_cells, render_text

__all__ = ["TestPatternSource"]

_BLACK = (16, 128, 128)
_WHITE_Y = 235
_BARS_RGB = (
    (0.75, 0.75, 0.75),
    (0.75, 0.75, 0.0),
    (0.0, 0.75, 0.75),
    (0.0, 0.75, 0.0),
    (0.75, 0.0, 0.75),
    (0.75, 0.0, 0.0),
    (0.0, 0.0, 0.75),
)
_BOX_RGB = (1.0, 0.25, 0.63)
_CLOCK_CHARS = len("HH:MM:SS.mmm")
_BOX_CROSSING_SECONDS = 2.0


def _yuv(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    """BT.601 limited-range YCbCr of an RGB colour given in 0..1."""
    r, g, b = rgb
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return round(y), round(u), round(v)


def _even(value: int) -> int:
    return value - (value & 1)


class _Planes:
    """One I420 image in a single contiguous array, with Y/U/V views into it."""

    __slots__ = ("image", "u", "v", "y")

    def __init__(self, width: int, height: int) -> None:
        self.image = np.empty((height * 3 // 2, width), dtype=np.uint8)
        chroma = self.image[height:].reshape(2, height // 2, width // 2)
        self.y = self.image[:height]
        self.u = chroma[0]
        self.v = chroma[1]


class TestPatternSource:
    """Endless synthetic video in ``yuv420p``; frame ``n`` has ``pts = n`` in a ``1/fps`` time base.

    ``label`` (normally the button id) is burned into the top bar and the wall
    clock time ``HH:MM:SS.mmm`` (local time) into the bottom bar. The clock of
    frame ``n`` is ``start_time + n / fps``, so :meth:`frame` is deterministic
    for a given ``start_time`` and matches the real clock when frames are
    produced in real time. Iterating yields frames 0, 1, 2, ... .
    """

    __test__ = False

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: float = 30.0,
        label: str = "",
        *,
        start_time: float | None = None,
    ) -> None:
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(
                f"test pattern size {width}x{height} is invalid; width and height must be even and at least 16"
            )
        self.width = width
        self.height = height
        self.fps = float(fps)
        self.label = label
        self.time_base = 1 / frame_rate(fps)
        self.start_time = time.time() if start_time is None else float(start_time)
        self._next = 0

        self._scale = max(1, min(height // 120, width // 160))
        pad = self._scale
        self._bar_height = _even(GLYPH_HEIGHT * self._scale + 2 * pad + 1)
        self._text_x = pad
        self._clock_y = height - self._bar_height + pad
        self._clock_width = min(_CLOCK_CHARS * CELL_WIDTH * self._scale, width - pad)
        self._cells = glyph_cells(self._scale)

        middle = height - 2 * self._bar_height
        self._box_size = max(2, _even(middle // 3))
        self._box_y = _even(self._bar_height + (middle - self._box_size) // 2)
        self._box_travel = width - self._box_size
        self._box_colour = _yuv(_BOX_RGB)
        self._box_x: int | None = None

        self._background = self._draw_background(pad)
        self._planes = _Planes(width, height)
        np.copyto(self._planes.image, self._background.image)

    def _draw_background(self, pad: int) -> _Planes:
        planes = _Planes(self.width, self.height)
        edges = [round(i * self.width / len(_BARS_RGB)) for i in range(len(_BARS_RGB) + 1)]
        for i, rgb in enumerate(_BARS_RGB):
            y, u, v = _yuv(rgb)
            left, right = edges[i], edges[i + 1]
            planes.y[:, left:right] = y
            planes.u[:, left // 2 : right // 2] = u
            planes.v[:, left // 2 : right // 2] = v
        for top in (0, self.height - self._bar_height):
            planes.y[top : top + self._bar_height] = _BLACK[0]
            planes.u[top // 2 : (top + self._bar_height) // 2] = _BLACK[1]
            planes.v[top // 2 : (top + self._bar_height) // 2] = _BLACK[2]
        if self.label:
            fits = max(0, (self.width - 2 * pad) // (CELL_WIDTH * self._scale))
            mask = render_text(self.label[:fits], self._scale)
            region = planes.y[pad : pad + mask.shape[0], pad : pad + mask.shape[1]]
            region[mask] = _WHITE_Y
        return planes

    def box_x(self, n: int) -> int:
        """Left edge of the moving box in frame ``n``: it bounces across the picture every two seconds."""
        period = 2 * _BOX_CROSSING_SECONDS * self.fps
        phase = math.fmod(n, period) / (_BOX_CROSSING_SECONDS * self.fps)
        position = phase if phase <= 1.0 else 2.0 - phase
        return _even(round(position * self._box_travel))

    def clock_text(self, n: int) -> str:
        """The ``HH:MM:SS.mmm`` local time burned into frame ``n``."""
        t = self.start_time + n / self.fps
        seconds = math.floor(t)
        local = time.localtime(seconds)
        millis = min(999, int((t - seconds) * 1000))
        return f"{local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d}.{millis:03d}"

    def _draw_box(self, x: int) -> None:
        planes, background = self._planes, self._background
        size, top = self._box_size, self._box_y
        if self._box_x is not None:
            old = self._box_x
            planes.y[top : top + size, old : old + size] = background.y[top : top + size, old : old + size]
            rows, cols = slice(top // 2, (top + size) // 2), slice(old // 2, (old + size) // 2)
            planes.u[rows, cols] = background.u[rows, cols]
            planes.v[rows, cols] = background.v[rows, cols]
        y, u, v = self._box_colour
        planes.y[top : top + size, x : x + size] = y
        rows, cols = slice(top // 2, (top + size) // 2), slice(x // 2, (x + size) // 2)
        planes.u[rows, cols] = u
        planes.v[rows, cols] = v
        self._box_x = x

    def _draw_clock(self, text: str) -> None:
        cells = self._cells[char_indices(text)]
        count, height, width = cells.shape
        mask = cells.transpose(1, 0, 2).reshape(height, count * width)[:, : self._clock_width]
        region = self._planes.y[self._clock_y : self._clock_y + height, self._text_x : self._text_x + mask.shape[1]]
        region.fill(_BLACK[0])
        region[mask] = _WHITE_Y

    def frame(self, n: int) -> av.VideoFrame:
        """Render frame ``n`` (any order; the result depends only on ``n`` and ``start_time``)."""
        if n < 0:
            raise ValueError(f"frame number must be >= 0, got {n}")
        self._draw_box(self.box_x(n))
        self._draw_clock(self.clock_text(n))
        frame = av.VideoFrame.from_ndarray(self._planes.image, format="yuv420p")
        frame.pts = n
        frame.time_base = self.time_base
        return frame

    def __iter__(self) -> Iterator[av.VideoFrame]:
        return self

    def __next__(self) -> av.VideoFrame:
        frame = self.frame(self._next)
        self._next += 1
        return frame

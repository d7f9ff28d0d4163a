"""A tiny 5x7 bitmap font for burning text into frames with numpy.

PyAV wheels are built without libfreetype, so FFmpeg's ``drawtext`` filter is
not available; this font covers what the test picture needs (button ids and a
clock) and renders to boolean masks that are cheap to cache and blit.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["GLYPH_HEIGHT", "GLYPH_WIDTH", "CELL_WIDTH", "glyph_cells", "render_text"]

GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7
CELL_WIDTH = GLYPH_WIDTH + 1

# Five column bytes per character, least significant bit = top row.
_COLUMNS = {
    " ": "0000000000",
    "!": "00005f0000",
    "#": "147f147f14",
    "(": "001c224100",
    ")": "0041221c00",
    "+": "08083e0808",
    ",": "0050300000",
    "-": "0808080808",
    ".": "0060600000",
    "/": "2010080402",
    "0": "3e5149453e",
    "1": "00427f4000",
    "2": "4261514946",
    "3": "2141454b31",
    "4": "1814127f10",
    "5": "2745454539",
    "6": "3c4a494930",
    "7": "0171090503",
    "8": "3649494936",
    "9": "064949291e",
    ":": "0036360000",
    "=": "1414141414",
    "?": "0201510906",
    "@": "324979413e",
    "A": "7e1111117e",
    "B": "7f49494936",
    "C": "3e41414122",
    "D": "7f4141221c",
    "E": "7f49494941",
    "F": "7f09090101",
    "G": "3e41415132",
    "H": "7f0808087f",
    "I": "00417f4100",
    "J": "2040413f01",
    "K": "7f08142241",
    "L": "7f40404040",
    "M": "7f0204027f",
    "N": "7f0408107f",
    "O": "3e4141413e",
    "P": "7f09090906",
    "Q": "3e4151215e",
    "R": "7f09192946",
    "S": "4649494931",
    "T": "01017f0101",
    "U": "3f4040403f",
    "V": "1f2040201f",
    "W": "7f2018207f",
    "X": "6314081463",
    "Y": "0304780403",
    "Z": "6151494543",
    "_": "4040404040",
}

CHARSET = "".join(_COLUMNS)
_INDEX = {char: i for i, char in enumerate(CHARSET)}
_UNKNOWN = _INDEX["?"]


def _build_atlas() -> np.ndarray:
    atlas = np.zeros((len(CHARSET), GLYPH_HEIGHT, CELL_WIDTH), dtype=bool)
    for i, columns in enumerate(_COLUMNS.values()):
        for x, column in enumerate(bytes.fromhex(columns)):
            for y in range(GLYPH_HEIGHT):
                atlas[i, y, x] = bool(column >> y & 1)
    return atlas


_ATLAS = _build_atlas()


@lru_cache(maxsize=16)
def glyph_cells(scale: int) -> np.ndarray:
    """Return every glyph cell magnified ``scale`` times, shape ``(chars, 7*scale, 6*scale)``.

    Each cell includes one blank column of spacing, so cells can be laid side
    by side without further arithmetic.
    """
    if scale < 1:
        raise ValueError(f"font scale must be at least 1, got {scale}")
    return _ATLAS.repeat(scale, axis=1).repeat(scale, axis=2)


def char_indices(text: str) -> np.ndarray:
    """Map text to glyph indices; lower case is shown as upper case, unknown characters as '?'."""
    return np.fromiter((_INDEX.get(c, _UNKNOWN) for c in text.upper()), dtype=np.intp, count=len(text))


def render_text(text: str, scale: int = 1) -> np.ndarray:
    """Render ``text`` to a boolean mask of shape ``(7*scale, 6*scale*len(text))``."""
    cells = glyph_cells(scale)[char_indices(text)]
    count, height, width = cells.shape
    return cells.transpose(1, 0, 2).reshape(height, count * width)

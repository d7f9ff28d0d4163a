"""What the relay's H.264 checks (protocol/media_rules.py) add per received video message.

    .venv/bin/python benchmarks/media_rules_cost.py            (compiled core)
    PINKRELAY_PUREPYTHON=1 .venv/bin/python benchmarks/media_rules_cost.py

Best of five timeit runs of the relay's media sink with and without the check,
for a real 640x360 keyframe and delta frame from PyAV. A few seconds.
"""

from __future__ import annotations

import timeit
from typing import Any

from pinkrelay._core import COMPILED, FrameDecoder, Lane, Reassembler, encode_media
from pinkrelay.media import encode_clip
from pinkrelay.protocol.media_rules import checking


def reassembled(data: bytes, keyframe: bool) -> Any:
    """One media message as the relay's reader hands it to the sink."""
    decoder, reassembler = FrameDecoder(65536, 16384), Reassembler(4 << 20, 64, 8)
    message = None
    for frame in decoder.decode(b"".join(encode_media(1, Lane.VIDEO, 1, 1, data, keyframe, 16384))):
        message = reassembler.add(frame) or message
    return message


def discard(message: Any) -> None:
    """The cheapest sink: what the check is compared against."""


def main() -> None:
    clip = encode_clip(1, width=640, height=360, fps=30, bitrate=1_000_000)
    checked_sink = checking(discard)
    for keyframe in (True, False):
        data = next(p.data for p in clip.packets if p.kind == "video" and p.keyframe == keyframe)
        message = reassembled(data, keyframe)
        count = 20_000 if keyframe else 200_000
        plain = min(timeit.repeat(lambda: discard(message), number=count, repeat=5)) / count  # noqa: B023
        checked = min(timeit.repeat(lambda: checked_sink(message), number=count, repeat=5)) / count  # noqa: B023
        print(f"compiled={COMPILED} keyframe={keyframe} size={len(data)}: sink {plain * 1e9:.0f} ns, "
              f"checked {checked * 1e9:.0f} ns, added {(checked - plain) * 1e9:.0f} ns")


if __name__ == "__main__":
    main()

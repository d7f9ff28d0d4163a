"""What the relay's H.264 checks (protocol/media_rules.py) add per received video message.

    .venv/bin/python benchmarks/media_rules_cost.py            (compiled core)
    PINKRELAY_PUREPYTHON=1 .venv/bin/python benchmarks/media_rules_cost.py

Best of five timeit runs of the relay's media sink with and without the check,
for a real 640x360 keyframe and delta frame from PyAV. A few seconds.
"""

import timeit
from pinkrelay._core import Reassembler, FrameDecoder, encode_media, Lane, COMPILED
from pinkrelay.media import encode_clip
from pinkrelay.protocol.media_rules import check_h264, checking
clip = encode_clip(1, width=640, height=360, fps=30, bitrate=1_000_000)
msgs = {}
for kind in (True, False):
    data = next(p.data for p in clip.packets if p.kind == "video" and p.keyframe == kind)
    frames = encode_media(1, Lane.VIDEO, 1, 1, data, kind, 16384)
    dec = FrameDecoder(65536, 16384); r = Reassembler(4 << 20, 64, 8)
    for f in dec.decode(b"".join(frames)):
        m = r.add(f)
    msgs[kind] = (m, len(data))
sink = lambda m: None
wrapped = checking(sink)
for kind, (m, size) in msgs.items():
    n = 200000 if not kind else 20000
    plain = min(timeit.repeat(lambda: sink(m), number=n, repeat=5)) / n
    checked = min(timeit.repeat(lambda: wrapped(m), number=n, repeat=5)) / n
    print(f"compiled={COMPILED} keyframe={kind} size={size}: sink {plain*1e9:.0f} ns, checked {checked*1e9:.0f} ns, added {(checked-plain)*1e9:.0f} ns")

"""Glass-to-glass latency on loopback: a live button's picture to a decoded frame on a console.

The relay runs in its own process (``python -m pinkrelay serve``). This
process runs one button that draws the test picture with the wall clock
burned in, encodes it live (H.264, zero-latency settings) and streams it,
and one console that subscribes and decodes every frame with PyAV. For each
frame it records:

* capture: the wall clock drawn into the picture (the "glass" at the button);
* sent: when the encoded packet was handed to the button's uplink;
* arrived: when the console received the whole message from the relay;
* decoded: when PyAV returned the picture at the console (the other "glass").

It prints p50/p90/p99 of each stage and saves JSON under benchmarks/results/.

    .venv/bin/python benchmarks/glass_to_glass.py --seconds 10 --video 640x360@30
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

import pinkrelay
from pinkrelay.media import Decoder, TestPatternSource, TrackInfo, VideoEncoder
from pinkrelay.protocol import Media, Subscribed

ROOT = Path(__file__).resolve().parent.parent
BUTTON = "kp-g2g-001"
SECRET = "glass-to-glass-secret-0001"
TOKEN = "glass-to-glass-console-token-0001"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)

    return {"n": len(ordered), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(ordered[-1], 3)}


async def _measure(args: argparse.Namespace, buttons: pinkrelay.Address, consoles: pinkrelay.Address) -> dict:
    width, height, fps = args.width, args.height, args.fps
    source = TestPatternSource(width, height, fps, label=BUTTON)
    encoder = VideoEncoder(width, height, fps, args.bitrate, gop_seconds=1.0)
    capture_us: dict[int, int] = {}
    sent_us: dict[int, int] = {}
    arrived_us: dict[int, int] = {}
    decoded_us: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        first_packet = encoder.encode(source.frame(0))
        video = encoder.track_info
        button = pinkrelay.ButtonClient(buttons, BUTTON, SECRET.encode(), tracks=[video.to_dict()])
        await nursery.start(button.run)
        console = pinkrelay.ConsoleClient(consoles, "bench", TOKEN.encode())
        await nursery.start(console.run)
        console.subscribe(BUTTON)

        async def watch() -> None:
            decoder: Decoder | None = None
            async for event in console.events():
                if isinstance(event, Subscribed) and event.tracks:
                    track = next(t for t in event.tracks if t.kind == "video")
                    decoder = Decoder(TrackInfo(kind="video", codec="h264", width=track.width,
                                                height=track.height, fps=track.fps, extradata=track.extradata))
                elif isinstance(event, Media) and decoder is not None:
                    arrived_us[event.timestamp] = time.time_ns() // 1000
                    if decoder.decode(event.data):
                        decoded_us[event.timestamp] = time.time_ns() // 1000

        nursery.start_soon(watch)
        del first_packet  # the encoder's first keyframe only primed its parameter sets
        start = trio.current_time() + 0.5
        # Frame n is drawn with the wall clock at which it is due, so the burned-in
        # time is its capture time.
        source = TestPatternSource(width, height, fps, label=BUTTON, start_time=time.time() + 0.5)
        frames = int(args.seconds * fps)
        for number in range(1, frames + 1):
            await trio.sleep_until(start + number / fps)
            frame = source.frame(number)
            captured = int((source.start_time + number / fps) * 1e6)
            if button.needs_keyframe:
                encoder.force_keyframe()
            for packet in encoder.encode(frame):
                capture_us[captured] = captured
                button.send_media("video", packet.data, captured, packet.keyframe)
                sent_us[captured] = time.time_ns() // 1000
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    stages = {
        "capture_to_sent_ms": [(sent_us[t] - t) / 1000 for t in sent_us],
        "sent_to_arrived_ms": [(arrived_us[t] - sent_us[t]) / 1000 for t in arrived_us if t in sent_us],
        "arrived_to_decoded_ms": [(decoded_us[t] - arrived_us[t]) / 1000 for t in decoded_us],
        "glass_to_glass_ms": [(decoded_us[t] - t) / 1000 for t in decoded_us],
    }
    return {
        "frames_sent": len(sent_us),
        "frames_decoded": len(decoded_us),
        **{name: _percentiles(values) for name, values in stages.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--video", default="640x360@30", help="WxH@FPS (default 640x360@30)")
    parser.add_argument("--bitrate", type=int, default=1_000_000)
    args = parser.parse_args()
    size, _, rate = args.video.partition("@")
    args.width, args.height = (int(v) for v in size.split("x"))
    args.fps = float(rate or 30)

    with tempfile.TemporaryDirectory(prefix="pinkrelay-g2g-") as work:
        work_dir = Path(work)
        (work_dir / "registry.csv").write_text(
            "id,secret,site_name,site_kind,latitude,longitude\n"
            f"{BUTTON},{SECRET},Benchmark site,other,34.0,71.5\n"
        )
        (work_dir / "relay.toml").write_text(f'[relay]\nconsole_tokens = {{ bench = "{TOKEN}" }}\n')
        buttons = pinkrelay.Address("127.0.0.1", _free_port())
        consoles = pinkrelay.Address("127.0.0.1", _free_port())
        relay = subprocess.Popen(
            [sys.executable, "-m", "pinkrelay", "serve", "--no-web", "--config", str(work_dir / "relay.toml"),
             "--registry", str(work_dir / "registry.csv"), "--data-dir", str(work_dir / "var"),
             "--buttons-listen", str(buttons), "--consoles-listen", str(consoles), "--log-level", "error"],
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with socket.socket() as probe:
                    if probe.connect_ex((consoles.host, consoles.port)) == 0:
                        break
                time.sleep(0.05)
            result = trio.run(_measure, args, buttons, consoles)
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=10)
    result.update(video=args.video, bitrate=args.bitrate, seconds=args.seconds,
                  command=" ".join([os.path.basename(sys.executable), *sys.argv]))
    for stage in ("capture_to_sent_ms", "sent_to_arrived_ms", "arrived_to_decoded_ms", "glass_to_glass_ms"):
        figures = result[stage]
        print(f"{stage:24} p50 {figures['p50']:7.2f}  p90 {figures['p90']:7.2f}  p99 {figures['p99']:7.2f}"
              f"  max {figures['max']:7.2f}  (n={figures['n']})")
    print(f"frames sent {result['frames_sent']}, decoded at the console {result['frames_decoded']}")
    out = ROOT / "benchmarks" / "results" / f"glass-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What evidence costs the relay: pre-roll on 100 streams, then 20 of them recording at once.

    .venv/bin/python benchmarks/evidence_cost.py [--buttons 100] [--recording 20] [--seconds 20]

Three runs of ``python -m pinkrelay serve`` (pinned to core 0; the load
runs on core 1), each with the same 100 buttons replaying one real
H.264 + Opus clip in real time and two consoles watching the first 20
buttons:

* ``off``: ``pre_roll = 0``, nothing recorded (the relay before evidence);
* ``preroll``: ``pre_roll = 20`` for every stream, nothing recorded;
* ``recording``: as ``preroll``, and the first 20 buttons press, so 20
  recordings run for the whole measured window.

Per run: the relay's CPU (share of a core over the measured window, from
/proc), its RSS at the end, and the live viewers' video latency (capture
timestamp, taken as the message leaves the button, to arrival at a console
in a separate viewers' process: what the relay and loopback add) p50/p99. Prints one
line per run and the differences, and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402 - the relay helpers of the load script

from pinkrelay import Address, ButtonClient, ConsoleClient  # noqa: E402
from pinkrelay._core import Lane  # noqa: E402
from pinkrelay.media import encode_clip  # noqa: E402
from pinkrelay.protocol import Media  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VIDEO = int(Lane.VIDEO)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def view(port: int, token: str, watched: list[str], seconds: float) -> None:
    """The viewers' process: two consoles watching ``watched``; prints video latencies (µs) as JSON at the end."""
    latencies: list[int] = []
    measuring = False

    async def watch(console: ConsoleClient, button_ids: list[str]) -> None:
        for button_id in button_ids:
            console.subscribe(button_id)
        async for event in console.events():
            # Video only: audio waits up to audio_hold for the next video frame by design.
            if measuring and isinstance(event, Media) and event.lane == VIDEO:
                latencies.append(time.time_ns() // 1000 - event.timestamp)

    async with trio.open_nursery() as nursery:
        consoles = [ConsoleClient(Address("127.0.0.1", port), "bench", token.encode()) for _ in range(2)]
        half = len(watched) // 2
        for console, share in zip(consoles, (watched[:half], watched[half:]), strict=True):
            await nursery.start(console.run)
            nursery.start_soon(watch, console, share)
        # Start measuring on the driver's word (a line on stdin), stop on the next.
        await trio.to_thread.run_sync(sys.stdin.readline)
        measuring = True
        await trio.to_thread.run_sync(sys.stdin.readline)
        measuring = False
        print(json.dumps(latencies), flush=True)
        nursery.cancel_scope.cancel()


async def drive(ports: tuple[int, int], ids: list[tuple[str, str]], token: str, clip: Any, args: argparse.Namespace,
                presses: int, relay_pid: int) -> dict[str, Any]:
    tracks = [clip.video.to_dict(), clip.audio.to_dict()]
    buttons = [ButtonClient(Address("127.0.0.1", ports[0]), button_id, secret.encode(), tracks=tracks)
               for button_id, secret in ids]
    watched = [button_id for button_id, _ in ids[:args.recording]]
    result: dict[str, Any] = {}

    async def stream(button: ButtonClient) -> None:
        start = trio.current_time() + 0.5
        for packet in clip.replay(0):
            await trio.sleep_until(start + packet.pts_us / 1e6)
            # Stamped when it leaves, so the load process's own lag is not counted as the relay's.
            button.send_media(packet.kind, packet.data, time.time_ns() // 1000, packet.keyframe)

    viewers = subprocess.Popen([sys.executable, __file__, "--view", str(ports[1]), token, ",".join(watched)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        async with trio.open_nursery() as nursery:
            for button in buttons:
                await nursery.start(button.run)
                nursery.start_soon(stream, button)
            await trio.sleep(args.warmup)  # every ring is full (pre_roll) before the window
            for button in buttons[:presses]:
                button.start_press()
            await trio.sleep(1.0)
            viewers.stdin.write("start\n")
            viewers.stdin.flush()
            cpu_start, wall_start = load.proc_cpu(relay_pid), time.monotonic()
            await trio.sleep(args.seconds)
            cpu_end, wall_end = load.proc_cpu(relay_pid), time.monotonic()
            viewers.stdin.write("stop\n")
            viewers.stdin.flush()
            latencies = json.loads(await trio.to_thread.run_sync(viewers.stdout.readline))
            result["relay_cpu_percent"] = 100 * (sum(cpu_end) - sum(cpu_start)) / (wall_end - wall_start)
            result["relay_rss_mb"] = (load.proc_status(relay_pid, "VmRSS") or 0) / 1024
            result["latency_p50_ms"] = percentile(latencies, 0.5) / 1000
            result["latency_p99_ms"] = percentile(latencies, 0.99) / 1000
            result["media_received"] = len(latencies)
            nursery.cancel_scope.cancel()
    finally:
        viewers.kill()
        viewers.wait()
    return result


def writer_alone(clip: Any, recordings: int, seconds: float) -> dict[str, Any]:
    """The evidence writer thread by itself, no relay: CPU per second of media for ``recordings`` streams."""
    from pinkrelay._core import Message, encode_media
    from pinkrelay.protocol import TrackDescription
    from pinkrelay.relay.evidence.manifest import Manifest, load_or_create_key
    from pinkrelay.relay.evidence.writer import EvidenceWriter, Recording

    messages = []
    for repeat in range(max(1, round(seconds * 1e6 / clip.duration_us))):
        for packet in clip.packets:
            lane, track = (Lane.VIDEO, 1) if packet.kind == "video" else (Lane.AUDIO, 2)
            stamp = 1_700_000_000_000_000 + packet.pts_us + repeat * clip.duration_us
            chunks = tuple(encode_media(track, lane, 0, stamp, packet.data, packet.keyframe, 16384))
            messages.append(Message(track, int(lane), 0, stamp, packet.keyframe, chunks, len(packet.data)))
    media_seconds = len(messages) and (messages[-1].timestamp - messages[0].timestamp) / 1e6
    tracks = [TrackDescription(track_id=1, kind="video", codec="h264", width=clip.video.width,
                               height=clip.video.height, fps=clip.video.fps, extradata=clip.video.extradata),
              TrackDescription(track_id=2, kind="audio", codec=clip.audio.codec, sample_rate=clip.audio.sample_rate,
                               channels=clip.audio.channels, extradata=clip.audio.extradata)]
    with tempfile.TemporaryDirectory(prefix="pinkrelay-evidence-writer-") as name:
        tmp = Path(name)
        writer = EvidenceWriter(key=load_or_create_key(tmp), segment_us=2_000_000, queue_bytes=1 << 40,
                                on_failure=lambda *failed: print("writer failed:", failed),
                                call_soon=lambda fn, *a: fn(*a))
        records = []
        for index in range(recordings):
            directory = tmp / f"r{index}"
            directory.mkdir()
            manifest = Manifest.new(alert_id=f"r{index}", button="b", relay="bench", started_at=0, reason="bench")
            records.append(Recording(alert_id=f"r{index}", button_id="b", directory=directory, manifest=manifest))
            writer.new_part(records[-1], tracks, "bench")
        started = time.process_time()
        writer.start()
        for record in records:
            writer.offer_many(record, messages)
            writer.finish(record, "bench")
        writer.stop(120)
        cpu = time.process_time() - started
    return {"recordings": recordings, "media_seconds": media_seconds, "cpu_seconds": cpu,
            "cpu_percent_of_a_core_in_real_time": 100 * cpu / media_seconds,
            "segments": writer.segments_written, "mb_written": writer.bytes_written / 1e6}


def run(kind: str, args: argparse.Namespace, clip: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pinkrelay-evidence-cost-") as name:
        tmp = Path(name)
        options = [f"pre_roll = {0.0 if kind == 'off' else args.pre_roll}", "max_button_bitrate = 0",
                   "max_unauthenticated_per_address = 4096", "handshake_rate_per_address = 0"]
        registry, config, ids, tokens = load.write_setup(tmp, args.buttons, 0, ["bench"], options)
        relay_args = SimpleNamespace(relay_switch_interval=0, web=False, relay_log_level="info", pin_cores=True)
        relay, ports, _ = load.start_relay(relay_args, tmp, registry, config)
        try:
            os.sched_setaffinity(0, {1})
        except OSError:
            pass
        try:
            result = trio.run(drive, ports, ids, tokens["bench"], clip, args,
                              args.recording if kind == "recording" else 0, relay.pid)
            evidence = tmp / "data" / "evidence"
            result["recordings"] = len(list(evidence.iterdir())) if evidence.is_dir() else 0
            result["evidence_mb"] = sum(p.stat().st_size for p in evidence.rglob("*") if p.is_file()) / 1e6 \
                if evidence.is_dir() else 0.0
        finally:
            load.stop_process(relay)
    result["run"] = kind
    return result


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--view":
        trio.run(view, int(sys.argv[2]), sys.argv[3], sys.argv[4].split(","), 0.0)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buttons", type=int, default=100)
    parser.add_argument("--recording", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--pre-roll", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=0.0, help="default: pre_roll + 1 s")
    args = parser.parse_args()
    args.warmup = args.warmup or args.pre_roll + 1.0
    clip = encode_clip(4, width=320, height=240, fps=15, bitrate=250_000, label="evidence", gop_seconds=1.0)
    load_before = os.getloadavg()
    runs = [run(kind, args, clip) for kind in ("off", "preroll", "recording")]
    alone = writer_alone(clip, args.recording, args.pre_roll + args.seconds)
    for r in runs:
        print(f"{r['run']:<9} relay CPU {r['relay_cpu_percent']:5.1f} % of a core, RSS {r['relay_rss_mb']:6.1f} MB, "
              f"viewers' video latency p50 {r['latency_p50_ms']:.2f} ms p99 {r['latency_p99_ms']:.2f} ms "
              f"({r['media_received']} messages), recordings {r['recordings']} ({r['evidence_mb']:.1f} MB)")
    off, preroll, recording = runs
    print(f"pre-roll on {args.buttons} streams: +{preroll['relay_cpu_percent'] - off['relay_cpu_percent']:.1f} % CPU, "
          f"+{preroll['relay_rss_mb'] - off['relay_rss_mb']:.1f} MB RSS")
    print(f"{args.recording} recordings on top: +{recording['relay_cpu_percent'] - preroll['relay_cpu_percent']:.1f} % "
          f"CPU, +{recording['relay_rss_mb'] - preroll['relay_rss_mb']:.1f} MB RSS, viewers' p99 "
          f"{preroll['latency_p99_ms']:.2f} -> {recording['latency_p99_ms']:.2f} ms "
          f"({100 * (recording['latency_p99_ms'] / preroll['latency_p99_ms'] - 1):+.0f} %)")
    print(f"the writer alone: {alone['cpu_percent_of_a_core_in_real_time']:.1f} % of a core for {args.recording} "
          f"recordings in real time ({alone['cpu_seconds']:.2f} CPU-s for {alone['media_seconds']:.0f} s of media "
          f"each, {alone['segments']} segments)")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"evidence-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({
        "command": "python benchmarks/evidence_cost.py " + " ".join(sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "args": vars(args), "runs": runs, "writer_alone": alone}, indent=1))
    print(f"saved {path}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What one replayed stream costs ``pinkrelay simulate``, at several fleet sizes.

For each N it starts a relay (``python -m pinkrelay serve``, core 0) and
``pinkrelay simulate --buttons N`` (core 1) for ``--seconds``, and reads the
simulator's CPU from /proc over the steady part of the run (after the clip
is encoded and every button has connected). It prints, per N: the
simulator's share of a core, that share per stream, the CPU per media
message sent, the messages sent and dropped, and whether every button
connected; and saves JSON under benchmarks/results/.

    .venv/bin/python benchmarks/simulator_cost.py --buttons 10 50 200 --seconds 12
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402 - the relay helpers of the load script

RESULTS = Path(__file__).resolve().parent / "results"


def measure(buttons: int, seconds: float, warmup: float, video: str, bitrate: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pinkrelay-simcost-") as name:
        tmp = Path(name)
        registry, config, _, _ = load.write_setup(tmp, buttons, 0, ["probe"])
        relay_args = SimpleNamespace(relay_switch_interval=0, web=False, relay_log_level="info",
                                     pin_cores=True)
        relay, ports, _ = load.start_relay(relay_args, tmp, registry, config)
        try:
            command = [sys.executable, "-m", "pinkrelay", "simulate", "--relay", f"127.0.0.1:{ports[0]}",
                       "--registry", str(registry), "--buttons", str(buttons), "--duration",
                       f"{seconds + warmup:g}", "--video", video, "--bitrate", bitrate, "--json"]
            out_path = tmp / "simulate.jsonl"
            with open(out_path, "wb") as out, open(tmp / "simulate.log", "wb") as err:
                simulator = subprocess.Popen(["taskset", "-c", "1", *command], stdout=out, stderr=err)
            time.sleep(warmup)
            before = load.proc_cpu(simulator.pid)
            started = time.monotonic()
            time.sleep(seconds - 0.5)
            after = load.proc_cpu(simulator.pid)
            window = time.monotonic() - started
            simulator.wait(timeout=seconds + 60)
            events = [json.loads(line) for line in out_path.read_text().splitlines() if line.startswith("{")]
        finally:
            load.stop_process(relay)
    if before is None or after is None:
        raise RuntimeError(f"pinkrelay simulate --buttons {buttons} ended before the measurement did")
    cpu = (after[0] - before[0]) + (after[1] - before[1])
    summary = next((e for e in events if e.get("event") == "summary"), {})
    seconds_run = summary.get("seconds") or (seconds + warmup)
    messages_per_s = (summary.get("media_sent") or 0) / seconds_run
    return {
        "buttons": buttons,
        "video": video,
        "bitrate": bitrate,
        "window_s": window,
        "simulator_cpu_fraction": cpu / window,
        "cpu_fraction_per_stream": cpu / window / buttons,
        "cpu_us_per_message": 1e6 * cpu / window / messages_per_s if messages_per_s else None,
        "messages_per_s": messages_per_s,
        "media_sent": summary.get("media_sent"),
        "media_dropped": summary.get("media_dropped"),
        "late_restarts": summary.get("late_restarts"),
        "buttons_connected": summary.get("buttons_connected"),
        "kbps": summary.get("kbps"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buttons", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--seconds", type=float, default=12.0, help="measured seconds per fleet size")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (clip, connects)")
    parser.add_argument("--video", default="320x240@15", help="WxH@FPS, as simulate --video")
    parser.add_argument("--bitrate", default="250k", help="as simulate --bitrate")
    args = parser.parse_args()
    runs = []
    for n in args.buttons:
        r = measure(n, args.seconds, args.warmup, args.video, args.bitrate)
        runs.append(r)
        print(f"{n:5} buttons: simulator {100 * r['simulator_cpu_fraction']:5.1f} % of a core, "
              f"{100 * r['cpu_fraction_per_stream']:.3f} % per stream, "
              f"{r['cpu_us_per_message'] or 0:.1f} µs per message ({r['messages_per_s']:.0f} messages/s); "
              f"connected {r['buttons_connected']}/{n}, dropped {r['media_dropped']}, "
              f"late restarts {r['late_restarts']}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"simulator-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"command": sys.argv, "machine": load.machine(), "runs": runs}, indent=1))
    print(f"saved {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""pinkrelay side by side with nginx-rtmp and mosquitto on this machine (issue 7).

``make bench-compare`` runs this (``--quick`` for a short check). Sections:

1. fan-out: one 720p30 H.264 + AAC publisher (about 2 Mbit/s) to N subscribers
   through pinkrelay and through nginx-rtmp; relay CPU per delivered Gbit,
   keep-up, peak RSS, pinkrelay's latency at a probe console;
2. alerts: 5,000 alerts at 1,000/s from buttons to 4 consoles, quiet and then
   with >= 50 MB/s of media in fanned out to the same consoles, through
   pinkrelay and through mosquitto (QoS 1);
3. the machine's limit: iperf3 over loopback and a numpy memcpy.

Every server is started here on 127.0.0.1 with a config generated into a
temp dir, pinned to core 0 (``taskset``), and stopped by its PID; load
processes run on core 1. Results: ``benchmarks/results/compare-<stamp>.json``,
then ``report.py`` writes ``docs/benchmarks.md`` and the PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    Child,
    cdf_points,
    children_of,
    core_times,
    free_port,
    percentiles,
    proc_cpu,
    proc_status_kb,
    sleep_until_us,
    spawn,
    stop,
    stop_all,
    wall_us,
)

GEN = HERE / "gen.py"
CACHE = HERE / ".cache"
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable
KEEP_UP = 0.99
GENERATOR_BOUND = 0.85  # the load processes' own CPU, in cores: above this they limit the run
RELAY_CORE, LOAD_CORE = 0, 1
RT_PROBE = 20  # SCHED_FIFO priorities (root only) of the latency-measuring load processes
RT_ALERTS = 30
#: SCHED_FIFO priority of the servers (``--server-rt``; 0 = normal): keeps other jobs on a shared
#: machine from preempting them, alike for every server
SERVER_RT = [10]

CLIP_SECONDS = 10
CLIP_COMMAND = [
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
    "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    "-t", str(CLIP_SECONDS),
    # a little temporal noise so that x264 actually spends its 1.9 Mbit/s
    "-vf", "noise=alls=10:allf=t",
    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1900k", "-maxrate", "1900k", "-bufsize", "1900k",
    "-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
    "-c:a", "aac", "-b:a", "96k", "-ac", "1",
]


def log(text: str) -> None:
    print(text, flush=True)


# -- setup ---------------------------------------------------------------------------------


def ensure_clip() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "clip-720p30-2M-h264-aac-gop1s.flv"
    if not path.exists():
        log("encoding the clip once (ffmpeg, 720p30 H.264 1.9 Mbit/s GOP 1 s no B-frames + AAC 96 kbit/s)")
        partial = path.with_suffix(".tmp.flv")
        subprocess.run([*CLIP_COMMAND, str(partial)], check=True, timeout=120)
        partial.replace(path)
    return path


def tool_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return ""
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else ""


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    from pinkrelay._core import COMPILED

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=False).stdout.strip()

    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_mb": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pinkrelay_commit": git("rev-parse", "--short", "HEAD"),
        "pinkrelay_src_dirty": bool(git("status", "--porcelain", "src")),
        "pinkrelay_compiled_core": COMPILED,
        "nginx": tool_version(["nginx", "-v"]),
        "mosquitto": tool_version(["mosquitto", "-h"]),
        "ffmpeg": tool_version(["ffmpeg", "-version"]),
        "iperf3": tool_version(["iperf3", "--version"]),
        "loadavg_at_start": os.getloadavg(),
    }


def listening(port: int) -> bool:
    want = f":{port:04X}"
    with open("/proc/net/tcp") as table:
        return any(line.split()[1].endswith(want) and line.split()[3] == "0A" for line in table.readlines()[1:])


def wait_port(port: int, process: subprocess.Popen, timeout: float, what: str, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if listening(port):
            return
        time.sleep(0.05)
    text = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}:\n{text}")


def tmpdir(kind: str, base: str | None = None) -> Path:
    if base is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return Path(tempfile.mkdtemp(prefix=f"bench-compare-{kind}-", dir=base))


# -- the servers ---------------------------------------------------------------------------


#: Every load process connects from 127.0.0.1, hundreds of clients at once: the per-address
#: admission limits that protect a relay on a real network would refuse them, and the bulk
#: streams of the alert section run above the default per-button bitrate limit, and its buttons
#: press a thousand times a second, far past the per-button press limit. Neither
#: nginx-rtmp nor mosquitto has these limits configured, so they are lifted alike.
BENCH_LIMITS = [
    "max_unauthenticated_per_address = 100000",
    "max_unauthenticated = 100000",
    "handshake_rate_per_address = 100000.0",
    "handshake_burst_per_address = 100000",
    "max_button_bitrate = 0",
    "max_subscriptions_per_console = 10000",
    "press_rate_per_button = 0",
]


class Pinkrelay:
    name = "pinkrelay"

    def __init__(self, tmp: Path, buttons: list[tuple[str, str]], operators: list[str],
                 options: list[str] | None = None, data_dir: Path | None = None) -> None:
        registry = tmp / "registry.csv"
        lines = ["id,secret,site_name,site_kind,latitude,longitude"]
        lines += [f"{b},{s},Bench site {i},market,34.{i:04d},71.5" for i, (b, s) in enumerate(buttons)]
        registry.write_text("\n".join(lines) + "\n")
        self.tokens = {op: f"token-{op}-0123456789abcdef" for op in operators}
        config = tmp / "relay.toml"
        body = ["[relay]", 'relay_name = "bench-compare"', *BENCH_LIMITS, *(options or []), "",
                "[relay.console_tokens]"]
        body += [f'"{op}" = "{token}"' for op, token in self.tokens.items()]
        config.write_text("\n".join(body) + "\n")
        self.ports = (free_port(), free_port())
        self.log = tmp / "relay.log"
        self.command = [
            PY, "-m", "pinkrelay", "serve", "--no-web", "--config", str(config), "--registry", str(registry),
            "--data-dir", str(data_dir or tmp / "data"), "--buttons-listen", f"127.0.0.1:{self.ports[0]}",
            "--consoles-listen", f"127.0.0.1:{self.ports[1]}", "--log-level", "warning", "--no-metrics",
        ]
        self.process = spawn(self.command, cpu=RELAY_CORE, log=self.log, rt=SERVER_RT[0])
        for port in self.ports:
            wait_port(port, self.process, 30, "pinkrelay", self.log)

    def pids(self) -> list[int]:
        return [self.process.pid]

    def peak_rss_kb(self) -> int:
        return proc_status_kb(self.process.pid, "VmHWM") or 0

    def close(self) -> None:
        stop(self.process, signal.SIGTERM, grace=10)


class Nginx:
    name = "nginx-rtmp"

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text((HERE / "nginx.conf.in").read_text().format(tmp=tmp, port=self.port))
        self.log = tmp / "nginx.log"
        self.command = ["nginx", "-c", str(conf), "-p", str(tmp)]
        self.process = spawn(self.command, cpu=RELAY_CORE, log=self.log, rt=SERVER_RT[0])
        wait_port(self.port, self.process, 15, "nginx", self.log)

    def pids(self) -> list[int]:
        return [self.process.pid, *children_of(self.process.pid)]

    def peak_rss_kb(self) -> int:
        return sum(proc_status_kb(pid, "VmHWM") or 0 for pid in self.pids())

    def close(self) -> None:
        stop(self.process, signal.SIGTERM, grace=10)  # fast shutdown of master and worker


class Mosquitto:
    name = "mosquitto"

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        conf = tmp / "mosquitto.conf"
        conf.write_text((HERE / "mosquitto.conf.in").read_text().format(tmp=tmp, port=self.port))
        self.log = tmp / "mosquitto.log"
        self.command = ["mosquitto", "-c", str(conf)]
        self.process = spawn(self.command, cpu=RELAY_CORE, log=self.log, rt=SERVER_RT[0])
        wait_port(self.port, self.process, 15, "mosquitto", self.log)

    def pids(self) -> list[int]:
        return [self.process.pid]

    def peak_rss_kb(self) -> int:
        return proc_status_kb(self.process.pid, "VmHWM") or 0

    def close(self) -> None:
        stop(self.process, signal.SIGTERM, grace=10)


# -- sampling ------------------------------------------------------------------------------


class Sample:
    """CPU of the server's processes, of the load processes and of each core, at one instant."""

    def __init__(self, server_pids: list[int], load_pids: list[int]) -> None:
        self.at = time.monotonic()
        self.server = sum(proc_cpu(p) or 0.0 for p in server_pids)
        self.per_load = {p: proc_cpu(p) or 0.0 for p in load_pids}
        self.load = sum(self.per_load.values())
        self.cores = core_times()


def cpu_between(a: Sample, b: Sample) -> dict[str, Any]:
    elapsed = b.at - a.at
    cores = {}
    for core in b.cores:
        busy = b.cores[core][0] - a.cores[core][0]
        total = b.cores[core][1] - a.cores[core][1]
        cores[core] = busy / total if total else None
    server = b.server - a.server
    load = b.load - a.load
    return {
        "elapsed_s": elapsed,
        "server_cpu_s": server,
        "server_fraction": server / elapsed,
        "load_fraction": load / elapsed,
        "per_load_process": {p: (b.per_load.get(p, 0.0) - a.per_load.get(p, 0.0)) / elapsed for p in b.per_load},
        "core_busy": cores,
        # CPU on the server's core that was not the server: other jobs on the machine
        # /proc/stat's per-core counters are sampled at the tick (processes that wake in step
        # with it are missed, others' jobs are included): indicative only. The processes' own
        # times (load_fraction) are exact.
        "relay_core_other": max(0.0, (cores.get(RELAY_CORE) or 0.0) - server / elapsed),
        "load_core_busy": cores.get(LOAD_CORE),
        "load_core_other": max(0.0, (cores.get(LOAD_CORE) or 0.0) - load / elapsed),
    }


def ss_bytes_sent(pid: int, port: int) -> int | None:
    """Bytes the process ``pid`` has sent on its connection to 127.0.0.1:port (ffmpeg's ingest)."""
    done = subprocess.run(["ss", "-tinpH", "state", "established", "dst", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=10, check=False)
    lines = done.stdout.splitlines()
    for i, line in enumerate(lines):
        if f"pid={pid}," in line and i + 1 < len(lines):
            found = re.search(r"bytes_sent:(\d+)", lines[i + 1])
            if found:
                return int(found.group(1))
    return None


# -- 1. fan-out ------------------------------------------------------------------------------


def fanout_run(system: str, n: int, rep: int, args: argparse.Namespace, clip: Path,
               profile_to: Path | None = None) -> dict[str, Any]:
    tmp = tmpdir("fanout")
    server: Any = None
    children: list[Child] = []
    ffmpeg = None
    result: dict[str, Any] = {"system": system, "n": n, "rep": rep}
    connect_timeout = 60 + n * 0.05
    try:
        started = time.monotonic()
        # Subscribers join before the publisher starts and read until after it stops, so each
        # must receive everything the publisher sent: keep-up compares whole totals, with no
        # window edge cutting through a keyframe.
        if system == "pinkrelay":
            button = ("bench-0001", "bench-secret-0001-0123456789abcdef")
            operators = [f"sub-{i:05d}" for i in range(n)] + ["probe"]
            server = Pinkrelay(tmp, [button], operators)
            publisher = Child("publisher", GEN, "pr-publish",
                              {"relay": ["127.0.0.1", server.ports[0]], "buttons": [list(button)],
                               "clip": str(clip)}, tmp, LOAD_CORE, rt=RT_PROBE)
            children.append(publisher)
            publisher.expect(60)
            subs = Child("subscribers", GEN, "pr-subs",
                         {"relay": ["127.0.0.1", server.ports[1]], "button": button[0], "period": args.period,
                          "consoles": [[op, server.tokens[op]] for op in operators[:-1]]}, tmp, LOAD_CORE)
            children.append(subs)
            subs.expect(connect_timeout)
            probe = Child("probe", GEN, "pr-probe",
                          {"relay": ["127.0.0.1", server.ports[1]], "button": button[0],
                           "console": ["probe", server.tokens["probe"]]}, tmp, LOAD_CORE, rt=RT_PROBE)
            children.append(probe)
            probe.expect(60)
            media_start = wall_us() + 300_000
            publisher.send({"media_start": media_start})
        else:
            server = Nginx(tmp)
            subs = Child("subscribers", GEN, "rtmp-subs",
                         {"server": ["127.0.0.1", server.port], "app": "live", "stream": "stream", "n": n,
                          "period": args.period}, tmp, LOAD_CORE)
            children.append(subs)
            subs.expect(connect_timeout)
            url = f"rtmp://127.0.0.1:{server.port}/live/stream"
            ffmpeg_cmd = ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "warning", "-re", "-stream_loop", "-1",
                          "-i", str(clip), "-c", "copy", "-f", "flv", url]
            media_start = wall_us()
            ffmpeg = spawn(ffmpeg_cmd, cpu=LOAD_CORE, log=tmp / "ffmpeg.log")
            result["publisher_command"] = " ".join(ffmpeg_cmd)
        result["setup_s"] = round(time.monotonic() - started, 2)
        t0 = media_start + int((args.warmup + 0.3) * 1e6)
        t1 = t0 + int(args.duration * 1e6)
        publisher_stop = t1 + 200_000
        for child in children:
            child.send({"window": [t0, t1], "stop": publisher_stop if child.name == "publisher" else t1 + 1_200_000})
        load_pids = [c.process.pid for c in children] + ([ffmpeg.pid] if ffmpeg else [])
        sleep_until_us(t0)
        a = Sample(server.pids(), load_pids)
        spy = None
        if profile_to is not None:
            spy = subprocess.Popen(
                [str(Path(PY).parent / "py-spy"), "record", "--pid", str(server.process.pid), "--duration",
                 str(max(1, int(args.duration))), "--rate", "200", "--format", "raw", "--nonblocking",
                 "--output", str(profile_to)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sleep_until_us(t1)
        b = Sample(server.pids(), load_pids)
        if spy is not None:
            try:
                spy.wait(15)
            except subprocess.TimeoutExpired:
                spy.kill()
        ingest_total = None
        if ffmpeg is not None:
            sleep_until_us(publisher_stop)
            os.kill(ffmpeg.pid, signal.SIGSTOP)  # freeze it, then read what it sent in all
            ingest_total = ss_bytes_sent(ffmpeg.pid, server.port)
            window_ingest = None
        outputs = {c.name: c.expect(30) for c in children}
        result["peak_rss_mb"] = round(server.peak_rss_kb() / 1024, 1)
        result["server_alive"] = server.process.poll() is None
    finally:
        for child in children:
            child.close()
        if ffmpeg is not None:
            if ffmpeg.poll() is None:
                os.kill(ffmpeg.pid, signal.SIGCONT)
            stop(ffmpeg, signal.SIGKILL, grace=3)
        if server is not None:
            server.close()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    window = (t1 - t0) / 1e6
    cpu = cpu_between(a, b)
    subs_pid = subs.process.pid
    subs_out = outputs["subscribers"]
    per_sub = subs_out["total_bytes"]
    delivered = subs_out["window_bytes_total"]
    if "probe" in outputs:
        delivered += outputs["probe"]["window_bytes_total"]
        per_sub = per_sub + outputs["probe"]["total_bytes"]
    if ffmpeg is not None:
        ingest = ingest_total or 0
        window_ingest = None
    else:
        ingest = outputs["publisher"]["total_bytes"]
        window_ingest = outputs["publisher"]["window_bytes"]
    ratios = [x / ingest for x in per_sub] if ingest else []
    closed = len(subs_out["closed"]) + (len(outputs["probe"]["closed"]) if "probe" in outputs else 0)
    missing = n + (1 if "probe" in outputs else 0) - len(per_sub)
    gbit = delivered * 8 / 1e9
    result.update(
        {
            "window_s": window,
            "ingest_total_bytes": ingest,
            "ingest_mbps": (window_ingest * 8 / 1e6 / window) if window_ingest else
            ingest * 8 / 1e6 / ((publisher_stop - media_start) / 1e6),
            "delivered_bytes": delivered,
            "delivered_gbps": gbit / window,
            "relay_cpu_s": cpu["server_cpu_s"],
            "relay_cpu_fraction": cpu["server_fraction"],
            "cpu_s_per_gbit": cpu["server_cpu_s"] / gbit if gbit else None,
            "min_keep_up": min(ratios) if ratios else None,
            "median_keep_up": statistics.median(ratios) if ratios else None,
            "subscribers_behind": sum(1 for r in ratios if r < KEEP_UP),
            "subscribers_closed": closed + missing,
            "all_kept_up": bool(ratios) and all(r >= KEEP_UP for r in ratios) and closed + missing == 0,
            "load_cpu_fraction": cpu["load_fraction"],
            "load_core_busy": cpu["load_core_busy"],
            "load_core_other": cpu["load_core_other"],
            "relay_core_other": cpu["relay_core_other"],
            "generator_bound": cpu["load_fraction"] >= GENERATOR_BOUND,
            "subscriber_reads_per_s": subs_out["reads"] / max(window, 1e-9),
            # The subscribers' process: on loopback the kernel bills part of the relay's TCP
            # work to it (see docs/benchmarks.md, honest notes), so the sum is the fair total.
            "subscribers_cpu_fraction": cpu["per_load_process"].get(subs_pid, 0.0),
            "relay_and_subscribers_cpu_s_per_gbit":
                (cpu["server_cpu_s"] + cpu["per_load_process"].get(subs_pid, 0.0) * cpu["elapsed_s"]) / gbit
                if gbit else None,
        }
    )
    if "probe" in outputs:
        us = outputs["probe"]["latency_us"]
        result["latency_ms"] = {k: (v / 1000 if k != "n" else v) for k, v in us.items()}
        for kind in ("video", "audio"):
            kus = outputs["probe"][f"{kind}_latency_us"]
            result[f"{kind}_latency_ms"] = {k: (v / 1000 if k != "n" else v) for k, v in kus.items()}
        result["publisher_pacing_lag_ms"] = outputs["publisher"]["pacing_lag_ms"]
    return result


def fanout(args: argparse.Namespace, clip: Path, report: dict[str, Any], save: Any) -> None:
    points: list[dict[str, Any]] = report["fanout"]["points"]
    for n in args.n:
        for rep in range(args.reps):
            # alternate which system goes first, so slow drifts of the machine hit both alike
            order = ("pinkrelay", "nginx-rtmp") if rep % 2 == 0 else ("nginx-rtmp", "pinkrelay")
            for system in order:
                if system not in args.systems:
                    continue
                try:
                    r = fanout_run(system, n, rep, args, clip)
                except Exception as error:  # noqa: BLE001 - record it and go on with the others
                    r = {"system": system, "n": n, "rep": rep, "error": str(error)[-3000:]}
                    log(f"  {system:10} N={n:5} rep {rep}: FAILED {str(error)[:300]}")
                else:
                    vlat = r.get("video_latency_ms") or {}
                    alat = r.get("audio_latency_ms") or {}
                    log(
                        f"  {system:10} N={n:5} rep {rep}: {r['delivered_gbps']:.3f} Gbit/s, relay "
                        f"{100 * r['relay_cpu_fraction']:.1f} % = {r['cpu_s_per_gbit'] or 0:.3f} CPU-s/Gbit, "
                        f"kept up {r['all_kept_up']} (min {100 * (r['min_keep_up'] or 0):.1f} %), RSS "
                        f"{r['peak_rss_mb']} MB, load {100 * r['load_cpu_fraction']:.0f} % (core 1 {100 * (r['load_core_busy'] or 0):.0f} %), other on "
                        f"relay core {100 * r['relay_core_other']:.0f} %"
                        + (f", video latency p50 {vlat['p50']:.2f} p99 {vlat['p99']:.2f} ms" if vlat.get("n") else "")
                        + (f", audio p50 {alat['p50']:.2f} p99 {alat['p99']:.2f} ms" if alat.get("n") else "")
                        + (f"; with subscribers {r['relay_and_subscribers_cpu_s_per_gbit']:.3f} CPU-s/Gbit"
                           if r.get("relay_and_subscribers_cpu_s_per_gbit") else "")
                    )
                points.append(r)
                save()
    report["fanout"]["summary"] = summarize_fanout(points)


def summarize_fanout(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(p["system"], p["n"]) for p in points}, key=lambda k: (k[1], k[0]))
    for system, n in keys:
        runs = [p for p in points if p["system"] == system and p["n"] == n and "error" not in p]
        if not runs:
            continue
        row: dict[str, Any] = {"system": system, "n": n, "runs": len(runs)}
        for key in ("delivered_gbps", "relay_cpu_fraction", "cpu_s_per_gbit", "peak_rss_mb", "load_core_busy",
                    "load_cpu_fraction", "min_keep_up", "relay_core_other", "subscribers_cpu_fraction",
                    "relay_and_subscribers_cpu_s_per_gbit"):
            values = [p[key] for p in runs if p.get(key) is not None]
            if values:
                row[key] = statistics.median(values)
                row[key + "_min"] = min(values)
                row[key + "_max"] = max(values)
        row["all_kept_up"] = all(p["all_kept_up"] for p in runs)
        row["generator_bound"] = any(p["generator_bound"] for p in runs)
        for kind in ("video", "audio"):
            lat = [p[f"{kind}_latency_ms"] for p in runs if p.get(f"{kind}_latency_ms", {}).get("n")]
            if lat:
                row[f"{kind}_latency_p50_ms"] = statistics.median(x["p50"] for x in lat)
                row[f"{kind}_latency_p99_ms"] = statistics.median(x["p99"] for x in lat)
                row[f"{kind}_latency_p99_ms_max"] = max(x["p99"] for x in lat)
        rows.append(row)
    by = {(r["system"], r["n"]): r for r in rows}
    for r in rows:
        if r["system"] == "pinkrelay" and ("nginx-rtmp", r["n"]) in by:
            other = by[("nginx-rtmp", r["n"])]
            if r.get("cpu_s_per_gbit") and other.get("cpu_s_per_gbit"):
                r["ratio_vs_nginx"] = r["cpu_s_per_gbit"] / other["cpu_s_per_gbit"]
            total = "relay_and_subscribers_cpu_s_per_gbit"
            if r.get(total) and other.get(total):
                r["total_ratio_vs_nginx"] = r[total] / other[total]
    return rows


# -- 2. alerts -----------------------------------------------------------------------------------


def alerts_run(system: str, args: argparse.Namespace, clip: Path, clip_info: dict[str, Any]) -> dict[str, Any]:
    journal = None
    if system.startswith("pinkrelay"):
        journal = "disk" if system.endswith("disk") else "tmpfs"
    tmp = tmpdir("alerts")
    data_dir = None
    if journal == "disk":
        data_dir = Path(tempfile.mkdtemp(prefix="bench-compare-journal-", dir="/var/tmp"))
    streams = args.bulk_streams
    per_stream_bits = args.bulk_mbytes * 8e6 / streams
    pad = max(1.0, (per_stream_bits - clip_info["audio_bits_per_s"]) / clip_info["video_bits_per_s"])
    server: Any = None
    children: list[Child] = []
    count, rate = args.alerts, args.alert_rate
    phase_s = count / rate
    result: dict[str, Any] = {"system": system, "alerts_per_phase": count, "alert_rate": rate,
                              "consoles": args.alert_consoles, "alert_buttons": args.alert_buttons,
                              "bulk_streams": streams, "pad_factor": round(pad, 3)}
    try:
        if journal:
            media = [(f"media-{i:03d}", f"media-secret-{i:03d}-0123456789abcdef") for i in range(streams)]
            pressers = [(f"alert-{i:03d}", f"alert-secret-{i:03d}-0123456789abcdef") for i in range(args.alert_buttons)]
            operators = [f"console-{i}" for i in range(args.alert_consoles)]
            options = ["merge_window = 0", "escalation_levels = [86400.0]"]
            server = Pinkrelay(tmp, media + pressers, operators, options, data_dir=data_dir)
            result["relay_options"] = options
            result["journal_dir"] = "disk (/var/tmp)" if journal == "disk" else "tmpfs (/dev/shm)"
            consoles = Child("consoles", GEN, "pr-alert-consoles",
                             {"relay": ["127.0.0.1", server.ports[1]], "watch": [b for b, _ in media],
                              "consoles": [[op, server.tokens[op]] for op in operators]}, tmp, LOAD_CORE, rt=RT_PROBE)
            children.append(consoles)
            consoles.expect(60)
            bulk = Child("bulk", GEN, "pr-publish",
                         {"relay": ["127.0.0.1", server.ports[0]], "buttons": [list(b) for b in media],
                          "clip": str(clip), "pad": pad, "stagger": 1.0}, tmp, LOAD_CORE)
            children.append(bulk)
            buttons = Child("buttons", GEN, "pr-alert-buttons",
                            {"relay": ["127.0.0.1", server.ports[0]], "buttons": [list(b) for b in pressers]},
                            tmp, LOAD_CORE, rt=RT_ALERTS)
            children.append(buttons)
        else:
            server = Mosquitto(tmp)
            where = ["127.0.0.1", server.port]
            role = "mqtt-lean-consoles" if system.endswith("lean") else "mqtt-consoles"
            consoles = Child("consoles", GEN, role, {"server": where, "consoles": args.alert_consoles},
                             tmp, LOAD_CORE, rt=RT_PROBE)
            children.append(consoles)
            consoles.expect(60)
            bulk = Child("bulk", GEN, "mqtt-bulk",
                         {"server": where, "streams": streams, "clip": str(clip), "pad": pad, "stagger": 1.0},
                         tmp, LOAD_CORE)
            children.append(bulk)
            buttons = Child("buttons", GEN, "mqtt-alert-pubs", {"server": where, "buttons": args.alert_buttons},
                            tmp, LOAD_CORE, rt=RT_ALERTS)
            children.append(buttons)
        bulk.expect(60)
        buttons.expect(60)
        quiet = wall_us() + 1_000_000
        quiet_end = quiet + int(phase_s * 1e6)
        media_start = quiet_end + 500_000
        loaded = media_start + int(args.warmup * 1e6) + 1_000_000  # every stream started (stagger 1 s)
        loaded_end = loaded + int(phase_s * 1e6)
        stop_at = loaded_end + 1_500_000
        schedule = {
            "alerts": [["quiet", quiet, count, rate], ["loaded", loaded, count, rate]],
            "media_start": media_start,
            "window": [loaded, loaded_end],
            "stop": stop_at,
        }
        for child in children:
            child.send(schedule)
        pids = server.pids()
        load_pids = [c.process.pid for c in children]
        pid_of = {c.name: c.process.pid for c in children}
        samples = {}
        for name, (start, end) in (("quiet", (quiet, quiet_end)), ("loaded", (loaded, loaded_end))):
            sleep_until_us(start)
            a = Sample(pids, load_pids)
            sleep_until_us(end)
            samples[name] = cpu_between(a, Sample(pids, load_pids))
        outputs = {c.name: c.expect(60) for c in children}
        result["peak_rss_mb"] = round(server.peak_rss_kb() / 1024, 1)
        result["server_alive"] = server.process.poll() is None
    finally:
        for child in children:
            child.close()
        if server is not None:
            server.close()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
            if data_dir is not None:
                shutil.rmtree(data_dir, ignore_errors=True)

    pressed = outputs["buttons"]["pressed"]
    received = outputs["consoles"]["received"]
    window_s = (loaded_end - loaded) / 1e6
    result["media_in_mbytes_per_s"] = outputs["bulk"]["window_bytes"] / 1e6 / window_s
    result["media_out_mbytes_per_s"] = sum(outputs["consoles"]["window_bytes"]) / 1e6 / window_s
    result["bulk_pacing_lag_ms"] = outputs["bulk"]["pacing_lag_ms"]
    result["duplicates"] = outputs["consoles"]["duplicates"]
    result["consoles_closed"] = outputs["consoles"].get("closed") or {}
    result["ack_latency_ms"] = {k: (v / 1000 if k != "n" else v) for k, v in outputs["buttons"]["ack_latency_us"].items()}
    result["acks_missing"] = outputs["buttons"]["acks_missing"]
    phases = {}
    for name in ("quiet", "loaded"):
        ids = [a for a in pressed if a.startswith(name + "-")]
        lat = []
        lost = 0
        for mine in received:
            for alert_id in ids:
                at = mine.get(alert_id)
                if at is None:
                    lost += 1
                else:
                    lat.append((at - pressed[alert_id]) / 1000)
        phases[name] = {
            "sent": len(ids),
            "deliveries_expected": len(ids) * len(received),
            "delivered": len(lat),
            "lost": lost,
            "latency_ms": percentiles(lat),
            "cdf_ms": cdf_points(lat),
            "server_cpu_fraction": samples[name]["server_fraction"],
            "load_core_busy": samples[name]["load_core_busy"],
            "load_cpu_fraction": samples[name]["load_fraction"],
            "load_core_other": samples[name]["load_core_other"],
            "relay_core_other": samples[name]["relay_core_other"],
            "load_processes": {c: samples[name]["per_load_process"].get(pid) for c, pid in pid_of.items()},
        }
    result["phases"] = phases
    q, l = phases["quiet"]["latency_ms"], phases["loaded"]["latency_ms"]
    if q.get("p99") and l.get("p99"):
        result["loaded_over_quiet_p99"] = l["p99"] / q["p99"]
    return result


def alerts(args: argparse.Namespace, clip: Path, report: dict[str, Any], save: Any) -> None:
    from common import read_clip

    info = read_clip(str(clip))
    video_bits = sum(len(p[2]) for p in info["packets"] if p[1]) * 8 / info["duration_s"]
    clip_info = {"video_bits_per_s": video_bits, "audio_bits_per_s": info["bits_per_s"] - video_bits}
    runs = report["alerts"]["runs"]
    for rep in range(args.alert_reps):
        for system in args.alert_systems:
            try:
                r = alerts_run(system, args, clip, clip_info)
                r["rep"] = rep
            except Exception as error:  # noqa: BLE001
                r = {"system": system, "rep": rep, "error": str(error)[-3000:]}
                log(f"  {system:16} alerts: FAILED {str(error)[:300]}")
            else:
                q, l = r["phases"]["quiet"], r["phases"]["loaded"]
                log(
                    f"  {system:16} alerts: quiet p50 {q['latency_ms'].get('p50', 0):.3f} p99 "
                    f"{q['latency_ms'].get('p99', 0):.3f} ms; loaded ({r['media_in_mbytes_per_s']:.1f} MB/s in, "
                    f"{r['media_out_mbytes_per_s']:.1f} out) p50 {l['latency_ms'].get('p50', 0):.3f} p99 "
                    f"{l['latency_ms'].get('p99', 0):.3f} ms; lost {q['lost']}+{l['lost']}, dup {r['duplicates']}; "
                    f"server CPU {100 * l['server_cpu_fraction']:.0f} %, load {100 * l['load_cpu_fraction']:.0f} % (core 1 {100 * (l['load_core_busy'] or 0):.0f} %)"
                )
            runs.append(r)
            save()


# -- 3. the machine's limit -------------------------------------------------------------------------


def limits(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tmp = tmpdir("iperf")
    port = free_port()
    server = spawn(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)], cpu=RELAY_CORE, log=tmp / "iperf3-server.log")
    try:
        deadline = time.monotonic() + 10
        while not listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        command = ["taskset", "-c", str(LOAD_CORE), "iperf3", "-c", "127.0.0.1", "-p", str(port), "-t",
                   str(args.iperf_seconds), "-J"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.iperf_seconds + 20, check=False)
        data = json.loads(done.stdout)
        out["iperf3_gbps"] = data["end"]["sum_received"]["bits_per_second"] / 1e9
        out["iperf3_command"] = " ".join(command)
        out["iperf3_sender_cpu_pct"] = data["end"].get("cpu_utilization_percent", {}).get("host_total")
        out["iperf3_receiver_cpu_pct"] = data["end"].get("cpu_utilization_percent", {}).get("remote_total")
    except Exception as error:  # noqa: BLE001
        out["iperf3_error"] = str(error)[-500:]
    finally:
        stop(server, grace=3)
        shutil.rmtree(tmp, ignore_errors=True)
    import numpy as np

    size = 256 * 1024 * 1024
    src = np.ones(size, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    out["memcpy_gbytes_per_s"] = size / best / 1e9
    out["memcpy_method"] = "numpy.copyto of 256 MiB, best of 5, one thread (bytes copied per second)"
    command = [PY, str(HERE / "loopback_nagle.py"), "--n", "800", "--seconds", "4"]
    if args.server_rt:
        command = ["chrt", "-f", str(args.server_rt), *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        out["loopback_nagle"] = json.loads(done.stdout)
        out["loopback_nagle_command"] = " ".join(command[command.index(PY):]).replace(str(ROOT) + "/", "")
    except Exception as error:  # noqa: BLE001
        out["loopback_nagle_error"] = str(error)[-500:]
    return out


# -- profile --------------------------------------------------------------------------------


def profile_fanout(args: argparse.Namespace, clip: Path) -> dict[str, Any] | None:
    """py-spy on pinkrelay at one N: where the relay's CPU goes per delivered byte."""
    exe = Path(PY).parent / "py-spy"
    if not exe.exists():
        log("  (no py-spy in the venv: .venv/bin/pip install py-spy)")
        return None
    out_file = tmpdir("profile") / "profile.txt"
    run = fanout_run("pinkrelay", args.profile, 0, args, clip, profile_to=out_file)
    time.sleep(1)
    if not out_file.exists():
        return {"error": "py-spy wrote no profile"}
    totals: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    samples = 0
    for line in out_file.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split("/")[-1].split(":")[0] + ")"
                  if " (" in f else f for f in stack.split(";")]
        totals[frames[-1]] = totals.get(frames[-1], 0) + n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
    shutil.rmtree(out_file.parent, ignore_errors=True)

    def top(table: dict[str, int]) -> list[list[Any]]:
        return [[k, round(100 * v / samples, 1)] for k, v in sorted(table.items(), key=lambda kv: -kv[1])[:15]]

    return {"n": args.profile, "run": {k: run.get(k) for k in ("delivered_gbps", "relay_cpu_fraction",
                                                               "cpu_s_per_gbit")},
            "samples": samples, "self_pct": top(totals), "inclusive_pct": top(inclusive)}


# -- main ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/compare/bench_compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer points and shorter windows (about 3 minutes)")
    p.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="subscriber counts (default 10,100,400,800,1200; quick: 100,800)")
    p.add_argument("--reps", type=int, default=2, help="runs per point and system (default 2)")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per fan-out run (default 5, quick 4)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)")
    p.add_argument("--period", type=float, default=0.01,
                   help="bulk subscribers read every socket at most once per PERIOD s (default 0.01)")
    p.add_argument("--systems", default="pinkrelay,nginx-rtmp", type=lambda s: s.split(","))
    p.add_argument("--alert-systems", default="pinkrelay,pinkrelay-disk,mosquitto,mosquitto-lean",
                   type=lambda s: s.split(","),
                   help="pinkrelay (journal on tmpfs), pinkrelay-disk (journal on disk, fsync), mosquitto "
                   "(paho-mqtt consoles), mosquitto-lean (the same broker, minimal raw-socket MQTT consoles)")
    p.add_argument("--alerts", type=int, default=5000, help="alerts per phase (default 5000)")
    p.add_argument("--alert-rate", type=float, default=1000.0, help="alerts per second (default 1000)")
    p.add_argument("--alert-consoles", type=int, default=4)
    p.add_argument("--alert-buttons", type=int, default=10, help="buttons pressing the alerts (default 10)")
    p.add_argument("--alert-reps", type=int, default=None, help="runs per alert system (default 2, quick 1)")
    p.add_argument("--bulk-mbytes", type=float, default=52.0, help="media in during the loaded phase, MB/s (default 52)")
    p.add_argument("--bulk-streams", type=int, default=25, help="streams carrying it (default 25)")
    p.add_argument("--server-rt", type=int, default=10, metavar="PRIO",
                   help="run every server SCHED_FIFO at PRIO (root; 0: normal scheduling; default 10)")
    p.add_argument("--iperf-seconds", type=int, default=3)
    p.add_argument("--skip", default="", type=lambda s: [x for x in s.split(",") if x],
                   help="sections to skip: limits,fanout,alerts")
    p.add_argument("--profile", type=int, default=None, metavar="N",
                   help="also py-spy pinkrelay at N subscribers, summary into the JSON (default 800, quick: 0 = no)")
    p.add_argument("--budget", type=float, default=600.0, help="stop everything after this many seconds (default 600)")
    p.add_argument("--keep-tmp", action="store_true")
    p.add_argument("--no-report", action="store_true", help="do not regenerate docs/benchmarks.md")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n is None:
        args.n = [100, 800] if args.quick else [10, 100, 400, 800, 1200]
    SERVER_RT[0] = max(0, min(99, args.server_rt))
    if args.duration is None:
        args.duration = 4.0 if args.quick else 5.0
    if args.alert_reps is None:
        args.alert_reps = 1 if args.quick else 2
    if args.profile is None:
        args.profile = 0 if args.quick else 800
    if args.quick:
        args.alerts = min(args.alerts, 3000)
    if (os.cpu_count() or 1) < 2:
        log("note: fewer than 2 cores; relay and load share a core, figures are not clean")

    def on_signal(signum: int, frame: Any) -> None:
        stop_all()
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(args.budget))
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"compare-{stamp}.json"
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if args.quick else "full",
        "command": "make bench-compare" + (" QUICK=1" if args.quick else ""),
        "argv": [Path(PY).name, str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *(argv or sys.argv[1:])],
        "settings": {k: v for k, v in vars(args).items() if k not in ("keep_tmp",)},
        "machine": machine(),
        "fanout": {"points": [], "summary": []},
        "alerts": {"runs": []},
    }

    def save() -> None:
        report["elapsed_s"] = round(time.time() - started, 1)
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")

    try:
        clip = ensure_clip()
        from common import read_clip

        info = read_clip(str(clip))
        report["clip"] = {
            "file": str(clip.relative_to(ROOT)),
            "command": " ".join(CLIP_COMMAND + ["clip.flv"]),
            "seconds": info["duration_s"],
            "bits_per_s": info["bits_per_s"],
            "messages_per_s": info["messages_per_s"],
            "video": {k: v for k, v in info["video"].items() if k != "extradata"},
            "audio": {k: v for k, v in info["audio"].items() if k != "extradata"},
        }
        log(f"clip: {info['bits_per_s'] / 1e6:.2f} Mbit/s, {info['messages_per_s']:.0f} messages/s; results -> "
            f"{path.relative_to(ROOT)}")
        if "limits" not in args.skip:
            log("3. the machine's limit (iperf3, memcpy)")
            report["limits"] = limits(args)
            log(f"  iperf3 loopback {report['limits'].get('iperf3_gbps', 0):.1f} Gbit/s; memcpy "
                f"{report['limits']['memcpy_gbytes_per_s']:.1f} GB/s")
            save()
        if "fanout" not in args.skip:
            log(f"1. fan-out, N = {args.n}, {args.reps} runs each, {args.duration:g} s measured after {args.warmup:g} s")
            fanout(args, clip, report, save)
            save()
        if "alerts" not in args.skip:
            log(f"2. alerts: {args.alerts} at {args.alert_rate:g}/s to {args.alert_consoles} consoles, quiet then "
                f"with {args.bulk_mbytes:g} MB/s of media in")
            alerts(args, clip, report, save)
            save()
        if args.profile:
            log(f"profile: py-spy on pinkrelay at N={args.profile}")
            report["profile"] = profile_fanout(args, clip)
            save()
    except KeyboardInterrupt as interrupt:
        report["interrupted"] = str(interrupt)
        log(f"interrupted ({interrupt}); every server and load process stopped")
    finally:
        signal.alarm(0)
        stop_all()
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        save()
    log(f"saved {path.relative_to(ROOT)} ({report['elapsed_s']} s)")
    if not args.no_report:
        from report import write_report

        for written in write_report(path):
            log(f"wrote {written.relative_to(ROOT)}")
    return 1 if report.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())

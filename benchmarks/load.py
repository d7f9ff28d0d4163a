#!/usr/bin/env python3
"""End-to-end load run of the pinkrelay relay on loopback: fan-out cost, keep-up, alert latency.

The relay runs as its own process (``python -m pinkrelay serve`` with a
generated registry, config and data dir in a temporary directory, on free
127.0.0.1 ports). Load comes from other processes (``load_clients.py``):

* one process with B buttons (sans-IO ``ButtonConnection`` over trio sockets)
  replaying one H.264+Opus clip, encoded once with ``media.encode_clip`` and
  cached under ``benchmarks/.cache``, in real time with fresh capture
  timestamps, starts staggered over ``--stagger`` seconds; the first
  ``--alert-buttons`` of them press alerts at ``--alert-rate`` per second in
  total (unique ids, ``pressed_at`` stamped just before sending; acks timed);
* one process with C "stripped" consoles, each subscribed to S buttons
  (round-robin): they read, run the compiled FrameDecoder, count messages
  and bytes, check sequence numbers (drops), sample media latency
  (now - frame timestamp, on video END frames) and time every alert
  (now - pressed_at);
* one "probe" process with a single console (alerts, plus ``--probe-subscriptions``
  streams): the same measurements from a process that is not busy reading
  everyone else's media, so its latencies are closer to what the relay adds.

With ``--pin`` (and 2+ cores) the relay is pinned to core 0 and every load
process to core 1 (``taskset``). Relay CPU is utime+stime from /proc/PID/stat
over the measurement window only (after ``--warmup``); peak RSS is VmHWM.
On a shared machine add ``--rt 10``: relay and load processes run SCHED_FIFO
(the buttons and the probe above the console generator), so other jobs' CPU
use stays out of the latencies (``other load`` in the table shows how much
there was). ``--tmp-base /dev/shm`` takes the disk's fsync out of the alert
path (the relay commits each alert to SQLite before it tells the consoles).

Figures (per run): delivered Gbit/s (bytes read by all consoles in the
window), relay CPU (% of one core), CPU-seconds per delivered Gbit, Gbit/s
per relay core, ingest, whether every console kept up (>= 99 % of the
messages its buttons sent in the window, by capture timestamp), sequence gaps
(drops), media latency, alert latency p50/p99/max with sent / received /
duplicate / lost counts, ack latency, and the generators' own CPU (a load
process above ~90 % of its core means the run measured the generator, not the
relay: the table says so).

Modes:
  default       one run (about 30 s with the defaults), ``--repeat N`` for N runs + medians
  --idle-alerts first an alerts-only phase (same clients, no media), then the loaded
                phase, in the same relay process; prints loaded/idle alert p99
  --sweep       grow C (``--sweep-over consoles``, default) or S until the relay stops
                keeping up, drops, saturates its core, or the probe's media p99 passes
                25 ms, or a load process passes 80 % of its core (then the generator,
                not the relay, is the limit: the report says so); report the max sustainable
                delivered Gbit/s, then re-run at 80 % of it with --idle-alerts and check
                issue 3's targets (alert p99 <= 1.5x idle and <= 2 ms; media p99 <= 5 ms;
                >= 2.4 Gbit/s delivered per relay core)

Every run stops by itself: each process has a deadline, children get SIGTERM
if this script dies (PR_SET_PDEATHSIG), and an alarm bounds the whole run.
Results: a table on stdout and JSON in ``benchmarks/results/load-<timestamp>.json``
(format: ``benchmarks/results/README.md``).

Example::

    .venv/bin/python benchmarks/load.py --buttons 20 --consoles 50 --subscriptions 4 \\
        --video 640x360@30 --bitrate 1000000 --alert-rate 20 --duration 20 --warmup 3 --pin --idle-alerts
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import pickle
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
CLIENTS = HERE / "load_clients.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEEP_UP = 0.99
SATURATED = 0.90  # also the most a SCHED_FIFO task gets (RT throttling: 95 %)
#: A load process above this share of its core falls behind in bursts (one Python
#: process reading thousands of sockets): the step measures the generator.
GENERATOR_SATURATED = 0.80
#: A sweep step whose probe sees media later than this (p99) is not sustainable live
#: video, whatever the counts say: the backlog is in a queue somewhere.
SUSTAINED_MEDIA_P99_MS = 25.0

# issue 3's targets
TARGET_ALERT_RATIO = 1.5
TARGET_ALERT_P99_MS = 2.0
TARGET_MEDIA_P99_MS = 5.0
TARGET_GBPS_PER_CORE = 2.4


# -- small helpers -----------------------------------------------------------------------


def wall_us() -> int:
    return time.time_ns() // 1000


def sleep_until_wall(target_us: int) -> None:
    while True:
        left = target_us / 1e6 - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_cpu(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    busy = sum(fields[:8]) - idle - steal
    return busy / CLK_TCK, steal / CLK_TCK


def proc_status(pid: int, key: str) -> int | None:
    """A kB value from /proc/PID/status (VmHWM, VmRSS)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def parse_video(text: str) -> tuple[int, int, float]:
    size, _, rate = text.partition("@")
    width, _, height = size.lower().partition("x")
    try:
        return int(width), int(height), float(rate or 30)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not WIDTHxHEIGHT@FPS, e.g. 640x360@30"
        ) from None


def parse_bitrate(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    try:
        return int(float(text[:-1] if scale != 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a bit rate such as 1000000 or 1M"
        ) from None


def ms(value_us: Any) -> float | None:
    return None if value_us is None else round(value_us / 1000, 3)


def lat_ms(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """Percentiles in µs (from load_clients) -> ms."""
    if not stats or not stats.get("n"):
        return None
    return {k: (v if k == "n" else ms(v)) for k, v in stats.items()}


def fmt_lat(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "n/a"
    return (
        f"p50 {stats['p50']:.2f}  p99 {stats['p99']:.2f}  p99.9 {stats['p999']:.2f}  "
        f"max {stats['max']:.2f} ms  (n={stats['n']})"
    )


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# -- child processes ----------------------------------------------------------------------


_CHILDREN: list[subprocess.Popen] = []


def _preexec(cpu: int | None) -> Any:
    def setup() -> None:
        try:  # die with the orchestrator, even if it is SIGKILLed
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
        except OSError:
            pass
        if cpu is not None and not shutil.which("taskset"):
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                pass

    return setup


#: SCHED_FIFO priority for the relay and the load processes (``--rt``); 0 = normal scheduling.
RT_PRIORITY = [0]


def spawn(
    command: list[str], *, cpu: int | None, stderr_path: Path, pipes: bool, env: dict | None = None
) -> subprocess.Popen:
    if RT_PRIORITY[0] and shutil.which("chrt"):
        command = ["chrt", "-f", str(RT_PRIORITY[0]), *command]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=_preexec(cpu),  # noqa: PLW1509 (prctl + affinity only)
            env=env,
            text=pipes,
            bufsize=1 if pipes else -1,
        )
    _CHILDREN.append(process)
    return process


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    try:
        process.send_signal(sig)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
    except ProcessLookupError:
        pass


def kill_children() -> None:
    for process in _CHILDREN:
        if process.poll() is None:
            try:
                process.kill()
                process.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    _CHILDREN.clear()


class Generator:
    """A load_clients.py process: JSON lines in, JSON lines out."""

    def __init__(
        self,
        role: str,
        name: str,
        settings: dict[str, Any],
        cpu: int | None,
        tmp: Path,
        rt_boost: int = 0,
    ) -> None:
        self.name = name
        self.stderr_path = tmp / f"{name}.stderr"
        saved = RT_PRIORITY[0]
        if saved:
            RT_PRIORITY[0] = min(99, saved + rt_boost)
        try:
            self.process = spawn(
                [sys.executable, str(CLIENTS), role],
                cpu=cpu,
                stderr_path=self.stderr_path,
                pipes=True,
            )
        finally:
            RT_PRIORITY[0] = saved
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(settings)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, obj: Any) -> None:
        self.process.stdin.write(json.dumps(obj) + "\n")
        self.process.stdin.flush()

    def expect(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"{self.name}: no answer within {timeout:.0f} s{self.stderr_tail()}"
                ) from None
            if line is None:
                self.process.wait(5)
                raise RuntimeError(
                    f"{self.name} exited (status {self.process.returncode}) before answering{self.stderr_tail()}"
                )
            if line.strip():
                return json.loads(line)

    def stderr_tail(self) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return ("\n--- " + self.name + " stderr ---\n" + text[-3000:]) if text else ""

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        stop_process(self.process, grace=3.0)


# -- the clip -------------------------------------------------------------------------------


def ensure_clip(width: int, height: int, fps: float, bitrate: int, seconds: float) -> Path:
    """Encode the test clip once per parameter set; later runs load the cached file."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"clip-{width}x{height}@{fps:g}-{bitrate}bps-{seconds:g}s-gop1-opus.pkl"
    if path.exists():
        return path
    from pinkrelay.media import encode_clip

    clip = encode_clip(seconds, width, height, fps, bitrate, gop_seconds=1.0)
    data = {
        "video": clip.video.to_dict(),
        "audio": clip.audio.to_dict(),
        "duration_us": clip.duration_us,
        "packets": [(p.kind == "video", p.data, p.pts_us, p.keyframe) for p in clip.packets],
    }
    partial = path.with_suffix(".tmp")
    with open(partial, "wb") as handle:
        pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(path)
    return path


# -- one run ---------------------------------------------------------------------------------


def write_setup(
    tmp: Path, buttons: int, extra: int, operators: list[str], options: list[str] | None = None
) -> tuple[Path, Path, list[tuple[str, str]], dict[str, str]]:
    registry = tmp / "registry.csv"
    ids = [
        (f"lt-{i:04d}", f"load-secret-{i:04d}-0123456789abcdef")
        for i in range(1, buttons + extra + 1)
    ]
    lines = ["id,secret,site_name,site_kind,latitude,longitude"]
    for index, (button_id, secret) in enumerate(ids):
        lines.append(
            f"{button_id},{secret},Load site {index + 1},market,{34.0 + index * 1e-4:.6f},71.5"
        )
    registry.write_text("\n".join(lines) + "\n")
    tokens = {op: f"token-{op}-0123456789abcdef" for op in operators}
    config = tmp / "relay.toml"
    body = ["[relay]", 'relay_name = "load-relay"', *(options or []), "", "[relay.console_tokens]"]
    body += [f'"{op}" = "{token}"' for op, token in tokens.items()]
    config.write_text("\n".join(body) + "\n")
    return registry, config, ids[:buttons], tokens


_SERVE_OPTIONS: list[str] = []


def serve_options() -> str:
    """``pinkrelay serve --help`` (asked once): which options this version of the relay has."""
    if not _SERVE_OPTIONS:
        done = subprocess.run(
            [sys.executable, "-m", "pinkrelay", "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        _SERVE_OPTIONS.append(done.stdout)
    return _SERVE_OPTIONS[0]


def _listening(ports: tuple[int, int]) -> bool:
    """Both ports accept TCP connections (checked by /proc/net/tcp, without connecting)."""
    wanted = {f"{port:04X}" for port in ports}
    found = set()
    try:
        with open("/proc/net/tcp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                local, state = fields[1], fields[3]
                if state == "0A":  # LISTEN
                    found.add(local.rsplit(":", 1)[1])
    except OSError:
        return True
    return wanted <= found


def start_relay(
    args: argparse.Namespace, tmp: Path, registry: Path, config: Path
) -> tuple[subprocess.Popen, tuple[int, int], Path]:
    for attempt in range(3):
        ports = (free_port(), free_port())
        log = tmp / f"relay-{attempt}.log"
        command = [
            sys.executable,
            "-m",
            "pinkrelay",
            "serve",
            "--config",
            str(config),
            "--registry",
            str(registry),
            "--data-dir",
            str(tmp / "data"),
            "--buttons-listen",
            f"127.0.0.1:{ports[0]}",
            "--consoles-listen",
            f"127.0.0.1:{ports[1]}",
            "--log-level",
            args.relay_log_level,
        ]
        if args.relay_switch_interval:
            # same CLI, with CPython's GIL switch interval changed first (an experiment knob)
            command[1:3] = [
                "-c",
                "import runpy, sys; sys.setswitchinterval(float(sys.argv.pop(1))); "
                "runpy.run_module('pinkrelay', run_name='__main__', alter_sys=True)",
                str(args.relay_switch_interval / 1000),
            ]
        options = serve_options()
        if "--no-web" in options and not args.web:
            command.append("--no-web")
        elif "--web-listen" in options:
            command += ["--web-listen", f"127.0.0.1:{free_port()}"]
        relay = spawn(command, cpu=0 if args.pin_cores else None, stderr_path=log, pipes=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if relay.poll() is not None:
                break
            if "relay listening" in log.read_text(errors="replace"):
                # still up a moment later (a service that fails to start takes the relay down)
                time.sleep(0.5)
                if relay.poll() is None and _listening(ports):
                    return relay, ports, log
                break
            time.sleep(0.05)
        text = log.read_text(errors="replace")
        stop_process(relay)
        if "cannot listen" not in text and "Address already in use" not in text:
            raise RuntimeError(f"the relay did not start:\n{text[-3000:]}")
    raise RuntimeError("the relay could not get free ports three times")


def run_once(
    args: argparse.Namespace,
    *,
    consoles: int,
    subscriptions: int,
    idle_alerts: bool,
    alert_rate: float,
    duration: float,
    warmup: float,
    profile: bool = False,
    label: str = "",
) -> dict[str, Any]:
    """Start a relay and the load processes, run the schedule, collect and compute everything."""
    buttons = args.buttons
    subscriptions = min(subscriptions, buttons)
    width, height, fps = args.video
    clip = ensure_clip(width, height, fps, args.bitrate, args.clip_seconds)
    tmp = Path(tempfile.mkdtemp(prefix="pinkrelay-load-", dir=args.tmp_base))
    operators = [f"load-{j:04d}" for j in range(1, consoles + 1)]
    probe_ops = ["probe-1"] if args.probe else []
    registry, config, button_ids, tokens = write_setup(
        tmp, buttons, args.extra_buttons, operators + probe_ops, args.relay_option
    )
    generators: list[Generator] = []
    relay = None
    py_spy = None
    idle_duration = args.idle_duration or min(duration, 10.0)
    budget = (
        120
        + (idle_duration if idle_alerts else 0)
        + warmup
        + duration
        + args.stagger
        + args.tail
        + consoles * 0.05
    )
    old_alarm = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(budget))
    try:
        relay, ports, _relay_log = start_relay(args, tmp, registry, config)
        gen_cpu = 1 if args.pin_cores else None
        common = {
            "tail": args.tail,
            "hard_timeout": 30,
            "connect_timeout": 60 + consoles * 0.1,
            "raw": args.keep_tmp,
        }
        button_gen = Generator(
            "buttons",
            "buttons",
            {
                **common,
                "relay": ["127.0.0.1", ports[0]],
                "buttons": button_ids,
                "clip": str(clip),
                "bitrate": args.bitrate,
                "pad": args.pad,
                "stagger": args.stagger,
                "alert_rate": alert_rate,
                "alert_buttons": args.alert_buttons,
                "tag": f"a{os.getpid()}-{int(time.time())}",
            },
            gen_cpu,
            tmp,
            # with --rt: above the console generator, so pacing and ack times are not held
            # back by the console generator's busy read loop on the same core
            rt_boost=1,
        )
        generators.append(button_gen)
        ready = button_gen.expect(common["connect_timeout"] + 30)
        tracks = ready["tracks"]
        clip_info = ready["clip"]
        watch = {
            op: [button_ids[(j * subscriptions + k) % buttons][0] for k in range(subscriptions)]
            for j, op in enumerate(operators)
        }
        console_gen = Generator(
            "consoles",
            "consoles",
            {
                **common,
                "relay": ["127.0.0.1", ports[1]],
                "consoles": [[op, tokens[op], watch[op]] for op in operators],
            },
            gen_cpu,
            tmp,
        )
        generators.append(console_gen)
        probe_gen = None
        if args.probe:
            probe_watch = [
                button_ids[-1 - k][0] for k in range(min(args.probe_subscriptions, buttons))
            ]
            watch["probe-1"] = probe_watch
            probe_gen = Generator(
                "consoles",
                "probe",
                {
                    **common,
                    "relay": ["127.0.0.1", ports[1]],
                    "consoles": [["probe-1", tokens["probe-1"], probe_watch]],
                },
                gen_cpu,
                tmp,
                # with --rt the probe preempts the other load processes on its core, so the
                # console generator's busy loop does not delay what the probe measures
                rt_boost=2,
            )
            generators.append(probe_gen)
        for gen in generators[1:]:
            gen.expect(common["connect_timeout"] + 30)

        # -- the schedule (wall clock, µs) --
        t0 = wall_us() + 1_000_000
        phases: list[list[Any]] = []
        if idle_alerts:
            idle_start = t0 + 500_000
            idle_end = idle_start + int(idle_duration * 1e6)
            phases.append(["idle", idle_start, idle_end])
            media_start = idle_end
        else:
            media_start = t0
        loaded_start = media_start + int((args.stagger + warmup) * 1e6)
        loaded_end = loaded_start + int(duration * 1e6)
        phases.append(["loaded", loaded_start, loaded_end])
        schedule = {
            "media_start": media_start,
            "alerts_start": t0,
            "stop": loaded_end,
            "phases": phases,
            "media_phase": "loaded",
        }
        for gen in generators:
            gen.send(schedule)

        # -- sample CPU at the edges of each window --
        pids = {"relay": relay.pid, **{g.name: g.process.pid for g in generators}}
        cpu: dict[str, dict[str, Any]] = {}
        for name, start, end in phases:
            sleep_until_wall(start)
            before = {k: proc_cpu(p) for k, p in pids.items()}
            machine_before = machine_cpu()
            started = time.monotonic()
            if profile and name == "loaded":
                py_spy = start_py_spy(args, relay.pid, duration, tmp)
            sleep_until_wall(end)
            after = {k: proc_cpu(p) for k, p in pids.items()}
            machine_after = machine_cpu()
            elapsed = time.monotonic() - started
            cpu[name] = {"elapsed_s": elapsed}
            ours = 0.0
            for k in pids:
                if before[k] and after[k]:
                    user = after[k][0] - before[k][0]
                    system = after[k][1] - before[k][1]
                    ours += user + system
                    cpu[name][k] = {
                        "user_s": user,
                        "sys_s": system,
                        "fraction": (user + system) / elapsed,
                    }
            # everything else on the machine (peers' tests, builds): a disturbed run shows here
            cpu[name]["other_cores"] = (machine_after[0] - machine_before[0] - ours) / elapsed
            cpu[name]["steal_cores"] = (machine_after[1] - machine_before[1]) / elapsed
        wait = args.tail + 30
        results = {gen.name: gen.expect(wait) for gen in generators}
        if args.keep_tmp:
            (tmp / "generators.json").write_text(
                json.dumps({"schedule": schedule, "results": results})
            )
        peak_rss_kb = proc_status(relay.pid, "VmHWM")
        relay_alive = relay.poll() is None
        profile_out = finish_py_spy(py_spy) if py_spy else None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        for gen in generators:
            gen.close()
        if relay is not None:
            stop_process(relay)
        if py_spy is not None and py_spy[0].poll() is None:
            stop_process(py_spy[0], signal.SIGINT)
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    return compute(
        args,
        label=label,
        consoles=consoles,
        subscriptions=subscriptions,
        alert_rate=alert_rate,
        duration=duration,
        warmup=warmup,
        idle_alerts=idle_alerts,
        phases=phases,
        cpu=cpu,
        results=results,
        watch=watch,
        tracks=tracks,
        clip_info=clip_info,
        peak_rss_kb=peak_rss_kb,
        relay_alive=relay_alive,
        profile=profile_out,
        tmp=str(tmp) if args.keep_tmp else None,
    )


def _alarm(signum: int, frame: Any) -> None:
    raise TimeoutError("the load run went past its time budget; stopping every process")


# -- py-spy -----------------------------------------------------------------------------------


def start_py_spy(
    args: argparse.Namespace, pid: int, duration: float, tmp: Path
) -> tuple[subprocess.Popen, Path] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists() and not shutil.which(exe):
        print("  (py-spy not found: .venv/bin/pip install py-spy)", file=sys.stderr)
        return None
    out = tmp / "profile.txt"
    command = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, int(duration))),
        "--rate",
        str(args.profile_rate),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    # --native needs to stop the relay for each sample (py-spy refuses --nonblocking with it):
    # figures of a --profile-native run are disturbed; use it to see where time goes only.
    command.append("--native" if args.profile_native else "--nonblocking")
    saved, RT_PRIORITY[0] = RT_PRIORITY[0], 0  # the profiler runs at normal priority
    try:
        process = spawn(
            command,
            cpu=1 if args.pin_cores else None,
            stderr_path=tmp / "py-spy.stderr",
            pipes=False,
        )
    finally:
        RT_PRIORITY[0] = saved
    return process, out


def finish_py_spy(handle: tuple[subprocess.Popen, Path]) -> dict[str, Any] | None:
    process, out = handle
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        stop_process(process, signal.SIGINT)
    if not out.exists():
        err = out.parent / "py-spy.stderr"
        return {"error": err.read_text(errors="replace")[-2000:] if err.exists() else "no output"}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    kept = RESULTS / f"profile-{stamp}.txt"
    shutil.copyfile(out, kept)
    return {"file": str(kept.relative_to(HERE.parent)), **summarize_profile(out)}


def _frame_name(frame: str) -> str:
    """``function (path/file.py:123)`` -> ``function (file.py)``: aggregate over lines."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    short = "/".join(path.split("/")[-2:]) if path else ""
    return f"{name} ({short})" if short else name


def summarize_profile(path: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output.

    Shares are of the samples of the trio thread (stacks that go through
    trio's run loop): the thread that does every relay decision and every
    send. Samples of other threads (the journal's SQLite writer) are counted
    apart. With --native, C frames appear (libc ``sendmsg``, ``recv`` ...);
    unresolved addresses are grouped per library.
    """
    total = other = 0
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    other_own: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        frames = [f"(unresolved) {f.split(' ', 1)[1]}" if f.startswith("0x") else f for f in frames]
        if not frames:
            continue
        if not any(f.startswith("unrolled_run ") for f in frames):
            other += n
            other_own[frames[-1]] = other_own.get(frames[-1], 0) + n
            continue
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + n

    def ranked(table: dict[str, int], base: int) -> list[list[Any]]:
        return [
            [name, round(100 * n / base, 1)]
            for name, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]
            if base
        ]

    return {
        "samples": total,
        "other_thread_samples": other,
        "self_pct": ranked(own, total),
        "inclusive_pct": ranked(inclusive, total),
        "other_threads_self_pct": ranked(other_own, other),
    }


# -- figures ---------------------------------------------------------------------------------


def compute(args: argparse.Namespace, **run: Any) -> dict[str, Any]:
    results = run["results"]
    buttons = results["buttons"]
    console_results = [results["consoles"]] + ([results["probe"]] if "probe" in results else [])
    cpu = run["cpu"]
    loaded_cpu = cpu["loaded"]
    window = loaded_cpu["elapsed_s"]
    scheduled = {name: (end - start) / 1e6 for name, start, end in run["phases"]}

    # track id -> button, and what each button sent in the loaded window (by capture time)
    owner = {}
    sent_msgs: dict[str, int] = {}
    ingest_bytes = 0
    for button_id, info in buttons["buttons"].items():
        for track in info["tracks"]:
            owner[track] = button_id
        tally = info["sent"].get("loaded", [0, 0, 0])
        sent_msgs[button_id] = tally[0] + tally[1]
        ingest_bytes += tally[2]
    ingest_msgs = sum(sent_msgs.values())

    delivered = 0
    per_console = []
    gaps = gap_events = backwards = closed = duplicates_alert = 0
    for block in console_results:
        for c in block["consoles"]:
            expected = sum(sent_msgs.get(b, 0) for b in c["watch"])
            received = sum(n for t, n in c["count"].items() if owner.get(int(t)) in c["watch"])
            ratio = received / expected if expected else None
            per_console.append(
                {
                    "operator": c["operator"],
                    "expected": expected,
                    "received": received,
                    "ratio": ratio,
                    "gaps": c["gaps"],
                    "closed": c["closed"],
                }
            )
            delivered += c["bytes"].get("loaded", 0)
            gaps += c["gaps"]
            gap_events += c["gap_events"]
            backwards += c["backwards"]
            duplicates_alert += c["duplicate_alerts"]
            if c["closed"]:
                closed += 1
    ratios = [p["ratio"] for p in per_console if p["ratio"] is not None]
    behind = [p for p in per_console if p["ratio"] is not None and p["ratio"] < KEEP_UP]
    all_kept_up = not behind and closed == 0 and bool(ratios)

    relay_cpu = loaded_cpu.get("relay", {})
    cpu_s = relay_cpu.get("user_s", 0) + relay_cpu.get("sys_s", 0)
    cpu_fraction = relay_cpu.get("fraction")
    gbit = delivered * 8 / 1e9
    delivered_gbps = gbit / scheduled["loaded"]

    def gen_fraction(phase: str, name: str) -> float | None:
        entry = cpu.get(phase, {}).get(name)
        return entry["fraction"] if entry else None

    phases_out: dict[str, Any] = {}
    for name, _start, _end in run["phases"]:
        sent_alerts = buttons["phases"][name]["alerts"]
        n_consoles = sum(len(block["consoles"]) for block in console_results)
        got = 0
        for block in console_results:
            received = block["phases"][name]["alerts_received"]
            got += sum(min(received.get(a, 0), len(block["consoles"])) for a in sent_alerts)
        expected = len(sent_alerts) * n_consoles
        phase = {
            "window_s": scheduled[name],
            "alerts_sent": len(sent_alerts),
            "alert_deliveries_expected": expected,
            "alert_deliveries_received": got,
            "alerts_lost": expected - got,
            "alert_latency_ms": lat_ms(results["consoles"]["phases"][name]["alert_latency_us"]),
            "alert_latency_probe_ms": lat_ms(results["probe"]["phases"][name]["alert_latency_us"])
            if "probe" in results
            else None,
            "alert_first_console_latency_ms": lat_ms(
                results["consoles"]["phases"][name].get("alert_first_latency_us")
            ),
            "alert_spread_ms": lat_ms(results["consoles"]["phases"][name].get("alert_spread_us")),
            "ack_latency_ms": lat_ms(buttons["phases"][name]["ack_latency_us"]),
            "acks_missing": buttons["phases"][name]["acks_missing"],
            "relay_cpu_fraction": gen_fraction(name, "relay"),
            "other_load_cores": round(cpu.get(name, {}).get("other_cores", 0), 3),
            "steal_cores": round(cpu.get(name, {}).get("steal_cores", 0), 3),
        }
        phases_out[name] = phase

    generators = {
        name: gen_fraction("loaded", name)
        for name in ("buttons", "consoles", "probe")
        if name in results
    }
    generators_sys = {
        name: cpu["loaded"][name]["sys_s"] / window
        for name in ("buttons", "consoles", "probe")
        if name in cpu["loaded"]
    }
    generator_bound = any(v is not None and v >= GENERATOR_SATURATED for v in generators.values())
    loaded = phases_out["loaded"]
    out: dict[str, Any] = {
        "label": run["label"],
        "params": {
            "buttons": args.buttons,
            "extra_buttons": args.extra_buttons,
            "consoles": run["consoles"],
            "subscriptions": run["subscriptions"],
            "probe": args.probe,
            "probe_subscriptions": args.probe_subscriptions if args.probe else 0,
            "total_subscriptions": sum(len(w) for w in run["watch"].values()),
            "video": "{}x{}@{:g}".format(*args.video),
            "bitrate": args.bitrate,
            "clip": run["clip_info"],
            "alert_rate": run["alert_rate"],
            "alert_buttons": min(args.alert_buttons, args.buttons),
            "duration": run["duration"],
            "warmup": run["warmup"],
            "idle_alerts": run["idle_alerts"],
            "pinned": args.pin_cores,
            "data_dir_base": args.tmp_base or tempfile.gettempdir(),
            "relay_options": args.relay_option,
            "rt_priority": args.rt,
            "relay_switch_interval_ms": args.relay_switch_interval or None,
            "web": args.web,
        },
        "relay": {
            "cpu_s": round(cpu_s, 3),
            "cpu_user_s": round(relay_cpu.get("user_s", 0), 3),
            "cpu_sys_s": round(relay_cpu.get("sys_s", 0), 3),
            "cpu_fraction": cpu_fraction,
            "peak_rss_mb": round(run["peak_rss_kb"] / 1024, 1) if run["peak_rss_kb"] else None,
            "alive_at_end": run["relay_alive"],
        },
        "window_s": window,
        "delivered_bytes": delivered,
        "delivered_gbps": delivered_gbps,
        "delivered_msgs_per_s": sum(p["received"] for p in per_console) / scheduled["loaded"],
        "cpu_s_per_gbit": cpu_s / gbit if gbit else None,
        "gbps_per_core": delivered_gbps / cpu_fraction if cpu_fraction else None,
        "ingest_mbps": ingest_bytes * 8 / 1e6 / scheduled["loaded"],
        "ingest_msgs_per_s": ingest_msgs / scheduled["loaded"],
        "all_kept_up": all_kept_up,
        "min_keep_up_ratio": min(ratios) if ratios else None,
        "consoles_behind": len(behind),
        "consoles_closed": closed,
        "drops_seq_gaps": gaps,
        "drop_events": gap_events,
        "seq_backwards": backwards,
        "duplicate_alerts": duplicates_alert,
        "media_latency_ms": lat_ms(results["consoles"]["media_latency_us"]),
        "media_latency_probe_ms": lat_ms(results["probe"]["media_latency_us"])
        if "probe" in results
        else None,
        "pacing_lag_ms": results["buttons"]["pacing_lag_ms"],
        "generators_cpu_fraction": generators,
        "generator_bound": generator_bound,
        "generators_sys_fraction": generators_sys,
        "other_load_cores": round(loaded_cpu.get("other_cores", 0), 3),
        "relay_saturated": bool(cpu_fraction and cpu_fraction >= SATURATED),
        "phases": phases_out,
        "stopped_early": {
            name: r.get("stopped") for name, r in results.items() if r.get("stopped")
        },
        "closed_buttons": {b: i["closed"] for b, i in buttons["buttons"].items() if i["closed"]},
        "profile": run["profile"],
        "slow_consoles": sorted(behind, key=lambda p: p["ratio"])[:10],
    }
    if "idle" in phases_out:
        idle = phases_out["idle"]
        for key in ("alert_latency_ms", "alert_latency_probe_ms"):
            if idle.get(key) and loaded.get(key) and idle[key]["p99"]:
                out[key.replace("alert_latency", "alert_p99_ratio").replace("_ms", "")] = (
                    loaded[key]["p99"] / idle[key]["p99"]
                )
    if run["tmp"]:
        out["tmp"] = run["tmp"]
    return out


# -- output ----------------------------------------------------------------------------------


def print_run(r: dict[str, Any], index: str = "") -> None:
    p = r["params"]
    clip = p["clip"]
    per_button = (clip["video_bitrate"] + clip["audio_bitrate"]) / 1e6
    print(
        f"\n== run {index}{r['label']}: B={p['buttons']} buttons ({p['video']}, {per_button:.2f} Mbit/s each"
        f"{', padded' if clip['padded'] else ''}), C={p['consoles']} consoles x S={p['subscriptions']}"
        f"{' (+1 probe console)' if p['probe'] else ''} = {p['total_subscriptions']} subscriptions; "
        f"{p['duration']:g} s measured after {p['warmup']:g} s warm-up{'; pinned' if p['pinned'] else ''}"
        f"{'; SCHED_FIFO ' + str(p['rt_priority']) if p.get('rt_priority') else ''}"
    )
    rows = [
        (
            "delivered",
            f"{r['delivered_gbps']:.3f} Gbit/s  ({r['delivered_bytes'] / 1e6 / r['params']['duration']:.1f} MB/s, "
            f"{r['delivered_msgs_per_s']:,.0f} msgs/s)",
        ),
        (
            "relay CPU",
            f"{pct(r['relay']['cpu_fraction'])} of a core  (user {r['relay']['cpu_user_s']:.2f} s, "
            f"sys {r['relay']['cpu_sys_s']:.2f} s over {r['window_s']:.1f} s)"
            + ("  SATURATED" if r["relay_saturated"] else ""),
        ),
        (
            "CPU-s per delivered Gbit",
            "n/a" if r["cpu_s_per_gbit"] is None else f"{r['cpu_s_per_gbit']:.3f}",
        ),
        (
            "Gbit/s per relay core",
            "n/a" if r["gbps_per_core"] is None else f"{r['gbps_per_core']:.3f}",
        ),
        ("relay peak RSS", f"{r['relay']['peak_rss_mb']} MB"),
        (
            "ingest",
            f"{r['ingest_mbps']:.1f} Mbit/s, {r['ingest_msgs_per_s']:,.0f} msgs/s  "
            f"(button pacing lag p99 {r['pacing_lag_ms'].get('p99', 'n/a')} ms)",
        ),
        (
            "kept up",
            (
                "yes"
                if r["all_kept_up"]
                else f"NO ({r['consoles_behind']} behind, {r['consoles_closed']} closed)"
            )
            + (
                f"  (min {100 * r['min_keep_up_ratio']:.2f} % of expected messages)"
                if r["min_keep_up_ratio"] is not None
                else ""
            ),
        ),
        (
            "drops",
            f"{r['drops_seq_gaps']} messages missing in {r['drop_events']} gaps"
            + (f", {r['seq_backwards']} out of order" if r["seq_backwards"] else ""),
        ),
        ("media latency (consoles)", fmt_lat(r["media_latency_ms"])),
    ]
    if r["media_latency_probe_ms"]:
        rows.append(("media latency (probe)", fmt_lat(r["media_latency_probe_ms"])))
    for name, phase in r["phases"].items():
        if not phase["alerts_sent"]:
            continue
        rows.append(
            (
                f"alerts [{name}]",
                f"sent {phase['alerts_sent']}, delivered {phase['alert_deliveries_received']}/"
                f"{phase['alert_deliveries_expected']}, lost {phase['alerts_lost']}, "
                f"duplicates {r['duplicate_alerts']}, acks missing {phase['acks_missing']}",
            )
        )
        rows.append(("  alert latency (consoles)", fmt_lat(phase["alert_latency_ms"])))
        if phase["alert_latency_probe_ms"]:
            rows.append(("  alert latency (probe)", fmt_lat(phase["alert_latency_probe_ms"])))
        rows.append(
            ("  first console to get it", fmt_lat(phase.get("alert_first_console_latency_ms")))
        )
        rows.append(("  last minus first console", fmt_lat(phase.get("alert_spread_ms"))))
        rows.append(("  ack latency (button)", fmt_lat(phase["ack_latency_ms"])))
        if name == "idle":
            rows.append(("  relay CPU while idle", pct(phase["relay_cpu_fraction"])))
    for key, what in (("alert_p99_ratio", "consoles"), ("alert_p99_ratio_probe", "probe")):
        if key in r:
            rows.append((f"alert p99 loaded/idle ({what})", f"{r[key]:.2f}x"))
    sys_part = r.get("generators_sys_fraction", {})
    gens = ", ".join(
        f"{k} {pct(v)}" + (f" (sys {pct(sys_part[k])})" if k in sys_part else "")
        for k, v in r["generators_cpu_fraction"].items()
    )
    rows.append(
        (
            "other load on the machine",
            f"{r['other_load_cores']:.2f} cores (processes not in this run)"
            + ("  <- DISTURBED: another job was running" if r["other_load_cores"] > 0.2 else ""),
        )
    )
    rows.append(
        (
            "load generators CPU",
            gens
            + (
                "  <- GENERATOR-BOUND: figures are limits of the load, not the relay"
                if r["generator_bound"]
                else ""
            ),
        )
    )
    if r["closed_buttons"]:
        rows.append(("buttons closed", str(r["closed_buttons"])[:200]))
    if r["stopped_early"]:
        rows.append(("stopped early", str(r["stopped_early"])))
    if r.get("profile") and r["profile"].get("error"):
        rows.append(("profile", "py-spy failed: " + r["profile"]["error"].strip()[-300:]))
    if r.get("profile") and r["profile"].get("samples"):
        rows.append(("profile", f"{r['profile']['file']} ({r['profile']['samples']} samples)"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if r.get("profile") and r["profile"].get("samples"):
        print(
            f"  trio thread: {r['profile']['samples']} samples; other threads (journal writer): "
            f"{r['profile']['other_thread_samples']} samples"
        )
        print("  top functions of the trio thread (self %):")
        for name, share in r["profile"]["self_pct"][:12]:
            print(f"    {share:5.1f}  {name}")
        print("  top functions of the trio thread (inclusive %):")
        for name, share in r["profile"]["inclusive_pct"][:12]:
            print(f"    {share:5.1f}  {name}")


SUMMARY_KEYS = [
    ("delivered_gbps", "delivered Gbit/s"),
    (("relay", "cpu_fraction"), "relay CPU fraction"),
    ("cpu_s_per_gbit", "CPU-s per Gbit"),
    ("gbps_per_core", "Gbit/s per core"),
    (("relay", "peak_rss_mb"), "peak RSS MB"),
    ("min_keep_up_ratio", "min keep-up ratio"),
    ("drops_seq_gaps", "drops"),
    (("media_latency_ms", "p99"), "media p99 ms (consoles)"),
    (("media_latency_probe_ms", "p99"), "media p99 ms (probe)"),
    (("phases", "loaded", "alert_latency_ms", "p99"), "alert p99 ms loaded (consoles)"),
    (("phases", "loaded", "alert_latency_probe_ms", "p99"), "alert p99 ms loaded (probe)"),
    (("phases", "idle", "alert_latency_ms", "p99"), "alert p99 ms idle (consoles)"),
    (("phases", "idle", "alert_latency_probe_ms", "p99"), "alert p99 ms idle (probe)"),
    ("alert_p99_ratio", "alert p99 loaded/idle (consoles)"),
    ("alert_p99_ratio_probe", "alert p99 loaded/idle (probe)"),
]


def dig(r: dict[str, Any], key: Any) -> Any:
    if isinstance(key, str):
        return r.get(key)
    for part in key:
        if not isinstance(r, dict):
            return None
        r = r.get(part)
    return r


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {label: median([dig(r, key) for r in runs]) for key, label in SUMMARY_KEYS}


def print_medians(summary: dict[str, Any], n: int) -> None:
    print(f"\n== medians over {n} runs")
    for label, value in summary.items():
        if value is not None:
            print(
                f"  {label:<36} {value:.4g}"
                if isinstance(value, float)
                else f"  {label:<36} {value}"
            )


_SAVE_PATH: list[Path] = []


def save(report: dict[str, Any]) -> Path:
    """Write the report; one file per invocation, rewritten as runs complete."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not _SAVE_PATH:
        _SAVE_PATH.append(RESULTS / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json")
    path = _SAVE_PATH[0]
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return path


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    compiled = None
    try:
        from pinkrelay._core import COMPILED as compiled
    except ImportError:
        pass

    def git(*command: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(HERE.parent), *command],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty_src_files": len(git("status", "--porcelain", "src").splitlines()),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "compiled_core": compiled,
        "taskset": bool(shutil.which("taskset")),
    }


# -- sweep -----------------------------------------------------------------------------------


def step_ok(r: dict[str, Any]) -> tuple[bool, str]:
    if not r["all_kept_up"]:
        return (
            False,
            f"not every console kept up (min {100 * (r['min_keep_up_ratio'] or 0):.2f} %, {r['consoles_closed']} closed)",
        )
    if r["drops_seq_gaps"]:
        return False, f"{r['drops_seq_gaps']} messages dropped"
    if r["relay_saturated"]:
        return False, f"relay CPU {pct(r['relay']['cpu_fraction'])} (saturated)"
    if r["generator_bound"]:
        return False, f"load generator saturated ({r['generators_cpu_fraction']})"
    probe = (r.get("media_latency_probe_ms") or {}).get("p99")
    if probe is not None and probe > SUSTAINED_MEDIA_P99_MS:
        return False, f"media p99 at the probe {probe:.1f} ms > {SUSTAINED_MEDIA_P99_MS:g} ms"
    return True, "ok"


def sweep(args: argparse.Namespace, report: dict[str, Any]) -> None:
    over = args.sweep_over
    value = args.sweep_start or (args.consoles if over == "consoles" else args.subscriptions)
    limit = args.sweep_max or (5000 if over == "consoles" else args.buttons)
    steps: list[dict[str, Any]] = []
    report["sweep"] = {"over": over, "steps": steps}
    best: dict[str, Any] | None = None
    stop_reason = f"reached --sweep-max {limit}"
    tried: set[int] = set()
    while value <= limit:
        tried.add(value)
        consoles = value if over == "consoles" else args.consoles
        subs = args.subscriptions if over == "consoles" else value
        r = run_once(
            args,
            consoles=consoles,
            subscriptions=subs,
            idle_alerts=False,
            alert_rate=0.0,
            duration=args.sweep_duration,
            warmup=args.warmup,
            label=f" sweep {over}={value}",
        )
        ok, why = step_ok(r)
        r["sweep_ok"], r["sweep_reason"] = ok, why
        steps.append(r)
        print_run(r, index=f"{len(steps)}")
        print(f"  -> {'sustained' if ok else 'NOT sustained: ' + why}")
        if not args.no_save:
            save(report)
        if not ok:
            stop_reason = why
            break
        best = r
        value = max(value + 1, math.ceil(value * args.sweep_factor))
    # one bisection step between the last good and the first bad point
    if best is not None and steps and not steps[-1]["sweep_ok"] and args.sweep_refine:
        good = best["params"]["consoles" if over == "consoles" else "subscriptions"]
        bad = steps[-1]["params"]["consoles" if over == "consoles" else "subscriptions"]
        for _ in range(args.sweep_refine):
            mid = (good + bad) // 2
            if mid in (good, bad) or mid in tried:
                break
            tried.add(mid)
            consoles = mid if over == "consoles" else args.consoles
            subs = args.subscriptions if over == "consoles" else mid
            r = run_once(
                args,
                consoles=consoles,
                subscriptions=subs,
                idle_alerts=False,
                alert_rate=0.0,
                duration=args.sweep_duration,
                warmup=args.warmup,
                label=f" sweep-refine {over}={mid}",
            )
            ok, why = step_ok(r)
            r["sweep_ok"], r["sweep_reason"] = ok, why
            steps.append(r)
            print_run(r, index=f"{len(steps)}")
            print(f"  -> {'sustained' if ok else 'NOT sustained: ' + why}")
            if not args.no_save:
                save(report)
            if ok:
                good, best = mid, r
            else:
                bad = mid
    if best is None:
        print(f"\nsweep: not even the first step was sustained ({stop_reason})")
        report["sweep"]["result"] = {"stop_reason": stop_reason}
        return
    max_gbps = best["delivered_gbps"]
    best_subs = best["params"]["total_subscriptions"]
    print(
        f"\n== sweep: max sustainable {max_gbps:.3f} Gbit/s delivered at {over}="
        f"{best['params'][over]} ({best_subs} subscriptions), relay CPU {pct(best['relay']['cpu_fraction'])}, "
        f"{best['gbps_per_core']:.3f} Gbit/s per relay core; stopped because: {stop_reason}"
    )
    # 80 % of the maximum: the same per-subscription rate, 80 % of the subscriptions
    probe_subs = args.probe_subscriptions if args.probe else 0
    target_subs = 0.8 * best_subs - probe_subs
    if over == "consoles":
        consoles80, subs80 = (
            max(1, round(target_subs / best["params"]["subscriptions"])),
            best["params"]["subscriptions"],
        )
    else:
        consoles80, subs80 = args.consoles, max(1, round(target_subs / args.consoles))
    r80 = run_once(
        args,
        consoles=consoles80,
        subscriptions=subs80,
        idle_alerts=True,
        alert_rate=args.alert_rate,
        duration=args.duration,
        warmup=args.warmup,
        label=" at 80 % of max, with alerts",
    )
    print_run(r80, index="80%")
    verdict = targets(r80, best)
    report["sweep"]["result"] = {
        "stop_reason": stop_reason,
        "max_sustainable_gbps": max_gbps,
        "at": {over: best["params"][over], "total_subscriptions": best_subs},
        "gbps_per_core_at_max": best["gbps_per_core"],
        "run_at_80pct": r80,
        "targets": verdict,
    }
    print_targets(verdict)


def targets(r80: dict[str, Any], best: dict[str, Any] | None) -> dict[str, Any]:
    loaded = r80["phases"]["loaded"]
    idle = r80["phases"].get("idle", {})
    out: dict[str, Any] = {}
    for which, key in (("probe", "alert_latency_probe_ms"), ("consoles", "alert_latency_ms")):
        lp = (loaded.get(key) or {}).get("p99")
        ip = (idle.get(key) or {}).get("p99")
        out[f"alert_p99_ms_{which}"] = lp
        out[f"idle_alert_p99_ms_{which}"] = ip
        out[f"alert_ratio_{which}"] = lp / ip if lp and ip else None
        out[f"alert_ok_{which}"] = bool(
            lp and ip and lp <= TARGET_ALERT_RATIO * ip and lp <= TARGET_ALERT_P99_MS
        )
    for which, key in (("probe", "media_latency_probe_ms"), ("consoles", "media_latency_ms")):
        mp = (r80.get(key) or {}).get("p99")
        out[f"media_p99_ms_{which}"] = mp
        out[f"media_ok_{which}"] = bool(mp is not None and mp <= TARGET_MEDIA_P99_MS)
    per_core = best["gbps_per_core"] if best else r80["gbps_per_core"]
    out["gbps_per_core"] = per_core
    out["gbps_per_core_ok"] = bool(per_core and per_core >= TARGET_GBPS_PER_CORE)
    out["kept_up_at_80pct"] = r80["all_kept_up"] and not r80["drops_seq_gaps"]
    return out


def print_targets(v: dict[str, Any]) -> None:
    def mark(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def num(x: Any, unit: str = "") -> str:
        return "n/a" if x is None else f"{x:.3f}{unit}"

    print("\n== issue 3 targets (at 80 % of the max sustainable load)")
    for which in ("probe", "consoles"):
        print(
            f"  alert p99 ({which}): {num(v[f'alert_p99_ms_{which}'], ' ms')} vs idle {num(v[f'idle_alert_p99_ms_{which}'], ' ms')}"
            f" = {num(v[f'alert_ratio_{which}'], 'x')}  (<= {TARGET_ALERT_RATIO}x and <= {TARGET_ALERT_P99_MS} ms): "
            f"{mark(v[f'alert_ok_{which}'])}"
        )
    for which in ("probe", "consoles"):
        print(
            f"  media p99 ({which}): {num(v[f'media_p99_ms_{which}'], ' ms')}  (<= {TARGET_MEDIA_P99_MS} ms): {mark(v[f'media_ok_{which}'])}"
        )
    print(
        f"  delivered per relay core: {num(v['gbps_per_core'], ' Gbit/s')}  (>= {TARGET_GBPS_PER_CORE}): {mark(v['gbps_per_core_ok'])}"
    )
    print(f"  every console kept up at 80 %, no drops: {mark(v['kept_up_at_80pct'])}")


# -- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/load.py",
        description=__doc__.split("\n\n", 1)[0]
        + "\n\n"
        + __doc__.split("\n\n", 1)[1].split("\nExample::")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="With no arguments: the quick run (about 30 s): 20 buttons at 1 Mbit/s, 20 consoles x 4 streams, "
        "20 alerts/s, 20 s measured after 3 s of warm-up.",
    )
    g = parser.add_argument_group("load")
    g.add_argument("--buttons", "-B", type=int, default=20, help="streaming buttons (default 20)")
    g.add_argument(
        "--extra-buttons",
        type=int,
        default=10,
        help="registered buttons that never connect (default 10)",
    )
    g.add_argument("--consoles", "-C", type=int, default=20, help="consoles (default 20)")
    g.add_argument(
        "--subscriptions",
        "-S",
        type=int,
        default=4,
        help="streams each console watches, round-robin over the buttons (default 4)",
    )
    g.add_argument(
        "--video",
        type=parse_video,
        default=(640, 360, 30.0),
        metavar="WxH@FPS",
        help="clip size and rate (default 640x360@30)",
    )
    g.add_argument(
        "--bitrate",
        type=parse_bitrate,
        default=1_000_000,
        metavar="BPS",
        help="video bit rate, e.g. 1000000 or 1M (default 1M)",
    )
    g.add_argument(
        "--no-pad",
        dest="pad",
        action="store_false",
        help="do not pad video packets (H.264 filler NAL units) up to --bitrate; x264 undershoots on the test pattern",
    )
    g.add_argument(
        "--clip-seconds",
        type=float,
        default=4.0,
        help="length of the looped clip (default 4 s; GOP is 1 s)",
    )
    g.add_argument(
        "--stagger",
        type=float,
        default=1.0,
        help="spread button starts over this many seconds (default 1)",
    )
    g.add_argument(
        "--alert-rate",
        type=float,
        default=20.0,
        help="alert presses per second in total, 0 for none (default 20)",
    )
    g.add_argument(
        "--alert-buttons",
        type=int,
        default=5,
        help="buttons that press the alerts, round-robin (default 5)",
    )
    g.add_argument(
        "--no-probe", dest="probe", action="store_false", help="no separate probe console process"
    )
    g.add_argument(
        "--probe-subscriptions",
        type=int,
        default=1,
        help="streams the probe console watches (default 1)",
    )
    t = parser.add_argument_group("timing")
    t.add_argument(
        "--duration",
        type=float,
        default=20.0,
        help="measured seconds of the loaded phase (default 20)",
    )
    t.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of load before measuring (default 3)"
    )
    t.add_argument(
        "--tail",
        type=float,
        default=1.5,
        help="seconds clients keep reading after the end (default 1.5)",
    )
    t.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs (fresh relay each); medians are printed (default 1)",
    )
    t.add_argument(
        "--idle-alerts",
        action="store_true",
        help="first an alerts-only phase (no media), then the loaded phase",
    )
    t.add_argument(
        "--idle-duration",
        type=float,
        default=0.0,
        help="seconds of the idle phase (default min(duration, 10))",
    )
    s = parser.add_argument_group("sweep")
    s.add_argument(
        "--sweep",
        action="store_true",
        help="find the max sustainable delivered Gbit/s, then check issue 3's targets at 80 %%",
    )
    s.add_argument("--sweep-over", choices=("consoles", "subscriptions"), default="consoles")
    s.add_argument(
        "--sweep-start",
        type=int,
        default=0,
        help="first value (default --consoles or --subscriptions)",
    )
    s.add_argument("--sweep-factor", type=float, default=1.5, help="growth per step (default 1.5)")
    s.add_argument(
        "--sweep-max",
        type=int,
        default=0,
        help="largest value tried (default 5000 consoles / B subscriptions)",
    )
    s.add_argument(
        "--sweep-duration",
        type=float,
        default=8.0,
        help="measured seconds per sweep step (default 8)",
    )
    s.add_argument(
        "--sweep-refine",
        type=int,
        default=2,
        help="bisection steps after the first failure (default 2)",
    )
    o = parser.add_argument_group("environment and output")
    o.add_argument(
        "--pin",
        action="store_true",
        help="taskset: relay on core 0, load processes on core 1 (needs 2+ cores)",
    )
    o.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the relay over the (first) loaded window; summary printed, raw stacks saved",
    )
    o.add_argument(
        "--profile-native", action="store_true", help="py-spy --native (C/Cython frames too)"
    )
    o.add_argument(
        "--profile-rate", type=int, default=250, help="py-spy samples per second (default 250)"
    )
    o.add_argument(
        "--tmp-base",
        metavar="DIR",
        default=None,
        help="create the run's temp dir (the relay's data dir, so its SQLite journal) here, "
        "e.g. /dev/shm to take the disk's fsync out of the alert path (default: the system temp dir)",
    )
    o.add_argument(
        "--relay-option",
        metavar="KEY=TOML",
        action="append",
        default=[],
        help="extra line for the relay's [relay] config table, e.g. --relay-option 'merge_window = 0'",
    )
    o.add_argument(
        "--rt",
        type=int,
        default=0,
        metavar="PRIO",
        help="run the relay and the load processes SCHED_FIFO at this priority (chrt -f; root). On a "
        "shared machine this keeps other jobs' CPU use out of the latencies; the kernel's RT "
        "throttling still leaves 5%% of each core to others (default 0: normal scheduling)",
    )
    o.add_argument(
        "--relay-switch-interval",
        type=float,
        default=0.0,
        metavar="MS",
        help="experiment: start the relay with sys.setswitchinterval(MS/1000) (CPython default 5 ms): "
        "how long the journal's SQLite thread can wait for the GIL while the trio thread is busy",
    )
    o.add_argument(
        "--web",
        action="store_true",
        help="also run the relay's web control room (on a free port); by default serve gets --no-web",
    )
    o.add_argument(
        "--relay-log-level", choices=("debug", "info", "warning", "error"), default="info"
    )
    o.add_argument(
        "--keep-tmp", action="store_true", help="keep the temp dir (relay log, generator stderr)"
    )
    o.add_argument(
        "--no-save", action="store_true", help="do not write benchmarks/results/load-*.json"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.buttons < 1 or args.consoles < 1 or args.subscriptions < 0:
        print("need at least one button and one console", file=sys.stderr)
        return 2
    args.pin_cores = bool(args.pin and (os.cpu_count() or 1) >= 2)
    RT_PRIORITY[0] = max(0, min(99, args.rt))
    if args.pin and not args.pin_cores:
        print("--pin ignored: fewer than 2 cores", file=sys.stderr)

    def on_signal(signum: int, frame: Any) -> None:
        kill_children()
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [sys.executable, *sys.argv],
        "machine": machine(),
        "runs": [],
    }
    try:
        if args.sweep:
            sweep(args, report)
        else:
            for i in range(args.repeat):
                r = run_once(
                    args,
                    consoles=args.consoles,
                    subscriptions=args.subscriptions,
                    idle_alerts=args.idle_alerts,
                    alert_rate=args.alert_rate,
                    duration=args.duration,
                    warmup=args.warmup,
                    profile=args.profile and i == 0,
                )
                report["runs"].append(r)
                print_run(r, index=f"{i + 1}/{args.repeat}")
                if not args.no_save:
                    save(report)
            if args.repeat > 1:
                report["medians"] = medians(report["runs"])
                print_medians(report["medians"], args.repeat)
        if not args.no_save:
            path = save(report)
            print(f"\nsaved {path.relative_to(HERE.parent)}")
    except KeyboardInterrupt:
        print("\ninterrupted; children stopped", file=sys.stderr)
        return 130
    finally:
        kill_children()
    return 0


if __name__ == "__main__":
    sys.exit(main())

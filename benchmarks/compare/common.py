"""Shared helpers of ``make bench-compare``: processes, /proc sampling, pacing, the clip.

Every load process here is a child of ``bench_compare.py`` and talks to it
over stdin/stdout, one JSON object per line:

1. the child reads nothing first: its settings are a JSON file named on the
   command line;
2. it connects everything, then prints ``{"ready": ...}``;
3. it reads schedule messages (JSON lines, merged into one dict): absolute
   wall-clock times in µs since the epoch, e.g. ``window`` ``[t0, t1]`` and
   ``stop``;
4. at ``stop`` it prints one result line and exits.

A child exits by itself when stdin closes (the orchestrator went away) and
dies with it (``PR_SET_PDEATHSIG``), so nothing outlives a run.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- time, output ----------------------------------------------------------------------


def wall_us() -> int:
    return time.time_ns() // 1000


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def percentiles(values: list[float]) -> dict[str, Any]:
    """Nearest-rank p50/p90/p99/p99.9 and max."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(fraction: float) -> Any:
        index = max(1, math.ceil(fraction * n - 1e-9))
        return ordered[min(index, n) - 1]

    return {
        "n": n,
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": ordered[-1],
    }


def cdf_points(values: list[float], points: int = 400) -> list[float]:
    """``points`` evenly spaced quantiles (0 .. 1) of ``values``: enough to draw a CDF."""
    if not values:
        return []
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, round(i * (n - 1) / (points - 1)))] for i in range(points)]


# -- the child side of the stdin/stdout protocol ---------------------------------------


class Control:
    """Schedule messages from stdin, read without blocking inside a poll loop."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.schedule: dict[str, Any] = {}

    def read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if not data:
            sys.stderr.write(f"{Path(sys.argv[0]).name}: stdin closed, exiting\n")
            os._exit(3)
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.schedule.update(json.loads(line))

    def wait_for(self, key: str, timeout: float, service: Callable[[float], None] | None = None) -> Any:
        """Read schedule lines until ``key`` is there; ``service(timeout)`` runs meanwhile."""
        deadline = time.monotonic() + timeout
        while key not in self.schedule:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {key!r} from the orchestrator within {timeout:.0f} s")
            if service is None:
                select.select([self.fd], [], [], 0.2)
            else:
                service(0.02)
            self.read()
        return self.schedule[key]


def load_settings() -> dict[str, Any]:
    with open(sys.argv[2]) as handle:
        return json.load(handle)


def raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the clip -----------------------------------------------------------------------------


def read_clip(path: str, pad_factor: float = 1.0, *, annexb: bool = False) -> dict[str, Any]:
    """The FLV clip's packets, demuxed once with PyAV: what both relays carry, byte for byte.

    FLV frames H.264 NAL units with 4-byte lengths (AVCC); pinkrelay's
    protocol carries Annex B (§5.17), checked by the relay. ``annexb`` swaps
    each length for a 4-byte start code, which keeps every message the same
    size, so both relays still carry the same number of bytes.

    ``pad_factor`` > 1 grows each video packet with an H.264 filler-data NAL
    unit (type 12, skipped by decoders) for a heavier bulk load from the same
    clip. Packets: ``(pts_s, is_video, data, keyframe)`` sorted by time.
    """
    import av

    packets = []
    info: dict[str, Any] = {}
    with av.open(path) as container:
        for stream in container.streams:
            ctx = stream.codec_context
            if stream.type == "video":
                info["video"] = {
                    "width": ctx.width,
                    "height": ctx.height,
                    "fps": float(stream.average_rate or 30),
                    "extradata": bytes(ctx.extradata or b""),
                    "bitrate": int(ctx.bit_rate or 0),
                }
            elif stream.type == "audio":
                info["audio"] = {
                    "sample_rate": ctx.sample_rate,
                    "channels": ctx.channels,
                    "extradata": bytes(ctx.extradata or b""),
                    "bitrate": int(ctx.bit_rate or 0),
                    "codec": ctx.name,
                }
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None:
                continue
            data = bytes(packet)
            is_video = packet.stream.type == "video"
            if is_video and annexb:
                data = avcc_to_annexb(data)
            if is_video and pad_factor > 1.0:
                extra = round(len(data) * (pad_factor - 1.0))
                if extra >= 10:
                    # AVCC (4-byte length) framing, as in FLV: one more NAL unit, type 12
                    nal = b"\x0c" + b"\xff" * (extra - 5) + b"\x80"
                    data = data + (b"\x00\x00\x00\x01" if annexb else len(nal).to_bytes(4, "big")) + nal
            packets.append((float(packet.pts * packet.time_base), is_video, data, bool(packet.is_keyframe)))
    packets.sort(key=lambda p: (p[0], not p[1]))
    first = packets[0][0]
    packets = [(pts - first, v, d, k) for pts, v, d, k in packets]
    fps = info["video"]["fps"]
    frames = sum(1 for p in packets if p[1])
    duration = frames / fps
    info["duration_s"] = duration
    info["packets"] = packets
    info["bits_per_s"] = sum(len(p[2]) for p in packets) * 8 / duration
    info["messages_per_s"] = len(packets) / duration
    return info


def avcc_to_annexb(data: bytes) -> bytes:
    """Replace each NAL unit's 4-byte big-endian length with the start code 00 00 00 01."""
    out = bytearray(data)
    at = 0
    while at + 4 <= len(out):
        size = int.from_bytes(out[at:at + 4], "big")
        out[at:at + 4] = b"\x00\x00\x00\x01"
        at += 4 + size
    if at != len(out):
        raise ValueError(f"not AVCC: NAL lengths run to byte {at} of a {len(out)}-byte packet")
    return bytes(out)


class Pacer:
    """Replays the clip for B streams in real time, starts staggered; ``next()`` -> the due one."""

    def __init__(self, clip: dict[str, Any], streams: int, start: float, stagger: float) -> None:
        self.duration = clip["duration_s"]
        events = []
        for b in range(streams):
            offset = stagger * b / max(1, streams)
            for pts, is_video, data, key in clip["packets"]:
                events.append((pts + offset, b, is_video, data, key))
        events.sort(key=lambda e: e[0])
        self.events = events
        self.start = start
        self.index = 0
        self.loop = 0

    def peek_due(self) -> float:
        return self.start + self.loop * self.duration + self.events[self.index][0]

    def pop(self) -> tuple[float, int, bool, bytes, bool]:
        due = self.peek_due()
        _, b, is_video, data, key = self.events[self.index]
        self.index += 1
        if self.index == len(self.events):
            self.index = 0
            self.loop += 1
        return due, b, is_video, data, key


# -- the orchestrator side -------------------------------------------------------------


def proc_cpu(pid: int) -> float | None:
    """utime + stime (s) of a process, all its threads, kernel time included."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_wchar(pid: int) -> int | None:
    """Bytes a process passed to write/send syscalls (its socket output, for a publisher)."""
    try:
        with open(f"/proc/{pid}/io") as handle:
            for line in handle:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                out += [int(x) for x in handle.read().split()]
    except OSError:
        pass
    return out


def core_times() -> dict[int, tuple[float, float]]:
    """Per core: (busy, total) seconds so far, from /proc/stat (steal counted as not ours)."""
    out = {}
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("cpu") and line[3].isdigit():
                name, *rest = line.split()
                f = [int(x) for x in rest]
                idle = f[3] + f[4]
                total = sum(f[:8])
                out[int(name[3:])] = ((total - idle - f[7]) / CLK_TCK, total / CLK_TCK)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, timeout: float, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def sleep_until_us(target_us: int) -> None:
    while True:
        left = target_us / 1e6 - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.2))


_CHILDREN: list[subprocess.Popen] = []


def _preexec() -> None:
    try:  # die with the orchestrator, even if it is SIGKILLed
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass
    os.setpgrp()  # the terminal's ^C goes to the orchestrator only; it stops the children


def spawn(
    command: list[str],
    *,
    cpu: int | None,
    log: Path,
    pipes: bool = False,
    rt: int = 0,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    if rt and os.geteuid() == 0:
        command = ["chrt", "-f", str(rt), *command]
    if cpu is not None and (os.cpu_count() or 1) > cpu:
        command = ["taskset", "-c", str(cpu), *command]
    with open(log, "ab") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=_preexec,  # noqa: PLW1509
            env=env,
            text=pipes,
            bufsize=1 if pipes else -1,
        )
    _CHILDREN.append(process)
    return process


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
    """Stop one child by its PID: ``sig``, then SIGKILL after ``grace`` seconds."""
    if process.poll() is None:
        try:
            os.kill(process.pid, sig)
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:
            pass
    if process in _CHILDREN:
        _CHILDREN.remove(process)


def stop_all() -> None:
    for process in list(_CHILDREN):
        try:
            stop(process, signal.SIGTERM, grace=2.0)
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


class Child:
    """A load process: settings file in, JSON lines out (see the module doc)."""

    def __init__(self, name: str, script: Path, role: str, settings: dict[str, Any], tmp: Path,
                 cpu: int | None, rt: int = 0) -> None:
        import queue
        import threading

        self.name = name
        self.log = tmp / f"{name}.log"
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(settings))
        self.process = spawn([sys.executable, str(script), role, str(path)], cpu=cpu, log=self.log,
                             pipes=True, rt=rt)
        self.lines: "queue.Queue[str | None]" = queue.Queue()

        def reader() -> None:
            for line in self.process.stdout:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=reader, daemon=True).start()

    def send(self, obj: Any) -> None:
        self.process.stdin.write(json.dumps(obj) + "\n")
        self.process.stdin.flush()

    def expect(self, timeout: float) -> dict[str, Any]:
        import queue

        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.name}: no answer within {timeout:.0f} s{self.tail()}") from None
            if line is None:
                self.process.wait(5)
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}) before answering{self.tail()}")
            if line.strip():
                return json.loads(line)

    def tail(self) -> str:
        try:
            text = self.log.read_text(errors="replace").strip()
        except OSError:
            return ""
        return f"\n--- {self.name} log ---\n{text[-2500:]}" if text else ""

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        stop(self.process, grace=3.0)

"""Idle buttons: the relay's memory and CPU while N buttons are signed in and only send heartbeats.

    .venv/bin/python benchmarks/idle_buttons.py                  # 5,000, 10,000 and 20,000 buttons
    .venv/bin/python benchmarks/idle_buttons.py --counts 5000,10000 --measure 20
    .venv/bin/python benchmarks/idle_buttons.py --counts 5000,10000,19800   # in a container with ulimit -Hn 20000

A real ``pinkrelay serve`` process (default settings, except the
per-address admission limits: every button here comes from a few loopback
addresses) holds a registry of the largest count. Load generators are other
processes (this script with ``--generate``), 2,500 buttons each, each bound
to its own source address 127.0.0.N so no address runs out of ports; every
button does the real handshake and then sends a heartbeat every
``heartbeat_interval`` (10 s), as a device does, and reads what the relay
sends. The counts are reached one after another (5,000, then 5,000 more, …);
at each, after the relay has settled, the script samples the relay's RSS
(/proc/PID/status VmRSS) and its CPU (utime+stime from /proc/PID/stat) over
``--measure`` seconds, at least two heartbeat intervals, and prints them.

Targets (issue 17): 10,000 buttons at most 150 MB RSS; 20,000 at most 250 MB
RSS and 10 % of a core. The buttons say protocol 2 in their hello, so past
8,191 of them (16-bit track ids at ``max_tracks`` 8) they get wider ids
(docs/protocol.md §2.5). The relay needs one open file per button: where
the hard limit cannot be raised (a container), the largest count must stay
below it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PER_GENERATOR = 2500
CONNECT_CONCURRENCY = 64
#: Seconds a button's connect and handshake may take before it counts as failed.
HANDSHAKE_TIMEOUT = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS_MB = {10_000: 150, 20_000: 250}
TARGET_CPU = {20_000: 10.0}


def secret_for(button_id: str) -> str:
    return f"idle-bench-secret-{button_id}-0123456789"


def button_id(index: int) -> str:
    return f"idle-{index:05d}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (the hard limit too, when allowed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in ((wanted, max(hard, wanted)), (min(wanted, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return limit[0]
        except (ValueError, OSError):
            continue
    return soft


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def write_registry(path: Path, count: int) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "secret", "site_name", "site_kind", "district", "latitude", "longitude"])
        for index in range(count):
            writer.writerow([button_id(index), secret_for(button_id(index)), f"Campus {index // 20}", "campus",
                             f"District {index // 2000}", "34.0", "71.5"])


# -- the load generator (a separate process) -------------------------------------------


def generate(settings: dict[str, Any]) -> None:
    """Sign ``settings['ids']`` in from ``settings['source']`` and keep them alive until stdin closes."""
    import trio

    from pinkrelay.protocol import ButtonConnection, Challenge, Heartbeat, Welcome

    raise_nofile(len(settings["ids"]) + 256)
    host, port = settings["relay"]
    heartbeat_interval = settings["heartbeat_interval"]
    failures: list[str] = []

    async def button(index: str, limiter: trio.CapacityLimiter, ready: list[int]) -> None:
        conn = ButtonConnection(index, secret_for(index).encode(), protocol=2)  # v2: track ids beyond 16 bits
        sock = trio.socket.socket()
        async with limiter:
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    await sock.bind((settings["source"], 0))
                    await sock.connect((host, port))
                    stream = trio.SocketStream(sock)
                    await stream.send_all(conn.hello(trio.current_time()))
                    welcomed = False
                    while not welcomed:
                        data = await stream.receive_some(65536)
                        if not data:
                            raise RuntimeError("closed during the handshake")
                        conn.receive_data(data, trio.current_time())
                        for event in conn.events():
                            if isinstance(event, Challenge):
                                await stream.send_all(conn.authenticate(trio.current_time()))
                            elif isinstance(event, Welcome):
                                welcomed = True
            except (OSError, RuntimeError, trio.BrokenResourceError, trio.TooSlowError) as error:
                failures.append(f"{index}: {error}")
                sock.close()
                return
        ready[0] += 1

        async def beat() -> None:
            while True:
                await trio.sleep(heartbeat_interval)
                await stream.send_all(conn.send(Heartbeat(sent_at=time.time_ns() // 1000), trio.current_time()))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(beat)
                while await stream.receive_some(4096):
                    pass  # the relay's heartbeats; nothing to do with them
                nursery.cancel_scope.cancel()
        except (OSError, trio.BrokenResourceError):
            pass

    async def run() -> None:
        limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)
        ready = [0]
        async with trio.open_nursery() as nursery:
            for index in settings["ids"]:
                nursery.start_soon(button, index, limiter, ready)
            while ready[0] + len(failures) < len(settings["ids"]):
                await trio.sleep(0.1)
            print(json.dumps({"ready": ready[0], "failed": failures[:5], "failures": len(failures)}), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

    trio.run(run)


# -- the driver ------------------------------------------------------------------------


def start_relay(data_dir: Path, registry: Path, buttons_port: int, consoles_port: int, most: int,
                max_tracks: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PINKRELAY_MAX_TRACKS": str(max_tracks),
        # Every button of this benchmark comes from one of a few loopback addresses.
        "PINKRELAY_HANDSHAKE_RATE_PER_ADDRESS": "0",
        "PINKRELAY_MAX_UNAUTHENTICATED_PER_ADDRESS": str(most),
        "PINKRELAY_MAX_UNAUTHENTICATED": str(most),
    }
    command = [sys.executable, "-m", "pinkrelay", "serve", "--no-web", "--no-metrics", "--log-level", "warning",
               "--registry", str(registry), "--data-dir", str(data_dir),
               "--buttons-listen", f"127.0.0.1:{buttons_port}", "--consoles-listen", f"127.0.0.1:{consoles_port}"]
    # Its log goes to a file: a pipe nobody reads would stop the relay once 64 KB of warnings filled it.
    log = open(data_dir.parent / "relay.log", "w")
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
                            preexec_fn=lambda: raise_nofile(most + 1024))


def wait_listening(port: int, relay: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.poll() is not None:
            raise SystemExit(f"the relay exited ({relay.returncode}); see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the relay did not listen on port {port} within {timeout:g} s")


def start_generator(ids: list[str], source: str, port: int, heartbeat_interval: float) -> subprocess.Popen:
    generator = subprocess.Popen([sys.executable, __file__, "--generate"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    assert generator.stdin is not None
    generator.stdin.write(json.dumps({"ids": ids, "source": source, "relay": ["127.0.0.1", port],
                                      "heartbeat_interval": heartbeat_interval}) + "\n")
    generator.stdin.flush()
    return generator


def measure(pid: int, seconds: float) -> tuple[float, float]:
    """(RSS MB at the end, CPU % of one core over ``seconds``)."""
    cpu, wall = proc_cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return proc_rss_mb(pid), 100 * (proc_cpu_seconds(pid) - cpu) / (time.monotonic() - wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="5000,10000,20000", help="button counts, increasing (default %(default)s)")
    parser.add_argument("--measure", type=float, default=20.0, help="seconds of CPU sampling per count")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the last sign-in before sampling")
    parser.add_argument("--heartbeat-interval", type=float, default=10.0, help="the relay's default")
    parser.add_argument("--max-tracks", type=int, default=8, help="the relay's max_tracks (default %(default)s)")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        generate(json.loads(sys.stdin.readline()))
        return 0
    counts = [int(value) for value in args.counts.split(",")]
    if counts != sorted(counts) or counts[0] < 1:
        parser.error(f"--counts must be increasing positive numbers, not {args.counts}")
    most = counts[-1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if most + 64 > max(hard, raise_nofile(most + 1024)):
        parser.error(f"the relay needs {most + 64} open files for {most} buttons, but this machine's hard limit "
                     f"is {hard} and cannot be raised here (ulimit -Hn)")
    work = Path(tempfile.mkdtemp(prefix="pinkrelay-idle-"))
    registry = work / "buttons.csv"
    write_registry(registry, most)
    buttons_port, consoles_port = free_port(), free_port()
    started = time.monotonic()
    relay = start_relay(work / "data", registry, buttons_port, consoles_port, most, args.max_tracks)
    generators: list[subprocess.Popen] = []
    results = []
    try:
        wait_listening(buttons_port, relay)
        base_rss = proc_rss_mb(relay.pid)
        print(f"relay pid {relay.pid}, {most} buttons registered, {base_rss:.1f} MB RSS with none signed in",
              flush=True)
        print(f"{'buttons':>8} {'RSS MB':>8} {'KB/button':>10} {'CPU % core':>11} {'sign-in s':>10}", flush=True)
        signed_in = 0
        for count in counts:
            began = time.monotonic()
            new = []
            for first in range(signed_in, count, PER_GENERATOR):
                ids = [button_id(index) for index in range(first, min(first + PER_GENERATOR, count))]
                source = f"127.0.0.{2 + len(generators)}"
                generator = start_generator(ids, source, buttons_port, args.heartbeat_interval)
                generators.append(generator)
                new.append(generator)
            for generator in new:
                assert generator.stdout is not None
                line = generator.stdout.readline()
                report = json.loads(line) if line else {"ready": 0, "failures": -1, "failed": ["exited"]}
                if report["failures"]:
                    raise SystemExit(f"{report['failures']} buttons could not sign in: {report['failed']}")
            sign_in = time.monotonic() - began
            signed_in = count
            time.sleep(args.settle)
            rss, cpu = measure(relay.pid, args.measure)
            per_button = (rss - base_rss) * 1024 / count
            results.append({"buttons": count, "rss_mb": round(rss, 1), "kb_per_button": round(per_button, 1),
                            "cpu_percent": round(cpu, 1), "sign_in_s": round(sign_in, 1)})
            print(f"{count:>8} {rss:>8.1f} {per_button:>10.1f} {cpu:>11.1f} {sign_in:>10.1f}", flush=True)
    finally:
        for generator in generators:
            if generator.stdin is not None:
                generator.stdin.close()
        for generator in generators:
            try:
                generator.wait(timeout=10)
            except subprocess.TimeoutExpired:
                generator.kill()
        relay.terminate()
        try:
            relay.wait(timeout=20)
        except subprocess.TimeoutExpired:
            relay.kill()
        log_lines = (work / "relay.log").read_text(errors="replace").splitlines()
        if log_lines:
            print(f"relay log: {len(log_lines)} lines, the last ones:", *log_lines[-5:], sep="\n  ", flush=True)
        if os.environ.get("IDLE_KEEP"):
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    verdicts = []
    for result in results:
        target = TARGETS_MB.get(result["buttons"])
        if target is not None:
            verdicts.append(f"{result['buttons']}: RSS {result['rss_mb']} MB (target {target}) "
                            + ("met" if result["rss_mb"] <= target else "MISSED"))
        cpu_target = TARGET_CPU.get(result["buttons"])
        if cpu_target is not None:
            verdicts.append(f"{result['buttons']}: CPU {result['cpu_percent']} % (target {cpu_target:g}) "
                            + ("met" if result["cpu_percent"] <= cpu_target else "MISSED"))
    print(json.dumps({"results": results, "targets": verdicts, "seconds": round(time.monotonic() - started)}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

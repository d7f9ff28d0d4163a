"""Throughput of pinkrelay's core, compiled against reference.

Run it on its own for a table of medians over repeated runs::

    .venv/bin/python benchmarks/core_throughput.py            # 7 repeats
    .venv/bin/python benchmarks/core_throughput.py --repeat 15

``test_bench_core.py`` (``make bench``) uses the same workloads through
pytest-benchmark. Every workload is built once, outside the timing, from a
fixed seed, so the two cores get exactly the same bytes.

Workloads:

* ``decode mix``: 10 s of one camera and one microphone as a relay receives
  them: 30 fps video frames of 2-60 KB (keyframes 40-60 KB) chunked at
  16 KiB, 50 fps audio frames of 100-300 B, a heartbeat a second and a few
  alerts, fed to ``FrameDecoder.decode`` in 64 KiB reads.
* ``decode small``: 50,000 audio frames with 200-byte payloads, 64 KiB reads.
* ``encode video`` / ``encode audio``: ``encode_media`` of a 60 KB video
  frame (4 chunks) / a 200 B audio frame.
* ``queue cycle``: push one alert, 5 audio frames and one 30 KB video frame
  to a ``SendQueue``, then peek + consume (like a writer taking 64 KiB at a
  time) until it is empty.
* ``deliver xN``: ``deliver()`` of one message to N queues, each writing to a
  socketpair whose reader is drained between rounds (not timed).
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from pinkrelay._core import reference
from pinkrelay._core.wire import Limits

try:
    from pinkrelay._core import _cpinkrelay as compiled
except ImportError:  # not built: only the reference can be measured
    compiled = None

READ_SIZE = 64 * 1024
MODULES = {"reference": reference, "compiled": compiled}


def available_modules() -> list[str]:
    return [name for name, mod in MODULES.items() if mod is not None]


# -- workloads ------------------------------------------------------------------


def realistic_mix(seconds: int = 10, seed: int = 1) -> tuple[list[bytes], int]:
    """Wire frames of a camera + microphone + a few alerts, in send order."""
    rng = random.Random(seed)
    enc = reference
    events: list[tuple[int, int, list[bytes]]] = []  # (timestamp µs, order, frames)
    for i in range(30 * seconds):
        ts = i * 33_333
        keyframe = i % 60 == 0
        size = (
            rng.randint(40_000, 60_000)
            if keyframe
            else min(60_000, max(2_000, int(rng.lognormvariate(9.2, 0.6))))
        )
        payload = rng.randbytes(size)
        events.append((ts, 1, enc.encode_media(1, 3, i, ts, payload, keyframe, Limits.CHUNK_SIZE)))
    for i in range(50 * seconds):
        ts = i * 20_000
        events.append((ts, 2, enc.encode_media(2, 2, i, ts, rng.randbytes(rng.randint(100, 300)))))
    for i in range(seconds):
        body = msgpack.packb({"t": i, "battery": 97, "signal": -61})
        events.append((i * 1_000_000, 3, [enc.encode_frame(0x07, 1, 0, i, i * 1_000_000, body)]))
    for i in range(3):
        ts = (i * seconds * 1_000_000) // 3 + 123
        body = msgpack.packb({"button": f"PSH-{i:04d}", "kind": "panic", "lat": 34.0, "lon": 71.5})
        events.append((ts, 0, [enc.encode_frame(0x10, 0, 0, 1000 + i, ts, body)]))
    events.sort(key=lambda e: (e[0], e[1]))
    frames = [frame for _, _, message in events for frame in message]
    return frames, len(frames)


def small_frames(count: int = 50_000, size: int = 200, seed: int = 2) -> tuple[list[bytes], int]:
    rng = random.Random(seed)
    payload = rng.randbytes(size)
    frames = [
        reference.encode_frame(0x40, 2, 2, i, i * 20_000, payload, 0x02) for i in range(count)
    ]
    return frames, count


def reads_of(frames: list[bytes], read_size: int = READ_SIZE) -> list[bytes]:
    """The stream cut into reads the way a socket hands them over."""
    stream = b"".join(frames)
    return [stream[i : i + read_size] for i in range(0, len(stream), read_size)]


@dataclass
class Case:
    """One workload: ``run(mod)`` does one round; ``frames``/``nbytes`` per round."""

    name: str
    frames: int
    nbytes: int
    make: Callable[[Any], Callable[[], Any]]  # module -> round function
    teardown: Callable[[], None] | None = None


def decode_case(name: str, frames: list[bytes], count: int) -> Case:
    reads = reads_of(frames)
    nbytes = sum(map(len, reads))

    def make(mod):
        decoder_class = mod.FrameDecoder

        def run():
            decoder = decoder_class()
            n = 0
            for data in reads:
                n += len(decoder.decode(data))
            assert n == count
            return n

        return run

    return Case(name, count, nbytes, make)


def encode_case(name: str, size: int, lane: int, chunk: int = Limits.CHUNK_SIZE) -> Case:
    payload = random.Random(3).randbytes(size)
    nchunks = len(reference.encode_media(1, lane, 0, 0, payload, True, chunk))

    def make(mod):
        encode = mod.encode_media

        def run():
            return encode(1, lane, 7, 123456, payload, True, chunk)

        return run

    return Case(name, nchunks, size + 24 * nchunks, make)


def queue_case() -> Case:
    rng = random.Random(4)
    enc = reference
    batch = [
        (0, [enc.encode_frame(0x10, 0, 0, 1, 0, msgpack.packb({"button": "PSH-0001"}))], 0, False)
    ]
    for i in range(5):
        batch.append((2, enc.encode_media(2, 2, i, i, rng.randbytes(200)), 2, False))
    batch.append((3, enc.encode_media(1, 3, 9, 0, rng.randbytes(30_000), True), 1, True))
    frames = sum(len(chunks) for _, chunks, _, _ in batch)
    nbytes = sum(len(c) for _, chunks, _, _ in batch for c in chunks)

    def make(mod):
        queue = mod.SendQueue()

        def run():
            for lane, chunks, track, keyframe in batch:
                queue.push(lane, chunks, track, keyframe, 0.0)
            while not queue.empty:
                taken = 0
                for buffer in queue.peek():
                    taken += len(buffer)
                queue.consume(min(taken, READ_SIZE))

        return run

    return Case("queue cycle", frames, nbytes, make)


class Fanout:
    """N send queues writing to socketpairs; the readers are drained between rounds."""

    def __init__(self, mod, n: int) -> None:
        self.pairs = []
        for _ in range(n):
            writer, reader = socket.socketpair()
            writer.setblocking(False)
            reader.setblocking(False)
            self.pairs.append((writer, reader))
        self.queues = [mod.SendQueue(writer.fileno()) for writer, _ in self.pairs]

    def drain(self) -> None:
        for _, reader in self.pairs:
            while True:
                try:
                    if not reader.recv(1 << 20):
                        break
                except BlockingIOError:
                    break

    def close(self) -> None:
        for writer, reader in self.pairs:
            writer.close()
            reader.close()
        self.pairs = []


def deliver_case(n: int, kind: str) -> Case:
    rng = random.Random(5)
    if kind == "audio":
        lane, track, keyframe = 2, 2, False
        chunks = reference.encode_media(2, 2, 1, 0, rng.randbytes(200))
    else:
        lane, track, keyframe = 3, 1, True
        chunks = reference.encode_media(1, 3, 1, 0, rng.randbytes(30_000), True)
    fanouts: list[Fanout] = []

    def fanout_for(mod) -> Fanout:
        fanout = Fanout(mod, n)
        fanouts.append(fanout)
        return fanout

    def make(mod):
        fanout = fanout_for(mod)
        deliver = mod.deliver
        queues = fanout.queues

        def run():
            attention = deliver(queues, lane, chunks, track, keyframe, 0.0)
            assert not attention, "a reader fell behind: drain between rounds"

        run.fanout = fanout  # type: ignore[attr-defined]
        return run

    def teardown():
        for fanout in fanouts:
            fanout.close()
        fanouts.clear()

    size = sum(map(len, chunks))
    return Case(f"deliver {kind} x{n}", len(chunks) * n, size * n, make, teardown)


def all_cases() -> list[Case]:
    mix, mix_count = realistic_mix()
    small, small_count = small_frames()
    return [
        decode_case("decode mix", mix, mix_count),
        decode_case("decode small", small, small_count),
        encode_case("encode video 60KB", 60_000, 3),
        encode_case("encode audio 200B", 200, 2),
        queue_case(),
        deliver_case(100, "audio"),
        deliver_case(100, "video"),
    ]


# -- reporting --------------------------------------------------------------------


def rates(case: Case, seconds: float) -> tuple[float, float]:
    """(frames per second, GB per second) for one round taking ``seconds``."""
    return case.frames / seconds, case.nbytes / seconds / 1e9


def summary_line(case: Case, module: str, seconds: float) -> str:
    fps, gbps = rates(case, seconds)
    return (
        f"{case.name:<20} {module:<9} median {seconds * 1e6:10.1f} µs/round  "
        f"{fps:14,.0f} frames/s  {gbps:7.3f} GB/s"
    )


def ratio_line(case: Case, medians: dict[str, float]) -> str | None:
    if "compiled" in medians and "reference" in medians:
        return f"{case.name:<20} compiled/reference = {medians['reference'] / medians['compiled']:.1f}x"
    return None


def target_lines(results: dict[str, dict[str, float]], cases: dict[str, Case]) -> list[str]:
    """The issue's targets: small-frame decode >= 1M frames/s and >= 20x the reference."""
    lines = []
    small = results.get("decode small", {})
    if "compiled" in small:
        fps = cases["decode small"].frames / small["compiled"]
        lines.append(
            f"target: compiled small-frame decode >= 1,000,000 frames/s: {fps:,.0f} -> "
            f"{'met' if fps >= 1_000_000 else 'MISSED'}"
        )
        if "reference" in small:
            ratio = small["reference"] / small["compiled"]
            lines.append(
                f"target: compiled >= 20x reference (small frames): {ratio:.1f}x -> "
                f"{'met' if ratio >= 20 else 'MISSED'}"
            )
    mix = results.get("decode mix", {})
    if "compiled" in mix:
        _, gbps = rates(cases["decode mix"], mix["compiled"])
        lines.append(f"video mix decode, compiled: {gbps:.2f} GB/s")
    return lines


def measure(case: Case, mod, repeat: int, min_time: float = 0.05) -> float:
    """Median seconds per round over ``repeat`` runs of enough rounds each."""
    run = case.make(mod)
    fanout = getattr(run, "fanout", None)
    prepare = fanout.drain if fanout is not None else None
    run()  # warm up (and check the workload once)
    if prepare:
        prepare()
    samples = []
    for _ in range(repeat):
        if prepare is None:
            rounds = 1
            while True:
                start = time.perf_counter()
                for _ in range(rounds):
                    run()
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
                rounds *= 2
            samples.append(elapsed / rounds)
        else:
            # Untimed drain between rounds: time each round on its own.
            times = []
            for _ in range(50):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
                prepare()
            samples.append(statistics.median(times))
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per case (median is reported)")
    parser.add_argument("--only", help="run only cases whose name contains this")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if not args.only or args.only in c.name]
    results: dict[str, dict[str, float]] = {}
    print(
        f"python {sys.version.split()[0]}; modules: {', '.join(available_modules())}; "
        f"median of {args.repeat} runs"
    )
    for case in cases:
        medians = {}
        for name in available_modules():
            medians[name] = measure(case, MODULES[name], args.repeat)
            print(summary_line(case, name, medians[name]), flush=True)
        line = ratio_line(case, medians)
        if line:
            print(line)
        if case.teardown:
            case.teardown()
        results[case.name] = medians
    for line in target_lines(results, {c.name: c for c in cases}):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

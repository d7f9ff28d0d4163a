"""Durable alerts per second and record() latency of the SQLite journal (synchronous=FULL).

Run it on its own for a table::

    .venv/bin/python benchmarks/journal_throughput.py                 # writers 1, 10, 100
    .venv/bin/python benchmarks/journal_throughput.py --writers 1 10 100 --alerts 20000 --rate 5000
    .venv/bin/python benchmarks/journal_throughput.py --outbound-sinks 2   # each alert also queued for 2 sinks

``test_bench_journal.py`` (``make bench``) runs the same workloads through
pytest-benchmark.

Workloads, each on a fresh journal file in a temporary directory on the
same filesystem as ``--dir`` (default: the system temp dir):

* closed loop, N writers: N trio tasks each record() one alert after the
  other, as N button sessions pressing flat out would. Throughput is what
  the journal sustains; latency is one record() call, from the trio side,
  including the wait for the group commit's fsync. By Little's law the mean
  latency is N / throughput, so with 100 writers p99 <= 10 ms needs well
  over 10,000 alerts/s.
* open loop, R alerts/s: alerts arrive on a fixed schedule (1 ms ticks)
  from 1,000 buttons whatever the journal does, as a storm of presses
  would; latency is measured from the scheduled arrival, so a stall shows
  up in full (no coordinated omission).

Every alert is a realistic press: a UUIDv7 id, a registry site, and the
relay's merge window (120 s), so the merge query runs for each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from pinkrelay.alerts.journal import SqliteJournal
from pinkrelay.ids import uuid7
from pinkrelay.protocol import Alert, Site

MERGE_WINDOW_US = 120_000_000
BUTTONS = 1000
SITES = [
    Site(
        name=f"Site {n}, Saddar Road",
        kind="market",
        address="Saddar Road",
        district="Cantonment",
        latitude=34.0 + n / 10000,
        longitude=71.5 + n / 10000,
    )
    for n in range(BUTTONS)
]
TARGET_RATE = 5000.0
TARGET_P99_MS = 10.0


@dataclass(frozen=True)
class Result:
    workload: str
    alerts: int
    seconds: float
    latencies: list[float]
    commits: int
    offered: float = 0.0  # open loop: the arrival rate asked for

    @property
    def rate(self) -> float:
        return self.alerts / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile(0.50)

    @property
    def p99_ms(self) -> float:
        return self.percentile(0.99)

    @property
    def max_ms(self) -> float:
        return max(self.latencies) * 1000

    def line(self) -> str:
        return (
            f"{self.workload:<22} {self.rate:>9,.0f} alerts/s   p50 {self.p50_ms:6.2f} ms   "
            f"p99 {self.p99_ms:6.2f} ms   max {self.max_ms:6.2f} ms   "
            f"{self.alerts / max(1, self.commits):6.1f} alerts/commit"
        )


def make_alert(number: int) -> Alert:
    now = time.time_ns() // 1000
    button = number % BUTTONS
    return Alert(
        alert_id=uuid7(),
        pressed_at=now - 30_000,
        button=f"kp-bench-{button:04d}",
        site=SITES[button],
        received_at=now,
    )


async def closed_loop(path: Path, writers: int, alerts: int, synchronous: str = "FULL") -> Result:
    journal = SqliteJournal(path, synchronous=synchronous)
    journal.outbound_sinks = OUTBOUND_SINKS
    await journal.open()
    latencies: list[float] = []
    per_writer = alerts // writers
    try:
        commits = journal.commits

        async def writer(first: int) -> None:
            for number in range(first, first + per_writer):
                alert = make_alert(number)
                start = time.perf_counter()
                await journal.record(alert, merge_window_us=MERGE_WINDOW_US)
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(writers):
                nursery.start_soon(writer, index * per_writer)
        seconds = time.perf_counter() - started
        commits = journal.commits - commits
    finally:
        await journal.close()
    return Result(
        f"closed, {writers} writer{'s' if writers > 1 else ''}",
        len(latencies),
        seconds,
        latencies,
        commits,
    )


async def open_loop(path: Path, rate: float, seconds: float, synchronous: str = "FULL") -> Result:
    journal = SqliteJournal(path, synchronous=synchronous)
    journal.outbound_sinks = OUTBOUND_SINKS
    await journal.open()
    latencies: list[float] = []
    try:
        commits = journal.commits

        async def one(number: int, due: float) -> None:
            alert = make_alert(number)
            await journal.record(alert, merge_window_us=MERGE_WINDOW_US)
            latencies.append(time.perf_counter() - due)

        tick = 0.001
        total = int(rate * seconds)
        started = time.perf_counter()
        sent = 0
        async with trio.open_nursery() as nursery:
            while sent < total:
                now = time.perf_counter()
                due_count = min(total, int((now - started) * rate) + 1)
                while sent < due_count:
                    nursery.start_soon(one, sent, started + sent / rate)
                    sent += 1
                await trio.sleep(tick)
        elapsed = time.perf_counter() - started
        commits = journal.commits - commits
    finally:
        await journal.close()
    return Result(f"open, {rate:,.0f}/s offered", len(latencies), elapsed, latencies, commits, offered=rate)


def fresh_path(base: Path, name: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="pinkrelay-bench-", dir=base))
    return directory / f"{name}.sqlite3"


def run_closed(base: Path, writers: int, alerts: int, synchronous: str = "FULL") -> Result:
    path = fresh_path(base, f"closed-{writers}")
    try:
        return trio.run(closed_loop, path, writers, alerts, synchronous)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def run_open(base: Path, rate: float, seconds: float, synchronous: str = "FULL") -> Result:
    path = fresh_path(base, "open")
    try:
        return trio.run(open_loop, path, rate, seconds, synchronous)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def target_line(result: Result) -> str:
    # Open loop: the journal kept up if the arrivals were served within 2 % of the schedule
    # (the run's clock also counts the last alert's latency, so rate < offered by a hair).
    kept_up = result.offered if result.offered and result.rate >= 0.98 * result.offered else result.rate
    met = kept_up >= TARGET_RATE and result.p99_ms <= TARGET_P99_MS
    return (
        f"target >= {TARGET_RATE:,.0f} alerts/s with p99 <= {TARGET_P99_MS:g} ms, {result.workload}: "
        + ("met" if met else "NOT met")
    )


#: Sinks every alert is queued for in the outbox (``--outbound-sinks``), as with ``[[sinks]]`` configured.
OUTBOUND_SINKS: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> int:
    global OUTBOUND_SINKS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument(
        "--alerts", type=int, default=20_000, help="alerts per closed-loop run (default 20000)"
    )
    parser.add_argument(
        "--rate", type=float, default=TARGET_RATE, help="open-loop offered rate (0: skip)"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="open-loop duration")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per workload; the median run is shown"
    )
    parser.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL", "OFF"))
    parser.add_argument("--outbound-sinks", type=int, default=0, metavar="N",
                        help="queue every alert for N sinks in the outbox, in the same transaction")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the journal files go (its filesystem is what is measured)",
    )
    args = parser.parse_args(argv)
    OUTBOUND_SINKS = tuple(f"sink-{n}" for n in range(args.outbound_sinks))

    print(
        f"SQLite journal, synchronous={args.synchronous}, outbound sinks {args.outbound_sinks}, "
        f"files under {args.dir}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; median of {args.repeat} runs"
    )
    results = []
    for writers in args.writers:
        alerts = min(args.alerts, 2_000) if writers == 1 else args.alerts
        runs = [run_closed(args.dir, writers, alerts, args.synchronous) for _ in range(args.repeat)]
        results.append(sorted(runs, key=lambda r: r.rate)[len(runs) // 2])
        print(results[-1].line(), flush=True)
    if args.rate:
        runs = [
            run_open(args.dir, args.rate, args.seconds, args.synchronous)
            for _ in range(args.repeat)
        ]
        results.append(sorted(runs, key=lambda r: r.p99_ms)[len(runs) // 2])
        print(results[-1].line(), flush=True)
    for result in results:
        if not result.workload.startswith("closed, 1 "):
            print(target_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

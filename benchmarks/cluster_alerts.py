"""Alert latency, press to console: one relay on SQLite, three relays on a 3-node JetStream cluster, raw JetStream.

    .venv/bin/python benchmarks/cluster_alerts.py [--alerts 300] [--rate 20] [--media-seconds 6]

Everything on this machine's loopback, in one process (the relays, their
clients and their NATS threads share it; the three nats-server nodes are
processes of their own, tests/nats_helpers.py):

* ``single``: one relay, its SQLite journal on disk (synchronous=FULL), a
  button and a console on it;
* ``cluster``: three relays on the cluster (R=3, sync_interval: always), the
  button on relay 1, the console on relay 3: a press is stored on the
  stream, read back by relay 3 and sent to its console;
* ``jetstream``: the same publishes through nats-py alone, a publisher that
  waits for each PubAck and an ordered consumer on another connection: the
  anchor, what the stream itself costs;
* ``media``: one button streaming on relay 1, a console on relay 1 and one
  on relay 2 that gets it through relay 2's pull: capture stamp to arrival.

Latency = arrival wall clock - the press's ``pressed_at`` (or the media's
capture stamp): one clock. Writes benchmarks/results/cluster-alerts-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from nats_helpers import NatsCluster  # noqa: E402
from relay_helpers import (  # noqa: E402
    OPERATOR,
    TOKEN,
    button_client,
    make_registry,
    relay_config,
    stream_clip,
)

import pinkrelay  # noqa: E402
from pinkrelay.media import encode_clip  # noqa: E402
from pinkrelay.protocol import Alert, Media  # noqa: E402

QUIET = {"merge_window": 0.0, "escalation_levels": (86400.0,), "press_rate_per_button": 0.0}


def wall_us() -> int:
    return time.time_ns() // 1000


def summary(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(len(ordered) * q))]  # noqa: E731
    return {"count": len(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


async def presses_to_console(button, console, alerts: int, rate: float) -> list[float]:
    latencies: list[float] = []
    done = trio.Event()

    async def watch() -> None:
        async for event in console.events():
            if isinstance(event, Alert) and event.kind == "panic":
                latencies.append((wall_us() - event.pressed_at) / 1000)
                if len(latencies) >= alerts:
                    done.set()
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(0.5)
        start = trio.current_time()
        for index in range(alerts):
            await trio.sleep_until(start + index / rate)
            button.start_press()
        with trio.move_on_after(30):
            await done.wait()
        nursery.cancel_scope.cancel()
    return latencies


async def start_relays(stack, directory: Path, urls: list[str] | None, count: int, namespace: str, **changes):
    registry = make_registry(4)
    relays = []
    for index in range(1, count + 1):
        cluster = {"cluster_nats_urls": tuple(urls), "cluster_namespace": namespace} if urls else {}
        config = relay_config(directory / f"relay-{index}", relay_name=f"relay-{index}", **QUIET, **cluster,
                              **changes)
        relays.append(await stack.enter_async_context(pinkrelay.open_relay(config, registry=registry)))
    return relays


async def alerts_through_relays(directory: Path, urls: list[str] | None, count: int, alerts: int,
                                rate: float) -> list[float]:
    async with AsyncExitStack() as stack:
        relays = await start_relays(stack, directory, urls, count, f"bench{count}")
        nursery = await stack.enter_async_context(trio.open_nursery())
        console = pinkrelay.ConsoleClient(relays[-1].consoles_address, OPERATOR, TOKEN.encode(), buffer=100_000)
        await nursery.start(console.run)
        button = button_client(relays[0], "kp-test-001", retry_interval=1.0)
        await nursery.start(button.run)
        latencies = await presses_to_console(button, console, alerts, rate)
        nursery.cancel_scope.cancel()
    return latencies


async def raw_jetstream(urls: list[str], alerts: int, rate: float) -> list[float]:
    import nats
    from nats.js.api import StreamConfig

    publisher, reader = await nats.connect(servers=urls), await nats.connect(servers=urls)
    js = publisher.jetstream()
    await js.add_stream(StreamConfig(name="RAWBENCH", subjects=["rawbench.>"], num_replicas=3))
    latencies: list[float] = []
    done = asyncio.Event()

    async def arrived(message) -> None:
        latencies.append((wall_us() - int(message.data)) / 1000)
        if len(latencies) >= alerts:
            done.set()

    await reader.jetstream().subscribe("rawbench.>", cb=arrived, ordered_consumer=True)
    start = time.monotonic()
    for index in range(alerts):
        await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
        await js.publish(f"rawbench.alert.{index}", str(wall_us()).encode(),
                         headers={"Nats-Msg-Id": f"raised:{index}"})
    await asyncio.wait_for(done.wait(), 30)
    await publisher.close()
    await reader.close()
    return latencies


async def media_local_and_pulled(directory: Path, urls: list[str], seconds: float) -> tuple[list[float], list[float]]:
    clip = encode_clip(int(seconds) + 1, width=320, height=240, fps=30, bitrate=800_000, label="bench")
    secret = directory / "cluster.secret"
    secret.write_text("a-cluster-secret-for-the-benchmark-0123456789\n")
    local: list[float] = []
    pulled: list[float] = []
    async with AsyncExitStack() as stack:
        relays = await start_relays(stack, directory / "media", urls, 2, "benchmedia", cluster_secret_file=secret)
        nursery = await stack.enter_async_context(trio.open_nursery())
        button = button_client(relays[0], "kp-test-002", [clip.video.to_dict(), clip.audio.to_dict()])
        await nursery.start(button.run)
        await trio.sleep(0.5)

        async def watch(relay, into, operator, token) -> None:
            console = pinkrelay.ConsoleClient(relay.consoles_address, operator, token.encode(), buffer=100_000)
            await nursery.start(console.run)
            console.subscribe("kp-test-002")
            async for event in console.events():
                if isinstance(event, Media):
                    into.append((wall_us() - event.timestamp) / 1000)

        nursery.start_soon(watch, relays[0], local, OPERATOR, TOKEN)
        nursery.start_soon(watch, relays[1], pulled, "desk-2", TOKEN + "-2")
        await trio.sleep(0.5)
        await stream_clip(button, clip, seconds=seconds)
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    return local, pulled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="presses a second")
    parser.add_argument("--media-seconds", type=float, default=6.0)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # every press is a WARNING line; writing 300 of them is not the relay's cost
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "nats").mkdir()
        cluster = NatsCluster(Path(directory) / "nats")
        cluster.start()
        try:
            results["single"] = summary(trio.run(alerts_through_relays, Path(directory) / "single", None, 1,
                                                 args.alerts, args.rate))
            results["cluster"] = summary(trio.run(alerts_through_relays, Path(directory) / "cluster", cluster.urls,
                                                  3, args.alerts, args.rate))
            results["jetstream"] = summary(asyncio.run(raw_jetstream(cluster.urls, args.alerts, args.rate)))
            local, pulled = trio.run(media_local_and_pulled, Path(directory), cluster.urls, args.media_seconds)
            results["media local"] = summary(local)
            results["media pulled"] = summary(pulled)
        finally:
            cluster.stop()
    print(f"{'run':13s} {'count':>6s} {'p50 ms':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s}")
    for name, row in results.items():
        print(f"{name:13s} {row['count']:6d} {row['p50']:8.2f} {row['p90']:8.2f} {row['p99']:8.2f} {row['max']:8.2f}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = ROOT / "benchmarks" / "results" / f"cluster-alerts-{stamp}.json"
    out.write_text(json.dumps({"when": stamp, "args": vars(args), "python": platform.python_version(),
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""How to run nats-py under trio: a thread with its own asyncio loop, or trio-asyncio. And raw asyncio.

    .venv/bin/python benchmarks/cluster_bridge.py [--publishes 2000] [--writers 1 20]

Starts a 3-node nats-server cluster on loopback (tests/nats_helpers.py), makes
an R=3 file stream, and times JetStream publish-to-PubAck from N tasks:

* ``thread``: nats-py on an asyncio loop in a thread of its own (NatsThread below);
* ``trio-asyncio``: pinkrelay.cluster.bridge.NatsLoop, nats-py inside trio's loop (what the relay uses);
* ``asyncio``: nats-py alone, the anchor (no trio at all).

Each line: publishes per second and p50/p99 of one publish as its caller sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any
import sys
import tempfile
import time
from pathlib import Path

import outcome
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nats_helpers import NatsCluster  # noqa: E402

from pinkrelay.cluster.bridge import NatsLoop  # noqa: E402


class NatsThread:
    """The alternative measured: nats-py on an asyncio loop in its own thread, each call handed across."""

    def __init__(self, name: str = "pinkrelay-nats") -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    def start(self) -> None:
        """Start the loop; must be called from the trio thread that will ``call`` it."""
        if self.loop is not None:
            return
        self._token = trio.lowlevel.current_trio_token()
        started = threading.Event()
        loops: list[asyncio.AbstractEventLoop] = []

        def run() -> None:
            # Made in its own thread, outside trio: a plain loop even where trio-asyncio is imported.
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loops.append(loop)
            loop.call_soon(started.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        started.wait()
        self.loop = loops[0]

    async def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and wait for the thread."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        self.loop = None

        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            asyncio.get_running_loop().stop()

        asyncio.run_coroutine_threadsafe(cancel_the_rest(), loop)
        await trio.to_thread.run_sync(thread.join)
        self._thread = None

    async def call(self, function: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run ``await function(*args, **kwargs)`` on the NATS loop and return its result (or raise its error)."""
        loop, token = self.loop, self._token
        if loop is None or token is None:
            raise RuntimeError("the NATS thread is not running; start() it first")
        future = asyncio.run_coroutine_threadsafe(function(*args, **kwargs), loop)
        task = trio.lowlevel.current_task()
        waiting = True

        def wake(_: concurrent.futures.Future[Any]) -> None:  # in the trio thread
            nonlocal waiting
            if waiting:
                waiting = False
                trio.lowlevel.reschedule(task, outcome.capture(future.result))

        def done(_: concurrent.futures.Future[Any]) -> None:  # in the NATS thread (or here, if already done)
            try:
                token.run_sync_soon(wake, future)
            except trio.RunFinishedError:
                pass

        def abort(_: Any) -> trio.lowlevel.Abort:
            nonlocal waiting
            waiting = False
            future.cancel()
            return trio.lowlevel.Abort.SUCCEEDED

        future.add_done_callback(done)
        return await trio.lowlevel.wait_task_rescheduled(abort)

    def to_trio(self, function: Callable[..., Any], *args: Any) -> None:
        """From the NATS loop: run ``function(*args)`` in the trio thread, after those queued before it."""
        if self._token is None:
            return
        try:
            self._token.run_sync_soon(function, *args)
        except trio.RunFinishedError:
            pass


def _report(name: str, writers: int, latencies: list[float], elapsed: float) -> None:
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000  # noqa: E731
    print(f"{name:13s} writers {writers:3d}: {len(latencies) / elapsed:7.0f} publishes/s, "
          f"p50 {p(0.5):6.2f} ms, p99 {p(0.99):6.2f} ms")


async def _setup(urls: list[str], stream: str):
    import nats
    from nats.js.api import StreamConfig

    connection = await nats.connect(servers=urls)
    js = connection.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"], num_replicas=3))
    return connection, js


async def run_asyncio(urls: list[str], stream: str, publishes: int, writers: int) -> None:
    connection, js = await _setup(urls, stream)
    latencies: list[float] = []

    async def writer(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await js.publish(f"{stream}.x", b"x" * 200)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(writer(publishes // writers) for _ in range(writers)))
    _report("asyncio", writers, latencies, time.perf_counter() - started)
    await connection.close()


async def run_bridged(name: str, bridge: Any, urls: list[str], stream: str, publishes: int, writers: int) -> None:
    """The same writers as run_asyncio, each publish handed to nats-py through ``bridge.call``."""
    if isinstance(bridge, NatsThread):
        bridge.start()
    else:
        await bridge.start()
    connection, js = await bridge.call(_setup, urls, stream)
    latencies: list[float] = []

    async def writer(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await bridge.call(js.publish, f"{stream}.x", b"x" * 200)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(writers):
            nursery.start_soon(writer, publishes // writers)
    _report(name, writers, latencies, time.perf_counter() - started)
    await bridge.call(connection.close)
    await bridge.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        cluster = NatsCluster(Path(directory))
        cluster.start()
        try:
            runs = 0
            for writers in args.writers:
                for name, bridge in (("asyncio", None), ("thread", NatsThread), ("trio-asyncio", NatsLoop)):
                    runs += 1
                    stream = f"BENCH{runs}"
                    if bridge is None:
                        asyncio.run(run_asyncio(cluster.urls, stream, args.publishes, writers))
                    else:
                        trio.run(run_bridged, name, bridge(), cluster.urls, stream, args.publishes, writers)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()

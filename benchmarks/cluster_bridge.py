"""How to run nats-py under trio: a thread with its own asyncio loop, or trio-asyncio. And raw asyncio.

    .venv/bin/python benchmarks/cluster_bridge.py [--publishes 2000] [--writers 1 20]

Starts a 3-node nats-server cluster on loopback (tests/nats_helpers.py), makes
an R=3 file stream, and times JetStream publish-to-PubAck from N tasks:

* ``thread``: nats-py on an asyncio loop in a thread of its own, one handoff per call (NatsThread below);
* ``batched``: pinkrelay.cluster.bridge.NatsThread, the same with calls and replies in batches (what
  the relay uses);
* ``trio-asyncio``: nats-py inside trio's loop (NatsLoop below), run last, since importing trio_asyncio
  changes asyncio for the rest of the process;
* ``asyncio``: nats-py alone, the anchor (no trio at all).

Each line: publishes per second and p50/p99 of one publish as its caller sees it.
"""

from __future__ import annotations

import argparse
import logging
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

log = logging.getLogger("bench")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nats_helpers import NatsCluster  # noqa: E402

from pinkrelay.cluster.bridge import NatsThread as BatchedThread  # noqa: E402


class NatsThread:
    """An alternative measured: nats-py on an asyncio loop in its own thread, each call handed across alone."""

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


class NatsLoop:
    """The other alternative measured: nats-py on an asyncio loop on trio's own, through trio-asyncio."""

    def __init__(self) -> None:
        self.loop: Any = None
        self._stop = trio.Event()
        self._stopped = trio.Event()

    async def start(self) -> None:
        if self.loop is not None:
            return
        import trio_asyncio

        ready = trio.Event()

        async def host() -> None:
            try:
                async with trio_asyncio.open_loop() as loop:
                    self.loop = loop
                    ready.set()
                    await self._stop.wait()
            except Exception:  # a system task's error would end the whole trio run
                log.exception("the asyncio loop for NATS stopped")
            finally:
                self.loop = None
                ready.set()
                self._stopped.set()

        trio.lowlevel.spawn_system_task(host, name="pinkrelay-nats-loop")
        await ready.wait()
        if self.loop is None:
            raise RuntimeError("the asyncio loop for NATS did not start (see the log)")

    async def stop(self) -> None:
        """Close the loop (what still runs on it is cancelled) and wait until it has."""
        if self.loop is None and not self._stopped.is_set():
            return
        self._stop.set()
        await self._stopped.wait()

    async def call(self, function: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Run ``await function(*args, **kwargs)`` on the asyncio loop and return its result (or raise its error)."""
        if self.loop is None:
            raise RuntimeError("the asyncio loop for NATS is not running; start() it first")
        return await self.loop.run_aio_coroutine(function(*args, **kwargs))

    def to_trio(self, function: Callable[..., Any], *args: Any) -> None:
        """From the asyncio loop: run ``function(*args)`` for trio now, in the order of the calls."""
        function(*args)


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
    started = bridge.start()
    if started is not None:
        await started
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
            bridges = (("asyncio", None), ("thread", NatsThread), ("batched", BatchedThread), ("trio-asyncio", NatsLoop))
            for name, bridge in bridges:
                for writers in args.writers:
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

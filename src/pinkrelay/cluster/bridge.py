"""NatsLoop: nats-py (an asyncio library) inside the relay's trio run, through trio-asyncio.

Of the ways to run nats-py under trio, ``benchmarks/cluster_bridge.py``
measured two on the same publish-and-wait workload (R=3 stream, 3 nodes on
loopback): nats-py on its own asyncio loop in a thread, each call handed
across with two thread wakeups, and trio-asyncio, which runs asyncio's loop
on trio's. With one publisher they cost the same (~1.5 ms a PubAck); with 20
at once the thread's handoffs queue up behind the GIL (p99 ~50 ms against
~11 ms, 1,700 against 2,800 PubAcks a second). So the relay uses trio-asyncio.

- ``await nats_loop.start()`` opens an asyncio loop on trio's, hosted by a
  system task, so stores can open and close in any order.
- ``await nats_loop.call(coroutine_function, *args)`` runs it on that loop
  and returns its result; cancelling the trio task cancels the coroutine.
- ``nats_loop.to_trio(function, *args)``, from a subscription's callback,
  runs ``function`` in trio's thread, in the order of the calls: the same
  thread already, so it is a plain call; the name says where it may be used.

Nothing here knows about alerts; ``bus.py`` and ``kv.py`` do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("pinkrelay.cluster")


class NatsLoop:
    """An asyncio loop for nats-py on the current trio run. ``start()`` first, ``stop()`` at the end."""

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

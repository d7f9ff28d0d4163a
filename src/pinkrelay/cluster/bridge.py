"""NatsThread: nats-py (an asyncio library) on an asyncio loop in its own thread, awaited from trio.

Of the ways to run nats-py under trio, ``benchmarks/cluster_bridge.py``
measures three on one publish-and-wait workload (R=3 stream, 3 nodes on
loopback): trio-asyncio, which runs asyncio's loop on trio's; a thread with
one handoff each way per call; and this one, a thread whose calls and
replies cross in batches. With one publisher all cost the same (~1.3 ms a
PubAck). With 20 at once, 4,000 publishes, on a loaded 2-core machine:
batched thread 4,557 and 3,525 PubAcks/s (p50 4.0 and 4.6 ms), trio-asyncio
3,197 and 2,873 (p50 5.6 and 6.1 ms), one handoff per call 3,460 and 3,322;
p99 varied from run to run for all three (13-36 ms batched, 17-20 ms
trio-asyncio). The batched thread is as fast, and it changes nothing
outside itself, while importing trio-asyncio installs an asyncio policy for
the whole process (an asyncio loop made anywhere else afterwards is one of
trio-asyncio's), which an embedding program must not suffer.

- ``await nats_thread.start()`` starts the thread and its loop.
- ``await nats_thread.call(coroutine_function, *args)`` runs it on that loop
  and returns its result; cancelling the trio task cancels the coroutine.
- ``nats_thread.to_trio(function, *args)``, from the NATS thread (a
  subscription's callback), runs ``function`` in trio's thread, in the
  order of the calls, in order with the calls' replies.

A call queued while the loop has not yet taken the previous ones costs no
wakeup of its own, and replies that finish together wake trio once.
Nothing here knows about alerts; ``bus.py`` and ``kv.py`` do.
"""


from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio

log = logging.getLogger("pinkrelay.cluster")


class _Call:
    __slots__ = ("function", "args", "kwargs", "task", "cancelled", "future", "result")

    def __init__(self, function: Any, args: Any, kwargs: Any, task: Any) -> None:
        self.function, self.args, self.kwargs, self.task = function, args, kwargs, task
        self.cancelled = False
        self.future: Any = None
        self.result: Any = None


class NatsThread:
    """nats-py on an asyncio loop in its own thread; calls and replies cross in batches."""

    def __init__(self, name: str = "pinkrelay-nats") -> None:
        self.name = name
        self.loop: Any = None
        self._thread: threading.Thread | None = None
        self._token: Any = None
        self._lock = threading.Lock()
        self._calls: deque[_Call] = deque()
        self._calls_woken = False
        self._replies: deque[Any] = deque()
        self._replies_woken = False

    async def start(self) -> None:
        if self.loop is not None:
            return
        import asyncio

        self._token = trio.lowlevel.current_trio_token()
        started = threading.Event()
        loops: list[Any] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loops.append(loop)
            loop.call_soon(started.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        await trio.to_thread.run_sync(started.wait)
        self.loop = loops[0]

    async def stop(self) -> None:
        import asyncio

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
        loop = self.loop
        if loop is None:
            raise RuntimeError("the NATS thread is not running; start() it first")
        call = _Call(function, args, kwargs, trio.lowlevel.current_task())
        with self._lock:
            self._calls.append(call)
            wake, self._calls_woken = not self._calls_woken, True
        if wake:
            loop.call_soon_threadsafe(self._take_calls)

        def abort(_: Any) -> trio.lowlevel.Abort:
            call.cancelled = True
            if self.loop is not None:
                self.loop.call_soon_threadsafe(lambda: call.future is not None and call.future.cancel())
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``await function(*args)`` on the NATS loop without waiting for it; its failure is logged."""
        if self.loop is None:
            return
        call = _Call(function, args, {}, None)
        with self._lock:
            self._calls.append(call)
            wake, self._calls_woken = not self._calls_woken, True
        if wake:
            self.loop.call_soon_threadsafe(self._take_calls)

    def _take_calls(self) -> None:  # NATS thread
        with self._lock:
            calls = list(self._calls)
            self._calls.clear()
            self._calls_woken = False
        for call in calls:
            if call.cancelled:
                continue
            call.future = self.loop.create_task(call.function(*call.args, **call.kwargs))
            call.future.add_done_callback(lambda future, call=call: self._finished(call, future))

    def _finished(self, call: _Call, future: Any) -> None:  # NATS thread
        if future.cancelled():
            return
        if call.task is None:  # spawned: nobody waits for it
            if future.exception() is not None:
                log.warning("NATS work %s failed: %s", getattr(call.function, "__name__", call.function),
                            future.exception())
            return
        call.result = outcome.capture(future.result)
        self._reply(call)

    def _reply(self, item: Any) -> None:  # NATS thread
        with self._lock:
            self._replies.append(item)
            wake, self._replies_woken = not self._replies_woken, True
        if wake:
            try:
                self._token.run_sync_soon(self._take_replies)
            except trio.RunFinishedError:
                pass

    def _take_replies(self) -> None:  # trio thread
        with self._lock:
            replies = list(self._replies)
            self._replies.clear()
            self._replies_woken = False
        for item in replies:
            if isinstance(item, _Call):
                if not item.cancelled:
                    trio.lowlevel.reschedule(item.task, item.result)
            else:
                function, args = item
                function(*args)

    def to_trio(self, function: Callable[..., Any], *args: Any) -> None:
        """From the NATS thread: run ``function(*args)`` in trio's thread, in order with the replies."""
        self._reply((function, args))

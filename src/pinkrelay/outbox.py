"""Outbox: one peer's outbound queue, written without blocking, drained by one task.

An Outbox is the core's SendQueue (four priority lanes, bounds, scatter-gather
writes on the socket's file descriptor) plus what trio needs around it:

* ``send()`` queues a control or alert frame and writes at once if the
  socket has room: an alert goes out in the same turn it was raised;
* the hub's fan-out calls the core's ``deliver()`` on many outboxes at once
  and calls ``attention()`` only on those whose socket was full or broken;
* ``run()`` is the outbox's writer task: it sleeps until the socket is full,
  then waits until it is writable, drains, and disconnects the peer if the
  socket takes nothing for ``stall_timeout`` seconds. The relay, which holds
  thousands of idle peers whose sockets are never full, keeps no such task:
  it sets ``on_blocked`` and starts ``drain()`` only when a socket fills.

Nothing else writes to the socket, so frames are never interleaved mid-chunk.
The relay uses one per peer; button and console clients use one for their uplink,
so a press overtakes every queued media byte on the device as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio

from ._core import OVERFLOW, QueueDefaults, SendQueue


class Outbox(SendQueue):  # type: ignore[misc,valid-type]
    """A peer's SendQueue, its socket and the task that drains it."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        *,
        label: str,
        on_fail: Callable[[str], None],
        stall_timeout: float = 10.0,
        max_video_bytes: int = QueueDefaults.MAX_VIDEO_BYTES,
        max_video_age: float = QueueDefaults.MAX_VIDEO_AGE,
        max_audio_bytes: int = QueueDefaults.MAX_AUDIO_BYTES,
        max_control_bytes: int = QueueDefaults.MAX_CONTROL_BYTES,
    ) -> None:
        super().__init__(
            sock.fileno(), max_video_bytes, max_video_age, max_audio_bytes, max_control_bytes
        )
        self.sock = sock
        self.label = label
        self.stall_timeout = stall_timeout
        self.failure: str | None = None
        self._on_fail = on_fail
        self._wakeup = trio.Event()
        #: Set: there is no standing writer task; called when the socket fills, to start ``drain()``.
        self.on_blocked: Callable[[], None] | None = None

    def _wake(self) -> None:
        if self.on_blocked is None:
            self._wakeup.set()
        elif self.failure is None:
            self.on_blocked()

    def send(self, lane: int, chunks: Sequence[Any], now: float) -> None:
        """Queue one control or alert frame and write now if the socket has room."""
        if self.failure is not None:
            return
        if self.push(lane, chunks, 0, False, now) == OVERFLOW:
            self.fail(
                f"control queue above {self.max_control_bytes} bytes: the peer reads too slowly "
                "to be sent alerts; disconnecting it so it can reconnect and resume"
            )
            return
        if not self.blocked:
            self.flush()

    def flush(self) -> None:
        """Write what the socket takes now; wake the writer task if it fills up."""
        try:
            self.write_to()
        except OSError as error:
            self.fail(f"send failed: {error.strerror or error}")
            return
        if not self.empty:
            self.blocked = True
            self._wake()

    def attention(self) -> None:
        """Called by the hub for an outbox that ``deliver()`` reported."""
        if self.error is not None:
            self.fail(f"send failed: {self.error.strerror or self.error}")
        elif self.overflowed:
            self.fail(
                f"control queue above {self.max_control_bytes} bytes: the peer reads too slowly "
                "to be sent alerts; disconnecting it so it can reconnect and resume"
            )
        elif self.blocked:
            self._wake()

    def detach(self) -> None:
        """Stop every write before the socket closes.

        Fan-out may still hold this outbox in a subscriber list it captured
        earlier; with the descriptor set to -1 the core skips it, so no byte
        can reach a descriptor number the kernel has given to someone else.
        """
        self.fd = -1
        self.blocked = True
        if self.failure is None:
            self.failure = "closed"
        self._wake()

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            self.blocked = True
            self._wake()
            self._on_fail(reason)

    async def run(self) -> None:
        """Drain the queue whenever the socket filled up; stop when the peer fails."""
        while self.failure is None:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await self.drain()

    async def drain(self) -> None:
        """Write until the queue is empty (then the outbox writes at once again) or the peer fails."""
        while self.failure is None and not self.empty:
            with trio.move_on_after(self.stall_timeout) as waiting:
                await trio.lowlevel.wait_writable(self.sock)
            if waiting.cancelled_caught:
                self.fail(
                    f"stopped reading: its socket took nothing for {self.stall_timeout:g} s "
                    f"({self.pending_bytes} bytes waiting)"
                )
                return
            try:
                self.write_to()
            except OSError as error:
                self.fail(f"send failed: {error.strerror or error}")
                return
        if self.failure is None:
            self.blocked = False

"""The hub: live streams, who watches them, and the task that fans media out.

Media work is kept off the turn that handles alerts. A button's reader only
decodes and hands each complete message to ``publish()``, which adds it to
the core's ``Fanout``; one fan-out task works it off in slices of at most
``FANOUT_SLICE`` sockets and yields to the event loop between slices. So a
turn of media work is bounded, and an alert that arrives while hundreds of
streams are being fanned out is read and pushed to every console within
about one slice, not after the whole backlog. When the fan-out task is idle,
``publish()`` does the first slice itself, in the button reader's turn: a
message for a few consoles then costs one wakeup of the relay, not three. A turn is a handful of slices
when nothing else waits: between slices the task asks the kernel (one
``epoll_wait`` with no timeout on every peer's socket) whether a button or
console has sent anything, and yields at once if so, or after
``FANOUT_TURN`` seconds in any case (timers, journal completions). So the
event loop turns for input, not once per 64 sockets. Every per-subscriber step
(push, write, the choice of which queues to write) runs in the core's C
loops; Python runs once per slice.

Audio rides with video (``audio_hold``, see ``Fanout``): a subscriber's
audio waits up to ``audio_hold`` for the next video frame of the streams it
watches and leaves in the same write. That is one write per video frame
instead of one per audio and video frame, for audio that arrives at most
``audio_hold`` later (35 ms by default: below what viewers notice of audio
behind video, and inside the 60 ms jitter buffer of the web control room).

Fast join: each stream keeps its video since the last keyframe (the GOP
cache, bounded by ``gop_cache_bytes``). A console that subscribes gets
``subscribed`` with ``catchup_frames`` = the number of cached frames that
follow at once; it decodes them without showing them and so lands on the
live picture within one decode burst, instead of replaying a second of old
video at high speed. Audio starts live (old audio would be out of sync).

Subscriber lists are tuples replaced on every change, so a message pending
for fan-out keeps the list it was published to: a console that joins later
gets that message from the GOP cache instead, never twice.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from .._core import Fanout, Lane, Message
from ..protocol import TrackDescription
from ..outbox import Outbox

log = logging.getLogger("pinkrelay.relay")

#: Subscriber sockets written per event-loop turn of the fan-out task.
FANOUT_SLICE = 64
#: ... and bytes, whichever bound comes first (a keyframe to many consoles).
FANOUT_SLICE_BYTES = 1024 * 1024
#: Subscriber pushes queued per fan-out round before its writes begin.
MAX_PUSHES_PER_ROUND = 8192
#: Longest turn of the fan-out task while no peer has sent anything, in seconds.
FANOUT_TURN = 0.002


@dataclass(eq=False)
class Stream:
    """One button's live stream as the relay sees it."""

    button_id: str
    track_ids: tuple[int, ...]
    tracks: dict[int, TrackDescription] = field(default_factory=dict)
    subscribers: tuple[Outbox, ...] = ()
    gop: list[Message] = field(default_factory=list)
    gop_bytes: int = 0
    gop_started_at: float = 0.0
    gop_valid: bool = False
    last_keyframe_request: float = float("-inf")
    messages_in: int = 0
    bytes_in: int = 0
    #: In-process readers of every message (the evidence pre-roll ring, a recording's tap): each has
    #: ``offer(message, now)``, called in arrival order with the message the fan-out sends, never a copy.
    taps: tuple[Any, ...] = ()
    #: The data plane's handle on the button's socket (relay/data_plane.py); None: media takes the trio path.
    publisher: Any = None

    def reset_gop(self) -> None:
        self.gop = []
        self.gop_bytes = 0
        self.gop_valid = False

    def remember(self, message: Message, now: float, limit: int) -> None:
        """Keep video since the last keyframe; stop caching past ``limit`` bytes."""
        if message.lane != Lane.VIDEO:
            return
        if message.keyframe:
            self.gop = [message]
            self.gop_bytes = message.wire_size
            self.gop_started_at = now
            self.gop_valid = True
        elif self.gop_valid:
            if self.gop_bytes + message.wire_size > limit:
                self.reset_gop()
            else:
                self.gop.append(message)
                self.gop_bytes += message.wire_size


class Hub:
    """Streams by button id, subscriptions by button id, and the fan-out task."""

    def __init__(
        self,
        *,
        gop_cache_bytes: int,
        audio_hold: float = 0.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.gop_cache_bytes = gop_cache_bytes
        self.streams: dict[str, Stream] = {}
        #: Outboxes that asked for a button, streaming or not (they get it when it comes).
        self.watchers: dict[str, tuple[Outbox, ...]] = {}
        self._fanout = Fanout(audio_hold, FANOUT_SLICE, FANOUT_SLICE_BYTES, MAX_PUSHES_PER_ROUND)
        #: Every peer's socket, level-triggered for input: "has anyone sent anything?"
        self._input = select.epoll()
        self._work = trio.Event()
        #: The fan-out task's wait while it is idle (its deadline: held audio due); None while it runs.
        self._parked: trio.CancelScope | None = None
        self._clock = clock
        #: Told when a stream opens, is described or closes (``stream_opened(stream)`` ...): the evidence desk.
        self.listeners: list[Any] = []
        #: Called with a button id when its last watcher left (the relay frees its track ids then).
        self.unwatched: Callable[[str], None] = lambda button_id: None

    # -- streams ---------------------------------------------------------------

    def open_stream(self, button_id: str, track_ids: tuple[int, ...], publisher: Any = None) -> Stream:
        stream = Stream(button_id=button_id, track_ids=track_ids, publisher=publisher)
        stream.subscribers = self.watchers.get(button_id, ())
        self.streams[button_id] = stream
        for listener in self.listeners:
            listener.stream_opened(stream)
        return stream

    def close_stream(self, stream: Stream) -> None:
        if self.streams.get(stream.button_id) is stream:
            del self.streams[stream.button_id]
        stream.reset_gop()
        for listener in self.listeners:
            listener.stream_closed(stream)

    def describe(self, stream: Stream, tracks: tuple[TrackDescription, ...]) -> None:
        stream.tracks = {track.track_id: track for track in tracks}
        stream.reset_gop()
        for listener in self.listeners:
            listener.stream_described(stream)

    def publish(self, stream: Stream, message: Message) -> None:
        """A complete media message from a button: cache it and queue it for fan-out."""
        now = self._clock()
        stream.messages_in += 1
        stream.bytes_in += message.wire_size
        stream.remember(message, now, self.gop_cache_bytes)
        for tap in stream.taps:
            tap.offer(message, now)
        if not stream.subscribers:
            return
        fanout = self._fanout
        parked = self._parked if not fanout.busy else None
        fanout.add(stream.subscribers, message)
        if parked is not None:
            # The fan-out task is idle: do the first slice here, in the button
            # reader's turn, instead of waking the task for it; move its
            # wakeup to when the audio now held is due (none if it all left).
            for outbox in fanout.run(now):
                outbox.attention()
            if not fanout.busy:
                parked.deadline = fanout.next_due
                return
        self._work.set()

    def watch_input(self, fd: int) -> None:
        """Make the fan-out task yield as soon as ``fd`` (a peer's socket) has input."""
        self._input.register(fd, select.EPOLLIN)

    def unwatch_input(self, fd: int) -> None:
        """Forget ``fd``; call before the socket is closed (its number is reused)."""
        try:
            self._input.unregister(fd)
        except (OSError, ValueError):
            pass

    # -- subscriptions ---------------------------------------------------------

    def subscribe(self, button_id: str, outbox: Outbox) -> Stream | None:
        """Add ``outbox`` to a button's watchers; returns the live stream, if any.

        The caller sends ``subscribed`` first, then ``push_gop()``.
        """
        watchers = self.watchers.get(button_id, ())
        if outbox not in watchers:
            self.watchers[button_id] = watchers + (outbox,)
        stream = self.streams.get(button_id)
        if stream is not None:
            stream.subscribers = self.watchers[button_id]
        return stream

    def unsubscribe(self, button_id: str, outbox: Outbox) -> None:
        watchers = tuple(w for w in self.watchers.get(button_id, ()) if w is not outbox)
        if watchers:
            self.watchers[button_id] = watchers
        else:
            self.watchers.pop(button_id, None)
        stream = self.streams.get(button_id)
        if stream is not None:
            stream.subscribers = watchers
            if stream.publisher is not None and getattr(outbox, "handle", None) is not None:
                stream.publisher.unsubscribe(outbox.handle)
        if not watchers:
            self.unwatched(button_id)

    def is_watched(self, button_id: str) -> bool:
        return button_id in self.watchers

    def watching(self, outbox: Outbox) -> int:
        """How many buttons ``outbox`` watches (a scan: for subscribe requests, not the media path)."""
        return sum(outbox in watchers for watchers in self.watchers.values())

    def unsubscribe_all(self, outbox: Outbox) -> None:
        for button_id in [b for b, watchers in self.watchers.items() if outbox in watchers]:
            self.unsubscribe(button_id, outbox)

    def catchup(self, stream: Stream | None) -> list[Message]:
        """The cached video a new subscriber gets before live frames."""
        if stream is None or not stream.gop_valid:
            return []
        return list(stream.gop)

    def push_gop(self, outbox: Outbox, messages: list[Message], now: float) -> None:
        for message in messages:
            outbox.push_message(message, now)
        if messages and not outbox.blocked:
            outbox.flush()

    # -- fan-out ---------------------------------------------------------------

    async def run_fanout(self) -> None:
        """Work off published media, one ``Fanout`` slice per event-loop turn (see module doc)."""
        fanout = self._fanout
        input_waiting = self._input.poll
        clock = self._clock
        while True:
            if not fanout.busy:
                with trio.move_on_at(fanout.next_due) as self._parked:
                    await self._work.wait()
                self._parked = None
                self._work = trio.Event()
            now = turn_started = clock()
            while True:
                for outbox in fanout.run(now):
                    outbox.attention()
                if not fanout.busy or input_waiting(0, 1):
                    break
                now = clock()
                if now - turn_started >= FANOUT_TURN:
                    break
            await trio.lowlevel.checkpoint()

    def stats(self) -> dict[str, Any]:
        return {
            "streams": len(self.streams),
            "watched_buttons": len(self.watchers),
            "pending_messages": self._fanout.pending,
            "messages_fanned_out": self._fanout.messages,
            "deliveries": self._fanout.deliveries,
            "fanout_rounds": self._fanout.rounds,
            "fanout_writes": self._fanout.writes,
        }

"""One task group per connection: read, decide, write; the protocol does the rest.

A session owns its socket, a sans-IO ``RelayConnection`` and an ``Outbox``.
Its reader feeds received bytes to the connection and acts on the events;
its timer task runs the connection's timers (heartbeats, handshake timeout,
silence); the outbox's task drains the socket when it fills. Whatever ends
the session (a protocol error, a refusal, a stalled peer, shutdown) cancels
the group, detaches the outbox from fan-out and closes the socket; other
sessions never notice.

``ButtonSession`` and ``ConsoleSession`` add what each role does with its
events; the relay-wide decisions (registry, journal, hub) stay in ``Relay``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio

from .._core import Lane, recv_some
from ..alerts.routing import Recipient
from ..errors import AuthenticationFailed, PinkRelayError, ProtocolError
from ..logs import event as log_event
from ..protocol import (
    Alert,
    AlertUpdate,
    Authenticate,
    ConnectionClosed,
    Error,
    Goodbye,
    Heartbeat,
    Hello,
    KeyframeRequest,
    Media,
    PeerSilent,
    RelayConnection,
    State,
    StreamDescription,
    Subscribe,
    Unsubscribe,
    frame_lane,
)
from ..protocol.connection import ProtocolLimits
from ..outbox import Outbox

if TYPE_CHECKING:
    from .hub import Stream
    from .server import Relay

log = logging.getLogger("pinkrelay.relay")
RECEIVE_BYTES = 64 * 1024
#: Reads a session does in a row, while its socket keeps having data, before it yields.
READS_PER_TURN = 16


def wall_us() -> int:
    return time.time_ns() // 1000


class Session:
    """What button and console sessions share."""

    role: str

    def __init__(self, relay: Relay, stream: trio.SocketStream, peer: str) -> None:
        self.relay = relay
        self.stream = stream
        self.peer = peer
        config = relay.config
        now = trio.current_time()
        self.conn = RelayConnection(
            role=self.role,
            limits=ProtocolLimits(
                max_frame_bytes=config.max_frame_bytes,
                max_control_bytes=config.max_control_bytes,
                max_message_bytes=config.max_message_bytes,
                max_tracks=config.max_tracks,
            ),
            heartbeat_interval=config.heartbeat_interval,
            supervision_window=config.supervision_window,
            handshake_timeout=config.handshake_timeout,
            now=now,
        )
        self.outbox = Outbox(
            stream.socket,
            label=f"{self.role} {peer}",
            on_fail=self._outbox_failed,
            stall_timeout=config.stall_timeout,
            max_video_bytes=config.max_video_queue_bytes,
            max_video_age=config.max_video_queue_age,
            max_audio_bytes=config.max_audio_queue_bytes,
            max_control_bytes=config.max_control_queue_bytes,
        )
        self.close_reason = ""
        #: The source address while this session counts as not signed in (relay/limits.py).
        self.admitted_from: str | None = None
        #: On a TLS listener: the CN of the client's certificate ("" without one); None: plaintext.
        self.certificate: str | None = None
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._writing = False
        self.connected_at = now

    @property
    def identity(self) -> str:
        return self.conn.identity

    @property
    def ready(self) -> bool:
        return self.conn.state is State.READY and self.outbox.failure is None

    def describe(self) -> str:
        return f"{self.role} {self.identity or '(unauthenticated)'} from {self.peer}"

    # -- lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        fd = self.stream.socket.fileno()
        self.relay.hub.watch_input(fd)
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                self._nursery = nursery
                # No standing writer or timer task: an idle session is its read loop alone.
                self.outbox.on_blocked = self._start_writer
                self.relay.timers.schedule(self)
                await self._read_loop()
                nursery.cancel_scope.cancel()
        finally:
            self.relay.timers.forget(self)
            self._nursery = None
            self.relay.hub.unwatch_input(fd)
            self.leave_data_plane()
            self.outbox.detach()
            self.ended()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await self.stream.aclose()

    def close(self, reason: str) -> None:
        """End the session (idempotent); the reason is logged and reported."""
        if not self.close_reason:
            self.close_reason = reason
        if self._scope is not None:
            self._scope.cancel()

    def say_goodbye(self, reason: str) -> None:
        """Tell the peer we are closing on purpose, then close."""
        if self.conn.state is State.READY:
            self.send(Goodbye(reason=reason))
        self.close(reason)

    def refuse(self, error: BaseException) -> None:
        """Report ``error`` to the peer in an error frame, then close."""
        try:
            frame = self.conn.error_frame(error)
        except PinkRelayError:
            frame = b""
        if frame and self.outbox.failure is None:
            self.outbox.send(Lane.CONTROL, [frame], trio.current_time())
        self.close(str(error))

    def _outbox_failed(self, reason: str) -> None:
        log_event(log, logging.WARNING, f"dropping {self.describe()}: {reason}",
                  decision="disconnect", role=self.role, identity=self.identity, peer=self.peer,
                  reason=reason)
        self.close(reason)

    def send(self, event: Any) -> None:
        """Send one control event through the outbox (alert lane or control lane).

        A session that is closing sends nothing more: the relay may still be
        telling every console about a change while one of them goes away.
        """
        if not self.ready:
            return
        frame = self.conn.send(event, trio.current_time())
        self.outbox.send(frame_lane(event.frame_type), [frame], trio.current_time())

    def send_frame(self, lane: int, frame: bytes) -> None:
        """Send wire bytes built once for many peers (see ``Relay.broadcast``)."""
        if self.ready:
            self.conn.last_sent = trio.current_time()
            self.outbox.send(lane, [frame], trio.current_time())

    # -- reading ---------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Read, decode, act; park only when the socket has nothing more.

        ``recv_some`` says "nothing yet" without an exception, and a read that
        finds data does not pass through the scheduler first (trio's
        ``receive_some`` does both on every call), so a media message costs
        one wakeup. A peer that keeps the socket full still yields every
        ``READS_PER_TURN`` reads.
        """
        sock = self.stream.socket
        fd = sock.fileno()
        reads = 0
        while True:
            try:
                data = recv_some(fd, RECEIVE_BYTES)
                if data is None or reads >= READS_PER_TURN:
                    reads = 0
                    if data is None:
                        await trio.lowlevel.wait_readable(sock)
                        continue
                    await trio.lowlevel.checkpoint()
            except (OSError, trio.ClosedResourceError) as error:
                self.close(f"connection lost: {getattr(error, 'strerror', None) or error}")
                return
            reads += 1
            now = trio.current_time()
            self.conn.receive_data(data, now)
            if data:
                self.received(now)
            await self._drain(now)
            if not data or self.close_reason:
                if not self.close_reason:
                    self.close("peer closed the connection")
                return
            if self.hand_over_reading():
                if await self._data_plane_loop():
                    return
                reads = 0  # handed back: Python reads on

    async def _drain(self, now: float) -> None:
        try:
            for event in self.conn.events():
                await self.handle(event, now)
                if self.close_reason:
                    return
        except AuthenticationFailed as error:
            self.relay.auth_refused(self, error)
            self.refuse(error)
        except ProtocolError as error:
            self.relay.protocol_violation(self, error)
            self.refuse(error)

    # -- the data plane (relay/data_plane.py) ----------------------------------------------

    #: The data plane's handle on this socket: a Publisher (button) or a Subscriber (console's outbox).
    publisher: Any = None

    def hand_over_reading(self) -> bool:
        """Hook: let a data thread read this socket from now on (True: it was handed over)."""
        return False

    def data_plane_event(self, kind: int, data: bytes) -> None:
        """An event of the data plane about this session (called by the relay's link task)."""
        from . import data_plane

        if kind == data_plane.FAILED:
            self.outbox.fail(data.decode(errors="replace"))
            return
        try:
            self._plane_events.send_nowait((kind, data))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError, AttributeError):
            log.error("%s: data plane event %d not delivered; closing", self.describe(), kind)
            self.close("relay error: data plane event lost")

    async def _data_plane_loop(self) -> bool:
        """Act on what the data thread hands over; True: the session ended, False: Python reads again."""
        from . import data_plane

        receive = self._plane_receive
        while True:
            kind, data = await receive.receive()
            now = trio.current_time()
            if kind == data_plane.CLOSED:
                self.close(data.decode(errors="replace"))
                return True
            if kind == data_plane.OVERRATE:
                error = data_plane.overrate_error(self.relay.config, self.identity)
                log_event(log, logging.WARNING, f"closing button {self.identity} ({self.peer}): {error}",
                          decision="disconnect", button=self.identity, reason="bitrate")
                self.relay.counters["closed_over_bitrate"] += 1
                self.count_media_over_rate()
                self.refuse(error)
                return True
            self.conn.receive_data(data, now)
            if data:
                self.received(now)
            await self._drain(now)
            if self.close_reason:
                return True
            if kind == data_plane.HANDBACK:
                return False
            self.publisher.resume()

    def leave_data_plane(self) -> None:
        """The session is over: no data thread may touch the socket once it closes."""
        if self.publisher is not None:
            self.count_media_over_rate()
            self.relay.data_plane.forget(self.publisher)

    def count_media_over_rate(self) -> None:
        """Add the messages the data plane dropped above max_button_bitrate to the relay's count, once."""
        dropped = self.publisher.stats()["dropped_over_rate"]
        self.relay.counters["media_over_bitrate"] += dropped - self._over_rate_counted
        self._over_rate_counted = dropped

    _over_rate_counted = 0

    def _start_writer(self) -> None:
        """The socket filled up: drain it in a task of its own until the queue is empty (outbox.py)."""
        if not self._writing and self._nursery is not None:
            self._writing = True
            self._nursery.start_soon(self._write)

    async def _write(self) -> None:
        try:
            await self.outbox.drain()
        finally:
            self._writing = False

    def rearm_timers(self) -> None:
        """The connection's next deadline moved earlier (it became READY): reschedule it (timers.py)."""
        if self._nursery is not None:
            self.relay.timers.schedule(self)

    async def timer_fired(self, now: float) -> None:
        """The relay's timer task reached this session's deadline: act on the clock, then schedule again."""
        if self.close_reason:
            return
        self.refresh_liveness(now)
        heartbeat = self.conn.handle_timer(now, wall_us())
        if heartbeat:
            self.outbox.send(Lane.CONTROL, [heartbeat], now)
        await self._drain(now)
        if not self.close_reason:
            self.relay.timers.schedule(self)

    # -- events ----------------------------------------------------------------

    async def handle(self, event: Any, now: float) -> None:
        if isinstance(event, (Hello, Authenticate)) and self.conn.state is State.CLOSED:
            # The same read that brought this handshake step also ended the connection
            # (the peer closed, or sent bytes that broke the protocol). There is nobody
            # to answer; the events that follow say why it ended, and that is what is
            # logged, not the reply the relay can no longer send.
            log.debug("%s: not answering its %s, the connection already ended", self.describe(),
                      type(event).__name__)
            return
        if isinstance(event, Hello):
            salt, kdf = self.relay.challenge_for(self)
            challenge = self.conn.challenge(now, relay=self.relay.config.relay_name, salt=salt, kdf=kdf)
            self.outbox.send(Lane.CONTROL, [challenge], now)
        elif isinstance(event, Authenticate):
            await self.relay.authenticate(self, now)
        elif isinstance(event, PeerSilent):
            self.say_goodbye(f"nothing received for {event.silent_for:.0f} s")
        elif isinstance(event, Goodbye):
            self.close(f"peer said goodbye: {event.reason or 'no reason given'}")
        elif isinstance(event, Error):
            if event.fatal:
                self.close(f"peer reported error {event.code}: {event.message}")
            else:
                log_event(log, logging.INFO, f"{self.describe()} reported {event.code}: {event.message}",
                          role=self.role, identity=self.identity, code=event.code)
        elif isinstance(event, ConnectionClosed):
            self.close("peer closed the connection")
        elif isinstance(event, Heartbeat):
            pass
        else:
            await self.handle_ready(event, now)

    async def handle_ready(self, event: Any, now: float) -> None:
        raise NotImplementedError

    def received(self, now: float) -> None:
        """Hook: bytes arrived (proof of life)."""

    def refresh_liveness(self, now: float) -> None:
        """Hook: frames a data thread read (media, which Python never sees) count as proof of life too."""

    def ended(self) -> None:
        """Hook: the session is over; undo what it registered."""
        self.relay.session_ended(self)


class ButtonSession(Session):
    role = "button"
    stream_state: Stream | None = None

    def hand_over_reading(self) -> bool:
        """Once READY, and at a frame and message boundary, a data thread reads the button."""
        publisher = self.publisher
        if publisher is None or self.conn.state is not State.READY or not self.conn.at_boundary():
            return False
        self._plane_events, self._plane_receive = trio.open_memory_channel[Any](8)
        publisher.resume()
        return True

    def refresh_liveness(self, now: float) -> None:
        if self.publisher is None:
            return
        seen = now - self.publisher.stats()["seconds_since_frame"]
        if seen > self.conn.last_received:
            self.conn.last_received = seen
            if self.relay.sessions_by_button.get(self.identity) is self:
                self.relay.button_seen(self.identity, seen)

    def received(self, now: float) -> None:
        # Presence follows the protocol's proof of life: whole frames only.
        if self.conn.last_received != now:
            return
        if self.conn.authenticated and self.relay.sessions_by_button.get(self.identity) is self:
            self.relay.button_seen(self.identity, now)

    async def handle_ready(self, event: Any, now: float) -> None:
        # Media mostly never arrives here: the connection hands it to the hub
        # directly (conn.media_sink, set when the relay welcomes the button).
        if isinstance(event, Alert):
            await self.relay.alert_pressed(self, event)
        elif isinstance(event, StreamDescription):
            self.relay.stream_described(self, event)
        elif isinstance(event, Media) and self.conn.media_sink is not None:
            # Media read behind another event (see Connection.media_sink).
            self.conn.media_sink(event.message)


class ConsoleSession(Session):
    role = "console"

    def __init__(self, relay: Relay, stream: trio.SocketStream, peer: str) -> None:
        super().__init__(relay, stream, peer)
        if relay.data_plane is not None:
            # Every write to a console, from the challenge on, goes through the data plane's
            # queue, where media is fanned out: an alert overtakes queued media by construction.
            from .data_plane import PlaneOutbox

            self.outbox = PlaneOutbox(relay.data_plane, self, relay.config)  # type: ignore[assignment]
    #: "operator" or "supervisor" for an account; "" for a console token (an operator).
    operator_role = ""
    #: Role and control room of the operator signed in here: which alerts this console sees.
    recipient = Recipient()
    #: While the sign-in snapshot is read: broadcasts held back, (lane, frame, cursor).
    held_broadcasts: list[tuple[int, bytes, int]] | None = None

    async def handle_ready(self, event: Any, now: float) -> None:
        if isinstance(event, Subscribe):
            self.relay.subscribe(self, event.button, now)
        elif isinstance(event, Unsubscribe):
            self.relay.hub.unsubscribe(event.button, self.outbox)
            log_event(log, logging.INFO, f"console {self.identity} stopped watching {event.button}",
                      operator=self.identity, button=event.button, action="unsubscribe")
        elif isinstance(event, KeyframeRequest):
            self.relay.request_keyframe(event.button, now, requested_by=self.identity)
        elif isinstance(event, AlertUpdate):
            await self.relay.alert_update(self, event)


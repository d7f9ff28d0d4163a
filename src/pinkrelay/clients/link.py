"""Link: one authenticated connection from a client to the relay, over trio.

Both client libraries use it: it opens the TCP stream, walks the handshake
(hello, challenge, proof, welcome) with the sans-IO client connection, and
then runs the reader, the timers and an Outbox, handing every received event
to the owner's callback. A refusal of this client's identity raises
ConnectionRefused with the relay's reason; an unreachable relay, or one that
fails mid-handshake, raises OSError (LinkClosed) naming what happened, which
the clients retry with backoff.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from .._core import Lane
from ..config import Address
from ..errors import ConnectionRefused, PinkRelayError, ProtocolError
from ..outbox import Outbox
from ..protocol import Challenge, ConnectionClosed, Error, Goodbye, PeerSilent, Welcome, frame_lane
from ..protocol.connection import _ClientConnection
from ..tls import ClientTls, bridge, client_handshake, socketpair

RECEIVE_BYTES = 64 * 1024
#: Error codes that end a client for good: retrying with the same identity cannot help.
FINAL_REFUSALS = frozenset({"auth", "wrong-listener", "unknown-button", "tls-required"})


def wall_us() -> int:
    return time.time_ns() // 1000


def _first_cause(error: OSError) -> OSError:
    """trio reports "all attempts to connect failed" (no errno) and chains each attempt's error."""
    cause = error.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError) and cause.errno:
        return OSError(cause.errno, os.strerror(cause.errno))
    return error


def relay_addresses(relay: Address | str | Sequence[Address | str]) -> tuple[Address, ...]:
    """One relay, or several (a list, or ``HOST:PORT,HOST:PORT``) of a cluster to fail over between."""
    if isinstance(relay, Address):
        return (relay,)
    items = relay.split(",") if isinstance(relay, str) else list(relay)
    addresses = tuple(item if isinstance(item, Address) else Address.parse(item.strip(), what="relay")
                      for item in items if isinstance(item, Address) or item.strip())
    if not addresses:
        raise ValueError(f"no relay address in {relay!r}; give HOST:PORT, or several separated by commas")
    return addresses


class RelayRotation:
    """Which relay a client tries next: the same after a drop, the next one after a failed attempt."""

    def __init__(self, relay: Address | str | Sequence[Address | str]) -> None:
        self.relays = relay_addresses(relay)
        self._index = 0
        #: Failed attempts in a row; every relay has been tried once when it reaches len(relays).
        self.failures = 0

    @property
    def current(self) -> Address:
        return self.relays[self._index]

    def failed(self) -> None:
        self._index = (self._index + 1) % len(self.relays)
        self.failures += 1

    def connected(self) -> None:
        self.failures = 0

    @property
    def each_tried(self) -> bool:
        return self.failures >= len(self.relays)

    def __str__(self) -> str:
        return ", ".join(str(address) for address in self.relays)


class LinkClosed(PinkRelayError, ConnectionError):
    """The relay connection ended; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Link:
    """An authenticated connection; ``serve()`` runs it until it ends."""

    def __init__(self, conn: _ClientConnection, stream: trio.SocketStream, outbox: Outbox) -> None:
        self.conn = conn
        self.stream = stream
        self.outbox = outbox
        #: Over TLS: the relay's TLS stream, bridged to ``stream`` while ``serve()`` runs (pinkrelay/tls.py).
        self.secure: trio.SSLStream[Any] | None = None
        self._far: trio.SocketStream | None = None
        self.closed_reason = ""
        self._scope: trio.CancelScope | None = None
        self._on_event: Callable[[Any], Awaitable[None]] | None = None

    @classmethod
    async def open(
        cls,
        address: Address,
        conn: _ClientConnection,
        *,
        connect_timeout: float = 5.0,
        stall_timeout: float = 10.0,
        tls: ClientTls | None = None,
    ) -> Link:
        """Connect and authenticate; raises OSError or ConnectionRefused.

        With ``tls`` the connection is TLS 1.3 (the relay's certificate checked
        against the CA or the pin first), and the v1 handshake runs inside it.
        """
        what = f"{conn.role} {conn.identity}"
        with trio.move_on_after(connect_timeout) as timer:
            try:
                stream = await trio.open_tcp_stream(address.host, address.port)
            except OSError as error:
                error = _first_cause(error)
                message = (
                    f"relay not reachable at {address} ({error.strerror or error}); is "
                    "'pinkrelay serve' running there, and is this the right port?"
                )
                raise (OSError(error.errno, message) if error.errno else OSError(message)) from None
            secure = None
            try:
                if tls is not None:
                    secure = await client_handshake(stream, tls, address.host)
                await cls._handshake(secure or stream, conn, what)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await (secure or stream).aclose()
                raise
        if timer.cancelled_caught:
            raise OSError(f"relay at {address} did not complete the handshake within {connect_timeout:g} s")
        plain = stream
        if secure is not None:
            plain, far = socketpair()
        link = cls(conn, plain, None)  # type: ignore[arg-type]
        if secure is not None:
            link.secure, link._far = secure, far
        link.outbox = Outbox(
            plain.socket, label=f"{what} uplink", on_fail=link.close, stall_timeout=stall_timeout
        )
        return link

    @staticmethod
    async def _handshake(stream: trio.abc.Stream, conn: _ClientConnection, what: str) -> None:
        # A relay that goes away mid-handshake (restarting, say), sends bytes
        # that do not parse, or reports a passing failure (timeout, internal
        # error) is worth retrying (LinkClosed); only a refusal that names
        # this client's identity or role (FINAL_REFUSALS) is final.
        try:
            await stream.send_all(conn.hello(trio.current_time()))
        except trio.BrokenResourceError as error:
            raise LinkClosed(f"{what}: relay closed the connection during the handshake ({error})") from None
        while True:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except trio.BrokenResourceError as error:
                raise LinkClosed(f"{what}: relay closed the connection during the handshake ({error})") from None
            conn.receive_data(data, trio.current_time())
            try:
                for event in conn.events():
                    if isinstance(event, Challenge):
                        try:
                            await stream.send_all(conn.authenticate(trio.current_time()))
                        except trio.BrokenResourceError as error:
                            raise LinkClosed(f"{what}: relay closed the connection during the handshake "
                                             f"({error})") from None
                    elif isinstance(event, Welcome):
                        return
                    elif isinstance(event, Error):
                        if event.code in FINAL_REFUSALS:
                            raise ConnectionRefused(f"{what} refused by the relay: {event.message}",
                                                    code=event.code)
                        raise LinkClosed(f"{what}: relay ended the handshake ({event.code}: {event.message})")
                    elif isinstance(event, ConnectionClosed):
                        raise LinkClosed(f"{what}: relay closed the connection during the handshake")
            except ProtocolError as error:
                raise LinkClosed(f"{what}: relay broke the protocol during the handshake: {error}") from None

    def close(self, reason: str) -> None:
        if not self.closed_reason:
            self.closed_reason = reason
        if self._scope is not None:
            self._scope.cancel()

    def send(self, event: Any) -> None:
        """Queue a control event (alerts go in the alert lane, ahead of media)."""
        if self.closed_reason:
            return
        now = trio.current_time()
        self.outbox.send(frame_lane(event.frame_type), [self.conn.send(event, now)], now)

    def send_media(self, track_id: int, seq: int, timestamp: int, data: Any, keyframe: bool) -> int:
        """Queue one media message; returns the SendQueue status (QUEUED or DROPPED)."""
        if self.closed_reason or self.outbox.failure is not None:
            return 1
        now = trio.current_time()
        chunks = self.conn.send_media(track_id, seq, timestamp, data, keyframe, now)
        track = self.conn.tracks[track_id]
        status = self.outbox.push(track.lane, chunks, track_id, keyframe, now)
        if not self.outbox.blocked:
            self.outbox.flush()
        return status

    async def serve(self, on_event: Callable[[Any], Awaitable[None]]) -> str:
        """Run until the connection ends; returns the reason it ended."""
        self._on_event = on_event
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self.secure is not None:
                    nursery.start_soon(bridge, self.secure, self._far)
                nursery.start_soon(self.outbox.run)
                nursery.start_soon(self._timers)
                await self._read(on_event)
                nursery.cancel_scope.cancel()
        finally:
            self.outbox.detach()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    for stream in (self.stream, self._far, self.secure):
                        if stream is not None:
                            await stream.aclose()
        return self.closed_reason or "closed"

    async def _read(self, on_event: Callable[[Any], Awaitable[None]]) -> None:
        while not self.closed_reason:
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                self.close(f"connection lost: {error}")
                return
            self.conn.receive_data(data, trio.current_time())
            await self._dispatch(on_event)
            if not data:
                self.close("relay closed the connection")
                return

    async def _dispatch(self, on_event: Callable[[Any], Awaitable[None]]) -> None:
        try:
            for event in self.conn.events():
                if isinstance(event, Goodbye):
                    self.close(f"relay said goodbye: {event.reason}")
                elif isinstance(event, Error) and event.fatal:
                    self.close(f"relay reported {event.code}: {event.message}")
                elif isinstance(event, PeerSilent):
                    self.close(f"relay silent for {event.silent_for:.0f} s")
                await on_event(event)
        except ProtocolError as error:
            self.close(f"relay broke the protocol: {error}")

    async def _timers(self) -> None:
        while True:
            deadline = self.conn.get_timer()
            if deadline is None:
                return
            await trio.sleep_until(deadline)
            now = trio.current_time()
            heartbeat = self.conn.handle_timer(now, wall_us())
            if heartbeat:
                self.outbox.send(Lane.CONTROL, [heartbeat], now)
            await self._dispatch(self._on_event)

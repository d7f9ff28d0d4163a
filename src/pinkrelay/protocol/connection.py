"""Sans-IO connections: bytes in, events out; events in, bytes out. No sockets.

There is one class per side of a session:

* ``ButtonConnection``: what a panic button runs;
* ``ConsoleConnection``: what a control-room client runs;
* ``RelayConnection``: the relay's end of either (its ``role`` says which).

The pattern is h11's: ``receive_data(bytes, now)`` then ``next_event()``
until it returns None; ``send(event) -> bytes`` to send. Time is always an
argument (``now``, seconds on any monotonic clock), like aioquic:
``get_timer()`` says when to call ``handle_timer(now)``, which returns a
heartbeat to send and reports a silent peer. So every timeout is testable
without sleeping, and the trio layer only moves bytes and sleeps.

A protocol error stops the connection: ``next_event()`` first returns every
event that came before the error, then raises it (every time). The caller
then sends ``error_frame(exc)`` if it can and closes the transport.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .._core import Flag, FrameDecoder, FrameType, Lane, Limits, Message, Reassembler, encode_frame, encode_media
from .._core.wire import TYPE_LANE
from ..errors import AuthenticationFailed, LimitExceeded, PinkRelayError, ProtocolError, StateError
from . import auth
from . import events as ev
from .messages import decode_body, encode_body
from .state import FROM_RELAY, READY_TRAFFIC, TO_RELAY, State, next_state


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolLimits:
    """Receive limits of one connection; exceeding one is a protocol error."""

    max_frame_bytes: int = Limits.MAX_FRAME_BYTES
    max_control_bytes: int = Limits.MAX_CONTROL_BYTES
    max_message_bytes: int = Limits.MAX_MESSAGE_BYTES
    max_chunks_per_message: int = Limits.MAX_CHUNKS_PER_MESSAGE
    max_msgpack_depth: int = Limits.MAX_MSGPACK_DEPTH
    max_tracks: int = Limits.MAX_TRACKS
    max_partial_tracks: int = 64

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_control_bytes", "max_message_bytes"):
            if getattr(self, name) < 256:
                raise ValueError(f"{name} must be at least 256 bytes")
        if not 1 <= self.max_tracks <= 64:
            raise ValueError(f"max_tracks {self.max_tracks} outside 1..64")


DEFAULT_LIMITS = ProtocolLimits()
_MEDIA = int(FrameType.MEDIA)
DEFAULT_HEARTBEAT_INTERVAL = 10.0
DEFAULT_SUPERVISION_WINDOW = 20.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: In ``_discarding``: the next chunk on the track, whatever its sequence, continues a
#: message already forgotten (media sequences are uint32, never negative).
_TAIL = -1


def frame_lane(frame_type: int) -> int:
    """The lane a control frame of ``frame_type`` travels in."""
    return TYPE_LANE[frame_type]


class Connection:
    """What every side shares: framing, state table, reassembly, timers."""

    #: Direction of the frames this side receives.
    incoming: ClassVar[str]
    outgoing: ClassVar[str]

    def __init__(
        self,
        *,
        role: str,
        limits: ProtocolLimits = DEFAULT_LIMITS,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        supervision_window: float = DEFAULT_SUPERVISION_WINDOW,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        now: float = 0.0,
    ) -> None:
        if role not in ev.ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ev.ROLES)}")
        self.role = role
        self.limits = limits
        self.state = State.START
        self.heartbeat_interval = heartbeat_interval
        self.supervision_window = supervision_window
        self.handshake_timeout = handshake_timeout
        self.handshake_deadline = now + handshake_timeout
        #: Payload bytes per media chunk this side sends (the relay's welcome sets it).
        self.chunk_size = Limits.CHUNK_SIZE
        self.last_received = now
        self.last_sent = now
        self._silence_reported = False
        self._decoder = FrameDecoder(limits.max_frame_bytes, limits.max_control_bytes)
        self._reassembler = Reassembler(
            limits.max_message_bytes, limits.max_chunks_per_message, limits.max_partial_tracks
        )
        #: A list, not a deque: an idle connection holds none, and an empty deque costs 600 bytes.
        self._events: list[ev.Event] = []
        #: track -> seq of a message being discarded chunk by chunk.
        self._discarding: dict[int, int] = {}
        self._media_in = FrameType.MEDIA in READY_TRAFFIC[(role, self.incoming)]
        #: When set, whole media messages go straight here instead of becoming
        #: Media events: a relay forwards them without an event per frame.
        #: While other events wait unread, media become events after them, so
        #: the sink never runs ahead of an event received before it.
        self.media_sink: Callable[[Message], None] | None = None
        self._error: PinkRelayError | None = None
        self._control_seq = 0
        #: track id -> its description, for tracks this side may send or receive.
        self.tracks: dict[int, ev.TrackDescription] = {}

    # -- receiving -------------------------------------------------------------

    @property
    def error(self) -> PinkRelayError | None:
        """The error that ended this connection, if one did."""
        return self._error

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def at_boundary(self) -> bool:
        """No frame half read and no message half reassembled: another reader may take over here."""
        return self._decoder.buffered == 0 and self._reassembler.partial_tracks == 0 and not self._discarding

    def receive_data(self, data: Any, now: float) -> None:
        """Take bytes from the transport; ``b""`` means the peer closed it."""
        if self._error is not None:
            return
        if not data:
            if self.state is not State.CLOSED:
                self.state = State.CLOSED
                self._events.append(ev.ConnectionClosed(reason="peer closed the connection"))
            return
        try:
            for frame in self._decoder.decode(data):
                # Only whole frames prove life: a peer trickling a partial
                # header must not keep a session open forever.
                self.last_received = now
                self._silence_reported = False
                self._handle_frame(frame)
            if self._decoder.error is not None:
                raise self._decoder.error
        except (ProtocolError, AuthenticationFailed) as error:
            self._fail(error)

    def next_event(self) -> ev.Event | None:
        """The next event, or None when more bytes (or a timer) are needed."""
        if self._events:
            return self._events.pop(0)
        if self._error is not None:
            raise self._error
        return None

    def events(self) -> Iterator[ev.Event]:
        """Every event available now (raises at the end if the connection failed)."""
        while True:
            event = self.next_event()
            if event is None:
                return
            yield event

    def _fail(self, error: PinkRelayError) -> None:
        self._error = error
        self.state = State.CLOSED

    def _handle_frame(self, frame: Any) -> None:
        if frame.type == _MEDIA and self.state is State.READY and self._media_in:
            # The per-frame path: media in READY, allowed by the table once for all.
            self._receive_media(frame)
            return
        if self.state is State.CLOSED:
            return
        new_state = next_state(self.state, self.role, self.incoming, frame.type)
        if new_state is None:
            raise StateError(
                f"frame type {FrameType(frame.type).name} not allowed from the peer in state "
                f"{self.state.value} of a {self.role} session; closing the connection"
            )
        if frame.type == FrameType.MEDIA:
            self._receive_media(frame)
            return
        event = decode_body(
            frame.type,
            frame.payload,
            max_bytes=self.limits.max_control_bytes,
            max_depth=self.limits.max_msgpack_depth,
        )
        self._on_received(event)
        self.state = new_state
        if isinstance(event, ev.Error) and event.fatal:
            self.state = State.CLOSED
        self._events.append(event)

    def _receive_media(self, frame: Any) -> None:
        track = self.tracks.get(frame.track)
        discarding = self._discarding.get(frame.track)
        if discarding is not None:
            # The rest of a message whose first chunks were discarded: never
            # let its tail pass for a whole message.
            if discarding == _TAIL:
                discarding = self._discarding[frame.track] = frame.seq
            if frame.seq == discarding:
                if frame.flags & Flag.END:
                    del self._discarding[frame.track]
                self._unknown_track(frame)
                return
            del self._discarding[frame.track]
        if track is None:
            self._unknown_track(frame)
            if not frame.flags & Flag.END:
                self._discarding[frame.track] = frame.seq
            return
        if frame.lane != track.lane:
            raise StateError(
                f"media for {track.kind} track {frame.track} arrived in lane {frame.lane}; "
                f"{track.kind} uses lane {track.lane}"
            )
        message = self._reassembler.add(frame)
        if message is None:
            return
        if self.media_sink is not None and not self._events:
            self.media_sink(message)
        else:
            # With events still waiting (a stream description read in the same
            # bytes, say), media waits behind them as events: whoever acts on
            # a description must see it before the media it describes.
            self._events.append(
                ev.Media(
                    track_id=message.track,
                    seq=message.seq,
                    timestamp=message.timestamp,
                    keyframe=message.keyframe,
                    message=message,
                    button=self._track_owner(message.track),
                )
            )

    def _unknown_track(self, frame: Any) -> None:
        raise StateError(
            f"media on track {frame.track}, which was never described; closing the connection"
        )

    def _track_owner(self, track_id: int) -> str:
        return ""

    def _on_received(self, event: ev.Event) -> None:
        """Subclass hook: check and remember what a received event implies."""

    # -- sending ---------------------------------------------------------------

    def send(self, event: ev.Event, now: float | None = None) -> bytes:
        """The wire bytes of a control event; raises StateError if not allowed now."""
        new_state = next_state(self.state, self.role, self.outgoing, event.frame_type)
        if new_state is None:
            raise StateError(
                f"cannot send {type(event).__name__} in state {self.state.value} of a "
                f"{self.role} session"
            )
        self._on_sent(event)
        self.state = new_state
        if isinstance(event, ev.Error) and event.fatal:
            self.state = State.CLOSED
        if now is not None:
            self.last_sent = now
        self._control_seq = (self._control_seq + 1) & 0xFFFFFFFF
        return encode_frame(
            event.frame_type, frame_lane(event.frame_type), 0, self._control_seq, 0, encode_body(event)
        )

    def _on_sent(self, event: ev.Event) -> None:
        """Subclass hook: check and remember what a sent event implies."""

    def _use_chunk_size(self, chunk_size: int) -> None:
        """Adopt the session's chunk size, before any media flows.

        A message of max_message_bytes must fit in max_chunks_per_message
        chunks of this size, so the chunk limit grows with small chunk sizes.
        """
        self.chunk_size = chunk_size
        limits = self.limits
        needed = -(-limits.max_message_bytes // chunk_size)
        self._reassembler = Reassembler(
            limits.max_message_bytes,
            max(limits.max_chunks_per_message, needed),
            limits.max_partial_tracks,
        )

    def send_media(
        self,
        track_id: int,
        seq: int,
        timestamp: int,
        payload: Any,
        keyframe: bool = False,
        now: float | None = None,
    ) -> list[bytes]:
        """The frames of one media message, chunked at ``chunk_size``."""
        if self.state is not State.READY or FrameType.MEDIA not in READY_TRAFFIC[(self.role, self.outgoing)]:
            raise StateError(f"cannot send media in state {self.state.value} of a {self.role} session")
        track = self.tracks.get(track_id)
        if track is None:
            raise StateError(f"track {track_id} was not described; send a StreamDescription first")
        if now is not None:
            self.last_sent = now
        return encode_media(track_id, track.lane, seq & 0xFFFFFFFF, timestamp, payload, keyframe, self.chunk_size)

    def error_frame(self, error: BaseException) -> bytes:
        """An ``error`` frame reporting ``error`` to the peer (sendable in any state)."""
        code = getattr(error, "code", "error")
        message = getattr(error, "public_reason", None) or str(error)
        self._control_seq = (self._control_seq + 1) & 0xFFFFFFFF
        self.state = State.CLOSED
        body = encode_body(ev.Error(code=code, message=message[: ev.MAX_TEXT_LENGTH], fatal=True))
        return encode_frame(FrameType.ERROR, Lane.CONTROL, 0, self._control_seq, 0, body)

    # -- timers ----------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called; None when closed."""
        if self.state is State.CLOSED:
            return None
        if self.state is not State.READY:
            return self.handshake_deadline
        deadlines = [self.last_sent + self.heartbeat_interval]
        if not self._silence_reported:
            deadlines.append(self.last_received + self.supervision_window)
        return min(deadlines)

    def handle_timer(self, now: float, wall_us: int = 0) -> bytes:
        """Act on the clock: returns a heartbeat to send (or b""), may queue PeerSilent.

        Before READY, passing the handshake deadline fails the connection, so a
        peer that connects and says nothing (or trickles garbage) is dropped.
        """
        if self.state is State.CLOSED:
            return b""
        if self.state is not State.READY:
            if now >= self.handshake_deadline:
                self._fail(
                    StateError(
                        f"handshake not completed within {self.handshake_timeout:g} s; "
                        "closing the connection",
                        code="timeout",
                    )
                )
            return b""
        # Compare with the very sums get_timer() returns: ``now - last >= interval``
        # can be false at ``now == last + interval`` (float rounding), and a caller
        # that sleeps until get_timer() would then spin without anything happening.
        if not self._silence_reported and now >= self.last_received + self.supervision_window:
            self._silence_reported = True
            self._events.append(ev.PeerSilent(silent_for=now - self.last_received))
        if now >= self.last_sent + self.heartbeat_interval:
            return self.send(ev.Heartbeat(sent_at=max(0, wall_us)), now)
        return b""


class _ClientConnection(Connection):
    """What buttons and consoles share: hello, answering the challenge, welcome."""

    incoming = FROM_RELAY
    outgoing = TO_RELAY

    def __init__(
        self,
        *,
        role: str,
        identity: str,
        secret: bytes,
        counter: int | None = None,
        software: str = "pinkrelay",
        talkback: bool = False,
        protocol: int = 1,
        limits: ProtocolLimits = DEFAULT_LIMITS,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        now: float = 0.0,
    ) -> None:
        super().__init__(role=role, limits=limits, handshake_timeout=handshake_timeout, now=now)
        #: The highest protocol version this client speaks, said in its hello: 2 takes track ids above 65535.
        self.protocol = protocol
        ev._check_id("identity", identity)
        if not secret:
            raise ValueError(f"{role} {identity!r}: the secret is empty")
        self.identity = identity
        self._secret = secret
        self.counter = counter if counter is not None else auth.default_counter()
        self.software = software
        #: Buttons: say in the hello that this device plays talk-back (§5.19).
        self.talkback = talkback
        self.welcome: ev.Welcome | None = None
        #: Consoles: the last alert cursor seen; the relay replays what came after it.
        self.resume_cursor = 0
        self._challenge: ev.Challenge | None = None

    def hello(self, now: float | None = None) -> bytes:
        """The first frame of the session."""
        return self.send(
            ev.Hello(
                role=self.role,
                identity=self.identity,
                counter=self.counter,
                software=self.software,
                cursor=self.resume_cursor,
                talkback=self.talkback,
                protocol=self.protocol,
            ),
            now,
        )

    def authenticate(self, now: float | None = None) -> bytes:
        """Answer the relay's challenge with the proof of our secret."""
        if self._challenge is None:
            raise StateError("no challenge received yet; call after the Challenge event")
        challenge = self._challenge
        if challenge.salt:
            n, r, p = auth.parse_kdf(challenge.kdf)
            client_key, stored_key = auth.scram_keys(self._secret, challenge.salt, n, r, p)
            context = auth.proof_context(challenge.nonce, self.role, self.identity, self.counter)
            proof = auth.scram_proof(client_key, stored_key, context)
        else:
            proof = auth.compute_proof(self._secret, challenge.nonce, self.role, self.identity, self.counter)
        return self.send(ev.Authenticate(proof=proof), now)

    def _on_received(self, event: ev.Event) -> None:
        if isinstance(event, ev.Challenge):
            self._challenge = event
        elif isinstance(event, ev.Welcome):
            self.welcome = event
            self.heartbeat_interval = event.heartbeat_interval
            self.supervision_window = event.supervision_window
            self._use_chunk_size(event.chunk_size)


class ButtonConnection(_ClientConnection):
    """The button's end: authenticate, describe tracks, stream, raise alerts."""

    def __init__(self, button_id: str, secret: bytes, **kwargs: Any) -> None:
        super().__init__(role="button", identity=button_id, secret=secret, **kwargs)

    @property
    def track_ids(self) -> tuple[int, ...]:
        """The relay-wide track ids this button must use (from the welcome)."""
        return self.welcome.track_ids if self.welcome else ()

    def _on_sent(self, event: ev.Event) -> None:
        if isinstance(event, ev.StreamDescription):
            allowed = set(self.track_ids)
            for track in event.tracks:
                if track.track_id not in allowed:
                    raise StateError(
                        f"track id {track.track_id} was not assigned by the relay; "
                        f"use one of {sorted(allowed)}"
                    )
            self.tracks = {track.track_id: track for track in event.tracks}


class ConsoleConnection(_ClientConnection):
    """The control room's end: receive alerts, subscribe to streams."""

    def __init__(self, operator: str, token: bytes, **kwargs: Any) -> None:
        super().__init__(role="console", identity=operator, secret=token, **kwargs)
        self._owner: dict[int, str] = {}
        self.ignored_media = 0

    def _on_received(self, event: ev.Event) -> None:
        super()._on_received(event)
        if isinstance(event, (ev.Subscribed, ev.StreamDescription)) and event.button:
            self._forget(event.button)
            for track in event.tracks:
                self.tracks[track.track_id] = track
                self._owner[track.track_id] = event.button
        elif isinstance(event, ev.Unsubscribe):
            self._forget(event.button)

    def _on_sent(self, event: ev.Event) -> None:
        if isinstance(event, ev.Unsubscribe):
            self._forget(event.button)

    def _forget(self, button: str) -> None:
        reassembler = self._reassembler
        for track_id in [t for t, owner in self._owner.items() if owner == button]:
            del self._owner[track_id]
            self.tracks.pop(track_id, None)
            partial = reassembler.partial_tracks
            reassembler.discard(track_id)
            if reassembler.partial_tracks < partial:
                # The relay may put this description between two chunks of a
                # message (§4.1). Its remaining chunks carry no start flag:
                # taken for a new message once the track is described again,
                # they would reach the decoder as a truncated frame. Drop them.
                self._discarding[track_id] = _TAIL

    def _unknown_track(self, frame: Any) -> None:
        # Frames already in flight when a subscription ended: not an error.
        self.ignored_media += 1

    def _track_owner(self, track_id: int) -> str:
        return self._owner.get(track_id, "")


class RelayConnection(Connection):
    """The relay's end of a button or console session.

    The relay drives the handshake: on ``Hello`` it calls ``challenge()``; on
    ``Authenticate`` it looks up the secret and calls ``verify()``, then
    ``welcome()`` or ``error_frame()``.
    """

    incoming = TO_RELAY
    outgoing = FROM_RELAY

    def __init__(self, *, role: str, **kwargs: Any) -> None:
        super().__init__(role=role, **kwargs)
        self.hello: ev.Hello | None = None
        self._nonce: bytes | None = None
        self._proof: bytes | None = None
        self.authenticated = False
        self.assigned_tracks: tuple[int, ...] = ()
        self.discarded_media = 0

    @property
    def identity(self) -> str:
        return self.hello.identity if self.hello else ""

    def _on_received(self, event: ev.Event) -> None:
        if isinstance(event, ev.Hello):
            if event.role != self.role:
                raise StateError(
                    f"a {event.role} said hello on the {self.role} listener; "
                    f"connect to the {event.role} port instead",
                    code="wrong-listener",
                )
            self.hello = event
        elif isinstance(event, ev.Authenticate):
            self._proof = event.proof
        elif isinstance(event, ev.StreamDescription):
            self._accept_description(event)

    def _unknown_track(self, frame: Any) -> None:
        if frame.track in self.assigned_tracks:
            # Assigned but not (or no longer) described: the button's scheduler
            # may put a media chunk ahead of its stream description, or a
            # removed track's last chunks may still be in flight. Discard.
            self.discarded_media += 1
            return
        raise StateError(
            f"media on track {frame.track}, which the relay did not assign to this button "
            f"(assigned: {list(self.assigned_tracks)}); closing the connection"
        )

    def _accept_description(self, description: ev.StreamDescription) -> None:
        if len(description.tracks) > self.limits.max_tracks:
            raise LimitExceeded(
                f"button {self.identity!r} described {len(description.tracks)} tracks; "
                f"max_tracks is {self.limits.max_tracks}"
            )
        for track in description.tracks:
            if track.track_id not in self.assigned_tracks:
                raise StateError(
                    f"button {self.identity!r} described track {track.track_id}, which the relay "
                    f"did not assign (assigned: {list(self.assigned_tracks)})"
                )
        for track_id in set(self.tracks) - {t.track_id for t in description.tracks}:
            self._reassembler.discard(track_id)
        self.tracks = {track.track_id: track for track in description.tracks}

    def challenge(
        self,
        now: float | None = None,
        nonce: bytes | None = None,
        relay: str = "",
        *,
        salt: bytes = b"",
        kdf: str = "",
    ) -> bytes:
        """Send the nonce; ``salt`` and ``kdf`` ask an operator for a SCRAM proof."""
        nonce = nonce if nonce is not None else auth.make_nonce()
        data = self.send(ev.Challenge(nonce=nonce, relay=relay, salt=salt, kdf=kdf), now)
        # Only once sent: a refused call (wrong state) must not swap the nonce
        # the client is answering.
        self._nonce = nonce
        return data

    def verify(self, secret: bytes, last_counter: int = 0, *, stored_key: bytes | None = None) -> None:
        """Check the client's proof; raises AuthenticationFailed and closes on failure.

        ``secret`` is the shared HMAC key (buttons, console tokens); for an
        operator account pass its ``stored_key`` instead (SCRAM proof).
        """
        if self.hello is None or self._nonce is None or self._proof is None:
            raise StateError("verify() before the client answered the challenge")
        hello = self.hello
        try:
            if stored_key is not None:
                context = auth.proof_context(self._nonce, self.role, hello.identity, hello.counter)
                if not auth.scram_verify(stored_key, context, self._proof):
                    raise AuthenticationFailed(f"{self.role} {hello.identity!r}: wrong proof (secret does not match)")
                auth.check_counter(self.role, hello.identity, hello.counter, last_counter)
            else:
                auth.verify_proof(
                    secret, self._nonce, self.role, hello.identity, hello.counter, self._proof, last_counter
                )
        except AuthenticationFailed as error:
            self._fail(error)
            raise
        self.authenticated = True

    def welcome(
        self,
        *,
        session: str,
        track_ids: Sequence[int] = (),
        chunk_size: int = Limits.CHUNK_SIZE,
        protocol: int = 1,
        now: float | None = None,
    ) -> bytes:
        if not self.authenticated:
            raise StateError("welcome() before verify() succeeded")
        self.assigned_tracks = tuple(track_ids)
        self._use_chunk_size(chunk_size)
        return self.send(
            ev.Welcome(
                session=session,
                heartbeat_interval=self.heartbeat_interval,
                supervision_window=self.supervision_window,
                chunk_size=chunk_size,
                max_frame_bytes=self.limits.max_frame_bytes,
                track_ids=self.assigned_tracks,
                protocol=protocol,
            ),
            now,
        )

    def _on_sent(self, event: ev.Event) -> None:
        if isinstance(event, ev.Welcome) and not self.authenticated:
            # send(Welcome(...)) must not be a way around verify().
            raise StateError("cannot send Welcome before verify() succeeded")
        if isinstance(event, (ev.Subscribed, ev.StreamDescription)) and self.role == "console":
            for track in event.tracks:
                self.tracks[track.track_id] = track
        elif isinstance(event, ev.TalkBack) and not (self.hello is not None and self.hello.talkback):
            # A button that did not offer talk-back would fail on the unknown frame type.
            raise StateError(
                f"button {self.identity!r} did not say talkback in its hello; it cannot play talk-back"
            )

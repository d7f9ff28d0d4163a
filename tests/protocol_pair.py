"""In-memory client ↔ relay pairs for the sans-IO protocol tests.

In the style of h11's ``tests/helpers.py::ConnectionPair`` and aioquic's
``client_and_server()``: a client connection (button or console) and the
relay's end of it live in one process and bytes are pumped between them by
hand. Time is an argument (``now``), so timers are tested without sleeping.

Test modules import this one as ``protocol_pair`` (pytest's default
``prepend`` import mode puts ``tests/`` on ``sys.path``) or, should
``tests/`` ever become a package, as ``.protocol_pair``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pinkrelay._core import HEADER_SIZE, Flag, FrameType, Lane, encode_frame
from pinkrelay.protocol import (
    Authenticate,
    ButtonConnection,
    Challenge,
    ConsoleConnection,
    Event,
    Hello,
    Media,
    RelayConnection,
    State,
    TrackDescription,
    Welcome,
    encode_body,
    frame_lane,
)

BUTTON_ID = "btn-0042"
BUTTON_SECRET = b"button-secret-not-for-production"
OPERATOR = "op-ana"
CONSOLE_TOKEN = b"console-token-not-for-production"
#: A fixed nonce keeps transcripts reproducible (the relay makes a random one by default).
NONCE = bytes(range(32))
SESSION = "session-1"
TRACK_IDS = (101, 102)
CHUNK_SIZE = 256  # the smallest a welcome allows, so media is chunked early

VIDEO = TrackDescription(
    track_id=101,
    kind="video",
    codec="h264",
    width=640,
    height=360,
    fps=15.0,
    bitrate=500_000,
    extradata=b"\x00\x00\x00\x01\x67\x42\xc0\x1e\x00\x00\x00\x01\x68\xce\x3c\x80",
)
AUDIO = TrackDescription(
    track_id=102, kind="audio", codec="opus", sample_rate=48000, channels=1, bitrate=24_000
)


@dataclass
class Transcript:
    """The bytes each handshake step put on the wire (for replay tests)."""

    hello: bytes = b""
    challenge: bytes = b""
    auth: bytes = b""
    welcome: bytes = b""


@dataclass
class Pair:
    """A client connection, the relay's end of it, and the wire bytes between them."""

    client: ButtonConnection | ConsoleConnection
    relay: RelayConnection
    now: float = 0.0
    transcript: Transcript = field(default_factory=Transcript)

    def to_relay(self, data: bytes | Iterable[bytes], now: float | None = None) -> list[Event]:
        """Deliver client bytes to the relay; return every event it produced."""
        return deliver(self.relay, data, self.now if now is None else now)

    def to_client(self, data: bytes | Iterable[bytes], now: float | None = None) -> list[Event]:
        """Deliver relay bytes to the client; return every event it produced."""
        return deliver(self.client, data, self.now if now is None else now)

    def client_sends(self, event: Event, now: float | None = None) -> list[Event]:
        now = self.now if now is None else now
        return self.to_relay(self.client.send(event, now), now)

    def relay_sends(self, event: Event, now: float | None = None) -> list[Event]:
        now = self.now if now is None else now
        return self.to_client(self.relay.send(event, now), now)


def deliver(conn: Any, data: bytes | Iterable[bytes], now: float = 0.0) -> list[Event]:
    """Feed ``data`` (one buffer or several) to ``conn``; return the events it yields.

    Raises whatever ``next_event`` raises once the events before an error are out.
    """
    buffers = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    for buffer in buffers:
        conn.receive_data(buffer, now)
    return list(conn.events())


def media_fields(event: Media) -> tuple[int, int, int, bool, bytes]:
    """What a Media event carries, for comparisons (Media holds a core Message)."""
    return (event.track_id, event.seq, event.timestamp, event.keyframe, event.data)


def comparable(event: Event) -> Any:
    """An event as a value that compares by content (Media included)."""
    if isinstance(event, Media):
        return ("media", *media_fields(event))
    return event


def control_frame(event: Event, *, seq: int = 1) -> bytes:
    """The wire bytes of ``event`` built without any connection's state checks.

    Used to make a peer send what its own connection object would refuse to.
    """
    frame_type = event.frame_type
    return encode_frame(frame_type, frame_lane(frame_type), 0, seq, 0, encode_body(event))


def media_frame(
    track: int,
    payload: bytes = b"\x00" * 8,
    *,
    lane: int = Lane.VIDEO,
    seq: int = 0,
    end: bool = True,
) -> bytes:
    """One raw MEDIA frame (the END flag set unless ``end`` is false)."""
    return encode_frame(FrameType.MEDIA, lane, track, seq, 0, payload, Flag.END if end else 0)


def frame_payloads(frames: Sequence[bytes]) -> list[bytes]:
    return [bytes(frame[HEADER_SIZE:]) for frame in frames]


def handshake(
    client: ButtonConnection | ConsoleConnection,
    relay: RelayConnection,
    *,
    secret: bytes,
    last_counter: int = 0,
    track_ids: Sequence[int] = (),
    chunk_size: int = CHUNK_SIZE,
    session: str = SESSION,
    nonce: bytes = NONCE,
    now: float = 0.0,
) -> Pair:
    """Run hello → challenge → auth → welcome; return the pair, both READY.

    ``secret`` is what the relay looked up for the client's identity. Every
    step's event is checked on the receiving side, so a broken handshake
    fails here with the step that broke.
    """
    pair = Pair(client=client, relay=relay, now=now)
    t = pair.transcript

    t.hello = client.hello(now)
    [hello] = pair.to_relay(t.hello)
    assert isinstance(hello, Hello), hello
    assert (hello.role, hello.identity) == (client.role, client.identity)
    assert hello.counter == client.counter

    t.challenge = relay.challenge(now, nonce=nonce)
    [challenge] = pair.to_client(t.challenge)
    assert challenge == Challenge(nonce=nonce), challenge

    t.auth = client.authenticate(now)
    [authenticate] = pair.to_relay(t.auth)
    assert isinstance(authenticate, Authenticate), authenticate

    relay.verify(secret, last_counter)
    t.welcome = relay.welcome(session=session, track_ids=track_ids, chunk_size=chunk_size, now=now)
    [welcome] = pair.to_client(t.welcome)
    assert isinstance(welcome, Welcome), welcome
    assert welcome.track_ids == tuple(track_ids)

    assert client.state is State.READY and relay.state is State.READY
    return pair


def button_pair(
    *,
    track_ids: Sequence[int] = TRACK_IDS,
    chunk_size: int = CHUNK_SIZE,
    counter: int = 1000,
    now: float = 0.0,
    relay_kwargs: dict[str, Any] | None = None,
    **client_kwargs: Any,
) -> Pair:
    """A button and the relay's end of it, after a successful handshake."""
    client = ButtonConnection(BUTTON_ID, BUTTON_SECRET, counter=counter, now=now, **client_kwargs)
    relay = RelayConnection(role="button", now=now, **(relay_kwargs or {}))
    return handshake(
        client, relay, secret=BUTTON_SECRET, track_ids=track_ids, chunk_size=chunk_size, now=now
    )


def console_pair(
    *,
    chunk_size: int = CHUNK_SIZE,
    counter: int = 2000,
    now: float = 0.0,
    relay_kwargs: dict[str, Any] | None = None,
    **client_kwargs: Any,
) -> Pair:
    """A console and the relay's end of it, after a successful handshake."""
    client = ConsoleConnection(OPERATOR, CONSOLE_TOKEN, counter=counter, now=now, **client_kwargs)
    relay = RelayConnection(role="console", now=now, **(relay_kwargs or {}))
    return handshake(client, relay, secret=CONSOLE_TOKEN, chunk_size=chunk_size, now=now)

"""Events: what a connection reports it received and what a caller asks it to send.

Each event is a frozen, slotted, keyword-only dataclass validated on
construction, so an invalid event cannot exist, whether it came from a peer
or from our own code. Every control event maps to one frame type and to a
msgpack body whose keys are the field names (``docs/protocol.md``).
Media is not a control event: it travels as raw bytes (``Media``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .._core import FrameType, Message
from .._core.wire import MAX_TRACK_ID_V2

ROLES = ("button", "console")
ALERT_KINDS = ("panic", "offline", "tamper", "test", "mass_outage")
TRACK_KINDS = ("video", "audio")
CODECS = {"video": ("h264",), "audio": ("opus", "aac")}
BUTTON_STATES = ("online", "offline")
MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 1024
#: Bytes of one talk-back Opus packet: 120 ms of Opus is at most 6 × 1275 bytes, rounded up.
MAX_TALKBACK_PACKET = 8000


def _check_id(name: str, value: str, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} {value[:20]!r}... is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{name} {value!r} contains control characters")


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT_LENGTH:
        raise ValueError(f"{name} is {len(value)} characters; the limit is {MAX_TEXT_LENGTH}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(choices)}")


def _check_bool(name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, not {type(value).__name__}")


def _check_number(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")


def _check_site(value: object) -> None:
    if value is not None and not isinstance(value, Site):
        raise TypeError(f"site must be a Site or None, not {type(value).__name__}")


def _check_tracks(tracks: tuple[object, ...]) -> None:
    seen = set()
    for track in tracks:
        if not isinstance(track, TrackDescription):
            raise TypeError("tracks must be TrackDescription objects")
        if track.track_id in seen:
            raise ValueError(f"track id {track.track_id} described twice")
        seen.add(track.track_id)


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} {value} is outside {low}..{high}")


class Event:
    """Base of every event. ``frame_type`` is the frame that carries it."""

    __slots__ = ()
    frame_type: ClassVar[int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(Event):
    """A client opens a session: who it claims to be, and a fresh counter."""

    frame_type: ClassVar[int] = FrameType.HELLO
    omit_at_default: ClassVar[tuple[str, ...]] = ("talkback",)
    role: str
    identity: str
    counter: int
    software: str = ""
    protocol: int = 1
    #: Consoles: the last alert cursor seen, so the relay sends what was missed.
    cursor: int = 0
    #: Buttons: this device can play an operator's voice (``TalkBack``); the relay
    #: sends talk-back only to a button that said so, since a v1 button would
    #: refuse the frame type it does not know.
    talkback: bool = False

    def __post_init__(self) -> None:
        _check_choice("role", self.role, ROLES)
        _check_bool("talkback", self.talkback)
        _check_id("identity", self.identity)
        _check_int("counter", self.counter, 1, 2**64 - 1)
        _check_text("software", self.software)
        _check_int("protocol", self.protocol, 1, 255)
        _check_int("cursor", self.cursor, 0, 2**63 - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge(Event):
    """The relay's nonce; the client proves its secret over it."""

    frame_type: ClassVar[int] = FrameType.CHALLENGE
    nonce: bytes
    relay: str = ""
    #: Operator accounts: the account's salt and key derivation (``scrypt:N:R:P``);
    #: empty for buttons and console tokens (plain HMAC with the shared secret).
    salt: bytes = b""
    kdf: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, bytes) or not 16 <= len(self.nonce) <= 64:
            raise ValueError("nonce must be 16 to 64 bytes")
        _check_id("relay", self.relay, allow_empty=True)
        if not isinstance(self.salt, bytes) or len(self.salt) > 64:
            raise ValueError("salt must be at most 64 bytes")
        _check_id("kdf", self.kdf, allow_empty=True)
        if bool(self.salt) != bool(self.kdf):
            raise ValueError("salt and kdf come together or not at all")


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticate(Event):
    """HMAC-SHA256 proof over the challenge (see ``auth.py``)."""

    frame_type: ClassVar[int] = FrameType.AUTH
    proof: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.proof, bytes) or len(self.proof) != 32:
            raise ValueError("proof must be 32 bytes (HMAC-SHA256)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome(Event):
    """The relay accepted the client. Values the client must follow from now on.

    ``track_ids`` are the relay-wide track numbers a button must use for its
    media, so the relay can forward the button's frames to consoles as they
    are, without rebuilding a header.
    """

    frame_type: ClassVar[int] = FrameType.WELCOME
    omit_at_default: ClassVar[tuple[str, ...]] = ("protocol",)
    session: str
    heartbeat_interval: float
    supervision_window: float
    chunk_size: int
    max_frame_bytes: int
    track_ids: tuple[int, ...] = ()
    #: The protocol version of this session: 2 when the client offered it (track ids may exceed 65535).
    protocol: int = 1

    def __post_init__(self) -> None:
        _check_id("session", self.session)
        _check_number("heartbeat_interval", self.heartbeat_interval)
        _check_number("supervision_window", self.supervision_window)
        if not 0.1 <= self.heartbeat_interval <= 3600:
            raise ValueError(f"heartbeat_interval {self.heartbeat_interval} outside 0.1..3600 s")
        if not self.heartbeat_interval <= self.supervision_window <= 86400:
            raise ValueError("supervision_window must be at least heartbeat_interval")
        _check_int("chunk_size", self.chunk_size, 256, self.max_frame_bytes)
        _check_int("max_frame_bytes", self.max_frame_bytes, 256, 2**31)
        object.__setattr__(self, "track_ids", tuple(self.track_ids))
        _check_int("protocol", self.protocol, 1, 255)
        for track in self.track_ids:
            _check_int("track id", track, 1, MAX_TRACK_ID_V2)


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Event):
    """The sender reports a problem; ``fatal`` means it closes the connection next."""

    frame_type: ClassVar[int] = FrameType.ERROR
    code: str
    message: str
    fatal: bool = True

    def __post_init__(self) -> None:
        _check_id("code", self.code)
        _check_text("message", self.message)
        _check_bool("fatal", self.fatal)


@dataclass(frozen=True, slots=True, kw_only=True)
class Goodbye(Event):
    """The sender closes the session on purpose (shutdown, logout)."""

    frame_type: ClassVar[int] = FrameType.GOODBYE
    reason: str = ""

    def __post_init__(self) -> None:
        _check_text("reason", self.reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Event):
    """Proof of life; a button may report its health with it."""

    frame_type: ClassVar[int] = FrameType.HEARTBEAT
    sent_at: int = 0
    battery: int = -1
    tamper: bool = False

    def __post_init__(self) -> None:
        _check_int("sent_at", self.sent_at, 0, 2**63 - 1)
        _check_int("battery", self.battery, -1, 100)
        _check_bool("tamper", self.tamper)


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """Where a button is, so an operator can send a team without a lookup."""

    name: str = ""
    kind: str = ""
    address: str = ""
    district: str = ""
    latitude: float = 0.0
    longitude: float = 0.0

    def __post_init__(self) -> None:
        for name in ("name", "kind", "address", "district"):
            _check_text(name, getattr(self, name))
        _check_number("latitude", self.latitude)
        _check_number("longitude", self.longitude)
        if not -90.0 <= self.latitude <= 90.0:
            raise ValueError(f"latitude {self.latitude} outside -90..90")
        if not -180.0 <= self.longitude <= 180.0:
            raise ValueError(f"longitude {self.longitude} outside -180..180")


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert(Event):
    """A press (or a relay-raised alert such as ``offline``).

    The button makes ``alert_id`` (a UUIDv7 string) and keeps it across
    retries, so the relay records each press once however often it is sent.
    ``pressed_at`` is the button's clock in µs since the UNIX epoch. The relay
    fills ``button``, ``site``, ``state``, ``level`` and ``cursor`` when it
    passes the alert on to consoles.
    """

    frame_type: ClassVar[int] = FrameType.ALERT
    alert_id: str
    pressed_at: int
    kind: str = "panic"
    attempt: int = 1
    button: str = ""
    site: Site | None = None
    state: str = "raised"
    level: int = 0
    cursor: int = 0
    received_at: int = 0
    #: For a press merged into an open alert of the same button: that alert's id.
    duplicate_of: str = ""

    def __post_init__(self) -> None:
        _check_id("alert_id", self.alert_id)
        _check_id("duplicate_of", self.duplicate_of, allow_empty=True)
        _check_int("pressed_at", self.pressed_at, 0, 2**63 - 1)
        _check_choice("kind", self.kind, ALERT_KINDS)
        _check_int("attempt", self.attempt, 1, 2**31)
        _check_id("button", self.button, allow_empty=True)
        _check_site(self.site)
        _check_id("state", self.state)
        _check_int("level", self.level, 0, 16)
        _check_int("cursor", self.cursor, 0, 2**63 - 1)
        _check_int("received_at", self.received_at, 0, 2**63 - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertAck(Event):
    """The relay stored the alert durably; the button may stop retrying."""

    frame_type: ClassVar[int] = FrameType.ALERT_ACK
    alert_id: str
    duplicate: bool = False

    def __post_init__(self) -> None:
        _check_id("alert_id", self.alert_id)
        _check_bool("duplicate", self.duplicate)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertUpdate(Event):
    """A lifecycle step: a console asks for it, the relay broadcasts it once recorded."""

    frame_type: ClassVar[int] = FrameType.ALERT_UPDATE
    omit_at_default: ClassVar[tuple[str, ...]] = ("outcome", "category")
    alert_id: str
    state: str
    operator: str = ""
    note: str = ""
    unit: str = ""
    at: int = 0
    level: int = 0
    cursor: int = 0
    outcome: str = ""
    category: str = ""

    def __post_init__(self) -> None:
        _check_id("alert_id", self.alert_id)
        _check_id("state", self.state)
        _check_id("outcome", self.outcome, allow_empty=True)
        _check_id("category", self.category, allow_empty=True)
        _check_id("operator", self.operator, allow_empty=True)
        _check_text("note", self.note)
        _check_id("unit", self.unit, allow_empty=True)
        _check_int("at", self.at, 0, 2**63 - 1)
        _check_int("level", self.level, 0, 16)
        _check_int("cursor", self.cursor, 0, 2**63 - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ButtonState(Event):
    """A button came online or went silent past its supervision window."""

    frame_type: ClassVar[int] = FrameType.BUTTON_STATE
    button: str
    state: str
    at: int = 0
    site: Site | None = None

    def __post_init__(self) -> None:
        _check_id("button", self.button)
        _check_choice("state", self.state, BUTTON_STATES)
        _check_int("at", self.at, 0, 2**63 - 1)
        _check_site(self.site)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackDescription:
    """One track of a button's stream and what a decoder needs to open it.

    ``extradata``: H.264 SPS and PPS as Annex B NAL units; Opus: the OpusHead;
    AAC: the AudioSpecificConfig.
    """

    track_id: int
    kind: str
    codec: str
    width: int = 0
    height: int = 0
    fps: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    bitrate: int = 0
    extradata: bytes = b""

    def __post_init__(self) -> None:
        _check_int("track_id", self.track_id, 1, MAX_TRACK_ID_V2)
        _check_choice("kind", self.kind, TRACK_KINDS)
        _check_choice("codec", self.codec, CODECS[self.kind])
        _check_int("width", self.width, 0, 16384)
        _check_int("height", self.height, 0, 16384)
        _check_number("fps", self.fps)
        _check_int("sample_rate", self.sample_rate, 0, 384000)
        _check_int("channels", self.channels, 0, 16)
        _check_int("bitrate", self.bitrate, 0, 2**31)
        if not isinstance(self.extradata, bytes) or len(self.extradata) > 4096:
            raise ValueError("extradata must be at most 4096 bytes")

    @property
    def lane(self) -> int:
        return 3 if self.kind == "video" else 2


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamDescription(Event):
    """The tracks a button sends (button → relay) or a console receives (relay → console)."""

    frame_type: ClassVar[int] = FrameType.STREAM_DESCRIPTION
    tracks: tuple[TrackDescription, ...]
    button: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tracks", tuple(self.tracks))
        _check_id("button", self.button, allow_empty=True)
        _check_tracks(self.tracks)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe(Event):
    """A console asks for a button's live stream."""

    frame_type: ClassVar[int] = FrameType.SUBSCRIBE
    button: str

    def __post_init__(self) -> None:
        _check_id("button", self.button)


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsubscribe(Event):
    """A console stops watching (or the relay ends a subscription)."""

    frame_type: ClassVar[int] = FrameType.UNSUBSCRIBE
    button: str
    reason: str = ""

    def __post_init__(self) -> None:
        _check_id("button", self.button)
        _check_text("reason", self.reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyframeRequest(Event):
    """Ask for a keyframe soon (console → relay → button)."""

    frame_type: ClassVar[int] = FrameType.KEYFRAME_REQUEST
    button: str = ""
    track_id: int = 0

    def __post_init__(self) -> None:
        _check_id("button", self.button, allow_empty=True)
        _check_int("track_id", self.track_id, 0, MAX_TRACK_ID_V2)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribed(Event):
    """The relay confirms a subscription and describes what will arrive."""

    frame_type: ClassVar[int] = FrameType.SUBSCRIBED
    button: str
    tracks: tuple[TrackDescription, ...] = ()
    #: Cached video frames (since the last keyframe) that follow at once: decode
    #: them without presenting them, and the next frame is live.
    catchup_frames: int = 0

    def __post_init__(self) -> None:
        _check_id("button", self.button)
        object.__setattr__(self, "tracks", tuple(self.tracks))
        _check_tracks(self.tracks)
        _check_int("catchup_frames", self.catchup_frames, 0, 100000)


@dataclass(frozen=True, slots=True, kw_only=True)
class TalkBack(Event):
    """One packet of an operator's voice, relay → button, in a talk-back session (§5.19).

    A talk-back session is one press-and-hold of the operator: messages with
    the same ``talk_id``, ``seq`` 0, 1, 2 … The first carries who speaks and
    the alert answered; the last has ``end`` set (its packet may be empty).
    ``packet`` is one raw Opus packet (RFC 6716), 48 kHz; ``captured_at`` is
    when the operator's microphone captured its first sample, µs since the
    UNIX epoch, so a button can measure mouth-to-speaker latency.
    """

    frame_type: ClassVar[int] = FrameType.TALKBACK
    omit_at_default: ClassVar[tuple[str, ...]] = ("end", "operator", "alert_id")
    talk_id: str
    seq: int
    captured_at: int = 0
    packet: bytes = b""
    end: bool = False
    operator: str = ""
    alert_id: str = ""

    def __post_init__(self) -> None:
        _check_id("talk_id", self.talk_id)
        _check_int("seq", self.seq, 0, 0xFFFFFFFF)
        _check_int("captured_at", self.captured_at, 0, 2**63 - 1)
        if not isinstance(self.packet, bytes):
            raise TypeError(f"packet must be bytes, not {type(self.packet).__name__}")
        if len(self.packet) > MAX_TALKBACK_PACKET:
            raise ValueError(f"talk-back packet of {len(self.packet)} bytes; the limit is {MAX_TALKBACK_PACKET} "
                             "(one Opus packet of at most 120 ms)")
        _check_bool("end", self.end)
        _check_id("operator", self.operator, allow_empty=True)
        _check_id("alert_id", self.alert_id, allow_empty=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Media(Event):
    """One whole media message (an encoded video or audio frame) received.

    ``message`` keeps the frames as they arrived so a relay can forward them
    without copying; ``data`` joins the payload when the bytes are needed.
    ``timestamp`` is the capture time in µs since the UNIX epoch (sender's clock).
    """

    frame_type: ClassVar[int] = FrameType.MEDIA
    track_id: int
    seq: int
    timestamp: int
    keyframe: bool
    message: Message = field(repr=False)
    button: str = ""

    @property
    def data(self) -> bytes:
        return self.message.payload()

    @property
    def lane(self) -> int:
        return self.message.lane


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    """The byte stream ended (the peer closed it, or it was lost)."""

    frame_type: ClassVar[int] = 0
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSilent(Event):
    """Nothing arrived within the supervision window (raised by ``handle_timer``)."""

    frame_type: ClassVar[int] = 0
    silent_for: float


CONTROL_EVENTS: dict[int, type[Event]] = {
    cls.frame_type: cls
    for cls in (
        Hello,
        Challenge,
        Authenticate,
        Welcome,
        Error,
        Goodbye,
        Heartbeat,
        Alert,
        AlertAck,
        AlertUpdate,
        ButtonState,
        StreamDescription,
        Subscribe,
        Unsubscribe,
        KeyframeRequest,
        Subscribed,
        TalkBack,
    )
}


"""Property tests of the sans-IO protocol: streams split anywhere, bodies, hostile input."""

from __future__ import annotations

import dataclasses
import random

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pinkrelay._core import MAGIC, VERSION, FrameType, Lane, Limits, encode_frame
from pinkrelay._core.wire import HEADER
from pinkrelay.errors import (
    FrameError,
    LimitExceeded,
    MessageError,
    ProtocolError,
    StateError,
)
from pinkrelay.protocol import (
    Alert,
    AlertAck,
    AlertUpdate,
    Authenticate,
    ButtonState,
    Challenge,
    Error,
    Event,
    Goodbye,
    Heartbeat,
    Hello,
    KeyframeRequest,
    Media,
    Site,
    StreamDescription,
    Subscribe,
    Subscribed,
    TalkBack,
    TrackDescription,
    Unsubscribe,
    Welcome,
    decode_body,
    encode_body,
)
from pinkrelay.protocol.events import CODECS, CONTROL_EVENTS

try:
    from protocol_pair import (
        AUDIO,
        VIDEO,
        button_pair,
        comparable,
        console_pair,
        control_frame,
        media_frame,
    )
except ImportError:  # tests/ turned into a package
    from .protocol_pair import (  # type: ignore[no-redef]
        AUDIO,
        VIDEO,
        button_pair,
        comparable,
        console_pair,
        control_frame,
        media_frame,
    )

SETTINGS = settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DECODE_ERRORS = (MessageError, LimitExceeded)

# -- strategies ----------------------------------------------------------------

ids = st.text(
    st.characters(min_codepoint=0x20, blacklist_characters="\x7f", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=64,
)
maybe_ids = ids | st.just("")
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
u63 = st.integers(0, 2**63 - 1)
levels = st.integers(0, 16)

sites = st.builds(
    Site,
    name=texts,
    kind=texts,
    address=texts,
    district=texts,
    latitude=st.floats(-90, 90),
    longitude=st.floats(-180, 180),
)


@st.composite
def track_descriptions(draw, track_id=st.integers(1, 0xFFFF)):
    kind = draw(st.sampled_from(sorted(CODECS)))
    return TrackDescription(
        track_id=draw(track_id),
        kind=kind,
        codec=draw(st.sampled_from(CODECS[kind])),
        width=draw(st.integers(0, 16384)),
        height=draw(st.integers(0, 16384)),
        fps=draw(st.floats(0, 240)),
        sample_rate=draw(st.integers(0, 384000)),
        channels=draw(st.integers(0, 16)),
        bitrate=draw(st.integers(0, 2**31)),
        extradata=draw(st.binary(max_size=64)),
    )


track_lists = st.lists(track_descriptions(), max_size=6, unique_by=lambda t: t.track_id)


@st.composite
def welcomes(draw):
    heartbeat = draw(st.floats(0.1, 3600))
    max_frame = draw(st.integers(256, 2**31))
    return Welcome(
        session=draw(ids),
        heartbeat_interval=heartbeat,
        supervision_window=draw(st.floats(heartbeat, 86400)),
        chunk_size=draw(st.integers(256, max_frame)),
        max_frame_bytes=max_frame,
        track_ids=draw(st.lists(st.integers(1, 0xFFFF), max_size=16)),
    )


alerts = st.builds(
    Alert,
    alert_id=ids,
    pressed_at=u63,
    kind=st.sampled_from(["panic", "offline", "tamper", "test"]),
    attempt=st.integers(1, 2**31),
    button=maybe_ids,
    site=st.none() | sites,
    state=ids,
    level=levels,
    cursor=u63,
    received_at=u63,
)
heartbeats = st.builds(Heartbeat, sent_at=u63, battery=st.integers(-1, 100), tamper=st.booleans())
errors = st.builds(Error, code=ids, message=texts, fatal=st.booleans())

EVENT_STRATEGIES: dict[type, st.SearchStrategy] = {
    Hello: st.builds(
        Hello,
        role=st.sampled_from(["button", "console"]),
        identity=ids,
        counter=st.integers(1, 2**64 - 1),
        software=texts,
        protocol=st.integers(1, 255),
        talkback=st.booleans(),
    ),
    Challenge: st.builds(Challenge, nonce=st.binary(min_size=16, max_size=64), relay=maybe_ids),
    Authenticate: st.builds(Authenticate, proof=st.binary(min_size=32, max_size=32)),
    Welcome: welcomes(),
    Error: errors,
    Goodbye: st.builds(Goodbye, reason=texts),
    Heartbeat: heartbeats,
    Alert: alerts,
    AlertAck: st.builds(AlertAck, alert_id=ids, duplicate=st.booleans()),
    AlertUpdate: st.builds(
        AlertUpdate,
        alert_id=ids,
        state=ids,
        operator=maybe_ids,
        note=texts,
        unit=maybe_ids,
        at=u63,
        level=levels,
        cursor=u63,
    ),
    ButtonState: st.builds(
        ButtonState,
        button=ids,
        state=st.sampled_from(["online", "offline"]),
        at=u63,
        site=st.none() | sites,
    ),
    StreamDescription: st.builds(StreamDescription, tracks=track_lists, button=maybe_ids),
    Subscribe: st.builds(Subscribe, button=ids),
    Unsubscribe: st.builds(Unsubscribe, button=ids, reason=texts),
    KeyframeRequest: st.builds(KeyframeRequest, button=maybe_ids, track_id=st.integers(0, 0xFFFF)),
    Subscribed: st.builds(
        Subscribed, button=ids, tracks=track_lists, catchup_frames=st.integers(0, 100000)
    ),
    TalkBack: st.builds(
        TalkBack,
        talk_id=ids,
        seq=st.integers(0, 0xFFFFFFFF),
        captured_at=u63,
        packet=st.binary(max_size=1500),
        end=st.booleans(),
        operator=maybe_ids,
        alert_id=maybe_ids,
    ),
}
control_events = st.one_of(*EVENT_STRATEGIES.values())


def test_every_control_event_has_a_strategy():
    assert set(EVENT_STRATEGIES) == set(CONTROL_EVENTS.values())


def decode_or_refuse(frame_type: int, body: bytes) -> Event | None:
    """decode_body's result, or None if it refused with one of the allowed errors."""
    try:
        event = decode_body(frame_type, body)
    except DECODE_ERRORS as error:
        assert str(error)
        return None
    assert type(event) is CONTROL_EVENTS[frame_type]
    return event


# -- bodies --------------------------------------------------------------------


@SETTINGS
@given(control_events)
def test_bodies_round_trip(event):
    body = encode_body(event)
    assert decode_body(event.frame_type, body, max_bytes=1 << 20) == event
    assert isinstance(msgpack.unpackb(body), dict)


@SETTINGS
@given(
    control_events,
    st.text(min_size=1, max_size=10),
    st.integers(-(2**63), 2**64 - 1) | st.text() | st.none() | st.lists(st.booleans()),
)
def test_unknown_keys_are_ignored(event, key, value):
    body = msgpack.unpackb(encode_body(event))
    assume(key not in body)
    body[key] = value
    assert decode_body(event.frame_type, msgpack.packb(body), max_bytes=1 << 20) == event


FRAME_TYPES = st.sampled_from([int(t) for t in FrameType]) | st.integers(0, 255)


@SETTINGS
@given(FRAME_TYPES, st.binary(max_size=300))
def test_random_bytes_decode_or_raise_only_protocol_errors(frame_type, body):
    if frame_type not in CONTROL_EVENTS:
        with pytest.raises(MessageError):
            decode_body(frame_type, body)
        return
    decode_or_refuse(frame_type, body)


@st.composite
def mutated_bodies(draw):
    event = draw(control_events)
    body = bytearray(encode_body(event))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(body) - 1)))
        if op == "flip" and body:
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and body:
            body[at] = draw(st.integers(0, 255))
        elif op == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and body:
            del body[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del body[at:]
    return event.frame_type, bytes(body)


@SETTINGS
@given(mutated_bodies())
def test_mutated_bodies_decode_or_raise_only_protocol_errors(mutated):
    decode_or_refuse(*mutated)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def schema_shaped_bodies(draw):
    """Maps whose keys are (mostly) the event's field names, with values of any type."""
    cls = draw(st.sampled_from(sorted(CONTROL_EVENTS.values(), key=lambda c: c.__name__)))
    names = [f.name for f in dataclasses.fields(cls)]
    body = draw(st.dictionaries(st.sampled_from(names), msgpack_values, max_size=len(names)))
    # Sometimes put a valid nested value where one belongs.
    if "site" in names and draw(st.booleans()):
        body["site"] = draw(st.dictionaries(st.sampled_from(["name", "latitude"]), msgpack_values))
    if "tracks" in names and draw(st.booleans()):
        body["tracks"] = [
            draw(st.dictionaries(st.sampled_from(["track_id", "kind", "codec"]), msgpack_values))
        ]
    return cls.frame_type, msgpack.packb(body)


@SETTINGS
@given(schema_shaped_bodies())
def test_wrongly_typed_bodies_raise_message_error_naming_the_event(shaped):
    frame_type, body = shaped
    try:
        decode_body(frame_type, body)
    except LimitExceeded:
        pass
    except MessageError as error:
        # Named by the event, or by the nested value (Site, TrackDescription) that broke.
        names = (CONTROL_EVENTS[frame_type].__name__, "Site", "TrackDescription")
        assert any(name in str(error) for name in names), error


@SETTINGS
@given(FRAME_TYPES.filter(lambda t: t in CONTROL_EVENTS), msgpack_values)
def test_any_msgpack_value_decodes_or_raises_only_protocol_errors(frame_type, value):
    decode_or_refuse(frame_type, msgpack.packb(value))


def test_a_map_that_repeats_a_key_is_refused_at_any_depth():
    """{button: a, button: b} must not quietly mean b (protocol.md §5.0)."""

    def pair(key, value):
        return msgpack.packb(key) + msgpack.packb(value)

    top = b"\x82" + pair("button", "kp-a") + pair("button", "kp-b")
    with pytest.raises(MessageError, match="the key 'button' more than once") as caught:
        decode_body(FrameType.SUBSCRIBE, top)
    assert caught.value.code == "bad-message"
    site = b"\x82" + pair("name", "A") + pair("name", "B")
    nested = b"\x83" + pair("alert_id", "a1") + pair("pressed_at", 1) + msgpack.packb("site") + site
    with pytest.raises(MessageError, match="the key 'name' more than once"):
        decode_body(FrameType.ALERT, nested)
    assert decode_body(FrameType.SUBSCRIBE, b"\x81" + pair("button", "kp-a")).button == "kp-a"


def test_body_errors_name_the_field():
    body = msgpack.unpackb(encode_body(Heartbeat()))
    body["battery"] = "full"
    with pytest.raises(MessageError, match="Heartbeat.battery"):
        decode_body(FrameType.HEARTBEAT, msgpack.packb(body))
    body = {"alert_id": "a", "pressed_at": 1, "site": {"latitude": "north"}}
    with pytest.raises(MessageError, match="Site.latitude"):
        decode_body(FrameType.ALERT, msgpack.packb(body))
    with pytest.raises(MessageError, match="Alert"):
        decode_body(FrameType.ALERT, msgpack.packb({"alert_id": "a"}))  # pressed_at missing
    with pytest.raises(MessageError, match="map"):
        decode_body(FrameType.ALERT, msgpack.packb([1, 2]))
    with pytest.raises(MessageError, match="no msgpack body"):
        decode_body(FrameType.MEDIA, b"\x80")


def test_body_over_max_bytes_is_a_limit():
    body = encode_body(Goodbye(reason="x" * 1000))
    assert decode_body(FrameType.GOODBYE, body, max_bytes=len(body)) == Goodbye(reason="x" * 1000)
    with pytest.raises(LimitExceeded):
        decode_body(FrameType.GOODBYE, body, max_bytes=len(body) - 1)


# -- nesting depth -------------------------------------------------------------


def nested(containers: int) -> bytes:
    """A Goodbye body whose ``reason`` is ``containers - 1`` lists deep (the map counts too).

    The innermost list is empty, so every level is a container however the
    depth is counted.
    """
    value: list = []
    for _ in range(containers - 2):
        value = [value]
    return msgpack.packb({"reason": value})


@pytest.mark.parametrize("max_depth", [2, 3, Limits.MAX_MSGPACK_DEPTH, 20])
def test_nesting_up_to_max_depth_is_parsed_and_beyond_is_a_limit(max_depth):
    # At the limit the body is parsed (and refused for its schema: reason is not a string).
    with pytest.raises(MessageError, match="Goodbye.reason"):
        decode_body(FrameType.GOODBYE, nested(max_depth), max_depth=max_depth)
    with pytest.raises(LimitExceeded, match="max_msgpack_depth"):
        decode_body(FrameType.GOODBYE, nested(max_depth + 1), max_depth=max_depth)


@pytest.mark.parametrize("containers", [100, 1000, 5000, Limits.MAX_CONTROL_BYTES - 16])
def test_very_deep_nesting_is_a_limit_not_a_crash(containers):
    body = b"\x91" * containers + b"\x90"  # [[[...[]...]]]
    assert len(body) <= Limits.MAX_CONTROL_BYTES
    with pytest.raises(LimitExceeded):
        decode_body(FrameType.GOODBYE, body)
    body = b"\x81\xa1a" * containers + b"\x80"  # {"a": {"a": ... {}}}
    with pytest.raises(LimitExceeded):
        decode_body(FrameType.GOODBYE, body, max_bytes=len(body))


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 40))
def test_depth_limit_property(max_depth, containers):
    try:
        decode_body(FrameType.GOODBYE, nested(max(2, containers)), max_depth=max_depth)
    except LimitExceeded:
        assert max(2, containers) > max_depth
    except MessageError:
        assert max(2, containers) <= max_depth


# -- construction refuses invalid fields --------------------------------------

TRACK = {"track_id": 1, "kind": "video", "codec": "h264"}
WELCOME = {
    "session": "s",
    "heartbeat_interval": 10.0,
    "supervision_window": 20.0,
    "chunk_size": 256,
    "max_frame_bytes": 1024,
}
INVALID = [
    (Hello, {"role": "operator", "identity": "x", "counter": 1}, "role"),
    (Hello, {"role": "button", "identity": "", "counter": 1}, "identity"),
    (Hello, {"role": "button", "identity": "a\x00b", "counter": 1}, "identity"),
    (Hello, {"role": "button", "identity": "x" * 65, "counter": 1}, "identity"),
    (Hello, {"role": "button", "identity": 7, "counter": 1}, "identity"),
    (Hello, {"role": "button", "identity": "x", "counter": 0}, "counter"),
    (Hello, {"role": "button", "identity": "x", "counter": 2**64}, "counter"),
    (Hello, {"role": "button", "identity": "x", "counter": True}, "counter"),
    (Hello, {"role": "button", "identity": "x", "counter": 1.0}, "counter"),
    (Hello, {"role": "button", "identity": "x", "counter": 1, "protocol": 0}, "protocol"),
    (Hello, {"role": "button", "identity": "x", "counter": 1, "software": "s" * 1025}, "software"),
    (Challenge, {"nonce": b"short"}, "nonce"),
    (Challenge, {"nonce": "x" * 32}, "nonce"),
    (Challenge, {"nonce": b"n" * 32, "relay": "r\n"}, "relay"),
    (Authenticate, {"proof": b"p" * 31}, "proof"),
    (Authenticate, {"proof": bytearray(32)}, "proof"),
    (Welcome, {**WELCOME, "session": ""}, "session"),
    (Welcome, {**WELCOME, "heartbeat_interval": 0.01}, "heartbeat_interval"),
    (Welcome, {**WELCOME, "heartbeat_interval": "10"}, "heartbeat_interval"),
    (Welcome, {**WELCOME, "heartbeat_interval": float("nan")}, "heartbeat_interval"),
    (Welcome, {**WELCOME, "supervision_window": 5.0}, "supervision_window"),
    (Welcome, {**WELCOME, "supervision_window": "20"}, "supervision_window"),
    (Welcome, {**WELCOME, "chunk_size": 2048}, "chunk_size"),
    (Welcome, {**WELCOME, "chunk_size": 100}, "chunk_size"),
    (Welcome, {**WELCOME, "max_frame_bytes": 2**31 + 1, "chunk_size": 2**31}, "max_frame_bytes"),
    (Welcome, {**WELCOME, "track_ids": (1, 0)}, "track id"),
    (Welcome, {**WELCOME, "track_ids": (1, "2")}, "track id"),
    (Error, {"code": "", "message": "m"}, "code"),
    (Error, {"code": "c", "message": None}, "message"),
    (Error, {"code": "c", "message": "m", "fatal": "yes"}, "fatal"),
    (Goodbye, {"reason": 5}, "reason"),
    (Heartbeat, {"battery": 101}, "battery"),
    (Heartbeat, {"battery": -2}, "battery"),
    (Heartbeat, {"sent_at": -1}, "sent_at"),
    (Heartbeat, {"tamper": "no"}, "tamper"),
    (Site, {"latitude": 91.0}, "latitude"),
    (Site, {"latitude": "north"}, "latitude"),
    (Site, {"longitude": -180.5}, "longitude"),
    (Site, {"longitude": float("inf")}, "longitude"),
    (Site, {"address": "a" * 1025}, "address"),
    (Alert, {"alert_id": "", "pressed_at": 1}, "alert_id"),
    (Alert, {"alert_id": "a", "pressed_at": -1}, "pressed_at"),
    (Alert, {"alert_id": "a", "pressed_at": 1, "kind": "fire"}, "kind"),
    (Alert, {"alert_id": "a", "pressed_at": 1, "attempt": 0}, "attempt"),
    (Alert, {"alert_id": "a", "pressed_at": 1, "level": 17}, "level"),
    (Alert, {"alert_id": "a", "pressed_at": 1, "button": "b\x7f"}, "button"),
    (Alert, {"alert_id": "a", "pressed_at": 1, "site": {"name": "school"}}, "site"),
    (AlertAck, {"alert_id": "a", "duplicate": 1}, "duplicate"),
    (AlertUpdate, {"alert_id": "a", "state": ""}, "state"),
    (AlertUpdate, {"alert_id": "a", "state": "s", "note": "n" * 1025}, "note"),
    (ButtonState, {"button": "b", "state": "asleep"}, "state"),
    (ButtonState, {"button": "b", "state": "online", "site": "school"}, "site"),
    (TrackDescription, {**TRACK, "track_id": 0}, "track_id"),
    (TrackDescription, {**TRACK, "kind": "subtitles"}, "kind"),
    (TrackDescription, {**TRACK, "codec": "vp8"}, "codec"),
    (TrackDescription, {**TRACK, "kind": "audio", "codec": "h264"}, "codec"),
    (TrackDescription, {**TRACK, "width": 20000}, "width"),
    (TrackDescription, {**TRACK, "fps": "30"}, "fps"),
    (TrackDescription, {**TRACK, "fps": True}, "fps"),
    (TrackDescription, {**TRACK, "extradata": b"x" * 4097}, "extradata"),
    (StreamDescription, {"tracks": ({**TRACK},)}, "tracks"),
    (StreamDescription, {"tracks": (VIDEO, VIDEO)}, "track id"),
    (StreamDescription, {"tracks": (), "button": "\n"}, "button"),
    (Subscribe, {"button": ""}, "button"),
    (Unsubscribe, {"button": "b", "reason": b"bytes"}, "reason"),
    (KeyframeRequest, {"track_id": 2**22}, "track_id"),  # above protocol v2's 22-bit track ids
    (Subscribed, {"button": "b", "tracks": ("x",)}, "tracks"),
    (Subscribed, {"button": "b", "tracks": (AUDIO, AUDIO)}, "track id"),
    (Subscribed, {"button": "b", "catchup_frames": -1}, "catchup_frames"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    INVALID,
    ids=[f"{cls.__name__}-{field}-{i}" for i, (cls, _, field) in enumerate(INVALID)],
)
def test_invalid_fields_refuse_construction_naming_the_field(cls, kwargs, field):
    with pytest.raises((ValueError, TypeError)) as caught:
        cls(**kwargs)
    assert field in str(caught.value)


def test_events_are_frozen():
    heartbeat = Heartbeat()
    with pytest.raises(dataclasses.FrozenInstanceError):
        heartbeat.battery = 5  # type: ignore[misc]


# -- streams split anywhere ----------------------------------------------------

CONTROL_TRAFFIC = st.one_of(
    heartbeats, alerts, st.builds(Error, code=ids, message=texts, fatal=st.just(False))
)


@st.composite
def media_specs(draw, tracks, payloads=st.binary(max_size=1200)):
    track = draw(st.sampled_from(tracks))
    return (
        "media",
        track.track_id,
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(-(2**63), 2**63 - 1)),
        draw(st.booleans()),
        draw(payloads),
    )


#: Small messages, and messages of several 256-byte chunks (the pairs' chunk size).
chunked_payloads = st.binary(max_size=200) | st.builds(
    lambda size, byte: bytes([byte]) * size, st.integers(257, 1500), st.integers(0, 255)
)


def _schedule(rng: random.Random, queues: list[list]) -> list:
    """A random merge of ``queues`` that keeps each queue's own order."""
    merged = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        merged.append(queue.pop(0))
    return merged


def _split(rng: random.Random, wire: bytes, pieces: int) -> list[bytes]:
    cuts = []
    if len(wire) > 1:
        cuts = sorted(rng.sample(range(1, len(wire)), min(pieces, len(wire) - 1)))
    bounds = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in zip(bounds, bounds[1:])]


@SETTINGS
@given(st.data())
def test_button_stream_split_anywhere_yields_the_same_events(data):
    pair = button_pair()
    button, relay = pair.client, pair.relay
    tracks = data.draw(
        st.lists(st.sampled_from([VIDEO, AUDIO]), min_size=1, max_size=2, unique=True), "tracks"
    )
    description = StreamDescription(tracks=tuple(tracks))
    items = data.draw(
        st.lists(CONTROL_TRAFFIC | media_specs(tracks), max_size=14), "items"
    )
    rng = data.draw(st.randoms(use_true_random=False), "rng")
    interleave = data.draw(st.booleans(), "interleave")

    described = (button.send(description), description)  # media needs it first
    # Each queue holds (frame bytes, expected event or None); an event is
    # expected when the frame that completes it arrives.
    control: list = []
    per_track: dict[int, list] = {t.track_id: [] for t in tracks}
    in_send_order: list = []
    for item in items:
        if isinstance(item, tuple):
            _, track_id, seq, timestamp, keyframe, payload = item
            frames = button.send_media(track_id, seq, timestamp, payload, keyframe)
            expected = ("media", track_id, seq, timestamp, keyframe, payload)
            entries = [(f, None) for f in frames[:-1]] + [(frames[-1], expected)]
            per_track[track_id].extend(entries)
        else:
            entries = [(button.send(item), item)]
            control.extend(entries)
        in_send_order.extend(entries)

    ordered = (
        _schedule(rng, [control, *per_track.values()]) if interleave else in_send_order
    )
    wire_frames = [described, *ordered]
    wire = b"".join(frame for frame, _ in wire_frames)
    expected = [event for _, event in wire_frames if event is not None]

    received = []
    for piece in _split(rng, wire, data.draw(st.integers(0, 40), "pieces")):
        relay.receive_data(piece, 1.0)
        received.extend(comparable(event) for event in relay.events())
    assert received == expected
    assert relay.error is None and relay.tracks == {t.track_id: t for t in tracks}


WATCHED = "kp-watched"
#: Track ids of other buttons, apart from the watched button's VIDEO/AUDIO (101, 102).
other_tracks = st.lists(
    track_descriptions(track_id=st.integers(200, 0xFFFF)), max_size=3, unique_by=lambda t: t.track_id
)
other_buttons = ids.filter(lambda button: button != WATCHED)
RELAY_TO_CONSOLE_CONTROL = st.one_of(
    alerts,
    EVENT_STRATEGIES[AlertUpdate],
    EVENT_STRATEGIES[ButtonState],
    heartbeats,
    st.builds(Error, code=ids, message=texts, fatal=st.just(False)),
    st.builds(StreamDescription, tracks=other_tracks, button=other_buttons),
    st.builds(Subscribed, button=other_buttons, tracks=other_tracks, catchup_frames=st.integers(0, 99)),
)


def _receive_in_pieces(conn, wire: bytes, rng, pieces: int) -> list:
    received = []
    for piece in _split(rng, wire, pieces):
        if not piece:
            continue  # b"" would mean the peer closed the connection
        conn.receive_data(piece, 1.0)
        received.extend(conn.events())
    return received


def _console_view(event):
    """What a console's event carries, Media's button included."""
    value = comparable(event)
    return (*value, event.button) if isinstance(event, Media) else value


@SETTINGS
@given(st.data())
def test_relay_to_console_stream_split_anywhere_yields_the_same_events(data):
    """Every relay -> console frame type, media chunked and interleaved, cut at arbitrary points.

    The cut stream gives exactly the events of the same stream delivered in
    one piece, and those are what the relay sent. ``redescribe`` sends the
    watched button's tracks again between media messages (or, interleaved,
    between their chunks): a message interrupted that way is never
    delivered as a shorter one (§4.4), and everything after it is.
    """
    uncut_pair, cut_pair = console_pair(), console_pair()
    relay = uncut_pair.relay
    tracks = data.draw(
        st.lists(st.sampled_from([VIDEO, AUDIO]), min_size=1, max_size=2, unique=True), "tracks"
    )
    kinds = {
        "control": RELAY_TO_CONSOLE_CONTROL,
        "media": media_specs(tracks, chunked_payloads),
        "redescribe": st.just(StreamDescription(button=WATCHED, tracks=tuple(tracks))),
    }
    # Drawn by kind first: a plain one_of would flatten to one choice in nine for media.
    item = st.sampled_from(["control", "media", "media", "redescribe"]).flatmap(kinds.__getitem__)
    items = data.draw(st.lists(item, max_size=14), "items")
    rng = data.draw(st.randoms(use_true_random=False), "rng")
    interleave = data.draw(st.booleans(), "interleave")
    subscribed = Subscribed(button=WATCHED, tracks=tuple(tracks), catchup_frames=data.draw(st.integers(0, 9)))

    first = (relay.send(subscribed), subscribed)
    control: list = []
    per_track: dict[int, list] = {t.track_id: [] for t in tracks}
    in_send_order: list = []
    sent_media: dict[tuple[int, int], set[bytes]] = {}
    for item in items:
        if isinstance(item, tuple):
            _, track_id, seq, timestamp, keyframe, payload = item
            frames = relay.send_media(track_id, seq, timestamp, payload, keyframe)
            sent_media.setdefault((track_id, seq), set()).add(payload)
            expected = ("media", track_id, seq, timestamp, keyframe, payload, WATCHED)
            entries = [(f, None) for f in frames[:-1]] + [(frames[-1], expected)]
            per_track[track_id].extend(entries)
        else:
            entries = [(relay.send(item), item)]
            control.extend(entries)
        in_send_order.extend(entries)
    ordered = (
        _schedule(rng, [control, *per_track.values()]) if interleave else in_send_order
    )
    wire_frames = [first, *ordered]
    wire = b"".join(frame for frame, _ in wire_frames)

    uncut = [_console_view(e) for e in _receive_in_pieces(uncut_pair.client, wire, rng, 0)]
    pieces = data.draw(st.integers(0, 40), "pieces")
    cut = [_console_view(e) for e in _receive_in_pieces(cut_pair.client, wire, rng, pieces)]
    assert cut == uncut
    assert cut_pair.client.error is None and cut_pair.client.tracks == uncut_pair.client.tracks

    expected_control = [e for _, e in wire_frames if e is not None and not isinstance(e, tuple)]
    assert [e for e in cut if not (isinstance(e, tuple) and e[0] == "media")] == expected_control
    media = [e for e in cut if isinstance(e, tuple) and e[0] == "media"]
    for _, track_id, seq, _, _, payload, button in media:
        assert button == WATCHED
        assert payload in sent_media[(track_id, seq)], "a message was delivered cut short"
    if not any(isinstance(item, StreamDescription) and item.button == WATCHED for item in items):
        assert media == [event for _, event in wire_frames if isinstance(event, tuple)]


RELAY_TO_BUTTON = st.one_of(
    EVENT_STRATEGIES[AlertAck],
    EVENT_STRATEGIES[KeyframeRequest],
    heartbeats,
    st.builds(Error, code=ids, message=texts, fatal=st.just(False)),
    EVENT_STRATEGIES[TalkBack],
)


@SETTINGS
@given(st.lists(RELAY_TO_BUTTON, max_size=20), st.randoms(use_true_random=False), st.integers(0, 40))
def test_relay_to_button_stream_split_anywhere_yields_the_same_events(items, rng, pieces):
    uncut_pair, cut_pair = button_pair(talkback=True), button_pair(talkback=True)
    wire = b"".join(uncut_pair.relay.send(item) for item in items)
    uncut = _receive_in_pieces(uncut_pair.client, wire, rng, 0)
    cut = _receive_in_pieces(cut_pair.client, wire, rng, pieces)
    assert cut == uncut == items
    assert cut_pair.client.error is None and not cut_pair.client.closed


def test_a_message_interrupted_by_a_redescription_is_discarded_not_cut_short():
    """A console that re-learns a button's tracks mid-message drops that message's tail.

    The relay may put a control frame between two chunks of a media message
    (§4.1), and a new ``stream_description`` discards the partial message
    (§4.4). The remaining chunks carry no start flag: taken for a new
    message, they would reach the decoder as a truncated frame.
    """
    pair = console_pair()
    console, relay = pair.client, pair.relay
    pair.relay_sends(Subscribed(button=WATCHED, tracks=(VIDEO,)))
    interrupted = relay.send_media(VIDEO.track_id, 5, 1000, b"k" * 600, True)
    assert len(interrupted) == 3
    redescription = relay.send(StreamDescription(button=WATCHED, tracks=(VIDEO,)))
    following = relay.send_media(VIDEO.track_id, 6, 2000, b"p" * 300, False)
    events = pair.to_client([interrupted[0], redescription, *interrupted[1:], *following])
    assert [type(e).__name__ for e in events] == ["StreamDescription", "Media"]
    media = events[1]
    assert (media.seq, media.data) == (6, b"p" * 300)
    assert console.ignored_media == 2 and console.error is None


CORRUPTIONS = {
    "garbage": lambda: b"\x00garbage",
    "bad-version": lambda: HEADER.pack(MAGIC, VERSION + 2, FrameType.HEARTBEAT, 2, 1, 0, 0, 0, 0),
    "forbidden-frame": lambda: control_frame(Subscribe(button="b")),
    "undescribed-track": lambda: media_frame(999),
    "wrong-lane": lambda: media_frame(101, lane=Lane.AUDIO),
    "lying-length": lambda: HEADER.pack(
        MAGIC, VERSION, FrameType.ALERT, 2, 0, 0, 1, 0, Limits.MAX_CONTROL_BYTES + 1
    ),
    "bad-msgpack": lambda: encode_frame(FrameType.HEARTBEAT, Lane.CONTROL, 0, 1, 0, b"\xc1"),
    "bad-schema": lambda: encode_frame(
        FrameType.ALERT, Lane.ALERT, 0, 1, 0, msgpack.packb({"alert_id": 5})
    ),
    "interrupted-message": lambda: media_frame(101, b"a" * 10, seq=1, end=False)
    + media_frame(101, b"b" * 10, seq=2),
}
EXPECTED_ERROR = {
    "garbage": FrameError,
    "bad-version": FrameError,
    "forbidden-frame": StateError,
    "undescribed-track": StateError,
    "wrong-lane": StateError,
    "lying-length": LimitExceeded,
    "bad-msgpack": MessageError,
    "bad-schema": MessageError,
    "interrupted-message": FrameError,
}


@SETTINGS
@given(
    st.lists(CONTROL_TRAFFIC, max_size=6),
    st.sampled_from(sorted(CORRUPTIONS)),
    st.randoms(use_true_random=False),
    st.integers(0, 20),
)
def test_error_mid_stream_delivers_what_came_before_then_keeps_raising(
    before, corruption, rng, pieces
):
    pair = button_pair()
    button, relay = pair.client, pair.relay
    description = StreamDescription(tracks=(VIDEO,))
    good = [description, *before]
    wire = b"".join(button.send(event) for event in good)
    wire += CORRUPTIONS[corruption]()
    wire += button.send(Heartbeat(sent_at=1))  # after the error: never delivered

    received, raised = [], []
    for piece in _split(rng, wire, pieces):
        relay.receive_data(piece, 1.0)
        while True:
            try:
                event = relay.next_event()
            except ProtocolError as error:
                raised.append(error)
                break
            if event is None:
                break
            received.append(event)
    assert received == good
    assert raised, "the corruption was not reported"
    assert all(error is raised[0] for error in raised)
    assert type(raised[0]) is EXPECTED_ERROR[corruption]
    assert relay.closed and relay.error is raised[0]
    # It keeps raising, and nothing more is accepted.
    relay.receive_data(button.send(Heartbeat(sent_at=2)), 2.0)
    for _ in range(3):
        with pytest.raises(EXPECTED_ERROR[corruption]):
            relay.next_event()


# -- timers --------------------------------------------------------------------


@SETTINGS
@given(
    st.floats(0, 1e7, allow_subnormal=False),
    st.floats(0.1, 3600),
    st.floats(1.0, 4.0),
)
def test_handle_timer_at_get_timer_always_makes_progress(start, heartbeat, ratio):
    pair = button_pair(
        now=start,
        relay_kwargs={"heartbeat_interval": heartbeat, "supervision_window": heartbeat * ratio},
    )
    for conn in (pair.client, pair.relay):
        previous = start
        for _ in range(4):
            deadline = conn.get_timer()
            assert deadline > previous
            sent = conn.handle_timer(deadline)
            silent = list(conn.events())
            assert sent or silent, f"handle_timer({deadline!r}) did nothing"
            assert all(type(event).__name__ == "PeerSilent" for event in silent)
            previous = deadline

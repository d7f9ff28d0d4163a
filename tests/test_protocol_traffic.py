"""After the handshake: control events, media, directions, limits and timers."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from pinkrelay._core import HEADER_SIZE, Lane
from pinkrelay.errors import LimitExceeded, StateError
from pinkrelay.protocol import (
    Alert,
    AlertAck,
    AlertUpdate,
    ButtonState,
    ConnectionClosed,
    Error,
    Goodbye,
    Heartbeat,
    KeyframeRequest,
    Media,
    PeerSilent,
    ProtocolLimits,
    Site,
    State,
    StreamDescription,
    Subscribe,
    Subscribed,
    TrackDescription,
    Unsubscribe,
)

try:
    from protocol_pair import (
        AUDIO,
        BUTTON_ID,
        CHUNK_SIZE,
        VIDEO,
        Pair,
        button_pair,
        console_pair,
        control_frame,
        frame_payloads,
        media_fields,
        media_frame,
        TRACK_IDS,
    )
except ImportError:  # tests/ turned into a package
    from .protocol_pair import (  # type: ignore[no-redef]
        AUDIO,
        BUTTON_ID,
        CHUNK_SIZE,
        VIDEO,
        Pair,
        button_pair,
        console_pair,
        control_frame,
        frame_payloads,
        media_fields,
        media_frame,
        TRACK_IDS,
    )

SITE = Site(
    name="Escola Estadual Sete de Setembro",
    kind="school",
    address="Rua das Flores 12",
    district="Centro",
    latitude=-23.55052,
    longitude=-46.633308,
)
ALERT = Alert(alert_id="0190f1c2-7d3e-7abc-8def-0123456789ab", pressed_at=1_717_000_000_000_000)
RELAYED_ALERT = Alert(
    alert_id=ALERT.alert_id,
    pressed_at=ALERT.pressed_at,
    attempt=3,
    button=BUTTON_ID,
    site=SITE,
    state="raised",
    level=2,
    cursor=41,
    received_at=1_717_000_000_250_000,
)


def described(pair: Pair, *tracks: TrackDescription) -> Pair:
    description = StreamDescription(tracks=tracks or (VIDEO, AUDIO))
    assert pair.client_sends(description) == [description]
    return pair


def payload_of(size: int, seed: int = 0) -> bytes:
    return random.Random(size * 31 + seed).randbytes(size)


def assert_failed(conn, error_type, code):
    assert conn.closed
    for _ in range(2):
        with pytest.raises(error_type) as caught:
            conn.next_event()
        assert caught.value.code == code
    return caught.value


# -- stream description and media ---------------------------------------------


def test_stream_description_sets_the_tracks_on_both_sides():
    pair = described(button_pair())
    assert pair.client.tracks == pair.relay.tracks == {101: VIDEO, 102: AUDIO}
    assert VIDEO.lane == Lane.VIDEO and AUDIO.lane == Lane.AUDIO


SIZES = [0, 1, 100, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 10 * CHUNK_SIZE + 7]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("track", [VIDEO, AUDIO], ids=["video", "audio"])
def test_media_is_chunked_at_the_welcome_chunk_size_and_reassembles(size, track):
    pair = described(button_pair())
    data = payload_of(size)
    frames = pair.client.send_media(track.track_id, 7, 1_000_123, data, keyframe=True, now=0.5)

    assert len(frames) == max(1, math.ceil(size / CHUNK_SIZE))
    assert all(len(payload) <= CHUNK_SIZE for payload in frame_payloads(frames))
    assert b"".join(frame_payloads(frames)) == data

    [event] = pair.to_relay(frames)
    assert isinstance(event, Media)
    assert media_fields(event) == (track.track_id, 7, 1_000_123, True, data)
    assert event.lane == track.lane
    assert event.button == ""
    # The relay can forward exactly the frames that arrived.
    assert tuple(event.message.chunks) == tuple(frames)


def test_media_of_several_messages_sent_one_byte_at_a_time():
    pair = described(button_pair())
    sent, wire = [], b""
    for seq, size in enumerate([0, 300, 5, 2000, 256]):
        track = VIDEO if seq % 2 else AUDIO
        data = payload_of(size, seq)
        sent.append((track.track_id, seq, 10 * seq, seq == 3, data))
        wire += b"".join(pair.client.send_media(track.track_id, seq, 10 * seq, data, seq == 3))
    received = pair.to_relay([wire[i : i + 1] for i in range(len(wire))])
    assert [media_fields(event) for event in received] == sent


def test_media_accepts_any_buffer_and_wraps_the_sequence():
    pair = described(button_pair())
    data = payload_of(700)
    for buffer in (bytearray(data), memoryview(data)):
        frames = pair.client.send_media(101, 2**32 + 5, 0, buffer)
        [event] = pair.to_relay(frames)
        assert event.data == data and event.seq == 5 and not event.keyframe


def test_chunks_of_other_lanes_may_come_between_chunks_of_one_message():
    pair = described(button_pair())
    video = payload_of(1000, 1)
    audio = payload_of(600, 2)
    v = pair.client.send_media(101, 1, 100, video, keyframe=True)
    a = pair.client.send_media(102, 1, 100, audio)
    alert = pair.client.send(ALERT)
    heartbeat = pair.client.send(Heartbeat(sent_at=5))
    wire = [v[0], a[0], alert, v[1], a[1], a[2], heartbeat, v[2], v[3]]
    events = pair.to_relay(wire)
    assert events[0] == ALERT
    assert media_fields(events[1]) == (102, 1, 100, False, audio)
    assert events[2] == Heartbeat(sent_at=5)
    assert media_fields(events[3]) == (101, 1, 100, True, video)
    assert len(events) == 4


# -- control events in the allowed directions ---------------------------------

BUTTON_TO_RELAY = [
    Heartbeat(sent_at=1_717_000_000_000_000, battery=87, tamper=True),
    ALERT,
    Alert(alert_id="a-2", pressed_at=5, kind="test", attempt=4),
    Error(code="camera", message="camera unplugged", fatal=False),
    StreamDescription(tracks=(AUDIO,)),
]
RELAY_TO_BUTTON = [
    Heartbeat(sent_at=42),
    AlertAck(alert_id=ALERT.alert_id),
    AlertAck(alert_id=ALERT.alert_id, duplicate=True),
    KeyframeRequest(track_id=101),
    Error(code="slow", message="falling behind", fatal=False),
]
CONSOLE_TO_RELAY = [
    Heartbeat(),
    Subscribe(button=BUTTON_ID),
    Unsubscribe(button=BUTTON_ID, reason="done"),
    KeyframeRequest(button=BUTTON_ID, track_id=101),
    AlertUpdate(alert_id=ALERT.alert_id, state="dispatched", operator="op-ana", unit="VTR-1234"),
]
RELAY_TO_CONSOLE = [
    Heartbeat(sent_at=9),
    RELAYED_ALERT,
    AlertUpdate(
        alert_id=ALERT.alert_id,
        state="on-scene",
        operator="op-ana",
        note="team arrived; ção ✓",
        unit="VTR-1234",
        at=123,
        level=3,
        cursor=42,
    ),
    ButtonState(button=BUTTON_ID, state="offline", at=77, site=SITE),
    ButtonState(button=BUTTON_ID, state="online"),
    Subscribed(button=BUTTON_ID, tracks=(VIDEO, AUDIO)),
    Unsubscribe(button=BUTTON_ID, reason="button went offline"),
    StreamDescription(tracks=(VIDEO,), button=BUTTON_ID),
]


def _ids(events):
    return [f"{i}-{type(e).__name__}" for i, e in enumerate(events)]


@pytest.mark.parametrize("event", BUTTON_TO_RELAY, ids=_ids(BUTTON_TO_RELAY))
def test_button_to_relay(event):
    pair = button_pair()
    assert pair.client_sends(event) == [event]
    assert pair.client.state is State.READY and pair.relay.state is State.READY


@pytest.mark.parametrize("event", RELAY_TO_BUTTON, ids=_ids(RELAY_TO_BUTTON))
def test_relay_to_button(event):
    pair = button_pair()
    assert pair.relay_sends(event) == [event]
    assert pair.client.state is State.READY and pair.relay.state is State.READY


@pytest.mark.parametrize("event", CONSOLE_TO_RELAY, ids=_ids(CONSOLE_TO_RELAY))
def test_console_to_relay(event):
    pair = console_pair()
    assert pair.client_sends(event) == [event]
    assert pair.client.state is State.READY and pair.relay.state is State.READY


@pytest.mark.parametrize("event", RELAY_TO_CONSOLE, ids=_ids(RELAY_TO_CONSOLE))
def test_relay_to_console(event):
    pair = console_pair()
    assert pair.relay_sends(event) == [event]
    assert pair.client.state is State.READY and pair.relay.state is State.READY


def test_alerts_travel_in_the_alert_lane():
    pair = button_pair()
    assert pair.client.send(ALERT)[5] == Lane.ALERT  # header byte 5 is the lane
    assert pair.client.send(Heartbeat())[5] == Lane.CONTROL


@pytest.mark.parametrize("make_pair", [button_pair, console_pair], ids=["button", "console"])
def test_fatal_error_and_goodbye_close_the_session(make_pair):
    pair = make_pair()
    error = Error(code="maintenance", message="relay restarting")
    assert pair.relay_sends(error) == [error]
    assert pair.relay.closed and pair.client.closed
    assert pair.client.error is None  # a reported error is an event, not a failure

    pair = make_pair()
    assert pair.client_sends(Goodbye(reason="logout")) == [Goodbye(reason="logout")]
    assert pair.relay.closed and pair.client.closed
    with pytest.raises(StateError):
        pair.client.send(Heartbeat())


# -- directions that are not allowed ------------------------------------------

SUBSCRIBED = Subscribed(button=BUTTON_ID, tracks=(VIDEO,))
FORBIDDEN = [
    # (pair factory, sender, event)
    ("button", "client", Subscribe(button=BUTTON_ID)),
    ("button", "client", Unsubscribe(button=BUTTON_ID)),
    ("button", "client", AlertUpdate(alert_id="a", state="closed")),
    ("button", "client", AlertAck(alert_id="a")),
    ("button", "client", KeyframeRequest(track_id=101)),
    ("button", "client", ButtonState(button=BUTTON_ID, state="online")),
    ("button", "client", SUBSCRIBED),
    ("button", "relay", ALERT),
    ("button", "relay", RELAYED_ALERT),
    ("button", "relay", AlertUpdate(alert_id="a", state="closed")),
    ("button", "relay", ButtonState(button=BUTTON_ID, state="online")),
    ("button", "relay", StreamDescription(tracks=(VIDEO,))),
    ("button", "relay", Subscribe(button=BUTTON_ID)),
    ("button", "relay", SUBSCRIBED),
    ("console", "client", ALERT),
    ("console", "client", StreamDescription(tracks=(VIDEO,))),
    ("console", "client", AlertAck(alert_id="a")),
    ("console", "client", ButtonState(button=BUTTON_ID, state="online")),
    ("console", "client", SUBSCRIBED),
    ("console", "relay", AlertAck(alert_id="a")),
    ("console", "relay", Subscribe(button=BUTTON_ID)),
    ("console", "relay", KeyframeRequest(button=BUTTON_ID, track_id=101)),
]


@pytest.mark.parametrize(
    ("kind", "sender", "event"),
    FORBIDDEN,
    ids=[f"{k}-{s}-{type(e).__name__}-{i}" for i, (k, s, e) in enumerate(FORBIDDEN)],
)
def test_disallowed_direction_is_refused_by_sender_and_receiver(kind, sender, event):
    pair = button_pair() if kind == "button" else console_pair()
    conn = pair.client if sender == "client" else pair.relay
    peer = pair.relay if sender == "client" else pair.client

    with pytest.raises(StateError):
        conn.send(event)
    assert conn.state is State.READY  # refusing to send changes nothing
    assert conn.send(Heartbeat())  # and the connection still works

    # A peer that sends it anyway (bypassing its connection object) is cut off.
    peer.receive_data(control_frame(event), 1.0)
    assert_failed(peer, StateError, "bad-state")


def test_console_cannot_send_media_and_the_relay_refuses_it():
    pair = console_pair()
    with pytest.raises(StateError):
        pair.client.send_media(101, 0, 0, b"x")
    pair.relay.receive_data(media_frame(101), 1.0)
    assert_failed(pair.relay, StateError, "bad-state")


def test_relay_cannot_send_media_to_a_button_and_the_button_refuses_it():
    pair = described(button_pair())
    with pytest.raises(StateError):
        pair.relay.send_media(101, 0, 0, b"x")
    pair.client.receive_data(media_frame(101), 1.0)
    assert_failed(pair.client, StateError, "bad-state")


# -- media tracks: assigned, described, lanes, limits -------------------------


def test_button_may_not_describe_a_track_the_relay_did_not_assign():
    pair = button_pair()
    foreign = TrackDescription(track_id=999, kind="video", codec="h264")
    with pytest.raises(StateError, match="not assigned"):
        pair.client.send(StreamDescription(tracks=(foreign,)))
    assert pair.client.tracks == {}
    # Sent anyway: the relay refuses it.
    pair.relay.receive_data(control_frame(StreamDescription(tracks=(foreign,))), 1.0)
    error = assert_failed(pair.relay, StateError, "bad-state")
    assert "999" in str(error) and BUTTON_ID in str(error)


def test_media_before_any_description_is_discarded_on_assigned_tracks():
    """The button's scheduler may put a chunk ahead of the description queued before it."""
    pair = button_pair()
    with pytest.raises(StateError):
        pair.client.send_media(101, 0, 0, b"x")  # the sender itself still refuses
    assert pair.to_relay(media_frame(101)) == []
    assert pair.relay.discarded_media == 1
    assert pair.relay.state is State.READY and pair.relay.error is None
    # The description arrives; media on the track is delivered from then on.
    described(pair)
    [event] = pair.to_relay(pair.client.send_media(101, 1, 0, b"frame"))
    assert event.data == b"frame"


@pytest.mark.parametrize("track", [103, 7, 0xFFFF])
def test_media_on_a_track_never_assigned_is_refused(track):
    pair = described(button_pair())
    with pytest.raises(StateError):
        pair.client.send_media(track, 0, 0, b"x")
    pair.relay.receive_data(media_frame(track, lane=Lane.AUDIO), 1.0)
    error = assert_failed(pair.relay, StateError, "bad-state")
    assert "did not assign" in str(error) and str(track) in str(error)


def test_media_on_an_assigned_track_not_described_is_discarded():
    pair = described(button_pair(), VIDEO)
    with pytest.raises(StateError):
        pair.client.send_media(102, 0, 0, b"x")
    assert pair.to_relay([media_frame(102, lane=Lane.AUDIO)] * 3) == []
    assert pair.relay.discarded_media == 3
    assert pair.relay.state is State.READY


def test_redescribing_drops_tracks_and_their_half_received_messages():
    pair = described(button_pair())
    frames = pair.client.send_media(102, 1, 0, payload_of(600))
    assert pair.to_relay(frames[:2]) == []  # half of an audio message
    described(pair, VIDEO)
    assert pair.relay.tracks == {101: VIDEO}
    # The rest of the dropped track's message is discarded, not reassembled.
    assert pair.to_relay(frames[2]) == []
    assert pair.relay.discarded_media == 1
    # Described again, the track starts clean: no stale half message.
    described(pair)
    data = payload_of(700, 5)
    [event] = pair.to_relay(pair.client.send_media(102, 2, 0, data))
    assert event.data == data and event.seq == 2


@pytest.mark.parametrize(
    ("track", "wrong_lane"), [(VIDEO, Lane.AUDIO), (AUDIO, Lane.VIDEO)], ids=["video", "audio"]
)
def test_media_in_the_wrong_lane_is_refused(track, wrong_lane):
    pair = described(button_pair())
    pair.relay.receive_data(media_frame(track.track_id, lane=wrong_lane), 1.0)
    error = assert_failed(pair.relay, StateError, "bad-state")
    assert f"lane {int(wrong_lane)}" in str(error)


def test_describing_more_than_max_tracks_is_a_limit():
    tracks = tuple(
        TrackDescription(track_id=t, kind="audio", codec="opus", sample_rate=48000, channels=1)
        for t in (1, 2, 3)
    )
    limits = ProtocolLimits(max_tracks=2)
    ok = button_pair(track_ids=(1, 2, 3), relay_kwargs={"limits": limits})
    described(ok, *tracks[:2])
    assert set(ok.relay.tracks) == {1, 2}

    pair = button_pair(track_ids=(1, 2, 3), relay_kwargs={"limits": limits})
    pair.relay.receive_data(pair.client.send(StreamDescription(tracks=tracks)), 1.0)
    error = assert_failed(pair.relay, LimitExceeded, "limit")
    assert "max_tracks is 2" in str(error)


def test_media_over_the_message_limit_is_refused():
    limits = ProtocolLimits(max_message_bytes=1024)
    pair = described(button_pair(relay_kwargs={"limits": limits}))
    assert len(pair.to_relay(pair.client.send_media(101, 1, 0, payload_of(1024)))) == 1
    pair.relay.receive_data(b"".join(pair.client.send_media(101, 2, 0, payload_of(1025))), 1.0)
    assert_failed(pair.relay, LimitExceeded, "limit")


def test_small_chunks_still_carry_a_message_of_max_message_bytes():
    # 128 KiB in 256-byte chunks is 512 chunks, above the default 256 per message.
    limits = ProtocolLimits(max_message_bytes=128 * 1024)
    pair = described(button_pair(relay_kwargs={"limits": limits}))
    data = payload_of(128 * 1024)
    frames = pair.client.send_media(101, 1, 0, data, keyframe=True)
    assert len(frames) == 512
    [event] = pair.to_relay(frames)
    assert event.data == data


# -- console: subscriptions and media -----------------------------------------


def _subscribed(pair: Pair, button: str, *tracks: TrackDescription) -> None:
    event = Subscribed(button=button, tracks=tracks)
    assert pair.relay_sends(event) == [event]


def test_console_maps_media_to_the_subscribed_button():
    pair = console_pair()
    other = TrackDescription(track_id=201, kind="video", codec="h264")
    _subscribed(pair, BUTTON_ID, VIDEO, AUDIO)
    _subscribed(pair, "btn-0099", other)
    assert set(pair.client.tracks) == {101, 102, 201}

    for track, button in ((101, BUTTON_ID), (102, BUTTON_ID), (201, "btn-0099")):
        data = payload_of(700, track)
        [event] = pair.to_client(pair.relay.send_media(track, 3, 99, data, keyframe=True))
        assert media_fields(event) == (track, 3, 99, True, data)
        assert event.button == button
    assert pair.client.ignored_media == 0


def test_console_ignores_media_after_it_unsubscribed():
    pair = console_pair()
    _subscribed(pair, BUTTON_ID, VIDEO, AUDIO)
    in_flight = pair.relay.send_media(101, 1, 0, payload_of(700))
    assert pair.to_client(in_flight[:1]) == []  # first chunk of three

    assert pair.client_sends(Unsubscribe(button=BUTTON_ID)) == [Unsubscribe(button=BUTTON_ID)]
    assert pair.client.tracks == {}
    # Frames already on their way are dropped quietly, not a protocol error.
    assert pair.to_client(in_flight[1:]) == []
    assert pair.to_client(pair.relay.send_media(102, 2, 0, b"opus")) == []
    assert pair.client.ignored_media == 3
    assert pair.client.state is State.READY and pair.client.error is None

    # Subscribing again starts clean: the half message before is gone.
    _subscribed(pair, BUTTON_ID, VIDEO)
    data = payload_of(900)
    [event] = pair.to_client(pair.relay.send_media(101, 5, 0, data))
    assert media_fields(event) == (101, 5, 0, False, data) and event.button == BUTTON_ID
    assert pair.client.ignored_media == 3


def test_console_forgets_tracks_when_the_relay_ends_the_subscription():
    pair = console_pair()
    _subscribed(pair, BUTTON_ID, VIDEO)
    _subscribed(pair, "btn-0099", AUDIO)
    assert pair.relay_sends(Unsubscribe(button=BUTTON_ID, reason="offline")) == [
        Unsubscribe(button=BUTTON_ID, reason="offline")
    ]
    assert set(pair.client.tracks) == {102}
    assert pair.to_client(pair.relay.send_media(101, 1, 0, b"late")) == []
    assert pair.client.ignored_media == 1
    [event] = pair.to_client(pair.relay.send_media(102, 1, 0, b"still here"))
    assert event.button == "btn-0099"


def test_console_stream_description_replaces_a_buttons_tracks():
    pair = console_pair()
    _subscribed(pair, BUTTON_ID, VIDEO, AUDIO)
    described_again = StreamDescription(tracks=(AUDIO,), button=BUTTON_ID)
    assert pair.relay_sends(described_again) == [described_again]
    assert set(pair.client.tracks) == {102}


def test_console_refuses_media_in_the_wrong_lane_for_a_subscribed_track():
    pair = console_pair()
    _subscribed(pair, BUTTON_ID, VIDEO)
    pair.client.receive_data(media_frame(101, lane=Lane.AUDIO), 1.0)
    assert_failed(pair.client, StateError, "bad-state")


# -- timers --------------------------------------------------------------------


def _timed_pair() -> Pair:
    return button_pair(relay_kwargs={"heartbeat_interval": 4.0, "supervision_window": 9.0})


def test_heartbeat_when_idle():
    pair = _timed_pair()
    button = pair.client
    assert button.get_timer() == 4.0
    assert button.handle_timer(3.999, wall_us=1) == b""
    heartbeat = button.handle_timer(4.0, wall_us=1_717_000_000_000_000)
    assert heartbeat[:2] == b"PR" and len(heartbeat) > HEADER_SIZE
    assert pair.to_relay(heartbeat, 4.0) == [Heartbeat(sent_at=1_717_000_000_000_000)]
    assert button.get_timer() == 8.0
    assert button.handle_timer(5.0) == b""
    assert pair.to_relay(button.handle_timer(8.5), 8.5) == [Heartbeat()]
    # Next: the supervision deadline (nothing received since the welcome at 0)...
    assert button.get_timer() == 9.0
    # ...until the relay's own heartbeat arrives; then the button's next heartbeat.
    assert pair.to_client(pair.relay.handle_timer(8.5), 8.5) == [Heartbeat()]
    assert button.get_timer() == 12.5


def test_no_heartbeat_when_traffic_was_sent_recently():
    pair = described(_timed_pair())
    button = pair.client
    pair.to_relay(button.send(ALERT, now=3.0), 3.0)
    assert button.get_timer() == 7.0
    assert button.handle_timer(4.0) == b""
    pair.to_relay(button.send_media(101, 1, 0, b"frame", now=6.5), 6.5)
    assert button.handle_timer(7.0) == b""
    assert button.get_timer() == 9.0  # supervision of the relay comes first
    assert button.handle_timer(9.0) == b""  # the relay is silent, but we sent at 6.5
    assert list(button.events()) == [PeerSilent(silent_for=9.0)]
    assert button.get_timer() == 10.5
    assert pair.to_relay(button.handle_timer(10.5), 10.5) == [Heartbeat()]


def test_relay_heartbeats_a_silent_client_and_reports_it_silent_once():
    pair = _timed_pair()
    relay = pair.relay
    assert relay.get_timer() == 4.0  # min(heartbeat 0+4, supervision 0+9)
    events = []
    for now in (4.0, 8.0):
        assert relay.handle_timer(now)  # heartbeats only
        events += list(relay.events())
    assert relay.handle_timer(8.999) == b""
    events += list(relay.events())
    assert events == []
    assert relay.get_timer() == 9.0

    assert relay.handle_timer(9.0) == b""  # last heartbeat at 8.0
    assert list(relay.events()) == [PeerSilent(silent_for=9.0)]
    assert relay.get_timer() == 12.0  # supervision no longer counts
    for now in (12.0, 15.0, 30.0, 100.0):
        relay.handle_timer(now)
    assert list(relay.events()) == []  # exactly once

    # Data arrives: supervision starts over.
    assert pair.to_relay(pair.client.send(Heartbeat(), now=101.0), 101.0) == [Heartbeat()]
    assert relay.get_timer() == 104.0
    relay.handle_timer(109.9)
    assert list(relay.events()) == []
    relay.handle_timer(110.5)
    assert list(relay.events()) == [PeerSilent(silent_for=9.5)]
    assert relay.state is State.READY and relay.error is None


def test_client_reports_a_silent_relay_with_the_welcome_window():
    pair = _timed_pair()
    button = pair.client
    for now in (4.0, 8.0):
        button.handle_timer(now)
    assert list(button.events()) == []
    button.handle_timer(9.0)
    assert list(button.events()) == [PeerSilent(silent_for=9.0)]
    button.handle_timer(20.0)
    assert list(button.events()) == []


def test_only_whole_frames_count_as_proof_of_life():
    # The code's rule since c930bde; docs/protocol.md section 7 still says a
    # partly received frame counts.
    pair = _timed_pair()
    relay = pair.relay
    heartbeat = pair.client.send(Heartbeat())
    # A peer trickling a partial frame does not keep the session alive.
    assert pair.to_relay(heartbeat[:10], 5.0) == []
    relay.handle_timer(9.0)
    assert list(relay.events()) == [PeerSilent(silent_for=9.0)]
    # The frame completes: that is life, and supervision starts over from then.
    assert pair.to_relay(heartbeat[10:], 9.5) == [Heartbeat()]
    assert relay.get_timer() == min(relay.last_sent + 4.0, 9.5 + 9.0)
    relay.handle_timer(18.4)
    assert list(relay.events()) == []
    relay.handle_timer(18.5)
    assert list(relay.events()) == [PeerSilent(silent_for=9.0)]


@pytest.mark.parametrize("start", [0.1, 0.3, 1.7, 12345.678, 1e6 + 0.1])
@pytest.mark.parametrize("interval", [0.1, 0.3, 7.3, 10.0])
def test_handle_timer_at_the_get_timer_deadline_always_acts(start, interval):
    """A caller that sleeps until get_timer() and calls handle_timer() must get a heartbeat.

    Otherwise a loop driven by a mock clock (or a clock that returns the
    deadline exactly) spins without time moving on.
    """
    pair = button_pair(
        now=start, relay_kwargs={"heartbeat_interval": interval, "supervision_window": 2 * interval}
    )
    for conn in (pair.client, pair.relay):
        deadline = conn.get_timer()
        assert deadline == start + interval
        assert conn.handle_timer(deadline) != b""
        assert conn.get_timer() > deadline
        # Next comes the heartbeat or the supervision deadline (about start + 2 * interval,
        # whichever float sum is smaller); handling it must act either way.
        sent = conn.handle_timer(conn.get_timer())
        assert sent or [type(e) for e in conn.events()] == [PeerSilent]


# -- end of stream -------------------------------------------------------------


@pytest.mark.parametrize("make_pair", [button_pair, console_pair], ids=["button", "console"])
@pytest.mark.parametrize("side", ["client", "relay"])
def test_empty_bytes_mean_the_peer_closed(make_pair, side):
    pair = make_pair()
    conn = getattr(pair, side)
    conn.receive_data(b"", 5.0)
    [event] = list(conn.events())
    assert isinstance(event, ConnectionClosed) and event.reason
    assert conn.closed and conn.error is None
    assert conn.get_timer() is None and conn.handle_timer(1e9) == b""
    conn.receive_data(b"", 6.0)
    assert conn.next_event() is None  # reported once
    with pytest.raises(StateError):
        conn.send(Heartbeat())


def test_empty_bytes_during_the_handshake():
    from pinkrelay.protocol import RelayConnection

    relay = RelayConnection(role="button")
    relay.receive_data(b"", 0.0)
    assert isinstance(relay.next_event(), ConnectionClosed)
    assert relay.closed and relay.get_timer() is None


def test_tail_of_a_message_discarded_before_its_description_is_never_delivered():
    """First chunks arrive before the description, the rest after: no half message passes."""
    from pinkrelay.protocol import ButtonConnection, RelayConnection, StreamDescription, TrackDescription

    button = ButtonConnection("kp-race-1", b"s" * 20)
    relay = RelayConnection(role="button")
    relay.receive_data(button.hello(0.0), 0.0)
    list(relay.events())
    button.receive_data(relay.challenge(0.0), 0.0)
    list(button.events())
    relay.receive_data(button.authenticate(0.0), 0.0)
    list(relay.events())
    relay.verify(b"s" * 20)
    button.receive_data(relay.welcome(session="s", track_ids=(7, 8), chunk_size=256), 0.0)
    list(button.events())
    description = StreamDescription(tracks=[TrackDescription(track_id=7, kind="video", codec="h264")])
    description_bytes = button.send(description)
    chunks = button.send_media(7, 1, 10, b"k" * 600, keyframe=True)
    assert len(chunks) == 3
    relay.receive_data(chunks[0], 1.0)
    relay.receive_data(description_bytes, 1.0)
    relay.receive_data(b"".join(chunks[1:]), 1.0)
    events = list(relay.events())
    assert [type(e).__name__ for e in events] == ["StreamDescription"]
    assert relay.discarded_media == 3
    relay.receive_data(b"".join(button.send_media(7, 2, 20, b"n" * 300)), 2.0)
    media = list(relay.events())
    assert len(media) == 1 and media[0].seq == 2 and media[0].data == b"n" * 300


def test_a_real_h264_and_opus_stream_passes_the_codec_split_anywhere_and_decodes_back():
    """Two seconds of H.264 + Opus made with PyAV: button → bytes cut at random → relay → decoder."""
    from pinkrelay.media import Decoder, EncodedPacket, encode_clip

    clip = encode_clip(2.0, 320, 240, 15, 300_000, audio="opus", label="codec test")
    pair = button_pair()  # chunk size 256: every video frame goes out in several chunks
    video = TrackDescription(track_id=TRACK_IDS[0], kind="video", codec="h264", width=320, height=240, fps=15.0,
                             bitrate=300_000, extradata=clip.video.extradata)
    audio = TrackDescription(track_id=TRACK_IDS[1], kind="audio", codec="opus", sample_rate=48000, channels=1,
                             bitrate=32_000, extradata=clip.audio.extradata)
    described(pair, video, audio)
    track_of = {"video": video.track_id, "audio": audio.track_id}
    seqs = {"video": 0, "audio": 0}
    sent, wire = [], bytearray()
    for packet in clip.packets:
        track = track_of[packet.kind]
        for frame in pair.client.send_media(track, seqs[packet.kind], packet.pts_us, packet.data, packet.keyframe):
            wire += frame
        sent.append((track, seqs[packet.kind], packet.pts_us, packet.keyframe, bytes(packet.data)))
        seqs[packet.kind] += 1
    assert max(len(p.data) for p in clip.packets if p.kind == "video") > 5 * 256  # chunked for real
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(wire)), 400))
    received = []
    for start, stop in itertools.pairwise([0, *cuts, len(wire)]):
        received += [media_fields(e) for e in pair.to_relay(bytes(wire[start:stop])) if isinstance(e, Media)]
    assert received == sent

    decoders = {video.track_id: Decoder(clip.video), audio.track_id: Decoder(clip.audio)}
    frames = {video.track_id: [], audio.track_id: []}
    for track, _, pts, keyframe, data in received:
        packet = EncodedPacket(kind="", data=data, pts_us=pts, duration_us=0, keyframe=keyframe)
        frames[track] += decoders[track].decode(packet)
    assert len(frames[video.track_id]) == seqs["video"] == 30
    assert {(f.width, f.height) for f in frames[video.track_id]} == {(320, 240)}
    assert len(frames[audio.track_id]) == seqs["audio"] >= 100  # 20 ms Opus frames over 2 s

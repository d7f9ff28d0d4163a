"""Talk-back (relay → button, docs/protocol.md §5.19) in the sans-IO protocol: who may send it, lane, bodies.

Pairs of protocol objects in memory (protocol_pair.py): no socket. The
split-anywhere and body round-trip properties cover ``TalkBack`` in
test_protocol_properties.py with every other control event.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinkrelay._core import FrameDecoder, FrameType, Lane, SendQueue, encode_frame, encode_media
from pinkrelay.errors import MessageError, StateError
from pinkrelay.protocol import Hello, TalkBack, decode_body, encode_body, frame_lane
from pinkrelay.protocol.events import MAX_TALKBACK_PACKET

from protocol_pair import button_pair, console_pair, control_frame

OPUS_SILENCE = b"\xf8\xff\xfe"  # one 20 ms Opus frame of silence (TOC 0xf8, CELT FB mono)


def first_packet(**overrides) -> TalkBack:
    fields = dict(talk_id="talk-1", seq=0, captured_at=1_764_374_401_250_000, packet=OPUS_SILENCE,
                  operator="asma", alert_id="019acce8-d0d2-7c3a-9f1e-2b4d6c8a0e11")
    fields.update(overrides)
    return TalkBack(**fields)


def test_talkback_travels_in_the_control_lane_behind_only_alerts():
    assert frame_lane(FrameType.TALKBACK) == Lane.CONTROL == 1
    pair = button_pair(talkback=True)
    wire = pair.relay.send(first_packet(), 0.0)
    [frame] = FrameDecoder().decode(wire)
    assert (frame.type, frame.lane, frame.track, frame.flags, frame.timestamp) == (0x30, 1, 0, 0x02, 0)


def test_a_button_that_offered_talkback_receives_it_in_order():
    pair = button_pair(talkback=True)
    assert pair.relay.hello is not None and pair.relay.hello.talkback is True
    packets = [first_packet(), first_packet(seq=1, operator="", alert_id=""),
               first_packet(seq=2, packet=b"", end=True, operator="", alert_id="")]
    received = pair.to_client(b"".join(pair.relay.send(p, 0.0) for p in packets))
    assert received == packets


def test_the_relay_refuses_to_send_talkback_to_a_button_that_did_not_offer_it():
    pair = button_pair()
    assert pair.relay.hello is not None and pair.relay.hello.talkback is False
    with pytest.raises(StateError, match="did not say talkback in its hello"):
        pair.relay.send(first_packet(), 0.0)


def test_a_button_may_not_send_talkback():
    pair = button_pair(talkback=True)
    with pytest.raises(StateError, match="cannot send TalkBack"):
        pair.client.send(first_packet())
    with pytest.raises(StateError, match="TALKBACK not allowed"):
        pair.to_relay(control_frame(first_packet()))
    assert pair.relay.closed


def test_consoles_neither_send_nor_receive_talkback():
    pair = console_pair()
    with pytest.raises(StateError):
        pair.relay.send(first_packet())
    with pytest.raises(StateError, match="TALKBACK not allowed"):
        pair.to_client(control_frame(first_packet()))
    with pytest.raises(StateError):
        console_pair().client.send(first_packet())


def test_a_hello_without_talkback_is_byte_for_byte_the_v1_hello():
    plain = Hello(role="button", identity="mkt-017", counter=1764374400000000, software="pb-fw 2.3")
    assert "talkback" not in msgpack.unpackb(encode_body(plain))
    offered = Hello(role="button", identity="mkt-017", counter=1764374400000000, software="pb-fw 2.3",
                    talkback=True)
    assert msgpack.unpackb(encode_body(offered))["talkback"] is True
    assert decode_body(FrameType.HELLO, encode_body(offered)) == offered


def test_only_the_first_and_last_messages_carry_more_than_the_packet():
    middle = msgpack.unpackb(encode_body(first_packet(seq=5, operator="", alert_id="")))
    assert sorted(middle) == ["captured_at", "packet", "seq", "talk_id"]
    last = msgpack.unpackb(encode_body(first_packet(seq=6, packet=b"", end=True, operator="", alert_id="")))
    assert last["end"] is True


@pytest.mark.parametrize(
    "body, field",
    [
        ({"talk_id": "t", "seq": 0, "packet": b"\x00" * (MAX_TALKBACK_PACKET + 1)}, "packet"),
        ({"talk_id": "t", "seq": 0, "packet": "text, not bytes"}, "packet"),
        ({"talk_id": "t", "seq": -1}, "seq"),
        ({"talk_id": "t", "seq": 2**32}, "seq"),
        ({"talk_id": "", "seq": 0}, "talk_id"),
        ({"seq": 0}, "talk_id"),
        ({"talk_id": "t", "seq": 0, "end": 1}, "end"),
        ({"talk_id": "t", "seq": 0, "captured_at": -5}, "captured_at"),
    ],
)
def test_a_lying_talkback_body_is_a_bad_message_naming_the_field(body, field):
    payload = msgpack.packb(body, use_bin_type=True)
    with pytest.raises(MessageError, match=field):
        decode_body(FrameType.TALKBACK, payload, max_bytes=1 << 20)
    # At a button it ends the session with bad-message, like any bad control body.
    pair = button_pair(talkback=True)
    if len(payload) <= 16384:
        with pytest.raises(MessageError) as raised:
            pair.to_client(encode_frame(FrameType.TALKBACK, Lane.CONTROL, 0, 1, 0, payload))
        assert raised.value.code == "bad-message"
        assert pair.client.closed


@settings(deadline=None, max_examples=40)
@given(st.lists(st.binary(min_size=1, max_size=400), min_size=1, max_size=30))
def test_queued_talkback_leaves_after_alerts_and_before_every_media_frame(packets):
    """The lane order of §4.1 and §4.2, seen from a relay's queue to one button (both cores).

    A relay sends a button no media today, but a queue that held some would
    still put talk-back ahead of it, within the control lane's credits.
    """
    queue = SendQueue()
    pair = button_pair(talkback=True)
    queue.push(3, encode_media(101, 3, 1, 0, bytes(2000), keyframe=True, chunk_size=512), track=101,
               keyframe=True)
    queue.push(2, encode_media(102, 2, 1, 0, bytes(300)), track=102)
    for seq, packet in enumerate(packets):
        queue.push(1, [pair.relay.send(TalkBack(talk_id="t", seq=seq, packet=packet))])
    queue.push(0, [encode_frame(FrameType.ALERT_ACK, 0, 0, 1, 0, msgpack.packb({"alert_id": "a"}))])
    out = bytearray()
    while not queue.empty:
        data = bytes(queue.peek()[0])
        out += data
        queue.consume(len(data))
    frames = list(FrameDecoder().decode(bytes(out)))
    lanes = [f.lane for f in frames]
    assert lanes[0] == 0, "the alert lane first"
    talk = [i for i, f in enumerate(frames) if f.type == FrameType.TALKBACK]
    media = [i for i, f in enumerate(frames) if f.type == FrameType.MEDIA]
    assert len(talk) == len(packets)
    # The control lane's 16 credits a round (§4.2): up to 16 talk-back packets go before any
    # media frame, and media is never starved by talk-back either.
    assert talk[: 16] == list(range(1, 1 + min(16, len(packets)))), "talk-back right after the alert"
    assert min(media) > talk[min(16, len(packets)) - 1]
    decoded = [decode_body(f.type, f.payload) for f in frames if f.type == FrameType.TALKBACK]
    assert [d.packet for d in decoded] == packets

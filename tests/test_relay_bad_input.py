"""Bad peers are refused or dropped with a logged reason; everyone else carries on."""

from __future__ import annotations

import logging
import struct

import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.protocol import Alert, Challenge, Error, Welcome

from relay_helpers import (
    button_client,
    button_ids,
    console_client,
    raw_button,
    raw_session,
    read_events,
    running_relay,
)


async def _attempt(address, conn, *, proof_override=None):
    """Walk the handshake; return (events seen, bytes we sent)."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    sent = [conn.hello(trio.current_time())]
    await stream.send_all(sent[0])
    events = []
    with trio.move_on_after(3):
        while True:
            data = await stream.receive_some(65536)
            conn.receive_data(data, trio.current_time())
            try:
                for event in conn.events():
                    events.append(event)
                    if isinstance(event, Challenge):
                        sent.append(proof_override or conn.authenticate(trio.current_time()))
                        await stream.send_all(sent[-1])
            except pinkrelay.ProtocolError:
                break
            if not data or any(isinstance(e, (Welcome, Error)) for e in events):
                break
    await stream.aclose()
    return events, sent


async def _send_raw(address, payload: bytes) -> list:
    """Send bytes that are not a valid session and read the relay's answer."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(payload)
    received = b""
    with trio.move_on_after(3):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            received += data
    await stream.aclose()
    decoder = pinkrelay._core.FrameDecoder()
    frames = decoder.decode(received) if received else []
    return [pinkrelay.protocol.decode_body(f.type, f.payload) for f in frames]


@pytest.fixture
def captured(caplog):
    caplog.set_level(logging.INFO, logger="pinkrelay")
    return caplog


@trio_test
async def test_bad_peers_are_refused_and_everyone_else_continues(tmp_path, captured):
    good_id, other_id = button_ids(2)
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        refusals = []
        async with relay.open_event_stream() as relay_events:

            async def collect():
                async for event in relay_events:
                    if isinstance(event, (pinkrelay.AuthRefused, pinkrelay.ProtocolViolation)):
                        refusals.append(event)

            nursery.start_soon(collect)
            console = console_client(relay)
            await nursery.start(console.run)
            good = button_client(relay, good_id)
            await nursery.start(good.run)

            # Wrong secret.
            events, _ = await _attempt(relay.buttons_address, raw_button(other_id, b"not-the-secret-at-all"))
            assert isinstance(events[-1], Error) and events[-1].code == "auth"
            assert "wrong proof" not in events[-1].message, "the public reason must not say why"
            # Unknown button.
            events, _ = await _attempt(relay.buttons_address, raw_button("kp-nobody-999", b"x" * 20))
            assert isinstance(events[-1], Error) and events[-1].code == "auth"
            # Replayed handshake: a captured hello and proof, sent again on a new connection.
            genuine = raw_button(other_id, counter=1_000_000)
            events, sent = await _attempt(relay.buttons_address, genuine)
            assert isinstance(events[-1], Welcome)
            replay = raw_button(other_id, counter=1_000_000)
            events, _ = await _attempt(relay.buttons_address, replay, proof_override=sent[1])
            assert isinstance(events[-1], Error) and events[-1].code == "auth"
            # Garbage bytes on both listeners.
            answer = await _send_raw(relay.buttons_address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer and answer[-1].code == "bad-frame"
            answer = await _send_raw(relay.consoles_address, b"\x00" * 64)
            assert answer and answer[-1].code == "bad-frame"
            # A header that declares a 2 GiB control frame.
            lying = b"PR" + struct.pack(">BBBBHIqI", 1, 0x01, 0x02, 1, 0, 1, 0, 2**31)
            answer = await _send_raw(relay.buttons_address, lying)
            assert answer and answer[-1].code == "limit"
            # A console on the button port.
            events, _ = await _attempt(
                relay.buttons_address, pinkrelay.protocol.ConsoleConnection("desk-1", b"y" * 20)
            )
            assert isinstance(events[-1], Error) and events[-1].code == "wrong-listener"

            # The good button and the console never noticed.
            receipt = await good.press(timeout=5)
            with trio.fail_after(5):
                async for event in console.events():
                    if isinstance(event, Alert) and event.alert_id == receipt.alert_id:
                        break
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()

    assert relay.counters["auth_failures"] == 3
    assert relay.counters["protocol_errors"] == 4
    reasons = " | ".join(r.reason for r in refusals)
    assert "wrong proof" in reasons
    assert "not in the registry" in reasons
    assert "bad magic" in reasons
    assert "exceeds max_control_bytes" in reasons
    logged = captured.text
    assert "refused button kp-nobody-999" in logged
    assert f"refused button {other_id}" in logged
    assert "protocol error from button" in logged


@trio_test
async def test_oversize_media_frame_drops_only_that_button(tmp_path):
    first, second = button_ids(2)
    async with running_relay(tmp_path, max_frame_bytes=32 * 1024, chunk_size=16 * 1024) as relay:
        bad = raw_button(first)
        bad_stream = await raw_session(relay.buttons_address, bad)
        tracks = bad.track_ids
        description = pinkrelay.protocol.StreamDescription(
            tracks=[pinkrelay.TrackDescription(track_id=tracks[0], kind="video", codec="h264")]
        )
        await bad_stream.send_all(bad.send(description))
        bad.chunk_size = 60 * 1024  # ignore what the relay asked for
        for frame in bad.send_media(tracks[0], 0, 0, b"\x00" * 60 * 1024, keyframe=True):
            await bad_stream.send_all(frame)
        events = await read_events(bad_stream, bad, until=lambda evs: False, timeout=1)
        errors = [e for e in events if isinstance(e, Error)]
        assert errors and errors[0].code == "limit"

        good = raw_button(second)
        good_stream = await raw_session(relay.buttons_address, good)
        await good_stream.send_all(good.send(Alert(alert_id="a-after-the-bad-one", pressed_at=1)))
        acks = await read_events(good_stream, good, until=lambda evs: any(
            isinstance(e, pinkrelay.AlertAck) for e in evs), timeout=3)
        assert any(isinstance(e, pinkrelay.AlertAck) for e in acks)
        await good_stream.aclose()


@trio_test
async def test_a_handshake_cut_short_by_garbage_is_logged_as_the_garbage(tmp_path, caplog):
    """hello and bad bytes in one write: the log names the bad bytes, not the challenge the relay could not send."""
    caplog.set_level(logging.DEBUG, "pinkrelay.relay")
    async with running_relay(tmp_path) as relay:
        conn = raw_button(button_ids(1)[0])
        stream = await trio.open_tcp_stream(relay.buttons_address.host, relay.buttons_address.port)
        await stream.send_all(conn.hello(trio.current_time()) + b"garbage-garbage-garbage-garbage")
        with trio.move_on_after(2):
            while await stream.receive_some(65536):
                pass
        await stream.aclose()
        await trio.sleep(0.1)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("protocol error from button" in w and "bad magic" in w for w in warnings), warnings
        assert not any("cannot send" in w for w in warnings), warnings
        assert relay.counters["protocol_errors"] == 1

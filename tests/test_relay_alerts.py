"""Alerts through the real relay while buttons stream real H.264 and Opus."""

from __future__ import annotations

import socket

import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.media import encode_clip
from pinkrelay.protocol import Alert, Media, Subscribe, Subscribed

from relay_helpers import (
    button_client,
    button_ids,
    console_client,
    handshake,
    raw_console,
    read_events,
    running_relay,
    stream_clip,
    wall_us,
    TOKEN,
)


@pytest.fixture(scope="module")
def clip():
    return encode_clip(2, width=320, height=240, fps=30, bitrate=400_000, label="test")


def tracks_of(clip):
    return [clip.video.to_dict(), clip.audio.to_dict()]


@trio_test
async def test_alert_reaches_every_console_while_20_buttons_stream(tmp_path, clip):
    ids = button_ids(20)
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        consoles = [
            console_client(relay, "desk-1", TOKEN),
            console_client(relay, "desk-2", TOKEN + "-2"),
            console_client(relay, "desk-3", TOKEN + "-3"),
        ]
        for console in consoles:
            await nursery.start(console.run)
        for button_id in ids:
            consoles[0].subscribe(button_id)
        for button_id in ids[:5]:
            consoles[1].subscribe(button_id)
        buttons = [button_client(relay, button_id, tracks_of(clip)) for button_id in ids]
        for button in buttons:
            await nursery.start(button.run)
        for button in buttons:
            nursery.start_soon(lambda b=button: stream_clip(b, clip, seconds=3.0))

        received: dict[str, list[Alert]] = {c.operator: [] for c in consoles}
        media_seen: dict[str, int] = {c.operator: 0 for c in consoles}

        async def watch(console):
            async for event in console.events():
                if isinstance(event, Alert):
                    received[console.operator].append(event)
                elif isinstance(event, Media):
                    media_seen[console.operator] += 1

        async with trio.open_nursery() as watchers:
            for console in consoles:
                watchers.start_soon(watch, console)
            await trio.sleep(1.0)
            receipt = await buttons[7].press(timeout=5)
            await trio.sleep(1.0)
            watchers.cancel_scope.cancel()
        nursery.cancel_scope.cancel()

    assert receipt.duplicate is False
    assert receipt.latency_ms < 1000
    for console in consoles:
        alerts = [a for a in received[console.operator] if a.alert_id == receipt.alert_id]
        assert len(alerts) == 1, f"{console.operator} got {len(alerts)} copies of the alert"
        alert = alerts[0]
        assert alert.button == ids[7]
        assert alert.site is not None and alert.site.name
        assert alert.state == "raised" and alert.cursor >= 1
    assert media_seen["desk-1"] > 20 * 30, "the console watching every button got too little media"
    assert media_seen["desk-2"] > 5 * 30
    assert media_seen["desk-3"] == 0, "a console that subscribed to nothing received media"


@trio_test
async def test_alert_overtakes_media_already_queued_for_a_console(tmp_path, clip):
    """A console that reads slowly has media queued in the relay; the alert jumps it."""
    ids = button_ids(5)
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((relay.consoles_address.host, relay.consoles_address.port))
        stream = trio.SocketStream(sock)
        conn = raw_console()
        await handshake(stream, conn)
        for button_id in ids:
            await stream.send_all(conn.send(Subscribe(button=button_id)))
        buttons = [button_client(relay, button_id, tracks_of(clip)) for button_id in ids]
        for button in buttons:
            await nursery.start(button.run)
            nursery.start_soon(lambda b=button: stream_clip(b, clip, seconds=4.0))

        await trio.sleep(1.5)  # the console reads nothing: media piles up in the relay
        session = next(s for s in relay.consoles)
        queued_before = session.outbox.lane_bytes(pinkrelay._core.Lane.VIDEO)
        press_time = wall_us()
        pending = buttons[0].start_press()
        await trio.sleep(0.2)

        events = await read_events(
            stream,
            conn,
            until=lambda evs: any(isinstance(e, Alert) for e in evs)
            and sum(isinstance(e, Media) for e in evs[[isinstance(x, Alert) for x in evs].index(True):]) > 40,
            timeout=10,
        )
        await pending.done.wait()
        nursery.cancel_scope.cancel()

    assert queued_before > 0, "the test needs media queued in the relay when the alert is raised"
    position = next(i for i, e in enumerate(events) if isinstance(e, Alert))
    older_media_after_alert = [
        e for e in events[position + 1 :] if isinstance(e, Media) and e.timestamp < press_time
    ]
    assert older_media_after_alert, "no media captured before the press arrived after the alert"
    assert any(isinstance(e, Subscribed) for e in events[:position])


@trio_test
async def test_retried_press_is_recorded_once(tmp_path):
    """The button retries with the same alert id (e.g. its ack was lost): one alert, two acks."""
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        button = button_client(relay, button_ids(1)[0], retry_interval=0.2)
        await nursery.start(button.run)
        alerts = []

        async def watch():
            async for event in console.events():
                if isinstance(event, Alert):
                    alerts.append(event)

        nursery.start_soon(watch)
        first = await button.press(alert_id="0190d6a0-0000-7000-8000-000000000001", timeout=5)
        second = await button.press(alert_id="0190d6a0-0000-7000-8000-000000000001", timeout=5)
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()

    assert first.duplicate is False
    assert second.duplicate is True
    assert [a.alert_id for a in alerts] == ["0190d6a0-0000-7000-8000-000000000001"]
    assert relay.counters["duplicate_alerts"] == 1

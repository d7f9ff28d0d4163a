"""Abuse limits with real floods on loopback: the flood is turned away, the button that matters gets through.

Floods come from other loopback addresses (127.0.0.2, 127.0.0.3 …: every
127/8 address is this machine), the legitimate button from 127.0.0.1, each
over real sockets to a real relay; media is real PyAV H.264 + Opus.
"""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio
from trio.testing import trio_test

from pinkrelay import Address
from pinkrelay.media import encode_clip
from pinkrelay.ops import serve_metrics
from pinkrelay.protocol import Error, Media, Subscribed
from pinkrelay.web import serve_web

from relay_helpers import (
    button_client,
    button_ids,
    collect_events,
    console_client,
    raw_button,
    running_relay,
    stream_clip,
    wait_until,
)


@pytest.fixture(scope="module")
def heavy_clip():
    # About 500 kbit/s of real H.264 + Opus: 2.5 times the 200 kbit/s limit set below.
    return encode_clip(2, width=640, height=360, fps=30, bitrate=2_000_000, label="heavy", gop_seconds=0.5)


@pytest.fixture(scope="module")
def light_clip():
    return encode_clip(2, width=160, height=120, fps=10, bitrate=60_000, label="light")


async def open_from(source: str, address) -> trio.SocketStream:
    """A TCP connection to ``address`` from the loopback address ``source``."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect((address.host, address.port))
    return trio.SocketStream(sock)


async def refusal_of(stream: trio.SocketStream, timeout: float = 3.0) -> Error | None:
    """The error frame the relay sends before closing, if any."""
    conn = raw_button("kp-test-001")
    with trio.move_on_after(timeout):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            conn.receive_data(data, trio.current_time())
            for event in conn.events():
                if isinstance(event, Error):
                    return event
            if not data:
                return None
    return None


async def press_is_acked_within(relay, button_id: str, seconds: float) -> float:
    async with trio.open_nursery() as nursery:
        button = button_client(relay, button_id)
        started = trio.current_time()
        await nursery.start(button.run)
        await button.press(timeout=seconds)
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    return elapsed


@trio_test
async def test_slowloris_on_all_three_ports_leaves_a_button_its_alert_within_a_second(tmp_path):
    async with running_relay(tmp_path, max_unauthenticated_per_address=20, handshake_rate_per_address=0) as relay, \
            trio.open_nursery() as nursery:
        room = await nursery.start(serve_web, relay, Address("127.0.0.1", 0))
        web = Address.parse(room.url.split("//", 1)[1].rstrip("/"))
        held: list[trio.SocketStream] = []
        refused = []
        # 60 half-open connections per port, each trickling one byte: a third of them are admitted.
        for target, first_byte in ((relay.buttons_address, b"P"), (relay.consoles_address, b"P"),
                                   (web, b"G")):
            for _ in range(60):
                stream = await open_from("127.0.0.2", target)
                await stream.send_all(first_byte)
                held.append(stream)
        await trio.sleep(0.2)
        for stream in held[:120]:  # the two protocol ports answer refusals with an error frame
            with trio.move_on_after(0.05):
                error = await refusal_of(stream, timeout=0.05)
                if error is not None:
                    refused.append(error)
        assert len(refused) >= 2 * 40 - 5  # 40 refused per protocol port (a few may still be in flight)
        assert {e.code for e in refused} == {"busy"}
        assert all("max_unauthenticated_per_address" in e.message for e in refused)

        elapsed = await press_is_acked_within(relay, button_ids(1)[0], 1.0)
        assert elapsed < 1.0
        assert relay.admission.refused["unauthenticated_per_address"] >= 80
        for stream in held:
            await stream.aclose()
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_signed_in_button_no_longer_counts_against_its_address(tmp_path):
    # Buttons behind one NAT share an address: 30 of them sign in one after another past a limit of 5.
    async with running_relay(tmp_path, registry_size=30, max_unauthenticated_per_address=5) as relay, \
            trio.open_nursery() as nursery:
        buttons = [button_client(relay, button_id) for button_id in button_ids(30)]
        for button in buttons:
            await nursery.start(button.run)
        await wait_until(lambda: len(relay.sessions_by_button) == 30, what="30 buttons signed in")
        assert relay.admission.unauthenticated_total == 0
        assert relay.admission.refused["unauthenticated_per_address"] == 0
        nursery.cancel_scope.cancel()


@trio_test
async def test_total_unauthenticated_cap_and_its_release(tmp_path):
    async with running_relay(tmp_path, max_unauthenticated=10, max_unauthenticated_per_address=100) as relay:
        held = [await open_from(f"127.0.0.{3 + i % 5}", relay.buttons_address) for i in range(10)]
        await wait_until(lambda: relay.admission.unauthenticated_total == 10, what="10 half-open connections")
        extra = await open_from("127.0.0.9", relay.buttons_address)
        error = await refusal_of(extra)
        assert error is not None and error.code == "busy" and error.fatal
        assert "10 connections have not signed in yet (max_unauthenticated)" in error.message
        # A real button turned away with 'busy' retries (it is no refusal of the device) and gets in
        # once the half-open connections are gone.
        async with trio.open_nursery() as nursery:
            button = button_client(relay, button_ids(1)[0], backoff_initial=0.05, backoff_max=0.2)
            nursery.start_soon(button.run)
            await wait_until(lambda: relay.admission.refused["unauthenticated_total"] >= 3,
                             what="the button to be turned away and retry")
            assert not relay.sessions_by_button
            for stream in held:
                await stream.aclose()
            with trio.fail_after(5):
                receipt = await button.press()
            assert receipt.alert_id
            nursery.cancel_scope.cancel()


@trio_test
async def test_handshake_rate_per_address(tmp_path):
    async with running_relay(tmp_path, handshake_rate_per_address=2.0, handshake_burst_per_address=5) as relay:
        streams = [await open_from("127.0.0.4", relay.buttons_address) for _ in range(12)]
        answers = []
        for stream in streams:  # the refusals wait in the sockets already
            answers.append(await refusal_of(stream, timeout=0.2))
            await stream.aclose()
        refused = [a for a in answers if a is not None and a.code == "busy"]
        # The burst of 5 passes (the relay only times them out); at 2 a second, one more may refill.
        assert 6 <= len(refused) <= 7, [a and a.message for a in answers]
        assert "handshake_rate_per_address" in refused[0].message
        # Another address is untouched.
        elapsed = await press_is_acked_within(relay, button_ids(1)[0], 1.0)
        assert elapsed < 1.0


@trio_test
async def test_a_button_over_its_bitrate_is_throttled_then_closed_and_others_keep_flowing(
        tmp_path, heavy_clip, light_clip):
    heavy_id, light_id = button_ids(2)
    async with running_relay(tmp_path, max_button_bitrate=200_000, media_overrun_close=1.0) as relay, \
            trio.open_nursery() as nursery:
        ops = await nursery.start(serve_metrics, relay, "127.0.0.1:0")
        console = console_client(relay)
        await nursery.start(console.run)
        seen: list = []
        nursery.start_soon(collect_events, console, seen)
        heavy = button_client(relay, heavy_id, [heavy_clip.video.to_dict(), heavy_clip.audio.to_dict()],
                              reconnect=False)
        light = button_client(relay, light_id, [light_clip.video.to_dict(), light_clip.audio.to_dict()])
        await nursery.start(light.run)
        console.subscribe(heavy_id)
        console.subscribe(light_id)
        await wait_until(lambda: sum(isinstance(e, Subscribed) for e in seen) == 2)

        await nursery.start(heavy.run)
        heavy_started = trio.current_time()
        async with trio.open_nursery() as streams:
            streams.start_soon(partial(stream_clip, light, light_clip, seconds=2.0))
            sent_heavy = await stream_clip(heavy, heavy_clip, seconds=4.0)
        await wait_until(lambda: "max_button_bitrate" in (heavy.last_error or ""), timeout=5,
                         what="the heavy button to be closed")
        assert "media above max_button_bitrate 200000 bit/s for 1 s" in heavy.last_error
        connected_for = trio.current_time() - heavy_started

        media = [e for e in seen if isinstance(e, Media)]
        heavy_bytes = sum(len(e.data) for e in media if e.button == heavy_id)
        light_got = sum(1 for e in media if e.button == light_id)
        # Throttled: the console got no more than the 2 s burst plus 200 kbit/s while it was connected.
        assert heavy_bytes <= 25_000 * 2 + 25_000 * connected_for
        assert relay.counters["media_over_bitrate"] >= 5 and sent_heavy
        assert light_got >= len([p for p in light_clip.packets if p.pts_us <= 2_000_000]) - 2
        assert relay.counters["closed_over_bitrate"] == 1
        text = (await httpx.AsyncClient().get(ops.url + "/metrics")).text
        assert 'pinkrelay_refusals_total{reason="over_bitrate"} 1.0' in text
        assert 'pinkrelay_dropped_total{reason="over_bitrate"}' in text
        nursery.cancel_scope.cancel()


@trio_test
async def test_subscriptions_per_console(tmp_path):
    first, second, third = button_ids(3)
    async with running_relay(tmp_path, max_subscriptions_per_console=2) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        seen: list = []
        nursery.start_soon(collect_events, console, seen)
        for button_id in (first, second, third):
            console.subscribe(button_id)
        await wait_until(lambda: any(isinstance(e, Error) for e in seen), what="the refusal")
        error = next(e for e in seen if isinstance(e, Error))
        assert error.code == "subscription-limit" and not error.fatal
        assert "max_subscriptions_per_console" in error.message and third in error.message
        assert [e.button for e in seen if isinstance(e, Subscribed)] == [first, second]
        console.subscribe(first)  # watching one already watched again is no new subscription
        console.unsubscribe(second)
        console.subscribe(third)
        await wait_until(lambda: [e.button for e in seen if isinstance(e, Subscribed)][-1:] == [third]
                         and sum(isinstance(e, Subscribed) for e in seen) >= 4, what="the third subscription")
        assert sum(isinstance(e, Error) for e in seen) == 1
        nursery.cancel_scope.cancel()

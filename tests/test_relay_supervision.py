"""Button supervision: silent buttons raise 'button offline', returning ones clear it."""

from __future__ import annotations

import trio
from trio.testing import trio_test

from pinkrelay.protocol import Alert, ButtonState, Goodbye, Heartbeat
from pinkrelay.relay.supervision import Supervisor

from relay_helpers import button_ids, raw_button, raw_console, raw_session, read_events, running_relay


def test_supervisor_reports_offline_once_after_the_window():
    supervisor = Supervisor(window=20.0)
    assert supervisor.seen("kp-1", 0.0) is True
    assert supervisor.seen("kp-1", 5.0) is False
    assert supervisor.next_deadline() == 20.0
    assert supervisor.expire(19.9) == []
    assert supervisor.expire(20.0) == []  # seen at 5.0: its window now ends at 25.0
    assert supervisor.is_online("kp-1")
    assert supervisor.expire(25.0) == ["kp-1"]
    assert supervisor.expire(100.0) == []
    assert not supervisor.is_online("kp-1")
    assert supervisor.seen("kp-1", 101.0) is True


def test_supervisor_keeps_one_deadline_per_button_however_many_frames():
    supervisor = Supervisor(window=2.0)
    for tick in range(10_000):
        supervisor.seen("kp-1", tick * 0.001)
    assert len(supervisor._deadlines) == 1
    assert supervisor.expire(11.9) == []
    assert supervisor.expire(12.0) == ["kp-1"]


@trio_test
async def test_silent_button_goes_offline_within_the_window_and_returns(tmp_path):
    window = 0.8
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path, heartbeat_interval=0.2, supervision_window=window) as relay:
        console = raw_console()
        console_stream = await raw_session(relay.consoles_address, console)
        button_stream = await raw_session(relay.buttons_address, raw_button(button_id))
        online_at = trio.current_time()
        async with trio.open_nursery() as nursery:
            # The console proves it is alive (the relay supervises consoles too); the button does not.
            nursery.start_soon(_keep_alive, console_stream, console)
            await _offline_then_back(relay, console_stream, console, button_stream, button_id, window, online_at)
            nursery.cancel_scope.cancel()
        await console_stream.aclose()


async def _keep_alive(stream, conn):
    while True:
        await trio.sleep(0.1)
        await stream.send_all(conn.send(Heartbeat(sent_at=1), trio.current_time()))


async def _offline_then_back(relay, console_stream, console, button_stream, button_id, window, online_at):
    """The button stops: offline within the window, one offline alert; it returns: online."""

    def state(name):
        def seen(events):
            return any(
                isinstance(e, ButtonState) and e.state == name and e.button == button_id for e in events
            )

        return seen

    offline = state("offline")
    events = await read_events(console_stream, console, until=state("online"), timeout=5)
    assert state("online")(events)
    events = await read_events(console_stream, console, until=offline, timeout=5)
    offline_after = trio.current_time() - online_at
    assert offline(events), "no 'offline' state within 5 s"
    events += await read_events(
        console_stream,
        console,
        until=lambda evs: any(isinstance(e, Alert) and e.kind == "offline" for e in evs),
        timeout=2,
    )
    assert window * 0.9 <= offline_after <= window + 0.6, f"offline after {offline_after:.2f} s"
    offline_alerts = [e for e in events if isinstance(e, Alert) and e.kind == "offline"]
    assert len(offline_alerts) == 1 and offline_alerts[0].button == button_id
    assert offline_alerts[0].site is not None

    returning = raw_button(button_id)
    returned = await raw_session(relay.buttons_address, returning)
    await returned.send_all(returning.send(Heartbeat(sent_at=1)))
    events = await read_events(
        console_stream,
        console,
        until=lambda evs: any(isinstance(e, ButtonState) and e.state == "online" for e in evs),
        timeout=3,
    )
    assert any(isinstance(e, ButtonState) and e.state == "online" for e in events)
    await button_stream.aclose()
    await returned.aclose()


@trio_test
async def test_button_sending_heartbeats_stays_online(tmp_path):
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path, heartbeat_interval=0.2, supervision_window=0.6) as relay:
        button = raw_button(button_id)
        button_stream = await raw_session(relay.buttons_address, button)
        console = raw_console()
        console_stream = await raw_session(relay.consoles_address, console)
        with trio.move_on_after(2.0):
            async with trio.open_nursery() as nursery:

                async def beat():
                    while True:
                        await trio.sleep(0.2)
                        await button_stream.send_all(button.send(Heartbeat(sent_at=1)))

                nursery.start_soon(beat)
                events = await read_events(console_stream, console, until=lambda evs: False, timeout=1.8)
        states = [e.state for e in events if isinstance(e, ButtonState) and e.button == button_id]
        assert states == ["online"], f"states seen: {states}"
        assert relay.supervisor.is_online(button_id)
        await button_stream.aclose()
        await console_stream.aclose()


@trio_test
async def test_heartbeats_and_supervision_start_at_sign_in_not_at_the_handshake_deadline(tmp_path):
    """The timers were armed for the handshake (10 s) and only then looked again: a quiet relay
    sent no heartbeat and noticed no silent console for the first 10 s of every session."""
    async with running_relay(tmp_path, heartbeat_interval=0.3, supervision_window=1.2) as relay:
        console = raw_console()
        stream = await raw_session(relay.consoles_address, console)
        signed_in = trio.current_time()
        events = await read_events(stream, console, until=lambda evs: any(isinstance(e, Heartbeat) for e in evs),
                                   timeout=2)
        first = trio.current_time() - signed_in
        assert any(isinstance(e, Heartbeat) for e in events) and first < 0.8, f"first heartbeat after {first:.2f} s"
        # This console never sends anything: the relay lets it go after the window, not after 10 s.
        events = await read_events(stream, console, until=lambda evs: any(isinstance(e, Goodbye) for e in evs),
                                   timeout=4)
        gone = trio.current_time() - signed_in
        assert any(isinstance(e, Goodbye) for e in events) and 1.1 <= gone < 2.5, f"dropped after {gone:.2f} s"
        await stream.aclose()

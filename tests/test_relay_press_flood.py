"""A press flood from one button: repeats collapse into its open alert, past a rate they are refused.

The guard is sans-IO (relay/flood.py); the end-to-end test sends 3,000
presses with distinct ids in one burst over a real socket to a real relay,
while a console watches and another button presses.
"""

from __future__ import annotations

import trio
from trio.testing import trio_test

from pinkrelay.ids import uuid7
from pinkrelay.protocol import Alert, AlertAck, AlertUpdate, Error
from pinkrelay.relay.flood import PressGuard

from relay_helpers import (
    button_client,
    collect_events,
    console_client,
    raw_button,
    raw_session,
    read_events,
    running_relay,
    wait_until,
    wall_us,
)


def test_repeats_draw_from_a_bucket_and_a_first_press_always_passes():
    guard = PressGuard(rate=1.0, burst=3)
    assert guard.offer("b", None, 0.0) is None  # the first press: nothing to collapse into
    assert [guard.offer("b", "a1", 0.0) for _ in range(3)] == [None, None, None]
    refused = guard.offer("b", "a1", 0.0)
    assert refused is not None and refused.first and "press_rate_per_button 1/s" in refused.message
    again = guard.offer("b", "a1", 0.5)
    assert again is not None and not again.first and again.refused == 2
    assert guard.offer("b", "a1", 1.6) is None  # a token came back
    assert guard.offer("b", None, 1.6) is None  # suspicious, but a first press is never refused
    assert guard.offer("b", "a2", 1.6) is None  # a new open alert: a fresh bucket
    assert guard.suspicious == {"b"} and guard.stats()["presses_refused"] == 2
    assert PressGuard(rate=0.0, burst=1).offer("b", "a1", 0.0) is None


@trio_test
async def test_three_thousand_presses_at_once_are_refused_past_the_rate_and_told_once(tmp_path):
    flood = 3000
    async with running_relay(tmp_path, press_rate_per_button=1.0, press_burst_per_button=20) as relay:
        async with trio.open_nursery() as nursery:
            console = console_client(relay)
            await nursery.start(console.run)
            seen: list = []
            nursery.start_soon(collect_events, console, seen)
            conn = raw_button("kp-test-001")
            stream = await raw_session(relay.buttons_address, conn)
            started = trio.current_time()
            presses = [Alert(alert_id=uuid7(), pressed_at=wall_us()) for _ in range(flood)]
            await stream.send_all(b"".join(conn.send(press, trio.current_time()) for press in presses))

            def answered(events: list) -> bool:
                return sum(isinstance(e, (AlertAck, Error)) for e in events) >= flood

            answers = await read_events(stream, conn, until=answered, timeout=30)
            elapsed = trio.current_time() - started
            acks = [e for e in answers if isinstance(e, AlertAck)]
            refusals = [e for e in answers if isinstance(e, Error)]
            assert answered(answers), f"{len(acks)} acks and {len(refusals)} refusals of {flood} presses"
            assert acks[0].alert_id == presses[0].alert_id  # the first press is never refused
            assert len(acks) <= 1 + 20 + elapsed * 1.0 + 1
            assert all(e.code == "limit" and not e.fatal and "press_rate_per_button" in e.message
                       for e in refusals)
            assert len(refusals) >= flood - len(acks)
            stored = [a for a in await relay.journal.recent_alerts(0) if a.button == "kp-test-001"]
            assert len(stored) == len(acks)  # refused presses are not journalled

            # Another button's press arrives as usual, and the consoles heard of the flood once.
            other = button_client(relay, "kp-test-002")
            await nursery.start(other.run)
            receipt = await other.press(timeout=5)
            await wait_until(lambda: any(isinstance(e, Alert) and e.alert_id == receipt.alert_id for e in seen),
                             what="the other button's press at the console")
            notes = [e for e in seen if isinstance(e, AlertUpdate) and "suspicious" in e.note]
            assert len(notes) == 1 and notes[0].alert_id == presses[0].alert_id
            assert relay.stats()["buttons_suspicious"] == 1
            flooded_console = [e for e in seen if isinstance(e, Alert) and e.button == "kp-test-001"]
            assert len(flooded_console) == len(acks)
            await stream.aclose()
            nursery.cancel_scope.cancel()

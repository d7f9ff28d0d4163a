"""Operators work alerts through the real relay: lifecycle, escalation, duplicates, resume."""

from __future__ import annotations

import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.protocol import Alert, AlertUpdate, Error

from relay_helpers import TOKEN, button_client, button_ids, console_client, running_relay, wait_until


async def _collect(console, into, kinds=(Alert, AlertUpdate, Error)):
    async for event in console.events():
        if isinstance(event, kinds):
            into.append(event)


@trio_test
async def test_operators_work_an_alert_and_every_console_sees_each_step(tmp_path):
    async with running_relay(tmp_path, escalation_levels=(30.0,)) as relay, trio.open_nursery() as nursery:
        desk1 = console_client(relay)
        desk2 = console_client(relay, "desk-2", TOKEN + "-2")
        for console in (desk1, desk2):
            await nursery.start(console.run)
        seen1, seen2 = [], []
        nursery.start_soon(_collect, desk1, seen1)
        nursery.start_soon(_collect, desk2, seen2)
        button = button_client(relay, button_ids(1)[0])
        await nursery.start(button.run)
        receipt = await button.press(timeout=5)
        alert_id = receipt.alert_id

        desk1.update_alert(alert_id, "dispatched", unit="Mobile-4")  # not acknowledged yet
        await wait_until(lambda: any(isinstance(e, Error) for e in seen1))
        refusal = next(e for e in seen1 if isinstance(e, Error))
        assert refusal.code == "bad-transition" and not refusal.fatal
        assert "cannot go from raised to dispatched" in refusal.message

        def steps(seen):
            return [(e.state, e.operator) for e in seen if isinstance(e, AlertUpdate) and e.alert_id == alert_id]

        # Two desks act in turn; each waits to see the other's step (as people do).
        actions = [
            (desk1, "acknowledged", {}),
            (desk2, "dispatched", {"unit": "Mobile-4", "note": "two officers"}),
            (desk1, "on_scene", {}),
            (desk2, "note", {"note": "victim safe, suspect left"}),
            (desk1, "resolved", {"outcome": "genuine", "category": "harassment", "note": "suspect warned"}),
        ]
        for count, (desk, state, extra) in enumerate(actions, start=1):
            if state == "resolved":  # closing without an outcome is refused, to that desk only, non-fatally
                desk.update_alert(alert_id, state)
                await wait_until(lambda: sum(isinstance(e, Error) for e in seen1) == 2)
                refused = [e for e in seen1 if isinstance(e, Error)][-1]
                assert refused.code == "bad-transition" and not refused.fatal
                assert refused.message == (f"closing alert {alert_id} as resolved needs an outcome: "
                                           "one of genuine, false, test")
                assert not any(isinstance(e, Error) for e in seen2)
            desk.update_alert(alert_id, state, **extra)
            await wait_until(lambda n=count: len(steps(seen1)) == n and len(steps(seen2)) == n)
        expected = [
            ("acknowledged", "desk-1"),
            ("dispatched", "desk-2"),
            ("on_scene", "desk-1"),
            ("on_scene", "desk-2"),
            ("resolved", "desk-1"),
        ]
        assert steps(seen1) == expected and steps(seen2) == expected
        updates = [e for e in seen1 if isinstance(e, AlertUpdate)]
        assert [u.cursor for u in updates] == sorted(u.cursor for u in updates)
        assert updates[1].unit == "Mobile-4" and updates[3].note == "victim safe, suspect left"
        for seen in (seen1, seen2):
            closed = [e for e in seen if isinstance(e, AlertUpdate)][-1]
            assert (closed.outcome, closed.category, closed.note) == ("genuine", "harassment", "suspect warned")
        assert all(u.outcome == "" for u in updates[:-1])
        stored = await relay.journal.get(alert_id)
        assert stored.state == "resolved"
        nursery.cancel_scope.cancel()


@trio_test
async def test_unacknowledged_alert_escalates_level_by_level(tmp_path):
    async with running_relay(tmp_path, escalation_levels=(0.3, 0.8)) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        seen = []
        nursery.start_soon(_collect, console, seen)
        button = button_client(relay, button_ids(1)[0])
        await nursery.start(button.run)
        pressed = trio.current_time()
        receipt = await button.press(timeout=5)

        def levels():
            return [(e.level, e.state) for e in seen if isinstance(e, AlertUpdate) and e.alert_id == receipt.alert_id]

        await wait_until(lambda: len(levels()) == 2, timeout=5)
        elapsed = trio.current_time() - pressed
        assert levels() == [(1, "raised"), (2, "raised")]
        assert 0.75 <= elapsed < 2.0
        second = button_client(relay, button_ids(2)[1])
        await nursery.start(second.run)
        other = await second.press(timeout=5)
        console.update_alert(other.alert_id, "acknowledged")
        await trio.sleep(0.6)
        assert not [e for e in seen if isinstance(e, AlertUpdate) and e.alert_id == other.alert_id and e.level]
        nursery.cancel_scope.cancel()


@trio_test
async def test_second_press_within_the_merge_window_is_a_linked_duplicate(tmp_path):
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        seen = []
        nursery.start_soon(_collect, console, seen)
        button = button_client(relay, button_ids(1)[0])
        await nursery.start(button.run)
        first = await button.press(timeout=5)
        second = await button.press(timeout=5)
        await wait_until(lambda: len([e for e in seen if isinstance(e, Alert)]) == 2)
        alerts = {e.alert_id: e for e in seen if isinstance(e, Alert)}
        assert alerts[first.alert_id].state == "raised"
        assert alerts[second.alert_id].state == "duplicate"
        assert alerts[second.alert_id].duplicate_of == first.alert_id
        assert second.duplicate is False, "a merged press is a new record, acknowledged as stored"
        open_ids = [a.alert_id for a in await relay.journal.open_alerts()]
        assert open_ids == [first.alert_id]
        nursery.cancel_scope.cancel()


@trio_test
async def test_console_resume_receives_exactly_what_it_missed_in_order(tmp_path):
    async with running_relay(tmp_path, escalation_levels=(60.0,)) as relay, trio.open_nursery() as nursery:
        worker = console_client(relay, "desk-2", TOKEN + "-2")
        await nursery.start(worker.run)
        button = button_client(relay, button_ids(1)[0])
        await nursery.start(button.run)
        first = await button.press(timeout=5)

        # The watching console connects, sees the first alert, then drops off.
        watcher = console_client(relay)
        seen = []
        async with trio.open_nursery() as watching:
            await watching.start(watcher.run)
            watching.start_soon(_collect, watcher, seen)
            await wait_until(lambda: any(isinstance(e, Alert) and e.alert_id == first.alert_id for e in seen))
            watching.cancel_scope.cancel()
        cursor = watcher.cursor
        assert cursor >= 1

        # While it is away: a step on the first alert, a new alert, two steps on it.
        worker.update_alert(first.alert_id, "acknowledged")
        other = button_client(relay, button_ids(2)[1])
        await nursery.start(other.run)
        second = await other.press(timeout=5)
        worker.update_alert(second.alert_id, "acknowledged")
        worker.update_alert(second.alert_id, "resolved", outcome="false", category="accidental")
        await trio.sleep(0.3)
        missed = [e for e in await relay.journal.events_since(cursor)]
        assert len(missed) == 4

        # It comes back with its cursor: open alerts first, then exactly the missed events.
        resumed = console_client(relay)
        resumed.cursor = cursor
        replay = []
        await nursery.start(resumed.run)
        nursery.start_soon(_collect, resumed, replay)
        await wait_until(lambda: len(replay) >= 1 + 4)
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()

    open_part, missed_part = replay[:1], replay[1:]
    assert [a.alert_id for a in open_part] == [first.alert_id]
    assert [(type(e).__name__, e.alert_id, e.state, e.cursor) for e in missed_part] == [
        (type(e).__name__, e.alert_id, e.state, e.cursor) for e in missed
    ]
    assert [e.cursor for e in missed_part] == sorted(e.cursor for e in missed_part)
    assert all(e.cursor > cursor for e in missed_part)
    replayed_close = [e for e in missed_part if isinstance(e, AlertUpdate) and e.state == "resolved"]
    assert [(e.outcome, e.category) for e in replayed_close] == [("false", "accidental")]


@trio_test
async def test_alerts_and_counters_survive_a_relay_restart(tmp_path):
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        button = button_client(relay, button_id)
        await nursery.start(button.run)
        receipt = await button.press(timeout=5)
        nursery.cancel_scope.cancel()
    async with running_relay(tmp_path) as relay:
        stored = await relay.journal.get(receipt.alert_id)
        assert stored is not None and stored.state == "raised" and stored.button == button_id
        assert relay._handshake_counters[("button", button_id)] > 0
        async with trio.open_nursery() as nursery:
            console = console_client(relay)
            await nursery.start(console.run)
            first = await _first_alert(console)
            assert first.alert_id == receipt.alert_id
            nursery.cancel_scope.cancel()


async def _first_alert(console: pinkrelay.ConsoleClient) -> Alert:
    with trio.fail_after(5):
        async for event in console.events():
            if isinstance(event, Alert):
                return event
    raise AssertionError("no alert")


@trio_test
async def test_a_test_alert_escalates_like_a_panic_as_protocol_section_8_6_says(tmp_path):
    async with running_relay(tmp_path, escalation_levels=(0.3,)) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        seen = []
        nursery.start_soon(_collect, console, seen)
        button = button_client(relay, button_ids(1)[0])
        await nursery.start(button.run)
        receipt = await button.press(kind="test", timeout=5)
        await wait_until(lambda: any(isinstance(e, AlertUpdate) and e.alert_id == receipt.alert_id and e.level == 1
                                     for e in seen), timeout=5, what="the test alert's escalation to level 1")
        [alert] = [e for e in seen if isinstance(e, Alert) and e.alert_id == receipt.alert_id]
        assert alert.kind == "test"
        nursery.cancel_scope.cancel()

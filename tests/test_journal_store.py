"""The durable alert journal (SqliteJournal) on real SQLite files, and the relay when it is full.

Every test opens real journal files under tmp_path. "Disk full" is SQLite's
own SQLITE_FULL, provoked with ``PRAGMA max_page_count`` on the journal's
connection; corruption is garbage bytes written into a closed journal file.
"""

from __future__ import annotations

import itertools

import sqlite3
from pathlib import Path

import pytest
import trio
from trio.testing import trio_test

from pinkrelay.alerts.journal import JournalError, SqliteJournal
from pinkrelay.alerts.lifecycle import AlertState, Step, transition
from pinkrelay.ids import uuid7
from pinkrelay.protocol import Alert, AlertAck, AlertUpdate, Site

from relay_helpers import button_client, button_ids, collect_events, console_client, running_relay, wait_until

SITE = Site(name="Qissa Khwani Bazaar, east gate", kind="market", address="Qissa Khwani Bazaar",
            district="Andar Shehr", latitude=34.0081, longitude=71.5708)
T0 = 1_760_000_000_000_000  # µs since the epoch (October 2025)
SECOND = 1_000_000
MERGE = 120 * SECOND


def make_alert(alert_id: str | None = None, button: str = "kp-test-001", *, at: int = T0,
               kind: str = "panic", attempt: int = 1, site: Site | None = SITE) -> Alert:
    return Alert(alert_id=alert_id or uuid7(), pressed_at=at - 50_000, kind=kind, attempt=attempt,
                 button=button, site=site, state="raised", received_at=at)


async def opened(path: Path) -> SqliteJournal:
    journal = SqliteJournal(path)
    await journal.open()
    return journal


def rows(path: Path, sql: str, *args: object) -> list[tuple]:
    """Read the journal file with a separate sqlite3 connection, as an auditor would."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


async def step(journal: SqliteJournal, alert_id: str, requested: str, *, at: int, **fields: str) -> AlertUpdate:
    current = await journal.get(alert_id)
    assert current is not None
    if requested in CLOSING and "outcome" not in fields:
        fields = {**fields, **CLOSING[requested]}
    return await journal.apply(transition(alert_id, current.state, requested, operator="desk-1", at=at, **fields))


#: A valid outcome for each closing state, for steps whose outcome the test does not care about.
CLOSING = {"resolved": {"outcome": "genuine", "category": "harassment"},
           "false_alarm": {"outcome": "false", "category": "accidental"}}


_FILLER_CURSORS = itertools.count(10**12)


async def fill_up(journal: SqliteJournal) -> None:
    """Make the journal full: no new page may be added, and the events table's page has no room left.

    Each insert is its own transaction, since SQLITE_FULL rolls back the
    whole transaction it happens in. Tiny rows leave less free space than
    any real event needs.
    """
    await journal._call(lambda conn: conn.execute("PRAGMA max_page_count = 1"))  # clamped to the current size
    for chunk in (50, 1):
        while True:
            # Filler rows get cursors far above any real event's, so they never
            # collide with the cursors the journal hands out.
            cursors = [next(_FILLER_CURSORS) for _ in range(chunk)]

            def insert(conn: sqlite3.Connection, cursors: list[int] = cursors) -> None:
                for cursor in cursors:
                    conn.execute(
                        "INSERT INTO events (cursor, alert_id, kind, state, at) VALUES (?, 'f', 'n', 'f', 0)",
                        (cursor,),
                    )

            try:
                await journal._call(insert)
            except JournalError:
                break


async def free_space(journal: SqliteJournal) -> None:
    await journal._call(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))


# -- storing presses -------------------------------------------------------------------------------


@trio_test
async def test_record_stores_a_press_once_and_a_retry_returns_the_original(tmp_path):
    path = tmp_path / "journal.sqlite3"
    journal = await opened(path)
    try:
        first = await journal.record(make_alert("alert-1"), merge_window_us=MERGE)
        assert first.duplicate is False
        assert first.alert.cursor >= 1
        assert first.alert.state == "raised" and first.alert.duplicate_of == ""
        assert first.alert.site == SITE and first.alert.button == "kp-test-001"

        retry = await journal.record(make_alert("alert-1", at=T0 + 3 * SECOND, attempt=4), merge_window_us=MERGE)
        assert retry.duplicate is True
        assert retry.alert == first.alert, "a retry must return the alert as first stored"
        assert retry.alert.attempt == 1 and retry.alert.received_at == T0
        assert await journal.get("alert-1") == first.alert
        assert await journal.get("no-such-alert") is None
        assert await journal.last_cursor() == first.alert.cursor
    finally:
        await journal.close()
    assert rows(path, "SELECT alert_id, attempt, state FROM alerts") == [("alert-1", 1, "raised")]
    assert rows(path, "SELECT alert_id, kind FROM events") == [("alert-1", "raised")]


@trio_test
async def test_merge_window_links_a_second_press_of_the_same_button(tmp_path):
    journal = await opened(tmp_path / "journal.sqlite3")
    try:
        first = (await journal.record(make_alert("first", at=T0), merge_window_us=MERGE)).alert
        again = await journal.record(make_alert("again", at=T0 + 30 * SECOND), merge_window_us=MERGE)
        assert again.duplicate is False, "a new press is not a retry, even when merged"
        assert again.alert.state == AlertState.DUPLICATE
        assert again.alert.duplicate_of == "first"
        assert again.alert.cursor > first.cursor
        # A third press is linked to the open alert, not to the duplicate.
        third = (await journal.record(make_alert("third", at=T0 + 60 * SECOND), merge_window_us=MERGE)).alert
        assert (third.state, third.duplicate_of) == ("duplicate", "first")
        # Another button is its own incident.
        other = (await journal.record(make_alert("other", "kp-test-002", at=T0 + 61 * SECOND),
                                      merge_window_us=MERGE)).alert
        assert (other.state, other.duplicate_of) == ("raised", "")
        # Without a merge window nothing is linked.
        plain = (await journal.record(make_alert("plain", at=T0 + 62 * SECOND))).alert
        assert (plain.state, plain.duplicate_of) == ("raised", "")
        # Only panics are merged.
        tamper = (await journal.record(make_alert("tamper", "kp-test-002", at=T0 + 63 * SECOND, kind="tamper"),
                                       merge_window_us=MERGE)).alert
        assert tamper.state == "raised"

        # The duplicate is recorded as such in the event stream, with a note naming the open alert.
        events = await journal.events_since(first.cursor)
        assert isinstance(events[0], Alert) and events[0].alert_id == "again"
        assert events[0].state == "duplicate" and events[0].duplicate_of == "first"
        assert {a.alert_id for a in await journal.open_alerts()} == {"first", "other", "plain", "tamper"}
    finally:
        await journal.close()


@trio_test
async def test_no_merge_after_the_window_or_once_the_first_alert_is_resolved(tmp_path):
    journal = await opened(tmp_path / "journal.sqlite3")
    try:
        await journal.record(make_alert("old", "kp-test-001", at=T0), merge_window_us=MERGE)
        late = (await journal.record(make_alert("late", "kp-test-001", at=T0 + MERGE + 1),
                                     merge_window_us=MERGE)).alert
        assert (late.state, late.duplicate_of) == ("raised", "")
        # Just inside the window of "late": merged.
        inside = (await journal.record(make_alert("inside", "kp-test-001", at=T0 + 2 * MERGE + 1),
                                       merge_window_us=MERGE)).alert
        assert (inside.state, inside.duplicate_of) == ("duplicate", "late")

        await journal.record(make_alert("b-first", "kp-test-002", at=T0), merge_window_us=MERGE)
        await step(journal, "b-first", "acknowledged", at=T0 + SECOND)
        acked = (await journal.record(make_alert("b-acked", "kp-test-002", at=T0 + 2 * SECOND),
                                      merge_window_us=MERGE)).alert
        assert (acked.state, acked.duplicate_of) == ("duplicate", "b-first"), "acknowledged is still open"
        await step(journal, "b-first", "resolved", at=T0 + 3 * SECOND)
        after = (await journal.record(make_alert("b-after", "kp-test-002", at=T0 + 4 * SECOND),
                                      merge_window_us=MERGE)).alert
        assert (after.state, after.duplicate_of) == ("raised", "")

        await journal.record(make_alert("c-first", "kp-test-003", at=T0), merge_window_us=MERGE)
        await step(journal, "c-first", "false_alarm", at=T0 + SECOND)
        again = (await journal.record(make_alert("c-again", "kp-test-003", at=T0 + 2 * SECOND),
                                      merge_window_us=MERGE)).alert
        assert again.state == "raised"
    finally:
        await journal.close()


# -- lifecycle steps and the event stream ---------------------------------------------------------


@trio_test
async def test_apply_records_each_step_with_increasing_cursors(tmp_path):
    journal = await opened(tmp_path / "journal.sqlite3")
    try:
        raised = (await journal.record(make_alert("a1"))).alert
        cursors = [raised.cursor]
        plan = [
            ("acknowledged", {}),
            ("note", {"note": "caller says two men, one armed"}),
            ("dispatched", {"unit": "rescue-15-van-7"}),
            ("on_scene", {}),
            ("resolved", {"note": "suspects gone, shopkeeper unhurt"}),
        ]
        updates = []
        for number, (requested, fields) in enumerate(plan, start=1):
            update = await step(journal, "a1", requested, at=T0 + number * SECOND, **fields)
            updates.append(update)
            cursors.append(update.cursor)
        assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
        assert [u.state for u in updates] == ["acknowledged", "acknowledged", "dispatched", "on_scene", "resolved"]
        assert updates[1].note == "caller says two men, one armed"
        assert updates[2].unit == "rescue-15-van-7"
        assert all(u.operator == "desk-1" and u.alert_id == "a1" for u in updates)
        final = await journal.get("a1")
        assert final is not None and final.state == "resolved" and final.cursor == raised.cursor
        assert await journal.open_alerts() == []
        assert await journal.last_cursor() == cursors[-1]
    finally:
        await journal.close()
    kinds = rows(tmp_path / "journal.sqlite3", "SELECT kind, state, unit FROM events ORDER BY cursor")
    assert kinds == [("raised", "raised", ""), ("transition", "acknowledged", ""), ("note", "acknowledged", ""),
                     ("transition", "dispatched", "rescue-15-van-7"), ("transition", "on_scene", ""),
                     ("transition", "resolved", "")]


@trio_test
async def test_apply_refuses_a_stale_previous_state_and_unknown_alerts(tmp_path):
    journal = await opened(tmp_path / "journal.sqlite3")
    try:
        await journal.record(make_alert("a1"))
        # Two operators read "raised"; the first acknowledges, the second's step is stale.
        mine = transition("a1", "raised", "acknowledged", operator="desk-1", at=T0 + SECOND)
        theirs = transition("a1", "raised", "false_alarm", operator="desk-2", at=T0 + 2 * SECOND,
                            **CLOSING["false_alarm"])
        await journal.apply(mine)
        before = await journal.last_cursor()
        with pytest.raises(JournalError, match="changed to acknowledged meanwhile"):
            await journal.apply(theirs)
        assert (await journal.get("a1")).state == "acknowledged"
        assert await journal.last_cursor() == before, "a refused step must leave no event"
        with pytest.raises(JournalError, match="no alert ghost"):
            await journal.apply(transition("ghost", "raised", "acknowledged", operator="desk-1", at=T0))
        # Escalation: the level rises, the state stays raised, only while still raised.
        await journal.record(make_alert("a2", "kp-test-002"))
        escalate = Step(alert_id="a2", previous="raised", state="raised", operator="relay", console="",
                        at=T0 + 15 * SECOND, note="escalated to level 1")
        update = await journal.apply(escalate, level=1)
        assert (update.state, update.level) == ("raised", 1)
        assert (await journal.get("a2")).level == 1
        with pytest.raises(JournalError, match="meanwhile"):
            await journal.apply(Step(alert_id="a1", previous="raised", state="raised", operator="relay",
                                     console="", at=T0, note="escalated"), level=1)
    finally:
        await journal.close()


@trio_test
async def test_one_bad_request_in_a_batch_fails_alone(tmp_path):
    """Requests queued together share a transaction; a refused one must not take the others down."""
    journal = await opened(tmp_path / "journal.sqlite3")
    try:
        await journal.record(make_alert("target"))
        await step(journal, "target", "acknowledged", at=T0 + 1)
        commits_before = journal.commits
        outcomes: dict[str, object] = {}

        async def press(index: int) -> None:
            outcomes[f"p{index}"] = await journal.record(make_alert(f"p{index}", f"kp-{index}"))

        async def stale() -> None:
            try:
                await journal.apply(transition("target", "raised", "false_alarm", operator="d", at=T0 + 2,
                                                      **CLOSING["false_alarm"]))
            except JournalError as error:
                outcomes["stale"] = error

        async with trio.open_nursery() as nursery:
            for index in range(100):
                nursery.start_soon(press, index)
                if index == 50:
                    nursery.start_soon(stale)
        assert isinstance(outcomes.pop("stale"), JournalError)
        assert len(outcomes) == 100 and all(not r.duplicate for r in outcomes.values())
        assert journal.commits - commits_before < 50, "the requests were not committed in groups"
        assert len({r.alert.cursor for r in outcomes.values()}) == 100
        assert (await journal.get("target")).state == "acknowledged"
        for index in range(100):
            assert await journal.get(f"p{index}") is not None
    finally:
        await journal.close()


@trio_test
async def test_a_caller_cancelled_while_waiting_leaves_the_journal_working(tmp_path):
    """The request was queued, so it is still stored; its reply must not disturb the cancelled task."""
    journal = await opened(tmp_path / "journal.sqlite3")
    try:
        with trio.CancelScope() as scope:
            scope.cancel()
            await journal.record(make_alert("cancelled-early"))
        assert scope.cancelled_caught
        finished: list[str] = []

        async def press(index: int, patience: float) -> None:
            with trio.move_on_after(patience):
                await journal.record(make_alert(f"p{index}", f"kp-{index}"))
                finished.append(f"p{index}")
                await trio.sleep(0.05)  # still waiting on something else when later replies arrive

        async with trio.open_nursery() as nursery:
            for index in range(200):
                nursery.start_soon(press, index, 0 if index % 2 else 5)
        assert len(finished) >= 100 and all(int(name[1:]) % 2 == 0 for name in finished)
        assert (await journal.record(make_alert("after"))).duplicate is False
        for alert_id in ["cancelled-early", "after"] + [f"p{index}" for index in range(200)]:
            assert await journal.get(alert_id) is not None, alert_id
    finally:
        await journal.close()


@trio_test
async def test_events_since_returns_exactly_the_events_after_a_cursor_in_order(tmp_path):
    journal = await opened(tmp_path / "journal.sqlite3")
    try:
        for number in range(6):
            await journal.record(make_alert(f"a{number}", f"kp-{number % 3}", at=T0 + number * SECOND),
                                 merge_window_us=MERGE)
        await step(journal, "a0", "acknowledged", at=T0 + 10 * SECOND)
        await step(journal, "a1", "false_alarm", at=T0 + 11 * SECOND)
        await step(journal, "a0", "note", at=T0 + 12 * SECOND, note="on the phone with her")
        await journal.record(make_alert("a6", "kp-1", at=T0 + 13 * SECOND), merge_window_us=MERGE)

        everything = await journal.events_since(0)
        assert len(everything) == 10
        cursors = [event.cursor for event in everything]
        assert cursors == sorted(cursors) and len(set(cursors)) == 10
        assert cursors[-1] == await journal.last_cursor()
        described = [(type(e).__name__, e.alert_id, e.state) for e in everything]
        assert described == [
            ("Alert", "a0", "raised"), ("Alert", "a1", "raised"), ("Alert", "a2", "raised"),
            ("Alert", "a3", "duplicate"), ("Alert", "a4", "duplicate"), ("Alert", "a5", "duplicate"),
            ("AlertUpdate", "a0", "acknowledged"), ("AlertUpdate", "a1", "false_alarm"),
            ("AlertUpdate", "a0", "acknowledged"), ("Alert", "a6", "raised"),
        ]
        # A raised alert is replayed as it was raised, not as it is now.
        assert everything[0].state == "raised" and (await journal.get("a0")).state == "acknowledged"
        assert everything[3].duplicate_of == "a0" and everything[8].note == "on the phone with her"
        for index, cursor in enumerate(cursors):
            assert await journal.events_since(cursor) == everything[index + 1 :]
        assert await journal.events_since(cursors[2], limit=3) == everything[3:6]
        assert await journal.events_since(cursors[-1] + 100) == []
    finally:
        await journal.close()


# -- persistence ----------------------------------------------------------------------------------


@trio_test
async def test_counters_persist_across_close_and_reopen(tmp_path):
    path = tmp_path / "journal.sqlite3"
    journal = await opened(path)
    await journal.save_counter("button", "kp-test-001", 7)
    await journal.save_counter("button", "kp-test-001", 5)  # never goes back
    await journal.save_counter("console", "desk-1", 3)
    await journal.save_counter("button", "kp-test-002", 1)
    await journal.save_counter("button", "kp-test-002", 2)
    await journal.close()
    await journal.close()  # closing twice is harmless

    again = await opened(path)
    try:
        assert await again.load_counters() == {
            ("button", "kp-test-001"): 7,
            ("console", "desk-1"): 3,
            ("button", "kp-test-002"): 2,
        }
    finally:
        await again.close()


@trio_test
async def test_everything_survives_close_and_reopen(tmp_path):
    path = tmp_path / "journal.sqlite3"
    journal = await opened(path)
    await journal.record(make_alert("a1", "kp-1", at=T0), merge_window_us=MERGE)
    await journal.record(make_alert("a2", "kp-1", at=T0 + SECOND), merge_window_us=MERGE)
    await journal.record(make_alert("a3", "kp-2", at=T0 + 2 * SECOND, site=None), merge_window_us=MERGE)
    await step(journal, "a3", "acknowledged", at=T0 + 3 * SECOND)
    await journal.audit(T0 + 4 * SECOND, "desk-1", "export", "alerts", "since yesterday")
    snapshot = (
        [await journal.get(i) for i in ("a1", "a2", "a3")],
        await journal.open_alerts(),
        await journal.events_since(0),
        await journal.last_cursor(),
    )
    await journal.close()
    with pytest.raises(JournalError, match="not open"):
        await journal.record(make_alert("closed"))

    # The same object opens again...
    await journal.open()
    try:
        again = (
            [await journal.get(i) for i in ("a1", "a2", "a3")],
            await journal.open_alerts(),
            await journal.events_since(0),
            await journal.last_cursor(),
        )
        assert again == snapshot
        retry = await journal.record(make_alert("a1", "kp-1", at=T0 + 9 * SECOND, attempt=3))
        assert retry.duplicate and retry.alert == snapshot[0][0]
    finally:
        await journal.close()
    # ...and so does a new one on the same file.
    other = await opened(path)
    try:
        assert [await other.get(i) for i in ("a1", "a2", "a3")] == snapshot[0]
        assert await other.events_since(0) == snapshot[2]
        assert await other.last_cursor() == snapshot[3]
        fresh = (await other.record(make_alert("a4", "kp-9", at=T0 + 5 * SECOND))).alert
        assert fresh.cursor > snapshot[3], "cursors must never be reused after a restart"
    finally:
        await other.close()
    assert rows(path, "SELECT operator, action, subject, detail FROM audit") == [
        ("desk-1", "export", "alerts", "since yesterday")
    ]
    assert rows(path, "SELECT COUNT(*) FROM alerts") == [(4,)]


@trio_test
async def test_group_commit_2000_concurrent_presses(tmp_path):
    journal = await opened(tmp_path / "journal.sqlite3")
    try:
        results = {}

        async def press(index: int) -> None:
            alert = make_alert(uuid7(), f"kp-{index % 68:03d}", at=T0 + index)
            results[alert.alert_id] = await journal.record(alert, merge_window_us=MERGE)

        async with trio.open_nursery() as nursery:
            for index in range(2000):
                nursery.start_soon(press, index)
        requests, commits = journal.requests_done, journal.commits
        assert len(results) == 2000 and requests == 2000
        assert commits < requests / 5, f"{commits} commits for {requests} requests: no group commit"
        cursors = sorted(r.alert.cursor for r in results.values())
        assert cursors == list(range(cursors[0], cursors[0] + 2000))
        merged = [r.alert for r in results.values() if r.alert.state == "duplicate"]
        assert len(merged) == 2000 - 68, "each of the 68 buttons has one open alert, the rest linked to it"
    finally:
        await journal.close()
    assert rows(tmp_path / "journal.sqlite3", "SELECT COUNT(*), COUNT(DISTINCT alert_id) FROM alerts") == [(2000, 2000)]


# -- failures -------------------------------------------------------------------------------------


@trio_test
async def test_disk_full_is_reported_and_nothing_is_half_stored(tmp_path):
    path = tmp_path / "journal.sqlite3"
    journal = await opened(path)
    try:
        kept = (await journal.record(make_alert("before"))).alert
        await fill_up(journal)
        cursor = await journal.last_cursor()
        with pytest.raises(JournalError, match="disk is full") as caught:
            await journal.record(make_alert("while-full", "kp-test-002"))
        assert str(path) in str(caught.value) and "free space" in str(caught.value)
        assert await journal.get("while-full") is None
        assert await journal.last_cursor() == cursor
        assert await journal.get("before") == kept

        await free_space(journal)
        stored = await journal.record(make_alert("while-full", "kp-test-002"))
        assert stored.duplicate is False and stored.alert.cursor > kept.cursor
    finally:
        await journal.close()


@trio_test
async def test_disk_full_fails_a_whole_batch_with_the_real_reason(tmp_path):
    """SQLITE_FULL rolls back the entire transaction, so every request in it must be told: disk full."""
    journal = await opened(tmp_path / "journal.sqlite3")
    try:
        await fill_up(journal)
        errors: list[str] = []

        async def press(index: int) -> None:
            try:
                await journal.record(make_alert(f"p{index}", f"kp-{index}"))
            except JournalError as error:
                errors.append(str(error))

        async with trio.open_nursery() as nursery:
            for index in range(50):
                nursery.start_soon(press, index)
        assert len(errors) == 50
        assert all("disk is full" in text for text in errors), errors[0]
        await free_space(journal)
        assert not (await journal.record(make_alert("p1", "kp-1"))).duplicate
    finally:
        await journal.close()


@pytest.mark.parametrize("where", ["header", "pages"])
@trio_test
async def test_a_corrupt_journal_is_refused_with_what_to_do(tmp_path, where):
    path = tmp_path / "journal.sqlite3"
    journal = await opened(path)
    for number in range(50):
        await journal.record(make_alert(f"a{number}", f"kp-{number}"))
    await journal.close()
    size = path.stat().st_size
    assert size > 8192 and not Path(f"{path}-wal").exists()
    with open(path, "r+b") as handle:
        if where == "header":
            handle.write(b"this is not an alert journal at all" * 3)
        else:
            handle.seek(4096)
            handle.write(bytes(range(256)) * ((size - 4096) // 256))

    with pytest.raises(JournalError) as caught:
        await opened(path)
    message = str(caught.value)
    assert str(path) in message
    assert "corrupt" in message and "move the file aside" in message and "new journal" in message


@trio_test
async def test_a_missing_journal_is_created(tmp_path):
    path = tmp_path / "var" / "not" / "yet" / "journal.sqlite3"
    journal = await opened(path)
    try:
        assert path.is_file()
        assert await journal.last_cursor() == 0
        assert await journal.open_alerts() == []
        assert await journal.load_counters() == {}
        assert (await journal.record(make_alert("first"))).alert.cursor == 1
    finally:
        await journal.close()
    tables = {name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "alerts", "events", "counters", "audit"} <= tables
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


@trio_test
async def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.write_text("not a directory\n")
    with pytest.raises(JournalError) as caught:
        await opened(data_dir / "journal.sqlite3")
    message = str(caught.value)
    assert str(data_dir) in message and "not a directory" in message


# -- the relay with a full journal ----------------------------------------------------------------


@trio_test
async def test_relay_does_not_acknowledge_what_it_could_not_store(tmp_path):
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        button = button_client(relay, button_id, retry_interval=0.2)
        acks: list[AlertAck] = []
        real_on_event = button._on_event

        async def spy(event):
            if isinstance(event, AlertAck):
                acks.append(event)
            await real_on_event(event)

        button._on_event = spy
        await nursery.start(button.run)
        seen: list[Alert] = []

        async def watch():
            async for event in console.events():
                if isinstance(event, Alert):
                    seen.append(event)

        nursery.start_soon(watch)
        await fill_up(relay.journal)

        alert_id = uuid7()
        with pytest.raises(trio.TooSlowError):
            await button.press(alert_id=alert_id, timeout=1)
        pending = button._pending[alert_id]
        assert pending.alert.attempt >= 3, "the button should have retried while the journal was full"
        assert acks == []
        assert await relay.journal.get(alert_id) is None
        mine = [a for a in seen if a.alert_id == alert_id]
        assert len(mine) == 1, f"consoles saw the unstored alert {len(mine)} times"
        assert mine[0].cursor > 0 and mine[0].button == button_id and mine[0].site is not None

        await free_space(relay.journal)
        with trio.fail_after(5):
            await pending.done.wait()
        assert pending.receipt is not None and pending.receipt.duplicate is False
        await trio.sleep(3 * button.retry_interval)  # any stray retry would be acknowledged by now
        stored = await relay.journal.get(alert_id)
        assert stored is not None and stored.cursor == mine[0].cursor
        assert [a.alert_id for a in acks] == [alert_id], "acknowledged more than once"
        mine = [a for a in seen if a.alert_id == alert_id]
        assert len(mine) == 1, "consoles are told once, before the commit, with the cursor it got"
        assert relay.counters["alerts"] == 1 and relay.counters["duplicate_alerts"] == 0
        nursery.cancel_scope.cancel()
    assert rows(tmp_path / "journal.sqlite3", "SELECT COUNT(*) FROM alerts WHERE alert_id = ?", alert_id) == [(1,)]


@trio_test
async def test_a_new_run_never_reuses_a_cursor_the_last_run_handed_out(tmp_path):
    """Consoles see a press's cursor before its commit; a crash must not let it be given again."""
    path = tmp_path / "journal.sqlite3"
    journal = await opened(path)
    stored = (await journal.record(make_alert("a1"))).alert
    shown_but_never_stored = journal.take_cursor()  # the process dies before this commit
    await journal.close()
    again = await opened(path)
    try:
        fresh = (await again.record(make_alert("a2", "kp-test-002"))).alert
        assert fresh.cursor > shown_but_never_stored > stored.cursor
    finally:
        await again.close()


@trio_test
async def test_an_escalation_the_journal_could_not_store_is_tried_again(tmp_path, caplog):
    async with running_relay(tmp_path, escalation_levels=(0.3,)) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        seen: list = []
        nursery.start_soon(collect_events, console, seen)
        button = button_client(relay, button_ids(1)[0])
        await nursery.start(button.run)
        receipt = await button.press(timeout=5)
        await fill_up(relay.journal)

        def escalated():
            return [e for e in seen if isinstance(e, AlertUpdate) and e.alert_id == receipt.alert_id and e.level]

        await wait_until(lambda: "could not be recorded" in caplog.text, timeout=5)
        assert escalated() == [] and (await relay.journal.get(receipt.alert_id)).level == 0
        await free_space(relay.journal)
        await wait_until(lambda: escalated(), timeout=5)  # storage trouble never silences an unanswered alert
        assert [e.level for e in escalated()] == [1]
        assert (await relay.journal.get(receipt.alert_id)).level == 1
        nursery.cancel_scope.cancel()


@trio_test
async def test_an_offline_alert_is_stored_once_the_journal_has_room_and_resolved_when_the_button_returns(
    tmp_path, caplog
):
    button_id = button_ids(1)[0]
    # A window long enough for a busy CI machine: the console must not look silent itself.
    async with running_relay(tmp_path, heartbeat_interval=0.3, supervision_window=1.5,
                             escalation_levels=(60.0,)) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        seen: list = []
        nursery.start_soon(collect_events, console, seen)
        async with trio.open_nursery() as button_nursery:
            button = button_client(relay, button_id)
            await button_nursery.start(button.run)
            await fill_up(relay.journal)
            button_nursery.cancel_scope.cancel()  # the button goes silent: its task ends, its socket closes
        offline = []

        def offline_alerts():
            offline[:] = [e for e in seen if isinstance(e, Alert) and e.kind == "offline"]
            return offline

        await wait_until(offline_alerts, timeout=5)
        alert_id = offline[0].alert_id
        await wait_until(lambda: "not stored" in caplog.text, timeout=5)
        assert await relay.journal.get(alert_id) is None
        await free_space(relay.journal)
        await wait_until(lambda: "stored after all" in caplog.text, timeout=5)
        assert (await relay.journal.get(alert_id)).state == "raised"

        back = button_client(relay, button_id)
        await nursery.start(back.run)
        await wait_until(lambda: any(isinstance(e, AlertUpdate) and e.alert_id == alert_id and e.state == "resolved"
                                 for e in seen), timeout=5)
        resolved = [e for e in seen if isinstance(e, AlertUpdate) and e.alert_id == alert_id][-1]
        assert (resolved.operator, resolved.note) == ("relay", "button back online")
        assert (await relay.journal.get(alert_id)).state == "resolved"
        assert {a.alert_id for a in offline_alerts()} == {alert_id}  # told again once stored, same alert
        nursery.cancel_scope.cancel()

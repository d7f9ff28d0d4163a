"""Action plans and false-alarm counts on the board, in a real headless Chromium against a real relay.

The registry is a real CSV file with a plan file shared by the two buttons
of a campus; alerts come from real button presses. A supervisor edits the
plan in the page; the edit reaches an operator's board, is audited, and
survives a registry reload and a relay restart. An operator's edit is refused.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import trio

from pinkrelay.alerts.journal import SqliteJournal
from pinkrelay.alerts.lifecycle import transition
from pinkrelay.operators import OperatorStore
from pinkrelay.protocol import Alert, Site
from pinkrelay.registry import load_registry

from relay_helpers import secret_for
from test_web_board import LAPTOP, WALL, Page, assert_layout_clean, card
from test_web_board import browser, playwright  # noqa: F401
from test_web_browser import ARTEFACTS, OPERATOR, OPERATOR_SECRET, RoomThread, audit_rows, sign_in

pytestmark = pytest.mark.core_independent

SUPERVISOR, SUPERVISOR_SECRET = "sana", "sana-secret-for-tests-1"
CAMPUS = "University campus, gate 2"
CAMPUS_PLAN = """
steps = ["Call campus security", "Send the nearest unit to gate 2"]
notes = "Gate 2 is locked after 22:00."
[[contacts]]
name = "Campus security"
phone = "+92 91 921 6701"
[[contacts]]
name = "Women's police station"
phone = "091-9216222"
"""


def write_registry(data_dir: Path) -> Path:
    (data_dir / "plans").mkdir(parents=True)
    (data_dir / "plans" / "campus.toml").write_text(CAMPUS_PLAN)
    rows = ["id,secret,site_name,site_kind,latitude,longitude,plan_file,plan_steps"]
    for button in ("kp-test-001", "kp-test-002"):
        rows.append(f'{button},{secret_for(button).decode()},"{CAMPUS}",campus,34.0,71.48,plans/campus.toml,')
    rows.append(f"kp-test-003,{secret_for('kp-test-003').decode()},Bus stop,transport,34.02,71.5,,Call 15")
    path = data_dir / "registry.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


async def an_old_false_alarm(data_dir: Path) -> None:
    """A false alarm at the campus 30 days ago, so its count starts at 1."""
    journal = SqliteJournal(data_dir / "journal.sqlite3")
    await journal.open()
    at = time.time_ns() // 1000 - 30 * 24 * 3600 * 1_000_000
    try:
        await journal.record(Alert(alert_id="0190-old", pressed_at=at, kind="panic", button="kp-test-002",
                                   received_at=at, site=Site(name=CAMPUS, kind="campus", latitude=34.0,
                                                             longitude=71.48)))
        await journal.apply(transition("0190-old", "raised", "false_alarm", operator="sana", at=at + 5,
                                       outcome="false", category="accidental"))
    finally:
        await journal.close()


def start_room(data_dir: Path) -> RoomThread:
    return RoomThread(data_dir, registry=load_registry(data_dir / "registry.csv")).start()


def sign_in_as(page, url: str, name: str, secret: str) -> None:
    page.goto(url + "/signin")
    page.fill("#name", name)
    page.fill("#secret", secret)
    page.click("button[type=submit]")
    page.wait_for_selector("#link.up")


def plan_text(page, alert_id: str) -> str:
    return card(page, alert_id).locator(".plan").inner_text()


def test_the_plan_arrives_with_the_alert_and_a_supervisor_edit_is_audited_and_kept(browser, tmp_path):  # noqa: F811
    write_registry(tmp_path)
    store = OperatorStore.in_data_dir(tmp_path)
    store.add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    store.add(SUPERVISOR, "supervisor", secret=SUPERVISOR_SECRET)
    trio.run(an_old_false_alarm, tmp_path)
    room = start_room(tmp_path)
    try:
        with Page(browser, room) as operator, Page(browser, room) as supervisor:
            sign_in(operator, room.room.url)
            sign_in_as(supervisor, room.room.url, SUPERVISOR, SUPERVISOR_SECRET)
            for button in ("kp-test-001", "kp-test-002", "kp-test-003"):
                room.button(button)
            first = room.press("kp-test-001")
            # The plan is on the card as it appears: one message, no second request.
            card(operator, first).wait_for()
            text = plan_text(operator, first)
            assert "Call campus security" in text and "Send the nearest unit to gate 2" in text
            assert "Women's police station" in text and "091-9216222" in text and "Gate 2 is locked" in text
            record = card(operator, first).locator(".site-record")
            assert record.inner_text() == "1 false alarm from this site in 12 months"
            assert card(operator, first).locator('[data-action="edit-plan"]').count() == 0, "operators only read"
            bus = room.press("kp-test-003")
            card(operator, bus).wait_for()
            assert "Call 15" in plan_text(operator, bus)
            assert card(operator, bus).locator(".site-record").inner_text() == \
                "No false alarms from this site in 12 months"

            # An operator's edit, made by hand past the page, is refused and audited.
            refused = operator.evaluate("""async () => {
                const r = await fetch('/api/plans', {method: 'POST', headers: {'content-type': 'application/json',
                    'x-csrf-token': window.pinkrelay.csrf},
                    body: JSON.stringify({key: 'file:plans/campus.toml', plan: {steps: ['nothing']}})});
                return [r.status, (await r.json()).error];
            }""")
            assert refused == [403, f"only a supervisor may edit an action plan; {OPERATOR} signed in as operator"]
            assert [row[:3] for row in audit_rows(tmp_path, "plan-edit-refused")] == [
                (OPERATOR, "plan-edit-refused", "file:plans/campus.toml")]

            # Bad edits are refused with what was wrong, and change nothing.
            bad = supervisor.evaluate("""async () => {
                const post = async (body) => {
                    const r = await fetch('/api/plans', {method: 'POST', headers: {'content-type': 'application/json',
                        'x-csrf-token': window.pinkrelay.csrf}, body});
                    return [r.status, (await r.json()).error];
                };
                const key = 'file:plans/campus.toml';
                return [await post('not json'), await post(JSON.stringify({key: 'button:nobody', plan: {}})),
                        await post(JSON.stringify({key, plan: {steps: Array(21).fill('call')}})),
                        await post(JSON.stringify({key, plan: {contacts: [{name: 'a\\u0001b'}]}})),
                        await post(JSON.stringify({key, plan: {steps: 'call', extra: 1}}))];
            }""")
            assert [status for status, _ in bad] == [400, 404, 400, 400, 400]
            assert bad[1][1].startswith("no plan 'button:nobody' in the registry")
            assert bad[2][1] == "plan file:plans/campus.toml: a plan has at most 20 steps, not 21"
            assert bad[3][1] == "plan file:plans/campus.toml: contact 1 name contains control characters (it is one line)"
            assert bad[4][1] == "plan file:plans/campus.toml: unknown plan field(s) extra; a plan has steps, contacts and notes"
            assert audit_rows(tmp_path, "plan-edit") == []

            # The supervisor edits the campus plan on the card.
            card(supervisor, first).locator('[data-action="edit-plan"]').click()
            form = card(supervisor, first).locator(".plan-form")
            form.locator('textarea[name="steps"]').fill("Call campus security\nCall her brother\n")
            form.locator('textarea[name="contacts"]').fill("Campus security: +92 91 921 6701\nProctor: 0300-7654321")
            form.locator('button[type="submit"]').click()
            supervisor.wait_for_function(
                "(id) => document.querySelector(`li.alert[data-alert-id='${id}'] .plan`).textContent"
                ".includes('Call her brother')", arg=first)
            # Every board has it at once, and so does the other button of the site.
            operator.wait_for_function(
                "(id) => document.querySelector(`li.alert[data-alert-id='${id}'] .plan`).textContent"
                ".includes('Proctor')", arg=first)
            assert "Send the nearest unit" not in plan_text(operator, first)
            assert f"edited by {SUPERVISOR}" in plan_text(operator, first)
            second = room.press("kp-test-002")
            card(operator, second).wait_for()
            assert "Call her brother" in plan_text(operator, second), "the site's plan, edited"
            edits = audit_rows(tmp_path, "plan-edit")
            assert [row[:3] for row in edits] == [(SUPERVISOR, "plan-edit", "file:plans/campus.toml")]
            detail = json.loads(edits[0][3])
            assert detail["plan"]["steps"] == ["Call campus security", "Call her brother"]
            assert detail["plan"]["contacts"][1] == {"name": "Proctor", "phone": "0300-7654321"}
            assert detail["from"].startswith("web 127.0.0.1:")

            # A false outcome at the campus counts at once on the site's other card.
            supervisor.evaluate("""async (id) => {
                await fetch(`/api/alerts/${id}/actions`, {method: 'POST', headers: {'content-type':
                    'application/json', 'x-csrf-token': window.pinkrelay.csrf},
                    body: JSON.stringify({state: 'false_alarm', outcome: 'false', category: 'accidental'})});
            }""", first)
            operator.wait_for_function(
                "(id) => document.querySelector(`li.alert[data-alert-id='${id}'] .site-record`).textContent"
                ".startsWith('2 false alarms')", arg=second)

            # A registry reload keeps the edit.
            outcome = room.call(room.relay.reload_registry)
            assert outcome is not None
        room.stop()
        room = start_room(tmp_path)  # a restart keeps it too
        with Page(browser, room) as operator:
            sign_in(operator, room.room.url)
            card(operator, second).wait_for()
            assert "Call her brother" in plan_text(operator, second)
            assert card(operator, second).locator(".site-record").inner_text() == \
                "2 false alarms from this site in 12 months"
    finally:
        room.stop()


def test_a_supervisor_sets_test_mode_on_the_board_and_it_lays_out_at_both_sizes(browser, tmp_path):  # noqa: F811
    """The maintenance list under the map: supervisors only; a press in test mode stays off every board."""
    write_registry(tmp_path)
    store = OperatorStore.in_data_dir(tmp_path)
    store.add(OPERATOR, "operator", secret=OPERATOR_SECRET)
    store.add(SUPERVISOR, "supervisor", secret=SUPERVISOR_SECRET)
    room = start_room(tmp_path)
    try:
        with Page(browser, room) as operator, Page(browser, room, LAPTOP) as supervisor:
            sign_in(operator, room.room.url)
            sign_in_as(supervisor, room.room.url, SUPERVISOR, SUPERVISOR_SECRET)
            assert operator.locator("#maintenance").is_hidden(), "operators do not change modes"
            box = supervisor.locator("#maintenance")
            box.locator('select[name="button"]').select_option("kp-test-003")
            box.locator('input[name="note"]').fill("new siren")
            box.locator('button[type="submit"]').click()
            supervisor.wait_for_selector('#maintenance li[data-button="kp-test-003"]')
            assert box.locator('li[data-button="kp-test-003"]').inner_text().startswith(
                f"kp-test-003 in test mode (by {SUPERVISOR}: new siren)")
            operator.wait_for_function("() => document.querySelector('#n-test').textContent === '1'")
            operator.wait_for_selector('#map .site.testmode[data-button="kp-test-003"]')
            room.button("kp-test-003")
            room.button("kp-test-001")
            test_press = room.press("kp-test-003")
            live = room.press("kp-test-001")
            card(operator, live).wait_for()
            card(supervisor, live).wait_for()
            assert card(operator, test_press).count() == 0 and card(supervisor, test_press).count() == 0
            assert journal_rows(tmp_path, test_press) == [("test", "false_alarm", "test")]
            for size in (WALL, LAPTOP):
                supervisor.set_viewport_size({"width": size[0], "height": size[1]})
                supervisor.wait_for_timeout(300)  # the map redraws for the new size
                supervisor.screenshot(path=str(ARTEFACTS / f"board-supervisor-plan-{size[0]}x{size[1]}.png"))
                assert_layout_clean(supervisor, f"supervisor {size[0]}x{size[1]}")
                inside = supervisor.evaluate("""() => {
                    const panel = document.querySelector('.panel.map').getBoundingClientRect();
                    const box = document.querySelector('#maintenance').getBoundingClientRect();
                    return box.bottom <= panel.bottom + 0.5 && box.bottom <= innerHeight;
                }""")
                assert inside, f"the maintenance block spills out of the map panel at {size}"
            box.locator('li[data-button="kp-test-003"] button').click()
            operator.wait_for_function("() => document.querySelector('#n-test').textContent === '0'")
            rows = [row[:3] for row in audit_rows(tmp_path, "button-mode")]
            assert rows == [(SUPERVISOR, "button-mode", "kp-test-003")] * 2
    finally:
        room.stop()


def journal_rows(data_dir: Path, alert_id: str) -> list[tuple]:
    with sqlite3.connect(data_dir / "journal.sqlite3") as conn:
        return conn.execute("SELECT kind, state, outcome FROM events WHERE alert_id = ?", (alert_id,)).fetchall()

"""Action plans from the registry, supervisors' edits in the journal, and what ``alerts show`` says.

Registry files are real CSV/TOML files with real plan files beside them;
the journal is a real SqliteJournal; ``pinkrelay alerts show`` runs as a
user runs it, on the data directory.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import trio

from pinkrelay.alerts.journal import SqliteJournal
from pinkrelay.alerts.lifecycle import transition
from pinkrelay.alerts.plans import MAX_STEPS, Plan, PlanBook, PlanError
from pinkrelay.cli import main
from pinkrelay.errors import RegistryError
from pinkrelay.protocol import Alert, Site
from pinkrelay.registry import load_registry

pytestmark = pytest.mark.core_independent

SECRET = "s" * 20
HEADER = "id,secret,site_name,latitude,longitude,plan_steps,plan_contacts,plan_notes,plan_file\n"
CAMPUS_PLAN = """
steps = ["Call campus security", "Send the nearest unit to gate 2"]
notes = "Gate 2 is locked after 22:00; use gate 1."
[[contacts]]
name = "Campus security"
phone = "+92 91 921 6701"
[[contacts]]
name = "Women's police station, University Town"
phone = "091-9216222"
"""
DAY_US = 24 * 3600 * 1_000_000


def write_registry(directory: Path) -> Path:
    (directory / "plans").mkdir(parents=True, exist_ok=True)
    (directory / "plans" / "campus.toml").write_text(CAMPUS_PLAN)
    path = directory / "registry.csv"
    path.write_text(
        HEADER
        + f"kp-campus-1,{SECRET},University campus,34.0,71.48,,,,plans/campus.toml\n"
        + f"kp-campus-2,{SECRET},University campus,34.0,71.48,,,,plans/campus.toml\n"
        + f'kp-bazaar-1,{SECRET},Qissa Khwani Bazaar,34.01,71.57,"Call Kotwali police station; Send a unit",'
          '"Kotwali police station: 091-9210500; Bazaar union: 0300-1234567",Shopkeepers know the woman on duty.,\n'
        + f"kp-plain-1,{SECRET},Bus stop,34.02,71.5,,,,\n"
    )
    return path


def test_plans_from_columns_and_from_a_shared_file(tmp_path):
    registry = load_registry(write_registry(tmp_path))
    one, two = registry["kp-campus-1"], registry["kp-campus-2"]
    assert one.plan_key == two.plan_key == "file:plans/campus.toml", "buttons of a site share its file's plan"
    assert one.plan == two.plan
    assert one.plan.steps == ("Call campus security", "Send the nearest unit to gate 2")
    assert [(c.name, c.phone) for c in one.plan.contacts] == [
        ("Campus security", "+92 91 921 6701"), ("Women's police station, University Town", "091-9216222")]
    bazaar = registry["kp-bazaar-1"]
    assert bazaar.plan_key == "button:kp-bazaar-1"
    assert bazaar.plan.steps == ("Call Kotwali police station", "Send a unit")
    assert [(c.name, c.phone) for c in bazaar.plan.contacts] == [
        ("Kotwali police station", "091-9210500"), ("Bazaar union", "0300-1234567")]
    assert bazaar.plan.notes == "Shopkeepers know the woman on duty."
    assert registry["kp-plain-1"].plan is None and registry["kp-plain-1"].plan_key == ""


def test_a_toml_registry_gives_plans_as_lists(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(f"""
[[button]]
id = "kp-1"
secret = "{SECRET}"
site_name = "Market"
latitude = 1.0
longitude = 2.0
plan_steps = ["Call the market police post", "Send a unit; a woman officer"]
plan_contacts = ["Market police post: 15"]
""")
    plan = load_registry(path)["kp-1"].plan
    assert plan.steps == ("Call the market police post", "Send a unit; a woman officer"), "a list keeps its ';'"
    assert plan.contacts[0].phone == "15"


def test_bad_plans_are_named_with_file_line_and_field(tmp_path):
    (tmp_path / "bad.toml").write_text('steps = ["ok"]\ncolour = "pink"\n')
    (tmp_path / "broken.toml").write_text("steps = [\n")
    many = ";".join(f"step {n}" for n in range(MAX_STEPS + 1))
    path = tmp_path / "registry.csv"
    path.write_text(
        HEADER
        + f"a-1,{SECRET},A,1,1,,,,missing.toml\n"
        + f"a-2,{SECRET},A,1,1,call,,,bad.toml\n"
        + f"a-3,{SECRET},A,1,1,,,,bad.toml\n"
        + f"a-4,{SECRET},A,1,1,,,,broken.toml\n"
        + f"a-5,{SECRET},A,1,1,{many},,,\n"
        + f"a-6,{SECRET},A,1,1,,\"x\x01y: 1\",,\n"
    )
    with pytest.raises(RegistryError) as error:
        load_registry(path)
    text = str(error.value)
    assert "has 6 problem(s)" in text
    assert f"{path}:2: field plan_file {tmp_path / 'missing.toml'} does not exist" in text
    assert f"{path}:3: give plan_file or plan_steps, not both" in text
    assert f"{path}:4: field plan_file {tmp_path / 'bad.toml'}: unknown plan field(s) colour" in text
    assert f"{path}:5: field plan_file {tmp_path / 'broken.toml'}: not valid TOML" in text
    assert f"{path}:6: field plan_*: a plan has at most {MAX_STEPS} steps, not {MAX_STEPS + 1}" in text
    assert f"{path}:7: field plan_*: contact 1 name contains control characters" in text


def test_plan_json_is_checked():
    with pytest.raises(PlanError, match="steps must be a list of strings"):
        Plan.from_json({"steps": "call"})
    with pytest.raises(PlanError, match="unknown plan field"):
        Plan.from_json({"steps": [], "owner": "x"})
    with pytest.raises(PlanError, match="step 1 is 301 characters; at most 300"):
        Plan.from_json({"steps": ["x" * 301]})
    with pytest.raises(PlanError, match="contact 1 must be"):
        Plan.from_json({"contacts": [{"name": "a", "fax": "b"}]})
    assert Plan.from_json({"steps": [" a ", ""], "contacts": ["Police: 15"], "notes": "two\nlines"}) == Plan(
        steps=("a",), contacts=(Plan.from_json({"contacts": [{"name": "Police", "phone": "15"}]}).contacts[0],),
        notes="two\nlines")


def _alert(alert_id: str, button: str, site: str, at: int) -> Alert:
    return Alert(alert_id=alert_id, pressed_at=at, kind="panic", button=button, received_at=at,
                 site=Site(name=site, kind="campus", latitude=34.0, longitude=71.48))


async def _journal_with_history(data_dir: Path) -> None:
    """Three false alarms at the campus (one 13 months ago), one genuine; a supervisor's plan edit."""
    journal = SqliteJournal(data_dir / "journal.sqlite3")
    await journal.open()
    now = time.time_ns() // 1000
    try:
        closes = [("0199-a", 400, "false", "accidental"), ("0199-b", 200, "false", "malicious"),
                  ("0199-c", 30, "genuine", "harassment"), ("0199-d", 1, "false", "device_fault")]
        for alert_id, days_ago, outcome, category in closes:
            at = now - days_ago * DAY_US
            await journal.record(_alert(alert_id, "kp-campus-1", "University campus", at))
            await journal.apply(transition(alert_id, "raised", "acknowledged", operator="desk-1", at=at + 1))
            await journal.apply(transition(alert_id, "acknowledged", "resolved", operator="desk-1", at=at + 2,
                                           outcome=outcome, category=category))
        await journal.record(_alert("0199-e", "kp-campus-2", "University campus", now))
        book = PlanBook()
        await book.load(journal)
        edited = Plan(steps=("Call campus security first",), notes="Edited for the exam week.")
        await book.edit(journal, "file:plans/campus.toml", edited, "sup-1", now, "web 127.0.0.1:5000")
        reread = PlanBook()
        await reread.load(journal)
        assert reread.edits["file:plans/campus.toml"].plan == edited, "the edit is in the journal"
        audit = await journal.execute(lambda conn: conn.execute(
            "SELECT operator, action, subject, detail FROM audit").fetchall())
        assert audit[0][:3] == ("sup-1", "plan-edit", "file:plans/campus.toml")
        assert json.loads(audit[0][3])["plan"]["steps"] == ["Call campus security first"]
    finally:
        await journal.close()


def test_alerts_show_gives_the_outcome_the_site_record_and_the_plan(tmp_path, capsys):
    write_registry(tmp_path)
    trio.run(_journal_with_history, tmp_path)
    assert main(["alerts", "show", "0199-e", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  outcome    none yet (the alert is open)" in out
    assert "  record     2 false alarms from this site in the last 12 months" in out, "13 months ago: not counted"
    assert "  plan       file:plans/campus.toml (edited by sup-1 at " in out
    assert "    1. Call campus security first\n" in out and "    note: Edited for the exam week." in out
    assert main(["alerts", "show", "0199-b", "--data-dir", str(tmp_path), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["outcome"], body["outcome_category"]) == ("false", "malicious")
    assert body["false_alarms_12m"] == 2 and body["plan"]["source"] == "edited"
    assert main(["alerts", "show", "0199-b", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  outcome    false: malicious, by desk-1 at " in out
    assert "false:malicious" in out.split("\nhistory\n")[1]


def test_the_console_prints_the_plan_and_the_record_under_a_new_alert(tmp_path, capsys):
    """pinkrelay console on the relay's machine, against a real relay (in a thread) and a real button press."""
    from relay_helpers import OPERATOR, TOKEN, secret_for
    from test_web_browser import RoomThread

    write_registry(tmp_path)
    rows = (tmp_path / "registry.csv").read_text().splitlines()
    rows[1] = rows[1].replace(SECRET, secret_for("kp-campus-1").decode())
    (tmp_path / "registry.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "token").write_text(TOKEN)
    room = RoomThread(tmp_path, registry=load_registry(tmp_path / "registry.csv")).start()
    pressed: list[str] = []

    def press_once_signed_in() -> None:
        deadline = time.monotonic() + 5
        while not room.relay.consoles and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.4)  # past the console's snapshot window: a new alert, printed in full
        room.button("kp-campus-1")
        pressed.append(room.press("kp-campus-1"))

    presser = threading.Thread(target=press_once_signed_in)
    try:
        presser.start()
        assert main(["console", "--relay", f"127.0.0.1:{room.relay.consoles_address.port}", "--operator",
                     OPERATOR, "--token-file", str(tmp_path / "token"), "--data-dir", str(tmp_path),
                     "--duration", "2"]) == 0
        presser.join(5)
    finally:
        room.stop()
    out = capsys.readouterr().out
    assert pressed and f"alert id {pressed[0]}" in out, out
    assert "       RECORD 0 false alarms from this site in 12 months\n" in out
    assert "       PLAN   1. Call campus security\n              2. Send the nearest unit to gate 2\n" in out
    assert "       CALL   Campus security: +92 91 921 6701\n" in out
    assert "       NOTE   Gate 2 is locked after 22:00; use gate 1.\n" in out


def test_without_a_journal_for_edits_the_board_shows_the_registrys_plans(tmp_path):
    """A store that cannot run SQL (a cluster's alert bus; here a journal not open) must not stop the board."""
    import pinkrelay
    from pinkrelay.web.plans import AlertContext

    from relay_helpers import relay_config

    relay = pinkrelay.Relay(relay_config(tmp_path), registry=load_registry(write_registry(tmp_path)))
    context = AlertContext(relay, lambda: time.time_ns() // 1000)
    trio.run(context.load)  # no JournalError out of it: the board's pump would restart forever
    assert context._warned, "said once in the log (pinkrelay console's logging may have taken the handlers)"
    shown = context.extend({}, _alert("0199-x", "kp-campus-1", "University campus", time.time_ns() // 1000))
    assert shown["plan"]["source"] == "registry" and shown["plan"]["steps"][0] == "Call campus security"
    assert shown["false_alarms_12m"] == 0

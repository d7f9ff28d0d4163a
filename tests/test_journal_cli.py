"""``pinkrelay alerts list|show|export`` against journals written by SqliteJournal."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import trio
from trio.testing import trio_test

from pinkrelay.alerts.journal import SqliteJournal
from pinkrelay.alerts.lifecycle import transition
from pinkrelay.cli import main
from pinkrelay.protocol import Alert, AlertUpdate, Site

from relay_helpers import OPERATOR, button_client, button_ids, console_client, next_of, running_relay

SITE = Site(name="Zarsang Bazaar, east gate", kind="market", address="Zarsang Bazaar, Gali 1",
            district="Andar Shehr", latitude=34.0081, longitude=71.5708)
T0 = int(datetime(2025, 10, 9, 9, 0, tzinfo=timezone.utc).timestamp()) * 1_000_000
SECOND = 1_000_000
A = "0199c8a1-0000-7000-8000-00000000000a"
B = "0199c8a1-0000-7000-8000-00000000000b"
C = "0199c8e0-0000-7000-8000-00000000000c"
D = "0199c91f-0000-7000-8000-00000000000d"


def press(alert_id: str, button: str, at: int, *, site: Site | None = SITE, kind: str = "panic",
          attempt: int = 1) -> Alert:
    return Alert(alert_id=alert_id, pressed_at=at - 40_000, kind=kind, attempt=attempt, button=button,
                 site=site, received_at=at)


async def write_history(journal: SqliteJournal) -> None:
    """A: worked from raised to resolved; B: its repeat press; C: open, no site; D: an offline alert."""
    merge = 120 * SECOND
    await journal.record(press(A, "kp-pesh-001", T0), merge_window_us=merge)
    await journal.record(press(B, "kp-pesh-001", T0 + 10 * SECOND, attempt=2), merge_window_us=merge)
    steps = [
        ("acknowledged", 20, {}),
        ("dispatched", 60, {"unit": "rescue-15-van-7"}),
        ("note", 90, {"note": 'caller: two men, one armed, "blue" car'}),
        ("on_scene", 400, {}),
        ("resolved", 900, {"note": "suspects gone, shopkeeper unhurt", "outcome": "genuine",
                            "category": "armed-threat"}),
    ]
    for requested, after, fields in steps:
        current = await journal.get(A)
        await journal.apply(transition(A, current.state, requested, operator="desk-1", console="10.0.0.5:50412",
                                       at=T0 + after * SECOND, **fields))
    await journal.record(press(C, "kp-pesh-017", T0 + 3600 * SECOND, site=None), merge_window_us=merge)
    await journal.record(press(D, "kp-pesh-002", T0 + 7200 * SECOND, kind="offline"), merge_window_us=merge)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    async def build() -> None:
        journal = SqliteJournal(tmp_path / "var" / "journal.sqlite3")
        await journal.open()
        try:
            await write_history(journal)
        finally:
            await journal.close()

    trio.run(build)
    return tmp_path / "var"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["alerts", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def karachi_time():
    """Local time UTC+05:00, so naive ISO times and the human output are predictable."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Karachi"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


# -- list --------------------------------------------------------------------------------


def test_list_shows_every_alert_oldest_first(data_dir, capsys, karachi_time):
    code, out, err = run(capsys, "list", "--data-dir", str(data_dir))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "RECEIVED (local time, UTC+05:00)" in lines[0]
    assert [line.split()[2] for line in lines[1:5]] == [A, B, C, D]
    assert lines[1].startswith("2025-10-09 14:00:00.000")  # 09:00 UTC in Karachi
    assert "Zarsang Bazaar, east gate (market)" in lines[1] and lines[1].rstrip().endswith("resolved")
    assert lines[2].rstrip().endswith(f"duplicate of {A}")
    assert "(no site: button not in the registry)" in lines[3] and lines[3].rstrip().endswith("raised")
    assert "offline" in lines[4]
    assert lines[5] == "4 alerts; 2 of these open"


def test_list_open_since_and_json(data_dir, capsys, karachi_time):
    code, out, _ = run(capsys, "list", "--data-dir", str(data_dir), "--open", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["alert_id"] for r in rows] == [C, D]
    assert all(r["open"] for r in rows)
    assert rows[0]["site"] is None and rows[0]["button"] == "kp-pesh-017"
    assert rows[0]["received_at"] == "2025-10-09T10:00:00.000Z" and rows[0]["received_at_us"] == T0 + 3600 * SECOND

    one_hour = str(T0 // SECOND + 3600)
    for since in (one_hour, "2025-10-09T10:00:00Z", "2025-10-09T15:00:00", "2025-10-09T10:00:00+00:00"):
        code, out, _ = run(capsys, "list", "--data-dir", str(data_dir), "--since", since, "--json")
        assert code == 0
        assert [json.loads(line)["alert_id"] for line in out.splitlines()] == [C, D], since
    code, out, _ = run(capsys, "list", "--data-dir", str(data_dir), "--since", "2025-10-09T10:00:00.000001Z")
    assert out.splitlines()[-1] == "1 alerts; 1 of these open"
    code, out, _ = run(capsys, "list", "--data-dir", str(data_dir), "--since", "2030-01-01")
    assert code == 0 and out.startswith("no alerts since then in ")
    code, out, _ = run(capsys, "list", "--data-dir", str(data_dir), "--open", "--since", "2030-01-01")
    assert out.startswith("no open alerts")


def test_list_limit_shows_the_most_recent(data_dir, capsys):
    code, out, _ = run(capsys, "list", "--data-dir", str(data_dir), "--limit", "2")
    lines = out.splitlines()
    assert [line.split()[2] for line in lines[1:3]] == [C, D]
    assert lines[3] == "the last 2 of 4 alerts (--limit 0 for all); 2 of these open"
    code, out, _ = run(capsys, "list", "--data-dir", str(data_dir), "--limit", "0")
    assert out.splitlines()[-1] == "4 alerts; 2 of these open"


def test_data_dir_before_the_action_from_the_environment_or_the_config(data_dir, capsys, monkeypatch, tmp_path):
    code, out, _ = run(capsys, "--data-dir", str(data_dir), "list", "--json")
    assert code == 0 and len(out.splitlines()) == 4
    monkeypatch.setenv("PINKRELAY_DATA_DIR", str(data_dir))
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0 and len(out.splitlines()) == 4
    monkeypatch.delenv("PINKRELAY_DATA_DIR")
    config = tmp_path / "relay.toml"
    config.write_text(f"[relay]\ndata_dir = {json.dumps(str(data_dir))}\n")
    code, out, _ = run(capsys, "list", "--config", str(config), "--json")
    assert code == 0 and len(out.splitlines()) == 4
    # --data-dir wins over the config file.
    code, _, err = run(capsys, "list", "--config", str(config), "--data-dir", str(tmp_path / "elsewhere"))
    assert code == 2 and "no alert journal at" in err


def test_a_data_dir_with_uri_characters_in_its_name(data_dir, capsys, tmp_path):
    odd = tmp_path / "control room #2 %20?x=1"
    odd.mkdir()
    (odd / "journal.sqlite3").write_bytes((data_dir / "journal.sqlite3").read_bytes())
    code, out, _ = run(capsys, "list", "--data-dir", str(odd), "--json")
    assert code == 0 and [json.loads(line)["alert_id"] for line in out.splitlines()] == [A, B, C, D]


# -- show --------------------------------------------------------------------------------


def test_show_gives_the_site_and_the_full_history(data_dir, capsys, karachi_time):
    code, out, err = run(capsys, "show", A, "--data-dir", str(data_dir))
    assert code == 0 and err == ""
    assert out.startswith(f"alert {A}: panic, RESOLVED\n")
    assert "Zarsang Bazaar, east gate (market)" in out
    assert "Zarsang Bazaar, Gali 1, Andar Shehr; 34.0081, 71.5708" in out
    assert f"repeats    1: {B}" in out
    history = out.split("\nhistory\n")[1].splitlines()
    assert history[0].split() == ["CURSOR", "WHEN", "WHAT", "STATE", "LEVEL", "WHO", "UNIT", "OUTCOME", "NOTE"]
    assert "  outcome    genuine: armed-threat, by desk-1 at 2025-10-09 14:15:00.000: suspects gone" in out
    assert "  record     0 false alarms from this site in the last 12 months" in out
    assert "  plan       none (registry not readable: registry file" in out, "no registry.csv in the data dir"
    events = history[1:]
    assert len(events) == 6
    assert "2025-10-09 14:00:00.000" in events[0] and "raised" in events[0] and "button kp-pesh-001" in events[0]
    assert "acknowledged" in events[1] and "desk-1 (10.0.0.5:50412)" in events[1] and "14:00:20.000" in events[1]
    assert "dispatched" in events[2] and "rescue-15-van-7" in events[2]
    assert events[3].split()[3] == "note" and 'caller: two men, one armed, "blue" car' in events[3]
    assert "on_scene" in events[4]
    assert "resolved" in events[5] and "suspects gone, shopkeeper unhurt" in events[5] and "14:15:00.000" in events[5]
    assert "genuine:armed-threat" in events[5]


def test_show_a_repeat_by_unique_prefix_and_as_json(data_dir, capsys):
    code, out, _ = run(capsys, "show", B[:-1] + "b", "--data-dir", str(data_dir))
    assert code == 0 and f"repeat of  {A}" in out and "stored from attempt 2" in out
    code, out, _ = run(capsys, "show", "0199c8e", "--data-dir", str(data_dir), "--json")
    assert code == 0
    body = json.loads(out)
    assert body["alert_id"] == C and body["site"] is None and body["open"] is True
    code, out, _ = run(capsys, "show", A, "--data-dir", str(data_dir), "--json")
    body = json.loads(out)
    assert body["state"] == "resolved" and body["repeats"] == [B]
    assert body["site"]["district"] == "Andar Shehr"
    assert [(e["kind"], e["state"], e["who"], e["unit"]) for e in body["events"]] == [
        ("raised", "raised", "button kp-pesh-001", ""),
        ("transition", "acknowledged", "desk-1 (10.0.0.5:50412)", ""),
        ("transition", "dispatched", "desk-1 (10.0.0.5:50412)", "rescue-15-van-7"),
        ("note", "dispatched", "desk-1 (10.0.0.5:50412)", ""),
        ("transition", "on_scene", "desk-1 (10.0.0.5:50412)", ""),
        ("transition", "resolved", "desk-1 (10.0.0.5:50412)", ""),
    ]
    assert body["events"][-1]["at"] == "2025-10-09T09:15:00.000Z"
    assert (body["events"][-1]["outcome"], body["events"][-1]["category"]) == ("genuine", "armed-threat")
    cursors = [e["cursor"] for e in body["events"]]
    assert cursors == sorted(cursors)


def test_show_an_unknown_or_ambiguous_id_is_a_clear_error(data_dir, capsys):
    code, out, err = run(capsys, "show", "no-such-alert", "--data-dir", str(data_dir))
    assert code == 2 and out == ""
    assert err.startswith("pinkrelay alerts: no alert 'no-such-alert' in the journal ")
    assert "pinkrelay alerts list" in err
    code, _, err = run(capsys, "show", "0199c8a1", "--data-dir", str(data_dir))
    assert code == 2 and "matches several alerts" in err and A in err and B in err
    code, _, err = run(capsys, "show", "", "--data-dir", str(data_dir))
    assert code == 2 and "no alert ''" in err
    code, _, err = run(capsys, "show", "%", "--data-dir", str(data_dir))
    assert code == 2 and "no alert '%'" in err, "LIKE wildcards in an id are literal"


# -- export ------------------------------------------------------------------------------


def test_export_csv_to_a_file(data_dir, capsys, tmp_path):
    target = tmp_path / "reports" / "october.csv"
    target.parent.mkdir()
    code, out, err = run(capsys, "export", "--data-dir", str(data_dir), "--since", "2025-10-09T00:00:00Z",
                         "--format", "csv", "--output", str(target))
    assert code == 0 and out == ""
    assert err.strip() == f"exported 4 alerts received since 2025-10-09T00:00:00.000Z to {target}"
    with open(target, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["alert_id"] for r in rows] == [A, B, C, D]
    a = rows[0]
    assert (a["state"], a["site_name"], a["site_district"], a["latitude"]) == (
        "resolved", "Zarsang Bazaar, east gate", "Andar Shehr", "34.0081")
    assert a["received_at"] == "2025-10-09T09:00:00.000Z" and a["pressed_at"] == "2025-10-09T08:59:59.960Z"
    assert (a["acknowledged_at"], a["acknowledged_by"]) == ("2025-10-09T09:00:20.000Z", "desk-1")
    assert (a["dispatched_at"], a["unit"]) == ("2025-10-09T09:01:00.000Z", "rescue-15-van-7")
    assert a["on_scene_at"] == "2025-10-09T09:06:40.000Z"
    assert (a["closed_at"], a["closed_by"], a["event_count"]) == ("2025-10-09T09:15:00.000Z", "desk-1", "6")
    assert (a["outcome"], a["outcome_category"]) == ("genuine", "armed-threat")
    assert (rows[2]["outcome"], rows[2]["outcome_category"]) == ("", ""), "still open: no outcome yet"
    assert (rows[1]["state"], rows[1]["duplicate_of"], rows[1]["attempt"]) == ("duplicate", A, "2")
    assert rows[2]["site_name"] == "" and rows[2]["acknowledged_at"] == ""
    assert rows[3]["kind"] == "offline"
    assert not [p for p in target.parent.iterdir() if p.name != "october.csv"], "a temporary file was left"


def test_export_since_filters_and_json_has_every_event(data_dir, capsys):
    code, out, _ = run(capsys, "export", "--data-dir", str(data_dir), "--since", str(T0 // SECOND + 1),
                       "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["since"] == "2025-10-09T09:00:01.000Z"
    assert document["journal"] == str((data_dir / "journal.sqlite3").resolve())
    assert [a["alert_id"] for a in document["alerts"]] == [B, C, D]
    assert [len(a["events"]) for a in document["alerts"]] == [1, 1, 1]
    assert document["alerts"][0]["events"][0]["note"] == f"pressed again; linked to {A}"
    code, out, _ = run(capsys, "export", "--data-dir", str(data_dir), "--since", "0", "--format", "json")
    alerts = json.loads(out)["alerts"]
    assert alerts[0]["alert_id"] == A and [e["state"] for e in alerts[0]["events"]] == [
        "raised", "acknowledged", "dispatched", "dispatched", "on_scene", "resolved"]
    assert (alerts[0]["events"][-1]["outcome"], alerts[0]["events"][-1]["category"]) == ("genuine", "armed-threat")
    assert alerts[0]["outcome"] == "genuine"
    code, out, _ = run(capsys, "export", "--data-dir", str(data_dir), "--since", "2030-01-01", "--format", "csv")
    assert code == 0 and len(list(csv.reader(io.StringIO(out)))) == 1, "only the header"


def test_export_without_since_is_every_alert_and_a_format_is_needed(data_dir, capsys):
    code, out, _ = run(capsys, "export", "--data-dir", str(data_dir), "--format", "json")
    document = json.loads(out)
    assert code == 0 and document["since"] is None
    assert {alert["alert_id"] for alert in document["alerts"]} == {A, B, C, D}
    with pytest.raises(SystemExit) as caught:
        main(["alerts", "export", "--data-dir", str(data_dir)])
    assert caught.value.code == 2 and "--format" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["alerts", "export", "--data-dir", str(data_dir), "--since", "yesterday", "--format", "csv"])
    err = capsys.readouterr().err
    assert "'yesterday' is not a time" in err and "ISO 8601" in err
    with pytest.raises(SystemExit):
        main(["alerts", "export", "--data-dir", str(data_dir), "--since", "0", "--format", "xml"])


def test_export_to_a_directory_is_refused(data_dir, capsys, tmp_path):
    code, _, err = run(capsys, "export", "--data-dir", str(data_dir), "--since", "0", "--format", "csv",
                       "--output", str(tmp_path))
    assert code == 2 and "is a directory" in err


# -- errors and a live relay -------------------------------------------------------------


def test_no_journal_at_the_data_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "list", "--data-dir", str(tmp_path / "empty"))
    assert code == 2 and out == ""
    assert f"no alert journal at {tmp_path / 'empty' / 'journal.sqlite3'}" in err and "--data-dir" in err
    code, _, err = run(capsys, "show", "x", "--data-dir", str(tmp_path / "missing"))
    assert code == 2 and "does not exist either" in err
    assert not (tmp_path / "missing").exists(), "reading must not create anything"


def test_a_corrupt_or_foreign_file_is_named(tmp_path, capsys):
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "journal.sqlite3").write_bytes(b"not a database, just bytes " * 200)
    code, _, err = run(capsys, "list", "--data-dir", str(tmp_path / "garbage"))
    assert code == 2 and "is corrupt" in err and str(tmp_path / "garbage" / "journal.sqlite3") in err
    import sqlite3

    (tmp_path / "other").mkdir()
    with sqlite3.connect(tmp_path / "other" / "journal.sqlite3") as conn:
        conn.execute("CREATE TABLE something (x)")
    code, _, err = run(capsys, "list", "--data-dir", str(tmp_path / "other"))
    assert code == 2 and "not a pinkrelay alert journal" in err


@trio_test
async def test_reads_what_a_running_journal_committed_and_leaves_it_working(tmp_path, capsys):
    path = tmp_path / "var" / "journal.sqlite3"
    journal = SqliteJournal(path)
    await journal.open()
    try:
        await write_history(journal)
        assert Path(f"{path}-wal").exists(), "the test needs committed pages still in the WAL"
        code, out, _ = run(capsys, "list", "--data-dir", str(path.parent), "--json")
        assert code == 0 and len(out.splitlines()) == 4
        live = "0199ca00-0000-7000-8000-0000000000ee"
        await journal.record(press(live, "kp-pesh-040", T0 + 9000 * SECOND))
        code, out, _ = run(capsys, "show", live, "--data-dir", str(path.parent), "--json")
        assert code == 0 and json.loads(out)["state"] == "raised"
        # The relay goes on writing and changing state after the reader is gone.
        current = await journal.get(live)
        await journal.apply(transition(live, current.state, "acknowledged", operator="desk-2", at=T0 + 9001 * SECOND))
        code, out, _ = run(capsys, "show", live, "--data-dir", str(path.parent), "--json")
        assert json.loads(out)["state"] == "acknowledged"
    finally:
        await journal.close()


def test_python_m_pinkrelay_alerts(data_dir):
    result = subprocess.run([sys.executable, "-m", "pinkrelay", "alerts", "list", "--data-dir", str(data_dir),
                             "--open", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["alert_id"] for line in result.stdout.splitlines()] == [C, D]


@trio_test
async def test_a_real_console_action_is_journaled_with_the_console_it_came_from(tmp_path, capsys):
    """Each step records who, when and from which console (issue 5): the relay-side peer of that console."""
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        button = button_client(relay, button_ids(1)[0])
        await nursery.start(button.run)
        receipt = await button.press(timeout=5)
        await next_of(console, Alert, where=lambda a: a.alert_id == receipt.alert_id)
        [session] = [s for s in relay.consoles if s.identity == OPERATOR]
        host, _, port = session.peer.rpartition(":")
        assert host == "127.0.0.1" and int(port) != relay.consoles_address.port
        console.update_alert(receipt.alert_id, "acknowledged")
        update = await next_of(console, AlertUpdate, where=lambda u: u.alert_id == receipt.alert_id)
        assert (update.state, update.operator) == ("acknowledged", OPERATOR)
        nursery.cancel_scope.cancel()

    code, out, err = run(capsys, "show", receipt.alert_id, "--data-dir", str(tmp_path), "--json")
    assert code == 0, err
    events = json.loads(out)["events"]
    assert [(e["kind"], e["state"], e["operator"], e["console"]) for e in events] == [
        ("raised", "raised", "", ""),
        ("transition", "acknowledged", OPERATOR, f"console {session.peer}"),
    ]
    assert events[1]["who"] == f"{OPERATOR} (console {session.peer})"
    code, out, _ = run(capsys, "show", receipt.alert_id, "--data-dir", str(tmp_path))
    assert code == 0 and f"{OPERATOR} (console {session.peer})" in out

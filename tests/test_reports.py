"""Reports over a journal this test writes, checked against figures computed by hand.

The journal is a real SqliteJournal written through its public methods
(record, apply, record_test), the same calls the relay makes. Every expected
number below is worked out in the comments from the times given here.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import trio

from pinkrelay.alerts import reports
from pinkrelay.alerts.journal import SqliteJournal
from pinkrelay.alerts.lifecycle import Step, transition
from pinkrelay.cli import main
from pinkrelay.protocol import Alert, Site

from relay_helpers import secret_for

pytestmark = pytest.mark.core_independent

T0 = int(datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp()) * 1_000_000
S = 1_000_000
H = 3600 * S
ROOMS = {"a-1": ("main",), "b-1": ("main", "vwps"), "c-1": ("vwps",)}
SITES = {"a-1": "Market", "b-1": "Campus", "c-1": "Bus stop"}


def rooms_of(button: str) -> tuple[str, ...]:
    return ROOMS.get(button, ("main",))


def alert(alert_id: str, button: str, at: int, kind: str = "panic") -> Alert:
    return Alert(alert_id=alert_id, pressed_at=at, kind=kind, button=button, received_at=at,
                 site=Site(name=SITES[button], kind="other", latitude=1.0, longitude=2.0))


async def step(journal: SqliteJournal, alert_id: str, state: str, at: int, **fields: str) -> None:
    current = await journal.get(alert_id)
    await journal.apply(transition(alert_id, current.state, state, operator=fields.pop("operator", "relay"),
                                   at=at, **fields))


async def escalate(journal: SqliteJournal, alert_id: str, level: int, at: int) -> None:
    await journal.apply(Step(alert_id=alert_id, previous="raised", state="raised", operator="relay", console="",
                             at=at, note=f"escalated to level {level}"), level=level)


async def write_journal(path: Path) -> None:
    journal = SqliteJournal(path)
    await journal.open()
    try:
        # A1, Market (a-1), 07:00 (shift 06-14): ack 10 s (desk-1), dispatch 40 s, resolved 300 s, genuine.
        a1 = T0 + 7 * H
        await journal.record(alert("A1", "a-1", a1), merge_window_us=120 * S)
        await step(journal, "A1", "acknowledged", a1 + 10 * S, operator="desk-1")
        # A repeat press of A1 while it is open: not an alert of its own.
        await journal.record(alert("A1-again", "a-1", a1 + 20 * S), merge_window_us=120 * S)
        await step(journal, "A1", "dispatched", a1 + 40 * S, operator="desk-1", unit="PES-7")
        await step(journal, "A1", "resolved", a1 + 300 * S, operator="desk-1", outcome="genuine",
                   category="harassment")
        # A2, Market, 15:00 (14-22): escalated once at 15 s, ack 30 s (desk-2), false:accidental at 120 s.
        a2 = T0 + 15 * H
        await journal.record(alert("A2", "a-1", a2))
        await escalate(journal, "A2", 1, a2 + 15 * S)
        await step(journal, "A2", "acknowledged", a2 + 30 * S, operator="desk-2")
        await step(journal, "A2", "false_alarm", a2 + 120 * S, operator="sup", outcome="false", category="accidental")
        # A3, Campus (b-1: rooms main and vwps), 23:00 (22-06): ack 5 s (desk-1), dispatch 65 s,
        # false:malicious at 600 s.
        a3 = T0 + 23 * H
        await journal.record(alert("A3", "b-1", a3))
        await step(journal, "A3", "acknowledged", a3 + 5 * S, operator="desk-1")
        await step(journal, "A3", "dispatched", a3 + 65 * S, operator="desk-1", unit="PES-9")
        await step(journal, "A3", "resolved", a3 + 600 * S, operator="desk-1", outcome="false", category="malicious")
        # A4, Bus stop (c-1: vwps), 08:00 (06-14): escalated at 15 and 60 s, ack 90 s (desk-2), still open.
        a4 = T0 + 8 * H
        await journal.record(alert("A4", "c-1", a4))
        await escalate(journal, "A4", 1, a4 + 15 * S)
        await escalate(journal, "A4", 2, a4 + 60 * S)
        await step(journal, "A4", "acknowledged", a4 + 90 * S, operator="desk-2")
        # A test press of c-1 (test mode) at 09:00, and an alert the day before: both left out.
        await journal.record_test(alert("T5", "c-1", T0 + 9 * H), note="test press", sinks=())
        await journal.record(alert("OLD", "a-1", T0 - H))
        # Offline: c-1 from 22:00 the day before to 01:00 (3600 s inside the day), a-1 01:00-01:30
        # (1800 s), b-1 from 23:30, still offline at the end of the day (1800 s).
        for alert_id, button, start, end in (("O1", "c-1", T0 - 2 * H, T0 + H), ("O2", "a-1", T0 + H, T0 + 90 * 60 * S),
                                             ("O3", "b-1", T0 + 23 * H + 30 * 60 * S, None)):
            await journal.record(alert(alert_id, button, start, kind="offline"))
            if end is not None:
                await step(journal, alert_id, "acknowledged", end)
                await step(journal, alert_id, "resolved", end, outcome="false", category="device_fault")
    finally:
        await journal.close()


@pytest.fixture(scope="module")
def journal_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "journal.sqlite3"
    trio.run(write_journal, path)
    return path


def compute(path: Path, room: str | None = None) -> dict:
    conn = reports.open_read_only(path)
    try:
        return reports.compute(conn, since_us=T0, until_us=T0 + 24 * H, rooms_of=rooms_of, room=room,
                               tz=timezone.utc)
    finally:
        conn.close()


def by_name(report: dict, grouping: str) -> dict:
    return {group["name"]: group for group in report["groups"][grouping]}


def test_the_figures_equal_those_computed_by_hand(journal_path):
    report = compute(journal_path)
    overall = report["overall"]
    assert overall["alerts"] == 4 and report["test_presses"] == 1
    # acknowledged after 10, 30, 5, 90 s -> sorted 5, 10, 30, 90: p50 = rank 2 = 10, p90 = rank ceil(3.6) = 4 = 90.
    assert (overall["acknowledged"]["count"], overall["acknowledged"]["p50_s"], overall["acknowledged"]["p90_s"]) \
        == (4, 10.0, 90.0)
    # dispatched after 40, 65 s: p50 = rank 1 = 40, p90 = rank 2 = 65.
    assert (overall["dispatched"]["p50_s"], overall["dispatched"]["p90_s"]) == (40.0, 65.0)
    # closed after 300, 120, 600 s -> 120, 300, 600: p50 = rank 2 = 300, p90 = rank 3 = 600; A4 is open.
    assert (overall["resolved"]["count"], overall["resolved"]["p50_s"], overall["resolved"]["p90_s"]) \
        == (3, 300.0, 600.0)
    counts = {(b["from"], b["to"]): b["count"] for b in overall["acknowledged"]["histogram"]}
    assert counts[(0, 10)] == 1 and counts[(10, 20)] == 1 and counts[(20, 30)] == 0
    assert counts[(30, 60)] == 1 and counts[(60, 120)] == 1 and sum(counts.values()) == 4
    assert (overall["escalated_alerts"], overall["escalations"]) == (2, 3)
    assert overall["outcomes"] == {"genuine": 1, "false": 2, "test": 0, "open": 1, "unknown": 0}
    assert overall["false_categories"] == {"malicious": 1, "accidental": 1, "device_fault": 0}

    sites = by_name(report, "site")
    assert set(sites) == {"Market", "Campus", "Bus stop"}
    # Market: A1 and A2: acknowledged 10, 30 -> p50 10, p90 30; closed 300, 120 -> p50 120, p90 300.
    market = sites["Market"]
    assert (market["alerts"], market["acknowledged"]["p50_s"], market["acknowledged"]["p90_s"]) == (2, 10.0, 30.0)
    assert (market["resolved"]["p50_s"], market["resolved"]["p90_s"]) == (120.0, 300.0)
    assert market["outcomes"]["false"] == 1 and market["escalations"] == 1

    rooms = by_name(report, "room")
    assert {name: g["alerts"] for name, g in rooms.items()} == {"main": 3, "vwps": 2}, "A3's button: both rooms"
    operators = by_name(report, "operator")
    assert {name: g["alerts"] for name, g in operators.items()} == {"desk-1": 2, "desk-2": 2}
    assert operators["desk-1"]["acknowledged"]["p90_s"] == 10.0  # 5 and 10 s
    assert operators["desk-2"]["dispatched"]["count"] == 0
    shifts = by_name(report, "shift")
    assert {name: g["alerts"] for name, g in shifts.items()} == {"06-14": 2, "14-22": 1, "22-06": 1}

    # c-1: 3600 s (clipped at midnight); a-1 and b-1: 1800 s each, a tie in button order.
    assert [(d["button"], d["offline_s"], d["periods"]) for d in report["offline"]] == [
        ("c-1", 3600.0, 1), ("a-1", 1800.0, 1), ("b-1", 1800.0, 1)]


def test_a_room_sees_only_its_buttons(journal_path):
    report = compute(journal_path, room="vwps")
    assert report["overall"]["alerts"] == 2  # A3 (b-1) and A4 (c-1)
    # acknowledged after 5 and 90 s: p50 = 5, p90 = 90.
    assert (report["overall"]["acknowledged"]["p50_s"], report["overall"]["acknowledged"]["p90_s"]) == (5.0, 90.0)
    assert [g["name"] for g in report["groups"]["room"]] == ["vwps"]
    assert [d["button"] for d in report["offline"]] == ["c-1", "b-1"]


def test_the_command_writes_csv_json_and_html(journal_path, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    data_dir = journal_path.parent
    rows = ["id,secret,site_name,latitude,longitude,control_rooms"]
    rows += [f"{b},{secret_for(b).decode()},{SITES[b]},1,2,{';'.join(r)}" for b, r in ROOMS.items()]
    (data_dir / "registry.csv").write_text("\n".join(rows) + "\n")
    window = ["--from", "2026-11-02T00:00:00Z", "--to", "2026-11-03T00:00:00Z", "--data-dir", str(data_dir)]
    try:
        assert main(["report", *window, "--format", "json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document == {**compute(journal_path), "from": "2026-11-02T00:00:00.000Z",
                            "to": "2026-11-03T00:00:00.000Z"}
        assert main(["report", *window, "--room", "vwps"]) == 0
        table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        overall = table[0]
        assert (overall["grouping"], overall["alerts"], overall["acknowledged_p90_s"]) == ("overall", "2", "90.0")
        assert [(r["group"], r["offline_s"]) for r in table if r["grouping"] == "offline"] == [
            ("c-1", "3600.0"), ("b-1", "1800.0")]
        out = tmp_path / "report.html"
        assert main(["report", *window, "--format", "html", "--output", str(out)]) == 0
        page = out.read_text()
        assert page.count("<svg class=\"hist\"") == 3 * (1 + 3 + 2 + 2 + 3)  # stages x (overall + groups)
        assert "<td>Market</td><td>2</td><td>10.0 s / 30.0 s (2)" in page
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_command_refuses_a_backwards_period_and_bad_shifts(journal_path, capsys):
    data_dir = str(journal_path.parent)
    assert main(["report", "--from", "2026-11-03", "--to", "2026-11-02", "--data-dir", data_dir]) == 2
    assert "--to (" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--from", "2026-11-02", "--to", "2026-11-03", "--shifts", "6,25"])
    assert "shift start hours are 0-23" in capsys.readouterr().err

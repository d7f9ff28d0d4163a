"""A journal written before outcomes existed (schema 1) opens, keeps its history and gains outcomes."""

from __future__ import annotations

import sqlite3

from trio.testing import trio_test

from pinkrelay.alerts.journal import SqliteJournal
from pinkrelay.alerts.lifecycle import transition
from pinkrelay.cli import main
from pinkrelay.protocol import AlertUpdate

#: The events and meta tables exactly as schema version 1 created them.
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE alerts (
    alert_id TEXT PRIMARY KEY, button TEXT NOT NULL, kind TEXT NOT NULL, pressed_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL,
    level INTEGER NOT NULL DEFAULT 0, duplicate_of TEXT NOT NULL DEFAULT '', site TEXT NOT NULL DEFAULT '',
    cursor INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
CREATE TABLE events (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    level INTEGER NOT NULL DEFAULT 0, operator TEXT NOT NULL DEFAULT '', console TEXT NOT NULL DEFAULT '',
    unit TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '', at INTEGER NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO alerts VALUES ('old-1', 'kp-pesh-001', 'panic', 10, 11, 1, 'resolved', 0, '', '', 1, 30);
INSERT INTO alerts VALUES ('old-2', 'kp-pesh-002', 'panic', 40, 41, 1, 'acknowledged', 0, '', '', 3, 50);
INSERT INTO events (cursor, alert_id, kind, state, at) VALUES (1, 'old-1', 'raised', 'raised', 11);
INSERT INTO events (cursor, alert_id, kind, state, operator, note, at)
    VALUES (2, 'old-1', 'transition', 'resolved', 'desk-1', 'closed before outcomes', 30);
INSERT INTO events (cursor, alert_id, kind, state, at) VALUES (3, 'old-2', 'raised', 'raised', 41);
INSERT INTO events (cursor, alert_id, kind, state, operator, at)
    VALUES (4, 'old-2', 'transition', 'acknowledged', 'desk-1', 50);
"""


def _old_journal(tmp_path):
    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_1)
    return path


def test_alerts_export_reads_a_schema_1_journal_no_relay_has_migrated(tmp_path, capsys):
    path = _old_journal(tmp_path)
    assert main(["alerts", "export", "--data-dir", str(tmp_path), "--format", "csv"]) == 0
    header, first, *_ = capsys.readouterr().out.splitlines()
    assert header.endswith(",outcome,outcome_category") and first.endswith(",,")
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    assert "outcome" not in columns, "a read-only export leaves the file as it was"


@trio_test
async def test_opening_a_schema_1_journal_adds_outcomes_and_keeps_history(tmp_path):
    path = _old_journal(tmp_path)
    journal = SqliteJournal(path)
    await journal.open()
    try:
        history = await journal.events_since(0)
        old_close = next(e for e in history if isinstance(e, AlertUpdate) and e.alert_id == "old-1")
        assert (old_close.state, old_close.note, old_close.outcome) == ("resolved", "closed before outcomes", "")
        current = await journal.get("old-2")
        assert current is not None and current.state == "acknowledged"
        closed = await journal.apply(transition("old-2", "acknowledged", "resolved", operator="desk-2", at=60,
                                                outcome="false", category="device_fault"))
        assert (closed.outcome, closed.category) == ("false", "device_fault")
    finally:
        await journal.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
        assert conn.execute("SELECT outcome, category FROM events WHERE alert_id = 'old-2' AND state = 'resolved'"
                            ).fetchall() == [("false", "device_fault")]
    again = SqliteJournal(path)  # opening twice migrates nothing twice
    await again.open()
    await again.close()

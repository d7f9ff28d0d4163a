"""The persistent outbox: one row per (sink, journal event) until that sink has it.

The journal inserts the rows in the same transaction as the alert or the
lifecycle step they carry (``queue_outbound``), so an event that is stored
is also queued for every sink, and one that is not stored is queued for none;
a crash in between cannot lose or invent a delivery. A row is deleted when
its sink confirmed delivery; until then it is retried, across restarts too.

The dispatcher reads pending rows on its own read-only connection (WAL lets
it read while the journal writes) in a worker thread, and deletes delivered
rows through the journal's writer, so the trio thread never waits on SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..protocol import Site

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    sink TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (sink, cursor)
) WITHOUT ROWID;
"""


def queue_outbound(conn: sqlite3.Connection, cursor: int, sinks: Sequence[str]) -> None:
    """In the journal's transaction: queue the event at ``cursor`` for every sink."""
    if sinks:
        conn.executemany("INSERT OR IGNORE INTO outbox (sink, cursor) VALUES (?, ?)",
                         [(sink, cursor) for sink in sinks])


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One journal event as a sink gets it: the step and the alert it belongs to."""

    sink: str
    cursor: int
    attempts: int
    alert_id: str
    #: raised, duplicate, transition, escalated, note or test (the journal's event kinds; test only
    #: for sinks whose format marks a test, relay/test_presses.py).
    step: str
    state: str
    level: int
    operator: str
    console: str
    unit: str
    note: str
    at: int
    button: str
    alert_kind: str
    pressed_at: int
    received_at: int
    attempt: int
    duplicate_of: str
    site: Site | None
    #: The cursor of the alert's first step (its raise).
    first_cursor: int

    @property
    def idempotency_key(self) -> str:
        """The alert id and the step (its journal cursor): the same for every retry of one delivery."""
        return f"{self.alert_id}:{self.cursor}"


_STEP_COLUMNS = """e.alert_id, e.kind, e.state, e.level, e.operator, e.console, e.unit, e.note, e.at,
       a.button, a.kind, a.pressed_at, a.received_at, a.attempt, a.duplicate_of, a.site, a.cursor"""
_PENDING = f"""
SELECT o.cursor, o.attempts, {_STEP_COLUMNS}
FROM outbox o JOIN events e ON e.cursor = o.cursor JOIN alerts a ON a.alert_id = e.alert_id
WHERE o.sink = ? ORDER BY o.cursor LIMIT ?
"""
_LATEST = f"""
SELECT e.cursor, 0, {_STEP_COLUMNS}
FROM events e JOIN alerts a ON a.alert_id = e.alert_id
WHERE e.alert_id = ? ORDER BY e.cursor DESC LIMIT 1
"""


def _delivery(sink: str, row: Sequence[Any]) -> Delivery:
    (cursor, attempts, alert_id, step, state, level, operator, console, unit, note, at, button, kind,
     pressed_at, received_at, attempt, duplicate_of, site, first_cursor) = row
    return Delivery(sink=sink, cursor=cursor, attempts=attempts, alert_id=alert_id, step=step, state=state,
                    level=level, operator=operator, console=console, unit=unit, note=note, at=at,
                    button=button, alert_kind=kind, pressed_at=pressed_at, received_at=received_at,
                    attempt=attempt, duplicate_of=duplicate_of,
                    site=Site(**json.loads(site)) if site else None, first_cursor=first_cursor)


async def latest_step(journal: Any, alert_id: str) -> Delivery | None:
    """An alert's most recent step, as a sink would get it (for CAP by the API); None if unknown."""
    def query(conn: sqlite3.Connection) -> Delivery | None:
        row = conn.execute(_LATEST, (alert_id,)).fetchone()
        return None if row is None else _delivery("", row)

    return await journal.execute(query)


class OutboxStore:
    """Reads a sink's pending deliveries and records their outcome in the journal."""

    def __init__(self, journal: Any) -> None:
        self.journal = journal
        self._reader: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    def _connect(self) -> sqlite3.Connection:
        path = Path(self.journal.path).resolve()
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        return conn

    async def pending(self, sink: str, limit: int = 100) -> tuple[list[Delivery], int]:
        """The oldest ``limit`` deliveries ``sink`` has not confirmed, in journal order, and how many wait."""
        def query(conn: sqlite3.Connection) -> tuple[list[Delivery], int]:
            rows = [_delivery(sink, row) for row in conn.execute(_PENDING, (sink, limit))]
            return rows, conn.execute("SELECT COUNT(*) FROM outbox WHERE sink = ?", (sink,)).fetchone()[0]

        return await self._read(query)

    async def counts(self) -> dict[str, int]:
        """Pending deliveries by sink."""
        return dict(await self._read(lambda conn: conn.execute(
            "SELECT sink, COUNT(*) FROM outbox GROUP BY sink").fetchall()))

    async def count(self, sink: str) -> int:
        """Pending deliveries of one sink."""
        return int(await self._read(lambda conn: conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE sink = ?", (sink,)).fetchone()[0]))

    async def _read(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        async with self._lock:  # one reader connection, used by one thread at a time
            def read() -> Any:
                if self._reader is None:
                    self._reader = self._connect()
                return query(self._reader)

            return await trio.to_thread.run_sync(read)

    async def delivered(self, delivery: Delivery) -> None:
        """The sink confirmed it: the row goes (committed with the journal's next batch)."""
        await self.journal.execute(lambda conn: conn.execute(
            "DELETE FROM outbox WHERE sink = ? AND cursor = ?", (delivery.sink, delivery.cursor)))

    async def failed(self, delivery: Delivery, error: str) -> None:
        """Count the attempt and keep why it failed, for ``pinkrelay`` tools and a restart."""
        await self.journal.execute(lambda conn: conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE sink = ? AND cursor = ?",
            (error[:500], delivery.sink, delivery.cursor)))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

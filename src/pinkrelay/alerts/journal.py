"""The durable alert journal: SQLite in WAL mode, written by one thread with group commit.

The relay acknowledges a press to the button only after the journal has
committed it (``synchronous=FULL``: the commit is on disk). Each alert id is
stored once, so a button's retries are recognised (``duplicate``). Every
change to an alert (raised, each lifecycle step, each escalation, each note)
is an event with a cursor: a sequence number consoles resume from.

Group commit: the writer thread takes every request queued while it was
busy and commits them in one transaction, so a burst of alerts costs one
fsync, not one each. If anything in a batch fails, the batch is rolled back
and run again with each request in its own savepoint, so one bad request
fails alone. The trio side never blocks: the waiting tasks sleep until the
writer hands the batch's outcomes back, in commit order, through the run's
token (one wakeup per batch). ``benchmarks/journal_throughput.py`` measures it.

Media never goes through the journal; alerts, lifecycle events, handshake
counters and the audit trail do.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import outcome
import trio

from ..errors import PinkRelayError
from ..integrations.outbox import SCHEMA as OUTBOX_SCHEMA
from ..integrations.outbox import queue_outbound
from ..protocol import Alert, AlertUpdate, Site
from .lifecycle import OPEN_STATES, AlertState, Step
from .migrations import CURRENT_VERSION, migrate

log = logging.getLogger("pinkrelay.journal")

SCHEMA_VERSION = CURRENT_VERSION
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    button TEXT NOT NULL,
    kind TEXT NOT NULL,
    pressed_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    level INTEGER NOT NULL DEFAULT 0,
    duplicate_of TEXT NOT NULL DEFAULT '',
    site TEXT NOT NULL DEFAULT '',
    cursor INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_button ON alerts (button, received_at);
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state);
CREATE TABLE IF NOT EXISTS events (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    level INTEGER NOT NULL DEFAULT 0,
    operator TEXT NOT NULL DEFAULT '',
    console TEXT NOT NULL DEFAULT '',
    unit TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_alert ON events (alert_id, cursor);
CREATE TABLE IF NOT EXISTS counters (
    role TEXT NOT NULL,
    identity TEXT NOT NULL,
    counter INTEGER NOT NULL,
    PRIMARY KEY (role, identity)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    operator TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


class JournalError(PinkRelayError, OSError):
    """The journal cannot store or read alerts; the message says why and what to do."""


class StaleStep(JournalError):
    """A lifecycle step that no longer applies (the alert is unknown or changed meanwhile).

    Not a storage failure: retrying the same step cannot succeed.
    """


@dataclass(frozen=True, slots=True)
class Recorded:
    """The outcome of recording a press."""

    alert: Alert
    duplicate: bool


@functools.lru_cache(maxsize=4096)  # a registry has few sites; each press stores its site
def _site_json(site: Site | None) -> str:
    if site is None:
        return ""
    return json.dumps(
        {
            "name": site.name,
            "kind": site.kind,
            "address": site.address,
            "district": site.district,
            "latitude": site.latitude,
            "longitude": site.longitude,
        }
    )


def _site_from(text: str) -> Site | None:
    return Site(**json.loads(text)) if text else None


_ALERT_COLUMNS = (
    "alert_id, button, kind, pressed_at, received_at, attempt, state, level, duplicate_of, site, cursor"
)


def _alert_from_row(row: Sequence[Any]) -> Alert:
    alert_id, button, kind, pressed_at, received_at, attempt, state, level, duplicate_of, site, cursor = row
    return Alert(
        alert_id=alert_id,
        button=button,
        kind=kind,
        pressed_at=pressed_at,
        received_at=received_at,
        attempt=attempt,
        state=state,
        level=level,
        duplicate_of=duplicate_of,
        site=_site_from(site),
        cursor=cursor,
    )


_ALERT_FIELDS = tuple(field.name for field in fields(Alert))


def _stored(alert: Alert, state: str, duplicate_of: str, cursor: int) -> Alert:
    """``alert`` as stored: ``replace`` without validating every field again.

    The caller's alert was validated when it was made; the journal only sets
    a lifecycle state, the id of a stored alert and a SQLite integer. The
    checks in Alert.__post_init__ (every character of every id) cost more
    than the rest of record() on the trio side.
    """
    stored = object.__new__(Alert)
    for name in _ALERT_FIELDS:
        object.__setattr__(stored, name, getattr(alert, name))
    object.__setattr__(stored, "state", state)
    object.__setattr__(stored, "duplicate_of", duplicate_of)
    object.__setattr__(stored, "cursor", cursor)
    return stored


_OPEN_STATE_VALUES = tuple(sorted(s.value for s in OPEN_STATES))
_OPEN_ALERT_OF_BUTTON = (
    f"SELECT alert_id FROM alerts WHERE button = ? AND kind = 'panic' AND state IN "
    f"({','.join('?' * len(_OPEN_STATE_VALUES))}) AND received_at >= ? ORDER BY received_at DESC LIMIT 1"
)


def _deliver(replies: list[tuple[Callable[[Any, BaseException | None], None], Any, BaseException | None]]) -> None:
    """In the trio thread: hand each request of a committed batch its outcome, in order."""
    for reply, result, error in replies:
        reply(result, error)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # SQLite already rolled it back


def _read_only_part(path: Path) -> Path | None:
    """The journal's directory or file that cannot be written now, if there is one.

    SQLite reports a write refused by the system (a file system remounted
    read-only, an immutable file, a file mode) as a bare "disk I/O error" or
    "unable to open database file"; the operator needs to know which path to fix.
    """
    for candidate in (path.parent, path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            return candidate
    return None


def _describe_read_only(path: Path, text: str) -> str | None:
    culprit = _read_only_part(path)
    if culprit is None:
        return None
    what = "directory" if culprit.is_dir() else "file"
    return (
        f"journal {path}: cannot write ({text}): the {what} {culprit} is read-only; make the data directory "
        "and the journal's files writable for the relay, alerts are not being stored"
    )


def _describe_sqlite_error(path: Path, error: BaseException) -> str:
    text = str(error)
    if "full" in text:
        return f"journal {path}: the disk is full ({text}); free space, alerts are not being stored"
    if "malformed" in text or "not a database" in text:
        return (
            f"journal {path} is corrupt ({text}); stop the relay, move the file aside "
            "(keep it for investigation) and start again with a new journal"
        )
    if any(sign in text for sign in ("readonly", "read-only", "disk I/O error", "unable to open")):
        read_only = _describe_read_only(path, text)
        if read_only is not None:
            return read_only
    if "readonly" in text or "read-only" in text:
        return f"journal {path}: cannot write ({text}); make the data directory writable"
    if "disk I/O error" in text:
        return f"journal {path}: {text}; check the disk and the system log, alerts are not being stored"
    return f"journal {path}: {text}"


def _events_after(conn: sqlite3.Connection, cursor: int, limit: int) -> list[Alert | AlertUpdate]:
    rows = conn.execute(
        "SELECT cursor, alert_id, kind, state, level, operator, unit, note, at, outcome, category FROM events "
        "WHERE cursor > ? ORDER BY cursor LIMIT ?",
        (cursor, limit),
    ).fetchall()
    out: list[Alert | AlertUpdate] = []
    for event_cursor, alert_id, kind, state, level, operator, unit, note, at, step_outcome, category in rows:
        if kind in ("raised", "duplicate"):
            row = conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
            out.append(replace(_alert_from_row(row), state=state, level=level, cursor=event_cursor))
        else:
            out.append(AlertUpdate(alert_id=alert_id, state=state, operator=operator, note=note,
                                   unit=unit, at=at, level=level, cursor=event_cursor,
                                   outcome=step_outcome, category=category))
    return out


#: Cursors reserved durably at a time (see SqliteJournal._reserve_cursors_at_start).
CURSOR_BLOCK = 100_000


def _ignore_reply(result: Any, error: BaseException | None) -> None:
    if error is not None:
        log.error("could not extend the cursor reservation: %s", error)


class SqliteJournal:
    """The durable journal. ``await open()`` before use, ``await close()`` after."""

    durable = True
    #: The relay tells consoles itself, before the commit, in cursor order (alerts/store.py).
    announces = False
    on_event = None

    def __init__(self, path: Path | str, *, max_batch: int = 1000, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.max_batch = max_batch
        self.synchronous = synchronous
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.commits = 0
        self.requests_done = 0
        #: Called from the journal's thread after each batch's commit with its
        #: duration in seconds and its size (the relay's metrics observe it); must be thread-safe.
        self.on_commit: Callable[[float, int], None] | None = None
        #: Sinks every stored alert and step is queued for, in the same transaction
        #: (pinkrelay/integrations/outbox.py); ``on_outbound`` is called after such a commit.
        self.outbound_sinks: tuple[str, ...] = ()
        self.on_outbound: Callable[[], None] | None = None
        self._next_cursor = 1
        self._reserved = 0

    # -- thread --------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise JournalError(
                f"journal directory {self.path.parent} is not a directory; point the data directory elsewhere"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise JournalError(f"journal directory {self.path.parent}: {error.strerror or error}") from None
        if not self.path.exists():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as error:
                text = error.strerror or str(error)
                raise JournalError(_describe_read_only(self.path, text) or f"journal {self.path}: {text}") from None
        conn = None
        previous_umask = os.umask(0o077)  # the WAL and shared-memory files are private too
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
            conn.executescript(SCHEMA + OUTBOX_SCHEMA)
            migrate(conn)
        except sqlite3.Error as error:
            if conn is not None:
                conn.close()
            raise JournalError(_describe_sqlite_error(self.path, error)) from None
        finally:
            os.umask(previous_umask)
        return conn

    def _run(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self._requests.get()
            if first is None:
                conn.close()
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._execute(conn, batch)
            if stop:
                conn.close()
                return

    def _execute(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        started = time.perf_counter()
        results = self._transaction(conn, batch)
        if results is None:
            results = self._isolated(conn, batch)
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started, len(batch))
        self.requests_done += len(batch)
        replies = [(reply, result, error) for (_, reply), (result, error) in zip(batch, results, strict=True)]
        # One wakeup of the trio thread for the whole batch, replies in commit order.
        try:
            self._token.run_sync_soon(_deliver, replies)  # type: ignore[union-attr]
        except trio.RunFinishedError:
            pass

    def _transaction(self, conn: sqlite3.Connection, batch: list[Any]) -> list[tuple[Any, None]] | None:
        """The common case: the whole batch in one transaction. None if anything failed (rolled back)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [(work(conn), None) for work, _ in batch]
            conn.execute("COMMIT")
        except Exception:
            _rollback(conn)
            return None
        self.commits += 1
        return results

    def _isolated(self, conn: sqlite3.Connection, batch: list[Any]) -> list[tuple[Any, BaseException | None]]:
        """Run a batch that failed again, each request in its own savepoint, so a bad one fails alone.

        An error that makes SQLite roll back the whole transaction (disk full,
        I/O error) fails the request that hit it, with that reason; the
        others are then tried again in a new transaction.
        """
        results: list[tuple[Any, BaseException | None]] = [(None, None)] * len(batch)
        todo = list(range(len(batch)))
        while todo:
            done: dict[int, tuple[Any, BaseException | None]] = {}
            lost: tuple[int, BaseException] | None = None
            try:
                conn.execute("BEGIN IMMEDIATE")
                for index in todo:
                    conn.execute("SAVEPOINT request")
                    try:
                        done[index] = (batch[index][0](conn), None)
                    except Exception as error:
                        if not conn.in_transaction:
                            lost = (index, error)
                            break
                        conn.execute("ROLLBACK TO request")
                        done[index] = (None, error)
                    conn.execute("RELEASE request")
                if lost is None:
                    conn.execute("COMMIT")
            except sqlite3.Error as error:
                # BEGIN, a savepoint or COMMIT failed: nothing of this transaction is stored.
                _rollback(conn)
                failure = JournalError(_describe_sqlite_error(self.path, error))
                log.error("%s", failure)
                for index in todo:
                    results[index] = (None, failure)
                return results
            if lost is None:
                self.commits += 1
                for index, result in done.items():
                    results[index] = result
                return results
            index, error = lost
            log.error("%s", _describe_sqlite_error(self.path, error))
            results[index] = (None, error)
            todo.remove(index)
        return results

    # -- trio side ----------------------------------------------------------------

    async def open(self) -> None:
        conn = await trio.to_thread.run_sync(self._connect)
        self._next_cursor = await trio.to_thread.run_sync(self._reserve_cursors_at_start, conn)
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, args=(conn,), name="pinkrelay-journal", daemon=True)
        self._thread.start()

    def _reserve_cursors_at_start(self, conn: sqlite3.Connection) -> int:
        """Start above every cursor a previous run may have handed out, stored or not.

        A cursor is shown to consoles before its event is committed. If the
        process died in between, that cursor is not in the table, and
        reusing it would make a console that saw it skip the new event. So
        cursors are handed out from a durably reserved block, and a new run
        starts after the last reservation.
        """
        try:
            last = conn.execute("SELECT COALESCE(MAX(cursor), 0) FROM events").fetchone()[0]
            row = conn.execute("SELECT value FROM meta WHERE key = 'cursor_reserved'").fetchone()
            first = max(last, int(row[0]) if row else 0) + 1
            self._reserved = first + CURSOR_BLOCK
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('cursor_reserved', ?)", (str(self._reserved),)
            )
        except sqlite3.Error as error:
            conn.close()
            raise JournalError(_describe_sqlite_error(self.path, error)) from None
        return first

    def _extend_reservation(self) -> None:
        """Reserve the next block while half of this one is still unused."""
        self._reserved += CURSOR_BLOCK
        reserved = self._reserved

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE meta SET value = MAX(CAST(value AS INTEGER), ?) WHERE key = 'cursor_reserved'", (reserved,)
            )

        self._requests.put((work, _ignore_reply))

    @property
    def next_cursor(self) -> int:
        """The cursor ``take_cursor`` will hand out next."""
        return self._next_cursor

    def take_cursor(self) -> int:
        """The cursor of the next event, decided now, in submission order.

        Cursors are handed out on the trio side as requests are queued, and
        requests run in queue order, so cursors grow in commit order. The
        relay takes one before the commit to tell consoles about an alert at
        once; a request that fails leaves a gap, which resuming tolerates
        (it asks for everything after a cursor).
        """
        cursor = self._next_cursor
        self._next_cursor += 1
        if self._thread is not None and self._next_cursor + CURSOR_BLOCK // 2 >= self._reserved:
            self._extend_reservation()
        return cursor

    async def close(self) -> None:
        if self._thread is None:
            return
        self._requests.put(None)
        await trio.to_thread.run_sync(self._thread.join)
        self._thread = None

    async def _call(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._thread is None or self._token is None:
            raise JournalError(f"journal {self.path} is not open")
        # The task sleeps until the writer's batch is committed; _deliver wakes it
        # in the trio thread. Cancelled meanwhile, it stops waiting; the request
        # still runs and its outcome is dropped (as with an Event).
        task = trio.lowlevel.current_task()
        cancelled = False

        def reply(result: Any, error: BaseException | None) -> None:  # in the trio thread
            if not cancelled:
                trio.lowlevel.reschedule(task, outcome.Value((result, error)))

        def abort(_: Any) -> trio.lowlevel.Abort:
            nonlocal cancelled
            cancelled = True
            return trio.lowlevel.Abort.SUCCEEDED

        self._requests.put((work, reply))
        result, error = await trio.lowlevel.wait_task_rescheduled(abort)
        if error is not None:
            if isinstance(error, JournalError):
                raise error
            raise JournalError(_describe_sqlite_error(self.path, error)) from error
        return result

    # -- alerts -------------------------------------------------------------------

    async def record(self, alert: Alert, *, merge_window_us: int = 0) -> Recorded:
        """Store a press once. A retry of a stored id returns it with ``duplicate`` set.

        With ``merge_window_us``, a new press from a button that has an open
        alert raised within the window is stored as state ``duplicate``,
        linked to that alert (``duplicate_of``).
        """

        event_cursor = alert.cursor or self.take_cursor()

        def work(conn: sqlite3.Connection) -> tuple[Any, ...]:
            row = conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert.alert_id,)).fetchone()
            if row is not None:
                return (row,)
            state, duplicate_of = alert.state, alert.duplicate_of
            if merge_window_us and alert.kind == "panic":
                open_row = conn.execute(_OPEN_ALERT_OF_BUTTON, (alert.button, *_OPEN_STATE_VALUES,
                                                                alert.received_at - merge_window_us)).fetchone()
                if open_row is not None:
                    state, duplicate_of = AlertState.DUPLICATE.value, open_row[0]
            cursor = conn.execute(
                "INSERT INTO events (cursor, alert_id, kind, state, level, note, at) VALUES (?, ?, ?, ?, 0, ?, ?)",
                (
                    event_cursor,
                    alert.alert_id,
                    "duplicate" if duplicate_of else "raised",
                    state,
                    ("" if not duplicate_of else f"pressed again; linked to {duplicate_of}" if alert.kind == "panic"
                     else f"part of mass outage {duplicate_of}"),
                    alert.received_at,
                ),
            ).lastrowid
            queue_outbound(conn, cursor, self.outbound_sinks)
            conn.execute(
                f"INSERT INTO alerts ({_ALERT_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert.alert_id,
                    alert.button,
                    alert.kind,
                    alert.pressed_at,
                    alert.received_at,
                    alert.attempt,
                    state,
                    alert.level,
                    duplicate_of,
                    _site_json(alert.site),
                    cursor,
                    alert.received_at,
                ),
            )
            return (None, state, duplicate_of, cursor)

        found = await self._call(work)
        if found[0] is not None:
            return Recorded(_alert_from_row(found[0]), True)
        self._outbound_committed()
        _, state, duplicate_of, cursor = found
        return Recorded(_stored(alert, state, duplicate_of, cursor), False)

    async def record_test(self, alert: Alert, *, note: str, sinks: tuple[str, ...]) -> Recorded:
        """Store a press of a button in test mode: closed at once, as a test, in one event.

        The alert is stored ``false_alarm`` with one event of kind ``test``
        (outcome ``test``, operator ``relay``), queued only for ``sinks``
        (those whose format marks a test, e.g. CAP status Test). A console
        resuming from the journal gets it as a step of an alert it never saw,
        which it ignores: a test pages nobody, not even after a reconnect.
        A retry of a stored id returns it with ``duplicate`` set.
        """
        event_cursor = alert.cursor or self.take_cursor()
        closed = AlertState.FALSE_ALARM.value

        def work(conn: sqlite3.Connection) -> Any:
            row = conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert.alert_id,)).fetchone()
            if row is not None:
                return row
            conn.execute(
                "INSERT INTO events (cursor, alert_id, kind, state, level, operator, note, at, outcome) "
                "VALUES (?, ?, 'test', ?, 0, 'relay', ?, ?, 'test')",
                (event_cursor, alert.alert_id, closed, note, alert.received_at),
            )
            queue_outbound(conn, event_cursor, sinks)
            conn.execute(
                f"INSERT INTO alerts ({_ALERT_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (alert.alert_id, alert.button, alert.kind, alert.pressed_at, alert.received_at, alert.attempt,
                 closed, 0, "", _site_json(alert.site), event_cursor, alert.received_at),
            )
            return None

        found = await self._call(work)
        if found is not None:
            return Recorded(_alert_from_row(found), True)
        if sinks:
            self._outbound_committed()
        return Recorded(_stored(alert, closed, "", event_cursor), False)

    async def apply(self, step: Step, *, level: int | None = None, cursor: int = 0) -> AlertUpdate:
        """Record a lifecycle step (checked against the current state inside the transaction)."""
        event_cursor = cursor or self.take_cursor()

        def work(conn: sqlite3.Connection) -> AlertUpdate:
            row = conn.execute("SELECT state, level FROM alerts WHERE alert_id = ?", (step.alert_id,)).fetchone()
            if row is None:
                raise StaleStep(f"no alert {step.alert_id} in the journal")
            if row[0] != step.previous:
                raise StaleStep(
                    f"alert {step.alert_id} changed to {row[0]} meanwhile; refresh and try again"
                )
            new_level = row[1] if level is None else level
            kind = "note" if step.state == step.previous and step.note and level is None else (
                "escalated" if level is not None else "transition"
            )
            cursor = conn.execute(
                "INSERT INTO events (cursor, alert_id, kind, state, level, operator, console, unit, note, at, "
                "outcome, category) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (event_cursor, step.alert_id, kind, step.state, new_level, step.operator, step.console,
                 step.unit, step.note, step.at, step.outcome, step.category),
            ).lastrowid
            queue_outbound(conn, cursor, self.outbound_sinks)
            conn.execute(
                "UPDATE alerts SET state = ?, level = ?, updated_at = ? WHERE alert_id = ?",
                (step.state, new_level, step.at, step.alert_id),
            )
            return AlertUpdate(alert_id=step.alert_id, state=step.state, operator=step.operator,
                               note=step.note, unit=step.unit, at=step.at, level=new_level, cursor=cursor,
                               outcome=step.outcome, category=step.category)

        update = await self._call(work)
        self._outbound_committed()
        return update

    def _outbound_committed(self) -> None:
        if self.outbound_sinks and self.on_outbound is not None:
            self.on_outbound()

    async def execute(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``work(conn)`` in the writer's next batch and return its result once committed."""
        return await self._call(work)

    async def recent_alerts(self, since_us: int, limit: int = 200_000) -> list[Alert]:
        """Alerts received since ``since_us`` plus every open one: what the relay keeps in memory."""

        def work(conn: sqlite3.Connection) -> list[Alert]:
            placeholders = ",".join("?" * len(OPEN_STATES))
            rows = conn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE received_at >= ? OR state IN ({placeholders}) "
                "ORDER BY received_at DESC LIMIT ?",
                (since_us, *[s.value for s in OPEN_STATES], limit),
            ).fetchall()
            return [_alert_from_row(row) for row in reversed(rows)]

        return await self._call(work)

    async def get(self, alert_id: str) -> Alert | None:
        def work(conn: sqlite3.Connection) -> Alert | None:
            row = conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
            return _alert_from_row(row) if row else None

        return await self._call(work)

    async def open_alerts(self) -> list[Alert]:
        def work(conn: sqlite3.Connection) -> list[Alert]:
            placeholders = ",".join("?" * len(OPEN_STATES))
            rows = conn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state IN ({placeholders}) ORDER BY cursor",
                [s.value for s in OPEN_STATES],
            ).fetchall()
            return [_alert_from_row(row) for row in rows]

        return await self._call(work)

    async def events_since(self, cursor: int, limit: int = 10000) -> list[Alert | AlertUpdate]:
        """Everything after ``cursor``, in order: raised alerts as Alert, changes as AlertUpdate."""
        return await self._call(lambda conn: _events_after(conn, cursor, limit))

    async def snapshot(self, resume_from: int = 0) -> tuple[int, list[Alert], list[Alert | AlertUpdate]]:
        """(last cursor, open alerts, events after ``resume_from``), read in one transaction."""

        def work(conn: sqlite3.Connection) -> tuple[int, list[Alert], list[Alert | AlertUpdate]]:
            last = conn.execute("SELECT COALESCE(MAX(cursor), 0) FROM events").fetchone()[0]
            placeholders = ",".join("?" * len(OPEN_STATES))
            rows = conn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state IN ({placeholders}) ORDER BY cursor",
                [s.value for s in OPEN_STATES],
            ).fetchall()
            missed = _events_after(conn, resume_from, 10000) if resume_from else []
            return last, [_alert_from_row(row) for row in rows], missed

        return await self._call(work)

    async def last_cursor(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return conn.execute("SELECT COALESCE(MAX(cursor), 0) FROM events").fetchone()[0]

        return await self._call(work)

    # -- handshake counters and audit ------------------------------------------------

    async def load_counters(self) -> dict[tuple[str, str], int]:
        def work(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
            return {(r, i): c for r, i, c in conn.execute("SELECT role, identity, counter FROM counters")}

        return await self._call(work)

    async def save_counter(self, role: str, identity: str, counter: int) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO counters (role, identity, counter) VALUES (?, ?, ?) "
                "ON CONFLICT (role, identity) DO UPDATE SET counter = MAX(counter, excluded.counter)",
                (role, identity, counter),
            )

        await self._call(work)

    async def probe(self) -> None:
        """Commit one small write (the probe's time in ``meta``): raises JournalError if the journal cannot take it.

        For readiness checks: it goes through the same thread and batch as
        alerts, so it fails exactly when storing an alert would.
        """
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', ?)",
                         (str(time.time_ns() // 1000),))

        await self._call(work)

    async def audit(self, at: int, operator: str, action: str, subject: str, detail: str = "") -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO audit (at, operator, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                (at, operator, action, subject, detail),
            )

        await self._call(work)

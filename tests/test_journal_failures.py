"""The journal cannot write or cannot be read: the relay says what is wrong and acknowledges nothing it did not store.

Read-only conditions are real ones, never a mocked write. Tests run as root
here, and file modes do not stop root, so a read-only data directory is made
with ``chattr +i`` (immutable: refused to everyone, root included, also through
file descriptors the journal already holds open, as a file system remounted
read-only would). SQLite's own refusal to write (``SQLITE_READONLY``) is made
with ``PRAGMA query_only`` on the journal's own connection. A corrupt journal
is garbage written over a real journal file, then ``pinkrelay serve`` is run.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.alerts.journal import JournalError, SqliteJournal
from pinkrelay.ids import uuid7
from pinkrelay.protocol import Alert, AlertAck, Site

from relay_helpers import button_client, button_ids, console_client, running_relay

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "peshawar-buttons.csv"
SITE = Site(name="Zarsang Bazaar, east gate", kind="market", district="Andar Shehr",
            latitude=34.0081, longitude=71.5708)


def _chattr(flag: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True, timeout=10, check=False)


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make ``paths`` unwritable for this process, root included; undo it afterwards, whatever happens."""
    done: list[Path] = []
    try:
        for path in paths:
            if os.geteuid() == 0:
                result = _chattr("+i", path)
                if result.returncode != 0:
                    pytest.skip(f"cannot make {path} read-only for root here (chattr +i: {result.stderr.strip()})")
            else:
                path.chmod(path.stat().st_mode & ~0o222)
            done.append(path)
        yield
    finally:
        for path in reversed(done):
            if os.geteuid() == 0:
                _chattr("-i", path).check_returncode()
            else:
                path.chmod(path.stat().st_mode | 0o200)


def rows(path: Path, sql: str, *args: object) -> list[tuple]:
    """Read the journal file with a separate read-only connection, as an auditor would."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


def spy_on_acks(button: pinkrelay.ButtonClient) -> list[AlertAck]:
    acks: list[AlertAck] = []
    real_on_event = button._on_event

    async def spy(event):
        if isinstance(event, AlertAck):
            acks.append(event)
        await real_on_event(event)

    button._on_event = spy
    return acks


async def collect_alerts(console: pinkrelay.ConsoleClient, into: list[Alert]) -> None:
    async for event in console.events():
        if isinstance(event, Alert):
            into.append(event)


# -- while the relay runs ---------------------------------------------------------------------


@trio_test
async def test_a_data_directory_that_turns_read_only_gets_no_acknowledgement_until_it_is_writable(
    tmp_path, caplog
):
    """As when the disk is remounted read-only under a running relay: no ack, a log line naming the path."""
    if os.geteuid() != 0:
        pytest.skip("file modes do not stop writes through open descriptors; this needs chattr (root)")
    journal_file = tmp_path / "journal.sqlite3"
    button_id = button_ids(1)[0]
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        seen: list[Alert] = []
        nursery.start_soon(collect_alerts, console, seen)
        button = button_client(relay, button_id, retry_interval=0.2)
        acks = spy_on_acks(button)
        await nursery.start(button.run)
        before = await button.press(timeout=5)  # stored while writable: the WAL file exists now
        assert Path(f"{journal_file}-wal").exists()

        alert_id = uuid7()
        with read_only(tmp_path, journal_file, Path(f"{journal_file}-wal")):
            with pytest.raises(trio.TooSlowError):
                await button.press(alert_id=alert_id, timeout=1)
            pending = button._pending[alert_id]
            assert pending.alert.attempt >= 3, "the button should have kept retrying"
            assert [a.alert_id for a in acks] == [before.alert_id], "acknowledged an alert it could not store"
            assert await relay.journal.get(alert_id) is None
            refusals = [r.getMessage() for r in caplog.records
                        if r.levelno == logging.ERROR and alert_id in r.getMessage()]
            assert refusals, "the relay did not log why it could not store the alert"
            assert "NOT stored, not acknowledged" in refusals[0]
            assert f"the directory {tmp_path} is read-only" in refusals[0]
            assert "make the data directory and the journal's files writable" in refusals[0]
            assert [a.alert_id for a in seen].count(alert_id) == 1, "consoles are told at once, and once"

        with trio.fail_after(5):
            await pending.done.wait()
        assert pending.receipt is not None and pending.receipt.duplicate is False
        await trio.sleep(3 * button.retry_interval)  # a stray second acknowledgement would have come by now
        assert [a.alert_id for a in acks] == [before.alert_id, alert_id]
        stored = await relay.journal.get(alert_id)
        shown = [a for a in seen if a.alert_id == alert_id]
        assert stored is not None and len(shown) == 1 and stored.cursor == shown[0].cursor
        nursery.cancel_scope.cancel()
    assert rows(journal_file, "SELECT COUNT(*) FROM alerts WHERE alert_id = ?", alert_id) == [(1,)]


@trio_test
async def test_when_sqlite_refuses_to_write_the_relay_refuses_to_acknowledge(tmp_path, caplog):
    """SQLITE_READONLY from the journal's own connection: the same refusal, with SQLite's reason."""
    journal_file = tmp_path / "journal.sqlite3"
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        console = console_client(relay)
        await nursery.start(console.run)
        seen: list[Alert] = []
        nursery.start_soon(collect_alerts, console, seen)
        button = button_client(relay, button_ids(1)[0], retry_interval=0.2)
        acks = spy_on_acks(button)
        await nursery.start(button.run)
        await relay.journal._call(lambda conn: conn.execute("PRAGMA query_only = ON"))

        alert_id = uuid7()
        with pytest.raises(trio.TooSlowError):
            await button.press(alert_id=alert_id, timeout=1)
        assert button._pending[alert_id].alert.attempt >= 3
        assert acks == []
        refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and alert_id in r.getMessage()]
        assert refusals and "NOT stored, not acknowledged" in refusals[0]
        assert f"journal {journal_file}: cannot write (attempt to write a readonly database)" in refusals[0]
        assert [a.alert_id for a in seen] == [alert_id]
        nursery.cancel_scope.cancel()
    assert rows(journal_file, "SELECT COUNT(*) FROM alerts") == [(0,)]


# -- when the journal is opened ------------------------------------------------------------------


async def _journal_with_one_alert(path: Path) -> None:
    journal = SqliteJournal(path)
    await journal.open()
    try:
        await journal.record(Alert(alert_id=uuid7(), pressed_at=1, button="kp-test-001", site=SITE,
                                   received_at=2))
    finally:
        await journal.close()
    assert not Path(f"{path}-wal").exists(), "a clean close leaves only the journal file"


@trio_test
async def test_a_read_only_journal_or_data_directory_is_named_at_open(tmp_path):
    path = tmp_path / "var" / "journal.sqlite3"
    await _journal_with_one_alert(path)
    # The directory first: SQLite cannot even create its shared-memory file there. (With the
    # file read-only, SQLite may leave a -wal and -shm behind, which a read-only directory
    # would then not stop.)
    for culprit, what in ((path.parent, "directory"), (path, "file")):
        with read_only(culprit):
            with pytest.raises(JournalError) as caught:
                await SqliteJournal(path).open()
        message = str(caught.value)
        assert message.startswith(f"journal {path}: cannot write ("), message
        assert f"the {what} {culprit} is read-only" in message
        assert "alerts are not being stored" in message
    # Writable again, the same file opens and keeps what it had.
    journal = SqliteJournal(path)
    await journal.open()
    try:
        assert await journal.last_cursor() == 1
    finally:
        await journal.close()


@trio_test
async def test_a_new_journal_in_a_read_only_directory_is_named(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    with read_only(data_dir):
        with pytest.raises(JournalError) as caught:
            await SqliteJournal(data_dir / "journal.sqlite3").open()
    assert f"the directory {data_dir} is read-only" in str(caught.value)
    assert not (data_dir / "journal.sqlite3").exists()


# -- pinkrelay serve at start ----------------------------------------------------------------------


def _previous_run(data_dir: Path) -> None:
    """A data directory as a relay leaves it: operator account, keys and a journal with an alert."""
    pinkrelay.Relay(pinkrelay.RelayConfig(data_dir=data_dir), registry=pinkrelay.Registry())
    trio.run(_journal_with_one_alert, data_dir / "journal.sqlite3")


def _serve(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinkrelay", "serve", "--data-dir", str(data_dir), "--registry", str(EXAMPLE),
         "--buttons-listen", "127.0.0.1:0", "--consoles-listen", "127.0.0.1:0", "--no-web"],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_serve_with_a_corrupt_journal_says_so_in_one_line_and_exits(tmp_path):
    data_dir = tmp_path / "var"
    _previous_run(data_dir)
    journal_file = data_dir / "journal.sqlite3"
    journal_file.write_bytes(b"this is not an alert journal at all\n" * 400)

    result = _serve(data_dir)
    assert result.returncode != 0, "a relay that cannot store alerts must not run"
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pinkrelay serve: journal {journal_file} is corrupt (")
    assert "move the file aside" in lines[0] and "new journal" in lines[0]
    assert journal_file.read_bytes().startswith(b"this is not"), "the damaged file is kept for investigation"


def test_serve_with_a_read_only_data_directory_says_so_in_one_line_and_exits(tmp_path):
    data_dir = tmp_path / "var"
    _previous_run(data_dir)
    with read_only(data_dir):
        result = _serve(data_dir)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (f"pinkrelay serve: data directory {data_dir} is not writable; fix its permissions or "
                        "pass --data-dir DIR")

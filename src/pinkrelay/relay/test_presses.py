"""Presses of a button in test mode (button_modes.py): journalled as tests, shown to nobody.

A test press is stored (the journal's ``record_test``: closed at once with
outcome ``test``, one event of kind ``test``) and acknowledged to the button
like any press, so the technician sees the button work end to end. It is not
announced to consoles or the web room, raises no alarm, does not escalate,
never merges with an open alert, and goes to no integration sink except those
whose format marks a test (CAP: ``status`` Test). Its cursor is released to
the sequencer with nothing to send, so no console waits for it.

This module also watches the modes file: a change made by ``pinkrelay
button-mode`` is applied within a second, audited with who made it, logged,
and confirmed to the command (``button-modes.applied``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import trio

from ..alerts.journal import JournalError
from ..button_modes import ButtonModes, ModeChange
from ..errors import ConfigError
from ..logs import event as log_event
from ..protocol import Alert, AlertAck
from .sessions import ButtonSession, wall_us

log = logging.getLogger("pinkrelay.relay")

#: How often the relay looks at the modes file.
POLL_INTERVAL = 0.5
#: Test press ids remembered, so a retry is recognised even after the button went live again.
REMEMBERED = 10_000
#: Sink kinds whose format has a test flag.
TEST_FLAGGED_KINDS = ("cap",)


class TestPresses:
    """The relay's test-mode door: ``takes`` a press, ``press`` stores it, ``watch`` follows the file."""

    def __init__(self, relay: Any) -> None:
        self.relay = relay
        self.modes = ButtonModes.in_data_dir(relay.config.data_dir)
        self.sinks = tuple(sink.name for sink in relay.config.sinks if sink.kind in TEST_FLAGGED_KINDS)
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: Called with (button, ModeChange) after each change of mode (the web room tells its boards).
        self.on_change: list[Any] = []
        #: The revision whose confirmation file could not be written (None: confirmed).
        self._unconfirmed: int | None = None

    def takes(self, button_id: str, alert_id: str) -> bool:
        return alert_id in self._seen or self.modes.in_test(button_id)

    async def press(self, session: ButtonSession, alert: Alert) -> None:
        relay = self.relay
        button_id = session.identity
        button = relay.registry.get(button_id)
        entry = self.modes.testing.get(button_id)
        cursor = relay.journal.take_cursor()
        received = replace(alert, button=button_id, site=button.site if button else None, received_at=wall_us(),
                           cursor=cursor)
        note = "test press: button in test mode" + (f" (set by {entry.set_by}" + (
            f": {entry.note})" if entry.note else ")") if entry else "") + "; paged nobody"
        try:
            recorded = await relay.journal.record_test(received, note=note, sinks=self.sinks)
        except JournalError as error:
            log_event(log, logging.ERROR, f"test press {alert.alert_id} from {button_id} NOT stored, not "
                      f"acknowledged: {error}", button=button_id, alert_id=alert.alert_id, decision="no-ack")
            return
        finally:
            relay._sequencer.release(cursor, None, trio.current_time())
        self._seen[alert.alert_id] = None
        if len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        log_event(log, logging.INFO, f"test press {alert.alert_id} from button {button_id} (test mode): stored as a "
                  "test, paged nobody", button=button_id, alert_id=alert.alert_id, kind=alert.kind,
                  mode="test", duplicate=recorded.duplicate)
        if session.ready:
            session.send(AlertAck(alert_id=alert.alert_id, duplicate=recorded.duplicate))

    async def set_mode(self, button_id: str, mode: str, *, set_by: str, note: str = "", where: str = "") -> None:
        """A supervisor's change from the web room: written, applied and audited at once."""
        before = dict(self.modes.changes)
        await trio.to_thread.run_sync(
            lambda: self.modes.set(button_id, mode, set_by=set_by, set_at=wall_us(), note=note))
        await self._applied(before, where)

    async def watch(self) -> None:
        self._mark_applied()
        while True:
            await trio.sleep(POLL_INTERVAL)
            if self._unconfirmed is not None:
                self._mark_applied()
            if not self.modes.changed():
                continue
            before = dict(self.modes.changes)
            try:
                self.modes.load()
            except ConfigError as error:
                log.error("%s (keeping the modes read before)", error)
                continue
            await self._applied(before, "pinkrelay button-mode")

    def _mark_applied(self) -> None:
        """Confirm the revision to ``pinkrelay button-mode``; a full or read-only disk only delays that.

        The modes are applied in memory whatever happens here: a relay must
        never stop over a confirmation file. It is retried every poll, and the
        failure is logged once per revision.
        """
        try:
            self.modes.mark_applied()
        except OSError as error:
            if self._unconfirmed != self.modes.revision:
                log_event(log, logging.ERROR, f"button modes revision {self.modes.revision} is applied but cannot "
                          f"be confirmed in {self.modes.applied_path()}: {error}; free the disk (retried every "
                          f"{POLL_INTERVAL} s)", decision="unconfirmed", revision=self.modes.revision)
            self._unconfirmed = self.modes.revision
        else:
            self._unconfirmed = None

    async def _applied(self, before: dict[str, ModeChange], where: str) -> None:
        self._mark_applied()
        for button_id, change in sorted(self.modes.changes.items()):
            if before.get(button_id) == change:
                continue
            was = before.get(button_id)
            if (was.mode if was else "live") == change.mode:
                continue
            log_event(log, logging.WARNING, f"button {button_id} is in {change.mode.upper()} mode now: its presses "
                      + ("page nobody" if change.mode == "test" else "page the control room again")
                      + f" (by {change.set_by}, {where})", button=button_id, mode=change.mode,
                      operator=change.set_by)
            detail = f"{change.mode}; {where}" + (f"; {change.note}" if change.note else "")
            try:
                await self.relay.journal.audit(wall_us(), change.set_by, "button-mode", button_id, detail)
            except JournalError as error:
                log.error("audit entry not stored (button-mode %s %s): %s", button_id, change.mode, error)
            for listener in self.on_change:
                listener(button_id, change)

"""Which buttons are alive: offline alerts, and their end when a button returns.

The deadlines themselves are kept by ``Supervisor`` (supervision.py); this
desk turns an expired deadline into an offline alert, stores it (retrying
with backoff while the disk refuses) and resolves it when the button is back.

A part of ``Relay`` (server.py), which is composed of these desks; they
share its state, set up in ``Relay.__init__``.
"""

from __future__ import annotations

import logging

import trio

from ..alerts.journal import JournalError
from ..alerts.lifecycle import AlertState, LifecycleError, transition
from ..ids import uuid7
from ..logs import event as log_event
from ..protocol import (
    Alert,
    ButtonState,
)
from .alert_desk import ESCALATION_RETRY
from .limits import backoff_delay
from .sessions import wall_us

log = logging.getLogger("pinkrelay.relay")


class SupervisionDesk:
    """Which buttons are alive: offline alerts, and their end when a button returns."""

    def button_seen(self, button_id: str, now: float) -> None:
        if self.supervisor.seen(button_id, now):
            self._button_state(button_id, "online")
            self._supervision_wakeup.set()
            self.outages.back_online(button_id)
            offline_alert = self._offline_alerts.pop(button_id, None)
            if offline_alert is not None and self._nursery is not None:
                self._nursery.start_soon(self._resolve_offline, offline_alert)

    async def _resolve_offline(self, alert_id: str) -> None:
        """The button is back: its offline alert is resolved by the relay itself."""
        alert = await self.journal.get(alert_id)
        if alert is None or alert.state not in (AlertState.RAISED, AlertState.ACKNOWLEDGED):
            return
        target = AlertState.ACKNOWLEDGED if alert.state == AlertState.RAISED else AlertState.RESOLVED
        try:
            for state in ([target, AlertState.RESOLVED] if target == AlertState.ACKNOWLEDGED else [target]):
                current = await self.journal.get(alert_id)
                assert current is not None
                closing = state == AlertState.RESOLVED
                step = transition(alert_id, current.state, state, operator="relay", at=wall_us(),
                                  note="button back online", outcome="false" if closing else "",
                                  category="device_fault" if closing else "")
                await self._apply_step(step)
        except (JournalError, LifecycleError) as error:
            log.error("could not resolve offline alert %s: %s", alert_id, error)

    async def _supervise(self) -> None:
        while True:
            deadline = self.supervisor.next_deadline()
            if deadline is None:
                await self._supervision_wakeup.wait()
                self._supervision_wakeup = trio.Event()
                continue
            with trio.move_on_at(deadline):
                await self._supervision_wakeup.wait()
            self._supervision_wakeup = trio.Event()
            for button_id in self.supervisor.expire(trio.current_time()):
                await self._button_offline(button_id)

    async def _button_offline(self, button_id: str) -> None:
        if self.cluster is not None and (self.cluster.moved_away(button_id)
                                         or not await self.cluster.may_report_offline(button_id)):
            return  # another relay holds it now and supervises it
        self._button_state(button_id, "offline")
        session = self.sessions_by_button.get(button_id)
        if session is not None:
            session.say_goodbye(f"nothing received for {self.config.supervision_window:g} s")
        if await self.outages.offline(button_id):
            return  # part of a mass outage: journalled, told to the consoles in the group's alert (outage_desk.py)
        button = self.registry.get(button_id)
        alert = Alert(
            alert_id=self._offline_alert_id(button_id),
            pressed_at=wall_us(),
            kind="offline",
            button=button_id,
            site=button.site if button else None,
            received_at=wall_us(),
            cursor=self.journal.take_cursor(),
        )
        self.alert_index.remember(alert)
        self._release(alert.cursor, alert)
        self.publish_event(alert)
        self.counters["alerts"] += 1
        log_event(log, logging.WARNING, f"button {button_id} offline: silent for "
                  f"{self.config.supervision_window:g} s", button=button_id, alert_id=alert.alert_id,
                  kind="offline")
        try:
            await self.journal.record(alert)
        except JournalError as error:
            # Consoles have it already; it must not be lost: keep trying in the background.
            log_event(log, logging.ERROR, f"offline alert {alert.alert_id} for {button_id} not stored "
                      f"({error}); retrying from {ESCALATION_RETRY:g} s, backing off to 30 s", button=button_id,
                      alert_id=alert.alert_id, reason=str(error))
            if self._nursery is not None:
                self._nursery.start_soon(self._store_offline_later, button_id, alert)
            return
        self._offline_recorded(button_id, alert)

    def _offline_recorded(self, button_id: str, alert: Alert) -> None:
        """An offline alert is in the journal: escalate it, or resolve it if the button is back."""
        if self.supervisor.is_online(button_id):
            if self._nursery is not None:
                self._nursery.start_soon(self._resolve_offline, alert.alert_id)
            return
        self._offline_alerts[button_id] = alert.alert_id
        self.escalator.watch(alert.alert_id, trio.current_time())
        self._escalation_wakeup.set()

    async def _store_offline_later(self, button_id: str, alert: Alert) -> None:
        attempt = 0
        while True:
            attempt += 1
            await trio.sleep(backoff_delay(attempt, first=ESCALATION_RETRY))
            if self.cluster is not None and not await self.cluster.may_report_offline(button_id):
                log_event(log, logging.INFO, f"offline alert {alert.alert_id} for {button_id} dropped: the "
                          "button signed in at another relay meanwhile", button=button_id, alert_id=alert.alert_id)
                return
            try:
                await self.journal.record(alert)
            except JournalError:
                continue
            log_event(log, logging.WARNING, f"offline alert {alert.alert_id} for {button_id} stored after "
                      "all", button=button_id, alert_id=alert.alert_id)
            # A console that reconnected meanwhile resumed from the journal, which did not
            # have it yet: tell every console again (consoles key alerts by id).
            if not self.journal.announces:
                self.broadcast(alert)
            self._offline_recorded(button_id, alert)
            return

    def _button_state(self, button_id: str, state: str) -> None:
        button = self.registry.get(button_id)
        event = ButtonState(button=button_id, state=state, at=wall_us(), site=button.site if button else None)
        if self.journal.announces:
            if self._nursery is not None:
                self._nursery.start_soon(self._store_button_state, event)
        else:
            self.broadcast(event)
        self.publish_event(event)
        log_event(log, logging.INFO, f"button {button_id} {state}", button=button_id, state=state)

    async def _store_button_state(self, event: ButtonState) -> None:
        """In a cluster a button's state goes on the stream, so every relay's consoles hear of it."""
        try:
            await self.journal.button_state(event, msg_id=self.cluster.state_id(event) if self.cluster else "")
        except JournalError as error:
            log.error("button %s %s not told to the cluster: %s", event.button, event.state, error)

    def _offline_alert_id(self, button_id: str) -> str:
        """A new id for an offline alert; in a cluster the same on every relay (cluster/kv.py)."""
        if self.cluster is not None:
            return self.cluster.offline_alert_id(button_id)
        return uuid7()

    def online_buttons(self) -> frozenset[str]:
        """Buttons online: supervised here, or in a cluster reported online by any relay."""
        online = self.supervisor.online
        view = getattr(self.journal, "view", None)
        if view is None:
            return online
        return online | {button for button, state in view.buttons.items() if state.state == "online"}

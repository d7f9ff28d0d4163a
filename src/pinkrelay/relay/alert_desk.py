"""What happens to an alert, from a press to its last lifecycle step.

The alert index decides in memory (new, or a repeat of the button's open
alert), every console that sees it hears at once, in cursor order, the
journal stores it, and only then is it acknowledged to the button.
Operators' lifecycle steps and the relay's escalations go through the same
journal and the same broadcast.

A part of ``Relay`` (server.py), which is composed of these desks; they
share its state, set up in ``Relay.__init__``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import trio

from .._core import deliver, encode_frame
from ..alerts.journal import JournalError, StaleStep
from ..alerts.lifecycle import AlertState, LifecycleError, Step, transition
from ..alerts.routing import DEFAULT_ROOM, Recipient
from ..logs import event as log_event
from ..protocol import (
    Alert,
    AlertAck,
    AlertUpdate,
    ButtonState,
    Error,
    encode_body,
    frame_lane,
)
from ..protocol.events import Event
from .flood import PressRefused
from .limits import backoff_delay
from .media_desk import DROP_REPORT_INTERVAL
from .sessions import ButtonSession, ConsoleSession, wall_us

log = logging.getLogger("pinkrelay.relay")

#: Seconds before an escalation or offline alert that could not be recorded is tried again.
ESCALATION_RETRY = 1.0

#: How many recently broadcast alert ids the relay remembers; a retry of an older one is broadcast again.
ANNOUNCED_MEMORY = 10_000

#: How far back the relay remembers alert ids to recognise a button's retries in memory.
INDEX_HISTORY_US = 7 * 24 * 3600 * 1_000_000

#: Lifecycle steps only a supervisor may take: closing an alert as a false alarm.
SUPERVISOR_ONLY = frozenset({"false_alarm"})


class AlertDesk:
    """What happens to an alert, from a press to its last lifecycle step."""

    async def alert_pressed(self, session: ButtonSession, alert: Alert) -> None:
        """Tell every console at once, store the alert durably, then acknowledge it to the button.

        Consoles do not wait for the disk: the alert index decides in memory
        what the journal will record (new, or a duplicate of the button's open
        alert) and the journal hands out its cursor before the commit. Only
        the button's acknowledgement waits for the commit, so an alert that
        could not be stored is shown but never acknowledged, and the button's
        retries store it as soon as the journal can.
        """
        if self.test_presses.takes(session.identity, alert.alert_id):
            await self.test_presses.press(session, alert)  # maintenance: journalled as a test, pages nobody
            return
        known = self.alert_index.get(alert.alert_id)
        if known is not None:
            await self._press_retried(session, alert, known)
            return
        button_id = session.identity
        received_at = wall_us()
        flood = self.press_guard.offer(
            button_id, self.alert_index.collapses_into(button_id, alert.kind, received_at), trio.current_time())
        if flood is not None:
            self._press_refused(session, flood)
            return
        button = self.registry.get(button_id)
        received = replace(
            alert,
            button=button_id,
            site=button.site if button else None,
            received_at=received_at,
        )
        decided = self.alert_index.decide(received, self.journal.take_cursor())
        self.alert_index.remember(decided)
        self.counters["alerts"] += 1
        if self.journal.announces:
            self.publish_event(decided)  # consoles hear of it from the store once it is stored
        else:
            self._announce(decided)
        if decided.state == AlertState.RAISED:
            self.escalator.watch(decided.alert_id, trio.current_time())
            self._escalation_wakeup.set()
        log_event(
            log,
            logging.WARNING,
            f"ALERT {alert.kind} from button {button_id} ({button.site.name if button else 'unregistered site'}), "
            f"id {alert.alert_id}, attempt {alert.attempt}"
            + (f", pressed again x{self.press_guard.repeats(button_id)} into {decided.duplicate_of}"
               if decided.duplicate_of else ""),
            button=button_id,
            alert_id=alert.alert_id,
            kind=alert.kind,
            attempt=alert.attempt,
            state=decided.state,
            cursor=decided.cursor,
        )
        await self._store_and_ack(session, decided, duplicate=False)

    def _press_refused(self, session: ButtonSession, flood: PressRefused) -> None:
        """A repeat press past the button's press rate: refuse it, and tell the consoles once (relay/flood.py)."""
        if session.ready:
            session.send(Error(code="limit", message=flood.message, fatal=False))
        now = trio.current_time()
        held = self.admission.logs.due((flood.button_id, "press-flood"), now)
        if held is not None:
            log_event(log, logging.WARNING, f"{flood.message} ({flood.refused} refused so far)",
                      decision="refuse", button=flood.button_id, alert_id=flood.open_alert, reason="press-flood",
                      refused=flood.refused, suppressed=held)
        if flood.first and self._nursery is not None:
            self._nursery.start_soon(self._tell_suspicious, flood)

    async def _tell_suspicious(self, flood: PressRefused) -> None:
        """One note step on the open alert: every console sees that the button is flooding, once."""
        alert = await self.journal.get(flood.open_alert)
        if alert is None:
            return
        step = Step(alert_id=alert.alert_id, previous=alert.state, state=alert.state, operator="relay",
                    console="", at=wall_us(), note=flood.note)
        try:
            await self._apply_step(step)
        except (JournalError, StaleStep) as error:
            log.error("could not tell consoles that button %s is suspicious: %s", flood.button_id, error)

    async def _press_retried(self, session: ButtonSession, alert: Alert, known: Alert) -> None:
        """A press already seen: store it if it is still waiting for the disk, then acknowledge."""
        pending = self._storing.get(alert.alert_id)
        if pending is not None:
            await pending.wait()
        if alert.alert_id in self._unstored:
            await self._store_and_ack(session, self._unstored[alert.alert_id], duplicate=False)
            return
        self.counters["duplicate_alerts"] += 1
        if alert.alert_id not in self._announced and not self.journal.announces:
            # Stored by an earlier run: make sure this run's consoles have it.
            self._announce(known)
        log_event(log, logging.INFO, f"repeated alert {alert.alert_id} from {session.identity}, attempt "
                  f"{alert.attempt}: already stored", button=session.identity, alert_id=alert.alert_id,
                  attempt=alert.attempt, duplicate=True)
        if session.ready:
            session.send(AlertAck(alert_id=alert.alert_id, duplicate=True))

    async def _store_and_ack(self, session: ButtonSession, decided: Alert, *, duplicate: bool) -> None:
        alert_id = decided.alert_id
        storing = self._storing[alert_id] = trio.Event()
        try:
            recorded = await self.journal.record(decided)
        except JournalError as error:
            # Shown to consoles, not acknowledged: the button keeps retrying.
            self._unstored[alert_id] = decided
            self._unstored_error = str(error)
            log_event(log, logging.ERROR, f"alert {alert_id} from {session.identity} NOT stored, not "
                      f"acknowledged: {error}", button=session.identity, alert_id=alert_id, decision="no-ack")
            return
        finally:
            del self._storing[alert_id]
            storing.set()
        self._unstored.pop(alert_id, None)
        if recorded.duplicate and recorded.alert.cursor != decided.cursor:
            log.warning("alert %s was already in the journal (cursor %d) beyond the relay's memory",
                        alert_id, recorded.alert.cursor)
        if session.ready:
            session.send(AlertAck(alert_id=alert_id, duplicate=duplicate or recorded.duplicate))

    def _release(self, cursor: int, event: Any) -> None:
        """Settle a cursor taken from the journal: broadcast ``event`` in cursor order (None: a gap).

        A store that announces (the cluster's stream) tells consoles itself, through _stored_event.
        """
        if not self.journal.announces:
            self._sequencer.release(cursor, event, trio.current_time())

    def _stored_event(self, event: Alert | AlertUpdate | ButtonState) -> None:
        """A record the store (the cluster's stream) reports, from this relay or another, in its order.

        Every relay follows every alert: the index for retries and merges,
        the escalator for every raised alert (the store lets one relay's
        escalation win, and the winner's level reaches the others here),
        then its own consoles.
        """
        if isinstance(event, Alert):
            known = self.alert_index.get(event.alert_id)
            self.alert_index.remember(event if known is None else replace(known, cursor=event.cursor))
            if event.kind == "offline" and event.button and event.state == AlertState.RAISED:
                self._offline_alerts[event.button] = event.alert_id  # whoever sees it back resolves it
            if event.kind == "offline" and event.duplicate_of:
                return  # a member of a mass outage: journalled, told to consoles in the group's alert
            if event.state == AlertState.RAISED:
                raised_at = trio.current_time() - max(0, wall_us() - event.received_at) / 1e6
                self._raised_at[event.alert_id] = raised_at
                self.escalator.watch(event.alert_id, raised_at, event.level)
                self._escalation_wakeup.set()
        elif isinstance(event, AlertUpdate):
            self.alert_index.state_changed(event.alert_id, event.state)
            if event.state != AlertState.RAISED:
                self.escalator.stop(event.alert_id)
                self._raised_at.pop(event.alert_id, None)
            elif event.level and event.alert_id in self._raised_at:
                self.escalator.watch(event.alert_id, self._raised_at[event.alert_id], event.level)
                self._escalation_wakeup.set()
        else:
            button = self.registry.get(event.button)
            event = replace(event, site=button.site if button else None)
        self.broadcast(event)

    def _announce(self, alert: Alert) -> None:
        """Broadcast an alert (in cursor order) and remember (boundedly) that this run did."""
        self._sequencer.release(alert.cursor, alert, trio.current_time())
        self.publish_event(alert)
        self._announced[alert.alert_id] = None
        if len(self._announced) > ANNOUNCED_MEMORY:
            self._announced.popitem(last=False)

    async def alert_update(self, session: ConsoleSession, update: AlertUpdate) -> None:
        """A console asks for a lifecycle step; a refusal goes back to it as a non-fatal error."""
        try:
            await self.act_on_alert(
                alert_id=update.alert_id,
                state=update.state,
                operator=session.identity,
                role=session.operator_role or "operator",
                console=f"console {session.peer}",
                unit=update.unit,
                note=update.note,
                room=session.recipient.room,
                outcome=update.outcome,
                category=update.category,
            )
        except (LifecycleError, JournalError) as error:
            code = error.code if isinstance(getattr(error, "code", None), str) else "journal"
            session.send(Error(code=code, message=str(error), fatal=False))

    async def act_on_alert(
        self,
        *,
        alert_id: str,
        state: str,
        operator: str,
        role: str,
        console: str,
        unit: str = "",
        note: str = "",
        room: str = DEFAULT_ROOM,
        outcome: str = "",
        category: str = "",
    ) -> AlertUpdate:
        """An operator acts on an alert: check role, room and lifecycle, record it, tell the consoles.

        The one door for every client (protocol consoles, the web control
        room); raises LifecycleError or JournalError naming what was wrong.
        An operator may act on the alerts their room sees (alerts/routing.py).
        """
        try:
            if role == "investigator":
                raise LifecycleError(f"{operator!r} is an investigator: investigators view recordings and do "
                                     "not act on live alerts; an operator or supervisor must")
            if state in SUPERVISOR_ONLY and role != "supervisor":
                raise LifecycleError(
                    f"marking an alert {state} needs a supervisor; operator {operator!r} is {role}"
                )
            alert = await self.journal.get(alert_id)
            if alert is None:
                raise LifecycleError(f"no alert {alert_id}")
            if not self.visible_to(Recipient(role=role, room=room), alert):
                raise LifecycleError(
                    f"alert {alert_id} is answered by {', '.join(self._rooms(alert.button))}, not by room "
                    f"{room!r}; it reaches room {room!r} only if it is escalated to it"
                )
            step = transition(
                alert_id, alert.state, state, operator=operator, console=console, at=wall_us(), unit=unit, note=note,
                outcome=outcome, category=category,
            )
            recorded = await self._apply_step(step)
        except (LifecycleError, JournalError) as error:
            log_event(log, logging.INFO, f"operator {operator} could not move alert {alert_id} to {state}: "
                      f"{error}", operator=operator, alert_id=alert_id, decision="refuse")
            raise
        log_event(log, logging.INFO, f"alert {alert_id} {alert.state} -> {recorded.state} by {operator} "
                  f"({console})" + (f", unit {unit}" if unit else ""), operator=operator, alert_id=alert_id,
                  state=recorded.state, unit=unit, cursor=recorded.cursor, console=console)
        return recorded

    async def _apply_step(self, step: Step, *, level: int | None = None) -> AlertUpdate:
        """Record a lifecycle step or escalation and tell every console, in cursor order."""
        cursor = self.journal.take_cursor()
        update = None
        try:
            update = await self.journal.apply(step, level=level, cursor=cursor)
        finally:
            self._release(cursor, update)
        self.alert_index.state_changed(update.alert_id, update.state)
        if update.state != AlertState.RAISED:
            self.escalator.stop(update.alert_id)
        self.publish_event(update)
        return update

    async def _escalate(self) -> None:
        """Raise the level of alerts nobody acknowledged in time (see alerts/escalation.py)."""
        while True:
            deadline = self.escalator.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._escalation_wakeup.wait()
            self._escalation_wakeup = trio.Event()
            for alert_id, level in self.escalator.expire(trio.current_time()):
                after = self.escalator.levels[level - 1]
                step = Step(alert_id=alert_id, previous=AlertState.RAISED.value, state=AlertState.RAISED.value,
                            operator="relay", console="", at=wall_us(),
                            note=f"escalated to level {level}: not acknowledged within {after:g} s")
                try:
                    await self._apply_step(step, level=level)
                except StaleStep as error:
                    if self.journal.announces:
                        # Another relay escalated it first, or it was acknowledged: the
                        # stream's record of that reaches _stored_event, which decides.
                        log.info("not escalating %s here: %s", alert_id, error)
                        continue
                    self.escalator.stop(alert_id)
                    self._escalation_retries.pop(alert_id, None)
                    log.info("not escalating %s: %s", alert_id, error)
                    continue
                except JournalError as error:
                    # A storage failure must not silence an alert nobody answered: try again.
                    attempt = self._escalation_retries.get(alert_id, 0) + 1
                    self._escalation_retries[alert_id] = attempt
                    delay = backoff_delay(attempt, first=ESCALATION_RETRY)
                    self.escalator.retry(alert_id, level, trio.current_time() + delay)
                    log_event(log, logging.ERROR, f"alert {alert_id} reached escalation level {level} but it "
                              f"could not be recorded ({error}); retrying in {delay:.1f} s",
                              alert_id=alert_id, level=level, reason=str(error))
                    continue
                self._escalation_retries.pop(alert_id, None)
                log_event(log, logging.WARNING, f"alert {alert_id} escalated to level {level}: not "
                          f"acknowledged within {after:g} s", alert_id=alert_id, level=level)

    def _rooms(self, button_id: str) -> tuple[str, ...]:
        button = self.registry.get(button_id)
        return button.control_rooms if button is not None else (DEFAULT_ROOM,)

    def audience(self, event: Any) -> tuple[tuple[str, ...], int] | None:
        """(rooms that answer it, escalation level) of an alert event; None: every console sees it."""
        if isinstance(event, Alert):
            return self._rooms(event.button), event.level
        if isinstance(event, AlertUpdate):
            alert = self.alert_index.get(event.alert_id)
            if alert is not None:
                return self._rooms(alert.button), event.level
        return None

    def visible_to(self, recipient: Recipient, event: Any) -> bool:
        audience = self.audience(event)
        return audience is None or self.routing.sees(recipient, *audience)

    def escalated_alert(self, update: AlertUpdate, recipient: Recipient) -> Alert | None:
        """The alert itself, for a console that this escalation brings it to (it had not seen it)."""
        if not update.level:
            return None
        alert = self.alert_index.get(update.alert_id)
        if alert is None or not self.routing.newly_sees(recipient, self._rooms(alert.button), update.level):
            return None
        return replace(alert, state=update.state, level=update.level)

    def broadcast(self, event: Event) -> None:
        """Send one event to every signed-in console that sees it (alerts/routing.py); bytes built once.

        A console that an escalation brings an alert to gets the alert itself
        first, then the escalation step.
        """
        self._broadcast_seq = (self._broadcast_seq + 1) & 0xFFFFFFFF
        lane = frame_lane(event.frame_type)
        frame = encode_frame(event.frame_type, lane, 0, self._broadcast_seq, 0, encode_body(event))
        cursor = getattr(event, "cursor", 0)
        audience = self.audience(event)
        targets = []
        for console in self.consoles:
            if audience is not None and not self.routing.sees(console.recipient, *audience):
                continue
            if isinstance(event, AlertUpdate) and event.level:
                alert = self.escalated_alert(event, console.recipient)
                if alert is not None:
                    alert_frame = encode_frame(alert.frame_type, frame_lane(alert.frame_type), 0,
                                               self._broadcast_seq, 0, encode_body(alert))
                    if console.held_broadcasts is not None:
                        console.held_broadcasts.append((frame_lane(alert.frame_type), alert_frame, 0))
                    else:
                        console.send_frame(frame_lane(alert.frame_type), alert_frame)
            if console.held_broadcasts is not None:
                console.held_broadcasts.append((lane, frame, cursor))
            elif console.ready:
                targets.append(console.outbox)
        now = trio.current_time()
        if self.data_plane is not None:
            # Each console's queue is in the data plane: the frame goes into its lane there.
            for outbox in targets:
                outbox.send(lane, (frame,), now)
            return
        # One compiled loop queues and writes the frame for every console.
        for outbox in deliver(targets, lane, (frame,), 0, False, now):
            outbox.attention()

    async def _unblock_sequencer(self) -> None:
        while True:
            await trio.sleep(0.25)
            self._sequencer.tick(trio.current_time())

    async def _report_unstored(self) -> None:
        """One line per interval while alerts wait to be stored (shown to consoles, not acknowledged).

        The buttons keep retrying each of them, and each retry that fails is
        logged only a few times per button and interval (logs.RepeatLimiter):
        this line is the count an operator needs.
        """
        while True:
            await trio.sleep(DROP_REPORT_INTERVAL * 2)
            if self._unstored:
                log_event(log, logging.ERROR, f"{len(self._unstored)} alerts waiting to be stored: "
                          f"{self._unstored_error}", decision="no-ack", waiting=len(self._unstored),
                          reason=self._unstored_error)

"""The relay's side of mass outages: one alert per group, its live list, its members journalled quietly.

outage.py decides which offline buttons form a mass outage; this desk
raises the group's ``mass_outage`` alert (stored, escalated once like any
alert), journals each member's ``offline`` alert as a ``duplicate`` linked
to it without telling the consoles, and keeps the group's alert current: at
most once a second a note step says how many buttons are down, which, and
how many are back. When the last one is back the relay resolves it; when an
operator closes it, the next silence starts a new count.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..alerts.journal import JournalError
from ..alerts.lifecycle import AlertState, Step, is_open
from ..ids import uuid7
from ..logs import event as log_event
from ..protocol import Alert, Site
from .outage import Outage, OutageGroups
from .sessions import wall_us

if TYPE_CHECKING:
    from .server import Relay

log = logging.getLogger("pinkrelay.relay")

#: Seconds between two updates of one mass outage's alert.
UPDATE_INTERVAL = 1.0
#: A button counts as gone silent when it missed this many heartbeats.
SILENT_HEARTBEATS = 1.5


class OutageDesk:
    """Mass outages of one relay: grouping (outage.py), their alerts and their updates."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        config = relay.config
        self.groups = OutageGroups(threshold=config.mass_outage_buttons, window=config.mass_outage_window)
        self._members: tuple[object, dict[str, list[str]]] | None = None
        self._silent: dict[str, tuple[float, int]] = {}
        self.grouped = 0

    # -- groups -------------------------------------------------------------------

    def group_of(self, button_id: str) -> str:
        button = self.relay.registry.get(button_id)
        if button is None:
            return "unregistered buttons"
        site = button.site
        if site.district:
            return f"district {site.district}"
        return f"site {site.name}" if site.name else "buttons without a site"

    def members(self, group: str) -> list[str]:
        registry = self.relay.registry
        if self._members is None or self._members[0] is not registry:
            by_group: dict[str, list[str]] = {}
            for button_id in registry:
                by_group.setdefault(self.group_of(button_id), []).append(button_id)
            self._members = (registry, by_group)
        return self._members[1].get(group, [])

    def _silent_members(self, group: str, now: float) -> int:
        """Members still online that missed a heartbeat within the window (cached for half a second)."""
        cached = self._silent.get(group)
        if cached is not None and now - cached[0] < 0.5:
            return cached[1]
        config = self.relay.config
        supervisor = self.relay.supervisor
        newest = now - SILENT_HEARTBEATS * config.heartbeat_interval
        oldest = now - config.mass_outage_window - config.supervision_window
        count = 0
        for button_id in self.members(group):
            seen = supervisor.last_seen(button_id)
            if seen is not None and oldest <= seen <= newest and supervisor.is_online(button_id):
                count += 1
        self._silent[group] = (now, count)
        return count

    # -- what the supervision desk asks -------------------------------------------

    async def offline(self, button_id: str) -> bool:
        """A button went offline. True: it is part of a mass outage (no alert of its own)."""
        group = self.group_of(button_id)
        now = trio.current_time()
        verdict = self.groups.offline(button_id, group, now, silent_too=self._silent_members(group, now))
        if verdict is False:
            return False
        if verdict is True:
            outage = self.groups.open_outage(group, uuid7(), button_id, now)
            await self._raise(outage)
        else:
            outage = verdict
        self._journal_member(button_id, outage)
        return True

    def back_online(self, button_id: str) -> None:
        self.groups.back_online(button_id)

    # -- the group's alert --------------------------------------------------------

    async def _raise(self, outage: Outage) -> None:
        relay = self.relay
        district = outage.group.removeprefix("district ") if outage.group.startswith("district ") else ""
        alert = Alert(alert_id=outage.alert_id, pressed_at=wall_us(), kind="mass_outage", button="",
                      site=Site(name=outage.group, kind="district" if district else "group", district=district),
                      received_at=wall_us(), cursor=relay.journal.take_cursor())
        relay.alert_index.remember(alert)
        relay._release(alert.cursor, alert)
        relay.publish_event(alert)
        relay.counters["alerts"] += 1
        log_event(log, logging.WARNING, f"MASS OUTAGE in {outage.group}: more than "
                  f"{self.groups.threshold} buttons silent within {self.groups.window:g} s; one alert "
                  f"{alert.alert_id} for all of them", alert_id=alert.alert_id, kind="mass_outage",
                  group=outage.group)
        try:
            await relay.journal.record(alert)
        except JournalError as error:
            log.error("mass outage alert %s not stored (%s); consoles have it, its updates wait",
                      alert.alert_id, error)
            return
        outage.recorded = True
        relay.escalator.watch(alert.alert_id, trio.current_time())
        relay._escalation_wakeup.set()

    def _journal_member(self, button_id: str, outage: Outage) -> None:
        """The member's own offline alert: journalled, linked to the group's, told to nobody."""
        relay = self.relay
        button = relay.registry.get(button_id)
        alert = Alert(alert_id=relay._offline_alert_id(button_id), pressed_at=wall_us(), kind="offline",
                      button=button_id, site=button.site if button else None, received_at=wall_us(),
                      state=AlertState.DUPLICATE.value, duplicate_of=outage.alert_id,
                      cursor=relay.journal.take_cursor())
        relay._release(alert.cursor, None)
        self.grouped += 1
        if relay._nursery is not None:
            relay._nursery.start_soon(self._record_member, alert)

    async def _record_member(self, alert: Alert) -> None:
        try:
            await self.relay.journal.record(alert)
        except JournalError as error:
            held = self.relay.admission.logs.due(("mass-outage", "journal"), trio.current_time())
            if held is not None:
                log.error("offline alert %s of %s (part of mass outage %s) not stored: %s", alert.alert_id,
                          alert.button, alert.duplicate_of, error)

    async def run(self) -> None:
        """Tell the consoles how each open outage stands, at most once per UPDATE_INTERVAL; end those that are over."""
        while True:
            await trio.sleep(UPDATE_INTERVAL)
            for outage in self.groups.changed():
                outage.changed = False
                await self._update(outage)

    async def _update(self, outage: Outage) -> None:
        relay = self.relay
        known = relay.alert_index.get(outage.alert_id)
        state = known.state if known is not None else AlertState.RAISED.value
        if not is_open(state):
            self.groups.close(outage)  # an operator closed it: the next silence counts afresh
            return
        note = outage.summary(len(self.members(outage.group)))
        step = Step(alert_id=outage.alert_id, previous=state, state=state, operator="relay", console="",
                    at=wall_us(), note=note)
        try:
            await relay._apply_step(step)
        except JournalError as error:
            outage.changed = True  # try again at the next interval
            log.info("mass outage %s not updated: %s", outage.alert_id, error)
            return
        if not outage.offline:
            self.groups.close(outage)
            log_event(log, logging.WARNING, f"mass outage in {outage.group} over: all {len(outage.back)} "
                      "buttons back online", alert_id=outage.alert_id, group=outage.group)
            await relay._resolve_offline(outage.alert_id)

    def summary_of(self, alert_id: str) -> str | None:
        """The live line of an open mass outage's alert (for a board that loads it between updates)."""
        for outage in self.groups.open.values():
            if outage.alert_id == alert_id:
                return outage.summary(len(self.members(outage.group)))
        return None

    def stats(self) -> dict[str, int]:
        return {"mass_outages_open": len(self.groups.open), "offline_grouped": self.grouped}

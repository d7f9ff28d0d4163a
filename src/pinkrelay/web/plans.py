"""What the web room shows beside an alert: the site's action plan and its false alarms of 12 months.

Both travel with the alert itself (``alert.plan``, ``alert.false_alarms_12m``
in every ``alert`` message and snapshot), so the plan is on the card the
moment the alert arrives, with no second request. A supervisor's edit
(``POST /api/plans``) is stored and audited (alerts/plans.py) and pushed to
every open board as a ``plan`` message; a new false outcome pushes the
site's new count as ``false-alarms``. Operators may read plans, not edit
them: the edit is refused with 403, and the refusal is audited.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..alerts.false_alarms import FalseAlarms
from ..alerts.journal import JournalError
from ..alerts.plans import Plan, PlanBook, PlanError
from ..logs import event as log_event
from ..protocol import Alert, AlertUpdate

log = logging.getLogger("pinkrelay.web")


class AlertContext:
    """Plans and false-alarm counts for the alerts the web room shows."""

    def __init__(self, relay: Any, clock: Any) -> None:
        self.relay = relay
        self.clock = clock
        self.plans = PlanBook()
        self.false_alarms = FalseAlarms()

    async def load(self) -> None:
        """Read the edits and counts; a store without them (a cluster's alert bus) leaves both empty.

        The board must never wait on these: without them it shows the
        registry's plans and no counts, and says why in the log once.
        """
        try:
            await self.plans.load(self.relay.journal)
            await self.false_alarms.load(self.relay.journal, self.clock())
        except JournalError as error:
            if not self._warned:
                log.warning("action plan edits and false-alarm counts are not available (%s); the web room "
                            "shows the registry's plans without counts", error)
                self._warned = True

    _warned = False

    def site_name(self, alert: Alert) -> str:
        if alert.site is not None:
            return alert.site.name
        button = self.relay.registry.get(alert.button)
        return button.site.name if button is not None else ""

    def extend(self, shown: dict[str, Any], alert: Alert) -> dict[str, Any]:
        """An alert's JSON with its plan and its site's false alarms."""
        shown["plan"] = self.plans.plan_for(self.relay.registry.get(alert.button))
        shown["false_alarms_12m"] = self.false_alarms.count(self.site_name(alert), self.clock())
        return shown

    def observe(self, item: Any) -> dict[str, Any] | None:
        """Count a false outcome as it is recorded; the message that tells the boards, if any."""
        if not isinstance(item, AlertUpdate) or item.outcome != "false":
            return None
        alert = self.relay.alert_index.get(item.alert_id)
        if alert is None:
            return None
        site = self.site_name(alert)
        self.false_alarms.record(site, item.at)
        return {"type": "false-alarms", "site": site, "false_alarms_12m": self.false_alarms.count(site, self.clock())}

    def plan_keys(self) -> dict[str, list[str]]:
        """Each plan key and the buttons that show its plan."""
        keys: dict[str, list[str]] = {}
        for button_id, button in self.relay.registry.items():
            if button.plan_key:
                keys.setdefault(button.plan_key, []).append(button_id)
        return keys

    async def edit(self, body: bytes, operator: str, role: str, where: str) -> tuple[int, dict[str, Any]]:
        """A plan edit from the web room: (HTTP status, answer); 200 also carries the message for the boards."""
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "the body must be JSON: {\"key\": ..., \"plan\": {steps, contacts, notes}}"}
        if not isinstance(request, dict) or not isinstance(request.get("key"), str):
            return 400, {"error": "the body must be a JSON object naming the plan's key"}
        key = request["key"]
        buttons = self.plan_keys().get(key)
        if buttons is None:
            return 404, {"error": f"no plan {key!r} in the registry; plans come from the registry's plan fields"}
        if role != "supervisor":
            log_event(log, logging.INFO, f"operator {operator} may not edit plan {key}", operator=operator,
                      decision="refuse", subject=key)
            await self._audit(operator, "plan-edit-refused", key, f"{where}: role {role}")
            return 403, {"error": f"only a supervisor may edit an action plan; {operator} signed in as {role}"}
        try:
            plan = None if request.get("plan") is None else Plan.from_json(request["plan"])
        except PlanError as error:
            return 400, {"error": f"plan {key}: {error}"}
        try:
            await self.plans.edit(self.relay.journal, key, plan, operator, self.clock(), where)
        except JournalError as error:
            return 503, {"error": f"the edit was not stored: {error}"}
        log_event(log, logging.INFO, f"operator {operator} {'edited' if plan else 'reverted'} action plan {key} "
                  f"({where})", operator=operator, subject=key, action="plan-edit")
        shown = self.plans.plan_for(self.relay.registry[buttons[0]])
        return 200, {"type": "plan", "key": key, "buttons": buttons, "plan": shown}

    async def _audit(self, operator: str, action: str, subject: str, detail: str) -> None:
        try:
            await self.relay.journal.audit(self.clock(), operator, action, subject, detail)
        except JournalError as error:
            log.error("audit entry not stored (%s %s %s): %s", operator, action, subject, error)

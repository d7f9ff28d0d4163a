"""AlertIndex: what the relay must know about alerts before the journal has answered. Sans-IO.

The relay tells every console about a press at once and acknowledges it to
the button only after the journal's commit. To do the first before the
second it must decide, in memory, what the journal will record: is this a
retry of an id already seen (then nothing new is shown), or a second press
of a button whose alert is still open within the merge window (then it is a
``duplicate`` linked to that alert)? The index holds recent alert ids and
the open panic alert of each button; the journal stays the authority and
refuses an id it already has, whatever the index said.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..protocol import Alert
from .lifecycle import AlertState, is_open


@dataclass(slots=True)
class _Open:
    alert_id: str
    received_at: int


class AlertIndex:
    """Recent alert ids (bounded, oldest forgotten first) and each button's open panic alert."""

    def __init__(self, *, merge_window_us: int, max_ids: int = 200_000) -> None:
        self.merge_window_us = merge_window_us
        self.max_ids = max_ids
        self._seen: OrderedDict[str, Alert] = OrderedDict()
        self._open_by_button: dict[str, _Open] = {}

    def load(self, alerts: Iterable[Alert]) -> None:
        """Fill from the journal at start (oldest first)."""
        for alert in alerts:
            self.remember(alert)

    def get(self, alert_id: str) -> Alert | None:
        return self._seen.get(alert_id)

    def decide(self, alert: Alert, cursor: int) -> Alert:
        """What a new press will be stored as: raised, or a duplicate of the button's open alert."""
        open_alert = self.collapses_into(alert.button, alert.kind, alert.received_at)
        if open_alert is not None:
            return replace(alert, state=AlertState.DUPLICATE.value, duplicate_of=open_alert, cursor=cursor)
        return replace(alert, state=AlertState.RAISED.value, cursor=cursor)

    def collapses_into(self, button_id: str, kind: str, received_at: int) -> str | None:
        """The open alert a press of ``kind`` received at ``received_at`` would be a duplicate of, if any."""
        if kind == "panic" and self.merge_window_us:
            current = self._open_by_button.get(button_id)
            if current is not None and received_at - current.received_at <= self.merge_window_us:
                return current.alert_id
        return None

    def remember(self, alert: Alert) -> None:
        self._seen[alert.alert_id] = alert
        self._seen.move_to_end(alert.alert_id)
        while len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
        if alert.kind == "panic" and alert.button and is_open(alert.state):
            self._open_by_button[alert.button] = _Open(alert.alert_id, alert.received_at)

    def forget(self, alert_id: str) -> None:
        """The journal could not store it: a retry must be decided again."""
        alert = self._seen.pop(alert_id, None)
        if alert is not None:
            self._close(alert)

    def state_changed(self, alert_id: str, state: str) -> None:
        alert = self._seen.get(alert_id)
        if alert is None:
            return
        self._seen[alert_id] = replace(alert, state=state)
        if not is_open(state):
            self._close(alert)

    def _close(self, alert: Alert) -> None:
        current = self._open_by_button.get(alert.button)
        if current is not None and current.alert_id == alert.alert_id:
            del self._open_by_button[alert.button]

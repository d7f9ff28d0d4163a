"""AlertView: the control room's state as read from the alert stream, in sequence order. Sans-IO.

Every relay of a cluster reads the whole stream and applies each record
here: the open alerts and their states, the last record of each alert (the
sequence a step must name to win, see records.py), the buttons' states and
the recent events a console resumes from. It is what the SQLite journal's
tables are to a single relay, rebuilt from the stream at start and kept up
to date by it, so every relay answers the same questions the same way.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from ..alerts.lifecycle import OPEN_STATES
from ..protocol import Alert, AlertUpdate, ButtonState
from .records import AuditEntry

#: Events kept for consoles that resume; one that was away longer gets the open alerts only.
HISTORY = 100_000
_OPEN = frozenset(state.value for state in OPEN_STATES)


class AlertView:
    def __init__(self, history: int = HISTORY) -> None:
        self.alerts: dict[str, Alert] = {}
        #: alert id -> stream sequence of its last record.
        self.last_record: dict[str, int] = {}
        self.buttons: dict[str, ButtonState] = {}
        self.events: deque[Alert | AlertUpdate] = deque(maxlen=history)
        self.last_seq = 0
        #: The audit trail's recent entries (the stream keeps them all).
        self.audit: deque[AuditEntry] = deque(maxlen=history)

    def apply(self, seq: int, kind: str, event: Alert | AlertUpdate | ButtonState | AuditEntry,
              note: str = "") -> Alert | AlertUpdate | ButtonState | None:
        """Apply the record at ``seq``; return the event consoles are told of (None: nothing new)."""
        self.last_seq = max(self.last_seq, seq)
        if isinstance(event, Alert):
            if event.alert_id in self.alerts:
                return None  # cannot happen with the raise's expected sequence 0; ignore a stray one
            self.alerts[event.alert_id] = event
            self.last_record[event.alert_id] = seq
            if kind == "test":
                # As the journal tells it: a closed step of an alert no console saw raised.
                told: Alert | AlertUpdate = AlertUpdate(
                    alert_id=event.alert_id, state=event.state, operator="relay", note=note,
                    at=event.received_at, cursor=seq, outcome="test")
            else:
                told = event
            self.events.append(told)
            return told
        if isinstance(event, AlertUpdate):
            alert = self.alerts.get(event.alert_id)
            if alert is None:
                return None
            self.alerts[event.alert_id] = replace(alert, state=event.state, level=event.level)
            self.last_record[event.alert_id] = seq
            self.events.append(event)
            return event
        if isinstance(event, AuditEntry):
            self.audit.append(event)
            return None
        self.buttons[event.button] = event
        return event

    def open_alerts(self) -> list[Alert]:
        return sorted((a for a in self.alerts.values() if a.state in _OPEN), key=lambda a: a.cursor)

    def recent_alerts(self, since_us: int) -> list[Alert]:
        return sorted((a for a in self.alerts.values() if a.received_at >= since_us or a.state in _OPEN),
                      key=lambda a: a.cursor)

    def events_after(self, cursor: int, limit: int = 10_000) -> list[Alert | AlertUpdate]:
        """Events with a sequence above ``cursor``, oldest first (those still kept)."""
        out: list[Alert | AlertUpdate] = []
        for event in reversed(self.events):
            if event.cursor <= cursor:
                break
            out.append(event)
        out.reverse()
        return out[:limit]

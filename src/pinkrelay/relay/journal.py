"""Where the relay records alerts before it acknowledges them.

``MemoryJournal`` keeps alerts for the life of the process: each alert id is
recorded once (a button's retries get ``duplicate``), and every record gets a
cursor (a sequence number) that consoles can resume from. A durable journal
has the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..protocol import Alert


@dataclass(frozen=True, slots=True)
class Recorded:
    """The outcome of recording an alert."""

    alert: Alert
    duplicate: bool


class MemoryJournal:
    """Alerts by id, in arrival order, for as long as the process lives."""

    durable = False

    def __init__(self) -> None:
        self._alerts: dict[str, Alert] = {}
        self._cursor = 0

    async def record(self, alert: Alert) -> Recorded:
        existing = self._alerts.get(alert.alert_id)
        if existing is not None:
            return Recorded(existing, True)
        self._cursor += 1
        stored = replace(alert, cursor=self._cursor)
        self._alerts[alert.alert_id] = stored
        return Recorded(stored, False)

    def open_alerts(self) -> list[Alert]:
        return [a for a in self._alerts.values() if a.state not in ("resolved", "false_alarm", "cleared")]

    def get(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    async def close(self) -> None:
        return None


"""Escalation: who hears about an alert that nobody has acknowledged, and when. Sans-IO.

An alert still ``raised`` ``levels[0]`` seconds after it reached the relay
is escalated to level 1 (pushed again, louder, to the escalation group:
supervisors, a second control room such as a Virtual Women Police Station);
after ``levels[1]`` seconds to level 2, and so on. Acknowledging it (or any
other operator action that takes it out of ``raised``) stops the clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


class Escalator:
    """Deadlines per unacknowledged alert; ``expire(now)`` reports the levels reached."""

    def __init__(self, levels: Sequence[float]) -> None:
        if not levels or any(b <= a for a, b in zip(levels, levels[1:], strict=False)) or levels[0] <= 0:
            raise ValueError(f"escalation levels must be positive and increasing, not {list(levels)}")
        self.levels = tuple(levels)
        self._raised_at: dict[str, float] = {}
        self._level: dict[str, int] = {}
        self._heap: list[tuple[float, str, int]] = []

    def watch(self, alert_id: str, raised_at: float, level: int = 0) -> None:
        """Start (or restart, e.g. after a relay restart) the clock of an unacknowledged alert."""
        self._raised_at[alert_id] = raised_at
        self._level[alert_id] = level
        if level < len(self.levels):
            heapq.heappush(self._heap, (raised_at + self.levels[level], alert_id, level + 1))

    def retry(self, alert_id: str, level: int, at: float) -> None:
        """``level`` was reached but could not be recorded: report it again at ``at``."""
        if alert_id not in self._raised_at:
            return
        self._level[alert_id] = level - 1
        heapq.heappush(self._heap, (at, alert_id, level))

    def stop(self, alert_id: str) -> None:
        self._raised_at.pop(alert_id, None)
        self._level.pop(alert_id, None)

    def watching(self, alert_id: str) -> bool:
        return alert_id in self._raised_at

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][1] not in self._raised_at:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def expire(self, now: float) -> list[tuple[str, int]]:
        """(alert id, new level) for every deadline reached by ``now``, in order."""
        reached = []
        while self._heap and self._heap[0][0] <= now:
            _, alert_id, level = heapq.heappop(self._heap)
            if alert_id not in self._raised_at or self._level[alert_id] >= level:
                continue
            self._level[alert_id] = level
            reached.append((alert_id, level))
            if level < len(self.levels):
                heapq.heappush(self._heap, (self._raised_at[alert_id] + self.levels[level], alert_id, level + 1))
        return reached

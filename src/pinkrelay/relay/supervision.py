"""Button supervision: which buttons are alive, sans-IO (time is an argument).

A button is online from its first authenticated frame and stays online while
any frame arrives within its supervision window (default 20 s: two missed
heartbeats). A dropped TCP connection alone does not make it offline: a
button that reconnects within the window never looked down to the control
room. Only buttons seen since the relay started (or restored from the
journal) are supervised, so a registry of 450 campuses does not raise 450
alerts when the relay boots.
"""

from __future__ import annotations

import heapq


class Supervisor:
    """Last-seen times and online/offline state per button."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._last_seen: dict[str, float] = {}
        self._online: set[str] = set()
        self._deadlines: list[tuple[float, str]] = []

    def is_online(self, button_id: str) -> bool:
        return button_id in self._online

    @property
    def online(self) -> frozenset[str]:
        return frozenset(self._online)

    @property
    def known(self) -> frozenset[str]:
        return frozenset(self._last_seen)

    def seen(self, button_id: str, now: float) -> bool:
        """Record a sign of life; True when this brings the button (back) online.

        O(1) on the per-frame path: an online button keeps one heap entry,
        which ``expire`` moves on when it finds the button was seen since.
        """
        self._last_seen[button_id] = now
        if button_id in self._online:
            return False
        self._online.add(button_id)
        heapq.heappush(self._deadlines, (now + self.window, button_id))
        return True

    def last_seen(self, button_id: str) -> float | None:
        return self._last_seen.get(button_id)

    def forget(self, button_id: str) -> None:
        """Stop supervising a button (removed from the registry)."""
        self._online.discard(button_id)
        self._last_seen.pop(button_id, None)

    def next_deadline(self) -> float | None:
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float) -> list[str]:
        """Buttons silent for a whole window by ``now``; each is reported offline once."""
        offline = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, button_id = heapq.heappop(self._deadlines)
            if button_id not in self._online:
                continue
            deadline = self._last_seen[button_id] + self.window
            if deadline > now:
                heapq.heappush(self._deadlines, (deadline, button_id))
                continue
            self._online.discard(button_id)
            offline.append(button_id)
        return offline

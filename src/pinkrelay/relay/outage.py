"""Alarm floods: many buttons of one district offline together are one mass outage, not hundreds of alerts. Sans-IO.

When a cell network or a campus uplink goes down, every button behind it
goes silent at once. Raising one ``offline`` alert per button would bury the
control room (the alarm flood of ISA-18.2 / EEMUA 191), so buttons are
grouped by the registry's ``district`` (else their site's name): when more
than ``threshold`` buttons of a group went silent within ``window`` seconds,
the group gets **one** ``mass_outage`` alert, and each of its buttons that
goes offline while it is open joins it instead of raising its own alert (the
relay still journals one, linked to the group's). Buttons that return leave
it; when the last one is back, the outage is over.

"Went silent" counts buttons whose supervision deadline has not expired yet
but that already missed a heartbeat, so a group whose buttons all died
together is grouped from its first expiry on, not after ``threshold``
separate alerts. Panic presses never pass through here.

Time is an argument; the desk (outage_desk.py) does the journal and the consoles.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(eq=False)
class Outage:
    """One open mass outage: its group, its alert, and which of its buttons are down or back."""

    group: str
    alert_id: str
    opened_at: float
    offline: dict[str, None] = field(default_factory=dict)
    back: dict[str, None] = field(default_factory=dict)
    #: Changed since the consoles were last told (the desk sends at most one update a second).
    changed: bool = True
    recorded: bool = False

    def summary(self, registered: int, *, most: int = 40) -> str:
        """The live line operators read: counts, then the buttons (bounded: a note is at most 1024 characters)."""
        down = list(self.offline)
        shown = ", ".join(down[:most]) + (f" and {len(down) - most} more" if len(down) > most else "")
        back = f"; {len(self.back)} back online" if self.back else ""
        return (f"mass outage in {self.group}: {len(down)} of {registered} buttons offline{back}"
                + (f": {shown}" if down else ""))


class OutageGroups:
    """Recent silences per group and the open outage of each group."""

    def __init__(self, *, threshold: int, window: float) -> None:
        self.threshold = threshold
        self.window = window
        self._recent: dict[str, deque[float]] = {}
        self.open: dict[str, Outage] = {}
        self._member_of: dict[str, Outage] = {}

    def outage_of(self, button_id: str) -> Outage | None:
        return self._member_of.get(button_id)

    def offline(self, button_id: str, group: str, now: float, *, silent_too: int = 0) -> Outage | bool:
        """A button of ``group`` went offline at ``now``.

        Returns the open outage it joins, True when it opens one (the caller
        then calls ``open_outage``), or False: it raises its own alert.
        ``silent_too``: how many other buttons of the group already missed a
        heartbeat within the window but are not offline yet.
        """
        if not self.threshold:
            return False
        outage = self.open.get(group)
        if outage is not None:
            self._join(outage, button_id)
            return outage
        recent = self._recent.setdefault(group, deque())
        recent.append(now)
        while recent and recent[0] < now - self.window:
            recent.popleft()
        return len(recent) + silent_too > self.threshold

    def open_outage(self, group: str, alert_id: str, button_id: str, now: float) -> Outage:
        outage = self.open[group] = Outage(group=group, alert_id=alert_id, opened_at=now)
        self._recent.pop(group, None)
        self._join(outage, button_id)
        return outage

    def back_online(self, button_id: str) -> Outage | None:
        """A member came back: it leaves the outage (returned, so the desk can say so, and end it when empty)."""
        outage = self._member_of.pop(button_id, None)
        if outage is None:
            return None
        outage.offline.pop(button_id, None)
        outage.back[button_id] = None
        outage.changed = True
        return outage

    def close(self, outage: Outage) -> None:
        if self.open.get(outage.group) is outage:
            del self.open[outage.group]
        for button_id in list(outage.offline):
            self._member_of.pop(button_id, None)

    def changed(self) -> Iterable[Outage]:
        return [outage for outage in self.open.values() if outage.changed and outage.recorded]

    def _join(self, outage: Outage, button_id: str) -> None:
        outage.offline[button_id] = None
        outage.back.pop(button_id, None)
        outage.changed = True
        self._member_of[button_id] = outage

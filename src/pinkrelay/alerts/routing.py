"""Routing: which consoles see an alert, at each escalation level. Sans-IO.

Every button is answered by one or more control rooms (the registry's
``control_rooms``, ``main`` by default); every console sits in one room (its
operator account's ``room``, ``main`` by default) with a role (operator or
supervisor). An alert is shown to the consoles of the rooms that answer its
button. When nobody acknowledges it, escalation widens the circle: level 1
adds ``escalation_groups[0]``, level 2 adds ``escalation_groups[1]``, and so
on, each group one of

* ``supervisors``: every supervisor console, whatever its room;
* ``room:NAME``: every console of room NAME (a second control room such as a
  Virtual Women Police Station);
* ``all``: every console.

A deployment with one room (the default) shows every alert to every
console; escalation then raises the urgency for everyone, supervisors
included. Levels beyond the list add nobody new.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError

DEFAULT_ROOM = "main"
ROOM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who sits at a console: the role of the operator signed in there, and the room."""

    role: str = "operator"
    room: str = DEFAULT_ROOM


def check_room(name: str, what: str = "room") -> str:
    """A room name, checked (1-64 lower-case letters, digits, '.', '_' or '-')."""
    if not isinstance(name, str) or not ROOM_NAME.match(name):
        raise ConfigError(f"{what} {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-'")
    return name


def check_groups(groups: Iterable[str]) -> tuple[str, ...]:
    """Escalation groups, checked: 'supervisors', 'all' or 'room:NAME' each."""
    checked = []
    for group in groups:
        if group in ("supervisors", "all"):
            checked.append(group)
        elif isinstance(group, str) and group.startswith("room:"):
            checked.append("room:" + check_room(group[5:], f"escalation group {group!r}: room"))
        else:
            raise ConfigError(
                f"escalation group {group!r} is not 'supervisors', 'all' or 'room:NAME' "
                "(e.g. escalation_groups = [\"supervisors\", \"room:vwps-peshawar\"])"
            )
    return tuple(checked)


class Routing:
    """Decides, from an alert's rooms and level, whether a console sees it."""

    def __init__(self, groups: Sequence[str] = ("supervisors", "all")) -> None:
        self.groups = check_groups(groups)

    def sees(self, recipient: Recipient, rooms: Sequence[str], level: int) -> bool:
        """Whether ``recipient`` sees an alert of a button answered by ``rooms`` at ``level``."""
        if recipient.room in rooms:
            return True
        for group in self.groups[: max(level, 0)]:
            if group == "all":
                return True
            if group == "supervisors" and recipient.role == "supervisor":
                return True
            if group == "room:" + recipient.room:
                return True
        return False

    def newly_sees(self, recipient: Recipient, rooms: Sequence[str], level: int) -> bool:
        """Whether reaching ``level`` is what brings the alert to ``recipient``."""
        return self.sees(recipient, rooms, level) and not self.sees(recipient, rooms, level - 1)

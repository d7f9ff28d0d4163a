"""The keys of ``pinkrelay console``: act on alerts from the terminal.

A key is a letter typed at the start of a line, then Enter (the terminal
stays in its normal line mode, so a mistyped key can be erased before it is
sent). An alert id prefix may follow; without one the key acts on the
oldest open alert it applies to, the one a hurried operator means:

    a [ID]               acknowledge (default: the oldest unacknowledged alert)
    d UNIT [ID]          dispatch UNIT (default: the oldest acknowledged alert, else unacknowledged)
    r [ID] OUTCOME [NOTE...]  resolve (default: the oldest open alert); OUTCOME as for
                         ``pinkrelay alert resolve --outcome``: genuine:CATEGORY, false:accidental...
    f [ID] OUTCOME [NOTE...]  close as a false alarm (supervisors only): false:CATEGORY or test
    l                    list the open alerts
    h                    this help

The relay's answer is shown by the console like any other: ``UPDATE alert
... acknowledged by ...`` once recorded, ``relay: ... (bad-transition)`` if
refused. The action words and states are those of ``pinkrelay alert``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import trio

from ..protocol import Alert
from .alert import ACTIONS, OPEN_STATES, match_alert, parse_outcome
from .common import CommandError, Output

KEYS = {"a": "ack", "d": "dispatch", "r": "resolve", "f": "false-alarm"}
#: For each action without an id: groups of states to pick the oldest alert from, first group first.
DEFAULT_FROM: dict[str, tuple[tuple[str, ...], ...]] = {
    "ack": (("raised",),),
    "dispatch": (("acknowledged",), ("raised",)),
    "resolve": (OPEN_STATES,),
    "false-alarm": (OPEN_STATES,),
}
HELP = ("keys (then Enter): a [ID] acknowledge, d UNIT [ID] dispatch, r [ID] OUTCOME [NOTE] resolve, "
        "f [ID] OUTCOME [NOTE] false alarm (OUTCOME: genuine:CATEGORY, false:malicious|accidental|device-fault, "
        "test), l list open alerts, h help; without ID: the oldest open alert")


class ConsoleKeys:
    """Turns typed lines into lifecycle requests for the alerts a ConsoleView knows."""

    def __init__(self, alerts: dict[str, Alert], send: Callable[..., None], out: Output) -> None:
        self.alerts = alerts
        self.send = send
        self.out = out

    def handle(self, line: str) -> None:
        """One typed line; mistakes are answered with a line saying what to type instead."""
        words = line.split()
        if not words:
            return
        key, rest = words[0].lower(), words[1:]
        if key in ("h", "?"):
            self.out.say(HELP)
        elif key == "l":
            self._list()
        elif key in KEYS:
            try:
                self._act(KEYS[key], rest)
            except CommandError as error:
                self.out.say(f"not sent: {error}")
        else:
            self.out.say(f"unknown key {words[0]!r}; {HELP}")

    def _act(self, word: str, rest: list[str]) -> None:
        action = ACTIONS[word]
        unit = ""
        if action.needs_unit:
            if not rest:
                raise CommandError("d needs the unit sent, e.g. 'd rescue-15-van-7'")
            unit, rest = rest[0], rest[1:]
        target = self._pick(word, rest[0]) if rest and self._is_alert(rest[0]) else self._pick(word, None)
        if rest and self._is_alert(rest[0]):
            rest = rest[1:]
        outcome = category = ""
        if action.needs_outcome:
            if not rest:
                raise CommandError(f"{word} needs an outcome, e.g. 'r genuine:harassment all calm' or 'r test'")
            outcome, category = parse_outcome(rest[0])
            rest = rest[1:]
        note = " ".join(rest)
        self.send(target.alert_id, action.state, note=note, unit=unit, outcome=outcome, category=category)
        self.out.say(f"sent: {action.state} for alert {target.alert_id} ({target.button})")

    def _is_alert(self, word: str) -> bool:
        return any(alert_id.startswith(word) for alert_id in self.alerts)

    def _pick(self, word: str, prefix: str | None) -> Alert:
        if prefix is not None:
            return match_alert(self.alerts, prefix)
        for states in DEFAULT_FROM[word]:
            waiting = sorted((a for a in self.alerts.values() if a.state in states), key=lambda a: a.pressed_at)
            if waiting:
                return waiting[0]
        raise CommandError(f"no open alert to {word}; 'l' lists the open alerts")

    def _list(self) -> None:
        open_alerts = sorted((a for a in self.alerts.values() if a.state in OPEN_STATES),
                             key=lambda a: a.pressed_at)
        if not open_alerts:
            self.out.say("no open alerts")
        for alert in open_alerts:
            site = alert.site.name if alert.site else "unknown site"
            self.out.say(f"OPEN   {alert.alert_id} {alert.kind} at {alert.button} ({site}): {alert.state}")


async def read_keys(keys: ConsoleKeys, stream: Any = None) -> None:
    """Feed the lines typed on standard input to ``keys`` until it ends (nothing happens without a terminal)."""
    stream = stream or sys.stdin
    if stream is None or stream.closed:
        return
    keys.out.say(HELP)
    while True:
        line = await trio.to_thread.run_sync(stream.readline, abandon_on_cancel=True)
        if not line:
            return
        keys.handle(line)

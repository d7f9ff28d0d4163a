"""The alert lifecycle an operator works, as a table. Everything that decides state lives here.

    raised ──acknowledge──> acknowledged ──dispatch──> dispatched ──arrive──> on_scene
       │                        │  └──resolve──> resolved      │  └─resolve─> resolved   └─resolve─> resolved
       └──false_alarm──> false_alarm  (from any open state)

A press from a button that already has an open alert within the merge
window is recorded as ``duplicate`` and linked to that alert: never dropped
(she pressed again, which the operator must see), never a second incident.
``note`` adds text without changing state, in any state. Escalation is not
a state: it raises ``level`` while an alert stays unacknowledged.

No I/O and no clock here: times are arguments, so every rule is testable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import StateError


class AlertState(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"
    FALSE_ALARM = "false_alarm"
    DUPLICATE = "duplicate"


#: What an operator may ask for, by the state it leads to.
TRANSITIONS: dict[AlertState, frozenset[AlertState]] = {
    AlertState.RAISED: frozenset({AlertState.ACKNOWLEDGED, AlertState.FALSE_ALARM}),
    AlertState.ACKNOWLEDGED: frozenset(
        {AlertState.DISPATCHED, AlertState.RESOLVED, AlertState.FALSE_ALARM}
    ),
    AlertState.DISPATCHED: frozenset({AlertState.ON_SCENE, AlertState.RESOLVED, AlertState.FALSE_ALARM}),
    AlertState.ON_SCENE: frozenset({AlertState.RESOLVED, AlertState.FALSE_ALARM}),
    AlertState.RESOLVED: frozenset(),
    AlertState.FALSE_ALARM: frozenset(),
    AlertState.DUPLICATE: frozenset(),
}

OPEN_STATES = frozenset(
    {AlertState.RAISED, AlertState.ACKNOWLEDGED, AlertState.DISPATCHED, AlertState.ON_SCENE}
)
TERMINAL_STATES = frozenset(state for state, targets in TRANSITIONS.items() if not targets)

#: The pseudo-state of an update that only adds a note.
NOTE = "note"

#: Transitions that need more than who and when.
REQUIRES_UNIT = frozenset({AlertState.DISPATCHED})

#: How an alert ended. Police withdraw response from sites with repeated false
#: calls, so closing an alert must say which it was: ``genuine`` (with a free
#: category such as ``harassment``), ``false`` (with one of FALSE_CATEGORIES)
#: or ``test``.
OUTCOMES = ("genuine", "false", "test")
FALSE_CATEGORIES = ("malicious", "accidental", "device_fault")

#: Closing transitions, each with the outcomes it accepts.
REQUIRES_OUTCOME: dict[AlertState, tuple[str, ...]] = {
    AlertState.RESOLVED: OUTCOMES,
    AlertState.FALSE_ALARM: ("false", "test"),
}


class LifecycleError(StateError):
    """An operator asked for a transition the lifecycle does not allow."""

    code = "bad-transition"


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One accepted change: the state after it and what the journal records."""

    alert_id: str
    previous: str
    state: str
    operator: str
    console: str
    at: int
    unit: str = ""
    note: str = ""
    outcome: str = ""
    category: str = ""


def check_outcome(alert_id: str, target: AlertState, outcome: str, category: str) -> None:
    """Refuse a closing step without a valid outcome, or an outcome on any other step."""
    accepted = REQUIRES_OUTCOME.get(target)
    if accepted is None:
        if outcome or category:
            raise LifecycleError(f"only resolving or marking a false alarm records an outcome, "
                                 f"not moving alert {alert_id} to {target.value}")
        return
    if not outcome:
        raise LifecycleError(
            f"closing alert {alert_id} as {target.value} needs an outcome: one of {', '.join(accepted)}")
    if outcome not in accepted:
        raise LifecycleError(f"outcome {outcome!r} does not fit {target.value}; one of {', '.join(accepted)}")
    if outcome == "false" and category not in FALSE_CATEGORIES:
        raise LifecycleError(f"a false alarm needs its category: one of {', '.join(FALSE_CATEGORIES)}"
                             + (f", not {category!r}" if category else ""))
    if outcome == "genuine" and not category.strip():
        raise LifecycleError(f"a genuine outcome for alert {alert_id} needs a category (e.g. harassment)")
    if outcome == "test" and category:
        raise LifecycleError(f"a test outcome takes no category (got {category!r})")


def transition(
    alert_id: str,
    current: str,
    requested: str,
    *,
    operator: str,
    console: str = "",
    at: int,
    unit: str = "",
    note: str = "",
    outcome: str = "",
    category: str = "",
) -> Step:
    """Check an operator's request against the table; return the step to record."""
    try:
        state = AlertState(current)
    except ValueError:
        raise LifecycleError(f"alert {alert_id} is in unknown state {current!r}") from None
    if requested == NOTE:
        if outcome or category:
            raise LifecycleError(f"a note on alert {alert_id} records no outcome; resolve it instead")
        if not note.strip():
            raise LifecycleError(f"a note on alert {alert_id} needs text")
        return Step(alert_id=alert_id, previous=current, state=current, operator=operator,
                    console=console, at=at, unit=unit, note=note)
    try:
        target = AlertState(requested)
    except ValueError:
        choices = ", ".join([s.value for s in AlertState if s is not AlertState.DUPLICATE] + [NOTE])
        raise LifecycleError(f"unknown alert state {requested!r}; one of {choices}") from None
    allowed = TRANSITIONS[state]
    if target not in allowed:
        if allowed:
            options = ", ".join(sorted(s.value for s in allowed))
            hint = f"from {state.value} it can go to {options}"
        else:
            hint = f"{state.value} is final"
        raise LifecycleError(
            f"alert {alert_id} cannot go from {state.value} to {target.value}: {hint}"
        )
    if target in REQUIRES_UNIT and not unit.strip():
        raise LifecycleError(f"dispatching alert {alert_id} needs the unit or team sent")
    check_outcome(alert_id, target, outcome, category)
    if not operator:
        raise LifecycleError(f"a change to alert {alert_id} must name the operator")
    return Step(alert_id=alert_id, previous=current, state=target.value, operator=operator,
                console=console, at=at, unit=unit, note=note, outcome=outcome, category=category)


def is_open(state: str) -> bool:
    return state in OPEN_STATES

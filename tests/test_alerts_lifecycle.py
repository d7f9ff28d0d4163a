"""The lifecycle table and the escalation clock, without I/O."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pinkrelay.alerts.escalation import Escalator
from pinkrelay.alerts.lifecycle import (
    NOTE,
    OPEN_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    AlertState,
    LifecycleError,
    transition,
)

ALL = [state.value for state in AlertState]


def test_the_table_is_the_documented_path():
    path = ["raised", "acknowledged", "dispatched", "on_scene", "resolved"]
    state = path[0]
    for target in path[1:]:
        step = transition("a1", state, target, operator="op", at=1, unit="Mobile-7")
        assert (step.previous, step.state) == (state, target)
        state = step.state
    assert AlertState.RESOLVED in TERMINAL_STATES and AlertState.FALSE_ALARM in TERMINAL_STATES
    assert AlertState.DUPLICATE in TERMINAL_STATES
    assert set(OPEN_STATES) == {AlertState.RAISED, AlertState.ACKNOWLEDGED, AlertState.DISPATCHED, AlertState.ON_SCENE}


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("requested", ALL)
def test_every_pair_follows_the_table(current, requested):
    allowed = AlertState(requested) in TRANSITIONS[AlertState(current)]
    if allowed:
        step = transition("a1", current, requested, operator="op", at=5, unit="unit-1")
        assert step.state == requested and step.operator == "op" and step.at == 5
    else:
        with pytest.raises(LifecycleError) as caught:
            transition("a1", current, requested, operator="op", at=5, unit="unit-1")
        message = str(caught.value)
        assert f"from {current} to {requested}" in message
        assert ("is final" in message) or ("it can go to" in message)


def test_errors_name_what_is_missing():
    with pytest.raises(LifecycleError, match="needs the unit"):
        transition("a1", "acknowledged", "dispatched", operator="op", at=1)
    with pytest.raises(LifecycleError, match="must name the operator"):
        transition("a1", "raised", "acknowledged", operator="", at=1)
    with pytest.raises(LifecycleError, match="unknown alert state 'closed'"):
        transition("a1", "raised", "closed", operator="op", at=1)
    with pytest.raises(LifecycleError, match="needs text"):
        transition("a1", "raised", NOTE, operator="op", at=1, note="  ")


def test_a_note_keeps_the_state_in_any_state():
    for state in ALL:
        step = transition("a1", state, NOTE, operator="op", at=1, note="caller says two men")
        assert step.state == state and step.note == "caller says two men"


class LifecycleMachine(RuleBasedStateMachine):
    """Random operator requests against a model that only knows the table."""

    def __init__(self) -> None:
        super().__init__()
        self.state = AlertState.RAISED.value
        self.history = [self.state]

    @rule(requested=st.sampled_from(ALL + [NOTE, "reopened"]), unit=st.sampled_from(["", "Mobile-3"]))
    def request(self, requested, unit):
        legal = requested == NOTE or (
            requested in ALL and AlertState(requested) in TRANSITIONS[AlertState(self.state)]
            and (requested != "dispatched" or unit)
        )
        try:
            step = transition("a1", self.state, requested, operator="op", at=len(self.history),
                              unit=unit, note="n")
        except LifecycleError:
            assert not legal
            return
        assert legal
        self.state = step.state
        self.history.append(step.state)

    @invariant()
    def never_leaves_a_final_state(self):
        finals = [i for i, s in enumerate(self.history) if AlertState(s) in TERMINAL_STATES]
        if finals:
            assert all(s == self.history[finals[0]] for s in self.history[finals[0]:])


TestLifecycleMachine = LifecycleMachine.TestCase
TestLifecycleMachine.settings = settings(max_examples=150, stateful_step_count=20, deadline=None)


def test_escalation_levels_fire_in_order_and_stop_when_acknowledged():
    escalator = Escalator([15.0, 60.0])
    escalator.watch("a1", raised_at=100.0)
    escalator.watch("a2", raised_at=105.0)
    assert escalator.next_deadline() == 115.0
    assert escalator.expire(114.9) == []
    assert escalator.expire(115.0) == [("a1", 1)]
    assert escalator.expire(125.0) == [("a2", 1)]
    escalator.stop("a2")
    assert escalator.expire(1000.0) == [("a1", 2)]
    assert escalator.expire(2000.0) == []
    assert escalator.next_deadline() is None


def test_escalation_resumes_from_a_stored_level():
    escalator = Escalator([15.0, 60.0])
    escalator.watch("a1", raised_at=0.0, level=1)
    assert escalator.expire(30.0) == []
    assert escalator.expire(60.0) == [("a1", 2)]


def test_escalation_levels_are_checked():
    for bad in ([], [0.0], [30.0, 15.0], [-1.0]):
        with pytest.raises(ValueError, match="positive and increasing"):
            Escalator(bad)

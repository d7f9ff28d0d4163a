"""The lifecycle table and the escalation clock, without I/O."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

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

#: The legal lifecycle edges, written out by hand from issue 5 and docs/protocol.md §8.2, so the
#: table is checked against the specification and not against itself. ``note`` is not an edge:
#: it is allowed in every state, final ones included, and keeps the state.
EXPECTED_EDGES = frozenset({
    ("raised", "acknowledged"),
    ("raised", "false_alarm"),
    ("acknowledged", "dispatched"),  # needs the unit or team sent
    ("acknowledged", "resolved"),
    ("acknowledged", "false_alarm"),
    ("dispatched", "on_scene"),
    ("dispatched", "resolved"),
    ("dispatched", "false_alarm"),
    ("on_scene", "resolved"),
    ("on_scene", "false_alarm"),
})
#: Set only by the relay at a press, never reached by a transition, never left.
EXPECTED_STATES = {"raised", "acknowledged", "dispatched", "on_scene", "resolved", "false_alarm", "duplicate"}
EXPECTED_FINAL = {"resolved", "false_alarm", "duplicate"}
PROTOCOL = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def test_the_table_is_exactly_the_specified_edges():
    assert {state.value for state in AlertState} == EXPECTED_STATES
    edges = {(source.value, target.value) for source, targets in TRANSITIONS.items() for target in targets}
    assert edges == EXPECTED_EDGES, (
        f"missing: {sorted(EXPECTED_EDGES - edges)}; not in the specification: {sorted(edges - EXPECTED_EDGES)}"
    )
    assert set(TRANSITIONS) == set(AlertState), "every state has a row, final ones an empty one"
    assert {state.value for state in TERMINAL_STATES} == EXPECTED_FINAL
    assert not any(target == "duplicate" for _, target in edges), "no request can make an alert a duplicate"


def _documented_requests() -> tuple[set[tuple[str, str]], set[str], bool]:
    """The "From | To" table of docs/protocol.md §8.2: (edges, final states, note row present)."""
    text = PROTOCOL.read_text(encoding="utf-8")
    section = text.split("### 8.2 States", 1)[1].split("### 8.3", 1)[0]
    table = section.split("| From | To |", 1)[1].split("\n\n", 1)[0]
    edges: set[tuple[str, str]] = set()
    final: set[str] = set()
    note_row = False
    for line in table.strip().splitlines()[1:]:  # after the |---|---| line
        source_cell, target_cell = (cell.strip() for cell in line.strip().strip("|").split("|"))
        sources = re.findall(r"`([a-z_]+)`", source_cell)
        targets = re.findall(r"`([a-z_]+)`", re.sub(r"\(needs[^)]*\)", "", target_cell))
        if not sources:
            assert source_cell.startswith("any state") and targets == ["note"], line
            note_row = True
        elif target_cell.startswith("—"):
            final.update(sources)
        else:
            edges.update((source, target) for source in sources for target in targets)
    return edges, final, note_row


def test_the_protocol_document_lists_the_same_edges():
    edges, final, note_row = _documented_requests()
    assert edges == EXPECTED_EDGES
    assert final == EXPECTED_FINAL
    assert note_row, "§8.2 must say that a note is allowed in every state"


#: A valid outcome for each closing state (any step closing an alert must carry one).
CLOSING = {"resolved": {"outcome": "genuine", "category": "harassment"},
           "false_alarm": {"outcome": "false", "category": "accidental"}}


def closing(requested: str) -> dict[str, str]:
    return CLOSING.get(requested, {})


def test_the_table_is_the_documented_path():
    path = ["raised", "acknowledged", "dispatched", "on_scene", "resolved"]
    state = path[0]
    for target in path[1:]:
        step = transition("a1", state, target, operator="op", at=1, unit="Mobile-7", **closing(target))
        assert (step.previous, step.state) == (state, target)
        state = step.state
    assert AlertState.RESOLVED in TERMINAL_STATES and AlertState.FALSE_ALARM in TERMINAL_STATES
    assert AlertState.DUPLICATE in TERMINAL_STATES
    assert set(OPEN_STATES) == {AlertState.RAISED, AlertState.ACKNOWLEDGED, AlertState.DISPATCHED, AlertState.ON_SCENE}


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("requested", ALL)
def test_every_pair_follows_the_table(current, requested):
    allowed = (current, requested) in EXPECTED_EDGES
    if allowed:
        step = transition("a1", current, requested, operator="op", at=5, unit="unit-1", **closing(requested))
        assert step.state == requested and step.operator == "op" and step.at == 5
    else:
        with pytest.raises(LifecycleError) as caught:
            transition("a1", current, requested, operator="op", at=5, unit="unit-1", **closing(requested))
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


@pytest.mark.parametrize(("requested", "fields", "expected"), [
    ("resolved", {}, "needs an outcome: one of genuine, false, test"),
    ("false_alarm", {}, "needs an outcome: one of false, test"),
    ("false_alarm", {"outcome": "genuine", "category": "x"}, "outcome 'genuine' does not fit false_alarm"),
    ("resolved", {"outcome": "maybe"}, "outcome 'maybe' does not fit resolved"),
    ("resolved", {"outcome": "false"}, "a false alarm needs its category: one of malicious, accidental"),
    ("resolved", {"outcome": "false", "category": "bored"}, "not 'bored'"),
    ("resolved", {"outcome": "genuine", "category": " "}, "needs a category"),
    ("resolved", {"outcome": "test", "category": "x"}, "a test outcome takes no category"),
    ("acknowledged", {"outcome": "test"}, "only resolving or marking a false alarm records an outcome"),
    (NOTE, {"outcome": "test"}, "records no outcome"),
])
def test_closing_needs_a_fitting_outcome_and_nothing_else_takes_one(requested, fields, expected):
    current = "raised" if requested in ("false_alarm", "acknowledged") else "acknowledged"
    with pytest.raises(LifecycleError, match=re.escape(expected)):
        transition("a1", current, requested, operator="op", at=1, note="n", **fields)


@pytest.mark.parametrize(("requested", "outcome", "category"), [
    ("resolved", "genuine", "harassment"), ("resolved", "false", "device_fault"), ("resolved", "test", ""),
    ("false_alarm", "false", "malicious"), ("false_alarm", "test", ""),
])
def test_a_fitting_outcome_is_carried_by_the_step(requested, outcome, category):
    step = transition("a1", "acknowledged", requested, operator="op", at=1, outcome=outcome, category=category)
    assert (step.state, step.outcome, step.category) == (requested, outcome, category)


def test_a_note_keeps_the_state_in_any_state():
    for state in ALL:
        step = transition("a1", state, NOTE, operator="op", at=1, note="caller says two men")
        assert step.state == state and step.note == "caller says two men"


#: Where a run of the machine begins: a press (raised, or a repeat press recorded as duplicate), or
#: an alert already worked some way along the path of issue 5.
START_PATHS = (
    ("raised",),
    ("duplicate",),
    ("raised", "acknowledged"),
    ("raised", "acknowledged", "dispatched"),
    ("raised", "acknowledged", "dispatched", "on_scene"),
)


class LifecycleMachine(RuleBasedStateMachine):
    """Random operator requests against a model that knows only the hand-written edges.

    An alert starts as the relay makes it: ``raised``, or ``duplicate`` when the
    same button pressed again within the merge window. Requests are any state
    name, ``note``, and names the table does not know; each accepted step must
    carry what the journal records (who, when, from which console, unit, note).
    """

    def __init__(self) -> None:
        super().__init__()
        self.state = ""
        self.history: list[str] = []

    @initialize(path=st.sampled_from(START_PATHS))
    def pressed(self, path):
        """Begin at a press, or already some way along the documented path, so every depth is explored."""
        self.state = path[0]
        self.history = [self.state]
        for requested in path[1:]:
            self._try(requested, "Mobile-3", apply=True)
        assert self.history == list(path)

    def _try(self, requested: str, unit: str, *, apply: bool) -> None:
        legal = (self.state, requested) in EXPECTED_EDGES and (requested != "dispatched" or unit.strip())
        at = len(self.history)
        try:
            step = transition("a1", self.state, requested, operator="op", console="console 127.0.0.1:50412",
                              at=at, unit=unit, **closing(requested))
        except LifecycleError as error:
            assert not legal, f"{self.state} -> {requested} (unit {unit!r}) refused: {error}"
            message = str(error)
            if requested not in ALL:
                assert f"unknown alert state {requested!r}" in message
            elif requested == "dispatched" and (self.state, requested) in EXPECTED_EDGES:
                assert "needs the unit" in message
            else:
                assert f"cannot go from {self.state} to {requested}" in message
            return
        assert legal, f"{self.state} -> {requested} (unit {unit!r}) was allowed"
        assert (step.previous, step.state, step.at, step.unit) == (self.state, requested, at, unit)
        assert (step.operator, step.console) == ("op", "console 127.0.0.1:50412")
        if apply:
            self.state = step.state
            self.history.append(step.state)

    @rule(requested=st.sampled_from(ALL + ["reopened", "closed"]), unit=st.sampled_from(["", "  ", "Mobile-3"]))
    def request(self, requested, unit):
        """Anything an operator might send, legal or not."""
        self._try(requested, unit, apply=True)

    # The actions a console offers (issue 5), whatever the state: so runs reach every state.
    @rule()
    def acknowledge(self):
        self._try("acknowledged", "", apply=True)

    @rule(unit=st.sampled_from(["", "  ", "Mobile-3", "rescue-15-van-7"]))
    def dispatch(self, unit):
        self._try("dispatched", unit, apply=True)

    @rule()
    def arrive(self):
        self._try("on_scene", "", apply=True)

    @rule()
    def resolve(self):
        self._try("resolved", "", apply=True)

    @rule()
    def mark_false_alarm(self):
        self._try("false_alarm", "", apply=True)

    @invariant()
    def every_request_from_here_follows_the_specification(self):
        """After every step, from the state reached: each request accepted exactly when the edges allow it."""
        for requested in ALL + ["reopened"]:
            for unit in ("", "Mobile-3"):
                self._try(requested, unit, apply=False)

    @rule(text=st.sampled_from(["", "   ", "caller says two men", "unit delayed at Ring Road"]))
    def note(self, text):
        try:
            step = transition("a1", self.state, NOTE, operator="op", console="web 10.0.0.7", at=9, note=text)
        except LifecycleError as error:
            assert not text.strip() and "needs text" in str(error)
            return
        assert text.strip(), "a blank note was accepted"
        assert (step.previous, step.state, step.note, step.console) == (self.state, self.state, text, "web 10.0.0.7")
        self.history.append(step.state)

    @precondition(lambda self: self.state == "duplicate")
    @rule(requested=st.sampled_from(ALL))
    def a_duplicate_stays_linked(self, requested):
        """A repeat press is a record of her pressing again, not a second incident to work."""
        with pytest.raises(LifecycleError, match="duplicate is final"):
            transition("a1", "duplicate", requested, operator="op", at=1, unit="Mobile-3")

    @invariant()
    def never_leaves_a_final_state(self):
        finals = [i for i, s in enumerate(self.history) if s in EXPECTED_FINAL]
        if finals:
            assert all(s == self.history[finals[0]] for s in self.history[finals[0]:])

    @invariant()
    def a_duplicate_was_born_one(self):
        if "duplicate" in self.history:
            assert self.history[0] == "duplicate" and set(self.history) == {"duplicate"}


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

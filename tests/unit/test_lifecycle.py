"""The run lifecycle table: its shape, the functions that read it, and the docs made from it."""

from __future__ import annotations

import re
from collections import Counter, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quipu.core.errors import Conflict, InvalidInput
from quipu.core.messages import event_type, known_types
from quipu.core.runs import lifecycle
from quipu.core.runs.events import (
    RunCanceled,
    RunExited,
    RunHeartbeat,
    RunLost,
    RunQueued,
    RunRequested,
    RunTagged,
)
from quipu.core.runs.lifecycle import (
    ACTIVE_STATES,
    EVENT_TRIGGERS,
    EXIT_STATES,
    RUN_EVENTS,
    STATES,
    TRANSITIONS,
    TROUBLE_STATES,
    ExitStatus,
    State,
    Trigger,
    allowed,
    blocks_finalization_gate,
    deadlines,
    exit_state,
    has_value,
    infra_outcome,
    is_ended,
    is_final,
    next_state,
    settled,
    state_after,
    trigger_for,
)
from quipu.core.workspaces.events import FinalizationRequired

DOCS = Path(__file__).resolve().parents[2] / "docs"
ENDED = {State.SUCCEEDED, State.FAILED, State.CRASHED, State.LOST, State.PREEMPTED,
         State.CANCELED, State.STOPPED}


def reachable_from(start: State) -> set[State]:
    seen, todo = {start}, deque([start])
    while todo:
        state = todo.popleft()
        for t in TRANSITIONS:
            if t.source is state and t.target not in seen:
                seen.add(t.target)
                todo.append(t.target)
    return seen


# --- the table ---------------------------------------------------------------------------------


def test_every_state_has_a_spec_and_every_edge_uses_known_states_and_triggers():
    assert set(STATES) == set(State)
    assert all(sp.state is s for s, sp in STATES.items())
    for t in TRANSITIONS:
        assert isinstance(t.source, State) and isinstance(t.target, State)
        assert isinstance(t.trigger, Trigger)


def test_every_trigger_is_used_by_some_edge():
    assert {t.trigger for t in TRANSITIONS} == set(Trigger)


def test_every_state_is_reachable_from_requested():
    assert reachable_from(State.REQUESTED) == set(State)


def test_every_non_final_state_has_a_path_to_finalized():
    for state in State:
        assert State.FINALIZED in reachable_from(state), state


def test_no_state_and_trigger_pair_has_two_edges():
    pairs = Counter((t.source, t.trigger) for t in TRANSITIONS)
    assert [pair for pair, n in pairs.items() if n > 1] == []


def test_no_edge_loops_back_to_its_own_state():
    assert [t for t in TRANSITIONS if t.source is t.target] == []


def test_finalized_is_the_only_final_state_and_has_no_outgoing_edges():
    assert [s for s in State if is_final(s)] == [State.FINALIZED]
    assert allowed(State.FINALIZED) == []
    assert all(t.source is not State.FINALIZED for t in TRANSITIONS)


def test_every_non_final_state_has_a_deadline():
    """No run can sit silent forever: the supervisor moves every state but finalized."""
    for state, sp in STATES.items():
        if sp.final:
            assert sp.deadline_seconds is None and sp.deadline_trigger is None
        else:
            assert sp.deadline_seconds is not None and sp.deadline_trigger is not None, state


def test_an_ended_run_left_without_a_verdict_is_finalized_by_its_long_deadline():
    for state in State:
        if STATES[state].holds_gate:
            assert STATES[state].deadline_trigger is Trigger.FINALIZE
            assert STATES[state].deadline_seconds == 30 * 24 * 3600


def test_every_state_that_waits_on_machinery_has_a_deadline():
    for state in State:
        if not is_ended(state) and not is_final(state):
            assert STATES[state].deadline_seconds, state


def test_a_deadline_always_names_a_trigger_that_is_an_edge_out_of_its_state():
    for state, sp in STATES.items():
        assert (sp.deadline_seconds is None) == (sp.deadline_trigger is None), state
        if sp.deadline_trigger is not None:
            assert sp.deadline_seconds is not None and sp.deadline_seconds > 0
            assert next_state(state, sp.deadline_trigger) is not state


def test_review_fails_open_when_nobody_reviews_in_time():
    assert next_state(State.REQUESTED, Trigger.REVIEW_TIMED_OUT) is State.QUEUED
    assert next_state(State.REVIEWING, Trigger.REVIEW_TIMED_OUT) is State.QUEUED
    assert STATES[State.REVIEWING].deadline_trigger is Trigger.REVIEW_TIMED_OUT
    # The deadline is recorded as a RunQueued saying so, which folds to queued.
    assert trigger_for("RunQueued", {"review": "timed out"}) is Trigger.REVIEW_TIMED_OUT
    assert trigger_for("RunQueued", {"review": "skipped"}) is Trigger.REVIEW_SKIPPED


def test_a_review_decision_moves_the_run_by_its_decision():
    assert trigger_for("ReviewStarted", {}) is Trigger.REVIEW_STARTED
    assert trigger_for("ReviewCompleted", {"decision": "block"}) is Trigger.REVIEW_BLOCKED
    for decision in ("approve", "warn"):
        assert trigger_for("ReviewCompleted", {"decision": decision}) is Trigger.REVIEW_APPROVED
    for passive in ("FindingsRecorded", "StopRequested", "OutcomeSuggested"):
        assert trigger_for(passive, {}) is None


def test_a_silent_launch_or_run_is_lost_not_failed():
    assert next_state(State.LAUNCHING, Trigger.DEADLINE) is State.LOST
    assert STATES[State.RUNNING].deadline_trigger is Trigger.HEARTBEAT_LOST
    assert next_state(State.RUNNING, Trigger.HEARTBEAT_LOST) is State.LOST


def test_only_a_lost_run_can_be_adopted_back_into_running():
    assert [(t.source, t.target) for t in TRANSITIONS if t.trigger is Trigger.ADOPTED] == [
        (State.LOST, State.RUNNING)]


def test_every_run_that_has_not_ended_can_be_canceled():
    for state in State:
        if not is_ended(state) and not is_final(state):
            assert next_state(state, Trigger.CANCEL) is State.CANCELED
        else:
            assert Trigger.CANCEL not in allowed(state)


def test_every_ended_run_and_a_blocked_run_can_be_finalized_and_nothing_else_can():
    finalizable = {t.source for t in TRANSITIONS if t.trigger is Trigger.FINALIZE}
    assert finalizable == ENDED | {State.BLOCKED}


# --- outcomes and the gate ---------------------------------------------------------------------


def test_infra_outcome_is_defined_for_exactly_the_ended_states():
    assert {s for s in State if infra_outcome(s) is not None} == ENDED
    assert {s for s in State if is_ended(s)} == ENDED
    for state in ENDED:
        assert infra_outcome(state) == state.value


def test_a_canceled_run_does_not_block_the_finalization_gate():
    assert not blocks_finalization_gate(State.CANCELED)


def test_every_other_ended_run_blocks_the_gate_and_nothing_else_does():
    blocking = {s for s in State if blocks_finalization_gate(s)}
    assert blocking == ENDED - {State.CANCELED}


def test_the_gate_rule_names_every_blocking_state_and_the_canceled_exception():
    rule = lifecycle.gate_rule()
    for state in ENDED:
        assert state.value in rule
    assert "canceled run (nothing to interpret) does not hold the gate" in rule


# --- next_state and allowed --------------------------------------------------------------------


def test_next_state_follows_the_happy_path():
    state = State.REQUESTED
    for trigger in ("review_started", "review_approved", "claimed", "launched", "exited_ok",
                    "finalize"):
        state = next_state(state, trigger)
    assert state is State.FINALIZED


def test_an_invalid_transition_is_a_conflict_whose_hint_lists_the_allowed_triggers():
    with pytest.raises(Conflict) as err:
        next_state(State.QUEUED, Trigger.EXITED_OK)

    assert err.value.code == "invalid_transition"
    for trigger in allowed(State.QUEUED):
        assert trigger.value in err.value.hint


def test_nothing_can_happen_to_a_finalized_run():
    with pytest.raises(Conflict, match="finalized") as err:
        next_state(State.FINALIZED, Trigger.CANCEL)
    assert "final" in err.value.hint


@pytest.mark.parametrize(("state", "trigger", "code"), [
    ("sleeping", "cancel", "unknown_state"),
    ("running", "explode", "unknown_trigger"),
])
def test_unknown_names_are_invalid_input(state, trigger, code):
    with pytest.raises(InvalidInput) as err:
        next_state(state, trigger)
    assert err.value.code == code and err.value.hint


def test_allowed_lists_exactly_the_triggers_of_the_edges_out_of_a_state():
    for state in State:
        assert allowed(state) == [t.trigger for t in TRANSITIONS if t.source is state]


@given(st.lists(st.sampled_from(list(Trigger)), max_size=40))
def test_random_triggers_either_follow_a_listed_edge_or_raise_conflict(triggers):
    state = State.REQUESTED
    for trigger in triggers:
        options = allowed(state)
        try:
            new = next_state(state, trigger)
        except Conflict as err:
            assert trigger not in options
            assert err.code == "invalid_transition"
            continue
        assert trigger in options
        assert lifecycle.Transition(state, trigger, new) in TRANSITIONS
        assert new in State
        state = new


# --- deadlines ---------------------------------------------------------------------------------


def test_deadline_defaults_cover_every_state_with_a_deadline():
    assert deadlines() == {s: sp.deadline_seconds for s, sp in STATES.items()
                           if sp.deadline_seconds is not None}


def test_a_deadline_override_replaces_the_default():
    assert deadlines({"running": 1800})[State.RUNNING] == 1800


def test_bad_deadline_overrides_are_all_reported_at_once():
    with pytest.raises(InvalidInput) as err:
        deadlines({"sleeping": 5, "finalized": 5, "running": 0,
                   "queued": 1.5})  # type: ignore[dict-item]  # wrong on purpose

    assert err.value.code == "invalid_deadline"
    for fragment in ("'sleeping'", "finalized has no deadline", "running: 0", "queued: 1.5"):
        assert fragment in err.value.message


# --- settled, active, trouble, value to judge --------------------------------------------------


def test_a_run_is_settled_exactly_when_it_ended_was_finalized_or_was_blocked():
    for state in State:
        assert settled(state) == (is_ended(state) or is_final(state) or state is State.BLOCKED)


def test_the_active_states_are_the_states_that_are_not_settled():
    assert set(ACTIVE_STATES) == {s for s in State if not settled(s)}
    assert ACTIVE_STATES == (State.REQUESTED, State.REVIEWING, State.QUEUED, State.LAUNCHING,
                             State.RUNNING)


def test_a_lost_run_is_settled_until_it_is_adopted():
    assert settled(State.LOST)
    assert not settled(next_state(State.LOST, Trigger.ADOPTED))


def test_trouble_is_an_ended_run_the_machinery_or_the_code_got_wrong():
    assert TROUBLE_STATES == (State.FAILED, State.CRASHED, State.LOST, State.PREEMPTED)
    assert all(is_ended(s) for s in TROUBLE_STATES)


@pytest.mark.parametrize("state", list(State))
def test_only_a_run_that_succeeded_or_was_stopped_and_logged_its_metric_has_a_value(state):
    assert not has_value(state, logged=False)
    assert has_value(state, logged=True) == (state in (State.SUCCEEDED, State.STOPPED))


# --- exit status -> state ----------------------------------------------------------------------


def reference_exit_state(code: int | None, sig: int | None, oom: bool, stop: bool,
                         problems: bool) -> State:
    """The rule as the executor docs state it, written out longhand."""
    if sig is not None or oom:
        return State.CRASHED
    if code != 0:
        return State.FAILED
    if stop:
        return State.STOPPED
    return State.FAILED if problems else State.SUCCEEDED


@given(st.one_of(st.none(), st.integers(-3, 3)), st.one_of(st.none(), st.integers(1, 15)),
       st.booleans(), st.booleans(), st.booleans())
def test_the_exit_rule_follows_signal_then_code_then_stop_then_problems(code, sig, oom, stop,
                                                                        problems):
    status = ExitStatus(exit_code=code, signal=sig, oom=oom, stop_requested=stop,
                        problems=problems)
    assert exit_state(status) is reference_exit_state(code, sig, oom, stop, problems)
    assert exit_state(status) in EXIT_STATES


@pytest.mark.parametrize(("status", "state"), [
    (ExitStatus(exit_code=0), State.SUCCEEDED),
    (ExitStatus(exit_code=1), State.FAILED),
    (ExitStatus(exit_code=None), State.FAILED),
    (ExitStatus(exit_code=None, signal=9), State.CRASHED),
    (ExitStatus(exit_code=0, oom=True), State.CRASHED),
    (ExitStatus(exit_code=0, stop_requested=True, problems=True), State.STOPPED),
    (ExitStatus(exit_code=2, stop_requested=True), State.FAILED),
    (ExitStatus(exit_code=0, problems=True), State.FAILED),
])
def test_exit_status_examples(status, state):
    assert exit_state(status) is state


# --- events -> triggers ------------------------------------------------------------------------

AT = datetime(2025, 1, 1, tzinfo=UTC)


def make(cls: Any, **fields: Any) -> Any:
    return cls(actor="t", reason="a test event", at=AT, run_id="r", **fields)


def test_every_run_event_is_a_registered_event_about_one_run():
    assert len(RUN_EVENTS) == len(set(RUN_EVENTS))
    for name in RUN_EVENTS:
        assert name in known_types()
        assert "run_id" in event_type(name).model_fields, name


def test_every_trigger_an_event_records_has_a_single_target():
    """So a fold lands in the same state whatever the state it came from."""
    for rule in EVENT_TRIGGERS:
        targets = {t.target for t in TRANSITIONS if t.trigger is rule.trigger}
        assert len(targets) == 1, rule


def test_every_edge_but_a_deadline_or_a_preemption_is_recorded_by_some_event():
    recorded = {r.trigger for r in EVENT_TRIGGERS}
    assert set(Trigger) - recorded == {Trigger.DEADLINE, Trigger.PREEMPTED}


def test_every_deadline_edge_lands_where_the_event_that_records_it_lands():
    """A deadline is recorded as the event of the state it leads to (RunLost, RunCanceled...)."""
    lands: dict[State, str] = {}
    for rule in EVENT_TRIGGERS:
        lands.setdefault(next(t.target for t in TRANSITIONS if t.trigger is rule.trigger),
                         rule.event)
    for t in TRANSITIONS:
        if t.trigger is Trigger.DEADLINE:
            assert t.target in lands, t


def test_an_exit_records_the_trigger_named_by_its_state():
    assert [trigger_for(RunExited.TYPE, {"state": s.value}) for s in EXIT_STATES] == [
        Trigger.EXITED_OK, Trigger.EXITED_ERROR, Trigger.CRASHED, Trigger.STOP_REQUESTED_EXIT]
    triggers = [trigger_for(RunExited.TYPE, {"state": s.value}) for s in EXIT_STATES]
    assert [next_state(State.RUNNING, t) for t in triggers if t is not None] == list(EXIT_STATES)


def test_an_exit_in_a_state_that_is_no_exit_records_no_trigger():
    with pytest.raises(InvalidInput) as err:
        trigger_for(RunExited.TYPE, {"state": "lost"})
    assert err.value.code == "unknown_event_trigger"
    assert "state=succeeded" in err.value.hint


def test_an_event_that_is_not_about_a_run_has_no_trigger():
    with pytest.raises(InvalidInput) as err:
        trigger_for(FinalizationRequired.TYPE, {})
    assert err.value.code == "not_a_run_event"


def test_state_after_opens_moves_and_keeps():
    request = RunRequested(
        actor="t", reason="a test event", at=AT, run_id="r", pipeline_run_id="p",
        workspace="w", stage="s", version=1, manifest="m", entrypoint="e", config={},
        config_hash="h", inputs={}, outputs={}, depends_on=[], results_spec={}, detail={})
    assert state_after(None, request) is State.REQUESTED
    assert state_after(State.REQUESTED, make(RunQueued, review="no reviewer")) is State.QUEUED
    assert state_after(State.RUNNING, make(RunHeartbeat)) is State.RUNNING
    assert state_after(State.FAILED, make(RunTagged, workspace="w", tag="bad")) is State.FAILED
    assert state_after(State.LAUNCHING, make(RunLost, why="silent")) is State.LOST
    assert state_after(State.QUEUED, make(RunCanceled)) is State.CANCELED


def test_state_after_never_refuses_a_recorded_event():
    """The log is the truth: an event with no edge from the state still lands where it leads."""
    exited = make(RunExited, state="succeeded", exit_code=0)
    trigger = trigger_for(exited.TYPE, exited.__dict__)
    assert trigger is Trigger.EXITED_OK
    with pytest.raises(Conflict):
        next_state(State.QUEUED, trigger)
    assert state_after(State.QUEUED, exited) is State.SUCCEEDED


def test_state_after_refuses_an_event_for_a_run_never_opened():
    with pytest.raises(Conflict) as err:
        state_after(None, make(RunCanceled))
    assert err.value.code == "run_not_opened"


# --- docs cannot drift -------------------------------------------------------------------------


def test_the_lifecycle_docs_embed_the_diagram_generated_from_the_table():
    text = (DOCS / "lifecycle.md").read_text()
    found = re.search(r"```mermaid\n(.*?)```", text, re.S)
    assert found, "docs/lifecycle.md has no mermaid block"
    assert found.group(1) == lifecycle.mermaid(), (
        "docs/lifecycle.md is out of date: paste lifecycle.mermaid() into its mermaid block")


def test_the_lifecycle_docs_embed_the_state_table_generated_from_the_table():
    text = (DOCS / "lifecycle.md").read_text()
    found = re.search(r"<!-- states:begin -->\n(.*?)<!-- states:end -->", text, re.S)
    assert found, "docs/lifecycle.md has no states:begin/end markers"
    assert found.group(1) == lifecycle.states_markdown()


@pytest.mark.parametrize(("marker", "generated"), [
    ("events", lifecycle.events_markdown), ("exits", lifecycle.exits_markdown)])
def test_the_lifecycle_docs_embed_the_event_and_exit_tables_generated_from_the_table(
        marker, generated):
    text = (DOCS / "lifecycle.md").read_text()
    found = re.search(rf"<!-- {marker}:begin -->\n(.*?)<!-- {marker}:end -->", text, re.S)
    assert found, f"docs/lifecycle.md has no {marker}:begin/end markers"
    assert found.group(1) == generated(), (
        f"docs/lifecycle.md is out of date: paste lifecycle.{generated.__name__}() between the "
        f"{marker} markers")


@pytest.mark.parametrize("page", ["lifecycle.md", "results.md"])
def test_the_docs_state_the_gate_rule_generated_from_the_table(page):
    assert lifecycle.gate_rule() in (DOCS / page).read_text()


def test_the_diagram_has_one_line_per_edge():
    lines = lifecycle.mermaid().splitlines()
    assert lines[0] == "stateDiagram-v2"
    edges = [ln for ln in lines if "[*]" not in ln and "-->" in ln]
    assert len(edges) == len(TRANSITIONS)

"""The run lifecycle: the one definition of run states and the triggers that move between them.

Everything here is data. ``TRANSITIONS`` lists every edge; ``STATES`` says, for every state,
whether the run is still in flight, whether it is final, which infra outcome it carries if the
run ended there, whether that outcome is trouble, whether a run that ended there has a value to
judge, whether it holds the finalization gate, and what silence means there (its deadline).
``EVENT_TRIGGERS`` says which trigger each run event records, and ``EXIT_RULES`` which state a
finished process ends in. The run aggregate, the supervisor, the executors, the projections, the
docs (``docs/lifecycle.md``, via :func:`mermaid`, :func:`states_markdown`,
:func:`events_markdown` and :func:`exits_markdown`) and the tests all read these tables; nothing
else spells out the state machine. In particular every fold of run events (the ``Run``
aggregate, the runs projection, the supervisor's book) asks :func:`state_after`, and every
"has this run stopped executing" test asks :func:`settled`.

Decisions recorded here (and in ``docs/lifecycle.md``):

* **Canceled does not hold the finalization gate.** A canceled run never produced a result to
  interpret, so making the agent finalize it before its next run would be ceremony. Every other
  ended state does hold the gate. Blocked runs (refused by review, never ran) do not either.
* **A lost run may be adopted.** ``lost`` records that the engine stopped hearing from a run,
  not that the process died. If a restarted supervisor finds the process alive, ``adopted`` takes
  the run back to ``running`` so the log states the correction instead of orphaning a live
  process. Only ``lost`` can be adopted, and only until it is finalized.
* **Every state but finalized has a deadline**, measured from the run's latest event (entering
  the state, or the latest heartbeat while running). Review fails open: a run nobody reviews in
  time is queued. The ended states wait on the agent (the finalization gate moves them), so
  their deadline is long: after 30 days without a verdict the supervisor finalizes the run as
  ``unknown``, which also releases the gate of an abandoned workspace. ``canceled`` (which does
  not hold the gate) is finalized after 7 days.

``next_state`` is strict: a trigger that is not an edge from the current state is a
:class:`~quipu.core.errors.Conflict`. Making a re-delivered event harmless is the aggregate's job
(it compares the event with the state it already reached), not the table's. ``state_after`` is
the fold's side: it never refuses a recorded event (see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from quipu.core.errors import Conflict, InvalidInput
from quipu.core.messages import Event
from quipu.core.reviews.events import (
    FindingsRecorded,
    OutcomeSuggested,
    ReviewCompleted,
    ReviewStarted,
    StopRequested,
)
from quipu.core.runs.events import (
    CheckpointSaved,
    MetricsRecorded,
    ResultsSpecSaved,
    RunAdopted,
    RunCanceled,
    RunClaimed,
    RunExited,
    RunFinalized,
    RunHeartbeat,
    RunLaunched,
    RunLaunchFailed,
    RunLost,
    RunQueued,
    RunRequested,
    RunTagged,
)

__all__ = [
    "ACTIVE_STATES",
    "EVENT_TRIGGERS",
    "EXIT_RULES",
    "EXIT_STATES",
    "OPENING_EVENT",
    "PASSIVE_EVENTS",
    "RUN_EVENTS",
    "STATES",
    "TRANSITIONS",
    "TROUBLE_STATES",
    "EventTrigger",
    "ExitRule",
    "ExitStatus",
    "InfraOutcome",
    "State",
    "StateSpec",
    "Transition",
    "Trigger",
    "allowed",
    "blocks_finalization_gate",
    "deadlines",
    "events_markdown",
    "exit_state",
    "exits_markdown",
    "gate_rule",
    "has_value",
    "infra_outcome",
    "is_ended",
    "is_final",
    "mermaid",
    "next_state",
    "settled",
    "spec",
    "state_after",
    "states_markdown",
    "trigger_for",
]


class State(StrEnum):
    """Where a run is in its life."""

    REQUESTED = "requested"
    REVIEWING = "reviewing"
    BLOCKED = "blocked"
    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CRASHED = "crashed"
    LOST = "lost"
    PREEMPTED = "preempted"
    CANCELED = "canceled"
    STOPPED = "stopped"
    FINALIZED = "finalized"


class Trigger(StrEnum):
    """Something that happened to a run and may move it to another state."""

    REVIEW_STARTED = "review_started"
    REVIEW_APPROVED = "review_approved"
    REVIEW_BLOCKED = "review_blocked"
    REVIEW_SKIPPED = "review_skipped"
    REVIEW_TIMED_OUT = "review_timed_out"
    CLAIMED = "claimed"
    LAUNCHED = "launched"
    LAUNCH_FAILED = "launch_failed"
    EXITED_OK = "exited_ok"
    EXITED_ERROR = "exited_error"
    CRASHED = "crashed"
    HEARTBEAT_LOST = "heartbeat_lost"
    PREEMPTED = "preempted"
    STOP_REQUESTED_EXIT = "stop_requested_exit"
    CANCEL = "cancel"
    ADOPTED = "adopted"
    FINALIZE = "finalize"
    DEADLINE = "deadline"


InfraOutcome = Literal["succeeded", "failed", "crashed", "lost", "preempted", "canceled", "stopped"]


@dataclass(frozen=True, slots=True)
class Transition:
    """One edge: ``trigger`` in state ``source`` moves the run to ``target``."""

    source: State
    trigger: Trigger
    target: State


@dataclass(frozen=True, slots=True)
class StateSpec:
    """What a state means.

    ``in_flight`` is set for the states where the run has not stopped executing yet (it waits
    to be reviewed, queued, launched, or it runs); every other state is *settled*.
    ``infra_outcome`` is set exactly for the ended states (the run stopped executing and awaits
    finalization); it is the one place an infra outcome is derived from. ``trouble`` marks the
    ended states where the machinery or the code went wrong (the dashboard's "failed recently").
    ``yields_value`` marks the ended states whose run ran its code to an end it chose (it
    exited 0, or stopped when asked), so the primary metric it logged is a value to judge.
    ``deadline_seconds`` is the default time the run may stay silent in this state (measured
    from its latest event) before the supervisor applies ``deadline_trigger``; ``None`` means the
    state waits on the agent and the finalization gate, not on machinery.
    """

    state: State
    meaning: str
    in_flight: bool = False
    final: bool = False
    infra_outcome: InfraOutcome | None = None
    trouble: bool = False
    yields_value: bool = False
    holds_gate: bool = False
    deadline_seconds: int | None = None
    deadline_trigger: Trigger | None = None

    @property
    def ended(self) -> bool:
        """The run stopped executing and carries an infra outcome; finalize comes next."""
        return self.infra_outcome is not None


_MINUTE = 60
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR

_ABANDONED = 30 * _DAY
"""How long an ended run may wait for its verdict before the supervisor finalizes it as
``unknown`` (so an abandoned project never keeps a run open forever)."""

S = State
T = Trigger

STATES: Mapping[State, StateSpec] = {
    s.state: s
    for s in (
        StateSpec(S.REQUESTED, "the agent asked for the run; waiting for a reviewer to pick it up",
                  in_flight=True, deadline_seconds=5 * _MINUTE,
                  deadline_trigger=T.REVIEW_TIMED_OUT),
        StateSpec(S.REVIEWING, "a reviewer is checking the run before it may be queued",
                  in_flight=True, deadline_seconds=15 * _MINUTE,
                  deadline_trigger=T.REVIEW_TIMED_OUT),
        StateSpec(S.BLOCKED, "the reviewer refused the run; it never ran",
                  deadline_seconds=7 * _DAY, deadline_trigger=T.DEADLINE),
        StateSpec(S.QUEUED, "approved; waiting for an executor to claim it",
                  in_flight=True, deadline_seconds=1 * _DAY, deadline_trigger=T.DEADLINE),
        StateSpec(S.LAUNCHING, "an executor claimed it and is starting the process",
                  in_flight=True, deadline_seconds=10 * _MINUTE, deadline_trigger=T.DEADLINE),
        StateSpec(S.RUNNING, "the stage code is running and sending heartbeats",
                  in_flight=True, deadline_seconds=10 * _MINUTE,
                  deadline_trigger=T.HEARTBEAT_LOST),
        StateSpec(S.SUCCEEDED, "the process exited with status 0",
                  infra_outcome="succeeded", yields_value=True, holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.FAILED, "the launch failed, the process exited with a non-zero status, "
                  "or its outputs are not what it declared",
                  infra_outcome="failed", trouble=True, holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.CRASHED, "the process was killed by a signal or ran out of memory",
                  infra_outcome="crashed", trouble=True, holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.LOST, "the engine stopped hearing from the run; the process may still live",
                  infra_outcome="lost", trouble=True, holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.PREEMPTED, "the machine was taken away (spot/preemptible capacity)",
                  infra_outcome="preempted", trouble=True, holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.CANCELED, "canceled, or expired before it ran; no result to interpret",
                  infra_outcome="canceled", holds_gate=False,
                  deadline_seconds=7 * _DAY, deadline_trigger=T.DEADLINE),
        StateSpec(S.STOPPED, "the agent or an AI monitor asked it to stop and it exited",
                  infra_outcome="stopped", yields_value=True, holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.FINALIZED, "the agent recorded what the run means (or nothing was left to)",
                  final=True),
    )
}

ACTIVE_STATES: tuple[State, ...] = tuple(s for s, sp in STATES.items() if sp.in_flight)
"""The states of a run still in flight (not :func:`settled`), in table order."""

TROUBLE_STATES: tuple[State, ...] = tuple(s for s, sp in STATES.items() if sp.trouble)
"""The ended states where the machinery or the code went wrong, in table order."""

_ENDED = tuple(s for s, sp in STATES.items() if sp.ended)
_NOT_ENDED = tuple(s for s, sp in STATES.items() if not sp.ended and not sp.final)

TRANSITIONS: tuple[Transition, ...] = (
    # review
    Transition(S.REQUESTED, T.REVIEW_STARTED, S.REVIEWING),
    Transition(S.REQUESTED, T.REVIEW_SKIPPED, S.QUEUED),
    Transition(S.REVIEWING, T.REVIEW_APPROVED, S.QUEUED),
    Transition(S.REVIEWING, T.REVIEW_BLOCKED, S.BLOCKED),
    # execution
    Transition(S.QUEUED, T.CLAIMED, S.LAUNCHING),
    Transition(S.LAUNCHING, T.LAUNCHED, S.RUNNING),
    Transition(S.LAUNCHING, T.LAUNCH_FAILED, S.FAILED),
    Transition(S.LAUNCHING, T.HEARTBEAT_LOST, S.LOST),
    Transition(S.LAUNCHING, T.PREEMPTED, S.PREEMPTED),
    Transition(S.RUNNING, T.EXITED_OK, S.SUCCEEDED),
    Transition(S.RUNNING, T.EXITED_ERROR, S.FAILED),
    Transition(S.RUNNING, T.CRASHED, S.CRASHED),
    Transition(S.RUNNING, T.HEARTBEAT_LOST, S.LOST),
    Transition(S.RUNNING, T.PREEMPTED, S.PREEMPTED),
    Transition(S.RUNNING, T.STOP_REQUESTED_EXIT, S.STOPPED),
    Transition(S.LOST, T.ADOPTED, S.RUNNING),
    # silence: review fails open, an unclaimed run expires, a silent launch is lost
    Transition(S.REQUESTED, T.REVIEW_TIMED_OUT, S.QUEUED),
    Transition(S.REVIEWING, T.REVIEW_TIMED_OUT, S.QUEUED),
    Transition(S.BLOCKED, T.DEADLINE, S.CANCELED),
    Transition(S.QUEUED, T.DEADLINE, S.CANCELED),
    Transition(S.LAUNCHING, T.DEADLINE, S.LOST),
    Transition(S.CANCELED, T.DEADLINE, S.FINALIZED),
    # the agent
    *(Transition(s, T.CANCEL, S.CANCELED) for s in _NOT_ENDED),
    *(Transition(s, T.FINALIZE, S.FINALIZED) for s in (*_ENDED, S.BLOCKED)),
)



@dataclass(frozen=True, slots=True)
class EventTrigger:
    """A run event of type ``event`` records ``trigger``: always, or when its ``field`` equals
    ``value`` (the first matching row of an event wins)."""

    event: str
    trigger: Trigger
    field: str | None = None
    value: str | None = None


OPENING_EVENT = RunRequested.TYPE
"""The event that opens a run's stream; it puts the run in ``requested``."""

EVENT_TRIGGERS: tuple[EventTrigger, ...] = (
    # With no reviewer configured (or skip_review) the engine queues a run at once; a reviewer
    # records its start and its decision; a review nobody finished in time queues it (open).
    EventTrigger(ReviewStarted.TYPE, T.REVIEW_STARTED),
    EventTrigger(ReviewCompleted.TYPE, T.REVIEW_BLOCKED, "decision", "block"),
    EventTrigger(ReviewCompleted.TYPE, T.REVIEW_APPROVED),
    EventTrigger(RunQueued.TYPE, T.REVIEW_TIMED_OUT, "review", "timed out"),
    EventTrigger(RunQueued.TYPE, T.REVIEW_SKIPPED),
    EventTrigger(RunClaimed.TYPE, T.CLAIMED),
    EventTrigger(RunLaunched.TYPE, T.LAUNCHED),
    EventTrigger(RunLaunchFailed.TYPE, T.LAUNCH_FAILED),
    EventTrigger(RunExited.TYPE, T.EXITED_OK, "state", S.SUCCEEDED.value),
    EventTrigger(RunExited.TYPE, T.EXITED_ERROR, "state", S.FAILED.value),
    EventTrigger(RunExited.TYPE, T.CRASHED, "state", S.CRASHED.value),
    EventTrigger(RunExited.TYPE, T.STOP_REQUESTED_EXIT, "state", S.STOPPED.value),
    # A silent launch's deadline and a silent run's heartbeat timeout both land in lost.
    EventTrigger(RunLost.TYPE, T.HEARTBEAT_LOST),
    EventTrigger(RunAdopted.TYPE, T.ADOPTED),
    # The deadlines that cancel (queued, blocked) or finalize (canceled, abandoned) a run are
    # recorded as the same events the agent's cancel and finalize produce.
    EventTrigger(RunCanceled.TYPE, T.CANCEL),
    EventTrigger(RunFinalized.TYPE, T.FINALIZE),
)
"""Which trigger each run event records: the only mapping from events to the table."""

PASSIVE_EVENTS: tuple[str, ...] = (RunHeartbeat.TYPE, MetricsRecorded.TYPE,
                                   ResultsSpecSaved.TYPE, RunTagged.TYPE, CheckpointSaved.TYPE,
                                   FindingsRecorded.TYPE, StopRequested.TYPE,
                                   OutcomeSuggested.TYPE)
"""Events on a run's stream that do not move it (they still restart its deadline clock)."""

RUN_EVENTS: tuple[str, ...] = (
    OPENING_EVENT, *dict.fromkeys(r.event for r in EVENT_TRIGGERS), *PASSIVE_EVENTS)
"""Every event type on a run's stream, each once."""

EXIT_STATES: tuple[State, ...] = tuple(S(r.value) for r in EVENT_TRIGGERS
                                       if r.event == RunExited.TYPE and r.value is not None)
"""The states a ``RunExited`` may record."""


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a stage process ended, as an executor saw it.

    ``exit_code`` is None when it is unknown; ``signal`` is the signal that killed it;
    ``oom`` says the kernel or the container runtime killed it for memory; ``stop_requested``
    that the agent or a monitor had asked it to stop; ``problems`` that its outputs are not what
    it declared (missing or empty, or files written outside ``outputs/``).
    """

    exit_code: int | None
    signal: int | None = None
    oom: bool = False
    stop_requested: bool = False
    problems: bool = False


@dataclass(frozen=True, slots=True)
class ExitRule:
    """An exit status that ``matches`` ends the run in ``state`` (the first matching rule wins)."""

    meaning: str
    matches: Callable[[ExitStatus], bool]
    state: State


EXIT_RULES: tuple[ExitRule, ...] = (
    ExitRule("killed by a signal, or out of memory",
             lambda x: x.signal is not None or x.oom, S.CRASHED),
    ExitRule("a non-zero or unknown exit code", lambda x: x.exit_code != 0, S.FAILED),
    ExitRule("exit 0 after a stop was requested", lambda x: x.stop_requested, S.STOPPED),
    ExitRule("exit 0, but the outputs are not what the stage declared",
             lambda x: x.problems, S.FAILED),
    ExitRule("exit 0 with the declared outputs", lambda x: True, S.SUCCEEDED),
)
"""Exit status -> state, for every executor (local process, container, VM)."""

del S, T

_EDGES: dict[tuple[State, Trigger], State] = {(t.source, t.trigger): t.target
                                              for t in TRANSITIONS}
_TARGETS: dict[Trigger, set[State]] = {}
for _t in TRANSITIONS:
    _TARGETS.setdefault(_t.trigger, set()).add(_t.target)
del _t
_LANDS: dict[Trigger, State] = {trigger: next(iter(targets))
                                for trigger, targets in _TARGETS.items() if len(targets) == 1}
"""The state each trigger with a single target leads to, from wherever it is applied."""
_BY_EVENT: dict[str, list[EventTrigger]] = {}
for _r in EVENT_TRIGGERS:
    _BY_EVENT.setdefault(_r.event, []).append(_r)
del _r


def _state(value: State | str) -> State:
    try:
        return State(value)
    except ValueError:
        raise InvalidInput(f"unknown run state {value!r}", code="unknown_state",
                           hint="use one of: " + ", ".join(STATES)) from None


def _trigger(value: Trigger | str) -> Trigger:
    try:
        return Trigger(value)
    except ValueError:
        raise InvalidInput(f"unknown run trigger {value!r}", code="unknown_trigger",
                           hint="use one of: " + ", ".join(Trigger)) from None


def spec(state: State | str) -> StateSpec:
    """The specification of ``state``; ``InvalidInput`` (``unknown_state``) for a bad name."""
    return STATES[_state(state)]


def allowed(state: State | str) -> list[Trigger]:
    """The triggers that move a run out of ``state``, in table order (empty when final)."""
    current = _state(state)
    return [t.trigger for t in TRANSITIONS if t.source is current]


def next_state(state: State | str, trigger: Trigger | str) -> State:
    """The state ``trigger`` moves a run in ``state`` to.

    Raises ``Conflict`` (code ``invalid_transition``) when the table has no such edge; its hint
    lists the triggers that are allowed from ``state``.
    """
    current, happened = _state(state), _trigger(trigger)
    try:
        return _EDGES[(current, happened)]
    except KeyError:
        options = allowed(current)
        raise Conflict(
            f"a run that is {current} cannot take {happened}",
            code="invalid_transition",
            hint=(f"from {current} the allowed triggers are: " + ", ".join(options)) if options
            else f"{current} is final; nothing can happen to the run any more",
        ) from None


def is_ended(state: State | str) -> bool:
    """The run stopped executing and has an infra outcome, but is not finalized yet."""
    return spec(state).ended


def is_final(state: State | str) -> bool:
    """Nothing can happen to the run any more (only ``finalized``)."""
    return spec(state).final


def settled(state: State | str) -> bool:
    """The run no longer executes and will not start: it ended, was finalized, or was blocked.

    Exactly the states that are not in flight: succeeded, failed, crashed, lost, preempted,
    canceled, stopped (the ended states), finalized, and blocked (refused by review, it never
    ran). A lost run is settled although its process may live on: the engine stopped hearing
    from it, and only a new event (``RunAdopted``) puts it back in flight. This is the one test
    for "stop waiting for this run" (``wait_for``, a downstream stage, a log reader).
    """
    return not spec(state).in_flight


def has_value(state: State | str, *, logged: bool) -> bool:
    """Whether a run that ended in ``state`` has a value to judge: ``finalize_run`` then needs
    full results (the value is compared with the previous and best runs).

    True when the run ran its code to an end it chose (succeeded, or stopped when asked) and
    ``logged`` its primary metric. Any other run (failed, crashed, lost, never ran, or a stage
    that does not log the metric, like a preprocessing step) gets a verdict and notes only,
    unless the agent supplies a value itself.
    """
    return spec(state).yields_value and logged


def exit_state(status: ExitStatus) -> State:
    """The state a run ends in when its process ended with ``status`` (first ``EXIT_RULES``
    row that matches)."""
    for rule in EXIT_RULES:
        if rule.matches(status):
            return rule.state
    raise AssertionError("EXIT_RULES ends with a rule that matches everything")  # pragma: no cover


def trigger_for(event_type: str, fields: Mapping[str, Any]) -> Trigger | None:
    """The trigger a run event of ``event_type`` with ``fields`` records (``EVENT_TRIGGERS``).

    None for the opening event and for events that do not move a run. ``InvalidInput``
    (``not_a_run_event``) for an event that is not on a run's stream, and
    (``unknown_event_trigger``) for one whose fields match no row, e.g. an exit state that is not
    one of ``EXIT_STATES``.
    """
    rules = _BY_EVENT.get(event_type)
    if rules is None:
        if event_type == OPENING_EVENT or event_type in PASSIVE_EVENTS:
            return None
        raise InvalidInput(f"{event_type} is not a run event", code="not_a_run_event",
                           hint="run events are: " + ", ".join(RUN_EVENTS))
    for rule in rules:
        if rule.field is None or fields.get(rule.field) == rule.value:
            return rule.trigger
    options = ", ".join(f"{r.field}={r.value}" for r in rules)
    raise InvalidInput(f"{event_type} with these fields records no trigger",
                       code="unknown_event_trigger", hint=f"{event_type} needs one of: {options}")


def state_after(state: State | None, event: Event) -> State:
    """The state a run is in after ``event``, folded from ``state`` (None before its first one).

    ``RunRequested`` opens the run in ``requested``; an event that records no trigger (heartbeat,
    metrics, results spec, tag) leaves ``state`` as it is; every other run event moves the run
    along the edge of its trigger (``EVENT_TRIGGERS``). The ``Run`` aggregate, the runs
    projection and the supervisor's book all fold with this function.

    A fold never refuses a recorded fact: whether an event may happen was decided, strictly,
    when it was recorded (:func:`next_state`, in the aggregate). When the table has no edge for
    the event from ``state`` (a log written under an older table, or a reader that started
    mid-stream and assumed ``requested``), the run lands in the one state the trigger leads to:
    every trigger an event records has a single target (the tests check it). ``Conflict``
    (``run_not_opened``) for a non-opening event with no state.
    """
    fields = event.__dict__
    if event.TYPE == OPENING_EVENT:
        return State.REQUESTED
    trigger = trigger_for(event.TYPE, fields)
    if state is None:
        raise Conflict(f"{event.TYPE} for a run that was never requested", code="run_not_opened",
                       hint=f"a run's stream starts with {OPENING_EVENT}")
    if trigger is None:
        return state
    return _EDGES.get((state, trigger)) or _LANDS[trigger]


def infra_outcome(state: State | str) -> InfraOutcome | None:
    """Did the infrastructure run the code, and how did it end: set for ended states only.

    This is the single place an infra outcome comes from. It is ``None`` for states where the
    run has not ended, and for ``finalized`` (the run's history keeps the outcome it had when it
    ended; finalizing does not change it).
    """
    return spec(state).infra_outcome


def blocks_finalization_gate(state: State | str) -> bool:
    """Whether a run in ``state`` stops its workspace from starting another run.

    True for every ended state except ``canceled``: succeeded, failed, crashed, lost, preempted
    and stopped runs must be finalized (their result interpreted) first. A canceled run never
    produced a result to interpret, so it does not block; nor does a run still in flight, a
    blocked run (refused by review, it never ran) or a finalized one.
    """
    return spec(state).holds_gate


def gate_rule() -> str:
    """The finalization gate in one sentence, generated from the table for docs and tools."""
    holding = [s.value for s, sp in STATES.items() if sp.holds_gate]
    free = [s.value for s, sp in STATES.items() if sp.ended and not sp.holds_gate]
    return (
        "A workspace cannot start a run while it has a run that ended "
        + ", ".join(holding[:-1]) + " or " + holding[-1]
        + " and is not finalized yet. A " + " or ".join(free)
        + " run (nothing to interpret) does not hold the gate, nor does a run that is still in"
        " flight or was blocked by review."
    )


def deadlines(overrides: Mapping[str, int] | None = None) -> dict[State, int]:
    """The deadline in seconds for every state that has one, with ``overrides`` applied.

    Overrides may only shorten or lengthen an existing deadline (a positive whole number of
    seconds); every problem is reported at once as ``InvalidInput`` (``invalid_deadline``).
    """
    result = {s: sp.deadline_seconds for s, sp in STATES.items()
              if sp.deadline_seconds is not None}
    problems: list[str] = []
    for name, seconds in (overrides or {}).items():
        try:
            state = State(name)
        except ValueError:
            problems.append(f"{name!r} is not a run state")
            continue
        if state not in result:
            problems.append(f"{state} has no deadline (it is final)")
        elif isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
            problems.append(f"{state}: {seconds!r} is not a positive whole number of seconds")
        else:
            result[state] = seconds
    if problems:
        raise InvalidInput(
            "invalid run deadlines: " + "; ".join(problems), code="invalid_deadline",
            hint="override only " + ", ".join(result) + ", e.g. {\"running\": 1800}",
        )
    return result


def mermaid() -> str:
    """The state machine as a Mermaid ``stateDiagram-v2``, generated from ``TRANSITIONS``."""
    lines = ["stateDiagram-v2", f"    [*] --> {State.REQUESTED}"]
    lines += [f"    {t.source} --> {t.target}: {t.trigger}" for t in TRANSITIONS]
    lines += [f"    {s} --> [*]" for s, sp in STATES.items() if sp.final]
    return "\n".join(lines) + "\n"


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "none"
    for unit, size in (("d", _DAY), ("h", _HOUR), ("min", _MINUTE)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def states_markdown() -> str:
    """The state table as Markdown, generated from ``STATES`` for ``docs/lifecycle.md``."""
    rows = ["| state | meaning | in flight | infra outcome | trouble | value to judge "
            "| holds the gate | deadline | on deadline |",
            "|---|---|---|---|---|---|---|---|---|"]

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    for s, sp in STATES.items():
        on_deadline = "—"
        if sp.deadline_trigger is not None:
            on_deadline = f"`{sp.deadline_trigger}` → {_EDGES[(s, sp.deadline_trigger)]}"
        rows.append(
            f"| {s} | {sp.meaning} | {yes(sp.in_flight)} | {sp.infra_outcome or '—'} | "
            f"{yes(sp.trouble)} | {'if logged' if sp.yields_value else 'no'} | "
            f"{yes(sp.holds_gate)} | {_duration(sp.deadline_seconds)} | {on_deadline} |"
        )
    return "\n".join(rows) + "\n"


def _sources(trigger: Trigger) -> str:
    edges = [t for t in TRANSITIONS if t.trigger is trigger]
    targets = dict.fromkeys(t.target for t in edges)
    return "; ".join(", ".join(t.source for t in edges if t.target is target) + f" → {target}"
                     for target in targets)


def events_markdown() -> str:
    """The run events and the triggers they record as Markdown, generated from
    ``EVENT_TRIGGERS`` for ``docs/lifecycle.md``."""
    rows = ["| event | when | trigger | moves the run |", "|---|---|---|---|",
            f"| `{OPENING_EVENT}` | always | — | opens it in {State.REQUESTED} |"]
    for r in EVENT_TRIGGERS:
        when = "always" if r.field is None else f"`{r.field}` is `{r.value}`"
        rows.append(f"| `{r.event}` | {when} | `{r.trigger}` | {_sources(r.trigger)} |")
    rows += [f"| `{name}` | always | — | does not move it |" for name in PASSIVE_EVENTS]
    return "\n".join(rows) + "\n"


def exits_markdown() -> str:
    """The exit status rules as Markdown, generated from ``EXIT_RULES`` for
    ``docs/lifecycle.md``."""
    rows = ["| the process ended with (first match wins) | state |", "|---|---|"]
    rows += [f"| {r.meaning} | {r.state} |" for r in EXIT_RULES]
    return "\n".join(rows) + "\n"

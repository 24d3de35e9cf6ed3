"""The run lifecycle: the one definition of run states and the triggers that move between them.

Everything here is data. ``TRANSITIONS`` lists every edge; ``STATES`` says, for every state,
whether it is final, which infra outcome it carries if the run ended there, whether it holds the
finalization gate, and what silence means there (its deadline). The run aggregate, the
supervisor, the projections, the docs (``docs/lifecycle.md``, via :func:`mermaid` and
:func:`states_markdown`) and the tests all read these two tables; nothing else spells out the
state machine.

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
(it compares the event with the state it already reached), not the table's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from quipu.core.errors import Conflict, InvalidInput

__all__ = [
    "STATES",
    "TRANSITIONS",
    "InfraOutcome",
    "State",
    "StateSpec",
    "Transition",
    "Trigger",
    "allowed",
    "blocks_finalization_gate",
    "deadlines",
    "gate_rule",
    "infra_outcome",
    "is_ended",
    "is_final",
    "mermaid",
    "next_state",
    "spec",
    "states_markdown",
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

    ``infra_outcome`` is set exactly for the ended states (the run stopped executing and awaits
    finalization); it is the one place an infra outcome is derived from. ``deadline_seconds`` is
    the default time the run may stay silent in this state (measured from its latest event)
    before the supervisor applies ``deadline_trigger``; ``None`` means the state waits on the
    agent and the finalization gate, not on machinery.
    """

    state: State
    meaning: str
    final: bool = False
    infra_outcome: InfraOutcome | None = None
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
                  deadline_seconds=5 * _MINUTE, deadline_trigger=T.DEADLINE),
        StateSpec(S.REVIEWING, "a reviewer is checking the run before it may be queued",
                  deadline_seconds=15 * _MINUTE, deadline_trigger=T.DEADLINE),
        StateSpec(S.BLOCKED, "the reviewer refused the run; it never ran",
                  deadline_seconds=7 * _DAY, deadline_trigger=T.DEADLINE),
        StateSpec(S.QUEUED, "approved; waiting for an executor to claim it",
                  deadline_seconds=1 * _DAY, deadline_trigger=T.DEADLINE),
        StateSpec(S.LAUNCHING, "an executor claimed it and is starting the process",
                  deadline_seconds=10 * _MINUTE, deadline_trigger=T.DEADLINE),
        StateSpec(S.RUNNING, "the stage code is running and sending heartbeats",
                  deadline_seconds=10 * _MINUTE, deadline_trigger=T.HEARTBEAT_LOST),
        StateSpec(S.SUCCEEDED, "the process exited with status 0",
                  infra_outcome="succeeded", holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.FAILED, "the launch failed or the process exited with a non-zero status",
                  infra_outcome="failed", holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.CRASHED, "the process was killed by a signal or ran out of memory",
                  infra_outcome="crashed", holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.LOST, "the engine stopped hearing from the run; the process may still live",
                  infra_outcome="lost", holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.PREEMPTED, "the machine was taken away (spot/preemptible capacity)",
                  infra_outcome="preempted", holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.CANCELED, "canceled, or expired before it ran; no result to interpret",
                  infra_outcome="canceled", holds_gate=False,
                  deadline_seconds=7 * _DAY, deadline_trigger=T.DEADLINE),
        StateSpec(S.STOPPED, "the agent or an AI monitor asked it to stop and it exited",
                  infra_outcome="stopped", holds_gate=True,
                  deadline_seconds=_ABANDONED, deadline_trigger=T.FINALIZE),
        StateSpec(S.FINALIZED, "the agent recorded what the run means (or nothing was left to)",
                  final=True),
    )
}

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
    Transition(S.REQUESTED, T.DEADLINE, S.QUEUED),
    Transition(S.REVIEWING, T.DEADLINE, S.QUEUED),
    Transition(S.BLOCKED, T.DEADLINE, S.CANCELED),
    Transition(S.QUEUED, T.DEADLINE, S.CANCELED),
    Transition(S.LAUNCHING, T.DEADLINE, S.LOST),
    Transition(S.CANCELED, T.DEADLINE, S.FINALIZED),
    # the agent
    *(Transition(s, T.CANCEL, S.CANCELED) for s in _NOT_ENDED),
    *(Transition(s, T.FINALIZE, S.FINALIZED) for s in (*_ENDED, S.BLOCKED)),
)

del S, T

_EDGES: dict[tuple[State, Trigger], State] = {(t.source, t.trigger): t.target
                                              for t in TRANSITIONS}


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
    rows = ["| state | meaning | infra outcome | holds the gate | deadline | on deadline |",
            "|---|---|---|---|---|---|"]
    for s, sp in STATES.items():
        on_deadline = "—"
        if sp.deadline_trigger is not None:
            on_deadline = f"`{sp.deadline_trigger}` → {_EDGES[(s, sp.deadline_trigger)]}"
        rows.append(
            f"| {s} | {sp.meaning} | {sp.infra_outcome or '—'} | "
            f"{'yes' if sp.holds_gate else 'no'} | {_duration(sp.deadline_seconds)} | "
            f"{on_deadline} |"
        )
    return "\n".join(rows) + "\n"

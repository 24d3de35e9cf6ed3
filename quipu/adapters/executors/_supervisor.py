"""The supervisor's knowledge: which runs exist and how long each has been silent.

``RunBook`` folds run events from the log into (state, time of the latest event) per run that
is not finalized: the state with ``lifecycle.state_after``, as the ``Run`` aggregate does, and
the same clock the aggregate's deadlines use. ``overdue`` names the
runs whose state's deadline (``core.runs.lifecycle``; the running deadline is the executor's
heartbeat timeout) has passed.
(Whether a process is still the stage it was is the stage backend's business: ``process.py``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from quipu.core.messages import Event
from quipu.core.runs import lifecycle
from quipu.core.runs.events import RunFinalized, RunRequested
from quipu.core.runs.lifecycle import State

__all__ = ["RUN_EVENT_TYPES", "BookEntry", "RunBook"]

RUN_EVENT_TYPES: tuple[str, ...] = lifecycle.RUN_EVENTS
"""Every event on a run's stream: each one restarts the run's deadline clock."""
_RUN_EVENTS = frozenset(RUN_EVENT_TYPES)


@dataclass
class BookEntry:
    """What the log says about one run that is not finalized."""

    state: State
    at: datetime
    depends_on: tuple[str, ...] = ()
    tried_at: datetime | None = None  # the latest event a deadline was already applied for


class RunBook:
    """Runs that are not finalized, folded from their events."""

    def __init__(self, heartbeat_timeout: float) -> None:
        self.runs: dict[str, BookEntry] = {}
        self.deadlines: dict[State, float] = {s: float(v)
                                              for s, v in lifecycle.deadlines().items()}
        self.deadlines[State.RUNNING] = heartbeat_timeout

    def apply(self, event: Event) -> None:
        """Fold one run event (any other event is ignored)."""
        run_id = getattr(event, "run_id", None)
        if not isinstance(run_id, str) or event.TYPE not in _RUN_EVENTS:
            return
        if isinstance(event, RunFinalized):
            self.runs.pop(run_id, None)
            return
        if isinstance(event, RunRequested):
            self.runs[run_id] = BookEntry(State.REQUESTED, event.at, tuple(event.depends_on))
            return
        entry = self.runs.get(run_id)
        if entry is None:
            if lifecycle.trigger_for(event.TYPE, event.__dict__) is None:
                # A tag or metrics after finalization (or of a run requested before what we
                # read) moves nothing; taking it for a new run in flight would keep its
                # downstream waiting on it forever.
                return
            # Its request predates what we read; state_after still lands in the right state.
            entry = self.runs[run_id] = BookEntry(State.REQUESTED, event.at)
        entry.at = event.at
        entry.state = lifecycle.state_after(entry.state, event)

    def state(self, run_id: str) -> State | None:
        """The run's state per the log, None when unknown or finalized."""
        entry = self.runs.get(run_id)
        return entry.state if entry else None

    def waits_on_others(self, run_id: str) -> bool:
        """A queued run whose upstream runs are still in flight (its wait is not silence)."""
        entry = self.runs.get(run_id)
        if entry is None:
            return False
        for dep in entry.depends_on:
            state = self.state(dep)
            if state is not None and not lifecycle.settled(state):
                return True
        return False

    def deadline(self, state: State) -> float | None:
        """Seconds a run may stay silent in ``state``; None when the state has no deadline."""
        return self.deadlines.get(state)

    def overdue(self, now: datetime) -> list[str]:
        """Runs silent past their state's deadline, each named once per latest event."""
        found = []
        for run_id, entry in self.runs.items():
            limit = self.deadline(entry.state)
            if limit is None or entry.tried_at == entry.at:
                continue
            if (now - entry.at).total_seconds() > limit and not (
                    entry.state is State.QUEUED and self.waits_on_others(run_id)):
                entry.tried_at = entry.at
                found.append(run_id)
        return found

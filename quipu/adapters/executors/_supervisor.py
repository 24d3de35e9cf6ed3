"""The supervisor's knowledge: which runs exist and how long each has been silent, and whether
a process is still the stage it was.

``RunBook`` folds run events from the log into (state, time of the latest event) per run that
is not finalized: the state with ``lifecycle.state_after``, as the ``Run`` aggregate does, and
the same clock the aggregate's deadlines use. ``overdue`` names the
runs whose state's deadline (``core.runs.lifecycle``; the running deadline is the executor's
heartbeat timeout) has passed. ``process_is_stage`` tells a live stage from a dead one or from
an unrelated process that reused its pid, by the ``QUIPU_RUN_ID`` in its environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from quipu.core.messages import Event
from quipu.core.runs import lifecycle
from quipu.core.runs.events import RunFinalized, RunRequested
from quipu.core.runs.lifecycle import State

__all__ = ["RUN_EVENT_TYPES", "BookEntry", "RunBook", "process_is_stage"]

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


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0] if ")" in stat else None


def process_is_stage(pid: int, run_id: str, run_dir: Path) -> bool:
    """Whether ``pid`` is alive and still the stage process of ``run_id``.

    A zombie counts as gone (it has exited; nobody reaped it yet). The process must carry
    ``QUIPU_RUN_ID=<run_id>`` in its environment, or, where that is unreadable, name the run
    directory on its command line: a pid reused by an unrelated process is not the stage.
    """
    if not Path("/proc").is_dir():  # no procfs: the best available answer is "the pid exists"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        return f"QUIPU_RUN_ID={run_id}".encode() in environ.split(b"\0")
    except PermissionError:
        pass
    except OSError:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(run_dir).encode() in cmdline

"""The Run aggregate, the runs projection and the supervisor's book agree on every run's state.

Random sequences of run commands (valid and invalid orders, re-deliveries, adoption after lost,
cancel at every stage, finalize, deadlines) are decided by the ``Run`` aggregate; a refused
command records nothing. The events it accepted are then folded, one by one, through a fresh
aggregate, the runs projection (its ``apply`` on a real SQLite file) and the executor's
``RunBook``, and after every event all of them must hold the state the deciding aggregate
reached, and that state must have been reached along an edge of the lifecycle table.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from quipu.adapters.executors._supervisor import RUN_EVENT_TYPES, RunBook
from quipu.core.aggregate import Meta
from quipu.core.errors import QuipuError
from quipu.core.messages import Event
from quipu.core.runs import lifecycle
from quipu.core.runs.aggregate import Run
from quipu.core.runs.events import RunRequested
from quipu.core.runs.lifecycle import EXIT_STATES, State
from quipu.projections._base import Folded
from quipu.projections.runs_view import RunsView

RUNS = ("stage-a", "stage-b")
WORKERS = ("w1", "w2")
START = datetime(2025, 1, 1, tzinfo=UTC)

ACTIONS = ("request", "claim", "launch", "heartbeat", "launch_failed", "exit", "lost", "adopt",
           "cancel", "finalize", "deadline", "metrics", "tag", "spec")

# Commands that make sense in each state (repeated ones are likelier). Most steps draw one of
# these, so sequences get deep into the lifecycle; the rest draw any command, which the
# aggregate may refuse.
LIKELY: dict[State | None, tuple[str, ...]] = {
    None: ("request",),
    State.QUEUED: ("claim", "claim", "claim", "cancel", "deadline", "spec"),
    State.LAUNCHING: ("launch", "launch", "launch", "launch_failed", "lost", "cancel",
                      "deadline", "claim"),
    State.RUNNING: ("exit", "exit", "exit", "heartbeat", "lost", "cancel", "metrics",
                    "deadline", "launch"),
    State.LOST: ("adopt", "finalize", "deadline", "exit"),
    State.CANCELED: ("finalize", "deadline", "cancel"),
    State.FINALIZED: ("tag", "finalize", "metrics"),
}
ENDED_LIKELY = ("finalize", "tag", "spec", "metrics", "deadline", "exit")


def request_of(run_id: str, meta: Meta) -> RunRequested:
    return RunRequested(
        **meta.fields(), run_id=run_id, pipeline_run_id="pipe-1", workspace="ws",
        stage=run_id.removeprefix("stage-"), version=1, manifest="m" * 64, entrypoint="main.py",
        config={}, config_hash="c" * 16, inputs={}, outputs={}, depends_on=[],
        results_spec={"primary_metric": "acc", "direction": "maximize"},
        detail={"description": "a run for the agreement test"})


def decide(run: Run, action: str, variant: int, meta: Meta) -> None:
    """One command on ``run``; raises QuipuError when the aggregate refuses it."""
    worker = WORKERS[variant % 2]
    if action == "request":
        run.requested(meta, request_of(run.name, meta))
    elif action == "claim":
        run.claim(meta, worker)
    elif action == "launch":
        run.launched(meta, worker=worker, host="h", pid=100 + variant, run_dir="/r",
                     inputs={})
    elif action == "heartbeat":
        run.heartbeat(meta, f"step {variant}")
    elif action == "launch_failed":
        run.launch_failed(meta, "no such entrypoint")
    elif action == "exit":
        state = EXIT_STATES[variant]
        run.exited(meta, state=state, exit_code=0 if state is State.SUCCEEDED else 1)
    elif action == "lost":
        run.lost(meta, "silent past its deadline")
    elif action == "adopt":
        run.adopted(meta, worker=worker, pid=100 + variant)
    elif action == "cancel":
        run.cancel(meta)
    elif action == "finalize":
        run.finalize(meta, ml_outcome="miss", results=None, results_auto={}, comparison=None)
    elif action == "deadline":
        deadline(run, meta)
    elif action == "metrics":
        run.record_metrics(meta, series=None, points=variant + 1, complete=variant == 3,
                           summaries={"acc": {"last": 0.5 + variant / 10, "count": variant + 1}})
    elif action == "tag":
        run.tag(meta, ("best", "bad", "keep", "best")[variant])
    elif action == "spec":
        run.save_results_spec(meta, {"primary_metric": ("acc", "loss")[variant % 2],
                                     "direction": "maximize"})


def deadline(run: Run, meta: Meta) -> None:
    """What ``RunService.record_deadline`` decides: the state's deadline trigger from the table."""
    spec = lifecycle.spec(run.current)
    if spec.deadline_trigger is None:
        return
    target = lifecycle.next_state(run.current, spec.deadline_trigger)
    if target is State.LOST:
        run.lost(meta, "deadline passed")
    elif target is State.CANCELED:
        run.cancel(meta)
    elif target is State.FINALIZED:
        run.finalize(meta, ml_outcome="unknown", results=None, results_auto={},
                     comparison=None)


class Projection:
    """The runs view on a real SQLite file, folded one event per page."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path)
        # A real file, but no fsync per page: the test commits after every event.
        self.conn.execute("PRAGMA synchronous = OFF")
        self.view = RunsView()
        self.view.create(sqlite_utils.Database(self.conn))
        self.position = 0

    def apply(self, e: Event) -> None:
        self.position += 1
        with self.conn:
            self.view.apply(self.conn, [Folded(self.position, e, e.at.isoformat())])

    def state(self, run_id: str) -> State | None:
        row = self.conn.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else State(row[0])


@pytest.fixture
def db_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("agreement")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), length=st.integers(1, 60))
def test_aggregate_projection_and_supervisor_agree_state_for_state(
        db_dir: Path, data: st.DataObject, length: int) -> None:
    deciding = {run_id: Run(run_id) for run_id in RUNS}
    # Each accepted event, with the state the deciding aggregate reached for the last event of
    # a command (a command may record several: a request is queued at once).
    accepted: list[tuple[Event, State | None]] = []
    at = START
    for _ in range(length):
        run = deciding[data.draw(st.sampled_from(RUNS))]
        choices = LIKELY.get(run.state, ENDED_LIKELY) if data.draw(st.integers(0, 3)) \
            else ACTIONS
        action, variant = data.draw(st.sampled_from(choices)), data.draw(st.integers(0, 3))
        at += timedelta(seconds=1 + variant)
        try:
            decide(run, action, variant, Meta("agent", f"{action} for the test", at))
        except QuipuError:
            event("a command was refused")
            assert run.pending == [], "a refused command must record nothing"
            continue
        accepted += [(e, None) for e in run.pending[:-1]]
        if run.pending:
            accepted.append((run.pending[-1], run.current))
        run.pending.clear()

    replayed = {run_id: Run(run_id) for run_id in RUNS}
    projection = Projection(db_dir / f"views-{uuid.uuid4().hex}.db")
    book = RunBook(heartbeat_timeout=600.0)
    try:
        for e, decided in accepted:
            run_id: str = e.run_id  # type: ignore[attr-defined]
            before = replayed[run_id].state
            replayed[run_id].replay(e)
            projection.apply(e)
            book.apply(e)
            after = replayed[run_id].current
            trigger = lifecycle.trigger_for(e.TYPE, e.__dict__)
            if trigger is not None:
                assert before is not None
                assert lifecycle.next_state(before, trigger) is after, (
                    f"{e.TYPE} moved {before} -> {after} along no edge of the table")
            else:
                assert before in (None, after)
            assert decided in (None, after), e.TYPE
            assert projection.state(run_id) is after, e.TYPE
            assert book.state(run_id) is (None if after is State.FINALIZED else after), e.TYPE
            event(f"reached {after}")
    finally:
        projection.conn.close()


def test_the_projection_and_the_book_fold_every_run_event() -> None:
    """The three folds see the same events: a run event the projection skipped would freeze its
    row in a state the aggregate left."""
    assert set(lifecycle.RUN_EVENTS) <= RunsView.types
    assert set(RUN_EVENT_TYPES) == set(lifecycle.RUN_EVENTS)


def test_every_action_of_the_agreement_test_can_be_accepted() -> None:
    """The commands reach every state they can: no reviewer or preemption exists yet, and a
    requested run is queued in the same command."""
    seen: set[State] = set()
    walks: list[list[tuple[str, int]]] = [
        [("request", 0), ("claim", 0), ("launch", 0), ("exit", i), ("finalize", 0)]
        for i in range(len(EXIT_STATES))
    ] + [
        [("request", 0), ("claim", 0), ("launch_failed", 0), ("finalize", 0)],
        [("request", 0), ("claim", 0), ("launch", 0), ("lost", 0), ("adopt", 0), ("cancel", 0),
         ("deadline", 0)],
        [("request", 0), ("deadline", 0), ("finalize", 0)],
        [("request", 0), ("claim", 0), ("deadline", 0)],
    ]
    for walk in walks:
        run = Run("stage-a")
        for action, variant in walk:
            decide(run, action, variant, Meta("agent", "walk", START))
            seen.add(run.current)
    assert seen == set(State) - {State.REQUESTED, State.REVIEWING, State.BLOCKED,
                                 State.PREEMPTED}


def test_a_late_event_of_a_finalized_run_does_not_bring_it_back_into_the_book() -> None:
    """Tags (and metrics) may follow finalization; the book must not read them as a new run in
    flight, or a queued run depending on it would wait on it forever."""
    run = Run("stage-a")
    meta = Meta("agent", "walk", START)
    for action, variant in [("request", 0), ("claim", 0), ("launch", 0), ("exit", 0),
                            ("finalize", 0), ("tag", 0), ("metrics", 3)]:
        decide(run, action, variant, meta)
    downstream = Run("stage-b")
    downstream.requested(meta, request_of("stage-b", meta).model_copy(
        update={"depends_on": ["stage-a"]}))
    book = RunBook(heartbeat_timeout=600.0)
    for e in [*run.pending, *downstream.pending]:
        book.apply(e)
    assert book.state("stage-a") is None
    assert book.state("stage-b") is State.QUEUED
    assert not book.waits_on_others("stage-b")

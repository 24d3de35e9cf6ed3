"""The Run aggregate: one stage execution, moved only along ``core.runs.lifecycle``'s table.

Every fact about a run is an event on its own stream. Before it records an event the aggregate
checks, strictly, that the trigger the event records (``lifecycle.trigger_for``) is an edge from
the run's state; folding an event asks ``lifecycle.state_after``, the same function the runs
projection and the supervisor fold with, so no copy of the table lives here. A re-delivered
fact is a no-op, so executors and the supervisor can be idempotent: claiming a run twice, or
recording the same exit twice, changes nothing the second time.

Ending a run and finalizing it also touch the workspace (the finalization gate); those decisions
return what the workspace must record, and the service appends both in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, TypeVar

from quipu.core.aggregate import Aggregate, Meta
from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.messages import Event
from quipu.core.reviews.events import (
    FindingsRecorded,
    OutcomeSuggested,
    ReviewCompleted,
    ReviewStarted,
    StopRequested,
)
from quipu.core.reviews.findings import Finding
from quipu.core.reviews.review import REVIEWER_FAILED, Outcome
from quipu.core.runs import lifecycle
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
from quipu.core.runs.lifecycle import State, Trigger

__all__ = ["Run"]


class Run(Aggregate):
    """One stage execution."""

    KIND = "run"
    SNAPSHOT_SCHEMA = 2  # 2: checkpoints hold each save's record, not only its hash

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.request: RunRequested | None = None
        self.state: State | None = None
        self.entered_at: Any = None  # time of the latest event (deadlines count from it)
        self.worker: str | None = None
        self.pid: int | None = None
        self.run_dir: str | None = None
        self.launched_inputs: dict[str, dict[str, Any]] = {}
        self.exit: RunExited | None = None
        self.metrics: MetricsRecorded | None = None
        self.results_spec: dict[str, Any] = {}
        self.finalized: RunFinalized | None = None
        self.tags: set[str] = set()
        self.lost_why: str | None = None
        # "name/step" or "name/latest" -> {name, step, sha256, size, manifest, files}
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.stop: StopRequested | None = None  # the first request to stop, if any
        self.suggestion: OutcomeSuggested | None = None  # the post-run review's, if any
        self.review: ReviewCompleted | None = None
        self.findings: set[str] = set()  # digests of the FindingsRecorded already on the stream

    # --- guards --------------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        """The run's id (its stream name)."""
        return self.name

    def check_exists(self) -> RunRequested:
        """The run's request, or NotFound."""
        if self.request is None:
            raise NotFound(f"there is no run {self.name!r}", code="unknown_run",
                           hint="list runs with list_history(workspace) or "
                           "list_unfinalized_runs(workspace)")
        return self.request

    @property
    def current(self) -> State:
        """The run's state (it must exist)."""
        self.check_exists()
        assert self.state is not None
        return self.state

    def _move(self, trigger: Trigger) -> State:
        return lifecycle.next_state(self.current, trigger)

    def _record(self, event: Event) -> None:
        """Record ``event`` if the trigger it records is an edge from the run's state
        (``Conflict`` ``invalid_transition`` if not)."""
        trigger = lifecycle.trigger_for(event.TYPE, event.__dict__)
        if trigger is not None:
            self._move(trigger)
        self.trigger(event)

    # --- decisions -----------------------------------------------------------------------------

    def requested(self, meta: Meta, request: RunRequested, *, reviewed: bool = False) -> None:
        """Record the request; queue it at once unless a reviewer must look first
        (``reviewed``: the project configured one; ``skip_review`` bypasses it, recorded)."""
        if self.request is not None:
            raise Conflict(f"run {self.name} already exists", code="run_exists",
                           hint="run ids are unique; this is a bug in the caller")
        self.trigger(request)
        if reviewed and not request.skip_review:
            return  # stays requested: the review adapter answers with ReviewStarted
        self._record(RunQueued(**meta.fields(), run_id=self.name,
                               review="skipped" if request.skip_review else "no reviewer"))

    def review_started(self, meta: Meta, reviewers: list[str]) -> bool:
        """A reviewer takes the run; False when it is no longer waiting for one (another
        reviewer took it, it was canceled, or its deadline queued it)."""
        if self.current is not State.REQUESTED:
            return False
        self._record(ReviewStarted(**meta.fields(), run_id=self.name, reviewers=reviewers))
        return True

    def review_completed(self, meta: Meta, outcome: Outcome, *,
                         resumed_from: str | None = None) -> bool:
        """Record the review's decision; False when the run is no longer being reviewed (a
        late answer after the deadline or a cancel changes nothing). ``resumed_from``: the
        reviewer that started the review was gone and ``meta.actor`` reviewed it again."""
        if self.current is not State.REVIEWING:
            return False
        self._record(ReviewCompleted(**meta.fields(), run_id=self.name,
                                     decision=outcome.decision, reviewers=outcome.reviewers,
                                     findings=outcome.findings, fix=outcome.fix,
                                     omitted=outcome.omitted, resumed_from=resumed_from))
        return True

    def review_timed_out(self, meta: Meta, *, fail_open: bool = True) -> None:
        """Nobody finished reviewing the run before its state's deadline.

        Failing open queues it (the findings of reviewers that failed are recorded by them).
        Failing closed blocks it with a ``reviewer_failed`` finding; a run no reviewer even
        picked up is first recorded as taken by nobody (``ReviewStarted`` with no reviewers),
        because only a review in progress can end blocked.
        """
        if fail_open:
            self._record(RunQueued(**meta.fields(), run_id=self.name, review="timed out"))
            return
        if self.current is State.REQUESTED:
            self._record(ReviewStarted(**meta.fields(), run_id=self.name, reviewers=[]))
        stage = self.check_exists().stage
        finding = Finding(signal=REVIEWER_FAILED, severity="error", phase="pre_run",
                          source="supervisor", stage=stage,
                          message="no reviewer finished the review before its deadline",
                          fix="check that the review adapter runs (quipu serve) and that the "
                          "configured reviewer answers; or run again with skip_review=True")
        self._record(ReviewCompleted(**meta.fields(), run_id=self.name, decision="block",
                                     reviewers=[], findings=[finding.as_dict()],
                                     fix=finding.fix))

    def claim(self, meta: Meta, worker: str) -> bool:
        """Take a queued run for ``worker``; False if it is no longer claimable by it."""
        if self.current is State.LAUNCHING and self.worker == worker:
            return True  # re-delivered: already ours
        if self.current is not State.QUEUED:
            return False
        self._record(RunClaimed(**meta.fields(), run_id=self.name, worker=worker))
        return True

    def launched(self, meta: Meta, *, worker: str, host: str, pid: int, run_dir: str,
                 inputs: dict[str, dict[str, Any]],
                 environment: dict[str, Any] | None = None) -> None:
        """The process is running (``environment``: the facts of what it runs with)."""
        if self.current is State.RUNNING and self.pid == pid:
            return
        self._record(RunLaunched(**meta.fields(), run_id=self.name, worker=worker, host=host,
                                 pid=pid, run_dir=run_dir, inputs=inputs,
                                 environment=environment))

    def heartbeat(self, meta: Meta, message: str | None = None) -> None:
        """The run is alive (only meaningful while it runs)."""
        if self.current is State.RUNNING:
            self.trigger(RunHeartbeat(**meta.fields(), run_id=self.name, message=message))

    def launch_failed(self, meta: Meta, error: str) -> bool:
        """The process could not start; returns whether the gate is now held."""
        if self.current is State.FAILED:
            return False
        self._record(RunLaunchFailed(**meta.fields(), run_id=self.name, error=error))
        return True

    def exited(self, meta: Meta, *, state: State, exit_code: int | None,
               signal: int | None = None, outputs: dict[str, dict[str, Any]] | None = None,
               logs: dict[str, Any] | None = None, problems: list[str] | None = None,
               error: str | None = None) -> bool:
        """The process ended in ``state``; returns whether it now holds the gate.

        A run that was already recorded as lost, canceled or ended keeps its first ending: the
        late exit is dropped (the log already says what was known at the time).
        """
        if state not in lifecycle.EXIT_STATES:
            raise InvalidInput(f"{state} is not an exit state", code="invalid_exit_state",
                               hint="use " + ", ".join(lifecycle.EXIT_STATES))
        if self.current is not State.RUNNING:
            return False
        self._record(RunExited(**meta.fields(), run_id=self.name, state=state.value,
                               exit_code=exit_code, signal=signal, outputs=outputs or {},
                               logs=logs, problems=problems or [], error=error))
        return lifecycle.blocks_finalization_gate(state)

    def lost(self, meta: Meta, why: str) -> bool:
        """Silence past the deadline: the run is lost; returns whether the gate is now held."""
        if self.current is State.LOST:
            return False
        event = RunLost(**meta.fields(), run_id=self.name, why=why)
        trigger = lifecycle.trigger_for(event.TYPE, event.__dict__)
        if trigger not in lifecycle.allowed(self.current):
            raise Conflict(f"run {self.name} in {self.current} cannot be lost",
                           code="invalid_transition", hint="only launching/running runs")
        self._record(event)
        return True

    def adopted(self, meta: Meta, *, worker: str, pid: int) -> None:
        """A lost run's process is alive after all."""
        self._record(RunAdopted(**meta.fields(), run_id=self.name, worker=worker, pid=pid))

    def cancel(self, meta: Meta) -> State:
        """Cancel a run that has not ended; returns the state it was in."""
        previous = self.current
        # The table decides what can be canceled: everything not ended, blocked runs included.
        # A second cancel is refused like any other (an agent told "done" twice would think it
        # stopped something).
        if previous is State.CANCELED:
            raise Conflict(f"run {self.name} is already canceled", code="run_ended",
                           hint="nothing to stop: a canceled run does not hold the gate; "
                           "finalize_run() it if its record should say why")
        if Trigger.CANCEL not in lifecycle.allowed(previous):
            raise Conflict(f"run {self.name} already ended ({previous})", code="run_ended",
                           hint="an ended run cannot be canceled; finalize_run() it instead")
        self._record(RunCanceled(**meta.fields(), run_id=self.name))
        return previous

    def finalize(self, meta: Meta, *, ml_outcome: str, results: dict[str, Any] | None,
                 results_auto: dict[str, Any], comparison: dict[str, Any] | None,
                 closed_by: str | None = None) -> bool:
        """Record the verdict (or, with ``closed_by``, the closing of this stage by the verdict
        of that stage run of the same pipeline run); returns whether the run held the gate."""
        request = self.check_exists()
        state = self.current
        if state is State.FINALIZED:
            by = self.finalized.closed_by if self.finalized else None
            raise Conflict(f"run {self.name} is already finalized"
                           + (f" (closed by the verdict on {by})" if by else ""),
                           code="already_finalized",
                           hint="inspect_record() shows its results; tag it to mark it")
        # The table decides what can be finalized: the ended runs and blocked ones.
        if Trigger.FINALIZE not in lifecycle.allowed(state):
            raise Conflict(f"run {self.name} is still {state}", code="run_not_ended",
                           hint="wait for it (inspect_run, logs) or cancel() it first")
        held = lifecycle.blocks_finalization_gate(state)
        self._record(RunFinalized(**meta.fields(), run_id=self.name, workspace=request.workspace,
                                  stage=request.stage, ml_outcome=ml_outcome, results=results,
                                  results_auto=results_auto, comparison=comparison,
                                  closed_by=closed_by))
        return held

    def save_results_spec(self, meta: Meta, spec: dict[str, Any]) -> None:
        """Replace the results spec before finalization."""
        if self.current is State.FINALIZED:
            raise Conflict(f"run {self.name} is finalized", code="already_finalized",
                           hint="the spec of a finalized run is part of its record")
        self.trigger(ResultsSpecSaved(**meta.fields(), run_id=self.name, spec=spec))

    def record_metrics(self, meta: Meta, *, series: str | None, points: int,
                       summaries: dict[str, dict[str, Any]], complete: bool) -> None:
        """Record the latest metric summaries (skipped when nothing changed)."""
        self.check_exists()
        if (self.metrics is not None and self.metrics.points == points
                and self.metrics.complete == complete and self.metrics.series == series):
            return
        self.trigger(MetricsRecorded(**meta.fields(), run_id=self.name, series=series,
                                     points=points, summaries=summaries, complete=complete))

    def record_checkpoint(self, meta: Meta, *, name: str, step: int | None, sha256: str,
                          size: int, manifest: str, files: int, path: str) -> None:
        """Record a checkpoint the stage saved (skipped when this save is already recorded)."""
        self.check_exists()
        if self.checkpoints.get(_checkpoint_key(name, step), {}).get("sha256") == sha256:
            return
        self.trigger(CheckpointSaved(**meta.fields(), run_id=self.name, name=name, step=step,
                                     sha256=sha256, size=size, manifest=manifest, files=files,
                                     path=path))

    def resumable_checkpoints(self) -> list[dict[str, Any]]:
        """The latest recorded save of each (name, step), sorted by name then step (``latest``
        first): what a run started with ``resume_from`` this run is given."""
        return sorted((dict(record) for record in self.checkpoints.values()),
                      key=lambda r: (r["name"], -1 if r["step"] is None else r["step"]))

    def check_stoppable(self) -> None:
        """Only a launching or running run can be asked to stop (``Conflict`` otherwise)."""
        state = self.current
        if state in (State.LAUNCHING, State.RUNNING):
            return
        if lifecycle.settled(state):
            raise Conflict(f"run {self.name} already ended ({state})", code="run_ended",
                           hint="nothing to stop; finalize_run() it if it awaits a verdict")
        raise Conflict(f"run {self.name} is {state}: it has not started", code="run_not_running",
                       hint="cancel() a run that has not started; request_stop asks a running "
                       "stage to stop cleanly")

    def request_stop(self, meta: Meta, *, requested_by: str,
                     finding: dict[str, Any] | None = None) -> bool:
        """Ask the running stage to stop; False (nothing recorded) when a stop was already
        requested (the stage is already being asked)."""
        self.check_stoppable()
        if self.stop is not None:
            return False
        self.trigger(StopRequested(**meta.fields(), run_id=self.name,
                                   requested_by=requested_by,
                                   finding=finding))
        return True

    def record_findings(self, meta: Meta, *, phase: str, source: str,
                        findings: list[dict[str, Any]], omitted: int = 0) -> None:
        """Record findings made outside the pre-run review: nothing when there are none, or
        when these very findings are recorded already (an executor that restarts and checks
        the outputs again writes nothing twice)."""
        self.check_exists()
        if not findings:
            return
        event = FindingsRecorded(**meta.fields(), run_id=self.name, phase=phase,
                                 source=source, findings=findings, omitted=omitted)
        if _findings_digest(event) not in self.findings:
            self.trigger(event)

    def suggest_outcome(self, meta: Meta, *, outcome: str, evidence: list[str],
                        reviewers: list[str]) -> bool:
        """Record the post-run review's suggestion once (False: one is already recorded)."""
        self.check_exists()
        if self.suggestion is not None:
            return False
        self.trigger(OutcomeSuggested(**meta.fields(), run_id=self.name, outcome=outcome,
                                      evidence=evidence, reviewers=reviewers))
        return True

    def tag(self, meta: Meta, tag: str) -> None:
        """Tag the run."""
        request = self.check_exists()
        if tag not in self.tags:
            self.trigger(RunTagged(**meta.fields(), run_id=self.name,
                                   workspace=request.workspace, tag=tag))

    # --- folding -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The folded state as JSON values (a snapshot); events are kept whole."""
        return {
            "request": _event_dict(self.request), "state": self.state and self.state.value,
            "entered_at": self.entered_at.isoformat() if self.entered_at else None,
            "worker": self.worker, "pid": self.pid, "run_dir": self.run_dir,
            "launched_inputs": self.launched_inputs, "exit": _event_dict(self.exit),
            "metrics": _event_dict(self.metrics), "results_spec": self.results_spec,
            "finalized": _event_dict(self.finalized), "tags": sorted(self.tags),
            "lost_why": self.lost_why, "checkpoints": self.checkpoints,
            "stop": _event_dict(self.stop), "suggestion": _event_dict(self.suggestion),
            "review": _event_dict(self.review),
            "findings": sorted(self.findings),
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a snapshot's state."""
        self.request = _event_from(RunRequested, data["request"])
        self.state = State(data["state"]) if data["state"] else None
        self.entered_at = (datetime.fromisoformat(data["entered_at"]) if data["entered_at"]
                           else None)
        self.worker, self.pid, self.run_dir = data["worker"], data["pid"], data["run_dir"]
        self.launched_inputs = dict(data["launched_inputs"])
        self.exit = _event_from(RunExited, data["exit"])
        self.metrics = _event_from(MetricsRecorded, data["metrics"])
        self.results_spec = dict(data["results_spec"])
        self.finalized = _event_from(RunFinalized, data["finalized"])
        self.tags = set(data["tags"])
        self.lost_why = data["lost_why"]
        self.checkpoints = {k: dict(v) for k, v in data["checkpoints"].items()}
        # Stop requests and suggestions are absent from older snapshots (none then).
        self.stop = _event_from(StopRequested, data.get("stop"))
        self.suggestion = _event_from(OutcomeSuggested, data.get("suggestion"))
        # Snapshots taken before reviews were recorded hold none (none had been recorded).
        self.review = _event_from(ReviewCompleted, data.get("review"))
        self.findings = set(data.get("findings", []))  # none were recorded before they existed

    def apply(self, event: Event) -> None:
        """Fold one event of the run's stream: the state from ``lifecycle.state_after``, the
        rest of the run's facts here."""
        self.entered_at = event.at  # every event restarts the deadline clock
        self.state = lifecycle.state_after(self.state, event)
        if isinstance(event, RunRequested):
            self.request = event
            self.results_spec = dict(event.results_spec)
        elif isinstance(event, RunClaimed):
            self.worker = event.worker
        elif isinstance(event, RunLaunched):
            self.pid, self.run_dir = event.pid, event.run_dir
            self.worker, self.launched_inputs = event.worker, event.inputs
        elif isinstance(event, RunExited):
            self.exit = event
        elif isinstance(event, RunLost):
            self.lost_why = event.why
        elif isinstance(event, RunAdopted):
            self.pid, self.worker = event.pid, event.worker
        elif isinstance(event, RunFinalized):
            self.finalized = event
        elif isinstance(event, MetricsRecorded):
            self.metrics = event
        elif isinstance(event, ResultsSpecSaved):
            self.results_spec = dict(event.spec)
        elif isinstance(event, RunTagged):
            self.tags.add(event.tag)
        elif isinstance(event, CheckpointSaved):
            self.checkpoints[_checkpoint_key(event.name, event.step)] = {
                "name": event.name, "step": event.step, "sha256": event.sha256,
                "size": event.size, "manifest": event.manifest, "files": event.files}
        elif isinstance(event, StopRequested):
            self.stop = self.stop or event
        elif isinstance(event, OutcomeSuggested):
            self.suggestion = self.suggestion or event
        elif isinstance(event, ReviewCompleted):
            self.review = event
        elif isinstance(event, FindingsRecorded):
            self.findings.add(_findings_digest(event))
        # RunQueued, RunLaunchFailed, RunCanceled and RunHeartbeat only move the state or the
        # deadline clock.


def _findings_digest(event: FindingsRecorded) -> str:
    body = json.dumps([event.phase, event.source, event.findings, event.omitted],
                      sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _checkpoint_key(name: str, step: int | None) -> str:
    return f"{name}/{'latest' if step is None else step}"


E = TypeVar("E", bound=Event)


def _event_dict(event: Event | None) -> dict[str, Any] | None:
    return None if event is None else event.model_dump(mode="json")


def _event_from(cls: type[E], data: dict[str, Any] | None) -> E | None:
    return None if data is None else cls.model_validate(data)

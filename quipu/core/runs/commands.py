"""Commands on runs: what an agent asks for, and the facts executors and the supervisor report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quipu.core.messages import Command
from quipu.core.runs.lifecycle import State

__all__ = [
    "CancelRun",
    "FinalizePipelineRun",
    "FinalizeRun",
    "RecordAdopted",
    "RecordCheckpoint",
    "RecordClaim",
    "RecordDeadline",
    "RecordExit",
    "RecordFindings",
    "RecordHeartbeat",
    "RecordLaunch",
    "RecordLaunchFailure",
    "RecordLost",
    "RecordMetrics",
    "RecordReview",
    "RecordReviewStarted",
    "RequestStop",
    "SaveResultsSpec",
    "StartRun",
    "TagRun",
]


# --- the agent -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StartRun(Command):
    """Start (or with ``dry_run`` preview) stages of a workspace's pipeline."""

    workspace: str
    reason: str | Mapping[str, Any] | None
    results_spec: Mapping[str, Any] | None
    actor: str
    stages: list[str] | None = None
    config_override: Mapping[str, Any] | None = None
    inputs_override: Mapping[str, Any] | None = None
    experiment_group: str | None = None
    skip_review: bool = False
    dry_run: bool = False
    resume_from: str | None = None


@dataclass(frozen=True, kw_only=True)
class CancelRun(Command):
    """Cancel a run that has not ended."""

    run_id: str
    reason: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class RequestStop(Command):
    """Ask a running stage to stop cleanly (it sees ``should_stop()``)."""

    run_id: str
    reason: str
    actor: str
    requested_by: str = "agent"
    finding: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class FinalizeRun(Command):
    """Record what an ended run means (releases the workspace's gate)."""

    run_id: str
    results: Mapping[str, Any] | None
    actor: str


@dataclass(frozen=True, kw_only=True)
class FinalizePipelineRun(Command):
    """Record one verdict for a pipeline run (``run_id`` is any of its stage runs): on the stage
    that decides its results spec, closing its other ended stages."""

    run_id: str
    results: Mapping[str, Any] | None
    actor: str


@dataclass(frozen=True, kw_only=True)
class SaveResultsSpec(Command):
    """Replace a run's results spec before it is finalized."""

    run_id: str
    spec: Mapping[str, Any]
    actor: str


@dataclass(frozen=True, kw_only=True)
class TagRun(Command):
    """Tag a run (``best*`` marks the reference for comparisons)."""

    run_id: str
    tag: str
    reason: str
    actor: str


# --- executors and the supervisor -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RecordClaim(Command):
    """An executor claims a queued run (exactly one claimant wins)."""

    run_id: str
    worker: str


@dataclass(frozen=True, kw_only=True)
class RecordLaunch(Command):
    """The stage process started (``environment``: the facts of what it runs with, see
    ``RunLaunched``)."""

    run_id: str
    worker: str
    host: str
    pid: int
    run_dir: str
    inputs: dict[str, dict[str, Any]]
    environment: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class RecordHeartbeat(Command):
    """The stage is alive."""

    run_id: str
    worker: str
    message: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecordLaunchFailure(Command):
    """The stage process could not be started."""

    run_id: str
    worker: str
    error: str


@dataclass(frozen=True, kw_only=True)
class RecordExit(Command):
    """The stage process ended in ``state``."""

    run_id: str
    worker: str
    state: State
    exit_code: int | None
    signal: int | None = None
    outputs: dict[str, dict[str, Any]] | None = None
    logs: dict[str, Any] | None = None
    problems: list[str] | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class RecordLost(Command):
    """Silence past the deadline: the run is lost."""

    run_id: str
    actor: str
    why: str


@dataclass(frozen=True, kw_only=True)
class RecordAdopted(Command):
    """A lost run's process was found alive."""

    run_id: str
    worker: str
    pid: int


@dataclass(frozen=True, kw_only=True)
class RecordDeadline(Command):
    """A state's deadline passed with no news: apply the lifecycle table's deadline trigger."""

    run_id: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class RecordFindings(Command):
    """Findings about a run from a checker (see ``FindingsRecorded``)."""

    run_id: str
    actor: str
    phase: str
    source: str
    findings: list[dict[str, Any]]
    omitted: int = 0


@dataclass(frozen=True, kw_only=True)
class RecordCheckpoint(Command):
    """A checkpoint the stage saved, stored in the blob store (see ``CheckpointSaved``)."""

    run_id: str
    actor: str
    name: str
    step: int | None
    sha256: str
    size: int
    manifest: str
    files: int
    path: str


@dataclass(frozen=True, kw_only=True)
class RecordMetrics(Command):
    """The metric ingester's latest summaries."""

    run_id: str
    actor: str
    series: str | None
    points: int
    summaries: dict[str, dict[str, Any]]
    complete: bool


@dataclass(frozen=True, kw_only=True)
class RecordReviewStarted(Command):
    """A pre-run reviewer takes a requested run (exactly one reviewer wins)."""

    run_id: str
    actor: str
    reviewers: list[str]


@dataclass(frozen=True, kw_only=True)
class RecordReview(Command):
    """The pre-run review's decision (see ``ReviewCompleted``)."""

    run_id: str
    actor: str
    decision: str
    reviewers: list[str]
    findings: list[dict[str, Any]]
    fix: str | None = None
    omitted: int = 0
    resumed_from: str | None = None

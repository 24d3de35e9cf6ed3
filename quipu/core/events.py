"""Every domain event Quipu records.

Events are small frozen pydantic models with no behaviour. Each is registered under a stable
type name (never a module path) and a ``schema_version``. When an event's shape changes, its
``SCHEMA_VERSION`` goes up by one and an upcaster from the old version is registered next to it;
the stored log is never rewritten, old events are upcast when they are read.

Every event records who acted (``actor``), why (``reason``) and when (``at``, from the injected
clock).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CursorMoved",
    "Event",
    "FinalizationCleared",
    "FinalizationRequired",
    "MetricsRecorded",
    "PipelineRunStarted",
    "ProjectInitialized",
    "ResultsSpecSaved",
    "RunAdopted",
    "RunCanceled",
    "RunClaimed",
    "RunExited",
    "RunFinalized",
    "RunHeartbeat",
    "RunLaunchFailed",
    "RunLaunched",
    "RunLost",
    "RunQueued",
    "RunRequested",
    "RunTagged",
    "SlotClaimed",
    "SlotReleased",
    "SlotRolledBack",
    "ThoughtLogged",
    "VersionPruned",
    "VersionSaved",
    "VersionTagged",
    "VersionUnpruned",
    "VersionUntagged",
    "WorkspaceCreated",
    "WorkspaceDeleted",
    "WorkspaceHibernated",
    "WorkspaceMounted",
    "decode_event",
    "event_type",
    "known_types",
    "register",
    "upcaster",
]


class Event(BaseModel):
    """Base of every domain event: who acted, why, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    actor: str
    reason: str
    at: datetime


E = TypeVar("E", bound=type[Event])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_TYPES: dict[str, type[Event]] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register(name: str, *, schema_version: int = 1) -> Callable[[E], E]:
    """Register an event class under a stable type name and its current schema version."""

    def decorate(cls: E) -> E:
        if name in _TYPES:
            raise ValueError(f"event type {name!r} is registered twice")
        cls.TYPE = name
        cls.SCHEMA_VERSION = schema_version
        _TYPES[name] = cls
        return cls

    return decorate


def upcaster(name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns version ``from_version`` of an event into the next one."""

    def decorate(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(name, from_version)] = fn
        return fn

    return decorate


def event_type(name: str) -> type[Event]:
    """The class registered under ``name``; ``KeyError`` if there is none."""
    return _TYPES[name]


def known_types() -> frozenset[str]:
    """All registered event type names."""
    return frozenset(_TYPES)


def decode_event(name: str, schema_version: int, data: dict[str, Any]) -> Event:
    """Build the current model of an event stored at ``schema_version``, upcasting as needed."""
    cls = _TYPES[name]
    version = schema_version
    while version < cls.SCHEMA_VERSION:
        data = _UPCASTERS[(name, version)](data)
        version += 1
    return cls.model_validate(data)


# --- project -----------------------------------------------------------------------------------


@register("ProjectInitialized")
class ProjectInitialized(Event):
    """A project was set up; its name and research goal head STATE.md."""

    name: str
    goal: str


# --- workspaces and slots ----------------------------------------------------------------------


@register("WorkspaceCreated")
class WorkspaceCreated(Event):
    """A workspace came into being, empty or forked from another workspace's version."""

    workspace: str
    goal: str
    forked_from: str | None = None
    from_version: int | None = None


@register("WorkspaceMounted")
class WorkspaceMounted(Event):
    """A workspace's version was copied into a slot for editing."""

    workspace: str
    slot: str
    version: int | None


@register("WorkspaceHibernated")
class WorkspaceHibernated(Event):
    """A workspace left its slot; its edits were saved first (see ``saved_version``)."""

    workspace: str
    slot: str
    saved_version: int | None


@register("SlotClaimed")
class SlotClaimed(Event):
    """The slot's own record that a workspace now occupies it (pairs with WorkspaceMounted)."""

    slot: str
    workspace: str


@register("SlotReleased")
class SlotReleased(Event):
    """The slot's own record that it is free again (pairs with WorkspaceHibernated)."""

    slot: str
    workspace: str


@register("WorkspaceDeleted")
class WorkspaceDeleted(Event):
    """A workspace was retired; its versions stay in the log and the blob store."""

    workspace: str


# --- versions ----------------------------------------------------------------------------------


@register("VersionSaved")
class VersionSaved(Event):
    """A content-addressed snapshot of a workspace's files became version ``number``."""

    workspace: str
    number: int
    manifest: str
    parent: int | None
    file_count: int
    total_bytes: int
    message: str
    trigger: str = "save"


@register("VersionTagged")
class VersionTagged(Event):
    """A tag now names a version and protects it from pruning."""

    workspace: str
    number: int
    tag: str


@register("VersionUntagged")
class VersionUntagged(Event):
    """A tag was removed from a version."""

    workspace: str
    number: int
    tag: str


@register("VersionPruned")
class VersionPruned(Event):
    """A version was hidden from listings; pruning is soft and undone by unprune."""

    workspace: str
    number: int


@register("VersionUnpruned")
class VersionUnpruned(Event):
    """A pruned version was brought back."""

    workspace: str
    number: int


@register("SlotRolledBack")
class SlotRolledBack(Event):
    """A slot's files were replaced by a version's tree."""

    workspace: str
    slot: str
    number: int
    files_changed: int


# --- thoughts ----------------------------------------------------------------------------------


@register("ThoughtLogged", schema_version=2)
class ThoughtLogged(Event):
    """An agent wrote down what it was thinking, optionally about a workspace or run."""

    thought: str
    workspace: str | None = None
    run_id: str | None = None


@upcaster("ThoughtLogged", from_version=1)
def _thought_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # v1 called the text "text" and could only attach a thought to a workspace.
    new = dict(data)
    new["thought"] = new.pop("text")
    new.setdefault("run_id", None)
    return new


# --- runs ----------------------------------------------------------------------------------------
# Run events live on the run's own stream; the three "Pipeline/Finalization" events live on the
# workspace's stream, because the finalization gate is the workspace's invariant.


@register("PipelineRunStarted")
class PipelineRunStarted(Event):
    """The agent started stages of a workspace's pipeline on one saved version (workspace stream).

    ``detail`` is the structured reason: description, hypothesis, approach, min_result, goal.
    """

    workspace: str
    pipeline_run_id: str
    version: int
    stages: list[str]
    runs: dict[str, str]
    detail: dict[str, str]
    experiment_group: str | None = None


@register("FinalizationRequired")
class FinalizationRequired(Event):
    """A run of the workspace ended and holds the finalization gate (workspace stream)."""

    workspace: str
    run_id: str
    stage: str
    state: str


@register("FinalizationCleared")
class FinalizationCleared(Event):
    """A run no longer holds the gate: it was finalized, or adopted back to running."""

    workspace: str
    run_id: str
    why: str


@register("RunRequested")
class RunRequested(Event):
    """One stage execution was asked for, bound to a version, a config and its inputs.

    ``inputs`` maps each input to how it was resolved: ``{"kind": "upstream", "run_id", "signal"}``
    (a stage of the same pipeline run, fixed when it launches), ``{"kind": "run", ...}`` (an
    earlier run's output), ``{"kind": "source", "name"}`` or ``{"kind": "path", "path"}``;
    ``via`` says which rule chose it.
    """

    run_id: str
    pipeline_run_id: str
    workspace: str
    stage: str
    version: int
    manifest: str
    entrypoint: str
    config: dict[str, Any]
    config_hash: str
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    depends_on: list[str]
    results_spec: dict[str, Any]
    detail: dict[str, str]
    experiment_group: str | None = None
    skip_review: bool = False


@register("RunQueued")
class RunQueued(Event):
    """The run may execute (review approved, skipped, or timed out open)."""

    run_id: str
    review: str


@register("RunClaimed")
class RunClaimed(Event):
    """An executor took the run (optimistic concurrency makes exactly one win)."""

    run_id: str
    worker: str


@register("RunLaunched")
class RunLaunched(Event):
    """The stage process started; ``inputs`` are the exact bytes it was given (sha256, size)."""

    run_id: str
    worker: str
    host: str
    pid: int
    run_dir: str
    inputs: dict[str, dict[str, Any]]


@register("RunHeartbeat")
class RunHeartbeat(Event):
    """The executor saw the run alive (throttled; silence past the deadline means lost)."""

    run_id: str
    message: str | None = None


@register("RunLaunchFailed")
class RunLaunchFailed(Event):
    """The stage could not be started."""

    run_id: str
    error: str


@register("RunExited")
class RunExited(Event):
    """The stage process ended; ``state`` is succeeded, failed, crashed or stopped.

    ``outputs`` maps each output to {sha256, size, kind, stats}; ``logs`` is the captured output
    {sha256, size, truncated}; ``problems`` says why an exit-0 run still failed (missing or empty
    declared outputs, writes outside ``outputs/``).
    """

    run_id: str
    state: str
    exit_code: int | None
    signal: int | None = None
    outputs: dict[str, dict[str, Any]] = {}
    logs: dict[str, Any] | None = None
    problems: list[str] = []


@register("RunLost")
class RunLost(Event):
    """The engine stopped hearing from the run (no heartbeat, or no process after a restart)."""

    run_id: str
    why: str


@register("RunAdopted")
class RunAdopted(Event):
    """A run thought lost was found alive and is watched again."""

    run_id: str
    worker: str
    pid: int


@register("RunCanceled")
class RunCanceled(Event):
    """The run was canceled (by the agent, or by a deadline before it ran)."""

    run_id: str


@register("MetricsRecorded")
class MetricsRecorded(Event):
    """A run's metric series so far: a Parquet blob plus per-metric summaries.

    ``summaries`` maps name -> {min, max, last, count, trend, last_step}; ``complete`` is true
    for the final ingestion after the run ended.
    """

    run_id: str
    series: str | None
    points: int
    summaries: dict[str, dict[str, Any]]
    complete: bool


@register("RunFinalized")
class RunFinalized(Event):
    """The agent said what the run means (``results`` is None for a run with nothing to judge)."""

    run_id: str
    workspace: str
    stage: str
    ml_outcome: str
    results: dict[str, Any] | None
    results_auto: dict[str, Any]
    comparison: dict[str, Any] | None


@register("ResultsSpecSaved")
class ResultsSpecSaved(Event):
    """A run's results_spec was replaced (before finalization)."""

    run_id: str
    spec: dict[str, Any]


@register("RunTagged")
class RunTagged(Event):
    """A run was tagged (``best*`` tags mark the reference for comparisons)."""

    run_id: str
    workspace: str
    tag: str


# --- readers -----------------------------------------------------------------------------------


@register("CursorMoved")
class CursorMoved(Event):
    """A reader (an agent, a person's terminal) has seen everything up to ``position``.

    Reading never changes state, so "new since you last looked" needs this explicit event: the
    dashboard shows what is newer than the consumer's latest cursor.
    """

    consumer: str
    position: int

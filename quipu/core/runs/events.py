"""Run events: each lives on the run's own stream."""

from __future__ import annotations

from typing import Any

from quipu.core.messages import Event, register, upcaster

__all__ = [
    "CheckpointSaved",
    "MetricsRecorded",
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
]


# --- runs ---------------------------------------------------------------------------------------


@register("RunRequested", schema_version=2)
class RunRequested(Event):
    """One stage execution was asked for, bound to a version, a config and its inputs.

    ``inputs`` maps each input to how it was resolved: ``{"kind": "upstream", "run_id", "signal"}``
    (a stage of the same pipeline run, fixed when it launches), ``{"kind": "run", ...}`` (an
    earlier run's output), ``{"kind": "source", "name"}``, ``{"kind": "path", "path"}`` or
    ``{"kind": "blob", "source", "uri", "sha256", "size", "generation", ...}`` (a ``gs://``
    source's object, staged into the blob store when the run was requested);
    ``via`` says which rule chose it. ``siblings`` maps every stage of the same pipeline run to
    its run id, so a run that does not succeed finds what waits on it without reading its
    workspace's whole stream (v2; a v1 event has none and falls back to that stream).

    ``resume_from`` (added later with a default: older events have None) is set on the stage
    run started with ``run(..., resume_from=RUN_ID)``: the source run and the checkpoints it
    had recorded when this run was requested, fixed here so the resumed run is reproducible
    and its lineage names exact content::

        {"run_id": "stage-...", "stage": "train",
         "checkpoints": [{"name", "step", "sha256", "size", "manifest", "files"}, ...]}

    ``checkpoints`` holds the latest save of each (name, step), sorted by name then step.
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
    siblings: dict[str, str] = {}
    resume_from: dict[str, Any] | None = None


@upcaster("RunRequested", from_version=1)
def _run_requested_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # v1 did not name the other stages of its pipeline run; an empty map means "unknown".
    return {**data, "siblings": {}}


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
    """The stage process started; ``inputs`` are the exact bytes it was given (sha256, size).

    ``environment`` (added later with a default: older events have None) holds the facts of
    what the stage ran with, each small; never a variable's value::

        {"python": "3.11.9", "implementation": "cpython", "executable": "/usr/bin/python3",
         "os": "Linux-6.8.0-x86_64-with-glibc2.36", "machine": "x86_64", "cpu_count": 8,
         "gpu": [{"name": str, "driver": str, "memory": "40960 MiB"}] | None,
         "env_names": ["HOME", "LANG", "PATH", ...],
         "packages": {"count": 42, "sha256": "<blob: sorted 'name==version' lines>"}}

    ``gpu`` is None without a working ``nvidia-smi``; ``env_names`` are the sorted names of the
    relevant variables the stage process was given (see docs/executor.md). When the interpreter
    could not be probed, ``python``, ``implementation``, ``os``, ``machine``, ``cpu_count`` and
    ``packages`` are absent and ``error`` says why.
    """

    run_id: str
    worker: str
    host: str
    pid: int
    run_dir: str
    inputs: dict[str, dict[str, Any]]
    environment: dict[str, Any] | None = None


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
    declared outputs, writes outside ``outputs/``); ``error`` is the exception that ended the
    stage, as the last line of its traceback (``"ValueError: bad shape"``), when it raised
    (added later with a default: older events have None).
    """

    run_id: str
    state: str
    exit_code: int | None
    signal: int | None = None
    outputs: dict[str, dict[str, Any]] = {}
    logs: dict[str, Any] | None = None
    problems: list[str] = []
    error: str | None = None


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

    ``summaries`` maps name -> {min, max, last, count, trend, last_step}, plus ``non_finite``
    {count, kind, first_step, first_index, last_finite} for a metric that logged NaN or infinite
    points (then ``last`` is None when the latest point is one, and ``min``/``max`` are over the
    finite points); ``complete`` is true for the final ingestion after the run ended.
    """

    run_id: str
    series: str | None
    points: int
    summaries: dict[str, dict[str, Any]]
    complete: bool


@register("CheckpointSaved")
class CheckpointSaved(Event):
    """The stage saved a checkpoint (``sdk.save_checkpoint``) and its directory is stored.

    ``step`` is None for a ``latest`` checkpoint (each save replaces the last); ``sha256`` and
    ``size`` are the SDK's directory hash and byte count (the same as in the run directory's
    ``checkpoints.jsonl``); ``manifest`` is the blob of the directory's manifest, from which
    the tree is restored; ``files`` counts its files; ``path`` is where it lay in the run
    directory (``.quipu/checkpoints/<name>/step_<N>``).
    """

    run_id: str
    name: str
    step: int | None
    sha256: str
    size: int
    manifest: str
    files: int
    path: str


@register("RunFinalized", schema_version=2)
class RunFinalized(Event):
    """The agent said what the run means (``results`` is None for a run with nothing to judge).

    ``closed_by`` (v2) names the stage run whose verdict closed this one: one ``finalize_run``
    of a pipeline run records the verdict on the stage that decides its results spec and closes
    its other ended stages with it, in one transaction. A closed stage has no verdict of its own:
    its ``ml_outcome`` is the experiment's (the deciding stage's), its ``results`` and
    ``comparison`` are None. None for a verdict on the run itself (every v1 event).
    """

    run_id: str
    workspace: str
    stage: str
    ml_outcome: str
    results: dict[str, Any] | None
    results_auto: dict[str, Any]
    comparison: dict[str, Any] | None
    closed_by: str | None = None


@upcaster("RunFinalized", from_version=1)
def _run_finalized_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # Every v1 verdict was given on the run itself.
    return {**data, "closed_by": None}


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

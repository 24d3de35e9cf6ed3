"""The run tools: start, watch, stop and interpret runs, and read the history they leave.

Like the workspace tools, each one parses its arguments, calls one ``Quipu`` method (of
``engine.q``, read inside each call) and returns its dict; refusals are tool errors
(``_errors.guarded``). An agent learns the run workflow (results_spec, the finalization gate,
finalize_run) from the run tool's description, so it keeps the gate rule and one example of a
results_spec; everything else is kept short (the descriptions have a size budget).

No ``from __future__ import annotations``: fastmcp reads these signatures at runtime.
"""

import asyncio
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastmcp import FastMCP
from pydantic import BaseModel, ConfigDict, Field

from quipu.core.runs.lifecycle import gate_rule
from quipu.mcp._errors import READ_ONLY, WRITE, guarded
from quipu.mcp.workspaces import wording

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["RUN_TOOL_NAMES", "RunReason", "register_run_tools", "run_description"]

WAIT_POLL_SECONDS = 0.2

RUN_TOOL_NAMES = (
    "run", "validate_config", "inspect_run", "logs", "cancel", "request_stop", "finalize_run",
    "list_history",
    "inspect_record", "tag_record", "list_unfinalized_runs", "get_experiment_context",
    "get_metric_history", "save_results_spec", "dashboard", "mark_seen",
    "get_run_svs_findings",
)


RESULTS_SPEC_DOC = (
    "Required unless dry_run: what the run must show, declared up front. primary_metric (as "
    "logged with log_metric), direction (maximize|minimize), min_value (least worth keeping), "
    "goal_value, dataset_split (train|val|test|other), tolerance (>= 0: run-to-run noise; "
    "worse than the best by more is a regression), context (>= 15 chars: what the numbers "
    "mean). Optional: secondary_metrics, baseline_run, failure_threshold, known_caveats. "
    'E.g. {"primary_metric": "val_accuracy", "direction": "maximize", "min_value": 0.8, '
    '"goal_value": 0.9, "dataset_split": "val", "tolerance": 0.01, "context": "val accuracy; '
    'the baseline reaches 0.78"}'
)

RESULTS_DOC = (
    "For a run that logged the spec's primary metric: {primary_metric, direction, "
    "dataset_split (as in its results_spec), value, ml_outcome (success|partial|miss|unknown), "
    "notes (>= 15 chars)}; optional unit, step, epoch, secondary {metric: value}. For a run "
    "with no value to judge (failed, canceled, a stage not logging the metric): {ml_outcome, "
    "notes}. list_unfinalized_runs gives each run's finalize_args."
)


def run_description() -> str:
    """The run tool's description, with the finalization gate read from the lifecycle table."""
    return (
        "Start stages of a workspace's pipeline (pipeline.yaml) as recorded runs: never run "
        "training code by hand. From a slot, unsaved edits are saved as a version first. "
        "validate_config() (or dry_run=true) after editing the pipeline: every problem at "
        "once, no results_spec needed.\n\n"
        f"Finalization gate: {gate_rule()} Until then run() is refused with "
        "finalization_required; finalize_run each run list_unfinalized_runs shows.\n\n"
        "Returns {pipeline_run_id, workspace, version, stages_queued, queued [{stage, "
        "stage_run_id}], warnings, position}; follow with inspect_run and logs. wait=true "
        "(short runs) adds stage_runs [{stage_run_id, state, infra_outcome}]."
    )


class RunReason(BaseModel):
    """A structured reason for a run."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(description="What and why (at most 500 characters).")
    hypothesis: str | None = None
    approach: str | None = None
    min_result: str | None = None
    goal: str | None = None


def register_run_tools(mcp: FastMCP, engine: "Engine") -> None:
    """Add the run tools to ``mcp``, driving ``engine``'s project."""
    slots, n = wording(engine)

    Target = Annotated[str, Field(description=f"Workspace name, or a slot ({slots}).")]
    RunId = Annotated[str, Field(description="Stage run id, 'stage-...'.")]
    Limit = Annotated[int, Field(ge=1, le=500)]
    Offset = Annotated[int, Field(ge=0)]
    Reason = Annotated[str, Field(description=f"Why, at least {n} characters.")]
    AsForRun = Field(description="As for run().")

    def _states(ids: list[str]) -> dict[str, Any]:
        done, states = engine.q.run_states(ids)
        return {"done": done, "states": states}

    # --- start ---------------------------------------------------------------------------------

    @mcp.tool(annotations=WRITE, description=run_description())
    async def run(
        workspace: Target,
        reason: Annotated[str | RunReason, Field(description=f"A sentence (>= {n} chars), or "
                          "{description, hypothesis, approach, min_result, goal}.")],
        results_spec: Annotated[dict[str, Any] | None,
                                Field(description=RESULTS_SPEC_DOC)] = None,
        stages: Annotated[list[str] | None, Field(description="Stage names (default: all). An "
                          "input from a stage not run reads its newest succeeded run.")] = None,
        config_override: Annotated[dict[str, Any] | None, Field(description="{key: value} for "
                                   "one stage, {stage: {key: value}} for several.")] = None,
        inputs_override: Annotated[dict[str, Any] | None, Field(description="{input: "
                                   "'stage-...' | {run_id, signal} | '/absolute/path'}, keyed by "
                                   "stage when several run.")] = None,
        experiment_group: Annotated[str | None, Field(description="Groups related runs (e.g. "
                                    "'lr-sweep').")] = None,
        wait: bool = False,
        skip_review: bool = False,
        dry_run: Annotated[bool, Field(description="Validate and preview only; records "
                           "nothing.")] = False,
        resume_from: Annotated[str | None, Field(description="Run id whose checkpoints the "
                               "same-named stage gets.")] = None,
    ) -> dict[str, Any]:
        detail: str | dict[str, Any] = (reason.model_dump(exclude_none=True)
                                        if isinstance(reason, RunReason) else reason)
        result = guarded("run", lambda: engine.q.run(
            workspace, reason=detail, results_spec=results_spec, stages=stages,
            config_override=config_override, inputs_override=inputs_override,
            experiment_group=experiment_group, wait=False, skip_review=skip_review,
            dry_run=dry_run, resume_from=resume_from))
        if wait and not dry_run:
            # Wait on the event loop, not in the facade: other tool calls (inspect_run, logs,
            # cancel) keep being answered while the stages run.
            ids = [item["stage_run_id"] for item in result["queued"]]
            while True:
                now = guarded("run", lambda: _states(ids))
                if now["done"]:
                    break
                await asyncio.sleep(WAIT_POLL_SECONDS)
            engine.q.refresh()
            result["stage_runs"] = now["states"]
        return result

    @mcp.tool(annotations=READ_ONLY)
    async def validate_config(
        workspace: Target,
        stages: Annotated[list[str] | None, AsForRun] = None,
        config_override: Annotated[dict[str, Any] | None, AsForRun] = None,
        inputs_override: Annotated[dict[str, Any] | None, AsForRun] = None,
    ) -> dict[str, Any]:
        """Check pipeline.yaml and configs/*.yaml as run() with these arguments would, saving
        nothing (a slot's unsaved edits are read). Returns {valid, errors, warnings,
        stages_to_run, inputs, configs}; each problem {code, where, file, line, message, hint}.
        """
        return guarded("validate_config", lambda: engine.q.validate_config(
            workspace, stages=stages, config_override=config_override,
            inputs_override=inputs_override))

    # --- watch and stop ------------------------------------------------------------------------

    @mcp.tool(annotations=READ_ONLY)
    async def inspect_run(
        run_id: RunId,
        include: Annotated[list[Literal["dashboard", "provenance", "metrics", "events",
                                        "environment", "svs"]] | None,
                           Field(description="Sections besides state and results (default: "
                                 "dashboard, provenance, metrics); provenance includes the "
                                 "whole upstream closure; environment lists packages.")] = None,
        packages_offset: Annotated[int, Field(ge=0)] = 0,
    ) -> dict[str, Any]:
        """One stage run: state, progress, metrics, outcome, provenance (version, config,
        inputs, outputs): to follow a run or see why it failed."""
        return guarded("inspect_run", lambda: engine.q.inspect_run(
            run_id, include=include, packages_offset=packages_offset))

    @mcp.tool(annotations=READ_ONLY)
    async def logs(
        run_id: RunId,
        tail: Annotated[int, Field(ge=1, le=10000)] = 200,
        since: Annotated[int | None, Field(ge=0, description="The 'next' cursor of a previous "
                         "call: only newer lines.")] = None,
        runtime_since: Annotated[int | None, Field(ge=0, description="With since: the "
                                 "'runtime_next' cursor, for newer runtime_log lines.")] = None,
        follow: Annotated[bool, Field(description="With since: wait for new lines or the "
                          "end.")] = False,
        follow_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0,
    ) -> dict[str, Any]:
        """The stage's output (stdout, stderr, runtime_log), to watch a run or find an error.
        Pass 'next' and 'runtime_next' back as since and runtime_since to follow it; 'ended'
        is true only once the run is over and every line was delivered."""
        def read(after: int | None, runtime_after: int | None) -> dict[str, Any]:
            return guarded("logs", lambda: engine.q.logs(run_id, tail=tail, since=after,
                                                         runtime_since=runtime_after))

        result = read(since, runtime_since)
        if follow:
            waited = 0.0
            while (not result["lines"] and not result["runtime_log"] and not result["ended"]
                   and waited < follow_seconds):
                await asyncio.sleep(WAIT_POLL_SECONDS)
                waited += WAIT_POLL_SECONDS
                result = read(result["next"],
                              result["runtime_next"] if runtime_since is not None else None)
        return result

    @mcp.tool(annotations={**WRITE, "destructiveHint": True})
    async def cancel(run_id: RunId, reason: Reason) -> dict[str, Any]:
        """Stop a run that has not ended (and the runs of its pipeline run waiting on it).
        A canceled run does not hold the finalization gate; canceling one twice is refused.
        Returns {run_id, previous_state, state, position}.
        """
        return guarded("cancel", lambda: engine.q.cancel(run_id, reason))

    @mcp.tool(annotations=WRITE)
    async def request_stop(run_id: RunId, reason: Reason) -> dict[str, Any]:
        """Ask a running stage to stop cleanly (it sees should_stop(); exit 0 -> stopped).
        A stage that ignores it keeps running: cancel() ends it."""
        return guarded("request_stop", lambda: engine.q.request_stop(run_id, reason))

    # --- interpret -----------------------------------------------------------------------------

    @mcp.tool(annotations=WRITE)
    async def finalize_run(
        record_or_run_id: Annotated[str, Field(description="A stage run id, a pipeline run "
                                    "id ('prun-...': one verdict for the experiment) or "
                                    "'@tag' (with workspace).")],
        results: Annotated[dict[str, Any], Field(description=RESULTS_DOC)],
        scope: Annotated[Literal["run", "pipeline"] | None, Field(
            description="'pipeline' (default for a prun- id): judge the deciding stage and "
            "close the other stages; 'run': this stage only.")] = None,
        workspace: Annotated[str | None, Field(description="The workspace of an @tag.")] = None,
    ) -> dict[str, Any]:
        """Record your verdict on an ended run (or a whole pipeline run) once you have looked
        at it: it releases the finalization gate and enters the history and comparisons.
        A prun- id judges the stage that logged the primary metric (else the last) and closes
        the other ended ones (closed; still running: still_open). Returns {run_id, stage,
        ml_outcome, results_auto, comparison: {vs_previous, vs_best, regression_alert,
        meets_min, meets_goal} (null without a value), position}.
        """
        return guarded("finalize_run", lambda: engine.q.finalize_run(
            record_or_run_id, results, workspace=workspace, scope=scope))

    @mcp.tool(annotations=WRITE)
    async def save_results_spec(
        run_id: RunId,
        spec: Annotated[dict[str, Any], Field(description="A results_spec, as for run().")],
    ) -> dict[str, Any]:
        """Replace a run's results_spec before it is finalized, when the declared metric or
        bars were wrong (say so in the notes). Returns {run_id, spec}."""
        return guarded("save_results_spec", lambda: engine.q.save_results_spec(run_id, spec))

    @mcp.tool(annotations=WRITE)
    async def tag_record(
        ref: RunId,
        tag: Annotated[str, Field(description="e.g. 'best-lr': a 'best*' tag makes the run "
                       "the one later runs of its stage are compared with.")],
        reason: Reason,
    ) -> dict[str, Any]:
        """Tag a run and the version it ran (one transaction); the version tag moves to this
        run's version if it named another. Returns {run_id, tag, version,
        version_tag_moved_from}.
        """
        return guarded("tag_record", lambda: engine.q.tag_record(ref, tag, reason))

    # --- history -------------------------------------------------------------------------------

    @mcp.tool(annotations=READ_ONLY)
    async def list_history(
        workspace: Target,
        stage: str | None = None,
        tagged: str | None = None,
        metric: Annotated[str | None, Field(description="Only runs with this primary metric "
                          "(needed by sort_by='metric').")] = None,
        min_value: float | None = None,
        experiment_group: str | None = None,
        sort_by: Annotated[Literal["created", "metric"], Field(description="'metric' lists "
                           "only runs with a value (the rest counted in without_value).")
                           ] = "created",
        desc: bool = True,
        finalized_only: bool = False,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """A workspace's runs with reasons, values and verdicts: what was tried, the best so
        far, a run to build on. Returns {records, total, has_more}."""
        return guarded("list_history", lambda: engine.q.list_history(
            workspace, stage=stage, tagged=tagged, metric=metric, min_value=min_value,
            experiment_group=experiment_group, sort_by=sort_by, desc=desc,
            finalized_only=finalized_only, limit=limit, offset=offset))

    @mcp.tool(annotations=READ_ONLY)
    async def inspect_record(
        ref: Annotated[str, Field(description="A stage run id or '@tag' (with "
                       "workspace).")],
        workspace: str | None = None,
    ) -> dict[str, Any]:
        """One run's full record: reason, version, config, results spec, results,
        comparison, tags (what list_history summarises)."""
        return guarded("inspect_record", lambda: engine.q.inspect_record(ref,
                                                                         workspace=workspace))

    @mcp.tool(annotations=READ_ONLY)
    async def list_unfinalized_runs(workspace: Target) -> dict[str, Any]:
        """The ended runs of a workspace awaiting finalize_run (they block run()), each with
        the finalize_run call it needs. At a session's start, or after finalization_required.
        """
        return guarded("list_unfinalized_runs",
                       lambda: engine.q.list_unfinalized_runs(workspace))

    @mcp.tool(annotations=READ_ONLY)
    async def get_experiment_context(workspace: Target) -> dict[str, Any]:
        """Where a workspace's experiments stand: current best, runs awaiting finalization,
        recent trend, regression alerts. Read it before deciding what to try next."""
        return guarded("get_experiment_context",
                       lambda: engine.q.get_experiment_context(workspace))

    @mcp.tool(annotations=READ_ONLY)
    async def get_metric_history(
        run_id: RunId,
        name: Annotated[str, Field(description="The metric, as logged with log_metric.")],
        max_points: Annotated[int, Field(ge=5, le=1000, description="Thin to at most this "
                              "many points (first, last, min, max kept).")] = 50,
        offset: Annotated[int | None, Field(ge=0, description="Page the raw points from "
                          "here instead.")] = None,
        limit: Annotated[int | None, Field(ge=1, le=1000)] = None,
    ) -> dict[str, Any]:
        """One metric's curve in one run: points (a NaN/inf point has value null and
        non_finite), count, downsampled; offset/limit page the raw points (next_offset)."""
        return guarded("get_metric_history", lambda: engine.q.get_metric_history(
            run_id, name, max_points=max_points, offset=offset, limit=limit))

    @mcp.tool(annotations=READ_ONLY)
    async def get_run_svs_findings(
        run_id: RunId,
        offset: Annotated[int, Field(ge=0)] = 0,
        limit: Annotated[int, Field(ge=1, le=50)] = 20,
    ) -> dict[str, Any]:
        """A run's findings: broken output contracts, suspicious output statistics, review
        and monitor findings; counts per severity."""
        return guarded("get_run_svs_findings", lambda: engine.q.get_run_svs_findings(
            run_id, limit=limit, offset=offset))

    # --- overview ------------------------------------------------------------------------------

    @mcp.tool(annotations=READ_ONLY)
    async def dashboard(
        consumer: Annotated[str | None, Field(description="Your name: splits alerts into new "
                            "(since your mark_seen) and seen.")] = None,
        section: Annotated[Literal["active", "pending", "outcomes", "failed", "best",
                                   "started", "ended", "finalized"] | None, Field(
            description="Page one list in full instead of the overview.")] = None,
        offset: Annotated[int, Field(ge=0)] = 0,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> dict[str, Any]:
        """The project at a glance, between runs: active runs, alerts, runs awaiting a
        verdict, recent outcomes, bests; 'more' gives the call that pages each cut list."""
        return guarded("dashboard", lambda: engine.q.dashboard(
            consumer=consumer, section=section, offset=offset, limit=limit))

    @mcp.tool(annotations=WRITE)
    async def mark_seen(
        consumer: str,
        position: Annotated[int, Field(ge=0, description="Dashboard's cursor_position.")],
    ) -> dict[str, Any]:
        """Move consumer's 'new since last seen' cursor to position, so the next
        dashboard(consumer) shows only what is new. Returns {consumer, position,
        event_position}."""
        return guarded("mark_seen", lambda: engine.q.mark_seen(consumer, position))

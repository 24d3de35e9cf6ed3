"""The run tools: start, watch, stop and interpret runs, and read the history they leave.

Like the workspace tools in ``server``, each one parses its arguments, calls one ``Quipu``
method and returns its dict; refusals are tool errors (``_errors.guarded``). They live in their
own module because their descriptions are long: an agent learns the run workflow (results_spec,
the finalization gate, finalize_run) from them.

No ``from __future__ import annotations``: fastmcp reads these signatures at runtime.
"""

import asyncio
import functools
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastmcp import FastMCP
from pydantic import BaseModel, ConfigDict, Field

from quipu.core.runs.lifecycle import gate_rule
from quipu.mcp._errors import READ_ONLY, WRITE, guarded

if TYPE_CHECKING:
    from quipu.app.facade import Quipu

__all__ = ["RUN_TOOL_NAMES", "RunReason", "register_run_tools", "run_description"]

WAIT_POLL_SECONDS = 0.2

RUN_TOOL_NAMES = (
    "run", "validate_config", "inspect_run", "logs", "cancel", "finalize_run", "list_history",
    "inspect_record", "tag_record", "list_unfinalized_runs", "get_experiment_context",
    "get_metric_history", "save_results_spec", "dashboard", "mark_seen",
)


RESULTS_SPEC_DOC = (
    "What the run must show, declared before it runs (required unless dry_run). Keys: "
    "primary_metric (the metric name the stage logs with log_metric, e.g. 'val_accuracy'), "
    "direction ('maximize' or 'minimize'), min_value (least result worth keeping), goal_value "
    "(at least as good as min_value), dataset_split ('train', 'val', 'test' or 'other'), "
    "tolerance (>= 0, run-to-run noise in metric units; worse than the best by more raises a "
    "regression alert), context (>= 15 characters: what the numbers mean, e.g. the baseline). "
    "Optional: secondary_metrics (list of names), baseline_run (a run id to compare with), "
    "failure_threshold (a plainly broken value, at least as bad as min_value), known_caveats "
    "(list of strings). Unknown keys are refused; every problem is listed at once. Example: "
    '{"primary_metric": "val_accuracy", "direction": "maximize", "min_value": 0.8, '
    '"goal_value": 0.9, "dataset_split": "val", "tolerance": 0.01, "context": "CIFAR-10 val '
    'accuracy; the baseline CNN reaches 0.78"}'
)

RESULTS_DOC = (
    "Your verdict on the run. For a run that logged the spec's primary metric: "
    "{primary_metric, direction, dataset_split (all three as in the run's results_spec), value "
    "(finite number), ml_outcome ('success', 'partial', 'miss' or 'unknown'), notes (>= 15 "
    "characters: what the run shows and why)}, optionally unit, step, epoch, secondary "
    "{metric: value} and termination {infra_outcome} (must match how the run ended). For a run "
    "with no value to judge (it failed, was canceled, or is a stage that does not log the "
    "primary metric, like preprocessing): {ml_outcome, notes} is enough."
)


def run_description() -> str:
    """The run tool's description, with the finalization gate read from the lifecycle table."""
    return (
        "Start stages of a workspace's pipeline (pipeline.yaml) as recorded runs.\n\n"
        "Use it whenever you want a result: never run training code by hand, or it is not "
        "recorded. Given a slot, unsaved edits are first saved as a version, so every run is "
        "bound to exact files, configs and inputs. Call validate_config(workspace) or "
        "run(..., dry_run=True) first when you changed pipeline.yaml or configs: it lists "
        "every problem at once and needs no results_spec. Declare results_spec up front: the "
        "metric that decides success and the bars it must reach.\n\n"
        f"Finalization gate: {gate_rule()} While an ended run awaits finalize_run, run() is "
        "refused with code finalization_required (the message names the pending runs); call "
        "finalize_run on each (list_unfinalized_runs shows them), then run again.\n\n"
        "By default it returns at once with {pipeline_run_id, workspace, version, "
        "stages_queued, queued [{stage, stage_run_id}], warnings, position}; follow progress "
        "with inspect_run and logs. wait=true blocks until every stage run has ended and adds "
        "stage_runs [{stage_run_id, state, infra_outcome}] (use it for short runs only). "
        "dry_run=true returns {valid, errors, warnings, stages_to_run, inputs, configs} and "
        "records nothing.\n\n"
        "Errors: results_spec_missing, invalid_results_spec, finalization_required, "
        "pipeline_invalid, no_pipeline, nothing_to_run, input_unresolved, source_unresolved, "
        "invalid_override, invalid_reason, reason_too_short, unknown_workspace, unknown_slot, "
        "slot_empty."
    )


class RunReason(BaseModel):
    """A structured reason for a run."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(description="What this run does and why, in one or two sentences "
                             "(the recorded reason; at most 500 characters).")
    hypothesis: str | None = Field(default=None, description="What you expect to happen and "
                                   "why.")
    approach: str | None = Field(default=None, description="How the run tests it: what "
                                 "changed compared with the previous run.")
    min_result: str | None = Field(default=None, description="The least result that would "
                                   "make this worthwhile.")
    goal: str | None = Field(default=None, description="The result you are hoping for.")


def register_run_tools(mcp: FastMCP, q: "Quipu") -> None:
    """Add the run tools to ``mcp``, driving the open project ``q``."""
    slots = ", ".join(q.config.slot_names())
    n = q.config.reason_min_length

    Target = Annotated[str, Field(description="A workspace name, or a slot it is mounted in "
                                  f"({slots}); from a slot, unsaved edits are saved first.")]
    Workspace = Annotated[str, Field(description="Workspace name (or a slot it is mounted "
                                     f"in: {slots}).")]
    RunId = Annotated[str, Field(description="A stage run id, 'stage-...' (from run(), "
                                 "list_history or list_unfinalized_runs).")]
    Limit = Annotated[int, Field(ge=1, le=500, description="How many records.")]
    Offset = Annotated[int, Field(ge=0, description="Skip this many (paging).")]
    Consumer = Annotated[str, Field(description="Who is reading, e.g. your agent's name: each "
                                    "consumer has its own 'new since last seen' cursor.")]
    Reason = Annotated[str, Field(description=f"Why, at least {n} characters (recorded "
                                  "forever).")]

    def _states(ids: list[str]) -> dict[str, Any]:
        done, states = q.run_states(ids)
        return {"done": done, "states": states}

    # --- start ---------------------------------------------------------------------------------

    @mcp.tool(annotations=WRITE, description=run_description())
    async def run(
        workspace: Target,
        reason: Annotated[str | RunReason, Field(description=f"Why you run it: a sentence of "
                          f"at least {n} characters, or {{description, hypothesis, approach, "
                          "min_result, goal}. Recorded forever with the run.")],
        results_spec: Annotated[dict[str, Any] | None,
                                Field(description=RESULTS_SPEC_DOC)] = None,
        stages: Annotated[list[str] | None, Field(description="Which stages to run, by name "
                          "(default: all, in graph order). An input from a stage not run "
                          "reads that stage's newest succeeded run.")] = None,
        config_override: Annotated[dict[str, Any] | None, Field(description="Config values "
                                   "that beat defaults and configs/<stage>.yaml. For one stage "
                                   "a flat {key: value}; for several, keyed by stage name "
                                   "{stage: {key: value}} (a flat override with several stages "
                                   "is refused: override_needs_stage_keys).")] = None,
        inputs_override: Annotated[dict[str, Any] | None, Field(description="Where inputs "
                                   "come from instead: {input: 'stage-...' | {run_id, signal} | "
                                   "'/absolute/path'}, keyed by stage name when several stages "
                                   "run.")] = None,
        experiment_group: Annotated[str | None, Field(description="A name grouping related "
                                    "runs (e.g. 'lr-sweep'); filter list_history by it.")] = None,
        wait: Annotated[bool, Field(description="Answer only when every stage run has ended "
                        "(other tool calls are still served meanwhile); for long runs prefer "
                        "inspect_run/logs.")] = False,
        skip_review: Annotated[bool, Field(description="Queue without the pre-run "
                               "review.")] = False,
        dry_run: Annotated[bool, Field(description="Validate and preview (stages, inputs, "
                           "configs) without recording anything.")] = False,
    ) -> dict[str, Any]:
        detail: str | dict[str, Any] = (reason.model_dump(exclude_none=True)
                                        if isinstance(reason, RunReason) else reason)
        result = guarded("run", lambda: q.run(
            workspace, reason=detail, results_spec=results_spec, stages=stages,
            config_override=config_override, inputs_override=inputs_override,
            experiment_group=experiment_group, wait=False, skip_review=skip_review,
            dry_run=dry_run))
        if wait and not dry_run:
            # Wait on the event loop, not in the facade: other tool calls (inspect_run, logs,
            # cancel) keep being answered while the stages run.
            ids = [item["stage_run_id"] for item in result["queued"]]
            while True:
                now = guarded("run", lambda: _states(ids))
                if now["done"]:
                    break
                await asyncio.sleep(WAIT_POLL_SECONDS)
            q.refresh()
            result["stage_runs"] = now["states"]
        return result

    @mcp.tool(annotations=READ_ONLY)
    async def validate_config(workspace: Target) -> dict[str, Any]:
        """Check a workspace's pipeline.yaml and configs/*.yaml without running anything.

        Use it after editing the pipeline or its configs, before run(). Reads the slot's
        current files when the workspace is mounted (unsaved edits included), else its current
        version. Every problem comes back at once, each with code, where, file, line, message
        and hint. Returns {valid, errors, warnings, stages_to_run, inputs, configs}.
        Errors: no_pipeline, unknown_workspace, unknown_slot, input_unresolved,
        source_unresolved.
        """
        return guarded("validate_config", lambda: q.validate_config(workspace))

    # --- watch and stop ------------------------------------------------------------------------

    @mcp.tool(annotations=READ_ONLY)
    async def inspect_run(
        run_id: RunId,
        include: Annotated[list[Literal["dashboard", "provenance", "metrics", "events"]] | None,
                           Field(description="Sections besides the run's state and results "
                           "(default: dashboard, provenance, metrics). dashboard: progress, "
                           "metric trends, log tail; provenance: version, config, inputs, "
                           "outputs, downstream runs, and upstream (the whole upstream "
                           "closure: versions with manifest digests, runs with config hashes, "
                           "inputs back to the runs that produced them); metrics: summaries "
                           "and the series; "
                           "events: the run's own log.")] = None,
    ) -> dict[str, Any]:
        """Everything about one stage run: state, progress, metrics, outcome, provenance.

        Use it to follow a run you started, to see why one failed (then read logs()), or to
        recall what an old run did. Never changes anything.
        Errors: unknown_run, invalid_include.
        """
        return guarded("inspect_run", lambda: q.inspect_run(run_id, include=include))

    @mcp.tool(annotations=READ_ONLY)
    async def logs(
        run_id: RunId,
        tail: Annotated[int, Field(ge=1, le=10000, description="The last N lines.")] = 200,
        since: Annotated[int | None, Field(ge=0, description="Only lines after this cursor "
                         "(the 'next' value of a previous call), to follow a running "
                         "stage.")] = None,
        follow: Annotated[bool, Field(description="Long-poll: if there is nothing new after "
                          "since yet, wait (up to follow_seconds) for new lines or the end of "
                          "the run before answering.")] = False,
        follow_seconds: Annotated[float, Field(gt=0, le=300, description="How long follow may "
                                  "wait.")] = 30.0,
    ) -> dict[str, Any]:
        """The stage process's output (stdout, stderr and runtime_log lines).

        Use it while a run is going to see progress, and after a failure to find the error.
        Pass the returned cursor back as since to get only new lines; with follow=True the call
        waits for them (other tools keep answering meanwhile). Never changes anything.
        Errors: unknown_run.
        """
        result = guarded("logs", lambda: q.logs(run_id, tail=tail, since=since))
        if follow:
            waited = 0.0
            while not result["lines"] and not result["ended"] and waited < follow_seconds:
                await asyncio.sleep(WAIT_POLL_SECONDS)
                waited += WAIT_POLL_SECONDS
                result = guarded("logs", functools.partial(q.logs, run_id, tail=tail,
                                                           since=result["next"]))
        return result

    @mcp.tool(annotations={**WRITE, "destructiveHint": True})
    async def cancel(
        run_id: RunId,
        reason: Annotated[str, Field(description=f"Why you stop it, at least {n} "
                          "characters.")],
    ) -> dict[str, Any]:
        """Cancel a run that has not ended: its process is stopped by its executor.

        Use it when a run is pointless (wrong config, a bug you already see in its logs).
        Runs of the same pipeline run that wait on it are canceled too. A canceled run does
        not hold the finalization gate. Returns {run_id, previous_state, state, position}.
        Errors: unknown_run, invalid_transition (it already ended), reason_too_short.
        """
        return guarded("cancel", lambda: q.cancel(run_id, reason))

    # --- interpret -----------------------------------------------------------------------------

    @mcp.tool(annotations=WRITE)
    async def finalize_run(
        record_or_run_id: Annotated[str, Field(description="The stage run id ('stage-...') "
                                    "to finalize.")],
        results: Annotated[dict[str, Any], Field(description=RESULTS_DOC)],
    ) -> dict[str, Any]:
        """Record what an ended run means: your verdict, the final value and notes.

        Do it for every run that ended, as soon as you have looked at it: it releases the
        finalization gate so the workspace can run again, and it is how results enter the
        history, STATE.md and later comparisons. Returns {run_id, stage, workspace,
        infra_outcome, ml_outcome, results_auto, comparison, position}; comparison (null for a
        run without a value) holds vs_previous, vs_best {run_id, value, delta, improved},
        regression_alert, meets_min and meets_goal.
        Errors: invalid_results (every problem listed), already_finalized, unknown_run,
        invalid_transition (it has not ended yet: wait or cancel it).
        """
        return guarded("finalize_run", lambda: q.finalize_run(record_or_run_id, results))

    @mcp.tool(annotations=WRITE)
    async def save_results_spec(
        run_id: RunId,
        spec: Annotated[dict[str, Any], Field(description=RESULTS_SPEC_DOC)],
    ) -> dict[str, Any]:
        """Replace a run's results_spec before it is finalized.

        Use it when you realise the declared metric or bars were wrong (say so in the notes
        when you finalize). Returns {run_id, spec}.
        Errors: invalid_results_spec, unknown_run, already_finalized.
        """
        return guarded("save_results_spec", lambda: q.save_results_spec(run_id, spec))

    @mcp.tool(annotations=WRITE)
    async def tag_record(
        ref: Annotated[str, Field(description="The run to tag: a stage run id "
                       "('stage-...').")],
        tag: Annotated[str, Field(description="The tag, e.g. 'best' or 'best-lr'. A tag "
                       "starting with 'best' makes the run the reference that later runs of "
                       "its stage are compared with.")],
        reason: Reason,
    ) -> dict[str, Any]:
        """Tag a run so you can find it again, or mark it as the best one to beat.

        Returns {run_id, tag}. Errors: unknown_run, invalid_name.
        """
        return guarded("tag_record", lambda: q.tag_record(ref, tag, reason))

    # --- history -------------------------------------------------------------------------------

    @mcp.tool(annotations=READ_ONLY)
    async def list_history(
        workspace: Workspace,
        stage: Annotated[str | None, Field(description="Only runs of this stage.")] = None,
        tagged: Annotated[str | None, Field(description="Only runs with this tag.")] = None,
        metric: Annotated[str | None, Field(description="Only runs whose primary metric is "
                          "this one (needed to sort by metric).")] = None,
        min_value: Annotated[float | None, Field(description="Only runs whose value is at "
                             "least this.")] = None,
        experiment_group: Annotated[str | None, Field(description="Only runs of this "
                                    "experiment group.")] = None,
        sort_by: Annotated[Literal["created", "metric"], Field(description="Order by when the "
                           "run was created or by its value.")] = "created",
        desc: Annotated[bool, Field(description="Newest (or highest) first.")] = True,
        finalized_only: Annotated[bool, Field(description="Only finalized runs.")] = False,
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """The runs of a workspace with their reasons, values and verdicts.

        Use it to see what has been tried, to find the best run so far, or to pick a run to
        compare with or build on. Returns {records, total, has_more}. Never changes anything.
        Errors: unknown_workspace.
        """
        return guarded("list_history", lambda: q.list_history(
            workspace, stage=stage, tagged=tagged, metric=metric, min_value=min_value,
            experiment_group=experiment_group, sort_by=sort_by, desc=desc,
            finalized_only=finalized_only, limit=limit, offset=offset))

    @mcp.tool(annotations=READ_ONLY)
    async def inspect_record(
        ref: Annotated[str, Field(description="A stage run id ('stage-...') or '@tag' (needs "
                       "workspace).")],
        workspace: Annotated[str | None, Field(description="The workspace a '@tag' belongs "
                             "to.")] = None,
    ) -> dict[str, Any]:
        """One run's record: reason, version, config, results spec, results, comparison, tags.

        Use it to read the full verdict of a finalized run (what list_history summarises).
        Never changes anything. Errors: unknown_run, unknown_tag, unknown_workspace.
        """
        return guarded("inspect_record", lambda: q.inspect_record(ref, workspace=workspace))

    @mcp.tool(annotations=READ_ONLY)
    async def list_unfinalized_runs(workspace: Workspace) -> dict[str, Any]:
        """The runs of a workspace that ended and still await finalize_run.

        Call it when run() is refused with finalization_required, or at the start of a
        session. Every run listed as holding the gate blocks new runs until you finalize it.
        Never changes anything. Errors: unknown_workspace.
        """
        return guarded("list_unfinalized_runs", lambda: q.list_unfinalized_runs(workspace))

    @mcp.tool(annotations=READ_ONLY)
    async def get_experiment_context(workspace: Workspace) -> dict[str, Any]:
        """Where a workspace's experiments stand: best result, runs awaiting finalization,
        the recent trend and regression alerts.

        Call it before deciding what to try next in a workspace. Never changes anything.
        Errors: unknown_workspace.
        """
        return guarded("get_experiment_context", lambda: q.get_experiment_context(workspace))

    @mcp.tool(annotations=READ_ONLY)
    async def get_metric_history(
        run_id: RunId,
        name: Annotated[str, Field(description="The metric name, as logged with "
                        "log_metric.")],
    ) -> dict[str, Any]:
        """Every logged point of one metric of one run, to see its curve (not just its last
        value). Never changes anything. Errors: unknown_run, unknown_metric.
        """
        return guarded("get_metric_history", lambda: q.get_metric_history(run_id, name))

    # --- overview ------------------------------------------------------------------------------

    @mcp.tool(annotations=READ_ONLY)
    async def dashboard(
        consumer: Annotated[str | None, Field(description="Who is reading; with it, alerts "
                            "are split into new (since your last mark_seen) and "
                            "seen.")] = None,
    ) -> dict[str, Any]:
        """The whole project at a glance: runs going on, alerts (failures, regressions),
        runs awaiting finalization per workspace, mounted workspaces and recent outcomes.

        Call it at the start of a session and between runs. Reading changes nothing: call
        mark_seen(consumer, position) to move your 'new since last seen' cursor.
        """
        return guarded("dashboard", lambda: q.dashboard(consumer=consumer))

    @mcp.tool(annotations=WRITE)
    async def mark_seen(
        consumer: Consumer,
        position: Annotated[int, Field(ge=0, description="The log position you have seen up "
                            "to (dashboard's position).")],
    ) -> dict[str, Any]:
        """Record that ``consumer`` has seen everything up to ``position``, so the next
        dashboard(consumer) shows only what is new. Errors: invalid_position.
        """
        return guarded("mark_seen", lambda: q.mark_seen(consumer, position))

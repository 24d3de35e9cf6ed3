"""`quipu run ...` and `quipu dashboard`: runs, for people."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from quipu.cli._root import _edge, _json_arg, _json_option, _print_json, _project, _show, main

__all__ = ["dashboard", "run_group"]


@main.group("run")
def run_group() -> None:
    """Start, watch, cancel and finalize runs of a workspace's pipeline.

    Runs are executed by the workers of a running `quipu serve` (the MCP server an agent
    starts); these commands record requests and verdicts in the same log.

    \b
    Example:
      quipu run start w1 --reason "try a wider first layer" --spec spec.json --wait
    """


@run_group.command("start")
@click.argument("workspace")
@click.option("--reason", required=True, help="Why you run it (>= 15 characters).")
@click.option("--spec", "spec", default=None,
              help="results_spec as inline JSON or a JSON/YAML file (see docs/results.md); "
              "required unless --dry-run.")
@click.option("--stage", "stages", multiple=True, help="Run only this stage (repeatable).")
@click.option("--config", "config", default=None,
              help="Config override as JSON: flat for one stage, {stage: {...}} for several.")
@click.option("--inputs", "inputs", default=None, help="Inputs override as JSON.")
@click.option("--group", "group", default=None, help="Experiment group name.")
@click.option("--wait", is_flag=True,
              help="Execute the stages in this process (as well as any running serve/worker) "
              "and block until every stage run has ended.")
@click.option("--timeout", default=3600.0, show_default=True,
              help="With --wait: give up waiting after this many seconds.")
@click.option("--dry-run", is_flag=True, help="Validate and preview; record nothing.")
@click.option("--resume-from", "resume_from", default=None, metavar="RUN_ID",
              help="Give the stage of the same name this run's recorded checkpoints "
              "(sdk.load_checkpoint falls back to them).")
@_json_option
@click.pass_context
@_edge
def run_start(ctx: click.Context, workspace: str, reason: str, spec: str | None,
              stages: tuple[str, ...], config: str | None, inputs: str | None,
              group: str | None, wait: bool, timeout: float, dry_run: bool,
              resume_from: str | None, as_json: bool) -> None:
    """Start stages of WORKSPACE's pipeline (a workspace, or the slot it is mounted in).

    From a slot, unsaved edits are saved as a version first. Refused with
    finalization_required while an ended run of the workspace is not finalized.

    \b
    Example:
      quipu run start w1 --reason "lr 0.01 instead of 0.1" \\
          --spec '{"primary_metric": "accuracy", "direction": "maximize", "min_value": 0.8,
                   "goal_value": 0.9, "dataset_split": "val", "tolerance": 0.01,
                   "context": "digits val accuracy; the baseline reaches 0.85"}' \\
          --config '{"train": {"lr": 0.01}}' --wait
      quipu run start w1 --reason "check the new pipeline" --dry-run
      quipu run start w1 --stage train --reason "continue training from step 40" \
          --spec spec.json --resume-from stage-3f2a9c1d0e4b
    """
    with _project(ctx) as q:
        if wait and not dry_run:
            # Execute here too: claims are exclusive, so a running `quipu serve` or
            # `quipu worker` on the same project never runs a stage twice with this one.
            q.start_workers()
        result = q.run(
            workspace, reason=reason,
            results_spec=_json_arg(spec, "--spec") if spec is not None else None,
            stages=list(stages) or None,
            config_override=_json_arg(config, "--config") if config is not None else None,
            inputs_override=_json_arg(inputs, "--inputs") if inputs is not None else None,
            experiment_group=group, wait=wait, dry_run=dry_run, wait_timeout=timeout,
            resume_from=resume_from)
    if as_json:
        _print_json(result)
        return
    resumed = result.get("resume_from")
    if resumed:
        click.echo(f"{resumed['stage']} resumes from {resumed['run_id']}: "
                   f"{resumed['checkpoint_count']} checkpoint(s) restored to "
                   f"{resumed['restored_to']}")
    if dry_run:
        _show_problems(result)
        return
    click.echo(f"{result['pipeline_run_id']} on {result['workspace']}@{result['version']}")
    for row in result.get("stage_runs") or result["queued"]:
        state = row.get("state", "queued")
        click.echo(f"  {row['stage_run_id']}  {row.get('stage', '')}  {state}")


@run_group.command("validate")
@click.argument("workspace")
@click.option("--stage", "stages", multiple=True, help="Only this stage (repeatable), as run.")
@click.option("--config", "config", default=None,
              help="Config override as JSON, as `quipu run start --config`.")
@click.option("--inputs", "inputs", default=None,
              help="Inputs override as JSON, as `quipu run start --inputs` (paths checked).")
@_json_option
@click.pass_context
@_edge
def run_validate(ctx: click.Context, workspace: str, stages: tuple[str, ...],
                 config: str | None, inputs: str | None, as_json: bool) -> None:
    """Check WORKSPACE's pipeline.yaml and configs, with the stages and overrides a run would
    use; list every problem; record nothing. Exits 1 when there are errors.

    \b
    Example:
      quipu run validate w1
      quipu run validate w1 --stage train --config '{"lr": 0.01}'
    """
    with _project(ctx) as q:
        result = q.validate_config(
            workspace, stages=list(stages) or None,
            config_override=_json_arg(config, "--config") if config is not None else None,
            inputs_override=_json_arg(inputs, "--inputs") if inputs is not None else None)
    if as_json:
        _print_json(result)
    else:
        _show_problems(result)
    if not result["valid"]:
        sys.exit(1)


def _show_problems(result: dict[str, Any]) -> None:
    """A dry run's or validation's verdict, then each problem with its hint."""
    click.echo(f"valid: {result['valid']}; stages: {', '.join(result['stages_to_run'])}")
    for problem in result.get("errors", []) + result.get("warnings", []):
        click.echo(f"  [{problem['code']}] {problem['where']}: {problem['message']}"
                   + (f" (hint: {problem['hint']})" if problem.get("hint") else ""))


@run_group.command("finalize")
@click.argument("run_id")
@click.option("--results", required=True,
              help="Your verdict as inline JSON or a JSON/YAML file (see docs/results.md).")
@click.option("--scope", type=click.Choice(["run", "pipeline"]), default=None,
              help="pipeline: one verdict for the whole pipeline run (default for a prun-... "
              "id); run: this stage run only (default for a stage-... id).")
@click.option("--workspace", default=None, help="The workspace of an @tag RUN_ID.")
@_json_option
@click.pass_context
@_edge
def run_finalize(ctx: click.Context, run_id: str, results: str, scope: str | None,
                 workspace: str | None, as_json: bool) -> None:
    """Record what an ended run means; releases the workspace's finalization gate.

    RUN_ID is a stage run, a pipeline run (prun-...: one verdict for the experiment, recorded on
    the stage that decides its results spec, closing its other ended stages) or an @tag.

    \b
    Example:
      quipu run finalize prun-1a2b3c4d5e6f --results '{"primary_metric": "accuracy",
          "direction": "maximize", "value": 0.91, "dataset_split": "val",
          "ml_outcome": "success", "notes": "the wider layer beat the goal of 0.90"}'
      quipu run finalize stage-1a2b3c4d5e6f --results '{"primary_metric": "accuracy",
          "direction": "maximize", "value": 0.91, "dataset_split": "val",
          "ml_outcome": "success", "notes": "the wider layer beat the goal of 0.90"}'
      quipu run finalize stage-0f9e8d7c6b5a --results '{"ml_outcome": "unknown",
          "notes": "preprocessing only: nothing to judge"}'
    """
    with _project(ctx) as q:
        _show(q.finalize_run(run_id, _json_arg(results, "--results"), workspace=workspace,
                             scope=scope), as_json)


@run_group.command("cancel")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def run_cancel(ctx: click.Context, run_id: str, reason: str, as_json: bool) -> None:
    """Cancel a run that has not ended (and the runs of its pipeline run that wait on it).

    \b
    Example:
      quipu run cancel stage-1a2b3c4d5e6f --reason "wrong learning rate in the config"
    """
    with _project(ctx) as q:
        _show(q.cancel(run_id, reason), as_json)


@run_group.command("stop")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def run_stop(ctx: click.Context, run_id: str, reason: str, as_json: bool) -> None:
    """Ask a running stage to stop cleanly: it sees should_stop() and, exiting 0, ends stopped.

    A stage that never checks should_stop() keeps running; `quipu run cancel` ends it.

    \b
    Example:
      quipu run stop stage-1a2b3c4d5e6f --reason "loss has plateaued for an hour"
    """
    with _project(ctx) as q:
        _show(q.request_stop(run_id, reason), as_json)


@run_group.command("logs")
@click.argument("run_id")
@click.option("--tail", default=200, show_default=True, type=click.IntRange(1, 10000),
              help="The last N lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run "
              "ends.")
@click.pass_context
@_edge
def run_logs(ctx: click.Context, run_id: str, tail: int, follow: bool) -> None:
    """Print a stage run's output (stdout, stderr, runtime_log).

    \b
    Example:
      quipu run logs stage-1a2b3c4d5e6f --tail 50 --follow
    """
    with _project(ctx) as q:
        result = q.logs(run_id, tail=tail)
        while True:
            for line in result.get("lines", []):
                click.echo(line if isinstance(line, str) else json.dumps(line, default=str))
            for line in result.get("runtime_log", []):
                click.echo(f"[runtime] {line}")
            # ended comes only once every line was read, so nothing is cut off at the end.
            if not follow or result.get("ended", True):
                return
            time.sleep(0.5)
            try:
                result = q.logs(run_id, tail=10000, since=result.get("next"),
                                runtime_since=result.get("runtime_next"))
            except KeyboardInterrupt:  # pragma: no cover - interactive
                return


@run_group.command("inspect")
@click.argument("run_id")
@click.option("--include", "include", multiple=True,
              help="A section (dashboard, provenance, metrics, events, environment, svs); "
                   "repeatable. Default: dashboard, provenance, metrics.")
@click.option("--packages-offset", type=int, default=0, show_default=True,
              help="With --include environment: the first package line to list.")
@_json_option
@click.pass_context
@_edge
def run_inspect(ctx: click.Context, run_id: str, include: tuple[str, ...],
                packages_offset: int, as_json: bool) -> None:
    """State, progress, metrics, outcome and provenance of one stage run.

    \b
    Example:
      quipu run inspect stage-1a2b3c4d5e6f --json | jq '.state'
      quipu run inspect stage-1a2b3c4d5e6f --include environment --json
    """
    with _project(ctx) as q:
        _show(q.inspect_run(run_id, include=list(include) or None,
                            packages_offset=packages_offset), as_json)


@run_group.command("svs")
@click.argument("run_id")
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True,
              help="The first finding to list.")
@click.option("--limit", type=click.IntRange(1, 50), default=20, show_default=True,
              help="Findings to list.")
@_json_option
@click.pass_context
@_edge
def run_svs(ctx: click.Context, run_id: str, offset: int, limit: int, as_json: bool) -> None:
    """A run's findings: broken output contracts, suspicious statistics, review and monitor
    findings, with counts per severity.

    \b
    Example:
      quipu run svs stage-1a2b3c4d5e6f
      quipu run svs stage-1a2b3c4d5e6f --json | jq '.findings[].signal'
    """
    with _project(ctx) as q:
        result = q.get_run_svs_findings(run_id, limit=limit, offset=offset)
        if as_json:
            _print_json(result)
            return
        counts = result["counts"]
        click.echo(f"{result['run_id']}: {counts['error']} error(s), {counts['warning']} "
                   f"warning(s), {counts['info']} info")
        for f in result["findings"]:
            where = f.get("output") or f.get("file") or f.get("stage") or ""
            click.echo(f"  [{f['severity']}] {f['phase']}/{f['signal']} {where}: "
                       f"{f['message']}")
        if result["omitted"]:
            click.echo(f"  ... {result['omitted']} more (--offset {offset + limit})")


def _record_line(row: dict[str, Any]) -> str:
    value = row.get("value")
    if value is None and isinstance(row.get("primary_metric"), dict):
        value = row["primary_metric"].get("value")
    parts = [str(row.get("run_id") or row.get("record_id") or "?"), str(row.get("stage", "")),
             str(row.get("state", "")), str(row.get("version", ""))]
    if value is not None:
        parts.append(f"value={value}")
    if row.get("ml_outcome"):
        parts.append(str(row["ml_outcome"]))
    reason = str(row.get("reason") or "")
    return "  ".join(parts) + (f"  -- {reason}" if reason else "")


@run_group.command("list")
@click.argument("workspace")
@click.option("--stage", default=None, help="Only runs of this stage.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--finalized-only", is_flag=True, help="Only finalized runs.")
@_json_option
@click.pass_context
@_edge
def run_list(ctx: click.Context, workspace: str, stage: str | None, limit: int,
             finalized_only: bool, as_json: bool) -> None:
    """The runs of a workspace, newest first: stage, state, value, verdict, reason.

    \b
    Example:
      quipu run list baseline --stage train --finalized-only
    """
    with _project(ctx) as q:
        result = q.list_history(workspace, stage=stage, limit=limit,
                                finalized_only=finalized_only)
    if as_json:
        _print_json(result)
        return
    for row in result["records"]:
        click.echo(_record_line(row))
    click.echo(f"({len(result['records'])} of {result['total']})")


@run_group.command("unfinalized")
@click.argument("workspace")
@_json_option
@click.pass_context
@_edge
def run_unfinalized(ctx: click.Context, workspace: str, as_json: bool) -> None:
    """The runs of a workspace that ended and await `quipu run finalize`.

    \b
    Example:
      quipu run unfinalized baseline
    """
    with _project(ctx) as q:
        result = q.list_unfinalized_runs(workspace)
    if as_json:
        _print_json(result)
        return
    for row in result.get("runs", []):
        click.echo(_record_line(row))


@main.command()
@click.option("--consumer", default=None,
              help="Whose 'new since last seen' cursor to read alerts against.")
@click.option("--section", default=None,
              type=click.Choice(["active", "pending", "outcomes", "failed", "best", "started",
                                 "ended", "finalized"]),
              help="Page one list in full instead of the overview.")
@click.option("--offset", default=0, show_default=True, help="With --section: rows to skip.")
@click.option("--limit", default=20, show_default=True, help="With --section: rows to show.")
@_json_option
@click.pass_context
@_edge
def dashboard(ctx: click.Context, consumer: str | None, section: str | None, offset: int,
              limit: int, as_json: bool) -> None:
    """The project at a glance: active runs, alerts, runs awaiting finalization, outcomes.

    \b
    Example:
      quipu dashboard --json | jq '.pending_finalization'
      quipu dashboard --section best --offset 5 --limit 20
    """
    with _project(ctx) as q:
        result = q.dashboard(consumer=consumer, section=section, offset=offset, limit=limit)
    if as_json:
        _print_json(result)
        return
    for key, value in result.items():
        click.echo(f"{key}: {json.dumps(value, default=str)}")


"""`quipu pattern ...`: failure patterns learned from runs that went wrong (the same operations
as the ``manage_patterns`` MCP tool)."""

from __future__ import annotations

import click

from quipu.cli._root import _edge, _json_arg, _json_option, _print_json, _project, _show, main

__all__ = ["pattern"]


@main.group()
def pattern() -> None:
    """Failure patterns: candidates from failed, blocked and stopped runs; approved ones are
    checked by the reviewers and the monitor and listed in STATE.md.

    \b
    Example:
      quipu pattern list --status candidate
    """


@pattern.command("list")
@click.option("--status", type=click.Choice(["candidate", "approved", "rejected"]),
              default=None, help="Only patterns with this status.")
@click.option("--stage", default=None, help="Only patterns of this stage.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 50))
@click.option("--offset", default=0, type=click.IntRange(0))
@_json_option
@click.pass_context
@_edge
def pattern_list(ctx: click.Context, status: str | None, stage: str | None, limit: int,
                 offset: int, as_json: bool) -> None:
    """List failure patterns, most recently seen first.

    \b
    Example:
      quipu pattern list --status candidate --stage train
    """
    with _project(ctx) as q:
        result = q.manage_patterns("list", status=status, stage=stage, limit=limit,
                                   offset=offset)
    if as_json:
        _print_json(result)
        return
    for row in result["patterns"]:
        checks = "checkable" if row["checkable"] else ""
        click.echo(f"{row['pattern_id']}  {row['status']:<9} {row['stage'] or '*':<12} "
                   f"{row['severity']:<7} x{row['count']:<4} {checks:<9} {row['symptom']}")
    if not result["patterns"]:
        click.echo("(no failure patterns)")
    if result["next_offset"] is not None:
        click.echo(f"... {result['total']} in all: --offset {result['next_offset']} for more")


@pattern.command("show")
@click.argument("pattern_id")
@click.pass_context
@_edge
def pattern_show(ctx: click.Context, pattern_id: str) -> None:
    """Print one failure pattern in full as JSON.

    \b
    Example:
      quipu pattern show pat-3f2a9c01b7de
    """
    with _project(ctx) as q:
        _print_json(q.manage_patterns("get", pattern_id=pattern_id))


@pattern.command("approve")
@click.argument("pattern_id")
@click.option("--reason", required=True, help="Why it is a real pattern (>= 15 characters).")
@click.option("--detection", default=None,
              help="A machine-checkable rule: inline JSON or a JSON/YAML file (docs/svs.md).")
@click.option("--root-cause", default=None, help="What causes it, in a sentence.")
@click.option("--prevention", default=None, help="How to avoid it, in a sentence.")
@_json_option
@click.pass_context
@_edge
def pattern_approve(ctx: click.Context, pattern_id: str, reason: str, detection: str | None,
                    root_cause: str | None, prevention: str | None, as_json: bool) -> None:
    """Approve a pattern; its detection rule is validated before anything is written.

    \b
    Example:
      quipu pattern approve pat-3f2a9c01b7de --reason "seen in three runs of train" \\
          --detection '{"kind": "metric", "metric": "loss", "op": "is nan"}'
    """
    rule = None if detection is None else _json_arg(detection, "--detection")
    with _project(ctx) as q:
        _show(q.manage_patterns("approve", pattern_id=pattern_id, reason=reason,
                                detection=rule, root_cause=root_cause,
                                prevention=prevention), as_json)


@pattern.command("reject")
@click.argument("pattern_id")
@click.option("--reason", required=True, help="Why it is not a pattern (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def pattern_reject(ctx: click.Context, pattern_id: str, reason: str, as_json: bool) -> None:
    """Reject a pattern: it is no longer used and new occurrences are not counted.

    \b
    Example:
      quipu pattern reject pat-3f2a9c01b7de --reason "a one-off caused by a full disk"
    """
    with _project(ctx) as q:
        _show(q.manage_patterns("reject", pattern_id=pattern_id, reason=reason), as_json)

"""`quipu compare A B`: what changed between two runs or versions, and how the results moved."""

from __future__ import annotations

from typing import Any

import click

from quipu.cli._root import _edge, _json_option, _print_json, _project, main

__all__ = ["compare", "to_text"]


def to_text(answer: dict[str, Any]) -> str:
    """The comparison for a person: the summary, metric deltas, config, inputs, environment,
    then the files and their diffs."""
    lines = [answer["summary"], ""]
    for note in answer.get("notes", []):
        lines.append(f"note: {note}")
    metrics = answer.get("metrics")
    if metrics:
        lines.append("metrics (B against A):")
        for row in metrics["deltas"]:
            a = row["a"] if row["a"] is not None else row.get("a_non_finite", "-")
            b = row["b"] if row["b"] is not None else row.get("b_non_finite", "-")
            delta = f" ({row['delta']:+g})" if "delta" in row else ""
            mark = " [primary]" if row.get("primary") else ""
            lines.append(f"  {row['metric']}{mark}: {a} -> {b}{delta} {row['outcome']}")
    config = answer["config"]
    lines.append("config: " + ("same" if config["same"] else ""))
    for c in config["changes"]:
        lines.append(f"  {c['key']}: {c.get('a', '(absent)')} -> {c.get('b', '(absent)')}")
    inputs = answer.get("inputs")
    if inputs:
        lines.append("inputs: " + ("same" if not inputs["changed"] else ""))
        for i in inputs["changed"]:
            def side(s: dict[str, Any] | None) -> str:
                return "(none)" if s is None else f"{str(s['sha256'])[:12]} from {s['from']}"
            lines.append(f"  {i['input']}: {side(i['a'])} -> {side(i['b'])}")
    env = answer.get("environment")
    if env:
        lines.append("environment: " + (env.get("note") or ("same" if env["same"]
                                                              else "differs")))
        for name, change in (env.get("changed") or {}).items():
            lines.append(f"  {name}: {change['a']} -> {change['b']}")
    code = answer["code"]
    lines.append(f"code: {code['summary']}")
    for f in code["files"]:
        lines.append(f"  {f['change']:<9} {f['path']}")
    if code.get("more_files"):
        lines.append(f"  ... {code['more_files']} more files")
    if code["diff_text"]:
        lines += ["", code["diff_text"]]
    return "\n".join(lines)


@main.command(name="compare")
@click.argument("a")
@click.argument("b")
@click.option("--max-diff-lines", type=int, default=None,
              help="Unified-diff lines over all files (default 80; 0 lists the files only).")
@_json_option
@click.pass_context
@_edge
def compare(ctx: click.Context, a: str, b: str, max_diff_lines: int | None,
            as_json: bool) -> None:
    """Show what changed from A to B and how the results moved. A and B are run ids,
    ws@v3, ws@tag, @tag, or workspaces (their current versions).

    \b
    Example:
      quipu compare stage-1a2b3c stage-4d5e6f
      quipu compare baseline@v3 baseline@best --max-diff-lines 400
      quipu compare @best stage-4d5e6f --json
    """
    with _project(ctx) as q:
        answer = q.compare(a, b, max_diff_lines=max_diff_lines)
    if as_json:
        _print_json(answer)
    else:
        click.echo(to_text(answer))

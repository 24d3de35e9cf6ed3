"""`quipu export prov|openlineage`: the log in formats other tools read (see docs/lineage.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from quipu.app.bootstrap import open_log
from quipu.cli._root import _edge, main
from quipu.cli.audit import _parse_until
from quipu.core.errors import InvalidInput

__all__ = ["export"]


@main.group()
def export() -> None:
    """Export the log as W3C PROV-JSON or OpenLineage run events.

    Both are pure functions of the log: --until gives the graph as it stood then.

    \b
    Example:
      quipu export prov --all -o prov.json
    """


def _write(data: Any, output: Path | None, *, lines: bool = False) -> None:
    text = ("".join(json.dumps(e, sort_keys=True) + "\n" for e in data) if lines
            else json.dumps(data, indent=2, sort_keys=True) + "\n")
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


@export.command("prov")
@click.option("--run", "run", default=None, help="Only the upstream closure of this run.")
@click.option("--workspace", default=None,
              help="Only this workspace's versions and runs, and the data they used and made.")
@click.option("--all", "everything", is_flag=True, help="Everything (the default).")
@click.option("--until", default=None, help="A log position or an ISO time (default: now).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@click.pass_context
@_edge
def export_prov(ctx: click.Context, run: str | None, workspace: str | None, everything: bool,
                until: str | None, output: Path | None) -> None:
    """Write W3C PROV-JSON: versions and data as entities, runs as activities, actors as
    agents, with used / wasGeneratedBy / wasDerivedFrom / wasAssociatedWith / wasInformedBy.

    \b
    Example:
      quipu export prov --run stage-1a2b3c -o run.prov.json
      quipu export prov --workspace baseline --until 120
    """
    if sum((run is not None, workspace is not None, everything)) > 1:
        raise InvalidInput("--run, --workspace and --all exclude each other",
                           code="export_scope", hint="pick one (none means --all)")
    with open_log(ctx.obj.get("project")) as log:
        position = None if until is None else _parse_until(log, until)
        doc = log.export_prov(until=position, run=run, workspace=workspace)
    _write(doc, output)


@export.command("openlineage")
@click.option("--until", default=None, help="A log position or an ISO time (default: now).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@click.pass_context
@_edge
def export_openlineage(ctx: click.Context, until: str | None, output: Path | None) -> None:
    """Write OpenLineage run events, one JSON object per line: one per run transition
    (START, RUNNING, COMPLETE, FAIL, ABORT; OTHER for the agent's verdict).

    \b
    Example:
      quipu export openlineage -o lineage.ndjson
    """
    with open_log(ctx.obj.get("project")) as log:
        position = None if until is None else _parse_until(log, until)
        events = log.export_openlineage(until=position)
    _write(events, output, lines=True)

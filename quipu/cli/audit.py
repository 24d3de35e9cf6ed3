"""``quipu audit``: verify the hash chain, seal the head, replay the past."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from quipu.app.bootstrap import LogHandle, open_log
from quipu.cli._root import _edge, _print_json, main
from quipu.core.errors import InvalidInput

__all__ = ["audit"]


@main.group()
def audit() -> None:
    """Check the log's hash chain, seal its head, replay the past.

    \b
    Example:
      quipu audit verify && quipu audit seal
    """


@audit.command()
@click.option("--seals", type=click.Path(path_type=Path), default=None,
              help="Seal file to check against (default .quipu/seals.jsonl); the automatic "
              "seals' file (audit.auto_seal.path) is always checked too.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@_edge
def verify(ctx: click.Context, seals: Path | None, as_json: bool) -> None:
    """Recompute the hash chain; exit 1 and name the first bad position if anything changed.

    With an audit key (audit.key_file or QUIPU_AUDIT_KEY_FILE) the keyed links are checked too.

    \b
    Example:
      quipu audit verify --json
    """
    with open_log(ctx.obj.get("project")) as log:
        report, sealed = log.verify(seals)
        key = log.key
    data = dataclasses.asdict(report)
    data["seals_checked"] = sealed
    if as_json:
        _print_json(data)
    elif report.ok:
        head = report.head_hash[:16] if report.head_hash else "-"
        click.secho(f"OK: {report.events_checked} events, chain intact up to position "
                    f"{report.head_position} (head {head}), {sealed} seal(s) hold",
                    fg="green")
    else:
        click.secho(f"TAMPERED: first bad position {report.first_bad_position}: "
                    f"{report.problem}", fg="red", err=True)
    if not as_json and report.keyed_links and not report.key_checked:
        click.secho(f"NOTE: {report.keyed_links} event(s) carry audit-key MACs but no key was "
                    "given, so they were not checked: set audit.key_file or "
                    "QUIPU_AUDIT_KEY_FILE", fg="yellow", err=True)
    elif not as_json and key is not None and report.ok and not report.keyed_links:
        click.secho("NOTE: an audit key was given but no event carries a MAC", fg="yellow",
                    err=True)
    sys.exit(0 if report.ok else 1)


@audit.command()
@click.option("--file", "seal_path", type=click.Path(path_type=Path), default=None,
              help="Where to append the seal (default .quipu/seals.jsonl). Keep a copy "
              "somewhere the log's writers cannot reach.")
@click.pass_context
@_edge
def seal(ctx: click.Context, seal_path: Path | None) -> None:
    """Record the log's head (position and hash) outside the log, so truncation is caught.

    \b
    Example:
      quipu audit seal --file ~/quipu-seals/digits.jsonl
    """
    with open_log(ctx.obj.get("project")) as log:
        made, path = log.seal(seal_path)
    click.echo(f"sealed position {made.position} hash {made.hash} -> {path}")


def _parse_until(log: LogHandle, until: str) -> int:
    if until.isdigit():
        return int(until)
    try:
        moment = datetime.fromisoformat(until.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--until {until!r} is neither a position nor an ISO time",
                           code="invalid_until",
                           hint="e.g. --until 120 or --until 2026-11-21T10:00:00Z") from None
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return log.position_at(moment)


@audit.command()
@click.option("--until", required=True, help="A log position or an ISO time.")
@click.option("--projection", default=None,
              help="Print only this view: state_md, workspaces, slots, thoughts or audit.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_edge
def replay(ctx: click.Context, until: str, projection: str | None, as_json: bool) -> None:
    """Show the project as it was at a past position or time, without touching live views.

    \b
    Example:
      quipu audit replay --until 2026-11-21T10:00:00Z
      quipu audit replay --until 42 --projection workspaces --json
    """
    with open_log(ctx.obj.get("project")) as log:
        config = log.config
        position = _parse_until(log, until)
        with tempfile.TemporaryDirectory(prefix="quipu-replay-") as tmp:
            views = log.replay(position, Path(tmp))
            try:
                data: dict[str, Any] = {
                    "position": position,
                    "state_md": views.state_md(dirty=lambda _slot, _manifest: False),
                    "workspaces": views.workspaces(include_deleted=True),
                    "slots": views.slots(config.slot_names()),
                    "thoughts": views.thoughts(limit=50),
                    "audit": views.audit_log(limit=50),
                }
            finally:
                views.close()
    if projection is not None:
        if projection not in data or projection == "position":
            raise InvalidInput(f"unknown projection {projection!r}", code="unknown_view",
                               hint="use state_md, workspaces, slots, thoughts or audit")
        data = {"position": position, projection: data[projection]}
    if as_json:
        _print_json(data)
        return
    click.echo(f"# As of log position {position} (slot dirty flags are not part of the log)\n")
    if "state_md" in data:
        click.echo(data["state_md"])
    for key in ("workspaces", "slots", "thoughts", "audit"):
        if key in data:
            click.echo(f"\n## {key} then\n")
            for row in data[key]:
                click.echo(json.dumps(row, default=str))

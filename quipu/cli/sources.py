"""`quipu source ...`: register datasets and manage them (the same operations as the
``register_source`` and ``manage_sources`` MCP tools)."""

from __future__ import annotations

from typing import Any

import click

from quipu.cli._root import _edge, _json_arg, _json_option, _print_json, _project, _show, main

__all__ = ["source"]


@main.group()
def source() -> None:
    """Registered datasets: checked, hashed and described by strict metadata.

    \b
    Example:
      quipu source register digits data/digits.npz --metadata meta.json \\
          --reason "the digits features every experiment reads"
    """


@source.command("register")
@click.argument("name")
@click.argument("path_or_uri")
@click.option("--metadata", required=True,
              help="The metadata document: inline JSON or a JSON/YAML file (docs/sources.md).")
@click.option("--reason", required=True, help="Why you register it (>= 15 characters).")
@click.option("--description", default=None,
              help="Defaults to the metadata's description (must equal it).")
@_json_option
@click.pass_context
@_edge
def source_register(ctx: click.Context, name: str, path_or_uri: str, metadata: str,
                    reason: str, description: str | None, as_json: bool) -> None:
    """Register a local file (checked against the metadata, referenced by sha256) or a gs:// URI.

    \b
    Example:
      quipu source register digits data/digits.npy --metadata meta.yaml \\
          --reason "the digits features every experiment reads"
    """
    doc = _json_arg(metadata, "--metadata")
    text = description if description is not None else (
        doc.get("description") if isinstance(doc, dict) else "")
    with _project(ctx) as q:
        _show(q.register_source(name, path_or_uri, str(text or ""), reason, doc), as_json)


@source.command("promote")
@click.argument("run_id")
@click.argument("output")
@click.argument("name")
@click.option("--metadata", required=True,
              help="The metadata document: inline JSON or a JSON/YAML file (docs/sources.md).")
@click.option("--reason", required=True, help="Why you promote it (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def source_promote(ctx: click.Context, run_id: str, output: str, name: str, metadata: str,
                   reason: str, as_json: bool) -> None:
    """Make an output of a succeeded run a named source (by reference, with its lineage).

    \b
    Example:
      quipu source promote stage-1a2b3c4d5e6f features digits-features \\
          --metadata meta.yaml --reason "the cleaned features every model should train on"
    """
    with _project(ctx) as q:
        _show(q.promote_artifact(run_id, output, name, reason,
                                 _json_arg(metadata, "--metadata")), as_json)


@source.command("list")
@click.option("--status", type=click.Choice(["active", "retired", "deleted"]), default=None,
              help="Only sources with this status (default: all but deleted).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100))
@click.option("--offset", default=0, type=click.IntRange(0))
@_json_option
@click.pass_context
@_edge
def source_list(ctx: click.Context, status: str | None, limit: int, offset: int,
                as_json: bool) -> None:
    """List registered sources by name.

    \b
    Example:
      quipu source list --status active
    """
    with _project(ctx) as q:
        result = q.manage_sources("list", status=status, limit=limit, offset=offset)
    if as_json:
        _print_json(result)
        return
    for row in result["sources"]:
        digest = (row["sha256"] or "not staged")[:12]
        click.echo(f"{row['name']:<24} {row['status']:<8} {row['format']:<5} "
                   f"{row['size_bytes']:>14,} {digest}  {row['uri']}")
    if result["has_more"]:
        click.echo(f"... {result['total']} in all: use --offset to see more")


def _one(ctx: click.Context, action: str, name: str, as_json: bool, **kwargs: Any) -> None:
    with _project(ctx) as q:
        result = q.manage_sources(action, name=name, **kwargs)
    if as_json or action in ("get", "lineage"):
        _print_json(result)
    else:
        _show(result, as_json)


@source.command("get")
@click.argument("name")
@click.pass_context
@_edge
def source_get(ctx: click.Context, name: str) -> None:
    """Print one source and its metadata as JSON.

    \b
    Example:
      quipu source get digits
    """
    _one(ctx, "get", name, True)


@source.command("lineage")
@click.argument("name")
@click.pass_context
@_edge
def source_lineage(ctx: click.Context, name: str) -> None:
    """Print, as JSON, the runs that used a source and, for a promoted artifact, the runs,
    inputs and sources it came from (``quipu lineage source:NAME`` draws the whole graph).

    \b
    Example:
      quipu source lineage digits
    """
    _one(ctx, "lineage", name, True)


@source.command("verify")
@click.argument("name")
@_json_option
@click.pass_context
@_edge
def source_verify(ctx: click.Context, name: str, as_json: bool) -> None:
    """Check that the source's file still has its registered sha256 (records nothing).

    \b
    Example:
      quipu source verify digits
    """
    _one(ctx, "verify", name, as_json)


@source.command("update")
@click.argument("name")
@click.option("--metadata", required=True, help="The whole new metadata (JSON or a file).")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def source_update(ctx: click.Context, name: str, metadata: str, reason: str,
                  as_json: bool) -> None:
    """Replace a source's metadata (checked against its file; the format never changes).

    \b
    Example:
      quipu source update digits --metadata meta.yaml --reason "name the 64 pixel features"
    """
    _one(ctx, "update", name, as_json, metadata=_json_arg(metadata, "--metadata"),
         reason=reason)


@source.command("retire")
@click.argument("name")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def source_retire(ctx: click.Context, name: str, reason: str, as_json: bool) -> None:
    """Retire a source: no new run may consume it; its record and name stay.

    \b
    Example:
      quipu source retire digits --reason "superseded by digits-v2 with the fixed labels"
    """
    _one(ctx, "retire", name, as_json, reason=reason)


@source.command("delete")
@click.argument("name")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def source_delete(ctx: click.Context, name: str, reason: str, as_json: bool) -> None:
    """Delete a source no run consumed (otherwise refused, naming the runs: retire it).

    \b
    Example:
      quipu source delete scratch --reason "registered by mistake, nothing used it"
    """
    _one(ctx, "delete", name, as_json, reason=reason)

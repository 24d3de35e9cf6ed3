"""`quipu lineage REF`: the provenance graph around one node, as text, JSON, dot or mermaid."""

from __future__ import annotations

from typing import Any

import click

from quipu.cli._root import _edge, _print_json, _project, main

__all__ = ["lineage", "to_dot", "to_mermaid", "to_text"]


def to_text(graph: dict[str, Any]) -> str:
    """The graph for a person: nodes by hops, then edges, then what was left out."""
    lines = [f"{graph['direction']} of {graph['root']} ({graph['depth']} hops)"]
    for n in graph["nodes"]:
        lines.append(f"  {'  ' * min(n['hops'], 8)}[{n['hops']}] {n['label']}")
    if graph["edges"]:
        lines.append("edges (upstream -> downstream):")
        lines += [f"  {e[0]} -[{e[1]}{' ' + e[3] if len(e) > 3 else ''}]-> {e[2]}"
                  for e in graph["edges"]]
    counts = graph["counts"]
    lines.append(f"{counts['nodes']} nodes, {counts['edges']} edges reached: "
                 + ", ".join(f"{k} {v}" for k, v in counts["by_kind"].items()))
    if graph.get("hint"):
        lines.append(f"note: {graph['hint']}")
    return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: dict[str, Any]) -> str:
    """Graphviz dot: one box per node (labelled), one arrow per edge (labelled by kind)."""
    lines = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for n in graph["nodes"]:
        lines.append(f"  {_quote(n['id'])} [label={_quote(n['label'])}];")
    for e in graph["edges"]:
        lines.append(f"  {_quote(e[0])} -> {_quote(e[2])} [label={_quote(e[1])}];")
    lines.append("}")
    return "\n".join(lines)


def to_mermaid(graph: dict[str, Any]) -> str:
    """A mermaid flowchart (node ids become n0, n1, ...: mermaid ids cannot hold ':' or '@')."""
    ids = {n["id"]: f"n{i}" for i, n in enumerate(graph["nodes"])}
    lines = ["flowchart LR"]
    for n in graph["nodes"]:
        text = n["label"].replace('"', "#quot;")
        lines.append(f'  {ids[n["id"]]}["{text}"]')
    for e in graph["edges"]:
        lines.append(f"  {ids[e[0]]} -->|{e[1]}| {ids[e[2]]}")
    return "\n".join(lines)


@main.command()
@click.argument("ref")
@click.option("--direction", type=click.Choice(["upstream", "downstream", "both"]),
              default="upstream", show_default=True,
              help="upstream: what it came from; downstream: what used it.")
@click.option("--depth", default=5, show_default=True, help="Hops to walk (1-100).")
@click.option("--kind", "kinds", multiple=True,
              type=click.Choice(["workspace", "version", "pipeline_run", "run", "output",
                                 "source"]),
              help="Walk only through nodes of this kind (repeatable).")
@click.option("--limit", default=60, show_default=True, help="Most nodes shown (1-500).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "dot", "mermaid"]),
              default="text", show_default=True, help="How to print the graph.")
@click.pass_context
@_edge
def lineage(ctx: click.Context, ref: str, direction: str, depth: int, kinds: tuple[str, ...],
            limit: int, fmt: str) -> None:
    """Show the provenance graph around REF: a run id, ws@v3, a workspace or source name
    (source:NAME if a workspace has it too), @tag or ws@tag, or a content hash (or a prefix of
    at least 4 hex digits).

    \b
    Example:
      quipu lineage stage-1a2b3c --depth 20
      quipu lineage 9f2c41 --direction downstream --kind run --depth 1
      quipu lineage source:digits --direction downstream --kind run --depth 1
      quipu lineage baseline@v3 --direction downstream --format mermaid
    """
    with _project(ctx) as q:
        graph = q.get_lineage(ref, direction=direction, depth=depth, kinds=kinds or None,
                              limit=limit)
    if fmt == "json":
        _print_json(graph)
    else:
        click.echo({"text": to_text, "dot": to_dot, "mermaid": to_mermaid}[fmt](graph))

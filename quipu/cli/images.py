"""`quipu image ...`: the project's container images for the Docker backend (the same
operations as the ``manage_images`` MCP tool)."""

from __future__ import annotations

import click

from quipu.cli._root import _edge, _json_option, _print_json, _project, _show, main

__all__ = ["image"]


@main.group()
def image() -> None:
    """Container images the Docker backend runs stages in.

    \b
    Example:
      quipu image build --base python:3.11-slim
    """


@image.command("list")
@_json_option
@click.pass_context
@_edge
def image_list(ctx: click.Context, as_json: bool) -> None:
    """The project's images, newest first (tags, id, size, content hash).

    \b
    Example:
      quipu image list --json
    """
    with _project(ctx) as q:
        result = q.manage_images("list")
    if as_json:
        _print_json(result)
        return
    for row in result["images"]:
        click.echo(f"{', '.join(row['tags']) or '<untagged>'}  {row['id'][:19]}  "
                   f"{row['size_mb']} MB  {row['created']}")
    click.echo(f"{result['total']} image(s)")


@image.command("inspect")
@click.argument("ref")
@_json_option
@click.pass_context
@_edge
def image_inspect(ctx: click.Context, ref: str, as_json: bool) -> None:
    """One image by tag or id: id, digests, tags, size, labels.

    \b
    Example:
      quipu image inspect quipu-myproject:3f2a9c1b0d4e
    """
    with _project(ctx) as q:
        _show(q.manage_images("inspect", image=ref), as_json)


@image.command("build")
@click.option("--base", default=None,
              help="The base image when the project has no Dockerfile "
              "(default python:3.11-slim); it must be on the daemon already.")
@_json_option
@click.pass_context
@_edge
def image_build(ctx: click.Context, base: str | None, as_json: bool) -> None:
    """Build the project image from a base plus requirements.txt, or from the project's
    Dockerfile; an unchanged build is reused. The build's output streams to stderr.

    \b
    Example:
      quipu image build --base python:3.11-slim
    """
    def progress(line: str) -> None:
        # Docker's own "Step 2/4 : RUN ..." lines are the progress; each shows as it arrives.
        click.echo(f"[build] {line}", err=True)

    with _project(ctx) as q:
        _show(q.manage_images("build", base=base, progress=progress), as_json)

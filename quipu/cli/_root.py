"""The ``quipu`` group and what every command shares: the error edge, the project, JSON.

Every command has help with an example; errors print their code and hint and exit 2;
``--json`` gives scripts the same data a tool call returns.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from quipu.app.bootstrap import (
    Quipu,
    open_project,
)
from quipu.core.errors import InvalidInput, QuipuError

__all__ = ["main"]


F = TypeVar("F", bound=Callable[..., Any])


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


def _edge(fn: F) -> F:
    """Map Quipu's typed errors to a message, a hint and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except QuipuError as exc:
            if kwargs.get("as_json"):
                _print_json(exc.as_dict())
            else:
                click.secho(f"error [{exc.code}]: {exc.message}", fg="red", err=True)
                if exc.hint:
                    click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@contextmanager
def _project(ctx: click.Context) -> Iterator[Quipu]:
    q = open_project(ctx.obj.get("project"), actor=ctx.obj.get("actor"))
    try:
        yield q
    finally:
        q.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quipu", prog_name="quipu", message="%(prog)s %(version)s")
@click.option("--project", "-p", type=click.Path(path_type=Path), default=None,
              help="Project directory (default: nearest quipu.yaml above the current one, "
              "or $QUIPU_PROJECT).")
@click.option("--actor", default=None, help="Who is acting (default $QUIPU_ACTOR or cli:<user>).")
@click.pass_context
def main(ctx: click.Context, project: Path | None, actor: str | None) -> None:
    """Quipu: every workspace, version and decision of your ML research, kept in one log.

    \b
    Example:
      quipu init my-project --goal "beat 98% on digits"
      cd my-project && quipu status
      quipu --version
    """
    ctx.ensure_object(dict)
    ctx.obj["project"] = project
    ctx.obj["actor"] = actor


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(result)
        return
    for key, value in result.items():
        if key in ("state_md", "diff_text"):
            continue
        click.echo(f"{key}: {value}")
    if result.get("diff_text"):
        click.echo(result["diff_text"])


def _json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)


def _json_arg(value: str, what: str) -> Any:
    """``value`` is inline JSON or the path of a JSON/YAML file; parse it."""
    import yaml

    path = None if value.lstrip().startswith(("{", "[")) else Path(value)
    if path is not None and not path.is_file():
        raise InvalidInput(f"{what}: {value!r} is neither JSON nor a file", code="invalid_json",
                           hint=f"pass inline JSON ('{{...}}') or the path of a JSON or YAML "
                           f"file for {what}")
    try:
        if path is None:
            return json.loads(value)
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(path.read_text())
        return json.loads(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{what}: {path or 'the inline JSON'} does not parse: {exc}",
                           code="invalid_json",
                           hint="check the quoting: keys and strings need double quotes") from exc

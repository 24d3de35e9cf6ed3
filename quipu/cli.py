"""The ``quipu`` command line: thin wrappers over the facade in ``quipu.bootstrap``.

Every command has help with an example; errors print their code and hint and exit 2;
``--json`` gives scripts the same data a tool call returns.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from quipu.bootstrap import (
    DATA_DIR,
    Quipu,
    default_actor,
    find_project,
    init_project,
    load_config,
    open_project,
    open_store,
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
    """
    ctx.ensure_object(dict)
    ctx.obj["project"] = project
    ctx.obj["actor"] = actor


# --- project ------------------------------------------------------------------------------------


@main.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--name", default=None, help="Project name (default: the directory name).")
@click.option("--goal", default="", help="The research goal, shown at the top of STATE.md.")
@click.option("--slots", default=3, show_default=True, help="How many slots (w1..wN).")
@click.pass_context
@_edge
def init(ctx: click.Context, path: Path, name: str | None, goal: str, slots: int) -> None:
    """Create a project: quipu.yaml, .quipu/ (log, views, blobs) and workspaces/w1..wN.

    \b
    Example:
      quipu init digits --goal "reach 98% test accuracy on sklearn digits"
    """
    q = init_project(path, name=name, goal=goal, slots=slots, actor=ctx.obj.get("actor"))
    click.echo(f"initialised {q.config.name} at {q.root}")
    click.echo(f"slots: {', '.join(q.config.slot_names())}; log: {q.store}")
    q.close()


@main.command()
@click.pass_context
@_edge
def serve(ctx: click.Context) -> None:
    """Run the MCP server over stdio (what an agent connects to).

    \b
    Example (Claude Code):
      claude mcp add quipu -- quipu --project /path/to/project serve
    """
    from quipu.mcp.server import serve as serve_stdio

    serve_stdio(ctx.obj.get("project"), actor=ctx.obj.get("actor"))


@main.command()
@click.pass_context
@_edge
def worker(ctx: click.Context) -> None:
    """Run the local executor and supervisor in the foreground until interrupted.

    `quipu serve` runs them too; use `quipu worker` for runs started from the command line
    without --wait, or for more stages in parallel. Several workers never run a stage twice.

    \b
    Example:
      quipu worker &
      quipu run start baseline --reason "overnight sweep point" --spec spec.json
    """
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _project(ctx) as q:
        q.start_workers()
        click.echo(f"quipu worker: executing runs of {q.root} (Ctrl-C to stop)", err=True)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
@_edge
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the project's STATE.md (slots, workspaces, recent thoughts and actions).

    \b
    Example:
      quipu status --json | jq '.slots'
    """
    with _project(ctx) as q:
        result = q.status()
    if as_json:
        _print_json(result)
    else:
        click.echo(result["state_md"])


# --- the log ------------------------------------------------------------------------------------


def _summary(event: Any) -> str:
    skip = {"actor", "reason", "at"}
    parts = []
    for key, value in event.model_dump().items():
        if key in skip or value is None:
            continue
        text = str(value)
        if len(text) > 40:
            text = text[:37] + "..."
        parts.append(f"{key}={text}")
    return " ".join(parts)


@main.command()
@click.option("--since", default=0, show_default=True, help="Only events after this position.")
@click.option("--type", "types", multiple=True, help="Only this event type (repeatable).")
@click.option("--workspace", default=None, help="Only events about this workspace.")
@click.option("--limit", default=None, type=int, help="At most this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they arrive.")
@click.pass_context
@_edge
def events(ctx: click.Context, since: int, types: tuple[str, ...], workspace: str | None,
           limit: int | None, as_json: bool, follow: bool) -> None:
    """Print the log: position, time, actor, type, fields, reason.

    \b
    Example:
      quipu events --workspace baseline --type VersionSaved --json
      quipu events --follow
    """
    from quipu.core.log import decode

    root = find_project(ctx.obj.get("project"))
    store = open_store(root, load_config(root))
    shown = 0
    position = since
    try:
        while True:
            page = store.read(after=position, limit=1000, types=types)
            for record in page:
                position = record.position
                rec = decode(record)
                ev = rec.event
                if workspace is not None and getattr(ev, "workspace", None) != workspace:
                    continue
                if as_json:
                    click.echo(json.dumps({"position": rec.position, "type": ev.TYPE,
                                           "stream": str(rec.stream), "version": rec.version,
                                           **ev.model_dump(mode="json")}))
                else:
                    click.echo(f"{rec.position:>7}  {ev.at:%Y-%m-%d %H:%M:%S}  {ev.actor:<16} "
                               f"{ev.TYPE:<20} {_summary(ev)}  -- {ev.reason}")
                shown += 1
                if limit is not None and shown >= limit:
                    return
            if not page:
                if not follow:
                    return
                time.sleep(0.5)
    except KeyboardInterrupt:
        return
    finally:
        store.close()


@main.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Rebuild every projection.")
@click.pass_context
@_edge
def rebuild(ctx: click.Context, names: tuple[str, ...], all_: bool) -> None:
    """Drop views and refold them from position 0 of the log.

    \b
    Example:
      quipu rebuild --all
      quipu rebuild workspaces thoughts
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    if not names and not all_:
        raise InvalidInput("say which views to rebuild", code="rebuild_what",
                           hint="pass view names, or --all")
    with _project(ctx) as q:
        known = q.views.names()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InvalidInput(f"unknown view(s): {', '.join(unknown)}", code="unknown_view",
                               hint=f"views: {', '.join(known)}")
        total = q.store.head()
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), transient=False,
                      console=None) as bar:
            task = bar.add_task("rebuilding", total=max(total, 1))

            def progress(done: int, _total: int) -> None:
                bar.update(task, completed=done, total=max(_total, 1))

            report = q.views.rebuild(list(names) if names else None, progress=progress)
        q.refresh()
    click.echo(f"rebuilt {', '.join(names) if names else 'all views'}: {report['events']} events "
               f"in {report['seconds']:.2f} s ({report['events_per_second']:,.0f} events/s)")


# --- audit --------------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """Check the log's hash chain, seal its head, replay the past.

    \b
    Example:
      quipu audit verify && quipu audit seal
    """


def _seal_file(root: Path, given: Path | None) -> Path:
    return given if given is not None else root / DATA_DIR / "seals.jsonl"


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
    from quipu.adapters.seals.local import LocalSealKeeper
    from quipu.bootstrap import audit_key, seal_paths
    from quipu.core.audit import verify_log

    root = find_project(ctx.obj.get("project"))
    config = load_config(root)
    key = audit_key(root, config)
    store = open_store(root, config)
    try:
        files = seal_paths(root, config)
        if seals is not None:
            files[0] = seals
        sealed = [s for path in files for s in LocalSealKeeper(path).read_all()]
        report = verify_log(store, sealed, key=key)
    finally:
        store.close()
    data = dataclasses.asdict(report)
    data["seals_checked"] = len(sealed)
    if as_json:
        _print_json(data)
    elif report.ok:
        head = report.head_hash[:16] if report.head_hash else "-"
        click.secho(f"OK: {report.events_checked} events, chain intact up to position "
                    f"{report.head_position} (head {head}), {len(sealed)} seal(s) hold",
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
    from quipu.adapters.seals.local import LocalSealKeeper
    from quipu.bootstrap import SystemClock
    from quipu.core.audit import make_seal

    root = find_project(ctx.obj.get("project"))
    store = open_store(root, load_config(root))
    try:
        made = make_seal(store, SystemClock().now())
    finally:
        store.close()
    path = _seal_file(root, seal_path)
    LocalSealKeeper(path).append(made)
    click.echo(f"sealed position {made.position} hash {made.hash} -> {path}")


def _parse_until(store: Any, until: str) -> int:
    from quipu.projections.replay import position_at

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
    return int(position_at(store, moment))


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
    from quipu.projections.replay import replay_views

    root = find_project(ctx.obj.get("project"))
    config = load_config(root)
    store = open_store(root, config)
    try:
        position = _parse_until(store, until)
        with tempfile.TemporaryDirectory(prefix="quipu-replay-") as tmp:
            views = replay_views(store, position, Path(tmp))
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
    finally:
        store.close()
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


@main.command()
@click.option("--keep", type=click.Path(path_type=Path), default=None,
              help="Build the demo project here and keep it (default: a temporary directory).")
@click.pass_context
@_edge
def demo(ctx: click.Context, keep: Path | None) -> None:
    """A real session on a throwaway project: workspaces, versions, diff and rollback, then a
    three-stage digits pipeline (scikit-learn's bundled data) run twice, finalized, compared,
    and an audit of the log.

    \b
    Example:
      quipu demo
      quipu demo --keep ./quipu-demo && quipu --project ./quipu-demo events
    """
    from quipu.demo import run_demo

    actor = ctx.obj.get("actor") or default_actor("demo")
    if keep is not None:
        sys.exit(run_demo(keep, actor=actor, echo=click.echo, kept=True))
    with tempfile.TemporaryDirectory(prefix="quipu-demo-") as tmp:
        sys.exit(run_demo(Path(tmp) / "digits", actor=actor, echo=click.echo))


# The workspace and run command groups live in their own modules; importing them registers them.
from quipu import _cli_runs, _cli_workspace  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    # Run as a script this file is ``__main__``; the commands registered themselves on
    # ``quipu.cli.main``, so call that one.
    from quipu.cli import main as _main

    _main()

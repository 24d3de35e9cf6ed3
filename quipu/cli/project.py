"""Project-wide commands: init, status, serve, worker, events, rebuild, demo."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from quipu.app.bootstrap import Quipu, default_actor, describe_log, init_project, open_log
from quipu.cli._root import _edge, _print_json, _project, main
from quipu.core.errors import InvalidInput

__all__ = ["demo", "doctor", "events", "init", "rebuild", "serve", "status", "worker"]


@main.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--name", default=None, help="Project name (default: the directory name).")
@click.option("--goal", default="", help="The research goal, shown at the top of STATE.md.")
@click.option("--slots", default=3, show_default=True,
              help="How many slots (w1..wN; HOST-w1..HOST-wN when joining).")
@click.option("--eventstore", default=None, metavar="URL",
              help="Where the log lives: sqlite (default) or postgresql://... "
              "(written to quipu.yaml).")
@click.option("--blobs", default=None, metavar="URL",
              help="Where blobs live: local (default) or gs://BUCKET/PREFIX "
              "(written to quipu.yaml).")
@click.option("--join", "join", is_flag=True,
              help="Join the project already on the shared log and blob store, as another "
              "host, instead of creating one.")
@click.option("--like", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="With --join: the other host's quipu.yaml to take settings from "
              "(default: PATH/quipu.yaml).")
@click.option("--host", default=None,
              help="This host's name in the project (default: the machine's host name).")
@click.option("--again", is_flag=True,
              help="With --join: this directory is a host the project already records "
              "(its .quipu/ was lost); take that host's slots back.")
@click.pass_context
@_edge
def init(ctx: click.Context, path: Path, name: str | None, goal: str, slots: int,
         eventstore: str | None, blobs: str | None, join: bool, like: Path | None,
         host: str | None, again: bool) -> None:
    """Create a project: quipu.yaml, .quipu/ (log, views, blobs) and workspaces/w1..wN.

    With --join, make PATH another host's directory of a project whose log (PostgreSQL) and
    blobs (GCS) are shared: settings come from the other host's quipu.yaml, and this host
    gets slots of its own.

    \b
    Examples:
      quipu init digits --goal "reach 98% test accuracy on sklearn digits"
      quipu init digits --eventstore postgresql://quipu@db/quipu --blobs gs://lab/digits
      quipu init digits --join --like /mnt/shared/digits/quipu.yaml --host gpu1
    """
    if join:
        if name is not None or goal:
            raise InvalidInput("--name and --goal come from the log when joining",
                               code="join_takes_no_name",
                               hint="drop --name and --goal; the project keeps its own")
        from quipu.app.join import join_project, join_summary

        q = join_project(path, like=like, eventstore=eventstore, blobs=blobs, host=host,
                         slots=slots, again=again, actor=ctx.obj.get("actor"))
        summary = join_summary
    else:
        if like is not None or again:
            raise InvalidInput(f"{'--like' if like is not None else '--again'} is for --join",
                               code="like_without_join",
                               hint="add --join to join a shared project")
        q = init_project(path, name=name, goal=goal, slots=slots, actor=ctx.obj.get("actor"),
                         eventstore=eventstore, blobs=blobs, host=host)
        summary = init_summary
    try:
        click.echo(summary(q))
    finally:
        q.close()


def init_summary(q: Quipu) -> str:
    """What a person needs after ``quipu init``: what was made, where, and what to do next."""
    root = q.root
    lines = [f"Created project {q.config.name!r} in {root}"]
    if q.config.goal:
        lines.append(f"  goal:  {q.config.goal}")
    lines += [
        f"  slots: {', '.join(q.config.slot_names())} (all free), under {root / 'workspaces'}",
        f"  log:   {describe_log(root, q.config)}",
        "  files: quipu.yaml (settings), STATE.md (the project's memory, rewritten after "
        "every change)",
        "",
        "Next steps:",
        f"  cd {root} && quipu status",
        f"  connect an agent:  claude mcp add quipu -- quipu --project {root} serve",
        "  or by hand:        quipu workspace create baseline --goal \"...\" --reason \"...\"",
    ]
    return "\n".join(lines)


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

    log_handle = open_log(ctx.obj.get("project"))
    store = log_handle.store
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
        log_handle.close()


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


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
@_edge
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check every part quipu.yaml configures (the log and its chain at the head, the blob
    store, the stage backends, the compute profiles) and print what to fix. Exits 1 when
    anything is wrong.

    \b
    Example:
      quipu doctor
      QUIPU_EXECUTOR_BACKEND=docker quipu doctor --json
    """
    from quipu.app.bootstrap import find_project
    from quipu.app.doctor import diagnose

    findings = diagnose(find_project(ctx.obj.get("project")))
    bad = [f for f in findings if not f.ok]
    if as_json:
        _print_json({"ok": not bad, "findings": [f.to_dict() for f in findings]})
    else:
        for finding in findings:
            mark = click.style("ok  ", fg="green") if finding.ok else click.style("FAIL",
                                                                                  fg="red")
            click.echo(f"{mark} {finding.part:<16} {finding.message}")
            if finding.fix and not finding.ok:
                click.echo(f"     {'':<16} fix: {finding.fix}")
        click.echo(f"{len(bad)} problem(s)" if bad else "everything checked is fine")
    if bad:
        sys.exit(1)


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
    from quipu.app.demo import run_demo

    actor = ctx.obj.get("actor") or default_actor("demo")
    if keep is not None:
        sys.exit(run_demo(keep, actor=actor, echo=click.echo, kept=True))
    with tempfile.TemporaryDirectory(prefix="quipu-demo-") as tmp:
        sys.exit(run_demo(Path(tmp) / "digits", actor=actor, echo=click.echo))


# The workspace and run command groups live in their own modules; importing them registers them.

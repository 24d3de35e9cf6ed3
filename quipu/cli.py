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
              help="Seal file to check against (default .quipu/seals.jsonl).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@_edge
def verify(ctx: click.Context, seals: Path | None, as_json: bool) -> None:
    """Recompute the hash chain; exit 1 and name the first bad position if anything changed.

    \b
    Example:
      quipu audit verify --json
    """
    from quipu.adapters.seals.local import LocalSealKeeper
    from quipu.core.audit import verify_log

    root = find_project(ctx.obj.get("project"))
    store = open_store(root, load_config(root))
    try:
        sealed = LocalSealKeeper(_seal_file(root, seals)).read_all()
        report = verify_log(store, sealed)
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


# --- workspaces, for people -----------------------------------------------------------------------


@main.group()
def workspace() -> None:
    """Workspaces, slots and versions (the same operations agents use over MCP).

    \b
    Example:
      quipu workspace create baseline --goal "simple CNN" --reason "establish a baseline first"
    """


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


@workspace.command("create")
@click.argument("name")
@click.option("--goal", required=True, help="What this line of work is trying to achieve.")
@click.option("--reason", required=True, help="Why you are creating it (>= 15 characters).")
@click.option("--from-workspace", default=None, help="Fork from this workspace.")
@click.option("--from-version", default=None,
              help="Fork from this version (needs --from-workspace).")
@_json_option
@click.pass_context
@_edge
def ws_create(ctx: click.Context, name: str, goal: str, reason: str, from_workspace: str | None,
              from_version: str | None, as_json: bool) -> None:
    """Create a workspace (empty, or forked from another workspace's version).

    \b
    Example:
      quipu workspace create wide --goal "wider layers" --reason "test capacity hypothesis" \\
          --from-workspace baseline --from-version v3
    """
    with _project(ctx) as q:
        _show(q.create_workspace(name, goal, reason, from_workspace=from_workspace,
                                 from_version=from_version), as_json)


@workspace.command("mount")
@click.argument("name")
@click.argument("slot")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def ws_mount(ctx: click.Context, name: str, slot: str, reason: str, as_json: bool) -> None:
    """Copy a workspace's current version into a free slot to edit it.

    \b
    Example:
      quipu workspace mount baseline w1 --reason "tune the learning rate schedule"
    """
    with _project(ctx) as q:
        _show(q.mount(name, slot, reason), as_json)


@workspace.command("hibernate")
@click.argument("slot")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def ws_hibernate(ctx: click.Context, slot: str, reason: str, as_json: bool) -> None:
    """Save the slot's edits (if any) and free the slot.

    \b
    Example:
      quipu workspace hibernate w1 --reason "switching to the augmentation idea"
    """
    with _project(ctx) as q:
        _show(q.hibernate(slot, reason), as_json)


@workspace.command("save")
@click.argument("slot")
@click.option("--message", "-m", required=True, help="What changed and why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def ws_save(ctx: click.Context, slot: str, message: str, as_json: bool) -> None:
    """Save the slot as a new version (an unchanged slot returns its current version).

    \b
    Example:
      quipu workspace save w1 -m "halve the learning rate after epoch 5"
    """
    with _project(ctx) as q:
        _show(q.save_version(slot, message), as_json)


@workspace.command("rollback")
@click.argument("slot")
@click.argument("version")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def ws_rollback(ctx: click.Context, slot: str, version: str, reason: str, as_json: bool) -> None:
    """Make the slot exactly a version's tree (unsaved edits are saved first).

    \b
    Example:
      quipu workspace rollback w1 v2 --reason "v3's augmentation hurt accuracy"
    """
    with _project(ctx) as q:
        _show(q.rollback(slot, version, reason), as_json)


@workspace.command("diff")
@click.argument("target")
@click.argument("against", required=False)
@_json_option
@click.pass_context
@_edge
def ws_diff(ctx: click.Context, target: str, against: str | None, as_json: bool) -> None:
    """Diff a slot, workspace@vN or workspace against another (default: its base).

    \b
    Example:
      quipu workspace diff w1            # unsaved edits
      quipu workspace diff baseline@v3 v1
    """
    with _project(ctx) as q:
        _show(q.diff(target, against), as_json)


@workspace.command("versions")
@click.argument("name")
@click.option("--include-pruned", is_flag=True, help="Also list pruned versions.")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True)
@_json_option
@click.pass_context
@_edge
def ws_versions(ctx: click.Context, name: str, include_pruned: bool, limit: int, offset: int,
                as_json: bool) -> None:
    """List a workspace's versions, newest first.

    \b
    Example:
      quipu workspace versions baseline --include-pruned
    """
    with _project(ctx) as q:
        result = q.manage_versions(name, "list", limit=limit, offset=offset,
                                   include_pruned=include_pruned)
    if as_json:
        _print_json(result)
        return
    for v in result["versions"]:
        flags = (" [pruned]" if v.get("pruned") else "") + (
            f" tags={','.join(v['tags'])}" if v.get("tags") else "")
        click.echo(f"{v['version']:>5}  {v['created_at']}  {v['file_count']} files{flags}  "
                   f"{v['message']}")


def _version_action(action: str) -> Callable[..., None]:
    @click.argument("name")
    @click.option("--version", "version", default=None, help="The version, e.g. v3.")
    @click.option("--tag", default=None, help="Tag name (tag/untag).")
    @click.option("--from-version", default=None, help="Range start (prune/unprune).")
    @click.option("--to-version", default=None, help="Range end, inclusive (prune/unprune).")
    @click.option("--reason", default=None, help="Why (>= 15 characters; required to prune).")
    @_json_option
    @click.pass_context
    @_edge
    def command(ctx: click.Context, name: str, version: str | None, tag: str | None,
                from_version: str | None, to_version: str | None, reason: str | None,
                as_json: bool) -> None:
        with _project(ctx) as q:
            _show(q.manage_versions(name, action, version=version, tag=tag, reason=reason,
                                    from_version=from_version, to_version=to_version), as_json)

    return command


_VERSION_HELP = {
    "tag": ("Tag a version (tags are unique per workspace and protect from pruning).",
            "quipu workspace tag baseline --version v3 --tag best-acc"),
    "untag": ("Remove a tag.", "quipu workspace untag baseline --tag best-acc"),
    "prune": ("Soft-prune a version or a range (reversible; tagged ones are kept).",
              "quipu workspace prune baseline --from-version v1 --to-version v4 "
              "--reason \"dead ends from the first day\""),
    "unprune": ("Bring pruned versions back.",
                "quipu workspace unprune baseline --version v2 --reason \"need it to compare\""),
}
for _action, (_help, _example) in _VERSION_HELP.items():
    workspace.command(_action, help=f"{_help}\n\n\b\nExample:\n  {_example}")(
        _version_action(_action))


@workspace.command("delete")
@click.argument("name")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def ws_delete(ctx: click.Context, name: str, reason: str, as_json: bool) -> None:
    """Retire an unmounted workspace (its history stays in the log).

    \b
    Example:
      quipu workspace delete scratch --reason "abandoned: the idea was already tested"
    """
    with _project(ctx) as q:
        _show(q.delete_workspace(name, reason), as_json)


@workspace.command("inspect")
@click.argument("name")
@_json_option
@click.pass_context
@_edge
def ws_inspect(ctx: click.Context, name: str, as_json: bool) -> None:
    """Goal, slot, versions, tags and lineage of one workspace.

    \b
    Example:
      quipu workspace inspect baseline --json
    """
    with _project(ctx) as q:
        result = q.inspect_workspace(name)
    if as_json:
        _print_json(result)
        return
    versions = result.pop("versions", [])
    _show(result, False)
    for v in versions:
        click.echo(f"  {v['version']:>5}  {v['message']}")


@workspace.command("thought")
@click.argument("text")
@click.option("--workspace", "ws", default=None, help="The workspace it is about.")
@click.option("--run-id", default=None, help="The run it is about.")
@_json_option
@click.pass_context
@_edge
def ws_thought(ctx: click.Context, text: str, ws: str | None, run_id: str | None,
               as_json: bool) -> None:
    """Write down a thought (hypothesis, observation, plan).

    \b
    Example:
      quipu workspace thought "val loss diverges after epoch 8: try weight decay" \\
          --workspace baseline
    """
    with _project(ctx) as q:
        _show(q.log_thought(text, workspace=ws, run_id=run_id), as_json)


@workspace.command("thoughts")
@click.argument("name")
@click.option("--limit", default=50, show_default=True)
@_json_option
@click.pass_context
@_edge
def ws_thoughts(ctx: click.Context, name: str, limit: int, as_json: bool) -> None:
    """The thoughts recorded about a workspace, newest first.

    \b
    Example:
      quipu workspace thoughts baseline --limit 10
    """
    with _project(ctx) as q:
        result = q.get_workspace_thoughts(name, limit=limit)
    if as_json:
        _print_json(result)
        return
    for t in result["thoughts"]:
        click.echo(f"[{t['at']}] {t['actor']}: {t['thought']}")


@workspace.command("log")
@click.option("--workspace", "ws", default=None, help="Only this workspace.")
@click.option("--limit", default=20, show_default=True)
@_json_option
@click.pass_context
@_edge
def ws_log(ctx: click.Context, ws: str | None, limit: int, as_json: bool) -> None:
    """Recent actions: who did what, why and when.

    \b
    Example:
      quipu workspace log --workspace baseline
    """
    with _project(ctx) as q:
        result = q.get_audit_log(limit=limit, workspace=ws)
    if as_json:
        _print_json(result)
        return
    for e in result["entries"]:
        click.echo(json.dumps(e, default=str))


# --- runs, for people ----------------------------------------------------------------------------


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


@main.group("run")
def run_group() -> None:
    """Start, watch, cancel and finalize runs of a workspace's pipeline.

    Runs are executed by the workers of a running `quipu serve` (the MCP server an agent
    starts); these commands record requests and verdicts in the same log.

    \b
    Example:
      quipu run start w1 --reason "try a wider first layer" --spec spec.json --wait
    """


@run_group.command("start")
@click.argument("workspace")
@click.option("--reason", required=True, help="Why you run it (>= 15 characters).")
@click.option("--spec", "spec", default=None,
              help="results_spec as inline JSON or a JSON/YAML file (see docs/results.md); "
              "required unless --dry-run.")
@click.option("--stage", "stages", multiple=True, help="Run only this stage (repeatable).")
@click.option("--config", "config", default=None,
              help="Config override as JSON: flat for one stage, {stage: {...}} for several.")
@click.option("--inputs", "inputs", default=None, help="Inputs override as JSON.")
@click.option("--group", "group", default=None, help="Experiment group name.")
@click.option("--wait", is_flag=True,
              help="Execute the stages in this process (as well as any running serve/worker) "
              "and block until every stage run has ended.")
@click.option("--timeout", default=3600.0, show_default=True,
              help="With --wait: give up waiting after this many seconds.")
@click.option("--dry-run", is_flag=True, help="Validate and preview; record nothing.")
@_json_option
@click.pass_context
@_edge
def run_start(ctx: click.Context, workspace: str, reason: str, spec: str | None,
              stages: tuple[str, ...], config: str | None, inputs: str | None,
              group: str | None, wait: bool, timeout: float, dry_run: bool,
              as_json: bool) -> None:
    """Start stages of WORKSPACE's pipeline (a workspace, or the slot it is mounted in).

    From a slot, unsaved edits are saved as a version first. Refused with
    finalization_required while an ended run of the workspace is not finalized.

    \b
    Example:
      quipu run start w1 --reason "lr 0.01 instead of 0.1" \\
          --spec '{"primary_metric": "accuracy", "direction": "maximize", "min_value": 0.8,
                   "goal_value": 0.9, "dataset_split": "val", "tolerance": 0.01,
                   "context": "digits val accuracy; the baseline reaches 0.85"}' \\
          --config '{"train": {"lr": 0.01}}' --wait
      quipu run start w1 --reason "check the new pipeline" --dry-run
    """
    with _project(ctx) as q:
        if wait and not dry_run:
            # Execute here too: claims are exclusive, so a running `quipu serve` or
            # `quipu worker` on the same project never runs a stage twice with this one.
            q.start_workers()
        result = q.run(
            workspace, reason=reason,
            results_spec=_json_arg(spec, "--spec") if spec is not None else None,
            stages=list(stages) or None,
            config_override=_json_arg(config, "--config") if config is not None else None,
            inputs_override=_json_arg(inputs, "--inputs") if inputs is not None else None,
            experiment_group=group, wait=wait, dry_run=dry_run, wait_timeout=timeout)
    if as_json:
        _print_json(result)
        return
    if dry_run:
        click.echo(f"valid: {result['valid']}; stages: {', '.join(result['stages_to_run'])}")
        for problem in result.get("errors", []) + result.get("warnings", []):
            click.echo(f"  [{problem['code']}] {problem['where']}: {problem['message']}"
                       + (f" (hint: {problem['hint']})" if problem.get("hint") else ""))
        return
    click.echo(f"{result['pipeline_run_id']} on {result['workspace']}@{result['version']}")
    for row in result.get("stage_runs") or result["queued"]:
        state = row.get("state", "queued")
        click.echo(f"  {row['stage_run_id']}  {row.get('stage', '')}  {state}")


@run_group.command("validate")
@click.argument("workspace")
@_json_option
@click.pass_context
@_edge
def run_validate(ctx: click.Context, workspace: str, as_json: bool) -> None:
    """Check WORKSPACE's pipeline.yaml and configs; list every problem; record nothing.

    \b
    Example:
      quipu run validate w1
    """
    with _project(ctx) as q:
        result = q.validate_config(workspace)
    if as_json:
        _print_json(result)
    else:
        click.echo(f"valid: {result['valid']}; stages: {', '.join(result['stages_to_run'])}")
        for problem in result.get("errors", []) + result.get("warnings", []):
            click.echo(f"  [{problem['code']}] {problem['where']}: {problem['message']}")
    if not result["valid"]:
        sys.exit(1)


@run_group.command("finalize")
@click.argument("run_id")
@click.option("--results", required=True,
              help="Your verdict as inline JSON or a JSON/YAML file (see docs/results.md).")
@_json_option
@click.pass_context
@_edge
def run_finalize(ctx: click.Context, run_id: str, results: str, as_json: bool) -> None:
    """Record what an ended run means; releases the workspace's finalization gate.

    \b
    Example:
      quipu run finalize stage-1a2b3c4d5e6f --results '{"primary_metric": "accuracy",
          "direction": "maximize", "value": 0.91, "dataset_split": "val",
          "ml_outcome": "success", "notes": "the wider layer beat the goal of 0.90"}'
      quipu run finalize stage-0f9e8d7c6b5a --results '{"ml_outcome": "unknown",
          "notes": "preprocessing only: nothing to judge"}'
    """
    with _project(ctx) as q:
        _show(q.finalize_run(run_id, _json_arg(results, "--results")), as_json)


@run_group.command("cancel")
@click.argument("run_id")
@click.option("--reason", required=True, help="Why (>= 15 characters).")
@_json_option
@click.pass_context
@_edge
def run_cancel(ctx: click.Context, run_id: str, reason: str, as_json: bool) -> None:
    """Cancel a run that has not ended (and the runs of its pipeline run that wait on it).

    \b
    Example:
      quipu run cancel stage-1a2b3c4d5e6f --reason "wrong learning rate in the config"
    """
    with _project(ctx) as q:
        _show(q.cancel(run_id, reason), as_json)


@run_group.command("logs")
@click.argument("run_id")
@click.option("--tail", default=200, show_default=True, type=click.IntRange(1, 10000),
              help="The last N lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run "
              "ends.")
@click.pass_context
@_edge
def run_logs(ctx: click.Context, run_id: str, tail: int, follow: bool) -> None:
    """Print a stage run's output (stdout, stderr, runtime_log).

    \b
    Example:
      quipu run logs stage-1a2b3c4d5e6f --tail 50 --follow
    """
    with _project(ctx) as q:
        result = q.logs(run_id, tail=tail)
        while True:
            for line in result.get("lines", []):
                click.echo(line if isinstance(line, str) else json.dumps(line, default=str))
            if not follow or result.get("ended", True):
                return
            time.sleep(0.5)
            try:
                result = q.logs(run_id, tail=10000, since=result.get("next"))
            except KeyboardInterrupt:  # pragma: no cover - interactive
                return


@run_group.command("inspect")
@click.argument("run_id")
@_json_option
@click.pass_context
@_edge
def run_inspect(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """State, progress, metrics, outcome and provenance of one stage run.

    \b
    Example:
      quipu run inspect stage-1a2b3c4d5e6f --json | jq '.state'
    """
    with _project(ctx) as q:
        _show(q.inspect_run(run_id), as_json)


def _record_line(row: dict[str, Any]) -> str:
    value = row.get("value")
    if value is None and isinstance(row.get("primary_metric"), dict):
        value = row["primary_metric"].get("value")
    parts = [str(row.get("run_id") or row.get("record_id") or "?"), str(row.get("stage", "")),
             str(row.get("state", "")), str(row.get("version", ""))]
    if value is not None:
        parts.append(f"value={value}")
    if row.get("ml_outcome"):
        parts.append(str(row["ml_outcome"]))
    reason = str(row.get("reason") or "")
    return "  ".join(parts) + (f"  -- {reason}" if reason else "")


@run_group.command("list")
@click.argument("workspace")
@click.option("--stage", default=None, help="Only runs of this stage.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--finalized-only", is_flag=True, help="Only finalized runs.")
@_json_option
@click.pass_context
@_edge
def run_list(ctx: click.Context, workspace: str, stage: str | None, limit: int,
             finalized_only: bool, as_json: bool) -> None:
    """The runs of a workspace, newest first: stage, state, value, verdict, reason.

    \b
    Example:
      quipu run list baseline --stage train --finalized-only
    """
    with _project(ctx) as q:
        result = q.list_history(workspace, stage=stage, limit=limit,
                                finalized_only=finalized_only)
    if as_json:
        _print_json(result)
        return
    for row in result["records"]:
        click.echo(_record_line(row))
    click.echo(f"({len(result['records'])} of {result['total']})")


@run_group.command("unfinalized")
@click.argument("workspace")
@_json_option
@click.pass_context
@_edge
def run_unfinalized(ctx: click.Context, workspace: str, as_json: bool) -> None:
    """The runs of a workspace that ended and await `quipu run finalize`.

    \b
    Example:
      quipu run unfinalized baseline
    """
    with _project(ctx) as q:
        result = q.list_unfinalized_runs(workspace)
    if as_json:
        _print_json(result)
        return
    for row in result.get("runs", []):
        click.echo(_record_line(row))


@main.command()
@click.option("--consumer", default=None,
              help="Whose 'new since last seen' cursor to read alerts against.")
@_json_option
@click.pass_context
@_edge
def dashboard(ctx: click.Context, consumer: str | None, as_json: bool) -> None:
    """The project at a glance: active runs, alerts, runs awaiting finalization, outcomes.

    \b
    Example:
      quipu dashboard --json | jq '.pending_finalization'
    """
    with _project(ctx) as q:
        result = q.dashboard(consumer=consumer)
    if as_json:
        _print_json(result)
        return
    for key, value in result.items():
        click.echo(f"{key}: {json.dumps(value, default=str)}")


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


if __name__ == "__main__":  # pragma: no cover
    main()

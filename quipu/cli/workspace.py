"""`quipu workspace ...`: workspaces, slots and versions, for people."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from quipu.cli._root import _edge, _json_option, _print_json, _project, _show, main

__all__ = ["workspace"]


@main.group()
def workspace() -> None:
    """Workspaces, slots and versions (the same operations agents use over MCP).

    \b
    Example:
      quipu workspace create baseline --goal "simple CNN" --reason "establish a baseline first"
    """


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


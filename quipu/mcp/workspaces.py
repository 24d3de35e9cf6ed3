"""The workspace tools: orientation, the project, workspaces, slots, versions, thoughts, the
audit log.

Each one parses its arguments, calls one ``Quipu`` method and returns its dict; refusals are tool
errors (``_errors.guarded``). Nothing here decides anything. The project is ``engine.q``, read
inside each call (it may not exist yet, or be reopened by ``reload_config``).

Descriptions are short on purpose: every client loads them all into its agent's context
(``tests/e2e/test_mcp_contact.py`` holds them to a budget). What every mutation shares (the
reason rule, name rules, error format) is said once, in the server's instructions.

No ``from __future__ import annotations``: fastmcp reads these signatures at runtime, and the
aliases built in ``register_workspace_tools`` (descriptions naming this project's slots and
minimum reason length) must be real objects.
"""

import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

import mcp.types as mt
from fastmcp import Context, FastMCP
from pydantic import Field

from ._errors import READ_ONLY, WRITE, guarded

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["PROJECT_TOOL_NAMES", "WORKSPACE_TOOL_NAMES", "register_workspace_tools",
           "wording"]

log = logging.getLogger("quipu.mcp")

PROJECT_TOOL_NAMES = ("initialize_project", "reload_config")
WORKSPACE_TOOL_NAMES = (
    "status", "create_workspace", "mount", "hibernate", "save_version", "rollback", "diff",
    "manage_versions", "delete_workspace", "inspect_workspace", "log_thought",
    "get_workspace_thoughts", "get_audit_log",
)

Count = Annotated[int, Field(ge=1, le=500)]
Offset = Annotated[int, Field(ge=0)]
Version = int | str


def wording(engine: "Engine") -> tuple[str, int]:
    """(the slots as listed in descriptions, the minimum reason length) of the open project,
    or of a default project before one exists."""
    if engine.opened is None:
        return "w1, w2, ... (status() lists them)", 15
    config = engine.opened.config
    return ", ".join(config.slot_names()), config.reason_min_length


def register_workspace_tools(mcp: FastMCP, engine: "Engine") -> None:
    """Add the project and workspace tools to ``mcp``, driving ``engine``'s project."""
    slots, n = wording(engine)

    Reason = Annotated[str, Field(description=f"Why, at least {n} characters (kept in the log "
                                  "forever).")]
    Workspace = Annotated[str, Field(description="Workspace name.")]
    Slot = Annotated[str, Field(description=f"Slot: {slots}.")]

    # --- the project ---------------------------------------------------------------------------

    @mcp.tool(annotations=WRITE)
    async def initialize_project(
        ctx: Context,
        goal: Annotated[str, Field(description="The research goal, shown atop STATE.md.")],
        name: Annotated[str | None, Field(description="Project name (default: the directory "
                                          "name).")] = None,
        slots: Annotated[int, Field(ge=1, le=64, description="How many slots (w1..wN).")] = 3,
        path: Annotated[str | None, Field(description="Directory to create it in, relative to "
                                          "where the server started (default: there).")] = None,
    ) -> dict[str, Any]:
        """Create a Quipu project (quipu.yaml, .quipu/, workspaces/w1..wN) and serve it.

        Only when status() answers no_project. Returns {project, root, goal, slots, log, next}.
        """
        result = guarded("initialize_project", lambda: engine.initialize(
            name=name, goal=goal, slots=slots, path=path), after=lambda: _refresh(mcp, engine))
        await _announce(ctx)
        return result

    @mcp.tool(annotations=WRITE)
    async def reload_config(ctx: Context) -> dict[str, Any]:
        """Re-read quipu.yaml after you edited it (slots, reason_min_length, data roots, ...).

        The file is validated first: a bad one is refused (invalid_config) and changes nothing.
        Running stages keep running. Returns {reloaded, changed, slots, reason_min_length}.
        """
        result = guarded("reload_config", engine.reload, after=lambda: _refresh(mcp, engine))
        if result["reloaded"]:
            await _announce(ctx)
        return result

    # --- orientation ---------------------------------------------------------------------------

    @mcp.tool(annotations=READ_ONLY)
    async def status() -> dict[str, Any]:
        """Call status() first in every session, and whenever unsure what is where.

        Returns the project, each slot with its workspace and dirty flag (unsaved edits), the
        log head and state_md (STATE.md, the memory across sessions: verdicts awaited with the
        exact call, bests, recent thoughts and actions).
        """
        return guarded("status", lambda: engine.q.status())

    # --- workspaces ----------------------------------------------------------------------------

    @mcp.tool(annotations=WRITE)
    async def create_workspace(
        name: Annotated[str, Field(description="1-64 letters, digits, '_', '-', '.'.")],
        goal: Annotated[str, Field(description="What it tries to find out, e.g. 'does cosine "
                                   "LR beat step decay'.")],
        reason: Reason,
        from_workspace: Annotated[str | None, Field(description="Branch from this workspace "
                                  "(records the lineage).")] = None,
        from_version: Annotated[Version | None, Field(description="Its version to branch "
                                "from: 'v3', 3 or a tag (default: its current).")] = None,
    ) -> dict[str, Any]:
        """Create a workspace (one per hypothesis), empty or branched; then mount() it.

        Returns {workspace, forked_from, version, position}.
        """
        return guarded("create_workspace", lambda: engine.q.create_workspace(
            name, goal, reason, from_workspace=from_workspace, from_version=from_version))

    @mcp.tool(annotations=WRITE)
    async def mount(workspace: Workspace, slot: Slot, reason: Reason) -> dict[str, Any]:
        """Put a workspace's current version into a free slot; edit the files under the
        returned path with your file tools, then save_version().

        Returns {workspace, slot, version, path, position, recent_thoughts}.
        """
        return guarded("mount", lambda: engine.q.mount(workspace, slot, reason))

    @mcp.tool(annotations=WRITE)
    async def hibernate(slot: Slot, reason: Reason) -> dict[str, Any]:
        """Free a slot: unsaved edits are saved as a version first, then the slot is emptied.

        Returns {workspace, slot, auto_saved, saved_version, current_version, position}.
        """
        return guarded("hibernate", lambda: engine.q.hibernate(slot, reason))

    @mcp.tool(annotations={**WRITE, "destructiveHint": True})
    async def delete_workspace(workspace: Workspace, reason: Reason) -> dict[str, Any]:
        """Retire an unmounted workspace: gone from status and STATE.md, kept in the log.

        Returns {workspace, deleted, position}.
        """
        return guarded("delete_workspace", lambda: engine.q.delete_workspace(workspace, reason))

    @mcp.tool(annotations=READ_ONLY)
    async def inspect_workspace(
        name: Workspace,
        version_limit: Annotated[Count, Field(description="Versions to list.")] = 10,
        version_offset: Offset = 0,
    ) -> dict[str, Any]:
        """One workspace: goal, slot, dirty, lineage, versions (newest first, pruned marked,
        version_total counts them) and tags."""
        return guarded("inspect_workspace", lambda: engine.q.inspect_workspace(
            name, version_limit=version_limit, version_offset=version_offset))

    # --- versions ------------------------------------------------------------------------------

    @mcp.tool(annotations=WRITE)
    async def save_version(
        slot: Slot,
        message: Annotated[str, Field(description=f"What changed and why, at least {n} "
                                      "characters.")],
    ) -> dict[str, Any]:
        """Snapshot a slot's files as a new version: before a risky edit, after a fix works.

        An unchanged slot returns its version with created=false. Returns {workspace, slot,
        version, number, created, manifest, file_count, total_bytes, position}.
        """
        return guarded("save_version", lambda: engine.q.save_version(slot, message))

    @mcp.tool(annotations=WRITE)
    async def rollback(
        slot: Slot,
        version: Annotated[Version, Field(description="'v3', 3, or a tag.")],
        reason: Reason,
    ) -> dict[str, Any]:
        """Make a slot's files exactly an earlier version's (unsaved edits are saved first, so
        it can be undone). Returns {workspace, slot, version, files_reverted,
        auto_saved_version, position}.
        """
        return guarded("rollback", lambda: engine.q.rollback(slot, version, reason))

    @mcp.tool(annotations=READ_ONLY)
    async def diff(
        target: Annotated[str, Field(description="A slot (its working files), 'ws@v3', "
                                     "'ws@tag', or a workspace (needs against).")],
        against: Annotated[str | None, Field(description="A slot, 'ws@v2' or 'v2'. Default: "
                                             "a slot's latest version, a version's "
                                             "parent.")] = None,
    ) -> dict[str, Any]:
        """A unified diff: diff('w1') shows unsaved edits, diff('ws@v5', 'v3') two versions.

        Returns {left, right, has_changes, summary, files_changed, diff_text}.
        """
        return guarded("diff", lambda: engine.q.diff(target, against))

    @mcp.tool(annotations=WRITE)
    async def manage_versions(
        workspace: Workspace,
        action: Literal["list", "tag", "untag", "prune", "unprune"],
        version: Annotated[Version | None, Field(description="tag, prune, unprune: 'v3' or "
                                                 "3.")] = None,
        tag: Annotated[str | None, Field(description="tag, untag: e.g. 'baseline'.")] = None,
        reason: Annotated[str | None, Field(description=f"Every action but list: why, at "
                                            f"least {n} characters.")] = None,
        from_version: Annotated[Version | None, Field(description="prune, unprune: first of "
                                                      "an inclusive range.")] = None,
        to_version: Annotated[Version | None, Field(description="Last of the range.")] = None,
        limit: Count = 50,
        offset: Offset = 0,
        include_pruned: bool = False,
    ) -> dict[str, Any]:
        """List, tag, untag, prune or unprune a workspace's versions.

        Tagged versions cannot be pruned; pruning hides (reversibly), never deletes; a range
        skips tagged versions and the current one.
        """
        return guarded("manage_versions", lambda: engine.q.manage_versions(
            workspace, action, version=version, tag=tag, reason=reason,
            from_version=from_version, to_version=to_version, limit=limit, offset=offset,
            include_pruned=include_pruned))

    # --- notes and history ---------------------------------------------------------------------

    @mcp.tool(annotations=WRITE)
    async def log_thought(
        thought: Annotated[str, Field(description="An observation, hypothesis, decision or "
                                      "plan, and why.")],
        workspace: Annotated[str | None, Field(description="The workspace it is "
                                               "about.")] = None,
        run_id: Annotated[str | None, Field(description="The run it is about.")] = None,
    ) -> dict[str, Any]:
        """Write down your reasoning for the next session (and a person): whenever you form or
        drop a hypothesis, or decide what to try next. Shown in STATE.md and by mount().
        """
        return guarded("log_thought", lambda: engine.q.log_thought(
            thought, workspace=workspace, run_id=run_id))

    @mcp.tool(annotations=READ_ONLY)
    async def get_workspace_thoughts(workspace: Workspace, limit: Count = 50,
                                     offset: Offset = 0) -> dict[str, Any]:
        """The thoughts logged about a workspace, newest first: the reasoning behind it when
        you resume it."""
        return guarded("get_workspace_thoughts", lambda: engine.q.get_workspace_thoughts(
            workspace, limit=limit, offset=offset))

    @mcp.tool(annotations=READ_ONLY)
    async def get_audit_log(
        limit: Count = 20,
        workspace: Annotated[str | None, Field(description="Only about this "
                                               "workspace.")] = None,
    ) -> dict[str, Any]:
        """Recorded actions, newest first: who did what, when and why. Returns {entries}."""
        return guarded("get_audit_log", lambda: engine.q.get_audit_log(
            limit=limit, workspace=workspace))


def _refresh(mcp: FastMCP, engine: "Engine") -> None:
    """Register every tool again, so descriptions name the project's slots and reason length
    as they are now (after initialize_project or reload_config)."""
    from .server import register_tools

    register_tools(mcp, engine)


async def _announce(ctx: Context) -> None:
    """Tell the client the tool list changed (descriptions name the new slots); a client that
    cannot take the notification loses nothing but fresh descriptions."""
    try:
        await ctx.send_notification(mt.ToolListChangedNotification())
    except Exception:
        log.warning("the tool list changed, but the client could not be told", exc_info=True)

"""The workspace tools: orientation, workspaces, slots, versions, thoughts and the audit log.

Each one parses its arguments, calls one ``Quipu`` method and returns its dict; refusals are tool
errors (``_errors.guarded``). Nothing here decides anything.

No ``from __future__ import annotations``: fastmcp reads these signatures at runtime, and the
aliases built in ``register_workspace_tools`` (descriptions naming this project's slots and
minimum reason length) must be real objects.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastmcp import FastMCP
from pydantic import Field

from ._errors import READ_ONLY, WRITE, guarded

if TYPE_CHECKING:
    from quipu.app.facade import Quipu

__all__ = ["WORKSPACE_TOOL_NAMES", "register_workspace_tools"]

WORKSPACE_TOOL_NAMES = (
    "status", "create_workspace", "mount", "hibernate", "save_version", "rollback", "diff",
    "manage_versions", "delete_workspace", "inspect_workspace", "log_thought",
    "get_workspace_thoughts", "get_audit_log",
)

Count = Annotated[int, Field(ge=1, le=500)]
Offset = Annotated[int, Field(ge=0)]
Version = int | str




def register_workspace_tools(mcp: FastMCP, q: "Quipu") -> None:
    """Add the workspace tools to ``mcp``, driving the open project ``q``."""
    slots = ", ".join(q.config.slot_names())
    n = q.config.reason_min_length

    reason_doc = (f"Why you are doing this, at least {n} characters: a sentence a reader will "
                  "understand a year from now (recorded in the log forever).")
    Reason = Annotated[str, Field(description=reason_doc)]
    Workspace = Annotated[str, Field(description="Workspace name (1-64 letters, digits, '_', "
                                     "'-' or '.'; starts and ends with a letter or digit).")]
    Slot = Annotated[str, Field(description=f"A slot name; this project has: {slots}.")]

    # --- orientation ---------------------------------------------------------------------------

    @mcp.tool(annotations=READ_ONLY)
    async def status() -> dict[str, Any]:
        """Call status() first in every new session, and whenever you are unsure what is where.

        Returns the project (name, goal), every slot with the workspace mounted in it and
        whether it has unsaved edits (dirty), the workspace count, the log's head position,
        and state_md: the full text of STATE.md, which is the project's memory across
        sessions (runs awaiting a verdict with the exact call, bests, recent thoughts and
        actions). Never changes anything.
        """
        return guarded("status", q.status)

    # --- workspaces ----------------------------------------------------------------------------

    @mcp.tool(annotations=WRITE)
    async def create_workspace(
        name: Workspace,
        goal: Annotated[str, Field(description="What this workspace is trying to find out or "
                                   "achieve, e.g. 'does a cosine LR schedule beat step decay "
                                   "on CIFAR-10'.")],
        reason: Reason,
        from_workspace: Annotated[str | None, Field(description="Branch from this existing "
                                  "workspace (its current version unless from_version is "
                                  "given). Omit for an empty workspace.")] = None,
        from_version: Annotated[Version | None, Field(description="Version of from_workspace "
                                "to branch from: 'v3', 3, or one of its tags. Needs "
                                "from_workspace.")] = None,
    ) -> dict[str, Any]:
        """Create a workspace for a new idea or line of experiments; it is NOT mounted.

        Use one workspace per hypothesis so each has its own versions and history. To build on
        earlier work, branch with from_workspace (and optionally from_version) instead of
        copying files by hand: the lineage is recorded. Then mount() it to edit files.
        Returns {workspace, forked_from, version, position}.
        Errors: invalid_name, reason_too_short, reason_missing, goal_missing, workspace_exists,
        unknown_workspace, unknown_version, from_version_alone, nothing_to_fork.
        """
        return guarded("create_workspace", lambda: q.create_workspace(
            name, goal, reason, from_workspace=from_workspace, from_version=from_version))

    @mcp.tool(annotations=WRITE)
    async def mount(workspace: Workspace, slot: Slot, reason: Reason) -> dict[str, Any]:
        """Put a workspace's current version into a free slot so you can edit its files.

        After mounting, edit the files under the returned path with your ordinary file tools;
        Quipu sees them when you save_version(). A workspace can be mounted in one slot at a
        time and a slot holds one workspace; hibernate() frees a slot. Returns {workspace,
        slot, version, path, position, recent_thoughts} (recent_thoughts: the last notes
        logged about this workspace, to pick up where you left off).
        Errors: unknown_workspace, unknown_slot, slot_occupied, already_mounted,
        slot_not_empty, reason_too_short.
        """
        return guarded("mount", lambda: q.mount(workspace, slot, reason))

    @mcp.tool(annotations=WRITE)
    async def hibernate(slot: Slot, reason: Reason) -> dict[str, Any]:
        """Stop working on the workspace in a slot: save its edits, then free the slot.

        Use when you switch to another idea or end a session. Unsaved edits are saved as a new
        version first (auto_saved, saved_version), so nothing is lost; the slot directory is
        then emptied. mount() the workspace again to continue. Returns {workspace, slot,
        auto_saved, saved_version, current_version, position}.
        Errors: unknown_slot, slot_empty, reason_too_short.
        """
        return guarded("hibernate", lambda: q.hibernate(slot, reason))

    @mcp.tool(annotations={**WRITE, "destructiveHint": True})
    async def delete_workspace(workspace: Workspace, reason: Reason) -> dict[str, Any]:
        """Retire a workspace you will not come back to. It must not be mounted.

        The workspace disappears from status and STATE.md, but its history stays in the log
        for audits. Prefer leaving workspaces in place unless they clutter the project.
        Returns {workspace, deleted, position}.
        Errors: unknown_workspace, workspace_mounted (hibernate() it first), reason_too_short.
        """
        return guarded("delete_workspace", lambda: q.delete_workspace(workspace, reason))

    @mcp.tool(annotations=READ_ONLY)
    async def inspect_workspace(
        name: Workspace,
        version_limit: Annotated[Count, Field(description="How many versions to list, "
                                 "newest first.")] = 10,
        version_offset: Annotated[Offset, Field(description="Skip this many of the newest "
                                  "versions (paging).")] = 0,
    ) -> dict[str, Any]:
        """Everything about one workspace: goal, where it is mounted, lineage, versions, tags.

        Use before mounting or branching from a workspace, or to find the version to roll
        back to. Versions include pruned ones (marked); version_total counts them all. When
        mounted, dirty says whether the slot has unsaved edits. Never changes anything.
        Errors: unknown_workspace, invalid_name.
        """
        return guarded("inspect_workspace", lambda: q.inspect_workspace(
            name, version_limit=version_limit, version_offset=version_offset))

    # --- versions ------------------------------------------------------------------------------

    @mcp.tool(annotations=WRITE)
    async def save_version(
        slot: Slot,
        message: Annotated[str, Field(description=f"What changed and why, at least {n} "
                                      "characters, like a good commit message.")],
    ) -> dict[str, Any]:
        """Snapshot the files in a slot as a new numbered version of its workspace.

        Save at every point you might want to return to or compare against: before a risky
        edit, after a fix works. Versions are cheap and never reused; saving an unchanged slot
        returns the existing version with created=false. Returns {workspace, slot, version
        ('v3'), number, created, manifest, file_count, total_bytes, position}.
        Errors: unknown_slot, slot_empty, nothing_to_save, reason_too_short (for the message).
        """
        return guarded("save_version", lambda: q.save_version(slot, message))

    @mcp.tool(annotations=WRITE)
    async def rollback(
        slot: Slot,
        version: Annotated[Version, Field(description="The version to restore: 'v3', 3, or a "
                                          "tag of the mounted workspace.")],
        reason: Reason,
    ) -> dict[str, Any]:
        """Make the slot's files exactly those of an earlier version.

        Use to undo edits that did not work out. Unsaved edits are saved as a version first
        (auto_saved_version), so a rollback can itself be undone. Call diff() first if you are
        unsure what will change. Returns {workspace, slot, version, files_reverted,
        auto_saved_version, position}.
        Errors: unknown_slot, slot_empty, unknown_version, version_pruned, invalid_version,
        reason_too_short.
        """
        return guarded("rollback", lambda: q.rollback(slot, version, reason))

    @mcp.tool(annotations=READ_ONLY)
    async def diff(
        target: Annotated[str, Field(description="What to look at: a slot ('w1', its working "
                                     "files), a version 'workspace@v3' or 'workspace@tag', or "
                                     "a workspace name (needs against).")],
        against: Annotated[str | None, Field(description="What to compare with: a slot, "
                                     "'workspace@v2', or 'v2' (a version of the target's "
                                     "workspace). Default: a slot is compared with its latest "
                                     "version, a version with its parent.")] = None,
    ) -> dict[str, Any]:
        """Show what changed, as a unified diff.

        diff('w1') shows your unsaved edits; diff('ws@v5', 'v3') compares two versions.
        Returns {left, right, has_changes, summary, files_changed [{path, change}],
        diff_text}. Never changes anything.
        Errors: unknown_slot, slot_empty, unknown_workspace, unknown_version, invalid_version,
        ambiguous_version, diff_needs_against.
        """
        return guarded("diff", lambda: q.diff(target, against))

    @mcp.tool(annotations=WRITE)
    async def manage_versions(
        workspace: Workspace,
        action: Annotated[Literal["list", "tag", "untag", "prune", "unprune"], Field(
            description="list: page through versions; tag/untag: name a version (tagged "
            "versions cannot be pruned); prune/unprune: hide or restore versions "
            "(soft, reversible).")],
        version: Annotated[Version | None, Field(description="One version ('v3' or 3): "
                           "for tag, prune and unprune.")] = None,
        tag: Annotated[str | None, Field(description="The tag name: for tag and untag, "
                       "e.g. 'best'.")] = None,
        reason: Annotated[str | None, Field(description=f"Why (at least {n} characters): "
                          "required for every action but list.")] = None,
        from_version: Annotated[Version | None, Field(description="First version of an "
                                "inclusive range to prune or unprune (with to_version).")] = None,
        to_version: Annotated[Version | None, Field(description="Last version of the "
                              "range.")] = None,
        limit: Annotated[Count, Field(description="list: how many versions.")] = 50,
        offset: Annotated[Offset, Field(description="list: skip this many (paging).")] = 0,
        include_pruned: Annotated[bool, Field(description="list: include pruned "
                                  "versions.")] = False,
    ) -> dict[str, Any]:
        """List, tag, untag, prune or unprune the versions of a workspace.

        Tag a version you will want to find again ('best', 'baseline'); prune dead ends so
        listings stay short (pruning hides, never deletes; a range skips tagged versions and
        the current one). list returns {workspace, versions, total, has_more}; tag returns
        {workspace, version, tag}; untag {workspace, version, untagged}; prune/unprune
        {workspace, pruned|unpruned, skipped}.
        Errors: unknown_workspace, unknown_version, invalid_version, tag_args, tag_taken,
        unknown_tag, version_tagged, version_current, version_missing, bad_range,
        reason_too_short.
        """
        return guarded("manage_versions", lambda: q.manage_versions(
            workspace, action, version=version, tag=tag, reason=reason,
            from_version=from_version, to_version=to_version, limit=limit, offset=offset,
            include_pruned=include_pruned))

    # --- notes and history ---------------------------------------------------------------------

    @mcp.tool(annotations=WRITE)
    async def log_thought(
        thought: Annotated[str, Field(description="What you are thinking: an observation, a "
                                      "hypothesis, a decision and why, a plan.")],
        workspace: Annotated[str | None, Field(description="The workspace it is about, if "
                                               "any.")] = None,
        run_id: Annotated[str | None, Field(description="The run it is about, if any.")] = None,
    ) -> dict[str, Any]:
        """Write down your reasoning so the next session (and a human) can follow it.

        Log a thought whenever you form or drop a hypothesis, notice something surprising, or
        decide what to try next. Thoughts appear in STATE.md and mount() returns the recent
        ones for a workspace. Returns {logged, position, workspace}.
        Errors: thought_missing, unknown_workspace, invalid_name.
        """
        return guarded("log_thought", lambda: q.log_thought(thought, workspace=workspace,
                                                          run_id=run_id))

    @mcp.tool(annotations=READ_ONLY)
    async def get_workspace_thoughts(
        workspace: Workspace,
        limit: Annotated[Count, Field(description="How many thoughts, newest first.")] = 50,
        offset: Annotated[Offset, Field(description="Skip this many (paging).")] = 0,
    ) -> dict[str, Any]:
        """Read the thoughts logged about one workspace, newest first.

        Use when resuming work on a workspace to recover the reasoning behind it.
        Returns {workspace, thoughts}. Errors: unknown_workspace, invalid_name.
        """
        return guarded("get_workspace_thoughts", lambda: q.get_workspace_thoughts(
            workspace, limit=limit, offset=offset))

    @mcp.tool(annotations=READ_ONLY)
    async def get_audit_log(
        limit: Annotated[Count, Field(description="How many entries, newest first.")] = 20,
        workspace: Annotated[str | None, Field(description="Only entries about this "
                                               "workspace.")] = None,
    ) -> dict[str, Any]:
        """The recorded actions: who did what, when and why, newest first.

        Use to check what happened in a project (or one workspace) recently, e.g. after a
        break or to confirm a change was recorded. Returns {entries}.
        """
        return guarded("get_audit_log", lambda: q.get_audit_log(limit=limit,
                                                              workspace=workspace))

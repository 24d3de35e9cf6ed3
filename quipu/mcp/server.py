"""The MCP server: one thin tool per facade call, errors mapped at the edge.

Each tool parses its arguments (pydantic, from the signature), calls one method of the
``Quipu`` facade and returns the facade's dict unchanged. Refusals come back as tool errors
(see ``_errors``); nothing here decides anything. The tools live in a module per domain
(``workspaces``, ``runs``); this module builds the server and serves it over stdio.

Threading: the tools never run concurrently with each other. fastmcp runs sync tools in a
worker-thread pool, so the tools here are ``async`` and call the facade synchronously on the
event loop's thread: tool calls cannot interleave, and each runs on the thread that opened the
project (``serve``). The executor's thread works beside them; what they share (the log, the
views, the snapshot store, STATE.md) serialises itself. A call blocks the loop while it runs,
which suits stdio, where one agent waits for each answer.

The tool modules avoid ``from __future__ import annotations``: their signatures use aliases
built at registration (descriptions that name this project's slots and minimum reason length),
and fastmcp reads signatures at runtime, so the annotations must be real objects.
"""

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from fastmcp import FastMCP

from quipu.mcp.lineage import LINEAGE_TOOL_NAMES, register_lineage_tools
from quipu.mcp.runs import RUN_TOOL_NAMES, register_run_tools
from quipu.mcp.workspaces import WORKSPACE_TOOL_NAMES, register_workspace_tools

from ._errors import ArgumentErrors
from ._logging import log_to_stderr

if TYPE_CHECKING:
    from quipu.app.facade import Quipu

__all__ = ["DEFAULT_ACTOR", "TOOL_NAMES", "build_server", "serve"]

DEFAULT_ACTOR = "agent:mcp"

TOOL_NAMES = (*WORKSPACE_TOOL_NAMES, *RUN_TOOL_NAMES, *LINEAGE_TOOL_NAMES)

INSTRUCTIONS = """\
Quipu records the provenance of your research: every change you make through these tools is an
immutable, attributed event with a reason, and STATE.md at the project root is rewritten after
each one. Workflow: status() at the start of every session; create_workspace() for each idea;
mount() it into a slot and edit the files in the slot directory with your normal file tools;
save_version() at every point worth returning to; diff()/rollback() to compare and undo;
hibernate() when you stop working on it; log_thought() to write down reasoning as you go.
Runs: put pipeline.yaml and modules/ in the slot, validate_config(), then run() with a
results_spec; follow it with inspect_run() and logs(); finalize_run() every run that ended
before the next run() (the finalization gate). list_history(), get_experiment_context() and
dashboard() tell you where the experiments stand.
Mutations need a reason: a sentence a reader will understand a year from now. Errors come back
as '[code] message Hint: what to do next'.
"""

log = logging.getLogger("quipu.mcp")



def build_server(q: "Quipu") -> FastMCP:
    """An MCP server whose tools drive the open project ``q`` (the caller owns and closes it)."""
    mcp = FastMCP("quipu", instructions=INSTRUCTIONS, middleware=[ArgumentErrors()],
                  mask_error_details=False)
    register_workspace_tools(mcp, q)
    register_run_tools(mcp, q)
    register_lineage_tools(mcp, q)
    return mcp


def serve(project_root: Path | None = None, actor: str | None = None) -> None:
    """Open the project at (or above) ``project_root``, start its workers, serve MCP over
    stdio, and stop and close everything on exit.

    The actor recorded on every event is ``actor``, else ``$QUIPU_ACTOR``, else ``agent:mcp``.
    Raises ``QuipuError`` (e.g. ``no_project``) if the project cannot be opened.
    """
    from quipu.app.bootstrap import open_project

    log_to_stderr()
    who = actor or os.environ.get("QUIPU_ACTOR") or DEFAULT_ACTOR
    q = open_project(project_root, actor=who)
    try:
        # The workers execute queued runs in this process; without them run() would queue
        # forever, so a missing executor fails here, loudly, rather than in build_server.
        q.start_workers()
        log.info("serving %s over stdio as %s", q.root, who)
        build_server(q).run(transport="stdio", show_banner=False)
    finally:
        q.close()

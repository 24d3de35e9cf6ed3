"""The MCP server: one thin tool per facade call, errors mapped at the edge.

Each tool parses its arguments (pydantic, from the signature), calls one method of the
``Quipu`` facade and returns the facade's dict unchanged. Refusals come back as tool errors
(see ``_errors``); nothing here decides anything. The tools live in a module per domain
(``workspaces``, ``runs``); the resources and prompts in ``_guides``; this module builds the
server and serves it over stdio. The project is held by an ``Engine`` (``_engine``): the server
starts outside any project too, offering ``initialize_project``, and ``reload_config`` swaps in
the project reopened from its edited ``quipu.yaml``.

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
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from fastmcp import FastMCP

from quipu.mcp.compare import COMPARE_TOOL_NAMES, register_compare_tools
from quipu.mcp.images import IMAGE_TOOL_NAMES, register_image_tools
from quipu.mcp.lineage import LINEAGE_TOOL_NAMES, register_lineage_tools
from quipu.mcp.patterns import PATTERN_TOOL_NAMES, register_pattern_tools
from quipu.mcp.runs import RUN_TOOL_NAMES, register_run_tools
from quipu.mcp.sources import SOURCE_TOOL_NAMES, register_source_tools
from quipu.mcp.workspaces import (
    PROJECT_TOOL_NAMES,
    WORKSPACE_TOOL_NAMES,
    register_workspace_tools,
)

from ._engine import Engine
from ._errors import ArgumentErrors
from ._guides import register_guides
from ._logging import log_to_stderr
from ._schemas import CompactSchemas

if TYPE_CHECKING:
    from quipu.app.facade import Quipu

__all__ = ["DEFAULT_ACTOR", "INSTRUCTIONS", "TOOL_NAMES", "build_server", "quipu_version",
           "register_tools", "serve"]

DEFAULT_ACTOR = "agent:mcp"

log = logging.getLogger("quipu.mcp")

TOOL_NAMES = (*PROJECT_TOOL_NAMES, *WORKSPACE_TOOL_NAMES, *RUN_TOOL_NAMES, *SOURCE_TOOL_NAMES,
              *LINEAGE_TOOL_NAMES, *COMPARE_TOOL_NAMES,
              *IMAGE_TOOL_NAMES, *PATTERN_TOOL_NAMES)

INSTRUCTIONS = """\
Quipu records your research: every change through these tools is an attributed event with a
reason, and STATE.md (resource quipu://state) is rewritten after each one.
Loop: status() first every session; create_workspace() per idea; mount() it into a slot and
edit its files with your file tools; save_version() at every point worth returning to;
log_thought() as you reason. Runs: pipeline.yaml + modules/ in the slot, validate_config(),
run() with a results_spec, inspect_run()/logs(), then finalize_run() every ended run before the
next run() (the finalization gate).
Rules: a reason is a sentence a reader understands a year later; names are 1-64 letters,
digits, '_', '-', '.'; versions are 'v3', 3 or a tag. Refusals change nothing and read
'[code] message Hint: next step', with the closest name when one was misspelt.
"""


def quipu_version() -> str:
    """Quipu's version from the installed package's metadata."""
    try:
        return version("quipu")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree, uninstalled
        return "0+unknown"


def register_tools(mcp: FastMCP, engine: Engine) -> None:
    """Add (or, after initialize_project / reload_config, replace) every tool."""
    register_workspace_tools(mcp, engine)
    register_run_tools(mcp, engine)
    register_source_tools(mcp, engine)
    register_lineage_tools(mcp, engine)
    register_compare_tools(mcp, engine)
    register_image_tools(mcp, engine)
    register_pattern_tools(mcp, engine)


def build_server(target: "Quipu | Engine") -> FastMCP:
    """An MCP server driving ``target``: an ``Engine``, or an open project (the caller owns
    and closes it; its workers are the caller's business)."""
    if isinstance(target, Engine):
        engine = target
    else:
        engine = Engine(start=target.root, actor=target.actor, workers=False, opened=target)
    mcp = FastMCP("quipu", version=quipu_version(), instructions=INSTRUCTIONS,
                  middleware=[ArgumentErrors(), CompactSchemas()], mask_error_details=False,
                  on_duplicate="replace")
    register_tools(mcp, engine)
    register_guides(mcp, engine)
    return mcp


def serve(project_root: Path | None = None, actor: str | None = None) -> None:
    """Serve MCP over stdio for the project at (or above) ``project_root`` (else
    ``$QUIPU_PROJECT``, else the cwd), with its workers; stop and close everything on exit.

    Outside any project the server still starts: ``initialize_project`` creates one there and
    the other tools answer ``no_project`` until then. The actor recorded on every event is
    ``actor``, else ``$QUIPU_ACTOR``, else ``agent:mcp``. Raises ``QuipuError`` if a project
    that exists cannot be opened (a bad quipu.yaml, an unreachable log).
    """
    log_to_stderr()
    who = actor or os.environ.get("QUIPU_ACTOR") or DEFAULT_ACTOR
    env = os.environ.get("QUIPU_PROJECT")
    start = (project_root or (Path(env) if env else Path.cwd())).resolve()
    engine = Engine(start=start, actor=who)
    engine.open()
    try:
        if engine.opened is None:
            log.info("no project at or above %s: serving initialize_project as %s", start, who)
        else:
            log.info("serving %s over stdio as %s", engine.opened.root, who)
        build_server(engine).run(transport="stdio", show_banner=False)
    finally:
        engine.close()


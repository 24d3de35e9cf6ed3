"""The lineage tool: walk the provenance graph from any node, either way, many hops.

Thin like the others: parse, call ``Quipu.get_lineage``, return its dict; refusals are tool
errors (``_errors.guarded``). No ``from __future__ import annotations``: fastmcp reads these
signatures at runtime.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastmcp import FastMCP
from pydantic import Field

from quipu.mcp._errors import READ_ONLY, guarded

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["LINEAGE_TOOL_NAMES", "register_lineage_tools"]

LINEAGE_TOOL_NAMES = ("get_lineage",)

NodeKind = Literal["workspace", "version", "pipeline_run", "run", "output", "source"]


def register_lineage_tools(mcp: FastMCP, engine: "Engine") -> None:
    """Add the lineage tool to ``mcp``, driving ``engine``'s project."""

    @mcp.tool(annotations=READ_ONLY)
    async def get_lineage(
        ref: Annotated[str, Field(description="What to start from: a run id (stage-...), a "
                                  "pipeline run id (prun-...), a version 'ws@v3', a workspace "
                                  "or source name ('source:NAME' if both), '@tag' or 'ws@tag' "
                                  "(a run tag, else a version tag), or a content hash (sha256, "
                                  "or a prefix of at least 4 hex digits, optionally "
                                  "'sha256:...').")],
        direction: Annotated[Literal["upstream", "downstream", "both"], Field(
            description="upstream: what it came from (versions, configs, inputs and the runs "
            "that produced them); downstream: everything that used it; both.")] = "upstream",
        depth: Annotated[int, Field(ge=1, le=100, description="How many hops to walk.")] = 5,
        kinds: Annotated[list[NodeKind] | None, Field(
            description="Walk only through nodes of these kinds (e.g. ['run'] with "
            "direction='downstream' and depth=1: which runs used this data).")] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="Most nodes shown (nearest "
                                    "first); counts still cover all.")] = 60,
    ) -> dict[str, Any]:
        """The provenance graph around one node, walked many hops in one call.

        Answers "which data did this result come from?" (upstream from a run or output) and
        "which runs used this data?" (downstream from a source or output hash). Returns {ref,
        root, direction, depth, nodes [{id, label, hops}], edges [[from, kind, to, name?]]
        drawn from upstream to downstream, counts {nodes, edges, by_kind, exact}, truncated,
        more_beyond_depth, hint?}. Node ids are kind:key (workspace:, version:ws@vN,
        pipeline_run:, run:, output:<sha256>, source:). Edge kinds: forked-from, version-of,
        ran-on-version, part-of, consumed, produced, content, promoted-from. Never changes
        anything.
        Errors: unknown_ref (with did-you-mean), ambiguous_ref, invalid_direction,
        invalid_depth, invalid_limit, invalid_kinds.
        """
        return guarded("get_lineage", lambda: engine.q.get_lineage(
            ref, direction=direction, depth=depth, kinds=kinds, limit=limit))

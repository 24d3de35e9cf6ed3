"""The compare tool: what changed between two runs or versions, and why B beat A.

Thin like the others: parse, call ``Quipu.compare``, return its dict; refusals are tool errors
(``_errors.guarded``). No ``from __future__ import annotations``: fastmcp reads these
signatures at runtime.
"""

from typing import TYPE_CHECKING, Annotated, Any

from fastmcp import FastMCP
from pydantic import Field

from quipu.mcp._errors import READ_ONLY, guarded

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["COMPARE_TOOL_NAMES", "register_compare_tools"]

COMPARE_TOOL_NAMES = ("compare",)


def register_compare_tools(mcp: FastMCP, engine: "Engine") -> None:
    """Add the compare tool to ``mcp``, driving ``engine``'s project."""

    @mcp.tool(annotations=READ_ONLY)
    async def compare(
        a: Annotated[str, Field(description="A run id, ws@v3, ws@tag, @tag, or a workspace "
                                "(its current version).")],
        b: Annotated[str, Field(description="The same kinds of ref as a.")],
        max_diff_lines: Annotated[int | None, Field(
            ge=0, le=5000, description="Unified-diff lines over all files (default 80).")] = None,
    ) -> dict[str, Any]:
        """What changed from A to B, and why B beat A: summary first, then code (files,
        bounded diffs, binary by hash/size), config key by key, inputs by hash with origin,
        environment, metric deltas better/worse by the results spec. A run vs a version
        compares its version. Errors: unknown_ref, ambiguous_ref, invalid_compare_ref,
        invalid_max_diff_lines.
        """
        return guarded("compare", lambda: engine.q.compare(a, b, max_diff_lines=max_diff_lines))

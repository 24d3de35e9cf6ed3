"""The failure-pattern tool: list, read, approve or reject patterns learned from runs that
went wrong. It parses its arguments, calls ``Quipu.manage_patterns`` and returns its dict.

No ``from __future__ import annotations``: fastmcp reads these signatures at runtime.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastmcp import FastMCP
from pydantic import Field

from ._errors import WRITE, guarded

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["PATTERN_TOOL_NAMES", "register_pattern_tools"]

PATTERN_TOOL_NAMES = ("manage_patterns",)


def register_pattern_tools(mcp: FastMCP, engine: "Engine") -> None:
    """Add the pattern tool to ``mcp``, driving ``engine``'s project."""

    @mcp.tool(annotations=WRITE)
    async def manage_patterns(
        action: Literal["list", "get", "approve", "reject"],
        pattern_id: str | None = None,
        reason: str | None = None,
        detection: Annotated[dict[str, Any] | None, Field(description=(
            "approve: {kind: code, regex, files?} | {kind: statistic, statistic, op, "
            "threshold, output?} | {kind: metric, metric, op, threshold?, of?}"))] = None,
        root_cause: str | None = None,
        prevention: str | None = None,
        status: Literal["candidate", "approved", "rejected"] | None = None,
        stage: str | None = None,
        limit: Annotated[int, Field(ge=1, le=50)] = 20,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Failure patterns learned from failed, blocked and stopped runs. approve (reason,
        optional detection) makes one used by reviews and the monitor; see docs/svs.md."""
        return guarded("manage_patterns", lambda: engine.q.manage_patterns(
            action, pattern_id=pattern_id, reason=reason, detection=detection,
            root_cause=root_cause, prevention=prevention, status=status, stage=stage,
            limit=limit, offset=offset))

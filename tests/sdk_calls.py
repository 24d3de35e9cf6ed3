"""Calling Quipu's tools through the official ``mcp`` SDK's ClientSession in the tests."""

from __future__ import annotations

from typing import Any

from mcp import ClientSession

__all__ = ["sdk_call"]


async def sdk_call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured result (the refusal's text in the
    assertion message when it does not)."""
    result = await session.call_tool(tool, arguments)
    text = getattr(result.content[0], "text", "") if result.content else ""
    assert not result.isError, f"{tool} failed: {text}"
    assert isinstance(result.structuredContent, dict)
    return result.structuredContent

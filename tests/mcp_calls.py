"""Calling Quipu's tools from the tests, through either MCP client: the official ``mcp`` SDK's
ClientSession (``sdk_call``) or fastmcp's Client (``fastmcp_call``, ``fastmcp_refuse``)."""

from __future__ import annotations

from typing import Any

from fastmcp import Client
from mcp import ClientSession

__all__ = ["fastmcp_call", "fastmcp_refuse", "sdk_call"]


async def sdk_call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured result (the refusal's text in the
    assertion message when it does not)."""
    result = await session.call_tool(tool, arguments)
    text = getattr(result.content[0], "text", "") if result.content else ""
    assert not result.isError, f"{tool} failed: {text}"
    assert isinstance(result.structuredContent, dict)
    return result.structuredContent


async def fastmcp_call(client: Client[Any], tool: str, **arguments: Any) -> dict[str, Any]:
    """``sdk_call`` for fastmcp's client."""
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    text = getattr(result.content[0], "text", "") if result.content else ""
    assert not result.is_error, f"{tool} failed: {text}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def fastmcp_refuse(client: Client[Any], tool: str, code: str, **arguments: Any) -> str:
    """Call a tool that must be refused with ``code`` (a '[code] message Hint: ...' line with
    no traceback); return the refusal's text."""
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert result.is_error, f"{tool} unexpectedly succeeded: {result.structured_content}"
    text: str = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith(f"[{code}] "), text
    assert " Hint: " in text, text
    assert "Traceback" not in text, text
    return text

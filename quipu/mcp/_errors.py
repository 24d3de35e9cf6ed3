"""How failures reach an MCP client: one tool error per failure, code and hint first.

Every failure a tool can produce comes back as a tool result with ``isError`` set and a single
line of text an agent can act on::

    [slot_occupied] slot w1 already holds 'baseline' Hint: hibernate w1 first, or pick a free slot

Three sources are translated here and nowhere else:

- ``QuipuError`` (the domain said no): its ``code``, message and ``hint``.
- Arguments that do not fit a tool's input schema (pydantic, raised by fastmcp before the tool
  runs): ``[invalid_arguments]`` with one clause per bad field.
- Anything else (a bug): ``[internal_error]``; the traceback goes to stderr, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import mcp.types as mt
from fastmcp.exceptions import ToolError
from fastmcp.exceptions import ValidationError as ArgumentsInvalid
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult
from pydantic import ValidationError as PydanticValidationError

from quipu.core.errors import QuipuError

__all__ = ["READ_ONLY", "WRITE", "ArgumentErrors", "guarded", "internal_error", "tool_error"]

log = logging.getLogger("quipu.mcp")

READ_ONLY = {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False}
"""Tool annotations of a tool that reads (every module of tools shares them)."""
WRITE = {"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False}
"""Tool annotations of a tool that records something."""


MAX_ERROR = 2000
"""Most characters of a refusal's message sent back (a hostile argument quoted in a message must
not flood the agent's context window either)."""


def _line(code: str, message: str, hint: str) -> str:
    message = message.strip()
    if len(message) > MAX_ERROR:
        message = message[:MAX_ERROR] + f"… [{len(message) - MAX_ERROR} characters cut]"
    text = f"[{code}] {message}"
    if hint:
        text += f" Hint: {hint.strip()[:MAX_ERROR]}"
    return text


def tool_error(exc: QuipuError) -> ToolError:
    """The tool error for a refusal from the domain (expected, so logged quietly)."""
    return ToolError(_line(exc.code, exc.message, exc.hint), log_level=logging.INFO)


def internal_error(tool: str, exc: BaseException) -> ToolError:
    """The tool error for a bug: a short message for the client, the traceback for stderr."""
    log.error("tool %s failed unexpectedly", tool, exc_info=exc)
    return ToolError(_line("internal_error", f"{tool} failed: {type(exc).__name__}: {exc}",
                           "this is a bug in Quipu, not in your call; the server's stderr has "
                           "the traceback. Run status() to see what was recorded."))


def guarded(tool: str, fn: Callable[[], dict[str, Any]],
            after: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run one facade call and translate every failure into a tool error; then ``after``
    (a courtesy such as refreshing the tool list: its failure is logged, never the answer)."""
    try:
        result = fn()
    except QuipuError as exc:
        raise tool_error(exc) from exc
    except Exception as exc:
        raise internal_error(tool, exc) from exc
    if after is not None:
        try:
            after()
        except Exception:
            log.exception("after %s took effect, a follow-up step failed", tool)
    return result


def _describe(exc: ArgumentsInvalid) -> str:
    cause = exc.__cause__
    if not isinstance(cause, PydanticValidationError):
        return str(exc)
    clauses = []
    for err in cause.errors(include_url=False):
        where = ".".join(str(part) for part in err.get("loc", ())) or "arguments"
        clauses.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(clauses)


class ArgumentErrors(Middleware):
    """Turn fastmcp's argument-validation failures into ``[invalid_arguments]`` tool errors."""

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        try:
            return await call_next(context)
        except ArgumentsInvalid as exc:
            name: Any = getattr(context.message, "name", "the tool")
            raise ToolError(
                _line("invalid_arguments", f"bad arguments for {name}: {_describe(exc)}",
                      "check the tool's input schema (names, types, required fields) and "
                      "call it again"),
                log_level=logging.INFO,
            ) from exc

"""tools/list without repetition: every agent loads every tool's schema into its context.

``CompactSchemas`` rewrites the listed tools only (the arguments are still validated against
each function's signature), so what an agent needs to call a tool right stays: names, types,
bounds, enums, required, descriptions, defaults that are not null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mcp.types as mt
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import Tool

__all__ = ["CompactSchemas", "compact_schema"]


def compact_schema(schema: Any) -> Any:
    """``schema`` without what only repeats itself, for tools/list (every agent loads it).

    An optional parameter ``anyOf: [X, {type: null}], default: null`` becomes ``X``: it is
    optional because it is not ``required``, and the tool still accepts an explicit null (the
    arguments are validated against the function's signature, not this schema).
    ``additionalProperties: true`` is JSON Schema's default and goes too.
    """
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: compact_schema(v) for k, v in schema.items()}
    branches = out.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        if len(rest) == 1 and isinstance(rest[0], dict):
            del out["anyOf"]
            out = {**rest[0], **out}
        else:
            out["anyOf"] = rest
    if out.get("default", 0) is None:
        del out["default"]
    if out.get("additionalProperties") is True:
        del out["additionalProperties"]
    return out


class CompactSchemas(Middleware):
    """List each tool with ``compact_schema(parameters)`` and no output schema (every tool
    answers a JSON object; its description names the fields)."""

    async def on_list_tools(
        self,
        context: MiddlewareContext[mt.ListToolsRequest],
        call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        tools = await call_next(context)
        return [tool.model_copy(update={"parameters": compact_schema(tool.parameters),
                                        "output_schema": None}) for tool in tools]

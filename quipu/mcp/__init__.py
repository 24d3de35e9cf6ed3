"""The MCP server: thin tools over the ``Quipu`` facade, served over stdio by ``quipu serve``."""

from .server import DEFAULT_ACTOR, TOOL_NAMES, build_server, serve

__all__ = ["DEFAULT_ACTOR", "TOOL_NAMES", "build_server", "serve"]

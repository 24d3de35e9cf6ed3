"""The image tool: the project's container images for the Docker backend.

Thin like the others: parse, call ``Quipu.manage_images``, return its dict; refusals are tool
errors (``_errors.guarded``). No ``from __future__ import annotations``: fastmcp reads these
signatures at runtime.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastmcp import FastMCP
from pydantic import Field

from ._errors import WRITE, guarded

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["IMAGE_TOOL_NAMES", "register_image_tools"]

IMAGE_TOOL_NAMES = ("manage_images",)


def register_image_tools(mcp: FastMCP, engine: "Engine") -> None:
    """Add the image tool to ``mcp``, driving ``engine``'s project."""

    @mcp.tool(annotations=WRITE)
    async def manage_images(
        action: Annotated[Literal["list", "inspect", "build"], Field(
            description="build: base + requirements.txt, or the project's Dockerfile; "
            "reused when unchanged.")],
        image: Annotated[str | None, Field(description="inspect: tag or id.")] = None,
        base: Annotated[str | None, Field(description="build: base image.")] = None,
    ) -> dict[str, Any]:
        """The project's Docker images: list, inspect (id, digests), build."""
        return guarded("manage_images", lambda: engine.q.manage_images(
            action, image=image, base=base))

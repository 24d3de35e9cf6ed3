"""manage_images over stdio with the official ``mcp`` SDK's ClientSession, on a real daemon."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from mcp_calls import sdk_call as call

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def test_an_agent_builds_lists_and_inspects_the_project_image(
        sdk_session: Callable[..., AbstractAsyncContextManager[Any]], project: Path,
        python_image: str, docker_client: Any) -> None:
    (project / "Dockerfile").write_text(f"FROM {python_image}\nLABEL from=mcp\n")

    async def main() -> None:
        async with sdk_session() as session:
            built = await call(session, "manage_images", action="build")
            assert built["reused"] is False and built["image"].startswith("quipu-digits:")
            again = await call(session, "manage_images", action="build")
            assert again["reused"] is True and again["id"] == built["id"]
            listed = await call(session, "manage_images", action="list")
            assert listed["total"] == 1 and len(json.dumps(listed)) <= 4_000
            shown = await call(session, "manage_images", action="inspect",
                               image=built["image"])
            assert shown["id"] == built["id"] and len(json.dumps(shown)) <= 4_000
            refused = await session.call_tool("manage_images", {"action": "inspect",
                                                                "image": "nope:1"})
            assert refused.isError
            assert refused.content[0].text.startswith("[image_not_found] ")

    try:
        asyncio.run(main())
    finally:
        for image in docker_client.images.list(filters={"label": "quipu.project=digits"}):
            docker_client.images.remove(image.id, force=True)

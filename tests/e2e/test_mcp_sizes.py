"""Answers that fit a context window, as an MCP client receives them: status() and dashboard()
over stdio (the official ``mcp`` SDK's ClientSession) on a project of 50 workspaces and 300
runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from big_project import WORKSPACES, build
from mcp import ClientSession
from mcp_calls import sdk_call as call

pytestmark = pytest.mark.timeout(300)

SdkConnect = Callable[..., AbstractAsyncContextManager[ClientSession]]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The large project (closed again, so only the server has it open)."""
    root = tmp_path / "big"
    build(root).close()
    return root



def test_status_and_dashboard_fit_a_context_window_over_stdio(
        project: Path, sdk_session: SdkConnect) -> None:
    async def main() -> None:
        async with sdk_session() as session:
            status = await call(session, "status")
            assert status["workspace_count"] == WORKSPACES
            assert len(json.dumps(status)) < 8000
            assert '`finalize_run("prun-' in status["state_md"]

            board = await call(session, "dashboard")
            assert len(json.dumps(board)) <= 6000
            assert board["best_total"] == WORKSPACES
            page = await call(session, "dashboard", section="best",
                              offset=len(board["best_by_workspace"]), limit=50)
            assert page["next_offset"] is None
            assert len(page["rows"]) + len(board["best_by_workspace"]) == WORKSPACES

    asyncio.run(main())

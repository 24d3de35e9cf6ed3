"""End-to-end fixtures: a real project on disk and a real ``quipu serve`` subprocess over stdio.

The server is the installed console script (``quipu --project P serve``), exactly what an agent
is configured to launch; a test drives it with an MCP client and nothing in between: fastmcp's
``Client`` (``mcp_session``) or the official ``mcp`` SDK's ``ClientSession`` (``sdk_session``),
so the end-to-end tests do not depend on one client library.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from quipu.app.bootstrap import init_project

ACTOR = "agent:e2e-test"
REQUEST_TIMEOUT = 30.0

Connect = Callable[..., AbstractAsyncContextManager[Client[Any]]]
SdkConnect = Callable[..., AbstractAsyncContextManager[ClientSession]]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A freshly initialised project (closed again, so only the server has it open)."""
    root = tmp_path / "digits"
    q = init_project(root, name="digits", goal="reach 98% test accuracy on sklearn digits",
                     slots=2, actor="cli:e2e-test")
    q.close()
    return root


@pytest.fixture
def server_argv(project: Path) -> list[str]:
    """``quipu --project P serve`` from this interpreter's environment."""
    script = Path(sys.executable).with_name("quipu")
    if script.exists():
        return [str(script), "--project", str(project), "serve"]
    return [sys.executable, "-m", "quipu", "--project", str(project), "serve"]


@pytest.fixture
def server_environ() -> dict[str, str]:
    """The server's environment: ours, without a stray project, acting as ``ACTOR``."""
    env = {k: v for k, v in os.environ.items() if k not in ("QUIPU_PROJECT", "QUIPU_ACTOR")}
    env["QUIPU_ACTOR"] = ACTOR
    return env


@asynccontextmanager
async def _connect(argv: list[str], environ: dict[str, str], cwd: Path, *,
                   command: list[str] | None = None, extra_env: dict[str, str] | None = None,
                   in_dir: Path | None = None) -> AsyncIterator[Client[Any]]:
    program, *args = command or argv
    transport = StdioTransport(program, args, env={**environ, **(extra_env or {})},
                               cwd=str(in_dir or cwd), keep_alive=False)
    async with Client(transport, timeout=REQUEST_TIMEOUT) as client:
        yield client


@pytest.fixture
def mcp_session(server_argv: list[str], server_environ: dict[str, str],
                project: Path) -> Connect:
    """``async with mcp_session() as client:`` starts a server on ``project`` and connects.

    Keywords: ``command`` (another argv), ``extra_env``, ``in_dir`` (the server's cwd).
    """
    return functools.partial(_connect, server_argv, server_environ, project)


@asynccontextmanager
async def _sdk_connect(argv: list[str], environ: dict[str, str], cwd: Path, *,
                       extra_env: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    program, *args = argv
    params = StdioServerParameters(command=program, args=args,
                                   env={**environ, **(extra_env or {})}, cwd=str(cwd))
    async with stdio_client(params) as (read, write), ClientSession(
            read, write, read_timeout_seconds=timedelta(seconds=REQUEST_TIMEOUT)) as session:
        await session.initialize()
        yield session


@pytest.fixture
def sdk_session(server_argv: list[str], server_environ: dict[str, str],
                project: Path) -> SdkConnect:
    """``async with sdk_session() as session:`` starts a server on ``project`` and connects
    the official ``mcp`` SDK's ``ClientSession`` to it (already initialized).

    Keyword: ``extra_env``.
    """
    return functools.partial(_sdk_connect, server_argv, server_environ, project)

"""A hostile or careless call cannot flood the server's log or the agent's context window.

One call with a megabyte argument used to write 2.25 MB to the server's stderr, echoing the value
(which may be a secret). The server's stderr is captured to a file here and measured after the
session, and so is the answer the client gets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

pytestmark = pytest.mark.timeout(180)

SECRET = "S3CRET-TOKEN-"
BIG = SECRET + "x" * 1_000_000
STDERR_BUDGET = 20_000
"""Bytes the server may write to stderr for the whole session (start-up included)."""
ANSWER_BUDGET = 5_000
"""Characters an error answer may take in the agent's context window."""


async def _refused(client: Client[Any], tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert isinstance(text, str)
    return text


def test_a_megabyte_argument_neither_floods_stderr_nor_is_echoed_into_it(
        server_argv: list[str], server_environ: dict[str, str], project: Path,
        tmp_path: Path) -> None:
    named, typed, stderr = asyncio.run(_session(server_argv, server_environ, project, tmp_path))
    assert len(stderr.encode()) < STDERR_BUDGET, f"{len(stderr)} bytes of stderr"
    assert SECRET not in stderr
    for answer in (named, typed):
        assert len(answer) < ANSWER_BUDGET
    assert named.startswith("[")  # still a coded refusal an agent can act on
    assert typed.startswith("[invalid_arguments]")


async def _session(server_argv: list[str], server_environ: dict[str, str], project: Path,
                   tmp_path: Path) -> tuple[str, str, str]:
    log_path = tmp_path / "server-stderr.log"
    program, *args = server_argv
    with log_path.open("w") as log_file:
        transport = StdioTransport(program, args, env=server_environ, cwd=str(project),
                                   keep_alive=False, log_file=log_file)
        async with Client(transport, timeout=60) as client:
            # A domain refusal that quotes the value it refuses (a name of 1 MB).
            named = await _refused(client, "mount", workspace=BIG, slot="w1",
                                   reason="mount a workspace with an absurd name")
            # An argument of the wrong type: fastmcp's own validation error path.
            typed = await _refused(client, "create_workspace", name=[BIG], goal="a goal",
                                   reason="create a workspace with a list for a name")
            # A reason that is far too long for a tool that only looks at its length.
            await client.call_tool("log_thought", {"thought": "short and fine", "workspace": BIG},
                                   raise_on_error=False)
    return named, typed, log_path.read_text(errors="replace")

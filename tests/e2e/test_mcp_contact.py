"""An agent's first contact with `quipu serve`, through the official `mcp` SDK client over stdio:
who the server says it is, a project created and reloaded over MCP, the resources and prompts
it offers, the size of its tool list, and refusals that match the tools' descriptions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError
from mcp.types import (
    CallToolResult,
    InitializeResult,
    ServerNotification,
    TextContent,
    TextResourceContents,
    ToolListChangedNotification,
)
from pydantic import AnyUrl
from toy_pipeline import SPEC, write_toy_pipeline

from quipu.mcp.server import TOOL_NAMES

pytestmark = pytest.mark.timeout(300)

WHY = "exercising first contact with the official MCP client"
# 35,920 characters for 28 tools before the cut (1,283 a tool); 22,481 for 30 after it. The
# source tools (register_source carries the metadata rules an agent needs to get a document
# right the first time) and get_lineage bring it to 34 tools: about 900 characters a tool.
# compare (35 tools) adds about 890 characters; the budget grows by 800 for it. run's
# resume_from argument adds 100 characters, manage_images (36 tools) 602, request_stop
# (37 tools) 542, manage_patterns (38 tools) 1,003, and get_run_svs_findings (39 tools) with
# inspect_run's "svs" section 575; the budget grows by exactly those.
TOOLS_LIST_BUDGET = 34_622
"""Characters of tools/list's JSON, which every client loads into its agent's context. It was
35,920 for 28 tools before the descriptions and schemas were cut; about 22,500 for 30 after."""
INSTRUCTIONS_BUDGET = 1_000


@asynccontextmanager
async def connect(argv: list[str], environ: dict[str, str], cwd: Path,
                  heard: list[Any] | None = None,
                  ) -> AsyncIterator[tuple[ClientSession, InitializeResult]]:
    """The official client on ``argv`` run in ``cwd``, with the server's InitializeResult;
    the server's notifications are appended to ``heard``."""
    program, *args = argv
    params = StdioServerParameters(command=program, args=args, env=environ, cwd=str(cwd))

    async def listen(message: Any) -> None:
        if heard is not None and isinstance(message, ServerNotification):
            heard.append(message.root)

    async with stdio_client(params) as (read, write), ClientSession(
            read, write, read_timeout_seconds=timedelta(seconds=60),
            message_handler=listen) as session:
        init = await session.initialize()
        yield session, init


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def ok(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.isError, f"{tool}: {text_of(result)}"
    assert result.structuredContent is not None
    return result.structuredContent


async def refused(session: ClientSession, tool: str, code: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.isError, f"{tool} unexpectedly succeeded: {result.structuredContent}"
    text = text_of(result)
    assert text.startswith(f"[{code}] ") and " Hint: " in text, text
    return text


@pytest.fixture
def outside_argv(server_argv: list[str]) -> list[str]:
    """``quipu serve`` with no --project: it serves wherever it is started."""
    return [server_argv[0], *(["-m", "quipu"] if server_argv[1] == "-m" else []), "serve"]


# --- who the server is ---------------------------------------------------------------------


def test_server_info_names_quipu_and_its_own_version(server_argv: list[str],
                                                     server_environ: dict[str, str],
                                                     project: Path) -> None:
    async def main() -> InitializeResult:
        async with connect(server_argv, server_environ, project) as (_session, init):
            return init

    init = asyncio.run(main())
    assert init.serverInfo.name == "quipu"
    assert init.serverInfo.version == version("quipu")
    assert init.instructions and len(init.instructions) <= INSTRUCTIONS_BUDGET


def test_tools_list_fits_its_budget_and_keeps_what_a_call_needs(
        server_argv: list[str], server_environ: dict[str, str], project: Path) -> None:
    async def main() -> Any:
        async with connect(server_argv, server_environ, project) as (session, _init):
            return await session.list_tools()

    listed = asyncio.run(main())
    size = len(listed.model_dump_json(by_alias=True, exclude_none=True))
    assert size <= TOOLS_LIST_BUDGET, f"tools/list is {size} characters"
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == set(TOOL_NAMES)
    for name, tool in tools.items():
        assert tool.description, name
        schema = tool.inputSchema
        assert schema["type"] == "object" and schema["additionalProperties"] is False, name
        assert "$defs" not in json.dumps(schema), name
        assert tool.annotations is not None and tool.annotations.readOnlyHint is not None, name
    run = tools["run"].inputSchema
    # optional arguments keep their type, bounds and enums, and are not required
    assert run["properties"]["stages"] == {"type": "array", "items": {"type": "string"},
                                           "description": run["properties"]["stages"]
                                           ["description"]}
    assert set(run["required"]) == {"workspace", "reason"}
    assert '"primary_metric": "val_accuracy"' in run["properties"]["results_spec"][
        "description"]  # the example that prevents a malformed spec is kept
    history = tools["list_history"].inputSchema["properties"]
    assert history["sort_by"]["enum"] == ["created", "metric"]
    assert history["limit"] == {"default": 20, "maximum": 500, "minimum": 1, "type": "integer"}


def test_an_explicit_null_for_an_optional_argument_is_still_accepted(
        server_argv: list[str], server_environ: dict[str, str], project: Path) -> None:
    """The listed schema says "string" for an optional argument; null still means omitted."""
    async def main() -> None:
        async with connect(server_argv, server_environ, project) as (session, _init):
            made = await ok(session, "create_workspace", name="nulls", goal="an optional null",
                            reason=WHY, from_workspace=None, from_version=None)
            assert made["forked_from"] is None

    asyncio.run(main())


# --- a project created and reloaded over MCP ------------------------------------------------


def test_outside_any_project_the_server_offers_initialize_project(
        outside_argv: list[str], server_environ: dict[str, str], tmp_path: Path) -> None:
    home = tmp_path / "lab"
    home.mkdir()

    async def main() -> None:
        async with connect(outside_argv, server_environ, home) as (session, init):
            assert init.serverInfo.name == "quipu"
            text = await refused(session, "status", "no_project")
            assert "initialize_project" in text
            await refused(session, "create_workspace", "no_project", name="early",
                          goal="before the project exists", reason=WHY)
            with pytest.raises(McpError, match=r"\[no_project\]"):
                await session.read_resource(AnyUrl("quipu://state"))

    asyncio.run(main())
    assert not (home / "quipu.yaml").exists()

    heard: list[Any] = []

    async def create() -> None:
        async with connect(outside_argv, server_environ, home, heard) as (session, _init):
            made = await ok(session, "initialize_project", goal="classify the wine data",
                            name="wine", slots=2)
            assert any(isinstance(n, ToolListChangedNotification) for n in heard)
            assert made["project"] == "wine" and made["slots"] == ["w1", "w2"]
            assert made["root"] == str(home.resolve())
            status = await ok(session, "status")
            assert "- w1: (free)\n- w2: (free)" in status["state_md"]
            listed = {t.name: t for t in (await session.list_tools()).tools}
            assert listed["mount"].inputSchema["properties"]["slot"]["description"] == (
                "Slot: w1, w2.")
            await ok(session, "create_workspace", name="wine-mlp", goal="an MLP on wine",
                     reason=WHY)
            await refused(session, "initialize_project", "project_exists",
                          goal="a second project over the first")

    asyncio.run(create())
    assert (home / "quipu.yaml").is_file()
    assert "wine-mlp" in (home / "STATE.md").read_text()


def test_reload_config_takes_an_edited_quipu_yaml_and_refuses_a_bad_one(
        server_argv: list[str], server_environ: dict[str, str], project: Path) -> None:
    config_file = project / "quipu.yaml"
    original = yaml.safe_load(config_file.read_text())

    async def main() -> None:
        async with connect(server_argv, server_environ, project) as (session, _init):
            unchanged = await ok(session, "reload_config")
            assert unchanged == {"reloaded": False, "changed": [], "slots": ["w1", "w2"],
                                 "reason_min_length": 15}
            await ok(session, "create_workspace", name="base", goal="a baseline to mount",
                     reason=WHY)
            await refused(session, "mount", "unknown_slot", workspace="base", slot="w3",
                          reason=WHY)

            config_file.write_text(yaml.safe_dump({**original, "slots": 3,
                                                   "reason_min_length": 20}))
            reloaded = await ok(session, "reload_config")
            assert reloaded == {"reloaded": True, "changed": ["reason_min_length", "slots"],
                                "slots": ["w1", "w2", "w3"], "reason_min_length": 20}
            await refused(session, "mount", "reason_too_short", workspace="base", slot="w3",
                          reason="sixteen chars ok")
            await ok(session, "mount", workspace="base", slot="w3", reason=WHY)
            listed = {t.name: t for t in (await session.list_tools()).tools}
            assert "at least 20 characters" in (
                listed["hibernate"].inputSchema["properties"]["reason"]["description"])

            head = (await ok(session, "status"))["head_position"]
            config_file.write_text("slots: [not, a, number\n")
            text = await refused(session, "reload_config", "invalid_config")
            assert "quipu.yaml" in text
            config_file.write_text(yaml.safe_dump({**original, "slots": "many"}))
            await refused(session, "reload_config", "invalid_config")
            # the running configuration is the one that was valid
            status = await ok(session, "status")
            assert [s["slot"] for s in status["slots"]] == ["w1", "w2", "w3"]
            assert status["head_position"] == head
            await refused(session, "hibernate", "reason_too_short", slot="w3",
                          reason="sixteen chars ok")

    asyncio.run(main())


# --- resources and prompts ------------------------------------------------------------------


def test_state_md_and_a_runs_live_view_are_resources(
        server_argv: list[str], server_environ: dict[str, str], project: Path) -> None:
    async def main() -> None:
        async with connect(server_argv, server_environ, project) as (session, _init):
            listed = await session.list_resources()
            assert [(str(r.uri), r.mimeType) for r in listed.resources] == [
                ("quipu://state", "text/markdown")]
            templates = await session.list_resource_templates()
            assert [t.uriTemplate for t in templates.resourceTemplates] == [
                "quipu://runs/{run_id}"]

            await ok(session, "create_workspace", name="toy", goal="a toy pipeline",
                     reason=WHY)
            mounted = await ok(session, "mount", workspace="toy", slot="w1", reason=WHY)
            write_toy_pipeline(Path(mounted["path"]))
            started = await ok(session, "run", workspace="w1", results_spec=SPEC, wait=True,
                               reason="a run to read as a resource")
            prep = started["queued"][0]["stage_run_id"]

            state = await session.read_resource(AnyUrl("quipu://state"))
            body = state.contents[0]
            assert isinstance(body, TextResourceContents)
            assert body.mimeType == "text/markdown"
            assert body.text == (project / "STATE.md").read_text()
            assert prep in body.text  # awaiting finalization

            view = await session.read_resource(AnyUrl(f"quipu://runs/{prep}"))
            run_body = view.contents[0]
            assert isinstance(run_body, TextResourceContents)
            assert run_body.mimeType == "application/json"
            live = json.loads(run_body.text)
            inspected = await ok(session, "inspect_run", run_id=prep)
            assert live["run_id"] == inspected["run_id"] == prep
            assert live["state"] == inspected["state"] == "succeeded"

            with pytest.raises(McpError, match=r"\[unknown_run\]"):
                await session.read_resource(AnyUrl("quipu://runs/stage-nope"))

    asyncio.run(main())


def test_the_main_workflows_are_prompts_carrying_the_projects_facts(
        server_argv: list[str], server_environ: dict[str, str], project: Path) -> None:
    async def main() -> None:
        async with connect(server_argv, server_environ, project) as (session, _init):
            names = {p.name: p for p in (await session.list_prompts()).prompts}
            assert set(names) == {"start_experiment", "recover_context", "finalize_runs"}
            assert {a.name: a.required for a in names["start_experiment"].arguments or []} == {
                "idea": True, "workspace": False}

            start = await session.get_prompt("start_experiment",
                                             {"idea": "wider hidden layers help"})
            text = start.messages[0].content
            assert isinstance(text, TextContent)
            assert "wider hidden layers help" in text.text and "results_spec" in text.text

            await ok(session, "create_workspace", name="toy", goal="a toy pipeline",
                     reason=WHY)
            mounted = await ok(session, "mount", workspace="toy", slot="w1", reason=WHY)
            write_toy_pipeline(Path(mounted["path"]))
            started = await ok(session, "run", workspace="w1", results_spec=SPEC, wait=True,
                               reason="a run whose verdict the prompt asks for")
            ids = [q["stage_run_id"] for q in started["queued"]]

            recover = await session.get_prompt("recover_context", {})
            recovered = recover.messages[0].content
            assert isinstance(recovered, TextContent)
            assert (project / "STATE.md").read_text() in recovered.text

            pending = await session.get_prompt("finalize_runs", {"workspace": "toy"})
            asked = pending.messages[0].content
            assert isinstance(asked, TextContent)
            for run_id in ids:
                assert f"finalize_run('{run_id}'" in asked.text or run_id in asked.text
            with pytest.raises(McpError, match=r"did you mean 'toy'"):
                await session.get_prompt("finalize_runs", {"workspace": "tyo"})

    asyncio.run(main())


# --- refusals that match the descriptions ---------------------------------------------------


def test_refusals_over_stdio_suggest_the_name_meant_and_cancel_twice_is_refused(
        server_argv: list[str], server_environ: dict[str, str], project: Path) -> None:
    async def main() -> None:
        async with connect(server_argv, server_environ, project) as (session, _init):
            await ok(session, "create_workspace", name="wine-mlp", goal="an MLP on wine",
                     reason=WHY)
            mounted = await ok(session, "mount", workspace="wine-mlp", slot="w1", reason=WHY)
            slot = Path(mounted["path"])
            write_toy_pipeline(slot)
            text = await refused(session, "run", "unknown_workspace", workspace="wine-mpl",
                                 results_spec=SPEC, reason=WHY)
            assert "Hint: did you mean 'wine-mlp'?" in text
            text = await refused(session, "run", "unknown_stage", workspace="w1",
                                 results_spec=SPEC, reason=WHY, stages=["trian"])
            assert "did you mean 'train'?" in text
            (slot / "pipeline.yaml").write_text("stages:\n  - name: prep\n   outputs: [\n")
            text = await refused(session, "run", "invalid_yaml", workspace="w1",
                                 results_spec=SPEC, reason=WHY)
            assert "pipeline.yaml:3" in text
            write_toy_pipeline(slot)
            missing = str(project / "data" / "nope.npy")
            await refused(session, "validate_config", "input_path_missing", workspace="w1",
                          stages=["train"], inputs_override={"features": missing})

            started = await ok(session, "run", workspace="w1", results_spec=SPEC,
                               reason="a run to cancel twice", stages=["prep"])
            run_id = started["queued"][0]["stage_run_id"]
            first = await session.call_tool("cancel", {"run_id": run_id, "reason": WHY})
            if not first.isError:  # it may have ended already: then both are refusals
                assert first.structuredContent is not None
                assert isinstance(first.structuredContent["position"], int)
            await refused(session, "cancel", "run_ended", run_id=run_id, reason=WHY)

    asyncio.run(main())

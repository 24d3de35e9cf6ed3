"""An agent's view of Quipu: a real MCP client talking to ``quipu serve`` over stdio."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from mcp_calls import fastmcp_call as call
from mcp_calls import fastmcp_refuse as refuse

pytestmark = pytest.mark.timeout(180)

EVERY_TOOL = {
    "initialize_project", "reload_config",
    "create_workspace", "mount", "hibernate", "save_version", "rollback", "diff",
    "manage_versions", "delete_workspace", "inspect_workspace", "log_thought",
    "get_workspace_thoughts", "get_audit_log", "status",
    # the run tools (tests/e2e/test_mcp_runs.py)
    "run", "validate_config", "inspect_run", "logs", "cancel", "request_stop", "finalize_run",
    "list_history",
    "inspect_record", "tag_record", "list_unfinalized_runs", "get_experiment_context",
    "get_metric_history", "save_results_spec", "dashboard", "mark_seen",
    "get_run_svs_findings",
    # the source tools (tests/e2e/test_mcp_sources.py)
    "register_source", "manage_sources", "promote_artifact",
    # the lineage tool (tests/e2e/test_mcp_lineage.py)
    "get_lineage",
    # the compare tool (tests/e2e/test_mcp_compare.py)
    "compare",
    # the image tool (tests/integration/test_docker_images.py)
    "manage_images",
    # the failure-pattern tool (tests/e2e/test_mcp_patterns.py)
    "manage_patterns",
}
Connect = Callable[..., AbstractAsyncContextManager[Client[Any]]]
ACTOR = "agent:e2e-test"  # what the server_environ fixture sets as QUIPU_ACTOR
WHY = "exercising the MCP server end to end from a real client"




def version_names(versions: list[dict[str, Any]]) -> list[str]:
    """``['v1', 'v3']`` from a version listing."""
    return sorted(row["version"] for row in versions)


# --- discovery -----------------------------------------------------------------------------------


def test_every_tool_is_listed_with_a_description_and_an_input_schema(
        mcp_session: Connect) -> None:
    async def main() -> None:
        async with mcp_session() as client:
            tools = {tool.name: tool for tool in await client.list_tools()}
        assert set(tools) == EVERY_TOOL
        for name, tool in tools.items():
            assert tool.description and len(tool.description) > 40, name
            assert tool.inputSchema["type"] == "object", name
        assert tools["status"].description.startswith("Call status() first")  # type: ignore[union-attr]
        assert set(tools["create_workspace"].inputSchema["required"]) == {"name", "goal",
                                                                         "reason"}
        action = tools["manage_versions"].inputSchema["properties"]["action"]
        assert set(action["enum"]) == {"list", "tag", "untag", "prune", "unprune"}
        for name in ("mount", "hibernate", "rollback", "delete_workspace"):
            reason = tools[name].inputSchema["properties"]["reason"]
            assert "at least 15 characters" in reason["description"], name
        assert "w1, w2" in tools["mount"].inputSchema["properties"]["slot"]["description"]
        assert tools["status"].annotations and tools["status"].annotations.readOnlyHint

    asyncio.run(main())


# --- a whole session -----------------------------------------------------------------------------


def test_a_whole_session_from_create_to_audit(project: Path, mcp_session: Connect) -> None:
    async def main() -> None:
        async with mcp_session() as client:
            status = await call(client, "status")
            assert "digits" in status["state_md"]

            created = await call(client, "create_workspace", name="baseline",
                                 goal="a logistic regression baseline", reason=WHY)
            assert created["workspace"] == "baseline"
            assert created["forked_from"] is None

            mounted = await call(client, "mount", workspace="baseline", slot="w1", reason=WHY)
            slot = Path(mounted["path"])
            assert slot == project / "workspaces" / "w1"

            (slot / "train.py").write_text("lr = 0.1\nepochs = 10\n")
            (slot / "README.md").write_text("baseline\n")
            saved = await call(client, "save_version", slot="w1",
                               message="first runnable training script")
            assert (saved["version"], saved["created"], saved["file_count"]) == ("v1", True, 2)
            again = await call(client, "save_version", slot="w1",
                               message="saving again without any change")
            assert (again["version"], again["created"]) == ("v1", False)

            (slot / "train.py").write_text("lr = 0.01\nepochs = 10\n")
            diff = await call(client, "diff", target="w1")
            assert diff["has_changes"] is True
            assert diff["files_changed"] == [{"path": "train.py", "change": "modified"}]
            assert "@@" in diff["diff_text"]
            assert "-lr = 0.1\n" in diff["diff_text"]
            assert "+lr = 0.01\n" in diff["diff_text"]

            rolled = await call(client, "rollback", slot="w1", version="v1",
                                reason="the smaller learning rate diverged; undo it")
            assert rolled["auto_saved_version"] == "v2"
            assert (slot / "train.py").read_text() == "lr = 0.1\nepochs = 10\n"
            clean = await call(client, "diff", target="w1", against="v1")
            assert clean["has_changes"] is False

            (slot / "notes.md").write_text("try weight decay next\n")
            slept = await call(client, "hibernate", slot="w1",
                               reason="switching to the CNN idea for a while")
            assert (slept["auto_saved"], slept["saved_version"]) == (True, "v3")
            assert not (slot / "notes.md").exists()

            listed = await call(client, "manage_versions", workspace="baseline", action="list")
            assert listed["total"] == 3
            assert version_names(listed["versions"]) == ["v1", "v2", "v3"]
            await call(client, "manage_versions", workspace="baseline", action="tag",
                       version="v1", tag="best", reason="v1 had the best validation loss")
            pruned = await call(client, "manage_versions", workspace="baseline", action="prune",
                                version=2, reason="auto-save of a diverging experiment")
            assert pruned["pruned"] == ["v2"]
            listed = await call(client, "manage_versions", workspace="baseline", action="list")
            assert version_names(listed["versions"]) == ["v1", "v3"]
            with_pruned = await call(client, "manage_versions", workspace="baseline",
                                     action="list", include_pruned=True)
            assert version_names(with_pruned["versions"]) == ["v1", "v2", "v3"]

            ws = await call(client, "inspect_workspace", name="baseline")
            assert ws["goal"] == "a logistic regression baseline"
            assert ws["version_total"] == 3
            assert ws["tags"] == {"best": "v1"}

            thought = "lr 0.1 is stable; the next thing to try is weight decay"
            logged = await call(client, "log_thought", thought=thought, workspace="baseline")
            assert logged["logged"] is True
            thoughts = await call(client, "get_workspace_thoughts", workspace="baseline")
            assert [t["thought"] for t in thoughts["thoughts"]] == [thought]

            remounted = await call(client, "mount", workspace="baseline", slot="w2",
                                   reason="back to the baseline to add weight decay")
            assert (Path(remounted["path"]) / "notes.md").read_text() == "try weight decay next\n"
            assert [t["thought"] for t in remounted["recent_thoughts"]] == [thought]

            audit = await call(client, "get_audit_log", limit=50, workspace="baseline")
            entries = audit["entries"]
            said = [(e["type"], e["reason"]) for e in entries]
            assert ("WorkspaceCreated", WHY) in said
            assert ("WorkspaceHibernated", "switching to the CNN idea for a while") in said
            assert {e["actor"] for e in entries} == {ACTOR}
            positions = [e["position"] for e in entries]
            assert positions == sorted(positions, reverse=True)  # newest first

            status = await call(client, "status")
            assert "baseline" in status["state_md"]
            assert status["workspace_count"] == 1

        state_md = (project / "STATE.md").read_text()
        assert "baseline" in state_md

    asyncio.run(main())


def test_a_workspace_branched_from_a_version_starts_with_its_files(
        project: Path, mcp_session: Connect) -> None:
    async def main() -> None:
        async with mcp_session() as client:
            await call(client, "create_workspace", name="base", goal="the starting point",
                       reason=WHY)
            mounted = await call(client, "mount", workspace="base", slot="w1", reason=WHY)
            (Path(mounted["path"]) / "model.py").write_text("layers = 2\n")
            await call(client, "save_version", slot="w1", message="two layers to start with")
            fork = await call(client, "create_workspace", name="deeper",
                              goal="does a third layer help", reason=WHY,
                              from_workspace="base", from_version="v1")
            assert fork["forked_from"] == "base@v1"
            branched = await call(client, "mount", workspace="deeper", slot="w2", reason=WHY)
            assert (Path(branched["path"]) / "model.py").read_text() == "layers = 2\n"
            diff = await call(client, "diff", target="deeper@v1", against="base@v1")
            assert diff["has_changes"] is False

    asyncio.run(main())


def test_concurrent_calls_from_one_client_are_each_recorded_once(mcp_session: Connect) -> None:
    """Requests in flight together are served one at a time by the facade, none lost."""
    async def main() -> None:
        async with mcp_session() as client:
            await call(client, "create_workspace", name="busy", goal="many notes at once",
                       reason=WHY)
            notes = [f"observation number {i} about the loss curve" for i in range(8)]
            await asyncio.gather(*(call(client, "log_thought", thought=note, workspace="busy")
                                   for note in notes))
            thoughts = await call(client, "get_workspace_thoughts", workspace="busy")
            assert sorted(t["thought"] for t in thoughts["thoughts"]) == sorted(notes)

    asyncio.run(main())


# --- refusals ------------------------------------------------------------------------------------


def test_bad_input_is_a_tool_error_with_code_and_hint_and_records_nothing(
        project: Path, mcp_session: Connect) -> None:
    async def main() -> None:
        async with mcp_session() as client:
            await call(client, "create_workspace", name="taken", goal="occupies w1", reason=WHY)
            await call(client, "create_workspace", name="other", goal="wants w1", reason=WHY)
            await call(client, "mount", workspace="taken", slot="w1", reason=WHY)
            before = await call(client, "get_audit_log", limit=500)
            head = (await call(client, "status"))["head_position"]

            text = await refuse(client, "create_workspace", "reason_too_short",
                                name="fresh", goal="anything", reason="because")
            assert "15" in text
            await refuse(client, "create_workspace", "invalid_name", name="a/b",
                         goal="anything", reason=WHY)
            await refuse(client, "mount", "unknown_slot", workspace="other", slot="w9",
                         reason=WHY)
            await refuse(client, "mount", "slot_occupied", workspace="other", slot="w1",
                         reason=WHY)
            await refuse(client, "delete_workspace", "workspace_mounted", workspace="taken",
                         reason=WHY)
            await refuse(client, "hibernate", "unknown_slot", slot="nope", reason=WHY)
            await refuse(client, "inspect_workspace", "unknown_workspace", name="ghost")
            await refuse(client, "get_audit_log", "unknown_workspace", workspace="ghost")
            await refuse(client, "manage_versions", "tag_args", workspace="taken", action="tag")
            await refuse(client, "mount", "invalid_arguments", workspace="other")
            await refuse(client, "get_audit_log", "invalid_arguments", limit=0)
            await refuse(client, "manage_versions", "invalid_arguments", workspace="taken",
                         action="delete-everything")

            assert await call(client, "get_audit_log", limit=500) == before
            assert (await call(client, "status"))["head_position"] == head
            assert not (project / "workspaces" / "w2").exists() or not any(
                (project / "workspaces" / "w2").iterdir())

    asyncio.run(main())


# --- the process ---------------------------------------------------------------------------------


def test_stdout_carries_only_protocol_messages(server_argv: list[str],
                                               server_environ: dict[str, str],
                                               project: Path) -> None:
    """Every line the server writes to stdout is a JSON-RPC message, even around errors."""
    messages: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "status", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "mount", "arguments": {"workspace": "x", "slot": "w1",
                                                   "reason": "no"}}},
    ]
    with subprocess.Popen(server_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=server_environ, cwd=project,
                          text=True) as proc:
        assert proc.stdin and proc.stdout
        replies: dict[int, dict[str, Any]] = {}
        for message in messages:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            if "id" not in message:
                continue
            while message["id"] not in replies:
                line = proc.stdout.readline()
                assert line, "the server closed stdout early"
                reply = json.loads(line)  # anything but JSON-RPC here would break a client
                assert reply["jsonrpc"] == "2.0"
                if "id" in reply:
                    replies[reply["id"]] = reply
        proc.stdin.close()
        rest = proc.stdout.read()
        for line in rest.splitlines():
            assert json.loads(line)["jsonrpc"] == "2.0"
        assert proc.wait(timeout=30) == 0
    assert replies[2]["result"]["isError"] is False
    assert replies[3]["result"]["isError"] is True
    assert replies[3]["result"]["content"][0]["text"].startswith("[reason_too_short]")


def test_python_dash_m_quipu_mcp_serves_the_project_named_by_the_environment(
        project: Path, tmp_path: Path, mcp_session: Connect) -> None:
    async def main() -> None:
        async with mcp_session(command=[sys.executable, "-m", "quipu.mcp"],
                               extra_env={"QUIPU_PROJECT": str(project)},
                               in_dir=tmp_path) as client:
            created = await call(client, "create_workspace", name="via-module",
                                 goal="reach the server another way", reason=WHY)
            assert created["workspace"] == "via-module"
            audit = await call(client, "get_audit_log", limit=1)
            assert [(e["type"], e["actor"]) for e in audit["entries"]] == [
                ("WorkspaceCreated", ACTOR)]

    asyncio.run(main())


def test_a_directory_without_a_project_still_serves_and_answers_no_project(
        tmp_path: Path, server_environ: dict[str, str]) -> None:
    """Outside any project the server starts (so an agent can create one over MCP) and every
    project tool answers [no_project] naming initialize_project; an immediate EOF ends it."""
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, "-m", "quipu.mcp"], cwd=empty, env=server_environ,
                          input="", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no project at or above" in done.stderr
    assert done.stdout == ""
    assert not (empty / "quipu.yaml").exists()


def test_the_official_mcp_client_drives_the_same_server(
        sdk_session: Callable[..., AbstractAsyncContextManager[Any]], project: Path) -> None:
    """The official ``mcp`` SDK's ClientSession (not fastmcp's client) lists the same tools,
    and a write and a refusal come back as that client sees them."""
    async def main() -> None:
        async with sdk_session() as session:
            listed = await session.list_tools()
            assert {tool.name for tool in listed.tools} == EVERY_TOOL
            made = await session.call_tool("create_workspace", {
                "name": "sdk", "goal": "driven by the official client", "reason": WHY})
            assert not made.isError
            assert made.structuredContent is not None
            assert made.structuredContent["workspace"] == "sdk"
            refused = await session.call_tool("create_workspace", {
                "name": "sdk", "goal": "the same name again", "reason": WHY})
            assert refused.isError
            assert "[workspace_exists]" in refused.content[0].text

    asyncio.run(main())
    assert "sdk" in (project / "STATE.md").read_text()

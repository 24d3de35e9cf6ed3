"""An agent running experiments: real ``quipu serve`` (with its local executor) over stdio.

The pipeline is written into the slot with plain file writes, as an agent does; the stages use
``quipu.sdk`` and run as real subprocesses of the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from mcp_calls import fastmcp_call as call
from mcp_calls import fastmcp_refuse as refuse
from toy_pipeline import SPEC, write_toy_pipeline

from quipu.core.runs.lifecycle import gate_rule

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
Connect = Callable[..., AbstractAsyncContextManager[Client[Any]]]
WHY = "exercising runs end to end from a real MCP client"





async def mounted_pipeline(client: Client[Any], project: Path, name: str = "toy") -> Path:
    """A workspace mounted in w1 whose slot holds the two-stage pipeline."""
    await call(client, "create_workspace", name=name, goal="a toy two-stage pipeline",
               reason=WHY)
    mounted = await call(client, "mount", workspace=name, slot="w1", reason=WHY)
    slot = Path(mounted["path"])
    assert slot == project / "workspaces" / "w1"
    write_toy_pipeline(slot)
    return slot


def by_stage(result: dict[str, Any]) -> dict[str, str]:
    """``{stage: stage_run_id}`` from run()'s answer."""
    return {q["stage"]: q["stage_run_id"] for q in result["queued"]}


# --- discovery -----------------------------------------------------------------------------------


def test_run_tools_are_listed_and_run_states_the_gate_rule(mcp_session: Connect) -> None:
    async def main() -> None:
        async with mcp_session() as client:
            tools = {tool.name: tool for tool in await client.list_tools()}
        for name in ("run", "validate_config", "inspect_run", "logs", "cancel", "finalize_run",
                     "list_history", "inspect_record", "tag_record", "list_unfinalized_runs",
                     "get_experiment_context", "get_metric_history", "save_results_spec",
                     "dashboard", "mark_seen"):
            assert name in tools, name
            description = tools[name].description
            assert description is not None and len(description) > 40, name
        run = tools["run"]
        assert run.description is not None
        assert gate_rule() in run.description
        assert gate_rule() in (ROOT / "docs" / "mcp.md").read_text()
        assert "finalization_required" in run.description
        props = run.inputSchema["properties"]
        assert set(run.inputSchema["required"]) == {"workspace", "reason"}
        spec_help = props["results_spec"]["description"]
        assert "primary_metric" in spec_help and "dataset_split" in spec_help
        tail = tools["logs"].inputSchema["properties"]["tail"]
        assert (tail["minimum"], tail["maximum"]) == (1, 10000)

    asyncio.run(main())


# --- a whole experiment --------------------------------------------------------------------------


def test_run_gate_finalize_and_history_over_stdio(project: Path, mcp_session: Connect) -> None:
    async def main() -> None:
        async with mcp_session() as client:
            await mounted_pipeline(client, project)
            checked = await call(client, "validate_config", workspace="w1")
            assert checked["valid"] is True and checked["stages_to_run"] == ["prep", "train"]

            started = await call(client, "run", workspace="w1", results_spec=SPEC, wait=True,
                                 reason={"description": "first run of the toy pipeline",
                                         "hypothesis": "accuracy climbs with every epoch"})
            assert started["version"] == "v1"
            ids = by_stage(started)
            assert set(ids) == {"prep", "train"}
            states = {r["stage_run_id"]: r["state"] for r in started["stage_runs"]}
            assert states == {ids["prep"]: "succeeded", ids["train"]: "succeeded"}

            text = await refuse(client, "run", "finalization_required", workspace="w1",
                                results_spec=SPEC, reason="a second run before finalizing")
            assert ids["prep"] in text and ids["train"] in text
            pending = await call(client, "list_unfinalized_runs", workspace="toy")
            assert [r["run_id"] for r in pending["runs"]] == [ids["prep"], ids["train"]]

            prep = await call(client, "finalize_run", record_or_run_id=ids["prep"],
                              results={"ml_outcome": "unknown",
                                       "notes": "preprocessing only; nothing to judge here"})
            assert prep["comparison"] is None
            train = await call(client, "finalize_run", record_or_run_id=ids["train"], results={
                "primary_metric": "accuracy", "direction": "maximize", "value": 0.7,
                "dataset_split": "val", "ml_outcome": "partial",
                "notes": "reaches the minimum of 0.6 but not the goal of 0.8"})
            assert train["comparison"] is not None
            assert train["comparison"]["meets_min"] is True
            assert train["comparison"]["meets_goal"] is False
            assert train["results_auto"]["value"] == pytest.approx(0.7)

            await refuse(client, "finalize_run", "already_finalized",
                         record_or_run_id=ids["train"],
                         results={"ml_outcome": "miss", "notes": "trying to change my mind"})

            again = await call(client, "run", workspace="w1", results_spec=SPEC,
                               stages=["train"], config_override={"epochs": 4},
                               reason="one more epoch now that the gate is clear", wait=True)
            second = by_stage(again)["train"]
            assert again["stage_runs"][0]["state"] == "succeeded"

            history = await call(client, "list_history", workspace="toy")
            listed = [r["run_id"] for r in history["records"]]
            assert set(listed) == {ids["prep"], ids["train"], second}
            record = await call(client, "inspect_record", ref=ids["train"])
            assert record["ml_outcome"] == "partial"
            assert record["results"]["notes"] == (
                "reaches the minimum of 0.6 but not the goal of 0.8")

            context = await call(client, "get_experiment_context", workspace="toy")
            best = context["current_best"]
            assert (best["run_id"], best["value"]) == (ids["train"], pytest.approx(0.7))
            assert [r["run_id"] for r in context["awaiting_finalization"]] == [second]

            board = await call(client, "dashboard")
            assert board["pending_finalization"]["by_workspace"]["toy"]["runs"] == [
                {"run_id": second, "stage": "train", "state": "succeeded"}]

            inspected = await call(client, "inspect_run", run_id=second)
            assert inspected["state"] == "succeeded"
            curve = await call(client, "get_metric_history", run_id=second, name="accuracy")
            assert [p["step"] for p in curve["points"]] == [0, 1, 2, 3]
            assert [p["value"] for p in curve["points"]] == pytest.approx([0.5, 0.6, 0.7, 0.8])
            output = await call(client, "logs", run_id=second)
            assert output["lines"] == ["trained on 10 rows for 4 epochs"]
            # Following an ended run past its last line answers at once: nothing more will come.
            after = await call(client, "logs", run_id=second, since=output["next"], follow=True,
                               follow_seconds=30)
            assert after["lines"] == [] and after["ended"] is True

            await call(client, "tag_record", ref=ids["train"], tag="best",
                       reason="the wider layer is the one to beat")
            best = await call(client, "list_history", workspace="toy", tagged="best")
            assert [r["run_id"] for r in best["records"]] == [ids["train"]]
            respec = await call(client, "save_results_spec", run_id=second,
                                spec={**SPEC, "goal_value": 0.9})
            assert respec["spec"]["goal_value"] == 0.9
            await refuse(client, "save_results_spec", "invalid_results_spec", run_id=second,
                         spec={**SPEC, "goal_value": 0.1})

            seen = await call(client, "dashboard", consumer="e2e-agent")
            assert seen["new_since_last_look"]["started"]["count"] == 3
            await call(client, "mark_seen", consumer="e2e-agent",
                       position=seen["cursor_position"])
            later = await call(client, "dashboard", consumer="e2e-agent")
            assert later["new_since_last_look"]["started"]["count"] == 0

    asyncio.run(main())


# --- refusals ------------------------------------------------------------------------------------


def test_bad_run_input_is_refused_with_its_code_and_records_nothing(
        project: Path, mcp_session: Connect) -> None:
    async def main() -> None:
        async with mcp_session() as client:
            await mounted_pipeline(client, project)
            head = (await call(client, "status"))["head_position"]

            await refuse(client, "run", "results_spec_missing", workspace="w1",
                         reason="a run without saying what it must show")
            text = await refuse(client, "run", "invalid_results_spec", workspace="w1",
                                reason="a run with a broken results spec",
                                results_spec={"primary_metric": "accuracy", "direction": "up",
                                              "tolerence": 0.1})
            for problem in ("direction", "tolerence", "did you mean 'tolerance'",
                            "min_value: is required", "context: is required"):
                assert problem in text, problem
            await refuse(client, "run", "override_needs_stage_keys", workspace="w1",
                         results_spec=SPEC, config_override={"epochs": 5},
                         reason="a flat override for two stages")
            await refuse(client, "run", "invalid_arguments", workspace="w1", results_spec=SPEC,
                         reason={"description": "a structured reason", "mood": "hopeful"})
            await refuse(client, "logs", "invalid_arguments", run_id="stage-x", tail=10001)
            await refuse(client, "inspect_run", "unknown_run", run_id="stage-000000000000")
            await refuse(client, "cancel", "unknown_run", run_id="stage-000000000000",
                         reason="cancel a run that does not exist")

            assert (await call(client, "status"))["head_position"] == head

    asyncio.run(main())

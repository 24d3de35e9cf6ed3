"""The post-run suggestion and request_stop over stdio, with the official ``mcp`` SDK's
ClientSession against a real ``quipu serve`` (its executor, monitor and post-run review)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp_calls import sdk_call as call
from toy_pipeline import SPEC, write_toy_pipeline
from waiting import wait_until_async

pytestmark = pytest.mark.timeout(300)

SdkConnect = Callable[..., AbstractAsyncContextManager[ClientSession]]
WHY = "the post-run review suggests, the agent decides"
SUGGESTION_BUDGET = 1_500
"""Characters the suggestion may add to one run's entry (at most six evidence lines)."""


def test_the_post_run_suggestion_is_shown_but_only_the_agents_call_decides(
        project: Path, sdk_session: SdkConnect) -> None:
    async def main() -> None:
        async with sdk_session() as session:
            await call(session, "create_workspace", name="toy", goal="a toy pipeline",
                       reason=WHY)
            mounted = await call(session, "mount", workspace="toy", slot="w1", reason=WHY)
            write_toy_pipeline(Path(mounted["path"]))
            first = await call(session, "run", workspace="w1", results_spec=SPEC, wait=True,
                               config_override={"train": {"epochs": 4}},
                               reason={"description": "four epochs of the toy pipeline",
                                       "hypothesis": "more epochs raise accuracy"})
            train = {q["stage"]: q["stage_run_id"] for q in first["queued"]}["train"]

            async def suggested() -> dict[str, Any] | None:
                pending = await call(session, "list_unfinalized_runs", workspace="toy")
                runs = {r["run_id"]: r for r in pending["runs"]}
                return pending if "suggested" in runs.get(train, {}) else None

            pending = await wait_until_async(suggested, what="the post-run review suggests",
                                             timeout=120)
            assert isinstance(pending, dict)
            entry = {r["run_id"]: r for r in pending["runs"]}[train]
            hint = entry["suggested"]
            assert hint["outcome"] == "success"
            assert "hypothesis: more epochs raise accuracy" in hint["evidence"]
            assert any(line.startswith("accuracy = 0.8") and "meets the goal" in line
                       for line in hint["evidence"])
            assert len(json.dumps(hint)) <= SUGGESTION_BUDGET
            # The suggestion never applies itself: the run still waits for a verdict.
            assert entry["state"] == "succeeded"

            # The agent disagrees: its call is what the record says.
            verdict = await call(session, "finalize_run", record_or_run_id=train, results={
                "primary_metric": "accuracy", "direction": "maximize", "value": 0.8,
                "dataset_split": "val", "ml_outcome": "partial",
                "notes": "reaches the goal but on a toy split only"})
            assert verdict["ml_outcome"] == "partial"
            assert verdict["suggested"]["outcome"] == "success"
            assert verdict["suggested"]["agrees"] is False
            record = await call(session, "inspect_record", ref=train)
            assert record["ml_outcome"] == "partial"

    asyncio.run(main())


def test_request_stop_is_refused_by_name_for_a_run_that_ended(
        project: Path, sdk_session: SdkConnect) -> None:
    async def main() -> None:
        async with sdk_session() as session:
            await call(session, "create_workspace", name="toy", goal="a toy pipeline",
                       reason=WHY)
            mounted = await call(session, "mount", workspace="toy", slot="w1", reason=WHY)
            write_toy_pipeline(Path(mounted["path"]))
            first = await call(session, "run", workspace="w1", results_spec=SPEC, wait=True,
                               reason={"description": "a short toy run to stop too late",
                                       "hypothesis": "nothing left to stop"})
            prep = first["queued"][0]["stage_run_id"]
            result = await session.call_tool("request_stop", {
                "run_id": prep, "reason": "asking an ended run to stop"})
            assert result.isError
            text = getattr(result.content[0], "text", "")
            assert "[run_ended]" in text
            typo = await session.call_tool("request_stop", {
                "run_id": "stage-nope", "reason": "asking an unknown run to stop"})
            assert typo.isError and "[unknown_run]" in getattr(typo.content[0], "text", "")

    asyncio.run(main())

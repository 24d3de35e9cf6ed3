"""The failure-pattern loop over stdio with the official ``mcp`` client against a real
``quipu serve``: a real stage fails, its error becomes a candidate, an invalid rule is refused
at approval (nothing written), a valid one is approved, the dashboard alerts once per
consumer; answer sizes measured."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from mcp_calls import sdk_call as call
from waiting import wait_until_async

pytestmark = pytest.mark.timeout(300)

SdkConnect = Callable[..., AbstractAsyncContextManager[Any]]
WHY = "learn from the stage that keeps failing with a bad shape"
SPEC = {"primary_metric": "acc", "direction": "maximize", "min_value": 0.5,
        "goal_value": 0.8, "dataset_split": "val", "tolerance": 0.01,
        "context": "a toy stage that always fails"}


def test_failure_patterns_over_stdio_with_the_official_client(
        project: Path, sdk_session: SdkConnect) -> None:
    async def main() -> None:
        async with sdk_session() as session:
            await call(session, "create_workspace", name="pf", goal="a stage that fails",
                       reason=WHY)
            slot = Path((await call(session, "mount", workspace="pf", slot="w1",
                                    reason=WHY))["path"])
            (slot / "modules").mkdir()
            (slot / "pipeline.yaml").write_text("stages:\n  - name: fit\n")
            (slot / "modules" / "fit.py").write_text(
                "raise ValueError('labels shifted by 1 step')\n")
            started = await call(session, "run", workspace="w1", results_spec=SPEC,
                                 wait=True, reason=WHY)
            assert {r["state"] for r in started["stage_runs"]} == {"failed"}

            async def listed() -> Any:
                answer = await call(session, "manage_patterns", action="list")
                return answer if answer["total"] else None

            found = await wait_until_async(listed, what="a candidate pattern")
            assert isinstance(found, dict)
            assert len(json.dumps(found)) < 2000
            [row] = found["patterns"]
            assert row["status"] == "candidate" and row["signal"] == "stage_error"
            assert "labels shifted" in row["symptom"]
            pid = row["pattern_id"]

            board = await call(session, "dashboard", consumer="agent")
            assert board["svs_alerts"]["candidate_patterns"]["count"] == 1
            assert len(json.dumps(board["svs_alerts"])) < 800

            head = board["cursor_position"]  # the log's head as the views saw it
            refused = await session.call_tool("manage_patterns", {
                "action": "approve", "pattern_id": pid, "reason": WHY,
                "detection": {"kind": "metric", "metric": "loss", "op": "=>",
                              "threshold": 1}})
            assert refused.isError
            text = refused.content[0].text
            assert text.startswith("[invalid_detection]") and "detection.op" in text
            assert "did you mean '>='" in text
            assert (await call(session, "dashboard", consumer="agent"))["cursor_position"] \
                == head  # refused: nothing written

            typo = await session.call_tool("manage_patterns", {
                "action": "get", "pattern_id": pid[:-1] + ("1" if pid[-1] == "0" else "0")})
            assert typo.isError and typo.content[0].text.startswith("[unknown_pattern]")
            assert pid in typo.content[0].text

            approved = await call(session, "manage_patterns", action="approve",
                                  pattern_id=pid, reason=WHY,
                                  detection={"kind": "code", "regex": r"shift\(1\)"},
                                  prevention="align labels with their features")
            assert approved["status"] == "approved" and approved["machine_checkable"]
            got = await call(session, "manage_patterns", action="get", pattern_id=pid)
            assert got["pattern"]["decided_by"] and got["pattern"]["decision_reason"] == WHY
            assert len(json.dumps(got)) < 3000

            await call(session, "mark_seen", consumer="agent",
                       position=board["cursor_position"])
            assert "svs_alerts" not in await call(session, "dashboard", consumer="agent")
            other = await call(session, "dashboard", consumer="person")
            assert other["svs_alerts"]["candidate_patterns"]["count"] == 1

    asyncio.run(main())

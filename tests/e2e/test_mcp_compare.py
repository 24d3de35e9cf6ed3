"""compare over stdio with the official ``mcp`` SDK's ClientSession, after two real runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from mcp_calls import sdk_call as call
from toy_pipeline import SPEC, write_toy_pipeline

pytestmark = pytest.mark.timeout(300)

WHY = "exercising compare end to end from the official MCP client"



async def run_train(session: Any) -> tuple[str, str]:
    """Run the toy pipeline to its end and finalize it; (pipeline run id, train run id)."""
    started = await call(session, "run", workspace="w1", reason=WHY, results_spec=SPEC,
                         wait=True)
    assert {r["state"] for r in started["stage_runs"]} == {"succeeded"}
    train = next(q["stage_run_id"] for q in started["queued"] if q["stage"] == "train")
    shown = await call(session, "inspect_record", ref=train)
    await call(session, "finalize_run", record_or_run_id=started["pipeline_run_id"], results={
        "primary_metric": "accuracy", "direction": "maximize", "value": shown["value"],
        "dataset_split": "val", "ml_outcome": "partial", "notes": WHY})
    return started["pipeline_run_id"], train


def test_compare_says_why_b_beat_a_in_one_call(
        sdk_session: Callable[..., AbstractAsyncContextManager[Any]], project: Path) -> None:
    async def main() -> None:
        async with sdk_session() as session:
            await call(session, "create_workspace", name="toy", goal="a toy pipeline",
                       reason=WHY)
            mounted = await call(session, "mount", workspace="toy", slot="w1", reason=WHY)
            slot = Path(mounted["path"])
            write_toy_pipeline(slot)
            _, first = await run_train(session)
            (slot / "configs").mkdir()
            (slot / "configs" / "train.yaml").write_text("epochs: 5\n")
            prun, second = await run_train(session)

            out = await call(session, "compare", a=first, b=second)
            assert next(iter(out)) == "summary"
            assert out["summary"].startswith(f"B {second} beat A {first} on accuracy")
            assert out["config"]["changes"] == [
                {"key": "epochs", "change": "changed", "a": 3, "b": 5}]
            assert [f["path"] for f in out["code"]["files"]] == ["configs/train.yaml"]
            assert out["metrics"]["deltas"][0]["outcome"] == "better"
            assert out["inputs"]["same"] == ["features"]
            assert len(json.dumps(out)) <= 12_000

            versions = await call(session, "compare", a="toy@v1", b="toy", max_diff_lines=0)
            assert versions["code"]["diff_text"] == ""
            assert versions["config"]["changes"][0]["key"] == "train.epochs"

            missing = await session.call_tool("compare", {"a": "tyo", "b": second})
            assert missing.isError
            text = missing.content[0].text
            assert text.startswith("[unknown_ref] ") and "did you mean 'toy'" in text

            refused = await session.call_tool("compare", {"a": prun, "b": second})
            assert refused.isError
            assert refused.content[0].text.startswith("[invalid_compare_ref] ")
            assert second in refused.content[0].text

    asyncio.run(main())

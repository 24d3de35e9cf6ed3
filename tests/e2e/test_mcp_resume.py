"""run(resume_from=...) over stdio with the official ``mcp`` SDK's ClientSession: a real
``quipu serve`` executes a stage that saves checkpoints, then a second run that resumes from
one of them; the refusals carry their codes and write nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from mcp_calls import sdk_call as call

pytestmark = pytest.mark.timeout(300)

WHY = "continue training from a checkpoint another run saved"

PIPELINE = """\
stages:
  - name: train
    outputs:
      model: {type: json, schema: null}
"""

TRAIN = """\
from quipu import sdk

try:
    start = sdk.load_checkpoint("epoch", step=1)["epoch"] + 1
except sdk.CheckpointNotFound:
    start = 0
for epoch in range(start, start + 2):
    sdk.save_checkpoint("epoch", {"epoch": epoch}, step=epoch)
    sdk.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
sdk.save_output("model", {"started_at": start})
"""

SPEC = {"primary_metric": "loss", "direction": "minimize", "min_value": 1.0, "goal_value": 0.1,
        "dataset_split": "val", "tolerance": 0.01, "context": "a toy loss for resume tests"}
VERDICT = {"primary_metric": "loss", "direction": "minimize", "value": 0.5,
           "dataset_split": "val", "ml_outcome": "partial",
           "notes": "a toy verdict for the resume test"}


async def refused(session: Any, code: str, **arguments: Any) -> str:
    result = await session.call_tool("run", arguments)
    text: str = result.content[0].text
    assert result.isError and text.startswith(f"[{code}] "), text
    return text


def test_a_run_resumes_from_another_runs_checkpoint_over_stdio(
        sdk_session: Callable[..., AbstractAsyncContextManager[Any]], project: Path) -> None:
    async def main() -> None:
        async with sdk_session() as session:
            await call(session, "create_workspace", name="toy", goal="resume a toy run",
                       reason=WHY)
            mounted = await call(session, "mount", workspace="toy", slot="w1", reason=WHY)
            slot = Path(mounted["path"])
            (slot / "pipeline.yaml").write_text(PIPELINE)
            (slot / "modules").mkdir()
            (slot / "modules" / "train.py").write_text(TRAIN)
            first = await call(session, "run", workspace="w1", reason=WHY, results_spec=SPEC,
                               wait=True)
            source = first["queued"][0]["stage_run_id"]
            await call(session, "finalize_run", record_or_run_id=source, results=VERDICT)

            head = (await call(session, "status"))["head_position"]
            text = await refused(session, "unknown_run", workspace="w1", reason=WHY,
                                 results_spec=SPEC, resume_from=source[:-1] + "z")
            assert f"did you mean {source!r}" in text
            preview = await call(session, "run", workspace="w1", reason=WHY, dry_run=True,
                                 resume_from=source)
            assert [(c["name"], c["step"]) for c in preview["resume_from"]["checkpoints"]] == [
                ("epoch", 0), ("epoch", 1)]
            assert (await call(session, "status"))["head_position"] == head

            second = await call(session, "run", workspace="w1", reason=WHY, results_spec=SPEC,
                                resume_from=source, wait=True)
            resumed = second["queued"][0]["stage_run_id"]
            assert second["resume_from"]["stage_run_id"] == resumed
            assert len(json.dumps(second)) < 3000
            assert {r["state"] for r in second["stage_runs"]} == {"succeeded"}

            shown = await call(session, "inspect_run", run_id=resumed, include=["provenance"])
            assert shown["resumed_from"]["run_id"] == source
            assert len(json.dumps(shown["resumed_from"])) < 1000
            up = await call(session, "get_lineage", ref=resumed, depth=1)
            assert [f"run:{source}", "resumed-from", f"run:{resumed}"] in [
                e[:3] for e in up["edges"]]

    asyncio.run(main())

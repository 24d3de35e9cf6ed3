"""Output contracts and statistics reach the agent: a real ``quipu serve`` runs a stage whose
outputs break their contract and hold a dead column, and the official ``mcp`` SDK's
ClientSession reads the findings back (get_run_svs_findings, inspect_run include svs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp_calls import sdk_call as call

pytestmark = pytest.mark.timeout(300)

SdkConnect = Callable[..., AbstractAsyncContextManager[ClientSession]]
WHY = "see what the output checks found, end to end"
SPEC = {"primary_metric": "rows", "direction": "maximize", "min_value": 1.0, "goal_value": 2.0,
        "dataset_split": "val", "tolerance": 0.0, "context": "output checks end to end"}

PIPELINE = """\
stages:
  - name: make
    outputs:
      emb: {type: npy, schema: {shape: [null, 4], dtype: float32}}
      table: {type: csv, schema: {columns: [id, label]}}
"""

MAKE = """\
import numpy as np
from quipu import sdk

sdk.save_output("emb", np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32))
sdk.save_output("table", [{"id": i, "label": "same"} for i in range(10)])
sdk.log_metric("rows", 10.0)
"""


def test_an_agent_reads_the_findings_of_a_run(project: Path, sdk_session: SdkConnect) -> None:
    async def main() -> None:
        async with sdk_session() as session:
            await call(session, "create_workspace", name="svs", goal="check outputs",
                       reason=WHY)
            mounted = await call(session, "mount", workspace="svs", slot="w1", reason=WHY)
            slot = Path(mounted["path"])
            (slot / "pipeline.yaml").write_text(PIPELINE)
            (slot / "modules").mkdir(exist_ok=True)
            (slot / "modules" / "make.py").write_text(MAKE)
            started = await call(session, "run", workspace="w1", results_spec=SPEC, wait=True,
                                 reason={"description": "write outputs that break contracts",
                                         "hypothesis": "the checks notice"})
            (run_id,) = [q["stage_run_id"] for q in started["queued"]]

            found = await call(session, "get_run_svs_findings", run_id=run_id)
            # The post-run review's suggestion (an asynchronous follower) may have added its
            # one informational row by now; the output checks made exactly two warnings.
            counts = found["counts"]
            assert counts["error"] == 0 and counts["warning"] == 2 and counts["info"] <= 1
            assert counts["total"] == 2 + counts["info"]
            by_signal = {f["signal"]: f for f in found["findings"] if f["phase"] != "post_run"}
            assert set(by_signal) == {"shape_mismatch", "constant_column"}
            assert by_signal["shape_mismatch"]["phase"] == "contract"
            assert by_signal["constant_column"]["output"] == "table"
            assert len(json.dumps(found)) <= 3_000

            inspected = await call(session, "inspect_run", run_id=run_id, include=["svs"])
            svs = inspected["svs"]
            assert svs["outputs"]["emb"]["shape"] == [30, 3]
            assert svs["outputs"]["table"]["columns"]["label"]["unique"] == 1
            assert svs["counts"]["warning"] == 2 and svs["counts"]["error"] == 0

            refused = await session.call_tool("get_run_svs_findings",
                                              {"run_id": "stage-nope"})
            assert refused.isError
            assert getattr(refused.content[0], "text", "").startswith("[unknown_run] ")

    asyncio.run(main())

"""Non-finite metrics never vanish: real stages log NaN and infinities, an agent reads them over
stdio (fastmcp's client), and nothing suggests that a diverged run succeeded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from mcp_calls import fastmcp_call as call

pytestmark = pytest.mark.timeout(300)

Connect = Callable[..., AbstractAsyncContextManager[Client[Any]]]
WHY = "metrics that go NaN or infinite must stay visible"
SPEC = {"primary_metric": "acc", "direction": "maximize", "min_value": 0.5,
        "goal_value": 0.8, "dataset_split": "val", "tolerance": 0.01,
        "context": "a toy accuracy that may diverge"}
PIPELINE = "stages:\n  - name: diverge\n  - name: nans\n  - name: recover\n"
STAGES = {
    # 1.0 then inf: the run diverged after looking perfect.
    "diverge": 'sdk.log_metric("acc", 1.0, step=0)\nsdk.log_metric("acc", math.inf, step=1)\n',
    # Only NaN: the metric was logged, it is not missing.
    "nans": 'for step in range(3):\n    sdk.log_metric("acc", math.nan, step=step)\n',
    # Went -inf once, then recovered to a value above the goal.
    "recover": 'sdk.log_metric("acc", -math.inf, step=0)\nsdk.log_metric("acc", 0.9, step=1)\n',
}



def test_non_finite_points_are_reported_and_never_suggested_as_a_success(
        project: Path, mcp_session: Connect) -> None:
    """Regression: 1.0 then inf gave results_auto.value 1.0 and a suggested 'success'; only
    NaN showed the metric as 'missing'."""
    async def main() -> None:
        async with mcp_session() as client:
            await call(client, "create_workspace", name="nf", goal="diverging toy runs",
                       reason=WHY)
            slot = Path((await call(client, "mount", workspace="nf", slot="w1",
                                    reason=WHY))["path"])
            (slot / "modules").mkdir()
            (slot / "pipeline.yaml").write_text(PIPELINE)
            for name, body in STAGES.items():
                (slot / "modules" / f"{name}.py").write_text(
                    "import math\nfrom quipu import sdk\n\n" + body + "sdk.finish()\n")
            started = await call(client, "run", workspace="w1", results_spec=SPEC, wait=True,
                                 reason=WHY)
            ids = {q["stage"]: q["stage_run_id"] for q in started["queued"]}
            assert {r["state"] for r in started["stage_runs"]} == {"succeeded"}

            pending = {r["stage"]: r for r in (await call(
                client, "list_unfinalized_runs", workspace="nf"))["runs"]}
            diverged = pending["diverge"]
            auto = diverged["results_auto"]
            assert auto["value"] is None and auto["non_finite"] == ["acc"]
            assert auto["missing"] == []
            assert auto["non_finite_points"]["acc"] == {
                "count": 1, "kind": "inf", "first_step": 1, "first_index": 1,
                "last_finite": 1.0}
            args = diverged["finalize_args"]
            assert args["ml_outcome"] == "miss" and "value" not in args
            assert "acc went inf at step 1" in args["notes"]
            assert diverged["alerts"] == [
                "acc went inf at step 1 (1 non-finite point; last finite value 1)"]

            nans = pending["nans"]["results_auto"]
            assert nans["missing"] == [] and nans["non_finite"] == ["acc"]
            assert nans["non_finite_points"]["acc"]["count"] == 3
            assert nans["non_finite_points"]["acc"]["last_finite"] is None

            recovered = pending["recover"]
            assert recovered["results_auto"]["value"] == 0.9
            assert recovered["finalize_args"]["ml_outcome"] == "partial"  # 0.9 beats the goal
            assert "acc went -inf at step 0" in recovered["finalize_args"]["notes"]

            history = await call(client, "list_history", workspace="nf")
            statuses = {r["stage"]: r["results_status"] for r in history["records"]}
            assert statuses == {"diverge": "non_finite", "nans": "non_finite",
                                "recover": "auto"}

            seen = await call(client, "inspect_run", run_id=ids["diverge"])
            assert seen["alerts"] == diverged["alerts"]
            assert seen["dashboard"]["metrics"]["acc"]["non_finite"]["kind"] == "inf"
            board = await call(client, "dashboard")
            flagged = {a["run_id"]: a["alert"] for a in board["non_finite_metrics"]}
            assert set(flagged) == set(ids.values())
            state_md = (project / "STATE.md").read_text()
            assert "⚠ acc went inf at step 1" in state_md
            assert "⚠ acc went nan at step 0" in state_md

            curve = await call(client, "get_metric_history", run_id=ids["diverge"], name="acc")
            assert curve["points"][1]["value"] is None
            assert curve["points"][1]["non_finite"] == "inf"
            json.dumps(curve, allow_nan=False)

            # The suggested call goes through as it is (notes filled in): no value is needed.
            done = await call(client, "finalize_run", record_or_run_id=ids["diverge"],
                              results={**args, "notes": "diverged to inf after one step"})
            assert done["ml_outcome"] == "miss" and done["comparison"] is None
            assert done["results_auto"]["non_finite_points"]["acc"]["kind"] == "inf"

    asyncio.run(main())

"""One verdict per experiment and truthful comparisons, over stdio with the official ``mcp``
SDK's ClientSession against a real ``quipu serve`` (its local executor runs the stages)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp_calls import sdk_call as call
from toy_pipeline import SPEC, write_toy_pipeline

pytestmark = pytest.mark.timeout(300)

SdkConnect = Callable[..., AbstractAsyncContextManager[ClientSession]]
WHY = "one verdict per experiment, end to end"



def test_a_pipeline_run_is_finalized_with_one_call_and_a_drop_raises_an_alert(
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
            prun = first["pipeline_run_id"]
            ids = {q["stage"]: q["stage_run_id"] for q in first["queued"]}

            pending = await call(session, "list_unfinalized_runs", workspace="toy")
            assert [p["pipeline_run_id"] for p in pending["pipelines"]] == [prun]
            group = pending["pipelines"][0]
            assert group["deciding_run_id"] == ids["train"]
            assert group["finalize_call"].startswith(f'finalize_run("{prun}", ')
            status = await call(session, "status")
            assert f'`finalize_run("{prun}", ' in status["state_md"]

            verdict = await call(session, "finalize_run", record_or_run_id=prun, results={
                "primary_metric": "accuracy", "direction": "maximize", "value": 0.8,
                "dataset_split": "val", "ml_outcome": "success",
                "notes": "four epochs reach the goal of 0.8"})
            assert (verdict["run_id"], verdict["pipeline_run_id"]) == (ids["train"], prun)
            assert [c["run_id"] for c in verdict["closed"]] == [ids["prep"]]
            assert (await call(session, "list_unfinalized_runs", workspace="toy"))["runs"] == []

            second = await call(session, "run", workspace="w1", results_spec=SPEC, wait=True,
                                config_override={"train": {"epochs": 1}},
                                reason={"description": "one epoch only, to see the floor",
                                        "hypothesis": "one epoch is enough"})
            train = {q["stage"]: q["stage_run_id"] for q in second["queued"]}["train"]
            # any stage run of the pipeline run, with scope="pipeline"
            dropped = await call(session, "finalize_run", record_or_run_id=train,
                                 scope="pipeline", results={
                                     "primary_metric": "accuracy", "direction": "maximize",
                                     "value": 0.5, "dataset_split": "val",
                                     "ml_outcome": "miss",
                                     "notes": "one epoch falls far below the minimum"})
            # No run is tagged best: the reference is the best finalized run so far.
            assert dropped["comparison"]["vs_best"]["run_id"] == ids["train"]
            assert dropped["comparison"]["regression_alert"] is True
            context = await call(session, "get_experiment_context", workspace="toy")
            assert [a["run_id"] for a in context["regression_alerts"]] == [train]

            text = (await call(session, "status"))["state_md"]
            outcomes = text.split("## Recent outcomes\n")[1].split("\n\n")[0].splitlines()
            assert len(outcomes) == 2  # one row per experiment, no "prep → ..." rows
            assert "one epoch is enough → miss, accuracy 0.5" in outcomes[0]
            assert "more epochs raise accuracy → success, accuracy 0.8" in outcomes[1]
            history = await call(session, "list_history", workspace="toy")
            assert {r["run_id"]: r["value_source"] for r in history["records"]}[train] == \
                "results"

    asyncio.run(main())

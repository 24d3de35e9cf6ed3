"""Sources in the lineage graph, over stdio with the official ``mcp`` SDK's ClientSession
against a real ``quipu serve``: a registered npy file read by a real two-stage pipeline, then
"which runs used this data?" and "which data did this result come from?" each in one call,
and ``manage_sources(action="lineage")`` for the source and for an output promoted from it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp_calls import sdk_call as call
from toy_pipeline import SPEC, TRAIN

pytestmark = pytest.mark.timeout(300)

WHY = "tracing a registered source through real runs"

PIPELINE = """\
stages:
  - name: prep
    inputs:
      raw: {type: npy, dataset: raw, schema: {shape: [null, 4], dtype: float64}}
    outputs:
      features: {type: npy, schema: {shape: [null, 4], dtype: float64}}
  - name: train
    config_schema:
      epochs: {type: int, min: 1, default: 3}
    inputs:
      features: {type: npy, from_stage: prep, schema: {shape: [null, 4], dtype: float64}}
    outputs:
      model: {type: npy, schema: {shape: [4], dtype: float64}}
"""

PREP = """\
from quipu import sdk


def main() -> None:
    sdk.save_output("features", sdk.load_input("raw") * 2.0)
    sdk.finish()


if __name__ == "__main__":
    main()
"""


def tensor(description: str, size: int, shape: list[int], name: str) -> dict[str, Any]:
    return {"schema_version": 1, "description": description,
            "source": {"format": "npy", "size_bytes": size,
                       "created_at": "2024-05-01T12:00:00Z"},
            "schema": {"kind": "tensor", "primary_array": name,
                       "arrays": {name: {"role": "features", "shape": shape,
                                         "dtype": "float64",
                                         "feature_names": {"kind": "sequence"}}}}}



def test_which_runs_used_a_source_and_which_data_a_result_came_from(
        sdk_session: Callable[..., AbstractAsyncContextManager[Any]], project: Path) -> None:
    (project / "data").mkdir()
    raw = project / "data" / "raw.npy"
    np.save(raw, np.arange(40, dtype="float64").reshape(10, 4))
    raw_meta = tensor("ten rows of four raw float features", raw.stat().st_size, [10, 4], "x")
    sizes: dict[str, int] = {}

    async def main() -> None:
        async with sdk_session() as session:
            await call(session, "register_source", name="raw", path_or_uri="data/raw.npy",
                       description=raw_meta["description"], reason=WHY, metadata=raw_meta)
            await call(session, "create_workspace", name="toy", goal="read a source",
                       reason=WHY)
            mounted = await call(session, "mount", workspace="toy", slot="w1", reason=WHY)
            slot = Path(mounted["path"])
            (slot / "modules").mkdir(parents=True, exist_ok=True)
            (slot / "pipeline.yaml").write_text(PIPELINE)
            (slot / "modules" / "prep.py").write_text(PREP)
            (slot / "modules" / "train.py").write_text(TRAIN)
            started = await call(session, "run", workspace="w1", reason=WHY,
                                 results_spec=SPEC, wait=True)
            runs = {q["stage"]: q["stage_run_id"] for q in started["queued"]}
            assert {r["state"] for r in started["stage_runs"]} == {"succeeded"}

            # "Which runs used this data?": one call, from the source's bare name.
            used = await call(session, "get_lineage", ref="raw", direction="downstream",
                              depth=1, kinds=["run"])
            assert used["root"] == "source:raw"
            assert {n["id"] for n in used["nodes"]} == {"source:raw", f"run:{runs['prep']}"}
            assert used["edges"] == [["source:raw", "consumed", f"run:{runs['prep']}", "raw"]]
            sizes["used"] = len(json.dumps(used))

            # "Which data did this result come from?": one call, upstream from the train run,
            # back through prep's output and prep to the registered source and its file.
            came = await call(session, "get_lineage", ref=runs["train"], depth=10)
            ids = {n["id"] for n in came["nodes"]}
            assert {"source:raw", f"run:{runs['prep']}", "version:toy@v1"} <= ids
            label = next(n["label"] for n in came["nodes"] if n["id"] == "source:raw")
            assert label.startswith("source raw (npy, ") and "active" in label
            kinds = {e[1] for e in came["edges"]}
            assert {"consumed", "produced", "content"} <= kinds
            sizes["came"] = len(json.dumps(came))

            # The result promoted to a source: its lineage says where it came from.
            model_meta = tensor("the mean of each doubled feature, learned by train", 160,
                                [4], "model")
            await call(session, "promote_artifact", run_id=runs["train"],
                       output_name="model", source_name="model", reason=WHY,
                       metadata=model_meta)
            origin = await call(session, "manage_sources", action="lineage", name="model")
            assert origin["promoted_from"] == f"{runs['train']}.model"
            assert origin["used_by"] == [] and origin["used_by_count"] == 0
            back = {n["id"] for n in origin["came_from"]["nodes"]}
            assert {f"run:{runs['train']}", f"run:{runs['prep']}", "source:raw"} <= back
            assert any(e[1] == "promoted-from" and e[2] == "source:model"
                       for e in origin["came_from"]["edges"])
            sizes["origin"] = len(json.dumps(origin))
            source = await call(session, "manage_sources", action="lineage", name="raw")
            assert [r["run_id"] for r in source["used_by"]] == [runs["prep"]]
            assert source["came_from"] is None
            sizes["source"] = len(json.dumps(source))

            # Downstream of the source now reaches the promoted artifact, many hops away.
            reach = await call(session, "get_lineage", ref="source:raw",
                               direction="downstream", depth=10)
            assert {"source:model", f"run:{runs['train']}"} <= {n["id"] for n in reach["nodes"]}

            missing = await session.call_tool("get_lineage", {"ref": "rwa"})
            assert missing.isError
            text = missing.content[0].text
            assert text.startswith("[unknown_ref] ") and "did you mean 'raw'" in text
            nothing = await session.call_tool("manage_sources", {"action": "lineage",
                                                                 "name": "modle"})
            assert nothing.isError and "[unknown_source]" in nothing.content[0].text
            assert "did you mean 'model'" in nothing.content[0].text

    asyncio.run(main())
    assert all(size < 20_000 for size in sizes.values()), sizes
    print(sizes)

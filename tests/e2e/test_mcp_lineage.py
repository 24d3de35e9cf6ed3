"""get_lineage over stdio with the official ``mcp`` SDK's ClientSession, after real runs."""

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

WHY = "exercising lineage end to end from the official MCP client"



def test_get_lineage_walks_from_a_result_back_to_its_data_and_forward_again(
        sdk_session: Callable[..., AbstractAsyncContextManager[Any]], project: Path) -> None:
    async def main() -> None:
        async with sdk_session() as session:
            await call(session, "create_workspace", name="toy", goal="a toy pipeline",
                       reason=WHY)
            mounted = await call(session, "mount", workspace="toy", slot="w1", reason=WHY)
            write_toy_pipeline(Path(mounted["path"]))
            started = await call(session, "run", workspace="w1", reason=WHY,
                                 results_spec=SPEC, wait=True)
            runs = {q["stage"]: q["stage_run_id"] for q in started["queued"]}
            assert {r["state"] for r in started["stage_runs"]} == {"succeeded"}

            up = await call(session, "get_lineage", ref=runs["train"], depth=10)
            found = {n["id"] for n in up["nodes"]}
            assert {f"run:{runs['prep']}", "version:toy@v1", "workspace:toy"} <= found
            features = next(e[0] for e in up["edges"] if e[1] == "consumed")
            assert features.startswith("output:")
            assert len(json.dumps(up)) < 20_000

            down = await call(session, "get_lineage", ref=features[len("output:"):][:12],
                              direction="downstream", depth=1, kinds=["run"])
            assert {n["id"] for n in down["nodes"]} == {features, f"run:{runs['train']}"}

            missing = await session.call_tool("get_lineage", {"ref": "tyo"})
            assert missing.isError
            text = missing.content[0].text
            assert text.startswith("[unknown_ref] ") and "did you mean 'toy'" in text

            shown = await call(session, "inspect_run", run_id=runs["train"],
                               include=["provenance"])
            upstream = shown["provenance"]["upstream"]
            assert [r["run_id"] for r in upstream["runs"]] == [runs["prep"]]

    asyncio.run(main())

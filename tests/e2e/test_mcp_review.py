"""The pre-run review over stdio with the official ``mcp`` SDK's ClientSession against a real
``quipu serve`` (review adapter and executor started with the engine): a hanging command
reviewer is killed by its timeout, the run is blocked (failing closed) and says why."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import yaml
from mcp import ClientSession
from mcp_calls import sdk_call as call
from toy_pipeline import SPEC, write_toy_pipeline

pytestmark = pytest.mark.timeout(300)

SdkConnect = Callable[..., AbstractAsyncContextManager[ClientSession]]
WHY = "the pre-run review over MCP, end to end"


def test_a_hanging_reviewer_blocks_the_run_failing_closed_and_the_engine_goes_on(
        project: Path, sdk_session: SdkConnect, tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(600)\n")
    config = yaml.safe_load((project / "quipu.yaml").read_text())
    config["svs"] = {"reviewer": "command", "command": [sys.executable, str(script)],
                     "timeout": 2, "fail_open": False}
    (project / "quipu.yaml").write_text(yaml.safe_dump(config))

    async def main() -> None:
        async with sdk_session() as session:
            await call(session, "create_workspace", name="toy", goal="a toy pipeline",
                       reason=WHY)
            mounted = await call(session, "mount", workspace="toy", slot="w1", reason=WHY)
            write_toy_pipeline(Path(mounted["path"]))
            blocked = await call(session, "run", workspace="w1", results_spec=SPEC, wait=True,
                                 reason="see the review block a run nobody could review")
            prep = blocked["stage_runs"][0]
            assert prep["state"] == "blocked"
            assert prep["review"]["findings"][0]["signal"] == "reviewer_failed"
            shown = await call(session, "inspect_run", run_id=prep["stage_run_id"])
            assert shown["review"]["decision"] == "block" and shown["review"]["fix"]
            assert len(json.dumps(shown["review"])) < 4000
            # the engine was never held up: a run that skips the review runs at once
            skipped = await call(session, "run", workspace="w1", results_spec=SPEC,
                                 wait=True, skip_review=True,
                                 reason="the same pipeline without the review")
            assert [s["state"] for s in skipped["stage_runs"]] == ["succeeded", "succeeded"]

    asyncio.run(main())

"""Following a run while it goes, over stdio, with real stage subprocesses of ``quipu serve``.

What an agent reads of a running stage must be fresh whatever rate the log records it at (the
executor throttles heartbeat events), ``logs(follow=True)`` must deliver every line a stage
wrote before it says the run ``ended``, and a stage that raised must say what it raised.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from mcp import ClientSession
from mcp_calls import fastmcp_call as call
from mcp_calls import sdk_call
from waiting import wait_until_async

pytestmark = pytest.mark.timeout(300)

Connect = Callable[..., AbstractAsyncContextManager[Client[Any]]]
SdkConnect = Callable[..., AbstractAsyncContextManager[ClientSession]]
WHY = "following a run while it goes, end to end"
SPEC = {"primary_metric": "loss", "direction": "minimize", "min_value": 0.5,
        "goal_value": 0.1, "dataset_split": "train", "tolerance": 0.01,
        "context": "a toy loss that falls as the stage goes on"}

PIPELINE = """\
stages:
  - name: beat
  - name: lines
    config_schema:
      lines: {type: int, min: 0, default: 500}
  - name: boom
"""

# Beats every 0.25 s with a message, logs a runtime line and a metric per beat, and stops when
# asked (or after two minutes, so a failed test leaves no stage behind for long).
BEAT = """\
import time
from quipu import sdk

start = time.monotonic()
step = 0
while not sdk.should_stop() and time.monotonic() - start < 120:
    print(f"step {step}", flush=True)
    sdk.heartbeat(f"epoch {step} of many")
    sdk.runtime_log(f"epoch {step} done")
    sdk.log_metric("loss", 1.0 / (step + 1), step=step)
    step += 1
    time.sleep(0.25)
"""

# Prints its lines as fast as it can and exits: the last ones land right before the exit.
LINES = """\
from quipu import sdk

count = sdk.get_config()["lines"]
for i in range(count):
    print(f"line {i} of {count}")
sdk.runtime_log(f"printed {count} lines")
"""

BOOM = """\
from quipu import sdk

sdk.runtime_log("about to diverge")
raise FloatingPointError("the loss diverged at step 7 with lr=10.0")
"""


def write_pipeline(slot: Path) -> None:
    """The three stages above, written into a mounted slot."""
    (slot / "modules").mkdir(parents=True, exist_ok=True)
    (slot / "pipeline.yaml").write_text(PIPELINE)
    for name, code in (("beat", BEAT), ("lines", LINES), ("boom", BOOM)):
        (slot / "modules" / f"{name}.py").write_text(code)




def test_a_running_stage_shows_its_heartbeat_message_runtime_log_and_metrics(
        project: Path, sdk_session: SdkConnect) -> None:
    """Regression: message stayed null and seconds_since_seen grew to 24 s while the stage beat
    every 0.25 s, and runtime_log lines showed only after the run ended."""
    async def main() -> None:
        async with sdk_session() as session:
            await sdk_call(session, "create_workspace", name="live", goal="follow a run live",
                           reason=WHY)
            mounted = await sdk_call(session, "mount", workspace="live", slot="w1", reason=WHY)
            write_pipeline(Path(mounted["path"]))
            started = await sdk_call(session, "run", workspace="w1", results_spec=SPEC,
                                     stages=["beat"], reason=WHY)
            run_id = started["queued"][0]["stage_run_id"]

            async def beating_or_far() -> dict[str, Any] | None:
                seen = await sdk_call(session, "inspect_run", run_id=run_id)
                tail = seen["dashboard"]["log_tail"]["lines"]
                printed = int(tail[-1].split()[1]) if tail else -1
                if seen["dashboard"]["progress"]["message"] is not None or printed >= 80:
                    return seen
                return None

            # Measured in the stage's own steps (it prints each step before it beats), so a
            # slow machine slows both sides alike: by its 80th step (20 s of its time) the old
            # view still had no message, since the executor records a heartbeat every 30 s.
            seen: Any = await wait_until_async(beating_or_far, what="a message or 80 steps")
            assert seen["state"] == "running"
            assert (seen["dashboard"]["progress"]["message"] or "").startswith("epoch "), seen
            for _ in range(5):
                seen = await sdk_call(session, "inspect_run", run_id=run_id)
                printed = int(seen["dashboard"]["log_tail"]["lines"][-1].split()[1])
                message = seen["dashboard"]["progress"]["message"]
                beat = int(message.split()[1])
                # The SDK writes at most one beat a second (4 steps): the message is the latest.
                assert 0 <= printed - beat <= 12, (printed, message)
                assert seen["dashboard"]["progress"]["seconds_since_seen"] < 5, seen

            async def live_lines() -> dict[str, Any] | None:
                out = await sdk_call(session, "logs", run_id=run_id)
                return out if out["state"] == "running" and out["runtime_log"] else None

            out: Any = await wait_until_async(live_lines, what="runtime_log lines while running")
            assert out["runtime_log"][0].endswith("INFO epoch 0 done")

            async def live_metric() -> dict[str, Any] | None:
                seen = await sdk_call(session, "inspect_run", run_id=run_id)
                live = seen["dashboard"].get("live_metrics") or {}
                return live if seen["state"] == "running" and "loss" in live else None

            live: Any = await wait_until_async(live_metric, what="the latest metric, live")
            assert 0 < live["loss"]["value"] <= 1.0 and live["loss"]["step"] >= 0

            # Following the runtime log: new lines come with their own cursor.
            first = await sdk_call(session, "logs", run_id=run_id)
            later = await sdk_call(session, "logs", run_id=run_id, since=first["next"],
                                   runtime_since=first["runtime_next"], follow=True,
                                   follow_seconds=30)
            assert later["runtime_log"], later
            assert later["runtime_log"][0] not in first["runtime_log"]

            await sdk_call(session, "cancel", run_id=run_id, reason=WHY)

    asyncio.run(main())


def test_follow_delivers_every_line_before_it_says_ended(project: Path,
                                                         mcp_session: Connect) -> None:
    """Regression: follow answered ended without the stage's last lines (3 of 3 tries)."""
    async def main() -> None:
        async with mcp_session() as client:
            await call(client, "create_workspace", name="live", goal="follow a run live",
                       reason=WHY)
            mounted = await call(client, "mount", workspace="live", slot="w1", reason=WHY)
            write_pipeline(Path(mounted["path"]))
            for attempt, count in enumerate((500, 37, 1200)):
                started = await call(client, "run", workspace="w1", results_spec=SPEC,
                                     stages=["lines"], config_override={"lines": count},
                                     reason=f"print {count} lines and follow them ({attempt})")
                run_id = started["queued"][0]["stage_run_id"]
                got: list[str] = []
                runtime: list[str] = []
                since, runtime_since, answers = 0, 0, 0
                # The first attempt follows the output only, as an older client does.
                both = {"runtime_since": runtime_since} if attempt else {}
                while True:
                    out = await call(client, "logs", run_id=run_id, since=since, follow=True,
                                     follow_seconds=20, **both)
                    answers += 1
                    assert answers < 200, "follow never said ended"
                    got += out["lines"]
                    since = out["next"]
                    if attempt:
                        runtime += out["runtime_log"]
                        both = {"runtime_since": out["runtime_next"]}
                    if out["ended"]:
                        break
                assert got == [f"line {i} of {count}" for i in range(count)], attempt
                if attempt:
                    assert [r.split(" ", 2)[2] for r in runtime] == [f"printed {count} lines"]
                await call(client, "finalize_run", record_or_run_id=run_id,
                           results={"ml_outcome": "unknown",
                                    "notes": "a stage that only prints lines, nothing to judge"})

    asyncio.run(main())


def test_a_stage_that_raised_records_the_exception_as_its_error(project: Path,
                                                                mcp_session: Connect) -> None:
    """Regression: a stage that raised showed error: null; the cause was only in the log."""
    async def main() -> None:
        async with mcp_session() as client:
            await call(client, "create_workspace", name="live", goal="follow a run live",
                       reason=WHY)
            mounted = await call(client, "mount", workspace="live", slot="w1", reason=WHY)
            write_pipeline(Path(mounted["path"]))
            started = await call(client, "run", workspace="w1", results_spec=SPEC,
                                 stages=["boom"], reason=WHY, wait=True)
            run_id = started["queued"][0]["stage_run_id"]
            assert started["stage_runs"][0]["state"] == "failed"
            expected = "FloatingPointError: the loss diverged at step 7 with lr=10.0"

            seen = await call(client, "inspect_run", run_id=run_id)
            assert seen["dashboard"]["error"] == expected
            history = await call(client, "list_history", workspace="live")
            assert history["records"][0]["error"] == expected
            pending = await call(client, "list_unfinalized_runs", workspace="live")
            assert pending["runs"][0]["error"] == expected
            assert expected in (project / "STATE.md").read_text()
            assert json.dumps(expected)[1:-1] in json.dumps(await call(client, "dashboard"))

    asyncio.run(main())

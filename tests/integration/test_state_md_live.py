"""STATE.md follows runs the executor starts and ends, not only the agent's own commands."""

from __future__ import annotations

from pathlib import Path

from toy_pipeline import SPEC, write_toy_pipeline
from waiting import wait_until

from quipu.app.bootstrap import init_project

WHY = "check that STATE.md follows the executor"


def test_state_md_shows_a_run_awaiting_finalization_without_another_command(
        tmp_path: Path) -> None:
    q = init_project(tmp_path / "p", name="live", goal="keep STATE.md current", actor="t:1")
    try:
        q.create_workspace("toy", "a toy pipeline", WHY)
        q.mount("toy", "w1", WHY)
        write_toy_pipeline(q.slots.path("w1"))
        q.start_workers()
        started = q.run("toy", reason=WHY, results_spec=SPEC)
        train = started["queued"][-1]["stage_run_id"]
        state = tmp_path / "p" / "STATE.md"

        def awaiting() -> str:
            return state.read_text().partition("Awaiting finalization")[2]

        wait_until(lambda: train in awaiting(), timeout=120, interval=0.2,
                   what=f"STATE.md lists {train} under Awaiting finalization")
    finally:
        q.close()

"""Helpers for the executor and supervisor tests (no tests here): a real project with a tiny
pipeline, a real SQLite log, real stage processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from textwrap import dedent
from typing import Any

from waiting import wait_until

from quipu.adapters.executors.local import LocalExecutor
from quipu.app.bootstrap import DATA_DIR, Quipu, init_project
from quipu.core.runs.aggregate import Run
from quipu.core.runs.events import RunExited
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State

SPEC = {
    "primary_metric": "loss", "direction": "minimize", "min_value": 1.0, "goal_value": 0.1,
    "dataset_split": "val", "tolerance": 0.05, "context": "a toy pipeline for executor tests",
}
REASON = "check that the executor runs this pipeline end to end"

THREE_STAGES = """\
    stages:
      - name: make
        outputs:
          numbers: {type: npy, schema: null}
      - name: double
        inputs:
          numbers: {type: npy, from_stage: make, schema: null}
        outputs:
          doubled: {type: npy, schema: null}
          table: {type: directory, schema: null}
      - name: report
        inputs:
          doubled: {type: npy, from_stage: double, schema: null}
          table: {type: directory, from_stage: double, schema: null}
        outputs:
          summary: {type: json, schema: null}
    """

ONE_STAGE = """\
    stages:
      - name: solo
        outputs:
          result: {type: json, schema: null}
    """


def make_project(tmp_path: Path, pipeline: str, modules: Mapping[str, str],
                 name: str = "ws") -> Quipu:
    """A project with workspace ``name`` mounted in w1, holding the pipeline and modules."""
    q = init_project(tmp_path / "proj", name="proj", goal="test the executor")
    q.create_workspace(name, "exercise the executor", "a workspace for the executor tests")
    q.mount(name, "w1", "edit the pipeline for the executor tests")
    write_slot(q, pipeline, modules)
    return q


def write_slot(q: Quipu, pipeline: str, modules: Mapping[str, str]) -> None:
    """Replace the pipeline and modules in slot w1."""
    slot = q.root / "workspaces" / "w1"
    (slot / "pipeline.yaml").write_text(dedent(pipeline))
    (slot / "modules").mkdir(exist_ok=True)
    for stage, code in modules.items():
        (slot / "modules" / f"{stage}.py").write_text(dedent(code))


def executor(q: Quipu, runs: RunService | None = None, **kw: Any) -> LocalExecutor:
    """An executor on the project's log, polled by the test (no thread unless started)."""
    options: dict[str, Any] = {"worker_id": "test:1", "max_parallel": 2,
                               "heartbeat_every": 0.0, "metrics_every": 0.2}
    options.update(kw)
    return LocalExecutor(q.root / DATA_DIR / "runs", q.store, q.blobs, runs or q.runs,
                         **options)


def drive(ex: LocalExecutor, done: Callable[[], bool], *, timeout: float = 120.0,
          what: str = "the runs reach the awaited state") -> None:
    """Poll the executor until ``done()``; fail naming ``what`` after ``timeout`` seconds."""
    try:
        wait_until(done, what=what, timeout=timeout, step=ex.poll_once)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (the executor watches {ex.running()})") from None


def ended(q: Quipu, *run_ids: str) -> Callable[[], bool]:
    """A condition: every run has ended (or is finalized)."""
    from quipu.core.runs import lifecycle

    def check() -> bool:
        return all(lifecycle.is_ended(q.runs.load_run(r).current)
                   or lifecycle.is_final(q.runs.load_run(r).current) for r in run_ids)
    return check


def state(q: Quipu, run_id: str) -> State:
    """The run's state per its aggregate."""
    return q.runs.load_run(run_id).current


def exit_of(run: Run) -> RunExited:
    """The run's recorded exit, which must exist."""
    assert run.exit is not None, f"run {run.run_id} has no exit recorded ({run.current})"
    return run.exit


def run_dir_of(run: Run) -> Path:
    """The directory the executor launched the run in."""
    assert run.run_dir is not None, f"run {run.run_id} was not launched ({run.current})"
    return Path(run.run_dir)


def pid_of(q: Quipu, run_id: str) -> int:
    """The pid of the run's stage process."""
    pid = q.runs.load_run(run_id).pid
    assert pid is not None, f"run {run_id} was not launched"
    return pid


def start(q: Quipu, **kw: Any) -> dict[str, str]:
    """Start the workspace's pipeline; return {stage: run_id}."""
    result = q.run("ws", reason=REASON, results_spec=SPEC, **kw)
    return {item["stage"]: item["stage_run_id"] for item in result["queued"]}


def pid_gone(pid: int) -> bool:
    """The process does not exist or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def kill_quietly(pid: int) -> None:
    """Clean up a process group a failed test may leave behind."""
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass

"""The file contract across processes: a stage run as a real subprocess, as the executor runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from quipu import sdk
from quipu.sdk import testing

TRAIN = """
    from quipu import sdk

    digits = sdk.load_input("digits")
    epochs = sdk.get_config()["epochs"]
    weights = digits.mean(axis=0)
    for epoch in range(epochs):
        sdk.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
        sdk.heartbeat(f"epoch {epoch}")
        sdk.runtime_log(f"epoch {epoch} done")
        if sdk.should_stop():
            sdk.save_checkpoint("weights", weights, step=epoch)
            sdk.runtime_log("stopping early", level="WARNING")
            break
    sdk.log_metric("final_acc", 0.875)
    sdk.save_output("model", weights)
"""


def run_stage(tmp_path: Path, run: testing.StageRun, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], env={**os.environ, **run.env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_stage_subprocess_reads_inputs_and_writes_everything_through_files(
    tmp_path: Path,
) -> None:
    digits = np.arange(12, dtype=np.float64).reshape(4, 3)
    with testing.stage(inputs={"digits": digits}, config={"epochs": 3},
                       outputs={"model": "npy"}, tmp_path=tmp_path) as run:
        done = run_stage(tmp_path, run, TRAIN + "    sdk.finish()\n")
    assert done.returncode == 0, done.stderr
    assert run.metric("loss") == [1.0, 0.5, 1 / 3]
    assert run.metric("final_acc") == [0.875]
    np.testing.assert_array_equal(run.output("model"), digits.mean(axis=0))
    assert [line.split(" ", 2)[2] for line in run.log_lines] == [
        "epoch 0 done", "epoch 1 done", "epoch 2 done"]
    assert run.heartbeat is not None and run.heartbeat["message"] == "epoch 0"
    assert run.finished is not None and run.finished["status"] == "ok"


def test_metrics_buffered_in_a_stage_that_never_calls_finish_are_flushed_at_exit(
    tmp_path: Path,
) -> None:
    with testing.stage(inputs={"digits": np.ones((2, 2))}, config={"epochs": 5},
                       outputs={"model": "npy"}, tmp_path=tmp_path) as run:
        done = run_stage(tmp_path, run, TRAIN)
    assert done.returncode == 0, done.stderr
    assert run.metric("loss") == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert run.finished is None


def test_a_stop_request_from_the_engine_reaches_the_stage(tmp_path: Path) -> None:
    with testing.stage(inputs={"digits": np.ones((2, 2))}, config={"epochs": 100},
                       outputs={"model": "npy"}, tmp_path=tmp_path) as run:
        run.request_stop()
        done = run_stage(tmp_path, run, TRAIN)
    assert done.returncode == 0, done.stderr
    assert run.metric("loss") == [1.0]
    assert [(c.name, c.step) for c in run.checkpoints] == [("weights", 0)]
    assert run.log_lines[-1].endswith("WARNING stopping early")


def test_processes_logging_at_once_never_split_a_line(tmp_path: Path) -> None:
    body = """
        import sys
        from quipu import sdk
        worker = sys.argv[1]
        for step in range(700):
            sdk.log_metric(f"w{worker}", float(step), step=step)
    """
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(body))
    with testing.stage(tmp_path=tmp_path) as run:
        workers = [subprocess.Popen([sys.executable, str(script), str(k)],
                                    env={**os.environ, **run.env}) for k in range(4)]
        assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0, 0]
    lines = (run.quipu_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 700
    for k in range(4):
        assert run.metric(f"w{k}") == [float(step) for step in range(700)]


def test_a_stage_started_outside_a_run_fails_with_the_testing_hint(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text("from quipu import sdk\nsdk.get_config()\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUIPU_")}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "NotInRun" in done.stderr
    assert "quipu.sdk.testing.stage" in done.stderr


def test_a_forked_child_does_not_write_its_parents_buffered_points(tmp_path: Path) -> None:
    with testing.stage(tmp_path=tmp_path) as run:
        for step in range(3):
            sdk.log_metric("parent", float(step), step=step)
        pid = os.fork()
        if pid == 0:  # the child, like a data-loader worker
            try:
                sdk.log_metric("child", 1.0)
                sdk.finish()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        sdk.finish()
    assert run.metric("parent") == [0.0, 1.0, 2.0]
    assert run.metric("child") == [1.0]

"""The local executor runs real stage processes from a real SQLite log and records what they did."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_executor_helpers import (
    ONE_STAGE,
    THREE_STAGES,
    drive,
    ended,
    executor,
    exit_of,
    make_project,
    run_dir_of,
    start,
)

from quipu.core.log import decode
from quipu.core.runs.lifecycle import State

MAKE = """\
    import numpy as np
    from quipu import sdk

    sdk.save_output("numbers", np.arange(5, dtype=np.int64))
    for step in range(10):
        sdk.log_metric("loss", 1.0 / (step + 1), step=step)
    sdk.log_metric("acc", 0.5, step=0)
    sdk.finish()
    """

DOUBLE = """\
    import numpy as np
    from quipu import sdk

    numbers = sdk.load_input("numbers")
    path = sdk.get_input_path("numbers")
    assert path.stat().st_mode & 0o222 == 0, "inputs must be read-only"
    sdk.save_output("doubled", numbers * 2)
    table = sdk.get_output_path("table")
    (table / "a.txt").write_text("alpha")
    (table / "sub").mkdir()
    (table / "sub" / "b.txt").write_text("beta")
    sdk.save_output("table", table)
    print("doubled", list(numbers * 2))
    """

REPORT = """\
    from quipu import sdk

    doubled = sdk.load_input("doubled")
    table = sdk.get_input_path("table")
    files = sorted(p.relative_to(table).as_posix() for p in table.rglob("*") if p.is_file())
    sdk.save_output("summary", {"total": int(doubled.sum()), "files": files,
                                "b": (table / "sub" / "b.txt").read_text()})
    """


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestAPipelineRunsOnItsOwn:
    def test_three_stages_run_in_order_and_hand_outputs_downstream(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, THREE_STAGES,
                         {"make": MAKE, "double": DOUBLE, "report": REPORT})
        ids = start(q)
        ex = executor(q)
        drive(ex, ended(q, *ids.values()))
        runs = {stage: q.runs.load_run(run_id) for stage, run_id in ids.items()}
        assert {s: r.current for s, r in runs.items()} == dict.fromkeys(ids, State.SUCCEEDED)
        # the downstream stage got exactly the bytes upstream recorded, read-only
        doubled = exit_of(runs["double"]).outputs["doubled"]
        assert runs["report"].launched_inputs["doubled"]["sha256"] == doubled["sha256"]
        assert runs["report"].launched_inputs["doubled"]["producer"] == ids["double"]
        report_dir = run_dir_of(runs["report"])
        assert _file_sha(report_dir / "inputs" / "doubled.npy") == doubled["sha256"]
        # every recorded output's sha256 is the file's, and the blob holds it
        for run in runs.values():
            for out in exit_of(run).outputs.values():
                if out["kind"] == "file":
                    assert _file_sha(run_dir_of(run) / out["path"]) == out["sha256"]
                    assert q.blobs.exists(out["sha256"])
        summary = json.loads((report_dir / "outputs" / "summary.json").read_text())
        assert summary == {"total": 20, "files": ["a.txt", "sub/b.txt"], "b": "beta"}
        table = exit_of(runs["double"]).outputs["table"]
        assert table["kind"] == "directory" and table["files"] == 2
        assert runs["report"].launched_inputs["table"]["sha256"] == table["sha256"]
        # the SDK's stats travel with the output
        assert exit_of(runs["make"]).outputs["numbers"]["stats"]["shape"] == [5]

    def test_stage_json_and_environment_follow_the_sdk_contract(self, tmp_path: Path) -> None:
        code = """\
            import json, os
            from quipu import sdk
            sdk.save_output("result", {"env": sorted(os.environ), "cwd": os.getcwd()})
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q, config_override={})["solo"]
        drive(executor(q), ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert run.current is State.SUCCEEDED, run.exit
        run_dir = run_dir_of(run)
        stage = json.loads((run_dir / ".quipu" / "stage.json").read_text())
        assert stage["run_id"] == run_id and stage["stage"] == "solo"
        assert stage["workspace"] == "ws" and stage["inputs"] == {}
        assert stage["outputs"] == {"result": {"type": "json", "format": None, "schema": None,
                                           "contract": "warning"}}
        result = json.loads((run_dir / "outputs" / "result.json").read_text())
        assert Path(result["cwd"]) == run_dir
        assert set(result["env"]) - {"LC_CTYPE"} == {
            "PATH", "HOME", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
            "QUIPU_RUN_DIR", "QUIPU_RUN_ID", "QUIPU_STAGE", "QUIPU_INPUTS_DIR",
            "QUIPU_OUTPUTS_DIR", "QUIPU_STAGE_CONFIG"}
        assert json.loads((run_dir / ".quipu" / "exit.json").read_text()) == {
            "exit_code": 0, "signal": None, "error": None}

    def test_a_re_delivered_event_does_nothing_twice(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE,
                         {"solo": "from quipu import sdk\nsdk.save_output('result', [1])\n"})
        run_id = start(q)["solo"]
        first = executor(q, worker_id="test:a")
        drive(first, ended(q, run_id))
        head = q.store.head()
        again = executor(q, worker_id="test:b")  # reads the whole log again from 0
        for _ in range(3):
            again.poll_once()
            first.poll_once()
        assert q.store.head() == head
        launches = [decode(r).event for r in q.store.read(types=["RunLaunched"])]
        assert len(launches) == 1


class TestMetrics:
    def test_metrics_are_summarised_and_the_series_reads_back(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, THREE_STAGES,
                         {"make": MAKE, "double": DOUBLE, "report": REPORT})
        ids = start(q, stages=["make"])
        drive(executor(q), ended(q, ids["make"]))
        metrics = q.runs.load_run(ids["make"]).metrics
        assert metrics is not None and metrics.complete and metrics.points == 11
        assert metrics.series is not None
        loss = metrics.summaries["loss"]
        assert loss["count"] == 10 and loss["trend"] == "down" and loss["last_step"] == 9
        assert loss["min"] == pytest.approx(0.1) and loss["max"] == 1.0
        assert loss["last"] == pytest.approx(0.1)
        assert metrics.summaries["acc"]["trend"] == "flat"
        table = pq.read_table(io.BytesIO(q.blobs.get_bytes(metrics.series)))
        assert table.column_names == ["name", "step", "value", "ts"]
        rows = table.to_pylist()
        assert [r["step"] for r in rows if r["name"] == "loss"] == list(range(10))
        assert [r["value"] for r in rows if r["name"] == "loss"] == pytest.approx(
            [1.0 / (s + 1) for s in range(10)])


class TestLogs:
    def test_logs_follow_a_running_stage_then_read_the_stored_log(self, tmp_path: Path) -> None:
        go = tmp_path / "go"
        code = f"""\
            import time
            from pathlib import Path
            from quipu import sdk
            for i in range(3):
                print(f"line {{i}}", flush=True)
            sdk.runtime_log("epoch 1 done")
            while not Path({str(go)!r}).exists():
                time.sleep(0.05)
            print("after go", flush=True)
            sdk.save_output("result", {{"ok": True}})
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        ex = executor(q)
        # The stage prints, then writes its runtime log: wait for both before reading them.
        drive(ex, lambda: q.logs(run_id)["total_lines"] == 3
              and bool(q.logs(run_id)["runtime_log"]))
        live = q.logs(run_id, tail=2)
        assert live["lines"] == ["line 1", "line 2"] and not live["ended"]
        assert live["runtime_log"][-1].endswith("INFO epoch 1 done")
        go.touch()
        drive(ex, ended(q, run_id))
        after = q.logs(run_id, since=live["next"])
        assert after["ended"] and after["lines"] == ["after go"]
        assert q.logs(run_id)["lines"] == ["line 0", "line 1", "line 2", "after go"]

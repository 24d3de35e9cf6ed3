"""The run directory itself: being (or not being) in a run, config, runtime log, heartbeat, stop."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from waiting import wait_until

from quipu import sdk
from quipu.sdk import _context, testing

EVERY_CALL: dict[str, Callable[[], Any]] = {
    "load_input": lambda: sdk.load_input("x"),
    "get_input_path": lambda: sdk.get_input_path("x"),
    "save_output": lambda: sdk.save_output("x", [1]),
    "get_output_path": lambda: sdk.get_output_path("x"),
    "get_config": sdk.get_config,
    "log_metric": lambda: sdk.log_metric("loss", 1.0),
    "log_metrics": lambda: sdk.log_metrics({"loss": 1.0}),
    "log_artifact": lambda: sdk.log_artifact("plot", "plot.png"),
    "runtime_log": lambda: sdk.runtime_log("hello"),
    "heartbeat": sdk.heartbeat,
    "should_stop": sdk.should_stop,
    "save_checkpoint": lambda: sdk.save_checkpoint("m", b"x"),
    "load_checkpoint": lambda: sdk.load_checkpoint("m"),
    "list_checkpoints": sdk.list_checkpoints,
    "finish": sdk.finish,
}


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("QUIPU_RUN_DIR", "QUIPU_RUN_ID", "QUIPU_STAGE", "QUIPU_INPUTS_DIR",
                "QUIPU_OUTPUTS_DIR", "QUIPU_STAGE_CONFIG"):
        monkeypatch.delenv(var, raising=False)


class TestOutsideARun:
    @pytest.mark.parametrize("call", list(EVERY_CALL), ids=list(EVERY_CALL))
    def test_every_call_raises_not_in_run_with_a_hint_at_testing(
        self, no_run: None, call: str
    ) -> None:
        with pytest.raises(sdk.NotInRun) as caught:
            EVERY_CALL[call]()
        assert "quipu.sdk.testing.stage" in str(caught.value)

    def test_every_public_call_is_covered_by_the_not_in_run_check(self) -> None:
        calls = {name for name in sdk.__all__ if name[0].islower()}
        assert calls == set(EVERY_CALL)

    def test_a_run_dir_that_does_not_exist_is_not_a_run(
        self, no_run: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("QUIPU_RUN_DIR", str(tmp_path / "missing"))
        with pytest.raises(sdk.NotInRun, match="not a directory"):
            sdk.log_metric("loss", 1.0)

    def test_a_run_dir_without_stage_json_says_so_when_signals_are_needed(
        self, no_run: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("QUIPU_RUN_DIR", str(tmp_path))
        with pytest.raises(sdk.NotInRun, match=r"stage\.json"):
            sdk.get_config()

    def test_not_in_run_is_an_sdk_error_and_a_runtime_error(self) -> None:
        assert issubclass(sdk.NotInRun, sdk.SdkError)
        assert issubclass(sdk.NotInRun, RuntimeError)


class TestPublicSurface:
    def test_the_package_exports_exactly_its_all(self) -> None:
        public = {name for name in vars(sdk) if not name.startswith("_")}
        modules = {"testing"}  # a submodule, imported on purpose by stage tests
        assert public - modules - {"annotations"} == set(sdk.__all__)

    def test_errors_say_what_happened_and_what_to_do(self) -> None:
        error = sdk.UnknownSignal("no input named 'x'", hint="declare it")
        assert str(error) == "no input named 'x' (hint: declare it)"


class TestConfig:
    def test_get_config_returns_the_resolved_config(self, tmp_path: Path) -> None:
        with testing.stage(config={"lr": 0.1, "layers": [64, 32]}, tmp_path=tmp_path):
            assert sdk.get_config() == {"lr": 0.1, "layers": [64, 32]}

    def test_changing_the_returned_config_changes_nothing_recorded(self, tmp_path: Path) -> None:
        with testing.stage(config={"layers": [64]}, tmp_path=tmp_path):
            sdk.get_config()["layers"].append(1)
            assert sdk.get_config() == {"layers": [64]}

    def test_a_run_without_config_has_an_empty_one(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path):
            assert sdk.get_config() == {}


class TestRuntimeLog:
    LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 (\w+) (.*)")

    def test_each_message_is_a_line_with_iso_time_level_and_text(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.runtime_log("epoch 1 done")
            sdk.runtime_log("disk almost full", level="warning")
        parsed = [self.LINE.fullmatch(line) for line in run.log_lines]
        assert all(parsed)
        assert [(m.group(1), m.group(2)) for m in parsed if m] == [
            ("INFO", "epoch 1 done"), ("WARNING", "disk almost full")]

    def test_an_unknown_level_is_refused(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path), pytest.raises(ValueError, match="INFO"):
            sdk.runtime_log("x", level="LOUD")

    def test_later_lines_of_a_message_are_indented_continuations(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.runtime_log("Traceback:\n  File x\r\nError")
        first, *rest = run.log_lines
        assert first.endswith("INFO Traceback:")
        assert rest == ["    File x", "  Error"]

    def test_the_log_stops_at_10_mb_with_one_truncation_line(self, tmp_path: Path) -> None:
        megabyte = "x" * (1024 * 1024)
        with testing.stage(tmp_path=tmp_path) as run:
            for _ in range(12):
                sdk.runtime_log(megabyte)
            sdk.runtime_log("after the cap")
        path = run.quipu_dir / "runtime.log"
        assert path.stat().st_size <= _context.RUNTIME_LOG_LIMIT
        lines = run.log_lines
        assert lines[-1].endswith("WARNING runtime log truncated at 10 MB")
        assert sum("truncated" in line for line in lines) == 1
        assert len(lines) == 10  # nine whole messages fit, then the notice

    def test_the_cap_counts_what_an_earlier_process_wrote(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            path = run.quipu_dir / "runtime.log"
            path.write_bytes(b"x" * (_context.RUNTIME_LOG_LIMIT - 10) + b"\n")
            sdk.runtime_log("one more")
        assert run.log_lines[-1].endswith("runtime log truncated at 10 MB")


class TestHeartbeat:
    def test_a_heartbeat_writes_time_and_message(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            assert sdk.heartbeat("epoch 3") is True
        assert run.heartbeat is not None
        assert run.heartbeat["message"] == "epoch 3"
        assert isinstance(run.heartbeat["ts"], float)

    def test_heartbeats_within_a_second_are_skipped(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.heartbeat("first")
            assert sdk.heartbeat("second") is False
        assert run.heartbeat is not None and run.heartbeat["message"] == "first"

    def test_a_forced_heartbeat_is_always_written(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.heartbeat("first")
            assert sdk.heartbeat("forced", force=True) is True
        assert run.heartbeat is not None and run.heartbeat["message"] == "forced"

    def test_a_heartbeat_after_a_second_is_written(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_context, "HEARTBEAT_INTERVAL", 0.05)
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.heartbeat("first")
            wait_until(lambda: sdk.heartbeat("later"),
                       what="a heartbeat is written once the interval passed")
        assert run.heartbeat is not None and run.heartbeat["message"] == "later"

    def test_the_heartbeat_file_is_replaced_and_leaves_no_temporary_files(
        self, tmp_path: Path
    ) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            for i in range(3):
                sdk.heartbeat(str(i), force=True)
        assert sorted(p.name for p in run.quipu_dir.iterdir()) == ["heartbeat", "stage.json"]


class TestStopAndFinish:
    def test_should_stop_turns_true_once_the_engine_asks(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            assert sdk.should_stop() is False
            run.request_stop()
            assert sdk.should_stop() is True

    def test_finish_writes_status_ok_and_flushes_metrics(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("acc", 0.9)
            sdk.finish()
            lines = (run.quipu_dir / "metrics.jsonl").read_text().splitlines()
            assert [json.loads(line)["name"] for line in lines] == ["acc"]
        assert run.finished is not None
        assert run.finished["status"] == "ok"

    def test_a_stage_that_does_not_call_finish_is_not_marked_finished(
        self, tmp_path: Path
    ) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("acc", 0.9)
        assert run.finished is None


class TestSdkWarnings:
    def test_warnings_of_one_kind_are_capped_in_the_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_context, "WARNINGS_PER_KIND", 3)
        with testing.stage(tmp_path=tmp_path) as run, pytest.warns(sdk.SdkWarning):
            for step in range(10):
                sdk.log_metric("loss", np.nan, step=step)
        assert len(run.warnings) == 4
        assert "further ones dropped" in run.warnings[-1]["message"]


class TestEnvironment:
    def test_the_quipu_variables_are_restored_after_a_stage(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("QUIPU_RUN_ID", "outer")
        monkeypatch.delenv("QUIPU_RUN_DIR", raising=False)
        with testing.stage(run_id="inner", tmp_path=tmp_path):
            assert os.environ["QUIPU_RUN_ID"] == "inner"
        assert os.environ["QUIPU_RUN_ID"] == "outer"
        assert "QUIPU_RUN_DIR" not in os.environ

    def test_the_environment_points_at_the_contract_layout(self, tmp_path: Path) -> None:
        with testing.stage(run_id="r1", stage_name="train", tmp_path=tmp_path) as run:
            root = Path(os.environ["QUIPU_RUN_DIR"])
            assert os.environ["QUIPU_INPUTS_DIR"] == str(root / "inputs")
            assert os.environ["QUIPU_OUTPUTS_DIR"] == str(root / "outputs")
            assert os.environ["QUIPU_STAGE_CONFIG"] == str(root / ".quipu" / "stage.json")
            assert (os.environ["QUIPU_RUN_ID"], os.environ["QUIPU_STAGE"]) == ("r1", "train")
        description = json.loads((run.quipu_dir / "stage.json").read_text())
        assert set(description) == {"run_id", "stage", "workspace", "config", "inputs",
                                    "outputs"}

    def test_two_runs_one_after_the_other_do_not_share_state(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as first:
            sdk.log_metric("loss", 1.0, step=0)
        with testing.stage(tmp_path=tmp_path) as second:
            sdk.log_metric("loss", 2.0)  # no step here is fine: a different run
        assert first.metric("loss") == [1.0]
        assert second.metric("loss") == [2.0]
        assert second.warnings == []

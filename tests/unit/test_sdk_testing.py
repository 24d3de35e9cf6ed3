"""The testing harness: how it stages inputs, declares outputs, and reads a run back."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest

from quipu import sdk
from quipu.sdk import testing


def description(run: testing.StageRun) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((run.quipu_dir / "stage.json").read_text())
    return loaded


class TestStagingInputs:
    def test_input_types_are_guessed_from_the_values(self, tmp_path: Path) -> None:
        npy_file = tmp_path / "given.npy"
        np.save(npy_file, np.zeros(2))
        folder = tmp_path / "folder"
        folder.mkdir()
        inputs = {"array": np.zeros(3), "rows": [{"a": 1}], "obj": {"k": 1}, "blob": b"x",
                  "npy_path": npy_file, "dir": folder, "str_path": str(npy_file)}
        with testing.stage(inputs=inputs, tmp_path=tmp_path) as run:
            pass
        declared = description(run)["inputs"]
        assert isinstance(declared, dict)
        assert {name: spec["type"] for name, spec in declared.items()} == {
            "array": "npy", "rows": "csv", "obj": "json", "blob": "file", "npy_path": "npy",
            "dir": "directory", "str_path": "npy"}
        assert declared["npy_path"]["path"] == "inputs/npy_path.npy"

    def test_an_explicit_input_keeps_its_type_format_and_schema(self, tmp_path: Path) -> None:
        given = testing.Input(b"PAR1", type="dataset", format="parquet",
                              schema={"columns": ["a"]})
        with testing.stage(inputs={"table": given}, tmp_path=tmp_path) as run:
            assert sdk.load_input("table").read_bytes() == b"PAR1"
        assert description(run)["inputs"] == {"table": {
            "path": "inputs/table", "type": "dataset", "format": "parquet",
            "schema": {"columns": ["a"]}}}

    def test_an_input_it_cannot_guess_asks_for_a_type(self, tmp_path: Path) -> None:
        with pytest.raises(TypeError, match=r"testing\.Input"), \
                testing.stage(inputs={"x": 3.5}, tmp_path=tmp_path):
            pass

    def test_a_missing_input_path_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError), \
                testing.stage(inputs={"x": tmp_path / "nope.npy"}, tmp_path=tmp_path):
            pass


class TestDeclaringOutputs:
    def test_a_type_name_is_shorthand_for_a_spec(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"m": "npy", "s": {"type": "csv", "schema": {"columns": []}}},
                           tmp_path=tmp_path) as run:
            pass
        assert description(run)["outputs"] == {
            "m": {"type": "npy", "format": None, "schema": None},
            "s": {"type": "csv", "format": None, "schema": {"columns": []}}}

    def test_an_unknown_output_type_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="unknown type"), \
                testing.stage(outputs={"m": "pickle"}, tmp_path=tmp_path):
            pass


class TestReadingARunBack:
    def test_metrics_include_points_still_buffered_in_this_process(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("loss", 0.5, step=0)
            assert run.metric("loss") == [0.5]
            assert run.metrics[0] == testing.MetricPoint("loss", 0.5, 0, run.metrics[0].ts)

    def test_an_undeclared_or_unwritten_output_is_a_clear_error(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"m": "npy"}, tmp_path=tmp_path) as run:
            pass
        with pytest.raises(KeyError, match="declared"):
            run.output("x")
        with pytest.raises(FileNotFoundError, match="did not write"):
            run.output("m")

    def test_the_run_directory_is_made_under_tmp_path(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as first, testing.stage(tmp_path=tmp_path) as second:
            pass
        assert first.run_dir.parent == tmp_path == second.run_dir.parent
        assert first.run_dir != second.run_dir

    def test_without_tmp_path_the_directory_goes_when_the_run_object_does(self) -> None:
        with testing.stage() as run:
            sdk.log_metric("x", 1.0)
        run_dir = run.run_dir
        assert run.metric("x") == [1.0]
        del run
        gc.collect()
        assert not run_dir.exists()

    def test_an_exception_in_the_stage_still_flushes_and_restores(self, tmp_path: Path) -> None:
        before = os.environ.get("QUIPU_RUN_DIR")
        with pytest.raises(RuntimeError), testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("x", 1.0)
            raise RuntimeError("stage crashed")
        assert os.environ.get("QUIPU_RUN_DIR") == before
        assert [json.loads(line)["value"] for line in
                (run.quipu_dir / "metrics.jsonl").read_text().splitlines()] == [1.0]

    def test_env_holds_every_contract_variable(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            assert {key: os.environ[key] for key in run.env} == run.env
        assert set(run.env) == {"QUIPU_RUN_DIR", "QUIPU_RUN_ID", "QUIPU_STAGE",
                                "QUIPU_INPUTS_DIR", "QUIPU_OUTPUTS_DIR", "QUIPU_STAGE_CONFIG"}

"""Checkpoints: saved where the contract says, recorded, listed, and loaded back as saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quipu import sdk
from quipu.sdk import _io, testing


class TestSaveCheckpoint:
    def test_a_stepped_checkpoint_lives_in_its_step_directory(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            path = sdk.save_checkpoint("model", b"weights", step=3)
        assert path == run.quipu_dir / "checkpoints" / "model" / "step_3"
        assert (path / "data.bin").read_bytes() == b"weights"

    def test_a_checkpoint_without_step_is_latest_and_replaced_each_time(
        self, tmp_path: Path
    ) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.save_checkpoint("opt", {"lr": 0.1})
            path = sdk.save_checkpoint("opt", {"lr": 0.01})
            assert sdk.load_checkpoint("opt") == {"lr": 0.01}
        assert path == run.quipu_dir / "checkpoints" / "opt" / "latest"
        assert [p.name for p in path.parent.iterdir()] == ["latest"]

    def test_each_save_appends_a_contract_record(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            path = sdk.save_checkpoint("model", np.arange(4), step=1)
        lines = [json.loads(line) for line in
                 (run.quipu_dir / "checkpoints.jsonl").read_text().splitlines()]
        assert len(lines) == 1
        assert set(lines[0]) == {"name", "step", "path", "sha256", "size", "ts"}
        assert lines[0]["path"] == ".quipu/checkpoints/model/step_1"
        assert (lines[0]["sha256"], lines[0]["size"]) == _io.hash_path(path)

    def test_a_file_is_copied_and_loads_back_as_its_path(self, tmp_path: Path) -> None:
        source = tmp_path / "state.pt"
        source.write_bytes(b"torch state")
        with testing.stage(tmp_path=tmp_path):
            sdk.save_checkpoint("model", source, step=0)
            source.write_bytes(b"changed later")
            loaded = sdk.load_checkpoint("model")
            assert loaded.name == "state.pt"
            assert loaded.read_bytes() == b"torch state"

    def test_a_directory_is_copied_and_loads_back_as_the_checkpoint_directory(
        self, tmp_path: Path
    ) -> None:
        source = tmp_path / "hf_model"
        source.mkdir()
        (source / "config.json").write_text("{}")
        with testing.stage(tmp_path=tmp_path):
            sdk.save_checkpoint("model", source)
            loaded = sdk.load_checkpoint("model")
            assert (loaded / "config.json").read_text() == "{}"

    @pytest.mark.parametrize("data", [b"raw", bytearray(b"raw")], ids=["bytes", "bytearray"])
    def test_bytes_load_back_as_bytes(self, data: bytes, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path):
            sdk.save_checkpoint("b", data)
            assert sdk.load_checkpoint("b") == b"raw"

    def test_arrays_load_back_as_arrays(self, tmp_path: Path) -> None:
        weights = np.linspace(0, 1, 7, dtype=np.float32)
        with testing.stage(tmp_path=tmp_path):
            sdk.save_checkpoint("w", weights, step=2)
            loaded = sdk.load_checkpoint("w")
        np.testing.assert_array_equal(loaded, weights)
        assert loaded.dtype == np.float32

    @pytest.mark.parametrize("data", ["a path as str", 3.0, object(), {"x": float("nan")}],
                             ids=["str", "float", "object", "nan-dict"])
    def test_data_it_cannot_store_faithfully_is_refused(self, data: object, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            with pytest.raises(TypeError):
                sdk.save_checkpoint("c", data)
            assert sdk.list_checkpoints() == []
        assert not (run.quipu_dir / "checkpoints" / "c" / "latest").exists()

    @pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 129])
    def test_names_that_are_not_one_safe_directory_name_are_refused(
        self, name: str, tmp_path: Path
    ) -> None:
        with testing.stage(tmp_path=tmp_path), pytest.raises(ValueError, match="checkpoint name"):
            sdk.save_checkpoint(name, b"x")

    @pytest.mark.parametrize("step", [-1, 1.5, True])
    def test_steps_must_be_non_negative_ints(self, step: object, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path), pytest.raises(ValueError, match="step"):
            sdk.save_checkpoint("c", b"x", step=step)  # type: ignore[arg-type]

    def test_a_failed_save_keeps_the_previous_checkpoint(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.save_checkpoint("c", b"good")
            with pytest.raises(FileNotFoundError):
                sdk.save_checkpoint("c", tmp_path / "missing")
            assert sdk.load_checkpoint("c") == b"good"
        leftovers = [p.name for p in (run.quipu_dir / "checkpoints" / "c").iterdir()]
        assert leftovers == ["latest"]


class TestLoadAndList:
    def test_load_without_step_returns_the_last_saved(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path):
            sdk.save_checkpoint("m", b"one", step=1)
            sdk.save_checkpoint("m", b"two", step=2)
            assert sdk.load_checkpoint("m") == b"two"
            assert sdk.load_checkpoint("m", step=1) == b"one"

    def test_a_resaved_step_is_the_newest_again(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path):
            sdk.save_checkpoint("m", b"one", step=1)
            sdk.save_checkpoint("m", b"two", step=2)
            sdk.save_checkpoint("m", b"one again", step=1)
            assert sdk.load_checkpoint("m") == b"one again"
            assert [c.step for c in sdk.list_checkpoints("m")] == [2, 1]

    def test_a_missing_checkpoint_raises_checkpoint_not_found(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path):
            with pytest.raises(sdk.CheckpointNotFound, match="no checkpoint 'm'"):
                sdk.load_checkpoint("m")
            sdk.save_checkpoint("m", b"x", step=1)
            with pytest.raises(sdk.CheckpointNotFound, match="at step 5"):
                sdk.load_checkpoint("m", step=5)

    def test_checkpoint_not_found_is_a_lookup_error(self) -> None:
        assert issubclass(sdk.CheckpointNotFound, LookupError)

    def test_list_shows_every_checkpoint_or_one_names(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.save_checkpoint("model", b"a", step=1)
            sdk.save_checkpoint("opt", b"b")
            sdk.save_checkpoint("model", b"c", step=2)
            everything = sdk.list_checkpoints()
            models = sdk.list_checkpoints("model")
        assert [(c.name, c.step) for c in everything] == [("model", 1), ("opt", None),
                                                          ("model", 2)]
        assert [(c.name, c.step) for c in models] == [("model", 1), ("model", 2)]
        assert run.checkpoints == everything

    def test_checkpoints_restored_without_records_are_still_found(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.save_checkpoint("m", b"old", step=4)
            (run.quipu_dir / "checkpoints.jsonl").unlink()
            [found] = sdk.list_checkpoints()
            assert (found.name, found.step, found.path) == ("m", 4,
                                                            ".quipu/checkpoints/m/step_4")
            assert sdk.load_checkpoint("m") == b"old"

    def test_a_checkpoint_deleted_from_disk_is_not_listed(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path):
            path = sdk.save_checkpoint("m", b"x", step=1)
            shutil.rmtree(path)
            assert sdk.list_checkpoints() == []


class TestResumedCheckpoints:
    """A run started with resume_from reads the checkpoints it was given (testing.stage lays
    them out as the executor restores them)."""

    GIVEN: dict[str, dict[int | None, Any]] = {"model": {2: np.arange(3), 5: np.arange(5)},
                                               "opt": {None: {"lr": 0.01}}}

    def test_a_name_the_run_has_not_saved_falls_back_to_the_resumed_run(
            self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path, resume_from=self.GIVEN,
                           resume_run_id="stage-a") as run:
            assert sdk.load_checkpoint("model").tolist() == [0, 1, 2, 3, 4]  # highest step
            assert sdk.load_checkpoint("model", step=2).tolist() == [0, 1, 2]
            assert sdk.load_checkpoint("opt") == {"lr": 0.01}
            assert sdk.list_checkpoints() == []  # none of its own
        assert run.checkpoints == []
        stage_json = json.loads((run.quipu_dir / "stage.json").read_text())
        assert stage_json["resume_from"]["run_id"] == "stage-a"
        assert not (run.quipu_dir / "checkpoints.jsonl").exists()

    def test_the_runs_own_checkpoint_wins_once_it_saved_one(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path, resume_from=self.GIVEN, resume_run_id="stage-a"):
            sdk.save_checkpoint("model", b"mine", step=6)
            assert sdk.load_checkpoint("model") == b"mine"
            assert sdk.load_checkpoint("model", run_id="stage-a").tolist() == [0, 1, 2, 3, 4]
            assert sdk.load_checkpoint("model", run_id="test-run") == b"mine"
            with pytest.raises(sdk.CheckpointNotFound, match="this run"):
                sdk.load_checkpoint("opt", run_id="test-run")

    def test_list_with_the_resumed_run_id_lists_what_was_given(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path, resume_from=self.GIVEN, resume_run_id="stage-a"):
            given = sdk.list_checkpoints(run_id="stage-a")
            models = sdk.list_checkpoints("model", run_id="stage-a")
        assert [(c.name, c.step, c.run_id) for c in given] == [
            ("model", 2, "stage-a"), ("model", 5, "stage-a"), ("opt", None, "stage-a")]
        assert [c.step for c in models] == [2, 5]
        assert all(c.path.startswith(".quipu/resume/stage-a/") for c in given)

    def test_another_run_id_is_refused_with_the_hint_to_resume_from_it(
            self, tmp_path: Path) -> None:
        with (testing.stage(tmp_path=tmp_path, resume_from=self.GIVEN, resume_run_id="stage-a"),
              pytest.raises(sdk.CheckpointNotFound) as caught):
            sdk.load_checkpoint("model", run_id="stage-b")
        assert "stage-a" in caught.value.message
        assert "resume_from='stage-b'" in caught.value.hint

    def test_without_resume_from_another_run_id_is_refused_too(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path):
            with pytest.raises(sdk.CheckpointNotFound, match="resume_from='stage-b'"):
                sdk.load_checkpoint("model", run_id="stage-b")
            with pytest.raises(sdk.CheckpointNotFound, match="in this run"):
                sdk.load_checkpoint("model")

    def test_a_missing_step_of_the_resumed_run_says_where_it_looked(
            self, tmp_path: Path) -> None:
        with (testing.stage(tmp_path=tmp_path, resume_from=self.GIVEN, resume_run_id="stage-a"),
              pytest.raises(sdk.CheckpointNotFound) as caught):
            sdk.load_checkpoint("model", step=3)
        assert "stage-a" in caught.value.message
        assert "list_checkpoints(run_id='stage-a')" in caught.value.hint

    def test_the_hashes_given_are_those_of_the_directories(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path, resume_from=self.GIVEN,
                           resume_run_id="stage-a") as run:
            given = sdk.list_checkpoints(run_id="stage-a")
        for point in given:
            assert _io.hash_path(run.run_dir / point.path) == (point.sha256, point.size)

"""Inputs and outputs: loading by declared type, saving with schema checks, records, artifacts."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quipu import sdk
from quipu.sdk import _io, testing


def record(run: testing.StageRun, name: str) -> dict[str, Any]:
    return [line for line in run.output_records if line["name"] == name][-1]


@pytest.fixture
def no_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import pandas`` fail, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "pandas", None)


class TestLoadInput:
    def test_an_npy_input_loads_as_the_array(self, tmp_path: Path) -> None:
        digits = np.arange(12, dtype=np.float32).reshape(3, 4)
        with testing.stage(inputs={"digits": digits}, tmp_path=tmp_path):
            loaded = sdk.load_input("digits")
        np.testing.assert_array_equal(loaded, digits)
        assert loaded.dtype == np.float32

    def test_an_npy_input_can_be_memory_mapped(self, tmp_path: Path) -> None:
        with testing.stage(inputs={"big": np.ones((100, 10))}, tmp_path=tmp_path):
            mapped = sdk.load_input("big", mmap_mode="r")
            assert isinstance(mapped, np.memmap)
            assert float(mapped.sum()) == 1000.0

    def test_a_csv_input_without_pandas_loads_as_dict_rows(
        self, no_pandas: None, tmp_path: Path
    ) -> None:
        rows = [{"id": 1, "label": "cat"}, {"id": 2, "label": "dog"}]
        with testing.stage(inputs={"labels": rows}, tmp_path=tmp_path):
            assert sdk.load_input("labels") == [{"id": "1", "label": "cat"},
                                                {"id": "2", "label": "dog"}]

    def test_a_csv_input_with_pandas_loads_as_a_dataframe(self, tmp_path: Path) -> None:
        import pandas
        frame = pandas.DataFrame({"id": [1, 2], "label": ["cat", "dog"]})
        with testing.stage(inputs={"labels": frame}, tmp_path=tmp_path):
            loaded = sdk.load_input("labels")
        pandas.testing.assert_frame_equal(loaded, frame)

    def test_format_rows_reads_csv_as_dicts_even_when_pandas_is_there(
        self, tmp_path: Path
    ) -> None:
        with testing.stage(inputs={"t": [["a", "b"], [1, 2]]}, tmp_path=tmp_path):
            assert sdk.load_input("t", format="rows") == [{"a": "1", "b": "2"}]

    def test_format_dataframe_without_pandas_says_to_install_it(
        self, no_pandas: None, tmp_path: Path
    ) -> None:
        with testing.stage(inputs={"t": [["a"], [1]]}, tmp_path=tmp_path), \
                pytest.raises(ImportError, match="pandas"):
            sdk.load_input("t", format="dataframe")

    def test_a_json_input_loads_as_the_value(self, tmp_path: Path) -> None:
        with testing.stage(inputs={"vocab": {"a": 1, "b": [2, 3]}}, tmp_path=tmp_path):
            assert sdk.load_input("vocab") == {"a": 1, "b": [2, 3]}

    def test_file_and_directory_inputs_load_as_paths(self, tmp_path: Path) -> None:
        images = tmp_path / "images"
        images.mkdir()
        (images / "0.png").write_bytes(b"png")
        with testing.stage(inputs={"weights": b"\x00\x01", "images": images},
                           tmp_path=tmp_path):
            weights = sdk.load_input("weights")
            folder = sdk.load_input("images")
            assert weights.read_bytes() == b"\x00\x01"
            assert (folder / "0.png").read_bytes() == b"png"
            assert sdk.get_input_path("images") == folder

    def test_format_overrides_the_declared_type(self, tmp_path: Path) -> None:
        with testing.stage(inputs={"notes": testing.Input(b"hello", type="file")},
                           tmp_path=tmp_path):
            assert sdk.load_input("notes", format="text") == "hello"
            assert sdk.load_input("notes", format="bytes") == b"hello"

    def test_an_unknown_format_is_refused(self, tmp_path: Path) -> None:
        with testing.stage(inputs={"x": b""}, tmp_path=tmp_path), \
                pytest.raises(ValueError, match="unknown format"):
            sdk.load_input("x", format="pickle")

    def test_an_undeclared_input_names_the_declared_ones(self, tmp_path: Path) -> None:
        with testing.stage(inputs={"train": np.zeros(1), "test": np.zeros(1)},
                           tmp_path=tmp_path), pytest.raises(sdk.UnknownSignal) as caught:
            sdk.load_input("valid")
        assert "declared inputs: test, train" in str(caught.value)

    def test_input_paths_in_stage_json_are_relative_to_the_run_dir(self, tmp_path: Path) -> None:
        with testing.stage(inputs={"d": np.zeros(2)}, tmp_path=tmp_path) as run:
            path = sdk.get_input_path("d")
        description = json.loads((run.quipu_dir / "stage.json").read_text())
        assert description["inputs"]["d"]["path"] == "inputs/d.npy"
        assert path == run.run_dir / "inputs" / "d.npy"

    def test_a_declared_input_that_was_not_staged_is_a_clear_error(self, tmp_path: Path) -> None:
        with testing.stage(inputs={"d": np.zeros(2)}, tmp_path=tmp_path) as run:
            (run.run_dir / "inputs" / "d.npy").unlink()
            with pytest.raises(FileNotFoundError, match="declared but not staged"):
                sdk.load_input("d")

    def test_a_directory_holding_one_npy_file_loads_as_that_array(self, tmp_path: Path) -> None:
        folder = tmp_path / "arrays"
        folder.mkdir()
        np.save(folder / "features.npy", np.arange(3))
        with testing.stage(inputs={"f": testing.Input(folder, type="npy")}, tmp_path=tmp_path):
            np.testing.assert_array_equal(sdk.load_input("f"), np.arange(3))


class TestSaveOutput:
    def test_an_npy_output_is_written_where_the_contract_says(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"model": "npy"}, tmp_path=tmp_path) as run:
            path = sdk.save_output("model", [[1.0, 2.0], [3.0, 4.0]])
        assert path == run.run_dir / "outputs" / "model.npy"
        np.testing.assert_array_equal(run.output("model"), [[1.0, 2.0], [3.0, 4.0]])

    def test_each_save_appends_a_record_with_hash_size_and_stats(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"model": "npy"}, tmp_path=tmp_path) as run:
            path = sdk.save_output("model", np.array([1.0, np.nan, 3.0]))
        line = record(run, "model")
        assert set(line) == {"name", "path", "type", "sha256", "size", "stats"}
        assert line["path"] == "outputs/model.npy"
        assert line["type"] == "npy"
        assert line["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert line["size"] == path.stat().st_size
        stats = line["stats"]
        assert stats["shape"] == [3]
        assert stats["dtype"] == "float64"
        assert (stats["mean"], stats["min"], stats["max"]) == (2.0, 1.0, 3.0)
        assert stats["std"] == 1.0
        assert stats["null_ratio"] == pytest.approx(1 / 3)

    def test_a_csv_output_from_dict_rows_records_rows_and_columns(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"preds": "csv"}, tmp_path=tmp_path) as run:
            sdk.save_output("preds", [{"id": 1, "p": 0.5}, {"id": 2, "p": 0.25, "note": "x"}])
        assert (run.run_dir / "outputs" / "preds.csv").read_text().splitlines() == [
            "id,p,note", "1,0.5,", "2,0.25,x"]
        assert record(run, "preds")["stats"] == {"rows": 2, "columns": ["id", "p", "note"]}

    def test_a_csv_output_from_rows_takes_the_first_row_as_header(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"preds": "csv"}, tmp_path=tmp_path) as run:
            sdk.save_output("preds", [("id", "p"), (1, 0.5)])
        assert record(run, "preds")["stats"] == {"rows": 1, "columns": ["id", "p"]}

    def test_a_csv_output_from_a_dataframe(self, tmp_path: Path) -> None:
        import pandas
        frame = pandas.DataFrame({"id": [1, 2], "p": [0.5, 0.25]})
        with testing.stage(outputs={"preds": "csv"}, tmp_path=tmp_path) as run:
            sdk.save_output("preds", frame)
        pandas.testing.assert_frame_equal(run.output("preds"), frame)
        assert record(run, "preds")["stats"] == {"rows": 2, "columns": ["id", "p"]}

    def test_a_json_output_accepts_numpy_values(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"summary": "json"}, tmp_path=tmp_path) as run:
            sdk.save_output("summary", {"acc": np.float32(0.5), "confusion": np.eye(2)})
        assert run.output("summary") == {"acc": 0.5, "confusion": [[1.0, 0.0], [0.0, 1.0]]}

    def test_a_json_output_with_nan_is_refused(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"summary": "json"}, tmp_path=tmp_path) as run, \
                pytest.raises(ValueError):
            sdk.save_output("summary", {"acc": float("nan")})
        assert run.outputs == {}

    def test_a_file_output_takes_bytes_or_a_path(self, tmp_path: Path) -> None:
        source = tmp_path / "weights.pt"
        source.write_bytes(b"weights")
        with testing.stage(outputs={"raw": "file", "copied": "file"}, tmp_path=tmp_path) as run:
            sdk.save_output("raw", b"abc")
            sdk.save_output("copied", source)
        assert run.output("raw").read_bytes() == b"abc"
        assert run.output("copied").read_bytes() == b"weights"
        assert run.output("raw") == run.run_dir / "outputs" / "raw"

    def test_a_str_is_refused_as_ambiguous(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"raw": "file"}, tmp_path=tmp_path), \
                pytest.raises(TypeError, match="ambiguous"):
            sdk.save_output("raw", "weights.pt")

    def test_a_directory_output_is_copied_and_hashed_by_manifest(self, tmp_path: Path) -> None:
        source = tmp_path / "plots"
        (source / "sub").mkdir(parents=True)
        (source / "a.txt").write_text("a")
        (source / "sub" / "b.txt").write_text("b")
        with testing.stage(outputs={"plots": "directory"}, tmp_path=tmp_path) as run:
            target = sdk.save_output("plots", source)
        assert (target / "sub" / "b.txt").read_text() == "b"
        line = record(run, "plots")
        assert line["size"] == 2
        assert line["stats"] == {"files": 2}
        assert line["sha256"] == _io.hash_path(source)[0]

    def test_an_output_written_in_place_is_recorded_by_passing_its_path(
        self, tmp_path: Path
    ) -> None:
        with testing.stage(outputs={"ckpt": "file", "imgs": "directory"},
                           tmp_path=tmp_path) as run:
            path = sdk.get_output_path("ckpt")
            path.write_bytes(b"in place")
            folder = sdk.get_output_path("imgs")
            (folder / "0.png").write_bytes(b"png")
            sdk.save_output("ckpt", path)
            sdk.save_output("imgs", folder)
        assert run.output("ckpt").read_bytes() == b"in place"
        assert (run.output("imgs") / "0.png").read_bytes() == b"png"
        assert [line["name"] for line in run.output_records] == ["ckpt", "imgs"]

    def test_saving_again_replaces_the_file_and_appends_a_record(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"m": "npy"}, tmp_path=tmp_path) as run:
            sdk.save_output("m", np.zeros(2))
            sdk.save_output("m", np.ones(3))
        np.testing.assert_array_equal(run.output("m"), np.ones(3))
        assert [line["stats"]["shape"] for line in run.output_records] == [[2], [3]]
        assert sorted(p.name for p in (run.run_dir / "outputs").iterdir()) == ["m.npy"]

    def test_artifact_true_also_records_an_artifact(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"model": "npy"}, tmp_path=tmp_path) as run:
            sdk.save_output("model", np.zeros(2), artifact=True)
        assert run.artifacts == [{"name": "model", "path": "model.npy"}]

    def test_an_undeclared_output_names_the_declared_ones(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"model": "npy", "preds": "csv"}, tmp_path=tmp_path), \
                pytest.raises(sdk.UnknownSignal, match="declared outputs: model, preds"):
            sdk.save_output("modle", np.zeros(2))

    def test_an_object_array_is_refused(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"m": "npy"}, tmp_path=tmp_path), \
                pytest.raises(TypeError, match="object array"):
            sdk.save_output("m", np.array([{"a": 1}], dtype=object))

    def test_get_output_path_gives_the_typed_name_and_creates_directories(
        self, tmp_path: Path
    ) -> None:
        with testing.stage(outputs={"m": "npy", "t": "csv", "j": "json", "f": "file",
                                    "d": "directory"}, tmp_path=tmp_path) as run:
            outputs = run.run_dir / "outputs"
            assert sdk.get_output_path("m") == outputs / "m.npy"
            assert sdk.get_output_path("t") == outputs / "t.csv"
            assert sdk.get_output_path("j") == outputs / "j.json"
            assert sdk.get_output_path("f") == outputs / "f"
            assert sdk.get_output_path("d").is_dir()


class TestSchema:
    SCHEMA = {"shape": [None, 3], "dtype": "float32", "rank": 2}

    def out(self, schema: dict[str, Any], kind: str = "npy") -> dict[str, Any]:
        return {"o": {"type": kind, "schema": schema}}

    @pytest.mark.parametrize("shape", [(1, 3), (7, 3), (0, 3)])
    def test_an_array_fitting_the_wildcards_is_saved(
        self, shape: tuple[int, ...], tmp_path: Path
    ) -> None:
        with testing.stage(outputs=self.out(self.SCHEMA), tmp_path=tmp_path) as run:
            sdk.save_output("o", np.zeros(shape, dtype=np.float32))
        assert run.output("o").shape == shape

    def test_minus_one_is_a_wildcard_too(self, tmp_path: Path) -> None:
        with testing.stage(outputs=self.out({"shape": [-1, -1]}), tmp_path=tmp_path):
            sdk.save_output("o", np.zeros((4, 5)))

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (np.zeros((2, 4), dtype=np.float32), r"expected shape \['\*', 3\]"),
            (np.zeros((2, 3), dtype=np.float64), "expected dtype float32, got float64"),
            (np.zeros(3, dtype=np.float32), "expected rank 2, got rank 1"),
        ],
        ids=["shape", "dtype", "rank"],
    )
    def test_a_mismatch_raises_and_writes_nothing(
        self, data: np.ndarray[Any, Any], message: str, tmp_path: Path
    ) -> None:
        with testing.stage(outputs=self.out(self.SCHEMA), tmp_path=tmp_path) as run, \
                pytest.raises(sdk.SchemaMismatch, match=message):
            sdk.save_output("o", data)
        assert run.outputs == {}
        assert run.output_records == []
        assert list((run.run_dir / "outputs").iterdir()) == []

    def test_a_dtype_mismatch_says_how_to_convert(self, tmp_path: Path) -> None:
        with testing.stage(outputs=self.out({"dtype": "float32"}), tmp_path=tmp_path), \
                pytest.raises(sdk.SchemaMismatch, match=r"astype\('float32'\)"):
            sdk.save_output("o", np.zeros(2))

    def test_schema_mismatch_is_a_value_error(self) -> None:
        assert issubclass(sdk.SchemaMismatch, ValueError)

    @pytest.mark.parametrize(
        ("rows", "message"),
        [
            ([{"id": 1}], r"missing \['p'\]"),
            ([{"id": 1, "p": 2, "x": 3}], r"unexpected \['x'\]"),
            ([{"p": 2, "id": 1}], "order differs"),
        ],
        ids=["missing", "extra", "order"],
    )
    def test_csv_columns_must_be_the_declared_ones(
        self, rows: list[dict[str, Any]], message: str, tmp_path: Path
    ) -> None:
        with testing.stage(outputs=self.out({"columns": ["id", "p"]}, "csv"),
                           tmp_path=tmp_path), pytest.raises(sdk.SchemaMismatch, match=message):
            sdk.save_output("o", rows)

    def test_csv_with_the_declared_columns_is_saved(self, tmp_path: Path) -> None:
        with testing.stage(outputs=self.out({"columns": ["id", "p"]}, "csv"),
                           tmp_path=tmp_path) as run:
            sdk.save_output("o", [{"id": 1, "p": 2}])
        assert record(run, "o")["stats"]["columns"] == ["id", "p"]


class TestArrayStats:
    def test_stats_ignore_nan_and_infinity(self) -> None:
        stats = _io.array_stats(np.array([1.0, np.nan, np.inf, 3.0]))
        assert (stats["mean"], stats["min"], stats["max"]) == (2.0, 1.0, 3.0)
        assert stats["null_ratio"] == 0.25

    def test_an_all_nan_array_has_no_mean(self) -> None:
        stats = _io.array_stats(np.full(4, np.nan))
        assert stats["mean"] is None and stats["null_ratio"] == 1.0

    def test_integers_have_no_nulls(self) -> None:
        stats = _io.array_stats(np.arange(5))
        assert stats["null_ratio"] == 0.0 and stats["max"] == 4.0

    def test_strings_have_only_shape_and_dtype(self) -> None:
        stats = _io.array_stats(np.array(["a", "b"]))
        assert stats["shape"] == [2] and stats["mean"] is None

    def test_large_arrays_are_sampled_the_same_way_every_time(self) -> None:
        array = np.random.default_rng(0).normal(size=_io.STATS_SAMPLE_LIMIT * 3 + 7)
        first, second = _io.array_stats(array), _io.array_stats(array.copy())
        assert first == second
        assert first["sampled"] is True
        assert first["mean"] == pytest.approx(float(array.mean()), abs=0.01)

    def test_stats_are_strict_json(self) -> None:
        stats = _io.array_stats(np.array([np.inf, -np.inf]))
        json.dumps(stats, allow_nan=False)


class TestArtifacts:
    def test_a_file_inside_outputs_is_recorded_relative_to_outputs(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            plots = run.run_dir / "outputs" / "plots"
            plots.mkdir()
            (plots / "loss.png").write_bytes(b"png")
            sdk.log_artifact("loss_curve", "plots/loss.png")
            sdk.log_artifact("all_plots", Path("plots"))
        assert run.artifacts == [{"name": "loss_curve", "path": "plots/loss.png"},
                                 {"name": "all_plots", "path": "plots"}]

    def test_a_path_that_normalises_inside_outputs_is_recorded_normalised(
        self, tmp_path: Path
    ) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            (run.run_dir / "outputs" / "a.txt").write_text("a")
            sdk.log_artifact("a", "sub/../a.txt")
        assert run.artifacts == [{"name": "a", "path": "a.txt"}]

    def test_an_absolute_path_is_refused_with_a_hint(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            target = run.run_dir / "outputs" / "a.txt"
            target.write_text("a")
            with pytest.raises(ValueError, match=r"relative to outputs/.*'a\.txt'"):
                sdk.log_artifact("a", str(target))

    def test_a_path_escaping_outputs_is_refused(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            (run.run_dir / "secret").write_text("s")
            with pytest.raises(ValueError, match="leaves outputs/"):
                sdk.log_artifact("s", "../secret")

    def test_a_symlink_out_of_outputs_is_refused(self, tmp_path: Path) -> None:
        outside = tmp_path / "outside.txt"
        outside.write_text("o")
        with testing.stage(tmp_path=tmp_path) as run:
            (run.run_dir / "outputs" / "link").symlink_to(outside)
            with pytest.raises(ValueError, match="leaves outputs/"):
                sdk.log_artifact("o", "link")

    def test_a_missing_file_is_refused(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path), pytest.raises(FileNotFoundError, match="write"):
            sdk.log_artifact("a", "nope.png")

    def test_a_malformed_artifact_name_is_refused(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            (run.run_dir / "outputs" / "a").write_text("a")
            with pytest.raises(ValueError, match="artifact name"):
                sdk.log_artifact("my plot", "a")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


class TestRoundTrips:
    @settings(max_examples=60, deadline=None)
    @given(array=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5),
    ))
    def test_any_array_saved_loads_back_identical(self, array: np.ndarray[Any, Any]) -> None:
        with testing.stage(outputs={"a": "npy"}) as run:
            sdk.save_output("a", array)
        loaded = run.output("a")
        assert loaded.dtype == array.dtype
        np.testing.assert_array_equal(loaded, array)
        json.dumps(record(run, "a")["stats"], allow_nan=False)

    @settings(max_examples=60, deadline=None)
    @given(value=JSON_VALUES)
    def test_any_json_value_saved_loads_back_equal(self, value: Any) -> None:
        with testing.stage(outputs={"j": "json"}) as run:
            sdk.save_output("j", value)
        assert run.output("j") == value

    @settings(max_examples=60, deadline=None)
    @given(rows=st.lists(
        st.fixed_dictionaries({"id": st.integers(), "text": st.text(min_size=1)}), max_size=8))
    def test_any_dict_rows_saved_load_back_as_strings(self, rows: list[dict[str, Any]]) -> None:
        with testing.stage(outputs={"t": "csv"}) as run:
            sdk.save_output("t", rows)
        expected = [{"id": str(row["id"]), "text": row["text"]} for row in rows]
        with testing.stage(inputs={"t": run.run_dir / "outputs" / "t.csv"}):
            assert sdk.load_input("t", format="rows") == expected

"""Registering sources over a real project (SQLite log, real npy/npz/csv files, the local
SourceFiles adapter). Every refusal asserts its typed code and that nothing was written: the
log's head did not move and no source appeared."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from quipu.app.bootstrap import Quipu, init_project, open_project
from quipu.core.errors import QuipuError

REASON = "register a dataset in an integration test"


@pytest.fixture
def q(tmp_path: Path) -> Iterator[Quipu]:
    project = init_project(tmp_path / "p", name="p", goal="test sources")
    (project.root / "data").mkdir()
    yield project
    project.close()


def tensor_md(path: Path, arrays: dict[str, tuple[list[int], str]], fmt: str) -> dict[str, Any]:
    return {"schema_version": 1, "description": f"arrays {sorted(arrays)} for the tests",
            "source": {"format": fmt, "size_bytes": path.stat().st_size,
                       "created_at": "2024-05-01T12:00:00Z"},
            "schema": {"kind": "tensor", "primary_array": sorted(arrays)[0],
                       "arrays": {name: {"role": "features", "shape": shape, "dtype": dtype,
                                         "feature_names": {"kind": "sequence"} if shape
                                         else {"kind": "none"}}
                                  for name, (shape, dtype) in arrays.items()}}}


def csv_md(path: Path, columns: list[str], rows: int, delimiter: str = ",") -> dict[str, Any]:
    return {"schema_version": 1, "description": "a small table for the integration tests",
            "source": {"format": "csv", "size_bytes": path.stat().st_size,
                       "created_at": "2024-05-01T12:00:00Z",
                       "format_params": {"delimiter": delimiter}},
            "schema": {"kind": "tabular", "row_count": rows, "columns": columns,
                       "dtypes": {c: "float64" for c in columns}}}


def npy(q: Quipu, rel: str = "data/x.npy") -> Path:
    path = q.root / rel
    np.save(path, np.arange(30, dtype="float32").reshape(10, 3))
    return path


def npz(q: Quipu) -> Path:
    path = q.root / "data" / "d.npz"
    np.savez_compressed(path, x=np.zeros((4, 5), dtype="float64"),
                        y=np.arange(4, dtype="int64"))
    return path


def table(q: Quipu, delimiter: str = ",") -> Path:
    path = q.root / "data" / "t.csv"
    path.write_text(delimiter.join(["a", "b", "c"]) + "\n"
                    + "".join(delimiter.join(["1", "2", "3"]) + "\n" for _ in range(5)))
    return path


def register(q: Quipu, name: str, uri: str, md: dict[str, Any]) -> dict[str, Any]:
    return q.register_source(name, uri, md["description"], REASON, md)


def refused(q: Quipu, name: str, uri: str, md: dict[str, Any], code: str) -> QuipuError:
    head = q.store.head()
    listed = q.manage_sources("list", status=None)["total"]
    with pytest.raises(QuipuError) as caught:
        register(q, name, uri, md)
    assert caught.value.code == code, caught.value
    assert caught.value.hint
    assert q.store.head() == head
    assert q.manage_sources("list")["total"] == listed
    return caught.value


def problem_paths(err: QuipuError) -> set[str]:
    return {d["path"] for d in err.details or []}


# --- good files ------------------------------------------------------------------------------


def test_an_npy_npz_and_csv_register_and_are_listed(q: Quipu) -> None:
    x = npy(q)
    register(q, "x", "data/x.npy", tensor_md(x, {"x": ([10, 3], "float32")}, "npy"))
    d = npz(q)
    register(q, "d", str(d), tensor_md(d, {"x": ([4, 5], "float64"), "y": ([4], "int64")},
                                       "npz"))
    t = table(q, ";")
    register(q, "t", "data/t.csv", csv_md(t, ["a", "b", "c"], 5, ";"))
    listed = q.manage_sources("list")
    assert [s["name"] for s in listed["sources"]] == ["d", "t", "x"]
    got = q.manage_sources("get", name="x")
    assert got["sha256"] == __import__("hashlib").sha256(x.read_bytes()).hexdigest()
    assert got["metadata"]["schema"]["arrays"]["x"]["shape"] == [10, 3]


def test_a_data_root_outside_the_project_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "p"
    init_project(root, name="p", goal="data roots").close()
    outside = tmp_path / "shared"
    outside.mkdir()
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config["data"] = {"roots": [str(outside)]}
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    path = outside / "x.npy"
    np.save(path, np.zeros(3, dtype="float32"))
    with open_project(root) as q:
        result = register(q, "x", str(path), tensor_md(path, {"x": ([3], "float32")}, "npy"))
        assert result["verified"] is True


# --- metadata that lies ------------------------------------------------------------------------


def test_an_npy_whose_shape_dtype_and_size_differ_is_refused_with_each(q: Quipu) -> None:
    x = npy(q)
    md = tensor_md(x, {"x": ([10, 4], "int64")}, "npy")
    md["source"]["size_bytes"] += 1
    err = refused(q, "x", "data/x.npy", md, "metadata_mismatch")
    assert problem_paths(err) == {"schema.arrays.x.shape", "schema.arrays.x.dtype",
                                  "source.size_bytes"}


def test_an_npz_whose_arrays_differ_is_refused(q: Quipu) -> None:
    d = npz(q)
    md = tensor_md(d, {"x": ([4, 5], "float64"), "z": ([4], "int64")}, "npz")
    err = refused(q, "d", "data/d.npz", md, "metadata_mismatch")
    assert problem_paths(err) == {"schema.arrays.z", "schema.arrays"}


def test_a_file_that_is_not_the_declared_format_is_refused(q: Quipu) -> None:
    path = q.root / "data" / "fake.npy"
    path.write_bytes(b"not numpy at all")
    md = tensor_md(path, {"x": ([1], "float32")}, "npy")
    err = refused(q, "fake", "data/fake.npy", md, "metadata_mismatch")
    assert problem_paths(err) == {"source.format"}


def test_a_csv_whose_rows_and_columns_differ_is_refused(q: Quipu) -> None:
    t = table(q)
    err = refused(q, "t", "data/t.csv", csv_md(t, ["a", "b", "d"], 7), "metadata_mismatch")
    assert problem_paths(err) == {"schema.columns", "schema.row_count"}


def test_a_csv_read_with_the_wrong_delimiter_says_so(q: Quipu) -> None:
    t = table(q, ";")
    err = refused(q, "t", "data/t.csv", csv_md(t, ["a", "b", "c"], 5, ","), "metadata_mismatch")
    assert "delimiter" in err.message


def test_a_ragged_csv_is_refused(q: Quipu) -> None:
    t = table(q)
    t.write_text(t.read_text() + "1,2\n")
    err = refused(q, "t", "data/t.csv", csv_md(t, ["a", "b", "c"], 6), "metadata_mismatch")
    assert problem_paths(err) == {"source.format_params.delimiter"}


def test_invalid_metadata_is_refused_before_the_file_is_read(q: Quipu) -> None:
    x = npy(q)
    md = tensor_md(x, {"x": ([10, 3], "float32")}, "npy")
    md["schema_version"] = 2
    del md["source"]["created_at"]
    err = refused(q, "x", "data/x.npy", md, "invalid_metadata")
    assert problem_paths(err) == {"schema_version", "source.created_at"}


# --- where the file is -------------------------------------------------------------------------


def test_a_path_outside_the_project_is_refused(q: Quipu, tmp_path: Path) -> None:
    path = tmp_path / "outside.npy"
    np.save(path, np.zeros(3, dtype="float32"))
    refused(q, "x", str(path), tensor_md(path, {"x": ([3], "float32")}, "npy"),
            "path_outside_roots")
    refused(q, "x", "../outside.npy", tensor_md(path, {"x": ([3], "float32")}, "npy"),
            "path_outside_roots")


def test_a_symlink_escaping_the_project_is_refused(q: Quipu, tmp_path: Path) -> None:
    target = tmp_path / "secret.npy"
    np.save(target, np.zeros(3, dtype="float32"))
    os.symlink(target, q.root / "data" / "link.npy")
    refused(q, "x", "data/link.npy", tensor_md(target, {"x": ([3], "float32")}, "npy"),
            "symlink_escapes_roots")


def test_a_missing_file_and_a_directory_are_refused(q: Quipu) -> None:
    x = npy(q)
    md = tensor_md(x, {"x": ([10, 3], "float32")}, "npy")
    refused(q, "x", "data/nothing.npy", md, "source_file_missing")
    refused(q, "x", "data", md, "source_not_a_file")


def test_a_taken_name_is_refused(q: Quipu) -> None:
    x = npy(q)
    md = tensor_md(x, {"x": ([10, 3], "float32")}, "npy")
    register(q, "x", "data/x.npy", md)
    refused(q, "x", "data/x.npy", md, "source_exists")


# gs:// sources are registered against a real GCS emulator in test_gcs_sources.py.


# --- after registration ------------------------------------------------------------------------


def test_a_file_changed_on_disk_is_refused_naming_both_hashes(q: Quipu) -> None:
    x = npy(q)
    register(q, "x", "data/x.npy", tensor_md(x, {"x": ([10, 3], "float32")}, "npy"))
    before = q.manage_sources("get", name="x")["sha256"]
    np.save(x, np.ones((10, 3), dtype="float32"))
    head = q.store.head()
    with pytest.raises(QuipuError) as caught:
        q.manage_sources("verify", name="x")
    assert caught.value.code == "source_changed"
    assert before in caught.value.message
    with pytest.raises(QuipuError) as caught:
        q.manage_sources("update", name="x", reason=REASON,
                         metadata=tensor_md(x, {"x": ([10, 3], "float32")}, "npy"))
    assert caught.value.code == "source_changed"
    assert q.store.head() == head


def test_update_retire_and_delete(q: Quipu) -> None:
    x = npy(q)
    md = tensor_md(x, {"x": ([10, 3], "float32")}, "npy")
    register(q, "x", "data/x.npy", md)
    better = copy.deepcopy(md)
    better["description"] = "ten rows of three float features, counted from zero"
    q.manage_sources("update", name="x", metadata=better, reason=REASON)
    assert q.manage_sources("get", name="x")["description"] == better["description"]
    q.manage_sources("retire", name="x", reason=REASON)
    assert q.manage_sources("list")["sources"][0]["status"] == "retired"
    assert q.manage_sources("list", status="active")["total"] == 0
    q.manage_sources("delete", name="x", reason=REASON)
    assert q.manage_sources("list")["total"] == 0
    assert q.manage_sources("get", name="x")["status"] == "deleted"
    with pytest.raises(QuipuError) as caught:
        q.manage_sources("get", name="nope")
    assert caught.value.code == "unknown_source"


def test_the_view_refolds_to_the_same_rows(q: Quipu) -> None:
    x = npy(q)
    register(q, "x", "data/x.npy", tensor_md(x, {"x": ([10, 3], "float32")}, "npy"))
    q.manage_sources("retire", name="x", reason=REASON)
    before = q.manage_sources("get", name="x")
    q.views.rebuild()
    assert q.manage_sources("get", name="x") == before


# --- answer sizes ------------------------------------------------------------------------------


def test_answers_stay_bounded(q: Quipu) -> None:
    """A list of 100 sources (the most one answer holds) and a get of a source with 50,000
    feature names stay small."""
    path = q.root / "data" / "wide.npy"
    np.save(path, np.zeros((2, 50_000), dtype="uint8"))
    md = tensor_md(path, {"x": ([2, 50_000], "uint8")}, "npy")
    md["schema"]["arrays"]["x"]["feature_names"] = {
        "kind": "list", "names": [f"feature_{i}" for i in range(50_000)]}
    md["description"] = "w" * 4000
    register(q, "wide", "data/wide.npy", md)
    got = q.manage_sources("get", name="wide")
    size = len(json.dumps(got))
    assert got["metadata_elided"] is True
    print(f"get of a 50,000-feature source: {size} characters")
    assert size < 30_000, size
    small = tensor_md(path, {"x": ([2, 50_000], "uint8")}, "npy")
    small["description"] = "d" * 4000
    for i in range(120):
        register(q, f"s{i:03}", "data/wide.npy", small)
    listed = q.manage_sources("list", limit=10_000)
    size = len(json.dumps(listed))
    assert len(listed["sources"]) == 100 and listed["has_more"]
    print(f"list of 100 sources: {size} characters")
    assert size < 50_000, size


# --- the command line --------------------------------------------------------------------------


def test_the_cli_registers_lists_and_refuses_with_every_problem(q: Quipu) -> None:
    from cli_runner import quipu

    x = npy(q)
    md = tensor_md(x, {"x": ([10, 3], "float32")}, "npy")
    (q.root / "meta.yaml").write_text(yaml.safe_dump(md))
    q.close()
    quipu("source", "register", "x", "data/x.npy", "--metadata", "meta.yaml", "--reason",
          REASON, cwd=q.root)
    listed = json.loads(quipu("source", "list", "--json", cwd=q.root).stdout)
    assert [s["name"] for s in listed["sources"]] == ["x"]
    md["schema"]["arrays"]["x"]["shape"] = [3]
    md["source"]["size_bytes"] = 1
    bad = quipu("source", "register", "y", "data/x.npy", "--metadata", json.dumps(md),
                "--reason", REASON, "--json", cwd=q.root, check=False)
    assert bad.returncode == 2
    error = json.loads(bad.stdout)
    assert error["code"] == "metadata_mismatch"
    assert {d["path"] for d in error["details"]} == {"schema.arrays.x.shape",
                                                     "source.size_bytes"}
    got = json.loads(quipu("source", "get", "x", cwd=q.root).stdout)
    assert got["format"] == "npy"


def test_source_commands_appear_in_the_audit_log(q: Quipu) -> None:
    x = npy(q)
    register(q, "x", "data/x.npy", tensor_md(x, {"x": ([10, 3], "float32")}, "npy"))
    q.manage_sources("retire", name="x", reason=REASON)
    summaries = [e["summary"] for e in q.get_audit_log(limit=2)["entries"]]
    assert summaries == ["retired source x", "registered source x (npy, 248 bytes) from "
                         "data/x.npy"]

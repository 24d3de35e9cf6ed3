"""Pipelines consume registered sources: ``dataset: NAME`` (optionally pinned
``NAME@sha256:...``) and ``inputs_override`` by source name, over a real project whose stage
really reads the file. The input's declared schema is checked against the source's metadata in
validate_config and dry runs; a consumed source cannot be deleted (retiring is allowed); a
refusal writes nothing."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from toy_pipeline import SPEC
from waiting import wait_until

from quipu.adapters.sources.local import RACY_NS, LocalSourceFiles
from quipu.app.bootstrap import Quipu, init_project
from quipu.core.errors import QuipuError
from quipu.core.log import decode
from quipu.core.sources.events import SourceConsumed

WHY = "train on the registered features source"

PIPELINE = """\
stages:
  - name: train
    inputs:
      features: {{type: npy, dataset: {dataset}, schema: {{shape: [null, 4], dtype: float64}}}}
    outputs:
      model: {{type: npy, schema: {{shape: [4], dtype: float64}}}}
"""

TRAIN = """\
from quipu import sdk


def main() -> None:
    features = sdk.load_input("features")
    sdk.log_metric("accuracy", 0.7 + float(features.sum()) * 0, step=0)
    sdk.save_output("model", features.mean(axis=0))
    sdk.finish()


if __name__ == "__main__":
    main()
"""


def metadata(path: Path, shape: list[int]) -> dict[str, Any]:
    return {"schema_version": 1, "description": "ten rows of four float features",
            "source": {"format": "npy", "size_bytes": path.stat().st_size,
                       "created_at": "2024-05-01T12:00:00Z"},
            "schema": {"kind": "tensor", "primary_array": "x",
                       "arrays": {"x": {"role": "features", "shape": shape,
                                        "dtype": "float64",
                                        "feature_names": {"kind": "sequence"}}}}}


@pytest.fixture
def q(tmp_path: Path) -> Iterator[Quipu]:
    project = init_project(tmp_path / "p", name="p", goal="train on a registered source")
    (project.root / "data").mkdir()
    features = project.root / "data" / "features.npy"
    np.save(features, np.arange(40, dtype="float64").reshape(10, 4))
    project.register_source("features", "data/features.npy", metadata(features, [10, 4])[
        "description"], WHY, metadata(features, [10, 4]))
    wide = project.root / "data" / "wide.npy"
    np.save(wide, np.zeros((10, 3), dtype="float64"))
    project.register_source("wide", "data/wide.npy", "ten rows of four float features", WHY,
                            metadata(wide, [10, 3]))
    project.create_workspace("ws", "train on registered data", WHY)
    project.mount("ws", "w1", WHY)
    yield project
    project.close()


def pipeline(q: Quipu, dataset: str) -> None:
    slot = q.slots.path("w1")
    (slot / "modules").mkdir(exist_ok=True)
    (slot / "pipeline.yaml").write_text(PIPELINE.format(dataset=dataset))
    (slot / "modules" / "train.py").write_text(TRAIN)


def refused(q: Quipu, code: str, **kwargs: Any) -> QuipuError:
    head = q.store.head()
    with pytest.raises(QuipuError) as caught:
        q.run("w1", reason=WHY, results_spec=SPEC, **kwargs)
    assert caught.value.code == code, caught.value
    assert q.store.head() == head
    return caught.value


def test_a_run_reads_a_registered_source_and_the_source_cannot_then_be_deleted(
        q: Quipu) -> None:
    pipeline(q, "features")
    assert q.validate_config("w1")["valid"] is True
    q.start_workers()
    started = q.run("w1", reason=WHY, results_spec=SPEC, wait=True, wait_timeout=120)
    run_id = started["queued"][0]["stage_run_id"]
    assert started["stage_runs"][0]["state"] == "succeeded"
    provenance = q.inspect_run(run_id, include=["provenance"])
    text = str(provenance)
    assert "features" in text and q.manage_sources("get", name="features")["sha256"] in text
    assert q.manage_sources("list")["sources"][0]["runs"] == 1
    [consumed] = [r.event for r in map(decode, q.store.read())
                  if isinstance(r.event, SourceConsumed)]
    assert (consumed.run_id, consumed.input) == (run_id, "features")
    # The workers' followers (post-run review, patterns) may still be appending about the
    # run; stopped, only the refused command could move the head.
    q.stop_workers()
    head = q.store.head()
    with pytest.raises(QuipuError) as caught:
        q.manage_sources("delete", name="features", reason=WHY)
    assert caught.value.code == "source_in_use"
    assert run_id in caught.value.message
    assert q.store.head() == head
    q.manage_sources("retire", name="features", reason=WHY)
    promote_the_model(q, run_id)


def model_metadata(shape: list[int]) -> dict[str, Any]:
    return {"schema_version": 1, "description": "the mean of each feature, learned by train",
            "source": {"format": "npy", "size_bytes": 160,
                       "created_at": "2024-05-01T12:00:00Z"},
            "schema": {"kind": "tensor", "primary_array": "model",
                       "arrays": {"model": {"role": "weights", "shape": shape,
                                            "dtype": "float64",
                                            "feature_names": {"kind": "sequence"}}}}}


def promote_the_model(q: Quipu, run_id: str) -> None:
    """Promoting needs a succeeded run and an output that exists, and metadata that tells the
    truth about the output's bytes; it records the run, its version and its inputs."""
    head = q.store.head()
    for kwargs, code in (({"output_name": "nothing"}, "unknown_output"),
                         ({"metadata": model_metadata([5])}, "metadata_mismatch"),
                         ({"run_id": "stage-000000000000"}, "unknown_run"),
                         ({"source_name": "features"}, "source_exists")):
        args: dict[str, Any] = {"run_id": run_id, "output_name": "model",
                                "source_name": "model", "reason": WHY,
                                "metadata": model_metadata([4]), **kwargs}
        with pytest.raises(QuipuError) as caught:
            q.promote_artifact(**args)
        assert caught.value.code == code, caught.value
    assert q.store.head() == head
    made = q.promote_artifact(run_id, "model", "model", WHY, model_metadata([4]))
    got = q.manage_sources("get", name="model")
    assert got["sha256"] == made["sha256"] and got["path"] is None
    lineage = got["promoted_from"]
    assert lineage["run_id"] == run_id and lineage["version"] == "v1"
    features = q.manage_sources("get", name="features")["sha256"]
    assert lineage["inputs"]["features"] == {"sha256": features, "source": "features"}
    dry = q.run("w1", reason=WHY, results_spec=None, dry_run=True,
                inputs_override={"features": "model"})
    assert dry["inputs"]["train"]["features"]["kind"] == "run"
    assert dry["inputs"]["train"]["features"]["run_id"] == run_id
    source_lineage(q, run_id)


def source_lineage(q: Quipu, run_id: str) -> None:
    """manage_sources(action='lineage'): the runs that used a source (a retired one too), and
    for a promoted artifact the run, version and source it came from."""
    used = q.manage_sources("lineage", name="features")
    assert [r["run_id"] for r in used["used_by"]] == [run_id]
    assert used["used_by_count"] == 1 and used["status"] == "retired"
    assert used["promoted_from"] is None and used["came_from"] is None
    origin = q.manage_sources("lineage", name="model")
    assert origin["promoted_from"] == f"{run_id}.model" and origin["used_by"] == []
    ids = {n["id"] for n in origin["came_from"]["nodes"]}
    assert {f"run:{run_id}", "source:features", "version:ws@v1"} <= ids
    # the edge names the input that read the source (SourceConsumed.input)
    assert ["source:features", "consumed", f"run:{run_id}", "features"] in \
        origin["came_from"]["edges"]
    head = q.store.head()
    with pytest.raises(QuipuError) as caught:
        q.manage_sources("lineage", name="featurse")
    assert caught.value.code == "unknown_source" and "'features'" in caught.value.hint
    assert q.store.head() == head


def test_a_declared_schema_is_checked_against_the_source_metadata(q: Quipu) -> None:
    pipeline(q, "wide")
    report = q.validate_config("w1")
    assert report["valid"] is False
    assert [e["code"] for e in report["errors"]] == ["dataset_schema_mismatch"]
    dry = q.run("w1", reason=WHY, results_spec=None, dry_run=True)
    assert [e["code"] for e in dry["errors"]] == ["dataset_schema_mismatch"]
    pipeline(q, "nothing-registered")
    assert [e["code"] for e in q.validate_config("w1")["errors"]] == ["unknown_dataset"]


def test_a_pinned_source_must_hold_the_pinned_content(q: Quipu) -> None:
    digest = q.manage_sources("get", name="features")["sha256"]
    pipeline(q, f"features@sha256:{digest}")
    assert q.run("w1", reason=WHY, results_spec=SPEC, dry_run=True)["valid"] is True
    pipeline(q, "features@sha256:" + "0" * 64)
    err = refused(q, "source_pin_mismatch")
    assert digest in err.message


def test_a_changed_file_is_refused_naming_both_hashes(q: Quipu) -> None:
    pipeline(q, "features")
    q.save_version("w1", "the pipeline that reads the features source")
    digest = q.manage_sources("get", name="features")["sha256"]
    np.save(q.root / "data" / "features.npy", np.ones((10, 4), dtype="float64"))
    err = refused(q, "source_changed")
    assert digest in err.message


def test_an_unchanged_file_is_not_hashed_again_and_a_rewrite_that_keeps_size_and_mtime_is_refused(
        q: Quipu) -> None:
    """The stat cache spares hashing a source's file on every use, but any write changes its
    ctime (os.utime restores mtime, never ctime), so a rewritten file is hashed again and
    refused naming both hashes."""
    pipeline(q, "features")
    q.save_version("w1", "the pipeline that reads the features source")
    path = q.root / "data" / "features.npy"
    files = q.sources.files
    assert isinstance(files, LocalSourceFiles)
    # Only a file whose ctime is older than the racy window is cached: wait it out.
    wait_until(lambda: time.time_ns() - path.stat().st_ctime_ns > RACY_NS + 10**8,
               what="the source file is older than the racy window", timeout=30)
    q.run("w1", reason=WHY, results_spec=None, dry_run=True)  # hashed once more, cached
    hashed = files.hashed
    for _ in range(3):
        assert q.run("w1", reason=WHY, results_spec=None, dry_run=True)["valid"] is True
    assert files.hashed == hashed  # used three times, read none

    digest = q.manage_sources("get", name="features")["sha256"]
    before = path.stat()
    other = np.arange(40, dtype="float64").reshape(10, 4)[::-1].copy()
    np.save(path, other)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    err = refused(q, "source_changed")
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in err.message and now in err.message
    assert files.hashed == hashed + 1


def test_a_retired_source_cannot_be_consumed(q: Quipu) -> None:
    pipeline(q, "features")
    q.save_version("w1", "the pipeline that reads the features source")
    q.manage_sources("retire", name="features", reason=WHY)
    refused(q, "source_retired")


def test_inputs_override_accepts_a_source_name(q: Quipu) -> None:
    pipeline(q, "features")
    digest = q.manage_sources("get", name="features")["sha256"]
    dry = q.run("w1", reason=WHY, results_spec=None, dry_run=True,
                inputs_override={"features": f"features@sha256:{digest}"})
    assert dry["inputs"]["train"]["features"]["source"] == "features"
    assert dry["inputs"]["train"]["features"]["via"] == "override"
    refused(q, "unknown_source", inputs_override={"features": "no-such-source"})


def test_a_file_changed_between_run_and_launch_is_never_staged(q: Quipu) -> None:
    from waiting import wait_until

    pipeline(q, "features")
    started = q.run("w1", reason=WHY, results_spec=SPEC)
    run_id = started["queued"][0]["stage_run_id"]
    np.save(q.root / "data" / "features.npy", np.ones((10, 4), dtype="float64"))
    q.start_workers()
    wait_until(lambda: q.run_states([run_id])[0], timeout=120, interval=0.2,
               what=f"{run_id} ended")
    (state,) = q.run_states([run_id])[1]
    assert state["state"] == "failed"
    digest = q.manage_sources("get", name="features")["sha256"]
    failures = [decode(r).event for r in q.store.read(limit=10_000, types=["RunLaunchFailed"])]
    assert len(failures) == 1
    assert digest in str(failures[0]) and "changed since the run was requested" in str(
        failures[0])
    with pytest.raises(QuipuError) as caught:
        q.promote_artifact(run_id, "model", "model", WHY, model_metadata([4]))
    assert caught.value.code == "run_not_succeeded"


def test_a_relative_path_override_is_still_refused_as_an_override(q: Quipu) -> None:
    pipeline(q, "features")
    err = refused(q, "invalid_override", inputs_override={"features": "data/features.npy"})
    assert "registered source" in err.hint

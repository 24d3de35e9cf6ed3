"""``gs://`` sources against a real fake-gcs-server process: registering reads the object's
metadata (no download) and records its fingerprint; a run that reads the source stages the
object once into the blob store and the real executor hands it to the stage; an object
overwritten after registration is refused naming both fingerprints; verify reads the object's
metadata again and checks the staged blob. Every refusal asserts its code and that the log's
head did not move."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from gcs_emulator import Emulator, FaultProxy, corrupt_object
from test_source_runs import TRAIN  # the stage reading a dataset input
from toy_pipeline import SPEC

from quipu.app.bootstrap import Quipu, init_project, open_project
from quipu.core.errors import QuipuError
from quipu.core.log import decode
from quipu.core.sources.events import SourceConsumed, SourceStaged

WHY = "train on the features kept in a bucket"
BUCKET = "data-bucket"
OBJECT = "sets/features.npy"
URI = f"gs://{BUCKET}/{OBJECT}"

PIPELINE = """\
stages:
  - name: train
    inputs:
      features: {type: npy, dataset: features, schema: {shape: [null, 4], dtype: float64}}
    outputs:
      model: {type: npy, schema: {shape: [4], dtype: float64}}
"""

def npy_bytes(array: np.ndarray[Any, Any]) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


FEATURES = np.arange(40, dtype="float64").reshape(10, 4)
DATA = npy_bytes(FEATURES)


def metadata(size: int = len(DATA)) -> dict[str, Any]:
    return {"schema_version": 1, "description": "ten rows of four float features in GCS",
            "source": {"format": "npy", "size_bytes": size,
                       "created_at": "2024-05-01T12:00:00Z"},
            "schema": {"kind": "tensor", "primary_array": "x",
                       "arrays": {"x": {"role": "features", "shape": [10, 4],
                                        "dtype": "float64",
                                        "feature_names": {"kind": "sequence"}}}}}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = Emulator(tmp_path_factory.mktemp("gcs")).start()
    running.create_bucket(BUCKET)
    yield running
    running.stop()


@pytest.fixture
def proxy(emulator: Emulator) -> Iterator[FaultProxy]:
    """Every request of the project goes through it: the tests count what was sent."""
    running = FaultProxy(lambda: emulator.url).start()
    yield running
    running.stop()


@pytest.fixture
def q(tmp_path: Path, emulator: Emulator, proxy: FaultProxy) -> Iterator[Quipu]:
    """A project with local blobs that reads gs:// sources through ``blobs.endpoint``, and a
    fresh copy of the features object."""
    put(emulator, DATA)
    init_project(tmp_path / "p", name="p", goal="train on data kept in GCS").close()
    config = tmp_path / "p" / "quipu.yaml"
    data = yaml.safe_load(config.read_text())
    data["blobs"] = {"url": "local", "endpoint": proxy.url, "retry_seconds": 1}
    config.write_text(yaml.safe_dump(data))
    project = open_project(tmp_path / "p")
    yield project
    project.close()


def put(emulator: Emulator, data: bytes, name: str = OBJECT) -> None:
    """Write the object through the emulator's own API, bypassing Quipu."""
    corrupt_object(emulator.url, BUCKET, name, data)


def register(q: Quipu, uri: str = URI, md: dict[str, Any] | None = None) -> dict[str, Any]:
    md = md or metadata()
    return q.register_source("features", uri, md["description"], WHY, md)


def refused_register(q: Quipu, code: str, uri: str = URI,
                     md: dict[str, Any] | None = None) -> QuipuError:
    head = q.store.head()
    with pytest.raises(QuipuError) as caught:
        register(q, uri, md)
    assert caught.value.code == code, caught.value
    assert q.store.head() == head
    assert q.manage_sources("list")["total"] == 0
    return caught.value


def downloads(proxy: FaultProxy) -> int:
    return sum(1 for _, path in proxy.seen if "alt=media" in path)


def pipeline(q: Quipu) -> None:
    q.create_workspace("ws", "train on data kept in GCS", WHY)
    q.mount("ws", "w1", WHY)
    slot = q.slots.path("w1")
    (slot / "modules").mkdir(exist_ok=True)
    (slot / "pipeline.yaml").write_text(PIPELINE)
    (slot / "modules" / "train.py").write_text(TRAIN)


def run(q: Quipu, **kwargs: Any) -> str:
    started = q.run("w1", reason=WHY, results_spec=SPEC, wait=True, wait_timeout=120, **kwargs)
    assert started["stage_runs"][0]["state"] == "succeeded", started
    q.finalize_run(started["pipeline_run_id"], {
        "primary_metric": "accuracy", "direction": "maximize", "value": 0.7,
        "dataset_split": "val", "ml_outcome": "partial",
        "notes": "the gs:// source tests read this verdict"})
    return str(started["queued"][0]["stage_run_id"])


def model_of(q: Quipu, run_id: str) -> np.ndarray[Any, Any]:
    run = q.runs.load_run(run_id)
    assert run.exit is not None
    return np.load(io.BytesIO(q.blobs.get_bytes(run.exit.outputs["model"]["sha256"])))


def events(q: Quipu, kind: type) -> list[Any]:
    return [r.event for r in map(decode, q.store.read()) if isinstance(r.event, kind)]


# --- registering -------------------------------------------------------------------------------


def test_registering_reads_the_objects_metadata_and_records_its_fingerprint(
        q: Quipu, proxy: FaultProxy) -> None:
    result = register(q)
    assert result["verified"] is True and result["sha256"] is None
    facts = result["object"]
    assert facts["size"] == len(DATA) and facts["generation"]
    assert facts["crc32c"] and facts["md5"]
    assert downloads(proxy) == 0, "registering downloads nothing"
    got = q.manage_sources("get", name="features")
    assert got["object"] == facts and got["uri"] == URI and got["verified"] is True


def test_an_object_that_is_not_there_is_refused(q: Quipu) -> None:
    err = refused_register(q, "source_object_missing", f"gs://{BUCKET}/sets/nothing.npy")
    assert "gs://data-bucket/sets/nothing.npy" in err.message


def test_a_bucket_that_does_not_exist_is_refused(q: Quipu) -> None:
    err = refused_register(q, "gcs_bucket_not_found", "gs://no-such-bucket/x.npy")
    assert "no-such-bucket" in err.message and err.hint


def test_a_size_that_is_not_the_objects_is_refused(q: Quipu) -> None:
    err = refused_register(q, "metadata_mismatch", md=metadata(len(DATA) + 1))
    assert "source.size_bytes" in err.message and str(len(DATA)) in err.message


def test_a_bucket_that_denies_access_is_refused(q: Quipu, proxy: FaultProxy) -> None:
    proxy.rules.append(lambda method, path: 403 if BUCKET in path else None)
    err = refused_register(q, "gcs_access_denied")
    assert "roles/storage.objectViewer" in err.hint


# --- using -------------------------------------------------------------------------------------


def test_a_run_reads_the_object_staged_once_into_the_blob_store(
        q: Quipu, proxy: FaultProxy) -> None:
    register(q)
    pipeline(q)
    dry = q.run("w1", reason=WHY, results_spec=None, dry_run=True)
    assert dry["valid"] is True, dry
    given = dry["inputs"]["train"]["features"]
    assert (given["kind"], given["source"], given["sha256"]) == ("blob", "features", None)
    assert q.validate_config("w1")["valid"] is True
    assert downloads(proxy) == 0, "a preview downloads nothing"

    q.start_workers()
    first = run(q)
    np.testing.assert_array_equal(model_of(q, first), FEATURES.mean(axis=0))
    assert downloads(proxy) == 1
    digest = hashlib.sha256(DATA).hexdigest()
    [staged] = events(q, SourceStaged)
    assert (staged.sha256, staged.size_bytes, staged.uri) == (digest, len(DATA), URI)
    assert q.manage_sources("get", name="features")["sha256"] == digest
    assert q.blobs.get_bytes(digest) == DATA
    assert [e.sha256 for e in events(q, SourceConsumed)] == [digest]

    # a second use asks for the metadata only, and stages nothing again
    second = run(q, inputs_override={"features": "features"})
    assert downloads(proxy) == 1
    assert len(events(q, SourceStaged)) == 1
    assert [e.sha256 for e in events(q, SourceConsumed)] == [digest, digest]
    # the content hash is what lineage and compare see
    assert digest in str(q.inspect_run(second, include=["provenance"]))
    graph = q.get_lineage("source:features", direction="downstream", depth=2)
    edges = [e[:3] for e in graph["edges"]]
    assert ["source:features", "content", f"output:{digest}"] in edges
    assert [f"output:{digest}", "consumed", f"run:{first}"] in edges
    assert q.compare(first, second)["inputs"]["changed"] == []
    # a pin on the staged content holds
    slot = q.slots.path("w1")
    (slot / "pipeline.yaml").write_text(PIPELINE.replace("features,", f"features@sha256:{digest},"))
    assert q.run("w1", reason=WHY, results_spec=SPEC, dry_run=True)["valid"] is True


def test_an_object_overwritten_after_registration_is_refused_naming_both(
        q: Quipu, emulator: Emulator) -> None:
    facts = register(q)["object"]
    pipeline(q)
    put(emulator, npy_bytes(FEATURES * 2))
    head = q.store.head()
    for dry in (False, True):
        with pytest.raises(QuipuError) as caught:
            q.run("w1", reason=WHY, results_spec=None if dry else SPEC, dry_run=dry)
        assert caught.value.code == "source_changed"
        assert f"generation {facts['generation']}" in caught.value.message
        assert "now generation" in caught.value.message
    assert q.store.head() == head
    with pytest.raises(QuipuError) as caught:
        q.manage_sources("verify", name="features")
    assert caught.value.code == "source_changed"
    # the registered content put back (a new generation, the same bytes) is accepted
    put(emulator, DATA)
    q.start_workers()
    np.testing.assert_array_equal(model_of(q, run(q)), FEATURES.mean(axis=0))


def test_an_object_overwritten_after_it_was_staged_is_refused(
        q: Quipu, emulator: Emulator, proxy: FaultProxy) -> None:
    register(q)
    pipeline(q)
    q.start_workers()
    run(q)
    put(emulator, npy_bytes(FEATURES + 1))
    head = q.store.head()
    with pytest.raises(QuipuError) as caught:
        q.run("w1", reason=WHY, results_spec=SPEC)
    assert caught.value.code == "source_changed"
    assert q.store.head() == head
    assert downloads(proxy) == 1


def test_verify_checks_the_objects_fingerprint_and_the_staged_blob(q: Quipu) -> None:
    register(q)
    before = q.manage_sources("verify", name="features")
    assert before["verified"] is True and before["unchanged"] is True
    assert before["sha256"] is None and "first reads it" in before["note"]
    pipeline(q)
    q.start_workers()
    run(q)
    after = q.manage_sources("verify", name="features")
    assert after["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert after["note"] is None
    # the staged blob damaged in the store is found by verify
    path = q.root / ".quipu" / "blobs" / after["sha256"][:2] / after["sha256"][2:]
    path.chmod(0o644)
    path.write_bytes(b"damaged")
    with pytest.raises(QuipuError) as caught:
        q.manage_sources("verify", name="features")
    assert caught.value.code == "blob_corrupt"


def test_no_credentials_is_refused_with_what_to_set(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without blobs.endpoint or STORAGE_EMULATOR_HOST the client looks for real credentials:
    none found is a typed refusal saying what to set."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    project = init_project(tmp_path / "p", name="p", goal="no credentials")
    try:
        refused_register(project, "gcs_credentials_missing")
    finally:
        project.close()


def test_the_cli_registers_and_verifies_a_gs_source(q: Quipu) -> None:
    from cli_runner import quipu

    (q.root / "meta.json").write_text(json.dumps(metadata()))
    q.close()
    quipu("source", "register", "features", URI, "--metadata", "meta.json", "--reason", WHY,
          cwd=q.root)
    verified = json.loads(
        quipu("source", "verify", "features", "--json", cwd=q.root).stdout)
    assert verified["verified"] is True and verified["object"]["size"] == len(DATA)
    listed = quipu("source", "list", cwd=q.root).stdout
    assert "not staged" in listed and URI in listed
    missing = quipu("source", "register", "other", f"gs://{BUCKET}/nothing.npy", "--metadata",
                    "meta.json", "--reason", WHY, "--json", cwd=q.root, check=False)
    assert missing.returncode != 0
    assert json.loads(missing.stdout)["code"] == "source_object_missing"


def test_a_download_cut_off_refuses_the_run_and_leaves_nothing(
        q: Quipu, proxy: FaultProxy) -> None:
    register(q)
    pipeline(q)
    proxy.rules.append(lambda method, path: "cut" if "alt=media" in path else None)
    head = q.store.head()
    with pytest.raises(QuipuError) as caught:
        q.run("w1", reason=WHY, results_spec=SPEC)
    assert caught.value.code == "gcs_unreachable", caught.value
    assert URI in caught.value.message
    assert q.store.head() == head
    assert not any((q.root / ".quipu" / "staging").iterdir())
    assert not q.blobs.exists(hashlib.sha256(DATA).hexdigest())


def test_an_object_replaced_while_it_is_staged_is_refused(q: Quipu, emulator: Emulator) -> None:
    """The adapter downloads exactly the generation it was asked for."""
    from quipu.adapters.sources.gcs import GCSSourceObjects

    objects = GCSSourceObjects(q.blobs, q.root / ".quipu" / "staging", endpoint=emulator.url,
                               retry_seconds=1)
    seen = objects.stat(URI)
    put(emulator, npy_bytes(FEATURES - 1))
    with pytest.raises(QuipuError) as caught:
        objects.stage(seen)
    assert caught.value.code == "source_changed"
    assert f"generation {seen.generation}" in caught.value.message
    assert not q.blobs.exists(hashlib.sha256(DATA).hexdigest())
    assert not any((q.root / ".quipu" / "staging").iterdir())


def test_with_blobs_in_a_bucket_the_staged_object_is_stored_there(
        tmp_path: Path, emulator: Emulator) -> None:
    """A project whose blob store is GCS stages the source's object into its own bucket; the
    cache under .quipu/blobcache is the only local copy, linked into the run."""
    put(emulator, DATA)
    emulator.create_bucket("blobs-bucket")
    init_project(tmp_path / "p", name="p", goal="blobs and data in GCS").close()
    config = tmp_path / "p" / "quipu.yaml"
    data = yaml.safe_load(config.read_text())
    data["blobs"] = {"url": "gs://blobs-bucket/p", "endpoint": emulator.url,
                     "retry_seconds": 1}
    config.write_text(yaml.safe_dump(data))
    q = open_project(tmp_path / "p")
    try:
        register(q)
        pipeline(q)
        q.start_workers()
        first = run(q)
        np.testing.assert_array_equal(model_of(q, first), FEATURES.mean(axis=0))
        digest = hashlib.sha256(DATA).hexdigest()
        with urllib.request.urlopen(
                f"{emulator.url}/storage/v1/b/blobs-bucket/o/p%2Fsha256%2F{digest}") as answer:
            assert json.load(answer)["size"] == str(len(DATA))
        assert q.manage_sources("verify", name="features")["sha256"] == digest
    finally:
        q.close()


def test_two_inputs_reading_one_object_download_it_once(q: Quipu, proxy: FaultProxy) -> None:
    register(q)
    pipeline(q)
    slot = q.slots.path("w1")
    again = "      again: {type: npy, dataset: features, schema: null}\n"
    (slot / "pipeline.yaml").write_text(PIPELINE.replace("      features:",
                                                         again + "      features:"))
    q.start_workers()
    np.testing.assert_array_equal(model_of(q, run(q)), FEATURES.mean(axis=0))
    assert downloads(proxy) == 1
    assert len(events(q, SourceStaged)) == 1
    assert len(events(q, SourceConsumed)) == 2

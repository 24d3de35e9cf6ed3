"""A project whose blobs live in GCS (``blobs.url: gs://...``, a real fake-gcs-server process):
the pipeline runs as with local blobs, every blob is an object in the bucket, and the cache
under .quipu/blobcache is the only local copy of an output."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from gcs_emulator import Emulator, FaultProxy
from test_executor_helpers import (
    THREE_STAGES,
    drive,
    ended,
    executor,
    exit_of,
    run_dir_of,
    start,
    write_slot,
)

from quipu.app.bootstrap import Quipu, init_project, open_project
from quipu.app.config import BLOBS_URL_ENV, BlobsConfig, blobs_url, load_config
from quipu.core.errors import InvalidInput
from quipu.core.runs.lifecycle import State

MAKE = """\
    import numpy as np
    from quipu import sdk

    sdk.save_output("numbers", np.arange(300_000, dtype=np.int64))
    """

WAITING_MAKE = """\
    import os, time
    from pathlib import Path

    go = Path(os.environ["QUIPU_RUN_DIR"]) / ".quipu" / "go"
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:  # the test says when to end
        time.sleep(0.05)
    """ + MAKE

DOUBLE = """\
    from quipu import sdk

    sdk.save_output("doubled", sdk.load_input("numbers") * 2)
    table = sdk.get_output_path("table")
    (table / "a.txt").write_text("alpha")
    sdk.save_output("table", table)
    """

REPORT = """\
    from quipu import sdk

    sdk.save_output("summary", {"total": int(sdk.load_input("doubled").sum())})
    """


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = Emulator(tmp_path_factory.mktemp("gcs")).start()
    yield running
    running.stop()


def gcs_project(tmp_path: Path, emulator: Emulator,
                endpoint: str | None = None) -> tuple[Quipu, str]:
    """A project created with local blobs, then switched to a fresh bucket before any blob."""
    bucket = f"q-{uuid.uuid4().hex[:10]}"
    emulator.create_bucket(bucket)
    init_project(tmp_path / "proj", name="proj", goal="run with blobs in GCS").close()
    config = tmp_path / "proj" / "quipu.yaml"
    data = yaml.safe_load(config.read_text())
    data["blobs"] = {"url": f"gs://{bucket}/proj", "endpoint": endpoint or emulator.url,
                     "retry_seconds": 1}
    config.write_text(yaml.safe_dump(data))
    return open_project(tmp_path / "proj"), bucket


def objects(emulator: Emulator, bucket: str) -> list[str]:
    with urllib.request.urlopen(f"{emulator.url}/storage/v1/b/{bucket}/o") as answer:
        return sorted(o["name"] for o in json.load(answer).get("items", []))


def test_a_pipeline_runs_with_its_blobs_in_a_bucket(tmp_path: Path, emulator: Emulator) -> None:
    q, bucket = gcs_project(tmp_path, emulator)
    q.create_workspace("ws", "exercise the executor", "a workspace for the GCS blob tests")
    q.mount("ws", "w1", "edit the pipeline for the GCS blob tests")
    write_slot(q, THREE_STAGES, {"make": MAKE, "double": DOUBLE, "report": REPORT})
    ids = start(q)
    drive(executor(q), ended(q, *ids.values()))
    runs = {stage: q.runs.load_run(run_id) for stage, run_id in ids.items()}

    assert {s: r.current for s, r in runs.items()} == dict.fromkeys(ids, State.SUCCEEDED)
    made = exit_of(runs["make"]).outputs["numbers"]
    assert f"proj/sha256/{made['sha256']}" in objects(emulator, bucket)
    assert not any((q.root / ".quipu" / "blobs").rglob("??/*")), "nothing in the local store"
    # the output, the cache and the next stage's input are one file
    cached = q.root / ".quipu" / "blobcache" / made["sha256"][:2] / made["sha256"][2:]
    produced = run_dir_of(runs["make"]) / made["path"]
    consumed = run_dir_of(runs["double"]) / "inputs" / produced.name
    assert os.path.samestat(cached.stat(), produced.stat())
    assert os.path.samestat(cached.stat(), consumed.stat())
    q.close()


def test_an_exit_is_recorded_only_once_the_bucket_took_the_outputs(tmp_path: Path) -> None:
    """While every upload fails (503s), the finished stage stays running in the log with no
    exit; once the bucket answers again, the executor stores the outputs and records the exit."""
    emulator = Emulator(tmp_path / "gcs")
    proxy = FaultProxy(lambda: emulator.url).start()
    emulator.external_url = proxy.url
    emulator.start()
    try:
        q, bucket = gcs_project(tmp_path, emulator, endpoint=proxy.url)
        q.create_workspace("ws", "exercise the executor", "a workspace for the GCS blob tests")
        q.mount("ws", "w1", "edit the pipeline for the GCS blob tests")
        write_slot(q, THREE_STAGES, {"make": WAITING_MAKE, "double": DOUBLE, "report": REPORT})
        ids = start(q, stages=["make"])
        ex = executor(q)
        drive(ex, lambda: q.runs.load_run(ids["make"]).current == State.RUNNING)
        before = objects(emulator, bucket)
        proxy.rules.append(lambda method, path: 503 if method in ("POST", "PUT") else None)
        quipu_dir = run_dir_of(q.runs.load_run(ids["make"])) / ".quipu"
        (quipu_dir / "go").touch()
        drive(ex, lambda: (quipu_dir / "exit.json").exists(), what="the stage process exits")
        for _ in range(3):
            ex.poll_once()  # each pass tries to store the outputs and fails

        assert q.runs.load_run(ids["make"]).current == State.RUNNING
        assert q.runs.load_run(ids["make"]).exit is None
        assert objects(emulator, bucket) == before, "no object for what was not stored"

        proxy.rules.clear()
        drive(ex, ended(q, ids["make"]))
        made = exit_of(q.runs.load_run(ids["make"])).outputs["numbers"]
        assert q.runs.load_run(ids["make"]).current == State.SUCCEEDED
        assert f"proj/sha256/{made['sha256']}" in objects(emulator, bucket)
        q.close()
    finally:
        proxy.stop()
        emulator.stop()


def test_a_second_checkout_with_an_empty_cache_reads_the_bucket(tmp_path: Path,
                                                                emulator: Emulator) -> None:
    q, _ = gcs_project(tmp_path, emulator)
    digest = q.blobs.put_bytes(b"made on one machine")
    q.close()
    shutil.rmtree(tmp_path / "proj" / ".quipu" / "blobcache")

    again = open_project(tmp_path / "proj")
    assert again.blobs.get_bytes(digest) == b"made on one machine"
    again.close()


def test_the_environment_chooses_the_blob_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BLOBS_URL_ENV, "gs://from-env/prefix")
    assert blobs_url(BlobsConfig(url="local")) == "gs://from-env/prefix"
    monkeypatch.setenv(BLOBS_URL_ENV, "s3://elsewhere")
    with pytest.raises(InvalidInput) as err:
        blobs_url(BlobsConfig())
    assert err.value.code == "invalid_blobs_url" and "gs://BUCKET" in err.value.hint


@pytest.mark.parametrize("url", ["gs://UPPER", "s3://bucket", "gs://b", "/some/dir", ""])
def test_a_blobs_url_that_names_no_store_is_an_invalid_config(tmp_path: Path, url: str) -> None:
    (tmp_path / "quipu.yaml").write_text(yaml.safe_dump({"name": "p", "blobs": {"url": url}}))

    with pytest.raises(InvalidInput) as err:
        load_config(tmp_path)

    assert err.value.code == "invalid_config" and "blobs.url" in err.value.message

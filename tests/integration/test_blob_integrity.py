"""A blob damaged on disk is never restored: mount, rollback and the run directory refuse it.

Through the public facade over a real project (``quipu.yaml``, SQLite log, blob directory):
every refusal is ``blob_corrupt``, names the digest and the file, and writes nothing (the log's
head did not move, the slot's files did not change).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from filetree import tree

from quipu.adapters.blobs.local import LocalBlobStore
from quipu.adapters.executors._rundir import build_run_dir
from quipu.app.bootstrap import init_project, open_project
from quipu.app.facade import Quipu
from quipu.core.errors import IntegrityFailure

REASON = "exercise restores of damaged blobs"




def corrupt(q: Quipu, content: bytes) -> Path:
    """Flip one byte of the stored blob of ``content`` (same size, different bytes)."""
    digest = hashlib.sha256(content).hexdigest()
    assert isinstance(q.blobs, LocalBlobStore)  # the test reaches under the port on purpose
    path = q.blobs.root / digest[:2] / digest[2:]
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Quipu]:
    """exp at v1 (train.py, data/x.csv) and v2 (train.py changed), mounted in w1."""
    init_project(tmp_path / "proj", name="proj", goal="damaged blobs").close()
    q = open_project(tmp_path / "proj", actor="agent-1")
    q.create_workspace("exp", "an experiment with versions", REASON)
    q.mount("exp", "w1", REASON)
    slot = q.slots.path("w1")
    (slot / "data").mkdir()
    (slot / "train.py").write_text("lr = 0.1\n")
    (slot / "data" / "x.csv").write_text("a,b\n1,2\n")
    q.save_version("w1", "first version of training")
    (slot / "train.py").write_text("lr = 0.01\n")
    q.save_version("w1", "second version of training")
    yield q
    q.close()


def test_mounting_a_version_with_a_damaged_blob_is_refused_and_writes_nothing(project):
    project.hibernate("w1", REASON)
    damaged = corrupt(project, b"a,b\n1,2\n")
    head, before = project.store.head(), tree(project.root / "workspaces")

    with pytest.raises(IntegrityFailure) as err:
        project.mount("exp", "w2", REASON)

    assert err.value.code == "blob_corrupt"
    assert hashlib.sha256(b"a,b\n1,2\n").hexdigest() in err.value.message
    assert str(damaged) in err.value.message
    assert project.store.head() == head
    assert tree(project.root / "workspaces") == before


def test_rolling_back_to_a_version_with_a_damaged_blob_is_refused_and_writes_nothing(project):
    slot = project.slots.path("w1")
    (slot / "notes.txt").write_text("an unsaved edit\n")
    corrupt(project, b"lr = 0.1\n")
    head, before = project.store.head(), tree(slot)

    with pytest.raises(IntegrityFailure) as err:
        project.rollback("w1", 1, REASON)

    assert err.value.code == "blob_corrupt"
    assert project.store.head() == head
    assert tree(slot) == before
    assert not [p for p in slot.iterdir() if p.name.startswith(".quipu")]


def test_the_damaged_bytes_never_become_the_next_version(project):
    """Before the fix, rollback copied the damaged bytes in and the next save kept them."""
    corrupt(project, b"lr = 0.1\n")

    with pytest.raises(IntegrityFailure):
        project.rollback("w1", 1, REASON)
    result = project.save_version("w1", "save after the refused rollback")

    assert result["created"] is False and result["version"] == "v2"
    assert (project.slots.path("w1") / "train.py").read_text() == "lr = 0.01\n"


def test_a_blob_stored_again_repairs_the_damage_and_the_restore_works(project):
    damaged = corrupt(project, b"lr = 0.1\n")
    source = project.root / "good.py"
    source.write_text("lr = 0.1\n")

    project.blobs.put_file(source)
    project.rollback("w1", 1, REASON)

    assert damaged.read_bytes() == b"lr = 0.1\n"
    assert (project.slots.path("w1") / "train.py").read_text() == "lr = 0.1\n"


def test_a_run_directory_is_not_built_from_a_damaged_blob(project, tmp_path):
    version = project.save_version("w1", "the version the stage runs")
    corrupt(project, b"lr = 0.01\n")
    run_dir = tmp_path / "runs" / "r1"

    with pytest.raises(IntegrityFailure) as err:
        build_run_dir(run_dir, blobs=project.blobs, run_id="r1", stage="train", workspace="exp",
                      manifest_digest=version["manifest"], config={}, inputs={}, outputs={},
                      producer=lambda run_id: {})

    assert err.value.code == "blob_corrupt"
    assert not run_dir.exists()


def test_a_run_directory_is_not_built_from_a_damaged_upstream_output(project, tmp_path):
    version = project.save_version("w1", "the version the stage runs")
    output = project.blobs.put_bytes(b"upstream numbers")
    corrupt(project, b"upstream numbers")
    run_dir = tmp_path / "runs" / "r2"
    inputs = {"numbers": {"kind": "upstream", "run_id": "r1", "signal": "numbers",
                          "type": "file"}}
    producer = {"numbers": {"kind": "file", "sha256": output, "size": 16}}

    with pytest.raises(IntegrityFailure) as err:
        build_run_dir(run_dir, blobs=project.blobs, run_id="r2", stage="eval", workspace="exp",
                      manifest_digest=version["manifest"], config={}, inputs=inputs,
                      outputs={}, producer=lambda run_id: producer)

    assert err.value.code == "blob_corrupt" and output in err.value.message
    assert not run_dir.exists()

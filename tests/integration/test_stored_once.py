"""A stage's output is stored once: the run's outputs/, the blob store and the next stage's
inputs/ are one file on disk (read-only hard links), with the same recorded facts as before."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from test_executor_helpers import (
    THREE_STAGES,
    drive,
    ended,
    executor,
    exit_of,
    make_project,
    run_dir_of,
    start,
)

from quipu.core.errors import IntegrityFailure
from quipu.core.runs.lifecycle import State

MAKE = """\
    import numpy as np
    from quipu import sdk

    sdk.save_output("numbers", np.arange(100_000, dtype=np.int64))
    sdk.finish()
    """

DOUBLE = """\
    import numpy as np
    from quipu import sdk

    numbers = sdk.load_input("numbers")
    sdk.save_output("doubled", numbers * 2)
    table = sdk.get_output_path("table")
    (table / "a.txt").write_text("alpha")
    sdk.save_output("table", table)
    """

# A stage that writes to its input anyway (it runs as root here, which ignores mode 0444).
TAMPER = DOUBLE.replace("    sdk.save_output(\"table\", table)\n", """\
    sdk.save_output("table", table)
    import os
    path = sdk.get_input_path("numbers")
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(200)
        f.write(b"tampered")
""")

REPORT = """\
    from quipu import sdk

    sdk.save_output("summary", {"total": int(sdk.load_input("doubled").sum()),
                                "a": (sdk.get_input_path("table") / "a.txt").read_text()})
    """


def test_a_handed_down_output_is_one_read_only_file_on_disk(tmp_path: Path) -> None:
    q = make_project(tmp_path, THREE_STAGES, {"make": MAKE, "double": DOUBLE, "report": REPORT})
    ids = start(q)
    drive(executor(q), ended(q, *ids.values()))
    runs = {stage: q.runs.load_run(run_id) for stage, run_id in ids.items()}
    assert {s: r.current for s, r in runs.items()} == dict.fromkeys(ids, State.SUCCEEDED)

    made = exit_of(runs["make"]).outputs["numbers"]
    produced = run_dir_of(runs["make"]) / made["path"]
    consumed = run_dir_of(runs["double"]) / "inputs" / produced.name
    stored = q.blobs.path(made["sha256"])  # type: ignore[attr-defined]
    assert os.path.samestat(produced.stat(), stored.stat())
    assert os.path.samestat(consumed.stat(), stored.stat())
    assert stored.stat().st_nlink == 3
    for path in (produced, consumed, stored):
        assert not path.stat().st_mode & 0o222
    # the facts recorded are those of the bytes, as before
    assert made["sha256"] == hashlib.sha256(produced.read_bytes()).hexdigest()
    assert made["size"] == produced.stat().st_size == 800_128
    table = exit_of(runs["double"]).outputs["table"]
    a_txt = run_dir_of(runs["report"]) / "inputs" / "table" / "a.txt"
    assert table["files"] == 1 and a_txt.read_text() == "alpha"
    assert a_txt.stat().st_nlink == 3


def test_a_stage_that_writes_through_its_input_link_is_caught_and_the_blob_never_served(
        tmp_path: Path) -> None:
    q = make_project(tmp_path, THREE_STAGES, {"make": MAKE, "double": TAMPER, "report": REPORT})
    ids = start(q)
    drive(executor(q), ended(q, *ids.values()))
    made = exit_of(q.runs.load_run(ids["make"])).outputs["numbers"]
    double = q.runs.load_run(ids["double"])

    assert double.current != State.SUCCEEDED
    assert any("changed files outside outputs/" in p for p in exit_of(double).problems)
    with pytest.raises(IntegrityFailure) as err:
        q.blobs.get_bytes(made["sha256"])
    assert err.value.code == "blob_corrupt"
    with pytest.raises(IntegrityFailure):
        q.blobs.link_to(made["sha256"], tmp_path / "next" / "numbers.npy")
    assert not (tmp_path / "next" / "numbers.npy").exists()


def test_across_file_systems_a_link_is_a_verified_copy_and_a_file_is_copied_in(
        tmp_path: Path) -> None:
    """/dev/shm is a tmpfs, so a hard link from the store (on the disk) to it fails with
    EXDEV: link_to falls back to a read-only copy, and adopt_file copies the file in and leaves
    it where it was."""
    from quipu.adapters.blobs import LocalBlobStore

    other_fs = Path("/dev/shm") / f"quipu-exdev-{os.getpid()}"
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.fail("/dev/shm and the test directory share a file system; no EXDEV here")
    other_fs.mkdir()
    try:
        store = LocalBlobStore(tmp_path / "blobs", fsync=False)
        data = b"stored once, copied where a link cannot go" * 1000
        digest = store.put_bytes(data)
        dest = other_fs / "inputs" / "numbers.npy"
        store.link_to(digest, dest)
        assert dest.read_bytes() == data
        assert dest.stat().st_ino != store.path(digest).stat().st_ino
        assert dest.stat().st_mode & 0o777 == 0o444
        made = other_fs / "outputs" / "model.bin"
        made.parent.mkdir()
        made.write_bytes(b"an output written on the other file system")
        sha, size = store.adopt_file(made)
        assert sha == hashlib.sha256(made.read_bytes()).hexdigest() and size == made.stat().st_size
        assert store.get_bytes(sha) == made.read_bytes()
        assert made.exists() and made.stat().st_dev != store.path(sha).stat().st_dev
    finally:
        import shutil

        shutil.rmtree(other_fs, ignore_errors=True)

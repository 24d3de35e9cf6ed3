"""The SDK and the executor read the run directory by one contract (``quipu.rundir``).

What the stage records through the SDK (file names, sha256 and size in ``outputs.jsonl``) is
exactly what the executor finds and records when it collects the outputs, for files and for
directory trees.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quipu import rundir, sdk
from quipu.adapters.blobs.local import LocalBlobStore
from quipu.adapters.executors._rundir import collect_outputs
from quipu.sdk import testing

DECLARED = {"table": {"type": "directory"}, "weights": {"type": "npy"},
            "summary": {"type": "json"}, "raw": {"type": "file"}}

segment = st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=6).filter(
    lambda s: s not in (".", ".."))
trees = st.dictionaries(st.lists(segment, min_size=1, max_size=3).map("/".join),
                        st.binary(min_size=1, max_size=64), min_size=1, max_size=8)


def sdk_records(run_dir: Path) -> dict[str, dict[str, object]]:
    lines = (run_dir / rundir.SIDE_DIR / rundir.OUTPUTS).read_text().splitlines()
    return {r["name"]: r for r in map(json.loads, lines)}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        if any(parent.is_file() for parent in path.parents) or path.is_dir():
            continue  # "a" and "a/b" cannot both be files
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=trees)
def test_what_the_sdk_records_is_what_the_executor_records(tmp_path_factory, files):
    tmp = tmp_path_factory.mktemp("contract")
    source = tmp / "tree"
    write_tree(source, files)
    blobs = LocalBlobStore(tmp / "blobs", fsync=False)

    with testing.stage(outputs={k: v["type"] for k, v in DECLARED.items()},
                       tmp_path=tmp) as run:
        sdk.save_output("table", source)
        sdk.save_output("weights", np.arange(6, dtype=np.float32))
        sdk.save_output("summary", {"files": len(files)})
        sdk.save_output("raw", b"raw bytes")

    stored, problems = collect_outputs(run.run_dir, DECLARED, blobs)
    recorded = sdk_records(run.run_dir)

    assert problems == []
    for name in DECLARED:
        assert (stored[name]["sha256"], stored[name]["size"]) == (
            recorded[name]["sha256"], recorded[name]["size"]), name
        assert stored[name]["path"] == recorded[name]["path"]
    assert stored["table"]["sha256"] == rundir.tree_digest(source)[0]
    assert stored["weights"]["path"] == "outputs/weights.npy"


def test_names_and_extensions_come_from_one_table():
    assert [rundir.output_filename("x", t) for t in ("npy", "csv", "json", "file", None)] == [
        "x.npy", "x.csv", "x.json", "x", "x"]
    assert sdk._io.output_filename is rundir.output_filename
    assert sdk._io.hash_path is rundir.hash_path

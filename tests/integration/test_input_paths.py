"""Which files a run may read through ``inputs_override``: the project, the data roots of
quipu.yaml, or anything when the project says so. Judged after symlinks are resolved, on a real
project through the facade; a refusal writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from toy_pipeline import SPEC, write_toy_pipeline

from quipu.app.bootstrap import init_project, open_project
from quipu.core.errors import InvalidInput

REASON = "train on features prepared outside the pipeline"


def _project(tmp_path: Path, **data: object) -> Path:
    root = tmp_path / "proj"
    q = init_project(root, name="paths", goal="check which inputs a run may read")
    q.close()
    if data:
        config = yaml.safe_load((root / "quipu.yaml").read_text())
        config["data"] = data
        (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    with open_project(root) as q:
        q.create_workspace("ws", "train on outside features", REASON)
        q.mount("ws", "w1", REASON)
        write_toy_pipeline(q.slots.path("w1"))
    return root


def _start(root: Path, features: str) -> dict[str, object]:
    with open_project(root) as q:
        return q.run("w1", reason=REASON, results_spec=SPEC, stages=["train"],
                     inputs_override={"features": features})


def test_a_file_inside_the_project_is_accepted(tmp_path: Path) -> None:
    root = _project(tmp_path)
    data = root / "data" / "features.npy"
    data.parent.mkdir()
    np.save(data, np.zeros((3, 4)))
    assert _start(root, str(data))["stages_queued"] == ["train"]


def test_a_symlink_in_the_project_that_leads_outside_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "escape").symlink_to("/etc")
    with open_project(root) as q:
        head = q.store.head()
    with pytest.raises(InvalidInput) as caught:
        _start(root, str(root / "escape" / "passwd"))
    assert caught.value.code == "path_outside_roots"
    with open_project(root) as q:
        assert q.store.head() == head


def test_a_configured_data_root_is_accepted_and_others_are_not(tmp_path: Path) -> None:
    shared = tmp_path / "shared-data"
    shared.mkdir()
    np.save(shared / "features.npy", np.zeros((3, 4)))
    root = _project(tmp_path, roots=[str(shared)])
    assert _start(root, str(shared / "features.npy"))["stages_queued"] == ["train"]
    with pytest.raises(InvalidInput):
        _start(root, "/etc/passwd")


def test_a_project_that_allows_any_path_reads_anywhere(tmp_path: Path) -> None:
    root = _project(tmp_path, allow_any_path=True)
    assert _start(root, "/etc/passwd")["stages_queued"] == ["train"]

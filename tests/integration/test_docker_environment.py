"""A Docker run records the environment as its stage sees it INSIDE the container.

The engine cannot probe an image's interpreter from outside: the stage wrapper writes
``.quipu/environment.json`` before the stage starts and the backend records it with the
launch, the package list as a blob, the names of variables but never their values. Two images
that differ by one distribution make ``compare`` report it; the same image reports none. The
secrets test for a Docker run is beside the local one, in test_environment_provenance.py.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_image import build_derived_image
from test_executor_helpers import (
    ONE_STAGE,
    drive,
    ended,
    executor,
    make_project,
    run_dir_of,
    start,
)

from quipu.adapters.docker import DockerBackend
from quipu.adapters.executors import _wrapper
from quipu.app.bootstrap import Quipu
from quipu.core.log import decode
from quipu.core.ports import Resources
from quipu.core.runs.events import RunLaunched
from quipu.core.runs.lifecycle import State
from quipu.rundir import ENV_PROBE_ENVIRONMENT, ENVIRONMENT

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

SOLO = """\
    from quipu import sdk

    sdk.save_output("result", {"answer": 42})
    """
IMAGE_SECRET = "fake-image-Token-5e21c0d7"
"""A value the derived image's ENV gives HF_TOKEN: the stage sees it, the record never (see
test_environment_provenance.py's secrets test, which runs on this image too)."""


def _profile(image: str) -> Resources:
    return Resources(profile="box", backend="docker", image=image, memory_mb=512, cpus=1.0,
                     network=False)


def _run_on(q: Quipu, image: str) -> str:
    """One run of the workspace's stage in a container of ``image``, driven to its end."""
    ex = executor(q, backends={"docker": DockerBackend(project="proj", blobs=q.blobs)},
                  profiles=lambda _config: _profile(image))
    run_id = start(q)["solo"]
    drive(ex, ended(q, run_id))
    assert q.runs.load_run(run_id).current is State.SUCCEEDED
    q.finalize_run(run_id, {"ml_outcome": "unknown", "notes": "only the record matters"})
    return run_id


def _launched(q: Quipu, run_id: str) -> dict[str, Any]:
    found = [r.event for r in map(decode, q.store.read())
             if isinstance(r.event, RunLaunched) and r.event.run_id == run_id]
    assert len(found) == 1 and found[0].environment is not None
    return dict(found[0].environment)


@pytest.fixture(scope="module")
def extra_image(python_image: str, docker_client: Any) -> Iterator[str]:
    """The test image plus one distribution (``tiny_thing==1.2``) and an image ENV holding a
    fake token."""
    tag = build_derived_image(docker_client, python_image, "quipu-test-extra:env",
                              distributions={"tiny_thing": "1.2"},
                              env={"HF_TOKEN": IMAGE_SECRET})
    yield tag
    docker_client.images.remove(tag, force=True)


def test_the_wrappers_file_names_are_the_run_directory_contracts() -> None:
    source = Path(_wrapper.__file__).read_text()
    assert f'"{ENV_PROBE_ENVIRONMENT}"' in source and f'"{ENVIRONMENT}"' in source


def test_a_docker_run_records_the_containers_environment_next_to_its_image(
        tmp_path: Path, python_image: str, docker_client: Any) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
    with q:
        run_id = _run_on(q, python_image)
        env = _launched(q, run_id)
        run_dir = run_dir_of(q.runs.load_run(run_id))
    # The image's facts stay as they were.
    assert env["backend"] == "docker" and env["image"] == python_image
    assert env["image_id"] == docker_client.images.get(python_image).id
    assert env["compute"]["cpus"] == 1.0 and "error" not in env
    # The interpreter is the image's (made from this host's Python, at /usr/bin), not the
    # engine's virtualenv; the image holds numpy's files but no distribution metadata.
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["executable"].startswith("/usr/bin/python3")
    assert env["executable"] != sys.executable
    assert env["implementation"] == "cpython" and env["os"].startswith("Linux")
    assert env["machine"] == os.uname().machine and env["cpu_count"] == os.cpu_count()
    assert env["gpu"] is None  # no nvidia-smi in the image
    assert env["packages"]["count"] == 0
    assert q.blobs.get_bytes(env["packages"]["sha256"]) == b""
    # Names seen inside the container: the engine's variables and the backend's own.
    assert {"HOME", "PYTHONPATH", "QUIPU_RUN_ID", "QUIPU_PROBE_ENVIRONMENT"} <= set(
        env["env_names"])
    # The side file the wrapper wrote holds the full list the blob was made from.
    side = json.loads((run_dir / ".quipu" / ENVIRONMENT).read_text())
    assert side["packages"] == [] and side["env_names"] == env["env_names"]


def test_a_stage_that_ends_at_once_still_gets_its_facts_and_sees_no_foreign_child(
        tmp_path: Path, python_image: str) -> None:
    """The probe runs beside the stage, not before it: a stage that returns at once waits for
    it at exit, and the probe's process is never the stage's child (``os.wait`` finds none)."""
    q = make_project(tmp_path, ONE_STAGE, {"solo": """\
        import json, os
        try:
            os.wait()
            children = "some"
        except ChildProcessError:
            children = "none"
        with open(os.path.join(os.environ["QUIPU_OUTPUTS_DIR"], "result.json"), "w") as f:
            json.dump({"children": children}, f)
        """})
    with q:
        run_id = _run_on(q, python_image)
        env = _launched(q, run_id)
        run_dir = run_dir_of(q.runs.load_run(run_id))
    assert "error" not in env and env["packages"]["count"] == 0 and env["python"]
    assert json.loads((run_dir / "outputs" / "result.json").read_text()) == {"children": "none"}


def test_compare_shows_the_package_an_image_adds_and_none_for_the_same_image(
        tmp_path: Path, python_image: str, extra_image: str) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
    with q:
        first = _run_on(q, python_image)
        again = _run_on(q, python_image)
        extra = _run_on(q, extra_image)

        same = q.compare(first, again)["environment"]
        assert same["packages"]["same"] is True and same["env_names"] == {
            "added": [], "removed": []}

        moved = q.compare(first, extra)["environment"]
        assert moved["packages"]["same"] is False
        assert moved["packages"]["added"] == ["tiny_thing==1.2"]
        assert moved["packages"]["removed"] == [] and moved["packages"]["changed"] == []
        assert moved["packages"]["count"] == [0, 1]
        assert moved["env_names"]["added"] == ["HF_TOKEN"]  # the name, never its value
        assert set(moved["changed"]) == {"image_id"}  # the same interpreter, another image
        assert same["changed"] == {}
        listing = q.blobs.get_bytes(_launched(q, extra)["packages"]["sha256"])
        assert listing == b"tiny_thing==1.2\n"

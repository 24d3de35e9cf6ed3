"""The project's container images (`manage_images`, `quipu image ...`) on a real daemon.

Builds never pull (no registry is reachable): every base is the local test image made from
this host's Python (tests/docker_image.py), which has no shell, so a `RUN` step fails there.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import quipu

from quipu.app.bootstrap import Quipu, open_project
from quipu.core.errors import InvalidInput, NotFound, Unavailable

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@pytest.fixture()
def project(tmp_path: Path, docker_client) -> Iterator[Path]:
    quipu("init", "imgproj", "--goal", "run stages inside containers", cwd=tmp_path)
    root = tmp_path / "imgproj"
    yield root
    for image in docker_client.images.list(filters={"label": "quipu.project=imgproj"}):
        docker_client.images.remove(image.id, force=True)


def _open(root: Path) -> Quipu:
    return open_project(root, actor="test:images")


def test_a_dockerfile_build_is_tagged_by_its_content_and_reused_when_unchanged(
        project: Path, python_image: str) -> None:
    (project / "Dockerfile").write_text(f"FROM {python_image}\nLABEL purpose=tests\n")
    head_before = None
    with _open(project) as q:
        head_before = q.store.head()
        lines: list[str] = []
        first = q.manage_images("build", progress=lines.append)
        again = q.manage_images("build")
        assert first["reused"] is False and again["reused"] is True
        assert again["id"] == first["id"] and again["image"] == first["image"]
        assert first["image"].startswith("quipu-imgproj:") and lines  # output streamed
        listed = q.manage_images("list")
        assert [row["id"] for row in listed["images"]] == [first["id"]]
        shown = q.manage_images("inspect", image=first["image"])
        assert shown["labels"]["quipu.context_hash"] == first["context_hash"]
        assert shown["labels"]["purpose"] == "tests"
        assert q.store.head() == head_before  # images are not events
        (project / "Dockerfile").write_text(f"FROM {python_image}\nLABEL purpose=changed\n")
        changed = q.manage_images("build")
        assert changed["reused"] is False and changed["image"] != first["image"]


def test_a_missing_base_image_is_named_and_nothing_is_built(project: Path,
                                                             docker_client) -> None:
    with _open(project) as q, pytest.raises(NotFound) as err:
        q.manage_images("build", base="quipu-no-such-base:1")
    assert err.value.code == "base_image_missing" and "docker pull" in err.value.hint
    assert docker_client.images.list(filters={"label": "quipu.project=imgproj"}) == []


def test_a_failed_build_carries_the_tail_of_its_log(project: Path, python_image: str) -> None:
    (project / "requirements.txt").write_text("numpy\n")
    with _open(project) as q, pytest.raises(InvalidInput) as err:
        q.manage_images("build", base=python_image)
    assert err.value.code == "image_build_failed"
    assert "No module named pip" in err.value.message  # the base has Python but no pip


@pytest.fixture(scope="module")
def pip_base(python_image: str, docker_client: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test image plus this host's pip and one installed distribution (``tiny_thing``):
    a base whose requirements can be satisfied without any network. It has no shell."""
    import pip

    context = tmp_path_factory.mktemp("pip-base")
    shutil.copytree(Path(pip.__file__).parent, context / "pip",
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = context / "tiny_thing-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny_thing\nVersion: 1.2\n")
    site = "/usr/lib/python3.11/site-packages"
    (context / "Dockerfile").write_text(
        f"FROM {python_image}\nCOPY pip {site}/pip\n"
        f"COPY tiny_thing-1.2.dist-info {site}/tiny_thing-1.2.dist-info\n")
    image, _ = docker_client.images.build(path=str(context), tag="quipu-test-pip-base:1",
                                          rm=True, pull=False)
    yield "quipu-test-pip-base:1"
    docker_client.images.remove(image.id, force=True)


def test_a_requirements_build_runs_pip_on_the_base_and_is_reused_when_unchanged(
        project: Path, pip_base: str, docker_client: Any) -> None:
    """No Dockerfile: the base plus requirements.txt, pip run in the base (no shell there);
    every requirement is already installed, so nothing is fetched."""
    (project / "requirements.txt").write_text("tiny_thing==1.2\n")
    with _open(project) as q:
        lines: list[str] = []
        first = q.manage_images("build", base=pip_base, progress=lines.append)
        assert first["reused"] is False and first["image"].startswith("quipu-imgproj:")
        assert any("Requirement already satisfied: tiny_thing==1.2" in line for line in lines)
        built = docker_client.images.get(first["image"])
        assert built.labels["quipu.context_hash"] == first["context_hash"]
        assert built.labels["quipu.project"] == "imgproj"

        again = q.manage_images("build", base=pip_base)
        assert again["reused"] is True and again["id"] == first["id"]

        # Another requirements file is another image; the old one is not touched.
        (project / "requirements.txt").write_text("tiny_thing>=1.0\n")
        changed = q.manage_images("build", base=pip_base)
        assert changed["reused"] is False and changed["image"] != first["image"]
        assert {row["id"] for row in q.manage_images("list")["images"]} == {
            first["id"], changed["id"]}


def test_inspecting_an_unknown_image_suggests_the_closest_tag(project: Path,
                                                              python_image: str) -> None:
    (project / "Dockerfile").write_text(f"FROM {python_image}\n")
    with _open(project) as q:
        built = q.manage_images("build")
        with pytest.raises(NotFound) as err:
            q.manage_images("inspect", image=built["image"][:-1] + "x")
    assert err.value.code == "image_not_found" and built["image"] in err.value.hint


def test_a_daemon_that_is_down_says_how_to_start_it(project: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with _open(project) as q, pytest.raises(Unavailable) as err:
        q.manage_images("list")
    assert err.value.code == "docker_unavailable"
    assert "no-docker.sock" in err.value.message and "dockerd" in err.value.hint


def test_the_cli_streams_the_build_and_prints_the_image(project: Path,
                                                        python_image: str) -> None:
    (project / "Dockerfile").write_text(f"FROM {python_image}\nLABEL from=cli\n")
    built = quipu("image", "build", "--json", cwd=project)
    assert "[build] Step 1/" in built.stderr
    image = json.loads(built.stdout)["image"]
    listed = json.loads(quipu("image", "list", "--json", cwd=project).stdout)
    assert image in listed["images"][0]["tags"]
    down = quipu("image", "inspect", "quipu-imgproj:nope", cwd=project, check=False)
    assert down.returncode != 0 and "image_not_found" in down.stdout + down.stderr

"""``quipu doctor`` with ``executor.backend: docker``: the daemon and the profiles' images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_runner import quipu

from quipu.app.bootstrap import init_project

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def docker_project(tmp_path: Path, profiles: dict[str, Any]) -> Path:
    init_project(tmp_path / "proj", name="proj", goal="check the doctor on docker").close()
    root = tmp_path / "proj"
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config["executor"] = {"backend": "docker"}
    config["profiles"] = profiles
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    return root


def doctor(root: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    proc = quipu("doctor", "--json", cwd=root, check=False)
    answer = json.loads(proc.stdout)
    return proc.returncode, {f["part"]: f for f in answer["findings"] if not f["ok"]}


def test_the_images_the_docker_profiles_name_are_checked(tmp_path: Path,
                                                         python_image: str) -> None:
    root = docker_project(tmp_path, {
        "box": {"backend": "docker", "image": python_image},
        "gone": {"backend": "docker", "image": "quipu-no-such-image:1"}})
    code, bad = doctor(root)
    assert code == 1
    assert "'quipu-no-such-image:1'" in bad["images"]["message"]
    assert "gone" in bad["images"]["message"] and "quipu image build" in bad["images"]["fix"]
    assert "executor.docker" not in bad  # the daemon answers


def test_a_daemon_that_is_down_is_named_with_how_to_start_it(
        tmp_path: Path, python_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = docker_project(tmp_path, {"box": {"backend": "docker", "image": python_image}})
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/dead.sock")
    code, bad = doctor(root)
    assert code == 1
    assert "dead.sock" in bad["executor.docker"]["message"]
    assert "dockerd" in bad["executor.docker"]["message"] + bad["executor.docker"]["fix"]
    assert "dockerd" in bad["images"]["fix"]

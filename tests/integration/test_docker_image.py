"""The test image made from this host's Python (tests/docker_image.py) runs stage code."""

from __future__ import annotations

from pathlib import Path

import pytest

import quipu

pytestmark = pytest.mark.docker


def test_the_host_python_image_imports_numpy_and_the_mounted_sdk_as_a_non_root_user(
        docker_client, python_image):
    package = Path(quipu.__file__).parent
    out = docker_client.containers.run(
        python_image, ["python3", "-c", "import os, numpy, quipu.sdk; print(os.getuid())"],
        user="65534:65534", network_mode="none", read_only=True, remove=True,
        environment={"PYTHONPATH": "/opt/quipu"},
        volumes={str(package): {"bind": "/opt/quipu/quipu", "mode": "ro"}})
    assert out.decode().strip() == "65534"


def test_an_unchanged_image_is_reused(docker_client, python_image):
    from docker_image import build_python_image

    before = docker_client.images.get(python_image).id
    assert build_python_image(docker_client) == python_image
    assert docker_client.images.get(python_image).id == before

"""Fixtures for unit tests of the command service (built from ``tests/unit_support.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from unit_support import Project, make_project

from quipu.adapters.blobs.local import LocalBlobStore


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A fresh project with three slots (w1, w2, w3) and an empty log."""
    p = make_project(tmp_path)
    yield p
    p.store.close()


@pytest.fixture
def new_project(tmp_path: Path) -> Iterator[Callable[..., Project]]:
    """Factory ``new_project(blobs=...)`` for a project over a blob store the test built."""
    made: list[Project] = []

    def make(*, blobs: LocalBlobStore) -> Project:
        made.append(make_project(tmp_path / f"project-{len(made)}", blobs))
        return made[-1]

    yield make
    for p in made:
        p.store.close()

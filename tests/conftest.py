"""Fixtures shared by every test directory.

Real systems only: SQLite files under ``tmp_path`` and a real PostgreSQL server. The server comes
from ``QUIPU_TEST_POSTGRES_URL``; when it is unreachable PostgreSQL tests are skipped, unless
``QUIPU_REQUIRE_POSTGRES=1`` (CI), which turns the skip into a failure. The same goes for the
Docker daemon (``DOCKER_HOST`` or the default socket) and ``QUIPU_REQUIRE_DOCKER=1``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from hypothesis import settings
from psycopg import sql

from quipu.adapters.eventstore._base import RecorderEventStore
from quipu.adapters.eventstore.postgres import open_postgres_store

# Tests never assert wall-clock times, and hypothesis's per-example deadline is one: on a loaded
# CI machine it fails correct code. Examples are still bounded by pytest-timeout.
settings.register_profile("quipu", deadline=None)
settings.load_profile("quipu")

DEFAULT_POSTGRES_URL = "postgresql://postgres:postgres@localhost:5432/quipu_test"

PgStoreFactory = Callable[..., RecorderEventStore]


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL; skips (or fails, under QUIPU_REQUIRE_POSTGRES=1) if unreachable."""
    url = os.environ.get("QUIPU_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        message = f"PostgreSQL not reachable at {url}: {exc}"
        if os.environ.get("QUIPU_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " (QUIPU_REQUIRE_POSTGRES=1)")
        pytest.skip(message)
    return url


def fresh_table_name() -> str:
    """A random table name, so concurrent test runs never share a PostgreSQL log."""
    return f"quipu_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[PgStoreFactory]:
    """Factory ``pg_store(table=None, **kwargs)`` for PostgreSQL stores on throwaway tables.

    Calling it twice with the same table gives two stores on one log (two "hosts"). Every store
    is closed and every table dropped when the test ends.
    """
    stores: list[RecorderEventStore] = []
    tables: set[str] = set()

    def make(table: str | None = None, **kwargs: object) -> RecorderEventStore:
        name = table or fresh_table_name()
        tables.add(name)
        store = open_postgres_store(postgres_url, table=name, **kwargs)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in tables:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))


# --- Docker ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    """A ``docker.DockerClient`` on the real daemon; skips (or fails, under
    QUIPU_REQUIRE_DOCKER=1) when no daemon answers."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        message = f"no Docker daemon answers: {exc}"
        if os.environ.get("QUIPU_REQUIRE_DOCKER") == "1":
            pytest.fail(message + " (QUIPU_REQUIRE_DOCKER=1)")
        pytest.skip(message)
    yield client
    client.close()


@pytest.fixture(scope="session")
def python_image(docker_client: object) -> str:
    """The tag of a local image with this host's Python and numpy (see tests/docker_image.py),
    imported once and reused while its content is unchanged."""
    from docker_image import build_python_image

    return build_python_image(docker_client)

"""``gs://`` sources over stdio, driven by the official ``mcp`` SDK's ClientSession against a
real ``quipu serve`` whose environment points the google client at a real fake-gcs-server
(``STORAGE_EMULATOR_HOST``, the client's own variable): register an object (its fingerprint
recorded, nothing downloaded), refuse a missing one, verify it; answer sizes measured."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gcs_emulator import Emulator, corrupt_object

WHY = "register the digits features kept in a bucket"
URI = "gs://digits-data/features.npy"

SdkConnect = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    running = Emulator(tmp_path / "gcs").start()
    running.create_bucket("digits-data")
    yield running
    running.stop()


def test_a_gs_source_over_stdio_with_the_official_client(emulator: Emulator,
                                                         sdk_session: SdkConnect) -> None:
    out = io.BytesIO()
    np.save(out, np.zeros((8, 64), dtype="float32"))
    data = out.getvalue()
    corrupt_object(emulator.url, "digits-data", "features.npy", data)
    md = {"schema_version": 1, "description": "digits features, one row per image",
          "source": {"format": "npy", "size_bytes": len(data),
                     "created_at": "2024-05-01T12:00:00Z"},
          "schema": {"kind": "tensor", "primary_array": "x",
                     "arrays": {"x": {"role": "features", "shape": [8, 64], "dtype": "float32",
                                      "feature_names": {"kind": "pattern",
                                                        "template": "pixel_{i}"}}}}}

    async def main() -> None:
        async with sdk_session(extra_env={"STORAGE_EMULATOR_HOST": emulator.url}) as session:
            missing = await session.call_tool("register_source", {
                "name": "digits", "path_or_uri": "gs://digits-data/nothing.npy",
                "description": md["description"], "reason": WHY, "metadata": md})
            assert missing.isError
            assert missing.content[0].text.startswith("[source_object_missing]")

            made = await session.call_tool("register_source", {
                "name": "digits", "path_or_uri": URI, "description": md["description"],
                "reason": WHY, "metadata": md})
            assert not made.isError, made.content
            answer = made.structuredContent
            assert answer is not None
            assert answer["verified"] is True and answer["sha256"] is None
            assert answer["object"]["size"] == len(data) and answer["object"]["generation"]

            verified = await session.call_tool("manage_sources", {"action": "verify",
                                                                  "name": "digits"})
            assert verified.structuredContent is not None
            assert verified.structuredContent["unchanged"] is True
            assert verified.structuredContent["object"] == answer["object"]
            for reply in (made, verified):
                size = len(json.dumps(reply.structuredContent))
                print(f"{reply.structuredContent.get('source')}: {size} characters")
                assert size < 1_500, size

    asyncio.run(main())

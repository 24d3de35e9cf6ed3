"""The source tools over stdio, driven by the official ``mcp`` SDK's ClientSession against a
real ``quipu serve``: register a real npy file, refuse metadata that lies (listing every
problem in one error line), list, get, verify, retire and delete; answer sizes measured."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import numpy as np

WHY = "register the digits features for the experiments"


def metadata(path: Path, shape: list[int], dtype: str) -> dict[str, Any]:
    return {"schema_version": 1, "description": "digits features, one row per image",
            "source": {"format": "npy", "size_bytes": path.stat().st_size,
                       "created_at": "2024-05-01T12:00:00Z"},
            "schema": {"kind": "tensor", "primary_array": "x",
                       "arrays": {"x": {"role": "features", "shape": shape, "dtype": dtype,
                                        "feature_names": {"kind": "pattern",
                                                          "template": "pixel_{i}"}}}}}


SdkConnect = Callable[..., AbstractAsyncContextManager[Any]]


def test_sources_over_stdio_with_the_official_client(project: Path,
                                                     sdk_session: SdkConnect) -> None:
    (project / "data").mkdir()
    path = project / "data" / "x.npy"
    np.save(path, np.zeros((8, 64), dtype="float32"))
    good = metadata(path, [8, 64], "float32")
    lying = metadata(path, [9, 64], "int64")
    lying["source"]["size_bytes"] = 7

    async def main() -> None:
        async with sdk_session() as session:
            refused = await session.call_tool("register_source", {
                "name": "digits", "path_or_uri": "data/x.npy",
                "description": lying["description"], "reason": WHY, "metadata": lying})
            assert refused.isError
            text = refused.content[0].text
            assert text.startswith("[metadata_mismatch]")
            for field in ("schema.arrays.x.shape", "schema.arrays.x.dtype",
                          "source.size_bytes"):
                assert field in text

            made = await session.call_tool("register_source", {
                "name": "digits", "path_or_uri": "data/x.npy",
                "description": good["description"], "reason": WHY, "metadata": good,
                "format": "npy"})
            assert not made.isError, made.content
            assert made.structuredContent is not None
            assert made.structuredContent["verified"] is True

            taken = await session.call_tool("register_source", {
                "name": "digits", "path_or_uri": "data/x.npy",
                "description": good["description"], "reason": WHY, "metadata": good})
            assert "[source_exists]" in taken.content[0].text

            listed = await session.call_tool("manage_sources", {"action": "list"})
            assert listed.structuredContent is not None
            assert [s["name"] for s in listed.structuredContent["sources"]] == ["digits"]
            got = await session.call_tool("manage_sources", {"action": "get",
                                                             "name": "digits"})
            assert got.structuredContent is not None
            assert got.structuredContent["metadata"]["schema"]["arrays"]["x"]["shape"] == [8, 64]
            for answer in (made, listed, got):
                assert len(json.dumps(answer.structuredContent)) < 5_000
            verified = await session.call_tool("manage_sources", {"action": "verify",
                                                                  "name": "digits"})
            assert verified.structuredContent is not None
            assert verified.structuredContent["unchanged"] is True

            retired = await session.call_tool("manage_sources", {
                "action": "retire", "name": "digits", "reason": WHY})
            assert not retired.isError
            deleted = await session.call_tool("manage_sources", {
                "action": "delete", "name": "digits", "reason": WHY})
            assert not deleted.isError
            missing = await session.call_tool("manage_sources", {"action": "get",
                                                                 "name": "nope"})
            assert "[unknown_source]" in missing.content[0].text

    asyncio.run(main())

"""Build a :class:`ReviewContext` from a run's request and the blob store.

The reviewable files of the run's version (Python modules, ``pipeline.yaml``, configs) are read
from the version's manifest; the diff is taken against the manifest of the stage's last
succeeded run. Both are bounded, so a workspace with big files costs the same as a small one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from quipu.core.ports import BlobStore
from quipu.core.reviews.review import ReviewContext
from quipu.core.runs.events import RunRequested
from quipu.core.workspaces.versions import Manifest

__all__ = ["MAX_DIFF", "MAX_FILE", "MAX_FILES_TOTAL", "build_context", "reviewable_files"]

MAX_FILE = 256 * 1024
"""Bytes of one file a reviewer is shown at most (bigger files are left out)."""
MAX_FILES_TOTAL = 2 * 1024 * 1024
"""Bytes of files a reviewer is shown in all."""
MAX_DIFF = 64 * 1024
"""Characters of the diff since the last succeeded run a reviewer is shown."""

_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".toml", ".cfg", ".txt", ".md")


def reviewable_files(blobs: BlobStore, manifest_digest: str) -> dict[str, str]:
    """Path -> text of the version's reviewable files (UTF-8 text within the bounds)."""
    manifest = Manifest.from_bytes(blobs.get_bytes(manifest_digest))
    out: dict[str, str] = {}
    total = 0
    for path in sorted(manifest.files):
        entry = manifest.files[path]
        if not path.endswith(_SUFFIXES) or entry.size > MAX_FILE:
            continue
        if total + entry.size > MAX_FILES_TOTAL:
            break
        try:
            out[path] = blobs.get_bytes(entry.sha256).decode("utf-8")
        except UnicodeDecodeError:
            continue
        total += entry.size
    return out


def _diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    parts: list[str] = []
    size = 0
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        lines = difflib.unified_diff(
            (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
            fromfile=f"a/{path}" if old is not None else "/dev/null",
            tofile=f"b/{path}" if new is not None else "/dev/null")
        chunk = "".join(lines)
        if size + len(chunk) > MAX_DIFF:
            parts.append(f"... (diff cut at {MAX_DIFF} characters)\n")
            break
        parts.append(chunk)
        size += len(chunk)
    return "".join(parts)


def build_context(blobs: BlobStore, request: RunRequested, *, previous_manifest: str | None,
                  patterns: Sequence[Mapping[str, Any]] = ()) -> ReviewContext:
    """What the reviewers of ``request``'s run are shown.

    ``previous_manifest`` is the manifest of the stage's last succeeded run (None: the diff is
    None too). ``patterns`` are the approved failure patterns for the stage.
    """
    files = reviewable_files(blobs, request.manifest)
    diff = None
    if previous_manifest is not None:
        before = (files if previous_manifest == request.manifest
                  else reviewable_files(blobs, previous_manifest))
        diff = _diff(before, files)
    return ReviewContext(
        run_id=request.run_id, workspace=request.workspace, stage=request.stage,
        version=request.version, entrypoint=request.entrypoint, files=files,
        pipeline=files.get("pipeline.yaml"), config=dict(request.config),
        inputs=dict(request.inputs), outputs=dict(request.outputs),
        results_spec=dict(request.results_spec), reason=dict(request.detail), diff=diff,
        patterns=list(patterns))

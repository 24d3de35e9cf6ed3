"""Versions without git: manifests of a slot's files, and diffs between them.

A manifest maps each relative path to its sha256, size and mode (or, for a symlink that stays
inside the slot, its target). Its canonical JSON is stored as a blob; the blob's digest names it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "EMPTY_MANIFEST",
    "FileDiff",
    "FileEntry",
    "Manifest",
    "ManifestDiff",
    "diff_manifests",
    "text_diff",
]


class FileEntry(BaseModel):
    """One path in a manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["file", "symlink"] = "file"
    sha256: str = ""
    size: int = 0
    mode: int = 0o644
    target: str | None = None


class Manifest(BaseModel):
    """A workspace tree: relative POSIX path -> entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    files: dict[str, FileEntry]

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces) so equal trees have equal digests."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True,
                          separators=(",", ":")).encode()

    def digest(self) -> str:
        """The sha256 of the canonical bytes: the manifest's name in the blob store."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a stored manifest."""
        return cls.model_validate_json(data)

    @property
    def total_bytes(self) -> int:
        """Sum of file sizes."""
        return sum(e.size for e in self.files.values())


EMPTY_MANIFEST = Manifest(files={})


@dataclass(frozen=True)
class FileDiff:
    """How one path differs between two manifests."""

    path: str
    change: Literal["added", "removed", "modified", "mode"]
    old: FileEntry | None
    new: FileEntry | None


@dataclass(frozen=True)
class ManifestDiff:
    """All differences between two manifests, sorted by path."""

    files: list[FileDiff] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        """Whether anything differs."""
        return bool(self.files)

    def summary(self) -> str:
        """'2 added, 1 modified' style one-liner."""
        counts: dict[str, int] = {}
        for f in self.files:
            counts[f.change] = counts.get(f.change, 0) + 1
        if not counts:
            return "no changes"
        return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def diff_manifests(old: Manifest, new: Manifest) -> ManifestDiff:
    """Compare two trees path by path."""
    out: list[FileDiff] = []
    for path in sorted(set(old.files) | set(new.files)):
        a, b = old.files.get(path), new.files.get(path)
        if a is None:
            out.append(FileDiff(path, "added", None, b))
        elif b is None:
            out.append(FileDiff(path, "removed", a, None))
        elif (a.kind, a.sha256, a.target) != (b.kind, b.sha256, b.target):
            out.append(FileDiff(path, "modified", a, b))
        elif a.mode != b.mode:
            out.append(FileDiff(path, "mode", a, b))
    return ManifestDiff(out)


def _as_text(data: bytes) -> list[str] | None:
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def text_diff(path: str, old: bytes | None, new: bytes | None, *, left: str, right: str,
              old_entry: FileEntry | None = None, new_entry: FileEntry | None = None) -> str:
    """A unified diff for text, or a one-line hash/size change for binary content."""
    a = _as_text(old) if old is not None else []
    b = _as_text(new) if new is not None else []
    if a is None or b is None:
        def describe(entry: FileEntry | None) -> str:
            return "absent" if entry is None else f"sha256 {entry.sha256[:12]} ({entry.size} B)"
        return f"Binary file {path} changed: {describe(old_entry)} -> {describe(new_entry)}\n"
    lines = difflib.unified_diff(a, b, fromfile=f"{left}/{path}", tofile=f"{right}/{path}")
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)
    if not text and old_entry and new_entry and old_entry.mode != new_entry.mode:
        text = f"mode of {path}: {old_entry.mode:o} -> {new_entry.mode:o}\n"
    return text

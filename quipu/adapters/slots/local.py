"""Slots as plain directories: ``<project>/workspaces/<slot>``.

A snapshot walks the slot, stores every file in the blob store and returns a manifest. A small
stat cache per slot (size, mtime, inode, mode -> sha256) makes the dirty check of an untouched
slot a stat walk instead of a full re-hash; the cache is only an optimisation and is rebuilt
whenever it is missing or wrong.

A restore stages every file it must write (checked against its hash while it is copied) before
it touches the slot, so a damaged blob or a full disk leaves the slot as it was. Every
``OSError`` is raised as a typed error (``disk_full``, ``storage_read_only``, ...).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from quipu.adapters._storage import (
    remove_stale_temporaries,
    storage_error,
    storage_errors,
    temporary_name,
)
from quipu.core.errors import Conflict, IntegrityFailure, InvalidInput, QuipuError
from quipu.core.workspaces.versions import FileEntry, Manifest

if TYPE_CHECKING:  # the port's module loads every event model: not needed to check a slot
    from quipu.core.ports import BlobStore

__all__ = ["DEFAULT_IGNORE", "STAGING_PREFIX", "LocalSlotFiles"]

DEFAULT_IGNORE = ("__pycache__", "*.pyc", ".DS_Store")
STAGING_PREFIX = ".quipu-restore-"
"""A restore stages files in ``<slot>/.quipu-restore-<host>.<pid>.<random>/``: never versioned."""
_Stat = tuple[int, int, int, int]  # size, mtime_ns, inode, mode


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class LocalSlotFiles:
    """The ``SlotFiles`` port over local directories."""

    def __init__(self, root: Path, blobs: BlobStore, cache_dir: Path,
                 ignore: tuple[str, ...] = DEFAULT_IGNORE) -> None:
        self.root = Path(root)
        self.blobs = blobs
        self.cache_dir = Path(cache_dir)
        self.ignore = ignore

    def path(self, slot: str) -> Path:
        """The slot's directory."""
        return self.root / slot

    # --- walking -------------------------------------------------------------------------------

    def _ignored(self, name: str) -> bool:
        return name.startswith(STAGING_PREFIX) or any(
            fnmatch.fnmatch(name, pattern) for pattern in self.ignore)

    def _walk(self, slot: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        base = self.path(slot)
        if not base.is_dir():
            return
        stack: list[tuple[str, str]] = [(str(base), "")]
        while stack:
            directory, prefix = stack.pop()
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except FileNotFoundError:
                raise self._vanished(prefix.rstrip("/")) from None
            except OSError as exc:
                raise storage_error(exc, directory, "listing") from exc
            subdirs = []
            for entry in entries:
                if self._ignored(entry.name):
                    continue
                rel = prefix + entry.name
                try:
                    # A symlinked directory is recorded as a link, not followed.
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append((entry.path, rel + "/"))
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    raise self._vanished(rel) from None
                yield rel, Path(entry.path), st
            stack.extend(reversed(subdirs))

    @staticmethod
    def _vanished(rel: str) -> Conflict:
        return Conflict(f"{rel} disappeared while the slot was being saved",
                        code="file_vanished",
                        hint="something is still writing in the slot; let it finish and save "
                        "again (nothing was recorded)")

    def _link_target(self, slot: str, rel: str, full: Path) -> str:
        target = os.readlink(full)
        base = self.path(slot).resolve()
        resolved = (full.parent / target).resolve()
        if resolved != base and base not in resolved.parents:
            raise InvalidInput(
                f"symlink {rel} points outside the slot (to {target})",
                code="symlink_escapes_slot",
                hint="copy the file into the slot, or register the data as a source; "
                "versions must be self-contained",
            )
        if os.path.isabs(target):
            target = os.path.relpath(resolved, full.parent)
        return target

    def _cache_path(self, slot: str) -> Path:
        return self.cache_dir / f"{slot}.json"

    def _load_cache(self, slot: str) -> dict[str, tuple[_Stat, str]]:
        try:
            raw = json.loads(self._cache_path(slot).read_text())
            return {k: (tuple(v[0]), v[1]) for k, v in raw.items()}
        except (OSError, ValueError, TypeError, IndexError):
            return {}

    def _save_cache(self, slot: str, cache: dict[str, tuple[_Stat, str]]) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_path(slot).with_suffix(".tmp")
        tmp.write_text(json.dumps({k: [list(s), h] for k, (s, h) in cache.items()}))
        os.replace(tmp, self._cache_path(slot))

    def _scan(self, slot: str, *, store: bool) -> Manifest:
        cache = self._load_cache(slot)
        # A file modified within the last 2 s could change again within the same mtime tick
        # without changing size or inode ("racy" entries): never trust the cache for those.
        racy_before = time.time_ns() - 2_000_000_000
        fresh: dict[str, tuple[_Stat, str]] = {}
        files: dict[str, FileEntry] = {}
        for rel, full, st in self._walk(slot):
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                files[rel] = FileEntry(kind="symlink", target=self._link_target(slot, rel, full),
                                       mode=0o777)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # sockets, fifos and devices are not part of a version
            key: _Stat = (st.st_size, st.st_mtime_ns, st.st_ino, mode)
            hit = cache.get(rel)
            if hit and tuple(hit[0]) == key and (not store or self.blobs.exists(hit[1])):
                digest, size = hit[1], st.st_size
            else:
                try:
                    digest, size = self.blobs.put_file(full) if store else _hash_file(full)
                except FileNotFoundError:
                    raise self._vanished(rel) from None
                except OSError as exc:
                    raise storage_error(exc, full, "reading") from exc
            if st.st_mtime_ns < racy_before:
                fresh[rel] = (key, digest)
            files[rel] = FileEntry(sha256=digest, size=size, mode=mode)
        if fresh != cache:
            with contextlib.suppress(OSError):
                self._save_cache(slot, fresh)
        return Manifest(files=files)

    # --- the port ------------------------------------------------------------------------------

    def snapshot(self, slot: str) -> tuple[str, bytes]:
        """Store the slot's files and its manifest as blobs; return (digest, manifest bytes)."""
        manifest = self._scan(slot, store=True)
        data = manifest.to_bytes()
        return self.blobs.put_bytes(data), data

    def manifest(self, slot: str) -> bytes:
        """The slot's manifest as it is now, hashing but storing nothing."""
        return self._scan(slot, store=False).to_bytes()

    def read_file(self, slot: str, rel: str) -> bytes:
        """The bytes of one file in the slot."""
        return (self.path(slot) / rel).read_bytes()

    def is_dirty(self, slot: str, manifest_digest: str | None) -> bool:
        """Whether the slot differs from the manifest (``None`` means an empty tree)."""
        current = self._scan(slot, store=False)
        if manifest_digest is None:
            return bool(current.files)
        return current.digest() != manifest_digest

    def is_empty(self, slot: str) -> bool:
        """Whether the slot holds no files."""
        return next(self._walk(slot), None) is None

    def clear(self, slot: str) -> None:
        """Delete everything inside the slot directory."""
        base = self.path(slot)
        with storage_errors(base, "clearing the slot"):
            if base.is_dir():
                for child in base.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            base.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self._cache_path(slot).unlink()

    def restore(self, slot: str, manifest: bytes) -> int:
        """Make the slot's tree exactly the manifest's; return how many paths changed.

        Two phases, so that a restore that fails leaves the slot as it was: first every file
        that must change is copied out of the blob store (its hash checked in the same pass)
        into a staging directory inside the slot; only when all of them arrived intact are
        stale paths removed and the staged files renamed into place. A damaged blob
        (``blob_corrupt``), a missing one or a full disk therefore changes nothing in the slot.
        """
        target = Manifest.from_bytes(manifest)
        for rel in target.files:
            pure = PurePosixPath(rel)
            if pure.is_absolute() or ".." in pure.parts or rel.startswith(STAGING_PREFIX):
                raise IntegrityFailure(f"manifest holds an unsafe path {rel!r}",
                                       code="manifest_corrupt", hint="the blob store was altered")
        base = self.path(slot)
        with storage_errors(base, "creating the slot"):
            base.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(base, STAGING_PREFIX)
        current = self._scan(slot, store=False).files
        changes = [(rel, entry) for rel, entry in sorted(target.files.items())
                   if current.get(rel) != entry]
        removals = sorted(set(current) - set(target.files))
        staging = base / temporary_name(STAGING_PREFIX)
        try:
            with storage_errors(base, "restoring files into"):
                staged = self._stage(staging, changes)
                for rel in removals:
                    (base / rel).unlink()
                for (rel, _entry), source in zip(changes, staged, strict=True):
                    dest = base / rel
                    if dest.is_symlink() or dest.is_file():
                        dest.unlink()
                    elif dest.is_dir():
                        shutil.rmtree(dest)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(source, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._prune_empty_dirs(base)
        with contextlib.suppress(QuipuError):
            self._scan(slot, store=False)  # refresh the stat cache
        return len(removals) + len(changes)

    def _stage(self, staging: Path, changes: list[tuple[str, FileEntry]]) -> list[Path]:
        """Write every changed entry under ``staging`` (flat, numbered); return their paths."""
        staging.mkdir()
        staged: list[Path] = []
        for index, (_rel, entry) in enumerate(changes):
            path = staging / str(index)
            if entry.kind == "symlink":
                os.symlink(entry.target or "", path)
            else:
                self.blobs.copy_to(entry.sha256, path)
                os.chmod(path, entry.mode)
            staged.append(path)
        return staged

    @staticmethod
    def _prune_empty_dirs(base: Path) -> None:
        for dirpath, _dirs, _files in sorted(os.walk(base), key=lambda t: -len(t[0])):
            path = Path(dirpath)
            if path != base and not any(path.iterdir()):
                path.rmdir()

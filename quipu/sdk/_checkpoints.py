"""Checkpoints: named, optionally stepped snapshots under ``.quipu/checkpoints/``.

Each checkpoint is a directory, ``<name>/step_<N>/`` or ``<name>/latest/``, built beside its
final place and renamed into it, so a stage killed mid-save leaves the previous one intact. A
hidden ``.checkpoint.json`` inside says how to load it back; ``.quipu/checkpoints.jsonl`` tells
the engine what was saved.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quipu.rundir import CHECKPOINTS
from quipu.sdk._context import (
    CheckpointNotFound,
    RunContext,
    append_bytes,
    current,
    jsonl,
    read_jsonl,
)
from quipu.sdk._io import hash_path

__all__ = ["Checkpoint", "catalogue", "list_checkpoints", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][\w.\-]{0,127}", re.ASCII)
_MARKER = ".checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: ``path`` is relative to the run directory."""

    name: str
    step: int | None
    path: str
    sha256: str
    size: int
    ts: float


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name):
        raise ValueError(f"invalid checkpoint name {name!r}: it names a directory, so use up to "
                         "128 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


def _check_step(step: object) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or int(step) < 0:
        raise ValueError(f"checkpoint step must be a non-negative int or None, got {step!r}")
    return int(step)


def _dir_for(ctx: RunContext, name: str, step: int | None) -> Path:
    leaf = "latest" if step is None else f"step_{step}"
    return ctx.quipu_dir / "checkpoints" / name / leaf


def _fill(staging: Path, data: Any) -> dict[str, Any]:
    """Write ``data`` into the empty directory ``staging``; return how to read it back."""
    if isinstance(data, bytes | bytearray | memoryview):
        (staging / "data.bin").write_bytes(bytes(data))
        return {"kind": "bytes", "entry": "data.bin"}
    if isinstance(data, np.ndarray):
        if data.dtype.kind == "O":
            raise TypeError("an object array cannot be checkpointed without pickle; "
                            "give it a numeric or string dtype")
        with (staging / "data.npy").open("wb") as handle:
            np.save(handle, data, allow_pickle=False)
        return {"kind": "npy", "entry": "data.npy"}
    if isinstance(data, os.PathLike):
        source = Path(data)
        if source.is_dir():
            shutil.copytree(source, staging, dirs_exist_ok=True)
            return {"kind": "directory", "entry": "."}
        if source.is_file():
            shutil.copyfile(source, staging / source.name)
            return {"kind": "file", "entry": source.name}
        raise FileNotFoundError(f"cannot checkpoint {source}: it does not exist")
    if isinstance(data, dict | list):
        try:
            text = json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"checkpoint data is not JSON-able ({exc}); save it to a file "
                            "and pass the Path") from exc
        (staging / "data.json").write_text(text)
        return {"kind": "json", "entry": "data.json"}
    raise TypeError(
        f"cannot checkpoint a {type(data).__name__}: pass bytes, a numpy array, a JSON-able "
        "dict or list, or a Path to a file or directory (e.g. torch.save(state, p) then p)"
    )


def save_checkpoint(name: str, data: Any, step: int | None = None) -> Path:
    """Save a snapshot the stage can resume from; returns the checkpoint's directory.

    Use it every few epochs and when :func:`should_stop` turns True. ``data`` is bytes, a numpy
    array, a JSON-able dict or list, or a Path to a file or directory to copy. Without ``step``
    the checkpoint is ``latest`` and each save replaces the last; with one, each step is kept.
    """
    ctx = current()
    _check_name(name)
    checked_step = _check_step(step)
    final = _dir_for(ctx, name, checked_step)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        marker = _fill(staging, data)
        (staging / _MARKER).write_text(json.dumps(marker))
        if final.exists():
            retired = final.parent / f".retired-{uuid.uuid4().hex}"
            os.replace(final, retired)
            shutil.rmtree(retired)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    digest, size = hash_path(final)
    record = {"name": name, "step": checked_step,
              "path": final.relative_to(ctx.run_dir).as_posix(),
              "sha256": digest, "size": size, "ts": time.time()}
    append_bytes(ctx.side_file(CHECKPOINTS), jsonl([record]))
    return final


def catalogue(ctx: RunContext) -> list[Checkpoint]:
    """Recorded checkpoints still on disk, oldest first, the last save of each (name, step).

    Directories with no line in checkpoints.jsonl (restored by the engine for a resumed run)
    are included too, hashed now and dated by their modification time.
    """
    latest: dict[tuple[str, int | None], Checkpoint] = {}
    for line in read_jsonl(ctx.quipu_dir / CHECKPOINTS):
        point = Checkpoint(name=line["name"], step=line.get("step"), path=line["path"],
                           sha256=line["sha256"], size=line["size"], ts=line["ts"])
        latest.pop((point.name, point.step), None)
        latest[(point.name, point.step)] = point
    found = {key: point for key, point in latest.items() if (ctx.run_dir / point.path).is_dir()}
    root = ctx.quipu_dir / "checkpoints"
    unrecorded: list[Checkpoint] = []
    for leaf in sorted(root.glob("*/*")) if root.is_dir() else []:
        match = re.fullmatch(r"step_(\d+)|latest", leaf.name)
        if not leaf.is_dir() or match is None:
            continue
        key = (leaf.parent.name, int(match.group(1)) if match.group(1) else None)
        if key not in found:
            digest, size = hash_path(leaf)
            unrecorded.append(Checkpoint(name=key[0], step=key[1],
                                         path=leaf.relative_to(ctx.run_dir).as_posix(),
                                         sha256=digest, size=size, ts=leaf.stat().st_mtime))
    unrecorded.sort(key=lambda point: (point.ts, point.step or 0))
    return unrecorded + list(found.values())


def list_checkpoints(name: str | None = None) -> list[Checkpoint]:
    """Every checkpoint of the run (or of ``name``), oldest save first."""
    ctx = current()
    if name is not None:
        _check_name(name)
    return [point for point in catalogue(ctx) if name is None or point.name == name]


def load_checkpoint(name: str, step: int | None = None) -> Any:
    """The checkpoint saved last under ``name`` (or at ``step``), as it was saved.

    bytes come back as bytes, arrays as arrays, dicts and lists as themselves; a saved file
    comes back as the Path of its copy and a saved directory as the checkpoint directory.
    Raises :class:`CheckpointNotFound` when there is none, so a stage can start fresh.
    """
    ctx = current()
    _check_name(name)
    checked_step = _check_step(step)
    candidates = [point for point in catalogue(ctx) if point.name == name
                  and (checked_step is None or point.step == checked_step)]
    if not candidates:
        which = f"{name!r}" if checked_step is None else f"{name!r} at step {checked_step}"
        raise CheckpointNotFound(f"no checkpoint {which} in this run",
                                 hint="catch CheckpointNotFound to start from scratch; "
                                 "list_checkpoints() shows what exists")
    directory = ctx.run_dir / candidates[-1].path
    try:
        marker = json.loads((directory / _MARKER).read_text())
    except FileNotFoundError:
        return directory
    entry = directory / marker["entry"]
    kind = marker["kind"]
    if kind == "bytes":
        return entry.read_bytes()
    if kind == "npy":
        return np.load(entry, allow_pickle=False)
    if kind == "json":
        return json.loads(entry.read_text())
    if kind == "file":
        return entry
    return directory

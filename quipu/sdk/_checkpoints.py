"""Checkpoints: named, optionally stepped snapshots under ``.quipu/checkpoints/``.

Each checkpoint is a directory, ``<name>/step_<N>/`` or ``<name>/latest/``, built beside its
final place and renamed into it, so a stage killed mid-save leaves the previous one intact. A
hidden ``.checkpoint.json`` inside says how to load it back; ``.quipu/checkpoints.jsonl`` tells
the engine what was saved.

A run started with ``resume_from=RUN_ID`` is also given that run's recorded checkpoints under
``.quipu/resume/RUN_ID/`` (named in stage.json's ``resume_from``): ``load_checkpoint`` falls
back to them when the run has no checkpoint of its own by that name, or reads them when asked
with ``run_id=RUN_ID``. They are never the run's own (``list_checkpoints()`` and the engine's
record leave them out).
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

__all__ = ["MARKER", "Checkpoint", "catalogue", "fill", "list_checkpoints", "load_checkpoint",
           "resumed", "save_checkpoint"]

CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][\w.\-]{0,127}", re.ASCII)
MARKER = ".checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: ``path`` is relative to the run directory; ``run_id`` is set on
    a checkpoint of the run this one resumed from (None for the run's own)."""

    name: str
    step: int | None
    path: str
    sha256: str
    size: int
    ts: float
    run_id: str | None = None


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


def fill(staging: Path, data: Any) -> dict[str, Any]:
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
        marker = fill(staging, data)
        (staging / MARKER).write_text(json.dumps(marker))
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


def resumed(ctx: RunContext) -> tuple[str | None, list[Checkpoint]]:
    """(the run this one resumed from, the checkpoints it was given) from stage.json; (None,
    []) for a run not started with ``resume_from``. Ordered by name, then step."""
    info = ctx.stage_config().get("resume_from")
    if not isinstance(info, dict) or not info.get("run_id"):
        return None, []
    source = str(info["run_id"])
    points = [Checkpoint(name=str(c["name"]), step=c.get("step"), path=str(c["path"]),
                         sha256=str(c["sha256"]), size=int(c["size"]), ts=0.0, run_id=source)
              for c in info.get("checkpoints") or [] if isinstance(c, dict)]
    return source, points


def _scope(ctx: RunContext, run_id: str | None) -> tuple[list[Checkpoint], str]:
    """The checkpoints ``run_id`` names, and how to say where they were looked for."""
    source, given = resumed(ctx)
    if run_id is None or run_id == ctx.run_id:
        return catalogue(ctx), "this run"
    if run_id == source:
        return given, f"run {source} (resumed from)"
    also = f" or {source!r} (the run it resumed from)" if source else ""
    raise CheckpointNotFound(
        f"run {run_id!r} is not this run ({ctx.run_id!r}){also}: its checkpoints were not "
        "given to this run",
        hint=f"start the run with resume_from={run_id!r} (run(..., resume_from=...) or "
        "`quipu run start --resume-from`) to load that run's checkpoints")


def list_checkpoints(name: str | None = None, run_id: str | None = None) -> list[Checkpoint]:
    """Every checkpoint of the run (or of ``name``), oldest save first; with ``run_id`` set
    to the run this one resumed from, the checkpoints it was given instead."""
    ctx = current()
    if name is not None:
        _check_name(name)
    points, _ = _scope(ctx, run_id)
    return [point for point in points if name is None or point.name == name]


def load_checkpoint(name: str, step: int | None = None, run_id: str | None = None) -> Any:
    """The checkpoint saved last under ``name`` (or at ``step``), as it was saved.

    bytes come back as bytes, arrays as arrays, dicts and lists as themselves; a saved file
    comes back as the Path of its copy and a saved directory as the checkpoint directory.
    In a run started with ``resume_from``, a name this run has not saved is read from the run
    it resumed from (the highest step, unless ``step`` says which); ``run_id`` picks the run
    explicitly (this run's id, or the resumed-from run's). Raises :class:`CheckpointNotFound`
    when there is none, so a stage can start fresh.
    """
    ctx = current()
    _check_name(name)
    checked_step = _check_step(step)

    def matching(points: list[Checkpoint]) -> list[Checkpoint]:
        return [point for point in points if point.name == name
                and (checked_step is None or point.step == checked_step)]

    points, where = _scope(ctx, run_id)
    candidates = matching(points)
    source, given = resumed(ctx)
    if not candidates and run_id is None and source is not None:
        candidates, where = matching(given), f"this run or run {source} (resumed from)"
    if not candidates:
        which = f"{name!r}" if checked_step is None else f"{name!r} at step {checked_step}"
        raise CheckpointNotFound(f"no checkpoint {which} in {where}",
                                 hint="catch CheckpointNotFound to start from scratch; "
                                 "list_checkpoints() shows what exists"
                                 + (f", list_checkpoints(run_id={source!r}) what was given"
                                    if source else ""))
    directory = ctx.run_dir / candidates[-1].path
    try:
        marker = json.loads((directory / MARKER).read_text())
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

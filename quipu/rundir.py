"""The run-directory contract between the engine and stage code, defined once.

Stage code (``quipu.sdk``) and the executors (``quipu.adapters.executors``) talk only through
files in a run directory. Both import their names, extensions and hashing from here, so the two
sides cannot drift apart. This module imports nothing but the standard library: the SDK must
stand alone, and the engine must not pay for the SDK's imports (numpy) to learn a file name.

Layout::

    <run_dir>/
      code/        the workspace version's files
      inputs/      one read-only file or tree per declared input: <name><extension>
      outputs/     where the stage writes: <name><extension>
      .quipu/      stage.json (the engine's), the SDK's side files, the executor's own files
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "ARTIFACTS",
    "CHECKPOINTS",
    "CODE_DIR",
    "ENVIRONMENT",
    "ENV_INPUTS_DIR",
    "ENV_OUTPUTS_DIR",
    "ENV_PROBE_ENVIRONMENT",
    "ENV_RUN_DIR",
    "ENV_RUN_ID",
    "ENV_STAGE",
    "ENV_STAGE_CONFIG",
    "EXTENSIONS",
    "FINISH",
    "HEARTBEAT",
    "INPUTS_DIR",
    "METRICS",
    "OUTPUTS",
    "OUTPUTS_DIR",
    "RUNTIME_LOG",
    "SIDE_DIR",
    "STAGE_JSON",
    "STOP_REQUESTED",
    "WARNINGS",
    "file_digest",
    "hash_path",
    "output_filename",
    "tree_digest",
]

# --- directories and the environment that points at them ---------------------------------------

CODE_DIR = "code"
INPUTS_DIR = "inputs"
OUTPUTS_DIR = "outputs"
SIDE_DIR = ".quipu"

ENV_RUN_DIR = "QUIPU_RUN_DIR"
ENV_RUN_ID = "QUIPU_RUN_ID"
ENV_STAGE = "QUIPU_STAGE"
ENV_INPUTS_DIR = "QUIPU_INPUTS_DIR"
ENV_OUTPUTS_DIR = "QUIPU_OUTPUTS_DIR"
ENV_STAGE_CONFIG = "QUIPU_STAGE_CONFIG"
ENV_PROBE_ENVIRONMENT = "QUIPU_PROBE_ENVIRONMENT"
"""Set to ``1`` by a backend that wants the stage wrapper to write ``ENVIRONMENT``."""

# --- files under .quipu/ -------------------------------------------------------------------------

STAGE_JSON = "stage.json"
"""Written by the engine: run id, stage, config, declared inputs and outputs."""
OUTPUTS = "outputs.jsonl"
"""One line per saved output: name, path, type, sha256, size, stats."""
METRICS = "metrics.jsonl"
ARTIFACTS = "artifacts.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
WARNINGS = "warnings.jsonl"
RUNTIME_LOG = "runtime.log"
HEARTBEAT = "heartbeat"
FINISH = "finish.json"
ENVIRONMENT = "environment.json"
"""Written by the stage wrapper before the stage starts, when ``ENV_PROBE_ENVIRONMENT`` asks:
the environment as the stage sees it (interpreter, packages, platform, GPUs, variable names)."""
STOP_REQUESTED = "stop_requested"
"""Created by the engine to ask the stage to stop; the stage polls for it."""

# --- names and hashes of inputs and outputs ------------------------------------------------------

EXTENSIONS: Mapping[str, str] = MappingProxyType({"npy": ".npy", "csv": ".csv", "json": ".json"})
"""The extension a signal of each type gets; every other type gets none."""

_CHUNK = 1 << 20


def output_filename(name: str, signal_type: str | None) -> str:
    """The file name of signal ``name`` of ``signal_type`` inside ``inputs/`` or ``outputs/``."""
    return name + EXTENSIONS.get(signal_type or "", "")


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 and size in bytes of one file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def tree_digest(root: Path) -> tuple[str, int]:
    """The hash of a directory output: sha256 of ``<posix path>\\0<file sha256>\\n`` lines.

    One line per regular file under ``root``, in path order; the size is the sum of the files'
    sizes. The SDK records it in ``outputs.jsonl`` and the executor records the same number.
    """
    manifest = hashlib.sha256()
    total = 0
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest, size = file_digest(file)
        manifest.update(f"{file.relative_to(root).as_posix()}\0{digest}\n".encode())
        total += size
    return manifest.hexdigest(), total


def hash_path(path: Path) -> tuple[str, int]:
    """:func:`tree_digest` for a directory, :func:`file_digest` for a file."""
    return tree_digest(path) if path.is_dir() else file_digest(path)

"""Inputs and outputs: declared signals in ``stage.json``, files under ``inputs/`` and ``outputs/``.

File names, extensions and hashing come from :mod:`quipu.rundir`, the contract the executor
reads by. Every ``save_output`` writes the file through a temporary name and an atomic rename,
then appends one line to ``.quipu/outputs.jsonl`` with the file's sha256, size and summary
statistics, so the engine can record what the stage produced without reading the data twice.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quipu.outputcheck import Violation, check_array, check_columns, check_json_value
from quipu.rundir import ARTIFACTS, OUTPUTS, hash_path, output_filename
from quipu.sdk._context import (
    RunContext,
    SchemaMismatch,
    append_bytes,
    current,
    jsonl,
)
from quipu.sdk._metrics import METRIC_NAME

__all__ = [
    "STATS_SAMPLE_LIMIT",
    "array_stats",
    "get_input_path",
    "get_output_path",
    "hash_path",
    "load_input",
    "log_artifact",
    "output_filename",
    "save_output",
]

STATS_SAMPLE_LIMIT = 1_000_000
"""Arrays with more elements are summarised from an evenly strided, deterministic sample."""

_DECODERS = ("npy", "csv", "rows", "dataframe", "parquet", "json", "text", "bytes", "path")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def array_stats(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Shape, dtype and NaN-aware mean/std/min/max/null_ratio of an array.

    mean, std, min and max are over the finite values (None when there are none); null_ratio
    is the fraction of NaN. Arrays above :data:`STATS_SAMPLE_LIMIT` elements are summarised from
    every k-th element, so the same array always gives the same numbers (``sampled`` says so).
    """
    stats: dict[str, Any] = {
        "shape": list(array.shape), "dtype": str(array.dtype), "mean": None, "std": None,
        "min": None, "max": None, "null_ratio": None, "sampled": False,
    }
    if array.dtype.kind not in "biuf":
        return stats
    flat = array.reshape(-1)
    if flat.size > STATS_SAMPLE_LIMIT:
        flat = flat[:: math.ceil(flat.size / STATS_SAMPLE_LIMIT)]
        stats["sampled"] = True
    values = flat.astype(np.float64)
    stats["null_ratio"] = float(np.isnan(values).mean()) if values.size else 0.0
    finite = values[np.isfinite(values)]
    if finite.size:
        with np.errstate(all="ignore"):  # a sum of huge values overflows: reported as None
            mean, std = float(finite.mean()), float(finite.std())
        stats.update(mean=_finite_or_none(mean), std=_finite_or_none(std),
                     min=float(finite.min()), max=float(finite.max()))
    return stats


# --- inputs -----------------------------------------------------------------------------------


def get_input_path(name: str) -> Path:
    """The absolute path of input ``name`` (a file or a directory), as the executor staged it.

    Use it when you read the input yourself (a parquet file, a directory of images, a model
    checkpoint); use :func:`load_input` for npy, csv and json inputs.
    """
    ctx = current()
    spec = ctx.signal("inputs", name)
    raw = spec.get("path")
    default = ctx.inputs_dir / output_filename(name, spec.get("type", ""))
    path = ctx.run_dir / raw if raw else default
    if not path.exists():
        raise FileNotFoundError(
            f"input {name!r} is declared but not staged: {path} does not exist "
            "(the executor stages every input before the stage starts)"
        )
    return path


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError:
        raise ImportError(
            "this format needs pandas, which is not installed; install it, or load a CSV "
            "input with format='rows' for a list of dicts"
        ) from None


def _only_file(path: Path, suffix: str) -> Path:
    """A directory input holding one ``*suffix`` file stands for that file."""
    if not path.is_dir():
        return path
    found = sorted(path.glob(f"*{suffix}"))
    if len(found) != 1:
        raise ValueError(
            f"input directory {path} holds {len(found)} {suffix} files, expected exactly one; "
            "use get_input_path() and read the files yourself"
        )
    return found[0]


def load_input(name: str, format: str | None = None, *, mmap_mode: str | None = None) -> Any:
    """Input ``name`` loaded by its declared type, or by ``format`` when given.

    By type: npy -> numpy array (``mmap_mode="r"`` maps a large array instead of reading it);
    csv -> pandas DataFrame when pandas is installed, else a list of dict rows (all strings);
    json -> the parsed value; file, directory and dataset -> the Path.
    ``format`` overrides the type: one of npy, csv, rows, dataframe, parquet, json, text,
    bytes, path.
    """
    ctx = current()
    spec = ctx.signal("inputs", name)
    decoder = format or spec.get("type") or "path"
    if decoder in ("file", "directory", "dataset"):
        decoder = "path"
    if decoder not in _DECODERS:
        raise ValueError(f"unknown format {decoder!r}; use one of {', '.join(_DECODERS)}")
    path = get_input_path(name)
    if decoder == "path":
        return path
    if decoder == "npy":
        mode: Any = mmap_mode
        return np.load(_only_file(path, ".npy"), mmap_mode=mode, allow_pickle=False)
    if decoder == "json":
        return json.loads(_only_file(path, ".json").read_text())
    if decoder == "text":
        return path.read_text()
    if decoder == "bytes":
        return path.read_bytes()
    if decoder == "parquet":
        return _pandas().read_parquet(path)
    if decoder in ("csv", "dataframe"):
        try:
            pandas = _pandas()
        except ImportError:
            if decoder == "dataframe":
                raise
        else:
            return pandas.read_csv(_only_file(path, ".csv"))
    with _only_file(path, ".csv").open(newline="") as handle:
        return [dict(row) for row in csv.DictReader(handle)]


# --- outputs ----------------------------------------------------------------------------------


def get_output_path(name: str) -> Path:
    """Where output ``name`` must be written: ``outputs/<name>`` plus the type's extension.

    Use it when a library writes the file itself (``torch.save(model, get_output_path("m"))``);
    a directory output's directory is created. Then call ``save_output(name, path)`` to record
    its hash and size.
    """
    ctx = current()
    spec = ctx.signal("outputs", name)
    path = ctx.outputs_dir / output_filename(name, spec.get("type", "file"))
    if spec.get("type") == "directory":
        path.mkdir(parents=True, exist_ok=True)
    else:
        ctx.outputs_dir.mkdir(parents=True, exist_ok=True)
    return path


def _mismatch(name: str, problem: str) -> SchemaMismatch:
    return SchemaMismatch(
        f"output {name!r} does not match its declared schema: {problem}",
        hint="change the data to fit, or change the schema declared for the output",
    )


def _enforce(ctx: RunContext, name: str, spec: Mapping[str, Any],
             violations: list[Violation]) -> list[dict[str, str]]:
    """Apply the output's contract mode to what its data breaks.

    ``blocking`` (also for a run directory that names no mode: the behaviour before modes
    existed) raises :class:`SchemaMismatch` and nothing is written; ``warning`` warns the
    stage author and returns the violations for the output's record; ``silent`` was never
    asked to check.
    """
    if not violations:
        return []
    text = "; ".join(v.message for v in violations)
    if (spec.get("contract") or "blocking") == "blocking":
        raise _mismatch(name, text)
    ctx.warn("contract", f"output {name!r} does not match its declared schema: {text} "
             "(written anyway: the contract mode is warning)", stacklevel=3)
    return [{"signal": v.signal, "message": v.message} for v in violations]


def _ragged(columns: list[str], rows: list[list[Any]] | None) -> list[Violation]:
    if rows is None:
        return []
    bad = [(i + 1, len(row)) for i, row in enumerate(rows) if len(row) != len(columns)]
    if not bad:
        return []
    shown = ", ".join(f"row {n} has {k}" for n, k in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return [Violation("ragged_csv", f"the header has {len(columns)} fields but {shown}{more}; "
                      "every row needs one field per column")]


def _table(data: Any) -> tuple[list[str], list[list[Any]] | None, Any]:
    """Columns, rows (None for a DataFrame) and the DataFrame of a table-like value."""
    if hasattr(data, "to_pylist") and hasattr(data, "column_names"):  # a pyarrow Table
        data = data.to_pylist()
    if hasattr(data, "to_csv") and hasattr(data, "columns"):  # a pandas DataFrame
        return [str(c) for c in data.columns], None, data
    if isinstance(data, str | bytes) or not isinstance(data, Sequence):
        raise TypeError(
            f"a csv output takes a DataFrame, a list of dicts or a list of rows whose first "
            f"row is the header; got {type(data).__name__}"
        )
    if data and all(isinstance(row, Mapping) for row in data):
        columns: list[str] = []
        for row in data:
            columns.extend(str(key) for key in row if str(key) not in columns)
        return columns, [[row.get(c, "") for c in columns] for row in data], None
    rows = [list(row) for row in data]
    return ([str(c) for c in rows[0]] if rows else []), rows[1:], None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable; convert it first")


def _copy_into(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=False)
    else:
        shutil.copyfile(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def save_output(name: str, data: Any, *, artifact: bool = False) -> Path:
    """Write output ``name`` from ``data``, check it against its schema and record it.

    Use it for every output the stage declares. npy takes anything ``numpy.asarray`` takes;
    csv a DataFrame, a list of dicts, or a list of rows with the header first; json any
    JSON-able value (numpy values included); file takes bytes or a Path to copy; directory a
    Path to a directory to copy (pass ``get_output_path(name)`` after writing in place).
    Raises :class:`UnknownSignal` for an undeclared name and :class:`SchemaMismatch` when the
    data breaks the declared schema (nothing is written then). ``artifact=True`` also records
    the output in ``.quipu/artifacts.jsonl``. Returns the output's path.
    """
    ctx = current()
    spec = ctx.signal("outputs", name)
    kind = spec.get("type") or "file"
    schema = spec.get("schema") or {}
    checked = spec.get("contract") != "silent"
    broken: list[dict[str, str]] = []
    target = get_output_path(name)
    tmp = ctx.outputs_dir / f".{name}.{uuid.uuid4().hex}.tmp"
    stats: dict[str, Any]
    try:
        if kind == "npy":
            array = np.asarray(data)
            if array.dtype.kind == "O":
                raise TypeError(f"output {name!r}: an object array cannot be saved as npy "
                                "without pickle; give it a numeric or string dtype")
            if checked:
                broken = _enforce(ctx, name, spec,
                                  check_array(array.shape, array.dtype, schema))
            with tmp.open("wb") as handle:
                np.save(handle, array, allow_pickle=False)
            stats = array_stats(array)
        elif kind == "csv":
            columns, rows, frame = _table(data)
            if checked:
                broken = _enforce(ctx, name, spec, _ragged(columns, rows)
                                  + check_columns(columns, schema))
            if frame is not None:
                frame.to_csv(tmp, index=False)
                rows_count = len(frame)
            else:
                assert rows is not None
                with tmp.open("w", newline="") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(columns)
                    writer.writerows(rows)
                rows_count = len(rows)
            stats = {"rows": rows_count, "columns": columns}
        elif kind == "json":
            try:
                text = json.dumps(data, allow_nan=False, default=_json_default)
            except ValueError as exc:  # NaN or Infinity: the file would not be JSON
                raise _mismatch(name, f"the value is not JSON ({exc}); replace NaN and "
                                "Infinity with null or a number") from None
            value = json.loads(text)
            if checked:
                broken = _enforce(ctx, name, spec, check_json_value(value, schema))
            tmp.write_text(text)
            stats = {"json_type": type(value).__name__}
        else:
            stats = _save_file(name, data, kind, target, tmp)
        if tmp.exists() or tmp.is_symlink():
            _remove(target)
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            _remove(tmp)
    digest, size = hash_path(target)
    if target.is_dir():
        stats["files"] = sum(1 for p in target.rglob("*") if p.is_file())
    record = {
        "name": name, "path": target.relative_to(ctx.run_dir).as_posix() if
        target.is_relative_to(ctx.run_dir) else str(target),
        "type": kind, "sha256": digest, "size": size, "stats": stats,
        **({"contract": broken} if broken else {}),
    }
    append_bytes(ctx.side_file(OUTPUTS), jsonl([record]))
    if artifact:
        _record_artifact(ctx, name, target)
    return target


def _save_file(name: str, data: Any, kind: str, target: Path, tmp: Path) -> dict[str, Any]:
    if isinstance(data, bytes | bytearray | memoryview) and kind != "directory":
        tmp.write_bytes(bytes(data))
        return {}
    if isinstance(data, os.PathLike):
        source = Path(data)
        if not source.exists():
            raise FileNotFoundError(f"output {name!r}: {source} does not exist")
        if kind == "directory" and not source.is_dir():
            raise TypeError(f"output {name!r} is a directory output; {source} is a file")
        if source.resolve() != target.resolve():
            _copy_into(source, tmp)
        return {}
    if isinstance(data, str):
        raise TypeError(
            f"output {name!r}: a str is ambiguous; pass Path(...) to copy a file or "
            "text.encode() to write text"
        )
    raise TypeError(f"output {name!r} of type {kind} takes bytes or a Path, "
                    f"got {type(data).__name__}")


# --- artifacts --------------------------------------------------------------------------------


def _record_artifact(ctx: RunContext, name: str, path: Path) -> None:
    relpath = path.resolve().relative_to(ctx.outputs_dir.resolve()).as_posix()
    append_bytes(ctx.side_file(ARTIFACTS), jsonl([{"name": name, "path": relpath}]))


def log_artifact(name: str, relpath: str | os.PathLike[str]) -> None:
    """Point the engine at a file or directory inside ``outputs/`` worth keeping by name.

    Use it for things that are not declared outputs but matter later (a plot, a sample of
    predictions). ``relpath`` is relative to ``outputs/`` and must exist and stay inside it.
    """
    ctx = current()
    if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
        raise ValueError(f"invalid artifact name {name!r}: use letters, digits, '_', '.', '-', "
                         "'/' or ':', starting with a letter")
    raw = Path(relpath)
    root = ctx.outputs_dir.resolve()
    if raw.is_absolute():
        raise ValueError(f"artifact path {str(raw)!r} is absolute; give it relative to "
                         f"outputs/, e.g. {raw.name!r} for {root / raw.name}")
    resolved = (root / raw).resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"artifact path {str(raw)!r} leaves outputs/ (it resolves to "
                         f"{resolved}); write the file under {root} and log it from there")
    if not resolved.exists():
        raise FileNotFoundError(f"artifact {name!r}: {resolved} does not exist; write it "
                                "before logging it")
    _record_artifact(ctx, name, resolved)


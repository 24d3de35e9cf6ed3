"""Test a stage without an executor: a real run directory, built and read back for you.

::

    from quipu.sdk import testing

    def test_training_logs_a_falling_loss(tmp_path):
        with testing.stage(inputs={"digits": np.zeros((10, 8))}, config={"epochs": 3},
                           outputs={"model": "npy"}, tmp_path=tmp_path) as run:
            train.main()
        assert run.metric("loss") == sorted(run.metric("loss"), reverse=True)
        assert run.output("model").shape == (8,)

Inside the ``with`` block the ``QUIPU_*`` variables point at the directory, so the stage code
runs exactly as under the executor (``run.env`` hands them to a subprocess). Leaving the block
flushes the SDK's buffers and restores the environment; the directory and ``run`` stay readable.

A stage that resumes is tested with the checkpoints it would be given::

    with testing.stage(resume_from={"model": {40: weights}}, resume_run_id="stage-a") as run:
        train.main()   # sdk.load_checkpoint("model") returns weights (step 40 of stage-a)
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quipu import rundir
from quipu.rundir import output_filename
from quipu.sdk import _context
from quipu.sdk._checkpoints import MARKER, Checkpoint, catalogue, fill

__all__ = ["Input", "MetricPoint", "StageRun", "stage"]

_TYPES = ("npy", "csv", "json", "file", "directory", "dataset")


@dataclass(frozen=True)
class Input:
    """An input with its type, format or schema spelled out, when guessing is not enough."""

    data: Any
    type: str | None = None
    format: str | None = None
    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class MetricPoint:
    """One line of ``.quipu/metrics.jsonl`` (a non-finite point's value is NaN or ±inf)."""

    name: str
    value: float
    step: int | None
    ts: float


@dataclass
class StageRun:
    """A run directory made by :func:`stage`, with readers for everything the stage wrote."""

    run_dir: Path
    run_id: str
    stage: str
    env: dict[str, str]
    declared_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def quipu_dir(self) -> Path:
        """The side-file directory, ``run_dir/.quipu``."""
        return self.run_dir / ".quipu"

    def _flush(self) -> None:
        # Points still buffered in this process belong in the file before anyone reads it.
        if os.environ.get(rundir.ENV_RUN_DIR) == str(self.run_dir):
            _context.flush(_context.current())

    def _lines(self, name: str) -> list[dict[str, Any]]:
        self._flush()
        return _context.read_jsonl(self.quipu_dir / name)

    @property
    def metrics(self) -> list[MetricPoint]:
        """Every metric point written so far, in file order."""
        return [MetricPoint(line["name"],
                            float(line["non_finite"]) if line.get("non_finite") else line["value"],
                            line["step"], line["ts"])
                for line in self._lines("metrics.jsonl")]

    def metric(self, name: str) -> list[float]:
        """The values of one metric, in the order they were logged."""
        return [point.value for point in self.metrics if point.name == name]

    @property
    def output_records(self) -> list[dict[str, Any]]:
        """The lines of ``.quipu/outputs.jsonl`` (name, path, type, sha256, size, stats)."""
        return self._lines("outputs.jsonl")

    @property
    def outputs(self) -> dict[str, Path]:
        """Declared outputs that exist on disk: name -> path."""
        found: dict[str, Path] = {}
        for name, spec in self.declared_outputs.items():
            path = self.run_dir / "outputs" / output_filename(name, spec.get("type", "file"))
            if path.exists():
                found[name] = path
        return found

    def output(self, name: str) -> Any:
        """Output ``name`` loaded by its type: array, DataFrame or rows, JSON value, or Path."""
        if name not in self.declared_outputs:
            declared = sorted(self.declared_outputs)
            raise KeyError(f"no output {name!r} declared; declared: {declared}")
        if name not in self.outputs:
            raise FileNotFoundError(f"the stage did not write output {name!r}")
        path = self.outputs[name]
        kind = self.declared_outputs[name].get("type")
        if kind == "npy":
            return np.load(path, allow_pickle=False)
        if kind == "json":
            return json.loads(path.read_text())
        if kind == "csv":
            try:
                return importlib.import_module("pandas").read_csv(path)
            except ImportError:
                with path.open(newline="") as handle:
                    return [dict(row) for row in csv.DictReader(handle)]
        return path

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """The lines of ``.quipu/artifacts.jsonl``."""
        return self._lines("artifacts.jsonl")

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """The run's checkpoints, oldest save first."""
        # Read directly, so inspecting a finished run does not re-enter it.
        ctx = _context.RunContext(
            run_dir=self.run_dir, inputs_dir=self.run_dir / "inputs",
            outputs_dir=self.run_dir / "outputs", stage_config_path=self.quipu_dir / "stage.json",
        )
        return catalogue(ctx)

    @property
    def warnings(self) -> list[dict[str, Any]]:
        """The lines of ``.quipu/warnings.jsonl`` (ts, kind, message)."""
        return self._lines("warnings.jsonl")

    @property
    def log_lines(self) -> list[str]:
        """The lines of ``.quipu/runtime.log``, without line endings."""
        path = self.quipu_dir / "runtime.log"
        return path.read_text().splitlines() if path.exists() else []

    @property
    def heartbeat(self) -> dict[str, Any] | None:
        """The last heartbeat written, or None."""
        path = self.quipu_dir / "heartbeat"
        return json.loads(path.read_text()) if path.exists() else None

    @property
    def finished(self) -> dict[str, Any] | None:
        """``.quipu/finish.json`` once the stage called ``finish()``, else None."""
        path = self.quipu_dir / "finish.json"
        return json.loads(path.read_text()) if path.exists() else None

    def request_stop(self) -> None:
        """Ask the stage to stop, as the engine does: ``should_stop()`` turns True."""
        self.quipu_dir.mkdir(parents=True, exist_ok=True)
        (self.quipu_dir / rundir.STOP_REQUESTED).touch()


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _guess_type(data: Any) -> str:
    if isinstance(data, np.ndarray):
        return "npy"
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if path.is_dir():
            return "directory"
        return {".npy": "npy", ".csv": "csv", ".json": "json"}.get(path.suffix, "file")
    if hasattr(data, "to_csv") and hasattr(data, "columns"):
        return "csv"
    if isinstance(data, bytes):
        return "file"
    if isinstance(data, Mapping):
        return "json"
    if isinstance(data, Sequence):
        return "csv"
    raise TypeError(f"cannot tell how to stage a {type(data).__name__} as an input; "
                    "wrap it in testing.Input(data, type=...)")


def _write_rows(path: Path, data: Sequence[Any]) -> None:
    rows: list[list[Any]]
    if data and all(isinstance(row, Mapping) for row in data):
        columns: list[str] = []
        for row in data:
            columns.extend(str(key) for key in row if str(key) not in columns)
        rows = [columns, *([row.get(c, "") for c in columns] for row in data)]
    else:
        rows = [list(row) for row in data]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def _stage_input(inputs_dir: Path, name: str, given: Any) -> dict[str, Any]:
    """Put one input under ``inputs/`` and return its stage.json entry."""
    spec = given if isinstance(given, Input) else Input(given)
    kind = spec.type or _guess_type(spec.data)
    if kind not in _TYPES:
        raise ValueError(f"input {name!r}: unknown type {kind!r}; use one of {_TYPES}")
    data = spec.data
    if isinstance(data, str | os.PathLike):
        source = Path(data)
        if not source.exists():
            raise FileNotFoundError(f"input {name!r}: {source} does not exist")
        target = inputs_dir / (name + (source.suffix if source.is_file() else ""))
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
    else:
        target = inputs_dir / output_filename(name, kind)
        if kind == "npy":
            np.save(target, np.asarray(data), allow_pickle=False)
        elif kind == "json":
            target.write_text(json.dumps(data))
        elif kind == "csv" and hasattr(data, "to_csv"):
            data.to_csv(target, index=False)
        elif kind == "csv":
            _write_rows(target, data)
        elif isinstance(data, bytes):
            target.write_bytes(data)
        else:
            raise TypeError(f"input {name!r} of type {kind} takes bytes or a path")
    return {"path": target.relative_to(inputs_dir.parent).as_posix(), "type": kind,
            "format": spec.format, "schema": dict(spec.schema) if spec.schema else None}


def _output_spec(name: str, given: str | Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": given} if isinstance(given, str) else dict(given)
    kind = spec.setdefault("type", "file")
    if kind not in _TYPES:
        raise ValueError(f"output {name!r}: unknown type {kind!r}; use one of {_TYPES}")
    spec.setdefault("format", None)
    spec.setdefault("schema", None)
    return spec


def _resumed(run_dir: Path, source: str,
             given: Mapping[str, Mapping[int | None, Any]]) -> dict[str, Any]:
    """Write checkpoints under ``.quipu/resume/<source>/`` as the executor restores them;
    return stage.json's ``resume_from``."""
    points: list[dict[str, Any]] = []
    for name, steps in sorted(given.items()):
        for step in sorted(steps, key=lambda s: -1 if s is None else s):
            leaf = "latest" if step is None else f"step_{step}"
            directory = run_dir / ".quipu" / "resume" / source / name / leaf
            directory.mkdir(parents=True)
            (directory / MARKER).write_text(json.dumps(fill(directory, steps[step])))
            digest, size = rundir.hash_path(directory)
            points.append({"name": name, "step": step, "sha256": digest, "size": size,
                           "path": directory.relative_to(run_dir).as_posix()})
    return {"run_id": source, "stage": None, "checkpoints": points}


@contextmanager
def stage(
    inputs: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    outputs: Mapping[str, str | Mapping[str, Any]] | None = None,
    tmp_path: Path | None = None,
    *,
    run_id: str = "test-run",
    stage_name: str = "test-stage",
    workspace: str = "test",
    resume_from: Mapping[str, Mapping[int | None, Any]] | None = None,
    resume_run_id: str = "resumed-run",
) -> Iterator[StageRun]:
    """Run the body inside a fresh run directory laid out as the executor lays it out.

    ``inputs`` maps names to a numpy array, a DataFrame, a list of dict rows (or of rows with
    the header first), a dict (json), bytes, a path to a file or directory, or an
    :class:`Input`. ``outputs`` maps names to a type (``"npy"``) or a spec
    (``{"type": "npy", "schema": {"shape": [None, 10]}}``). The directory is made under
    ``tmp_path`` when given (pytest's fixture), otherwise in the system temp directory and
    removed once the returned run object is garbage-collected. ``resume_from`` gives the run
    checkpoints of the run ``resume_run_id`` as the executor gives a run started with
    ``resume_from``: ``{name: {step: data}}`` (step None for a ``latest`` checkpoint; data as
    ``save_checkpoint`` takes it).
    """
    if tmp_path is None:
        run_dir = Path(tempfile.mkdtemp(prefix="quipu-run-"))
    else:
        Path(tmp_path).mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="quipu-run-", dir=tmp_path))
    run_dir = run_dir.absolute()
    for sub in ("inputs", "outputs", ".quipu"):
        (run_dir / sub).mkdir()
    declared_inputs = {name: _stage_input(run_dir / "inputs", name, value)
                       for name, value in (inputs or {}).items()}
    declared_outputs = {name: _output_spec(name, value) for name, value in (outputs or {}).items()}
    description = {"run_id": run_id, "stage": stage_name, "workspace": workspace,
                   "config": dict(config or {}), "inputs": declared_inputs,
                   "outputs": declared_outputs}
    if resume_from is not None:
        description["resume_from"] = _resumed(run_dir, resume_run_id, resume_from)
    (run_dir / ".quipu" / "stage.json").write_text(json.dumps(description, indent=2))
    env = {
        rundir.ENV_RUN_DIR: str(run_dir),
        rundir.ENV_RUN_ID: run_id,
        rundir.ENV_STAGE: stage_name,
        rundir.ENV_INPUTS_DIR: str(run_dir / rundir.INPUTS_DIR),
        rundir.ENV_OUTPUTS_DIR: str(run_dir / rundir.OUTPUTS_DIR),
        rundir.ENV_STAGE_CONFIG: str(run_dir / rundir.SIDE_DIR / rundir.STAGE_JSON),
    }
    run = StageRun(run_dir=run_dir, run_id=run_id, stage=stage_name, env=env,
                   declared_outputs=declared_outputs)
    if tmp_path is None:
        weakref.finalize(run, shutil.rmtree, run_dir, ignore_errors=True)
    _context.release(run_dir)
    try:
        with _environment(env):
            yield run
    finally:
        _context.release(run_dir)

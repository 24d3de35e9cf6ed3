"""The run directory a stage runs in, its errors, and its small control files.

Errors, drawn here once::

    SdkError                  anything the stage SDK refuses; str() includes the hint
     +-- NotInRun             no run directory: the code is not running inside a Quipu run
     +-- UnknownSignal        an input or output name that stage.json does not declare
     +-- SchemaMismatch       data that does not fit the declared output schema
     +-- CheckpointNotFound   no checkpoint saved under that name (and step)

The engine and the stage talk only through files under ``$QUIPU_RUN_DIR`` (see docs/sdk.md).
Everything written here is appended with one ``os.write`` of whole lines, or replaced with a
temporary file and ``os.replace``, so a reader in another process never sees half a record.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quipu.rundir import (
    ENV_INPUTS_DIR,
    ENV_OUTPUTS_DIR,
    ENV_RUN_DIR,
    ENV_RUN_ID,
    ENV_STAGE,
    ENV_STAGE_CONFIG,
    FINISH,
    HEARTBEAT,
    INPUTS_DIR,
    OUTPUTS_DIR,
    RUNTIME_LOG,
    SIDE_DIR,
    STAGE_JSON,
    STOP_REQUESTED,
    WARNINGS,
)

__all__ = [
    "CheckpointNotFound",
    "NotInRun",
    "RunContext",
    "SchemaMismatch",
    "SdkError",
    "SdkWarning",
    "UnknownSignal",
    "current",
    "finish",
    "get_config",
    "heartbeat",
    "runtime_log",
    "should_stop",
]


class SdkError(Exception):
    """The stage SDK refused a call."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class NotInRun(SdkError, RuntimeError):
    """This code is not running inside a Quipu run (QUIPU_RUN_DIR is not set)."""


class UnknownSignal(SdkError, LookupError):
    """stage.json declares no input or output by that name."""


class SchemaMismatch(SdkError, ValueError):
    """The data does not fit the schema declared for the output."""


class CheckpointNotFound(SdkError, LookupError):
    """No checkpoint was saved under that name (and step)."""


class SdkWarning(UserWarning):
    """The SDK skipped something (a rejected metric point, a dropped log line) and went on."""


RUNTIME_LOG_LIMIT = 10 * 1024 * 1024
"""Bytes of .quipu/runtime.log, truncation notice included, after which lines are dropped."""
HEARTBEAT_INTERVAL = 1.0
"""Seconds between two heartbeats that are actually written (unless forced)."""
WARNINGS_PER_KIND = 1000
"""Lines per warning kind in .quipu/warnings.jsonl; one notice follows, then silence."""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_NOT_IN_RUN_HINT = (
    "stage code runs under the Quipu executor, which sets QUIPU_RUN_DIR; to run a stage "
    "function in a test, wrap it in `with quipu.sdk.testing.stage(...) as run:`"
)


def iso_now() -> str:
    """The current time as an ISO 8601 string in UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def write_all(fd: int, data: bytes) -> None:
    """Write every byte; one ``os.write`` for anything a regular file accepts at once."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def append_bytes(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` in a single write to an O_APPEND descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def jsonl(records: Iterable[Mapping[str, Any]]) -> bytes:
    """Records as newline-terminated compact JSON lines (strict JSON: no NaN)."""
    return b"".join(
        json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        for record in records
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSONL file; a trailing partial line is still being written."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    complete, _, _partial = data.rpartition(b"\n")
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def replace_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(obj, allow_nan=False))
    os.replace(tmp, path)


@dataclass
class RunContext:
    """One run directory as this process sees it, with the little state the SDK keeps."""

    run_dir: Path
    inputs_dir: Path
    outputs_dir: Path
    stage_config_path: Path
    lock: threading.RLock = field(default_factory=threading.RLock)
    _stage_config: dict[str, Any] | None = None
    _log_bytes: int | None = None
    _log_truncated: bool = False
    _last_heartbeat: float | None = None
    _warning_counts: dict[str, int] = field(default_factory=dict)

    @property
    def quipu_dir(self) -> Path:
        """``$QUIPU_RUN_DIR/.quipu``: the side files the engine reads."""
        return self.run_dir / SIDE_DIR

    def side_file(self, name: str) -> Path:
        """A file under ``.quipu/``, creating the directory on first use."""
        self.quipu_dir.mkdir(parents=True, exist_ok=True)
        return self.quipu_dir / name

    def stage_config(self) -> dict[str, Any]:
        """The parsed ``.quipu/stage.json`` (read once per run directory)."""
        with self.lock:
            if self._stage_config is None:
                try:
                    loaded = json.loads(self.stage_config_path.read_text())
                except FileNotFoundError:
                    raise NotInRun(
                        f"the run directory {self.run_dir} has no stage description at "
                        f"{self.stage_config_path}",
                        hint="the executor writes .quipu/stage.json before the stage starts; "
                        "in tests, use quipu.sdk.testing.stage(...)",
                    ) from None
                if not isinstance(loaded, dict):
                    raise NotInRun(f"{self.stage_config_path} does not hold a JSON object")
                self._stage_config = loaded
            return self._stage_config

    @property
    def run_id(self) -> str:
        """The run's id, from the environment or stage.json."""
        return os.environ.get(ENV_RUN_ID) or str(self.stage_config().get("run_id", ""))

    @property
    def stage(self) -> str:
        """The stage's name, from the environment or stage.json."""
        return os.environ.get(ENV_STAGE) or str(self.stage_config().get("stage", ""))

    def signals(self, direction: str) -> dict[str, dict[str, Any]]:
        """The declared ``"inputs"`` or ``"outputs"``: name -> spec."""
        declared = self.stage_config().get(direction) or {}
        return {str(name): dict(spec or {}) for name, spec in declared.items()}

    def signal(self, direction: str, name: str) -> dict[str, Any]:
        """One declared signal's spec, or :class:`UnknownSignal` naming the declared ones."""
        declared = self.signals(direction)
        if name not in declared:
            singular = direction.rstrip("s")
            known = ", ".join(sorted(declared)) or "none"
            raise UnknownSignal(
                f"stage {self.stage!r} declares no {singular} named {name!r}; "
                f"declared {direction}: {known}",
                hint=f"use one of the declared names, or declare the {singular} in the "
                "stage's pipeline entry",
            )
        return declared[name]

    def warn(self, kind: str, message: str, *, stacklevel: int = 2) -> None:
        """Tell the stage author (a Python warning) and the engine (warnings.jsonl)."""
        warnings.warn(message, SdkWarning, stacklevel=stacklevel + 1)
        with self.lock:
            count = self._warning_counts.get(kind, 0) + 1
            self._warning_counts[kind] = count
            if count > WARNINGS_PER_KIND + 1:
                return
            if count == WARNINGS_PER_KIND + 1:
                message = f"more than {WARNINGS_PER_KIND} {kind} warnings; further ones dropped"
            record = {"ts": time.time(), "kind": kind, "message": message}
            append_bytes(self.side_file(WARNINGS), jsonl([record]))


_contexts: dict[Path, RunContext] = {}
_contexts_lock = threading.Lock()
_by_raw: dict[str, RunContext] = {}
_flush_hooks: list[Callable[[RunContext], None]] = []
_release_hooks: list[Callable[[RunContext], None]] = []


def current() -> RunContext:
    """The run this process is in, from ``$QUIPU_RUN_DIR``; :class:`NotInRun` otherwise."""
    raw = os.environ.get(ENV_RUN_DIR)
    if not raw:
        raise NotInRun("not inside a Quipu run: QUIPU_RUN_DIR is not set", hint=_NOT_IN_RUN_HINT)
    # Hot path (every log_metric call): an absolute QUIPU_RUN_DIR seen before maps straight to
    # its context, without building a Path; a released context is never returned.
    known = _by_raw.get(raw)
    if known is not None and _contexts.get(known.run_dir) is known:
        return known
    run_dir = Path(raw).absolute()
    with _contexts_lock:
        ctx = _contexts.get(run_dir)
        if ctx is None:
            if not run_dir.is_dir():
                raise NotInRun(
                    f"QUIPU_RUN_DIR={raw} is not a directory", hint=_NOT_IN_RUN_HINT
                )
            ctx = RunContext(
                run_dir=run_dir,
                inputs_dir=Path(os.environ.get(ENV_INPUTS_DIR) or run_dir / INPUTS_DIR),
                outputs_dir=Path(os.environ.get(ENV_OUTPUTS_DIR) or run_dir / OUTPUTS_DIR),
                stage_config_path=Path(
                    os.environ.get(ENV_STAGE_CONFIG) or run_dir / SIDE_DIR / STAGE_JSON
                ),
            )
            _contexts[run_dir] = ctx
        if raw.startswith("/"):
            _by_raw[raw] = ctx
        return ctx


def on_flush(hook: Callable[[RunContext], None]) -> None:
    """Run ``hook(ctx)`` whenever a run's buffers must reach disk (finish, release)."""
    _flush_hooks.append(hook)


def on_release(hook: Callable[[RunContext], None]) -> None:
    """Run ``hook(ctx)`` after a run is flushed for the last time, to drop its state."""
    _release_hooks.append(hook)


def flush(ctx: RunContext) -> None:
    """Push every buffer the SDK holds for ``ctx`` to disk."""
    for hook in _flush_hooks:
        hook(ctx)


def release(run_dir: Path) -> None:
    """Flush and forget a run directory (the testing harness calls this when a run ends)."""
    with _contexts_lock:
        ctx = _contexts.pop(run_dir.absolute(), None)
    if ctx is not None:
        flush(ctx)
        for hook in _release_hooks:
            hook(ctx)


def _fresh_locks_after_fork() -> None:
    # Another thread may have held a lock at the instant of fork; the child starts clean.
    global _contexts_lock
    _contexts_lock = threading.Lock()
    for ctx in _contexts.values():
        ctx.lock = threading.RLock()


os.register_at_fork(after_in_child=_fresh_locks_after_fork)


def get_config() -> dict[str, Any]:
    """The stage's resolved configuration (a copy: changing it changes nothing recorded).

    Use it for every tunable a stage reads (learning rate, epochs, paths inside inputs), so
    the engine records exactly which values produced the outputs.
    """
    config = current().stage_config().get("config") or {}
    return copy.deepcopy(dict(config))


def runtime_log(message: str, level: str = "INFO") -> None:
    """Append ``ISO-time LEVEL message`` to ``.quipu/runtime.log``.

    Use it for progress an agent or person should read while the run goes (epoch summaries,
    data checks). Lines after a message's first are indented by two spaces. The file is capped
    at 10 MB: past that, one ``runtime log truncated`` line is written and later lines dropped.
    """
    ctx = current()
    level = level.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
    text = str(message).replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\n  ")
    line = f"{iso_now()} {level} {text}\n".encode()
    path = ctx.side_file(RUNTIME_LOG)
    with ctx.lock:
        if ctx._log_truncated:
            return
        if ctx._log_bytes is None:
            ctx._log_bytes = path.stat().st_size if path.exists() else 0
        notice = f"{iso_now()} WARNING runtime log truncated at 10 MB\n".encode()
        if ctx._log_bytes + len(line) + len(notice) > RUNTIME_LOG_LIMIT:
            ctx._log_truncated = True
            append_bytes(path, notice)
            ctx._log_bytes += len(notice)
            return
        append_bytes(path, line)
        ctx._log_bytes += len(line)


def heartbeat(message: str | None = None, force: bool = False) -> bool:
    """Tell the engine the stage is alive; returns whether a heartbeat was written.

    Call it from long loops (every batch is fine): writes are rate-limited to one per second
    unless ``force=True``. A run that stops beating is eventually declared lost.
    """
    ctx = current()
    now = time.monotonic()
    with ctx.lock:
        last = ctx._last_heartbeat
        if not force and last is not None and now - last < HEARTBEAT_INTERVAL:
            return False
        ctx._last_heartbeat = now
        replace_json(ctx.side_file(HEARTBEAT), {"ts": time.time(), "message": message})
    return True


def should_stop() -> bool:
    """Whether the engine asked this run to stop (``.quipu/stop_requested`` exists).

    Check it between steps of a long loop; when it is True, save a checkpoint and return.
    """
    return (current().quipu_dir / STOP_REQUESTED).exists()


def finish() -> None:
    """Flush every buffered metric and mark the stage as having ended normally.

    Call it last in a stage. Buffers are also flushed at interpreter exit, so a stage that
    forgets to call it loses no metrics, but only ``finish()`` writes ``.quipu/finish.json``.
    """
    ctx = current()
    flush(ctx)
    replace_json(ctx.side_file(FINISH), {"ts": time.time(), "status": "ok"})

"""The default executor: the executor loop with the local-process backend.

``LocalExecutor`` is ``StageExecutor`` (``executor.py``: claims, queue, deadlines, recovery,
metrics, checkpoints, outputs) whose ``local`` backend is a ``LocalProcessBackend``
(``process.py``: each stage a process group on this machine). Other backends (``docker``)
are added beside it in ``backends``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quipu.core.ports import BlobStore, EventStore, StageBackend
from quipu.core.runs.handlers import RunService

from .executor import StageExecutor, read_log
from .process import LocalProcessBackend

__all__ = ["LocalExecutor", "read_log"]


class LocalExecutor(StageExecutor):
    """Runs queued stages as local processes (and through any other ``backends`` given)."""

    def __init__(self, runs_dir: Path, store: EventStore, blobs: BlobStore, runs: RunService,
                 *, worker_id: str, backends: Mapping[str, StageBackend] | None = None,
                 **options: Any) -> None:
        chosen: dict[str, StageBackend] = {"local": LocalProcessBackend(blobs)}
        chosen.update(backends or {})
        super().__init__(runs_dir, store, blobs, runs, worker_id=worker_id, backends=chosen,
                         **options)

    @property
    def probe(self) -> Any:
        """The local backend's environment probe (its cache counts the probes it ran)."""
        return getattr(self.backends["local"], "probe", None)

"""The one composition root: a project's ``quipu.yaml`` -> concrete adapters -> ``Quipu``.

Only this module turns configuration into adapters: the log (SQLite or PostgreSQL), the blob
store, the slot files, the views, the clock and the executor. The facade is handed them; the
entry points (CLI, MCP server, demo) call ``open_project`` / ``init_project`` and the facade.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quipu.adapters.blobs import LocalBlobStore
from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.seals import LocalSealKeeper, open_local_seals
from quipu.adapters.slots import LocalSlotFiles
from quipu.app.config import (
    CONFIG_FILE,
    DATA_DIR,
    Config,
    find_project,
    load_config,
    write_config,
)
from quipu.app.facade import Quipu
from quipu.core.audit import AuditReport, Seal, make_seal, verify_log
from quipu.core.errors import Conflict, InvalidInput
from quipu.core.ports import EventStore, Executor
from quipu.core.runs.handlers import RunService
from quipu.core.validation import check_name
from quipu.projections import Views
from quipu.projections.replay import position_at, replay_views

__all__ = [
    "CONFIG_FILE",
    "DATA_DIR",
    "Config",
    "LogHandle",
    "Quipu",
    "SystemClock",
    "build",
    "default_actor",
    "find_project",
    "init_project",
    "open_log",
    "open_project",
    "open_store",
]


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        """Now, timezone-aware."""
        return datetime.now(UTC)


def open_store(root: Path, config: Config) -> EventStore:
    """The log chosen by ``$QUIPU_EVENTSTORE_URL`` or ``eventstore.url``."""
    url = os.environ.get("QUIPU_EVENTSTORE_URL") or config.eventstore.url
    if url.startswith(("postgresql://", "postgres://")):
        from quipu.adapters.eventstore.postgres import open_postgres_store

        return open_postgres_store(url, table=config.eventstore.table)
    if url == "sqlite":
        return open_sqlite_store(root / DATA_DIR / "events.db",
                                 synchronous=config.eventstore.synchronous)
    if url.startswith("sqlite:///"):
        return open_sqlite_store(Path(url.removeprefix("sqlite:///")),
                                 synchronous=config.eventstore.synchronous)
    raise InvalidInput(f"unknown event store {url!r}", code="invalid_eventstore_url",
                       hint="use 'sqlite' (default), sqlite:///path/events.db or "
                       "postgresql://user:pass@host/db")


@dataclass
class LogHandle:
    """The log of a project opened alone, for commands that read or check only the log
    (``quipu events``, ``quipu audit ...``): no views are folded, nothing is repaired."""

    root: Path
    config: Config
    store: EventStore

    def seal_path(self, given: Path | None = None) -> Path:
        """Where seals are kept: ``given``, else ``.quipu/seals.jsonl``."""
        return given if given is not None else self.root / DATA_DIR / "seals.jsonl"

    def seals(self, given: Path | None = None) -> LocalSealKeeper:
        """The seal keeper at ``seal_path(given)``."""
        return open_local_seals(self.seal_path(given))

    def verify(self, seals: Path | None = None) -> tuple[AuditReport, int]:
        """Recompute the chain against the seals at ``seal_path(seals)``: (report, seals read)."""
        sealed = self.seals(seals).read_all()
        return verify_log(self.store, sealed), len(sealed)

    def seal(self, given: Path | None = None) -> tuple[Seal, Path]:
        """Append a seal of the head to ``seal_path(given)``; return it and where it went."""
        made = make_seal(self.store, SystemClock().now())
        path = self.seal_path(given)
        self.seals(given).append(made)
        return made, path

    def position_at(self, moment: datetime) -> int:
        """The position of the newest event at or before ``moment``."""
        return int(position_at(self.store, moment))

    def replay(self, position: int, directory: Path) -> Views:
        """The views as they were at ``position``, folded into ``directory`` (caller closes)."""
        return replay_views(self.store, position, directory)

    def close(self) -> None:
        """Release the log's connections."""
        self.store.close()

    def __enter__(self) -> LogHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_log(start: Path | None = None) -> LogHandle:
    """Open only the log of the project at (or above) ``start``."""
    root = find_project(start)
    config = load_config(root)
    return LogHandle(root, config, open_store(root, config))


def default_actor(kind: str) -> str:
    """Who is acting: ``$QUIPU_ACTOR``, else ``<kind>:<user>``."""
    env = os.environ.get("QUIPU_ACTOR")
    if env:
        return env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{kind}:{user}"


def build(root: Path, config: Config, *, actor: str) -> Quipu:
    """Build every adapter ``config`` chooses and hand them to a new facade."""
    data = root / DATA_DIR
    store = open_store(root, config)
    blobs = LocalBlobStore(data / "blobs")
    slots = LocalSlotFiles(root / "workspaces", blobs, data / "slotcache")
    views = Views(data / "views.db", store, reopen=lambda: open_store(root, config))

    def executor(runs: RunService, on_change: Callable[[], None]) -> Executor:
        from quipu.adapters.executors.local import LocalExecutor

        return LocalExecutor(data / "runs", store, blobs, runs,
                             worker_id=f"local:{os.uname().nodename}:{os.getpid()}",
                             max_parallel=config.executor.max_parallel,
                             heartbeat_timeout=config.executor.heartbeat_timeout,
                             on_change=on_change, position_file=data / "executor.json")

    def live_log(run_dir: Path) -> bytes:
        from quipu.adapters.executors.local import read_log

        return read_log(run_dir)

    return Quipu(root, config, store=store, blobs=blobs, slots=slots, views=views,
                 clock=SystemClock(), actor=actor, executor=executor, live_log=live_log)


def init_project(root: Path, *, name: str | None = None, goal: str = "",
                 slots: int = 3, actor: str | None = None) -> Quipu:
    """Create ``quipu.yaml``, ``.quipu/`` and ``workspaces/`` and record the project."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if (root / CONFIG_FILE).exists():
        raise Conflict(f"{root} already has a {CONFIG_FILE}", code="project_exists",
                       hint="use `quipu status` there, or pick another directory")
    config = Config(name=check_name(name or root.name, what="project"), goal=goal, slots=slots)
    (root / DATA_DIR).mkdir(exist_ok=True)
    (root / "workspaces").mkdir(exist_ok=True)
    for slot in config.slot_names():
        (root / "workspaces" / slot).mkdir(exist_ok=True)
    q = build(root, config, actor=actor or default_actor("cli"))
    try:
        q.service.init_project(config.name, goal, actor=q.actor)
    except BaseException:
        q.close()
        raise
    write_config(root, config)
    q.refresh()
    return q


def open_project(root: Path | None = None, *, actor: str | None = None) -> Quipu:
    """Open the project at (or above) ``root``."""
    root = find_project(root)
    return build(root, load_config(root), actor=actor or default_actor("cli"))

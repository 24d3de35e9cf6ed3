"""The one composition root: a project's ``quipu.yaml`` -> concrete adapters -> ``Quipu``.

``Quipu`` is the facade every entry point (MCP tools, CLI commands, the demo) calls. A command
goes to the service, then the projections catch up and STATE.md is rewritten, so the next read
sees the write (read-your-writes). Entry points stay thin: parse, call, map errors at the edge.
"""

from __future__ import annotations

import getpass
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from quipu._run_queries import RunQueries
from quipu.adapters.blobs import LocalBlobStore
from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.seals import AutoSealingStore, open_local_seals, read_key_file
from quipu.adapters.slots import LocalSlotFiles
from quipu.core import lifecycle
from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.ports import EventStore
from quipu.core.runs import RunService
from quipu.core.service import Service, Settings
from quipu.core.validation import check_name
from quipu.projections import Views

__all__ = ["CONFIG_FILE", "Config", "Quipu", "SystemClock", "audit_key", "find_project",
           "init_project", "open_project", "open_store", "seal_paths"]

CONFIG_FILE = "quipu.yaml"
DATA_DIR = ".quipu"


class EventStoreConfig(BaseModel):
    """Where the log lives: ``sqlite`` (``.quipu/events.db``) or a ``postgresql://`` URL."""

    model_config = ConfigDict(extra="forbid")

    url: str = "sqlite"
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    table: str = "quipu_events"


class ExecutorConfig(BaseModel):
    """How the embedded local executor runs stages."""

    model_config = ConfigDict(extra="forbid")

    max_parallel: int = Field(default=2, ge=1, le=64)
    heartbeat_timeout: float = Field(default=600.0, gt=0)


class AutoSealConfig(BaseModel):
    """``audit.auto_seal``: seal the log's head every N events and/or M minutes, to ``path``."""

    model_config = ConfigDict(extra="forbid")

    every_events: int | None = Field(default=None, ge=1)
    every_minutes: float | None = Field(default=None, gt=0)
    path: str = f"{DATA_DIR}/seals.jsonl"

    @model_validator(mode="after")
    def _some_period(self) -> AutoSealConfig:
        if self.every_events is None and self.every_minutes is None:
            raise ValueError("auto_seal needs every_events or every_minutes")
        return self


class AuditConfig(BaseModel):
    """``audit``: the keyed chain's key file and automatic seals (see docs/audit.md)."""

    model_config = ConfigDict(extra="forbid")

    key_file: str | None = None
    auto_seal: AutoSealConfig | None = None


class Config(BaseModel):
    """The contents of ``quipu.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    goal: str = ""
    slots: int | list[str] = 3
    reason_min_length: int = Field(default=15, ge=1)
    eventstore: EventStoreConfig = EventStoreConfig()
    executor: ExecutorConfig = ExecutorConfig()
    audit: AuditConfig = AuditConfig()

    @field_validator("slots")
    @classmethod
    def _slots_valid(cls, value: int | list[str]) -> int | list[str]:
        if isinstance(value, int):
            if not 1 <= value <= 64:
                raise ValueError("slots must be between 1 and 64")
        else:
            for name in value:
                check_name(name, what="slot")
        return value

    def slot_names(self) -> tuple[str, ...]:
        """``w1..wN`` or the listed names."""
        if isinstance(self.slots, int):
            return tuple(f"w{i}" for i in range(1, self.slots + 1))
        return tuple(self.slots)


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        """Now, timezone-aware."""
        return datetime.now(UTC)


def find_project(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (or ``$QUIPU_PROJECT``) with quipu.yaml."""
    env = os.environ.get("QUIPU_PROJECT")
    here = Path(env) if env and start is None else (start or Path.cwd())
    here = here.resolve()
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise NotFound(f"no {CONFIG_FILE} at or above {here}", code="no_project",
                   hint="run `quipu init` in your project directory, or pass --project PATH")


def load_config(root: Path) -> Config:
    """Parse and validate ``quipu.yaml``."""
    path = root / CONFIG_FILE
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Config.model_validate(raw)
    except (yaml.YAMLError, ValidationError, OSError) as exc:
        raise InvalidInput(f"{path} is not a valid Quipu config: {exc}", code="invalid_config",
                           hint="fix the file; keys: name, goal, slots, reason_min_length, "
                           "eventstore{url, synchronous}, audit{key_file, auto_seal}") from exc


def audit_key(root: Path, config: Config) -> bytes | None:
    """The keyed chain's key from ``$QUIPU_AUDIT_KEY_FILE`` or ``audit.key_file``, or None."""
    named = os.environ.get("QUIPU_AUDIT_KEY_FILE") or config.audit.key_file
    if not named:
        return None
    path = Path(named).expanduser()
    return read_key_file(path if path.is_absolute() else root / path)


def seal_paths(root: Path, config: Config) -> list[Path]:
    """Every seal file the project writes: the default one and the automatic seals' file."""
    paths = [root / DATA_DIR / "seals.jsonl"]
    if config.audit.auto_seal is not None:
        auto = Path(config.audit.auto_seal.path).expanduser()
        auto = auto if auto.is_absolute() else root / auto
        if auto not in paths:
            paths.append(auto)
    return paths


def open_store(root: Path, config: Config) -> EventStore:
    """The log chosen by ``$QUIPU_EVENTSTORE_URL`` or ``eventstore.url``, keyed with the audit key
    and sealing itself when ``audit`` says so."""
    store = _open_log(root, config, audit_key(root, config))
    auto = config.audit.auto_seal
    if auto is None:
        return store
    return AutoSealingStore(store, open_local_seals(seal_paths(root, config)[-1]),
                            every_events=auto.every_events, every_minutes=auto.every_minutes,
                            clock=SystemClock().now)


def _open_log(root: Path, config: Config, key: bytes | None) -> EventStore:
    url = os.environ.get("QUIPU_EVENTSTORE_URL") or config.eventstore.url
    if url.startswith(("postgresql://", "postgres://")):
        from quipu.adapters.eventstore.postgres import open_postgres_store

        return open_postgres_store(url, table=config.eventstore.table, key=key)
    if url == "sqlite":
        return open_sqlite_store(root / DATA_DIR / "events.db",
                                 synchronous=config.eventstore.synchronous, key=key)
    if url.startswith("sqlite:///"):
        return open_sqlite_store(Path(url.removeprefix("sqlite:///")),
                                 synchronous=config.eventstore.synchronous, key=key)
    raise InvalidInput(f"unknown event store {url!r}", code="invalid_eventstore_url",
                       hint="use 'sqlite' (default), sqlite:///path/events.db or "
                       "postgresql://user:pass@host/db")


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


class Quipu(RunQueries):
    """One open project: commands, then catch-up, then STATE.md; and the queries."""

    def __init__(self, root: Path, config: Config, store: EventStore, *, actor: str,
                 clock: SystemClock | None = None) -> None:
        self.root = root
        self.config = config
        self.store = store
        self.actor = actor
        data = root / DATA_DIR
        self.blobs = LocalBlobStore(data / "blobs")
        self.slots = LocalSlotFiles(root / "workspaces", self.blobs, data / "slotcache")
        self.service = Service(store, self.blobs, self.slots, clock or SystemClock(),
                               Settings(slots=config.slot_names(),
                                        min_reason_length=config.reason_min_length))
        self.views = Views(data / "views.db", store, reopen=lambda: open_store(root, config))
        self.runs = RunService(self.service, self.views)
        self.workers: list[Worker] = []
        self._refreshing = threading.Lock()

    def close(self) -> None:
        """Stop the workers, release the log and the views."""
        self.stop_workers()
        self.views.close()
        self.store.close()

    def __enter__(self) -> Quipu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- after every command -------------------------------------------------------------------

    def refresh(self, dirty: Callable[[str, str | None], bool] | None = None) -> str:
        """Catch the views up with the log and rewrite STATE.md if it changed; return it.

        Called after every command and, from the executor's thread, when stages start or end.
        """
        with self._refreshing:
            return self._refresh(dirty)

    def _refresh(self, dirty: Callable[[str, str | None], bool] | None) -> str:
        self.views.catch_up()
        text = self.views.state_md(dirty=dirty or self._dirty)
        path = self.root / "STATE.md"
        try:
            old = path.read_text()
        except OSError:
            old = None
        if old != text:
            tmp = path.with_suffix(".md.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return text

    def _dirty(self, slot: str, manifest: str | None) -> bool:
        try:
            return self.slots.is_dirty(slot, manifest)
        except Exception:  # a slot being edited mid-scan must not break STATE.md
            return True

    def _write(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        result = fn()
        self.refresh()
        return result

    # --- commands ------------------------------------------------------------------------------

    def create_workspace(self, name: str, goal: str, reason: str, *,
                         from_workspace: str | None = None,
                         from_version: int | str | None = None) -> dict[str, Any]:
        """See ``Service.create_workspace``."""
        return self._write(lambda: self.service.create_workspace(
            name, goal, reason, actor=self.actor, from_workspace=from_workspace,
            from_version=from_version))

    def mount(self, workspace: str, slot: str, reason: str) -> dict[str, Any]:
        """See ``Service.mount``; adds the workspace's recent thoughts and versions."""
        result = self._write(lambda: self.service.mount(workspace, slot, reason,
                                                        actor=self.actor))
        result["recent_thoughts"] = self.views.thoughts(workspace=workspace, limit=5)
        return result

    def hibernate(self, slot: str, reason: str) -> dict[str, Any]:
        """See ``Service.hibernate``."""
        return self._write(lambda: self.service.hibernate(slot, reason, actor=self.actor))

    def save_version(self, slot: str, message: str) -> dict[str, Any]:
        """See ``Service.save_version``."""
        return self._write(lambda: self.service.save_version(slot, message, actor=self.actor))

    def rollback(self, slot: str, version: int | str, reason: str) -> dict[str, Any]:
        """See ``Service.rollback``."""
        return self._write(lambda: self.service.rollback(slot, version, reason,
                                                         actor=self.actor))

    def delete_workspace(self, workspace: str, reason: str) -> dict[str, Any]:
        """See ``Service.delete_workspace``."""
        return self._write(lambda: self.service.delete_workspace(workspace, reason,
                                                                 actor=self.actor))

    def log_thought(self, thought: str, *, workspace: str | None = None,
                    run_id: str | None = None) -> dict[str, Any]:
        """See ``Service.log_thought``."""
        return self._write(lambda: self.service.log_thought(
            thought, actor=self.actor, workspace=workspace, run_id=run_id))

    def manage_versions(self, workspace: str, action: str, *, version: int | str | None = None,
                        tag: str | None = None, reason: str | None = None,
                        from_version: int | str | None = None,
                        to_version: int | str | None = None, limit: int = 50, offset: int = 0,
                        include_pruned: bool = False) -> dict[str, Any]:
        """list | tag | untag | prune | unprune the versions of a workspace."""
        if action == "list":
            self.views.catch_up()
            ws = self.views.workspace(workspace)
            if ws is None:
                raise NotFound(f"workspace {workspace!r} does not exist",
                               code="unknown_workspace",
                               hint="list workspaces with status()")
            versions, total = self.views.versions(workspace, limit=limit, offset=offset,
                                                  include_pruned=include_pruned)
            return {"workspace": workspace, "versions": versions, "total": total,
                    "has_more": offset + len(versions) < total}
        if action == "tag":
            if version is None or not tag:
                raise InvalidInput("tag needs version and tag", code="tag_args",
                                   hint="manage_versions(ws, 'tag', version='v3', tag='best')")
            return self._write(lambda: self.service.tag_version(
                workspace, version, tag, reason, actor=self.actor))
        if action == "untag":
            if not tag:
                raise InvalidInput("untag needs the tag", code="tag_args",
                                   hint="manage_versions(ws, 'untag', tag='best')")
            return self._write(lambda: self.service.untag_version(workspace, tag, reason,
                                                                  actor=self.actor))
        if action in ("prune", "unprune"):
            return self._write(lambda: self.service.prune_versions(
                workspace, reason or "", actor=self.actor, version=version,
                from_version=from_version, to_version=to_version,
                unprune=action == "unprune"))
        raise InvalidInput(f"unknown action {action!r}", code="unknown_action",
                           hint="use one of: list, tag, untag, prune, unprune")

    # --- runs ----------------------------------------------------------------------------------

    def start_workers(self) -> None:
        """Start the embedded executor, supervisor and metrics ingester (``quipu serve``).

        They are one worker: ``LocalExecutor`` follows the log, runs stages, ingests their
        metrics and applies every run's deadlines; on start it recovers the runs a previous
        engine left behind (see docs/executor.md).
        """
        if self.workers:
            return
        from quipu.adapters.executors.local import LocalExecutor

        executor = LocalExecutor(self.root / DATA_DIR / "runs", self.store, self.blobs,
                                 self.runs, worker_id=f"local:{os.uname().nodename}:{os.getpid()}",
                                 max_parallel=self.config.executor.max_parallel,
                                 heartbeat_timeout=self.config.executor.heartbeat_timeout,
                                 on_change=self._stages_changed)
        self.workers = [executor]
        for worker in self.workers:
            worker.start()

    def _stages_changed(self) -> None:
        # From the executor's thread: STATE.md shows active runs, so rewrite it when one
        # starts or ends, not only at the agent's next command.
        self.refresh()

    def stop_workers(self) -> None:
        """Stop the background workers."""
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def run(self, workspace: str, *, reason: str | dict[str, Any] | None,
            results_spec: dict[str, Any] | None, stages: list[str] | None = None,
            config_override: dict[str, Any] | None = None,
            inputs_override: dict[str, Any] | None = None,
            experiment_group: str | None = None, wait: bool = False,
            skip_review: bool = False, dry_run: bool = False,
            wait_timeout: float = 3600.0) -> dict[str, Any]:
        """See ``RunService.run``; ``wait`` blocks until every stage run ended."""
        result = self._write(lambda: self.runs.run(
            workspace, reason=reason, results_spec=results_spec, actor=self.actor,
            stages=stages, config_override=config_override, inputs_override=inputs_override,
            experiment_group=experiment_group, skip_review=skip_review, dry_run=dry_run))
        if wait and not dry_run:
            ids = [q["stage_run_id"] for q in result["queued"]]
            result["stage_runs"] = self.wait_for(ids, timeout=wait_timeout)
        return result

    def validate_config(self, workspace: str) -> dict[str, Any]:
        """Check the pipeline and configs a run would use now; records nothing.

        A dry run: every problem at once, plus the stages, inputs and configs it would run.
        """
        return self.runs.run(
            workspace, reason="validate the pipeline and its configs (a dry run: nothing is "
            "recorded)", results_spec=None, actor=self.actor, dry_run=True)

    def run_states(self, run_ids: list[str]) -> tuple[bool, list[dict[str, Any]]]:
        """Whether every run has ended (or was blocked), and each run's state now."""

        states = {r: self.runs.load_run(r).current for r in run_ids}
        done = all(lifecycle.is_ended(s) or lifecycle.is_final(s) or s.value == "blocked"
                   for s in states.values())
        return done, [{"stage_run_id": r, "state": s.value,
                       "infra_outcome": lifecycle.infra_outcome(s)} for r, s in states.items()]

    def wait_for(self, run_ids: list[str], *, timeout: float = 3600.0,
                 poll: float = 0.2) -> list[dict[str, Any]]:
        """Block until every run has ended (or the timeout passes); return their states."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            done, states = self.run_states(run_ids)
            if done or time.monotonic() > deadline:
                break
            time.sleep(poll)
        self.refresh()
        return states

    def finalize_run(self, record_or_run_id: str,
                     results: dict[str, Any] | None) -> dict[str, Any]:
        """See ``RunService.finalize``."""
        return self._write(lambda: self.runs.finalize(record_or_run_id, results,
                                                      actor=self.actor))

    def cancel(self, run_id: str, reason: str) -> dict[str, Any]:
        """See ``RunService.cancel``."""
        return self._write(lambda: self.runs.cancel(run_id, reason, actor=self.actor))

    def save_results_spec(self, run_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """See ``RunService.save_results_spec``."""
        return self._write(lambda: self.runs.save_results_spec(run_id, spec, actor=self.actor))

    def tag_record(self, ref: str, tag: str, reason: str) -> dict[str, Any]:
        """Tag a run (``best*`` tags mark the reference later runs are compared with)."""
        return self._write(lambda: self.runs.tag(ref, tag, reason, actor=self.actor))

    # --- queries -------------------------------------------------------------------------------

    def diff(self, target: str, against: str | None = None) -> dict[str, Any]:
        """See ``Service.diff``."""
        return self.service.diff(target, against)

    def status(self) -> dict[str, Any]:
        """Project, slots (with dirty flags), workspaces, recent actions and STATE.md."""
        seen: dict[tuple[str, str | None], bool] = {}

        def dirty_once(slot: str, manifest: str | None) -> bool:
            # STATE.md and the slot rows ask the same question; scan each slot once per call.
            if (slot, manifest) not in seen:
                seen[(slot, manifest)] = self._dirty(slot, manifest)
            return seen[(slot, manifest)]

        state_md = self.refresh(dirty_once)
        project = self.views.project()
        slots = []
        for row in self.views.slots(self.config.slot_names()):
            if row["workspace"]:
                row["dirty"] = dirty_once(row["slot"], row["manifest"])
            slots.append(row)
        return {"project": project, "slots": slots,
                "workspace_count": self.views.workspace_count(),
                "recent_actions": self.views.audit_log(limit=5),
                "head_position": self.views.position(), "state_md": state_md}

    def inspect_workspace(self, name: str, *, version_limit: int = 10,
                          version_offset: int = 0) -> dict[str, Any]:
        """Goal, mount, lineage, versions and tags of one workspace."""
        self.views.catch_up()
        ws = self.views.workspace(name)
        if ws is None:
            raise NotFound(f"workspace {name!r} does not exist", code="unknown_workspace",
                           hint="list workspaces with status(), or create_workspace()")
        versions, total = self.views.versions(name, limit=version_limit, offset=version_offset,
                                              include_pruned=True)
        ws["versions"] = versions
        ws["version_total"] = total
        if ws.get("slot"):
            ws["dirty"] = self._dirty(ws["slot"], ws.get("manifest"))
        return ws

    def get_workspace_thoughts(self, workspace: str, *, limit: int = 50,
                               offset: int = 0) -> dict[str, Any]:
        """Thoughts about one workspace, newest first."""
        self.views.catch_up()
        if self.views.workspace(workspace) is None:
            raise NotFound(f"workspace {workspace!r} does not exist", code="unknown_workspace",
                           hint="list workspaces with status()")
        return {"workspace": workspace,
                "thoughts": self.views.thoughts(workspace=workspace, limit=limit,
                                                offset=offset)}

    def get_audit_log(self, *, limit: int = 20, workspace: str | None = None) -> dict[str, Any]:
        """Recent actions (who, what, why, when), newest first."""
        self.views.catch_up()
        if workspace is not None and self.views.workspace(workspace) is None:
            raise NotFound(f"workspace {workspace!r} does not exist", code="unknown_workspace",
                           hint="list workspaces with status()")
        return {"entries": self.views.audit_log(limit=limit, workspace=workspace)}

    def mark_seen(self, consumer: str, position: int) -> dict[str, Any]:
        """See ``Service.mark_seen``."""
        return self._write(lambda: self.service.mark_seen(consumer, position, actor=self.actor))


class Worker(Protocol):
    """Something that follows the log in a background thread (executor, supervisor, ...)."""

    def start(self) -> None:
        """Begin following the log."""
        ...

    def stop(self) -> None:
        """Stop and wait for the thread."""
        ...


def write_config(root: Path, config: Config) -> None:
    """Write ``quipu.yaml``."""
    data = config.model_dump(exclude_defaults=True)
    data.setdefault("name", config.name)
    (root / CONFIG_FILE).write_text(yaml.safe_dump(data, sort_keys=False))


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
    store = open_store(root, config)
    q = Quipu(root, config, store, actor=actor or default_actor("cli"))
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
    config = load_config(root)
    store = open_store(root, config)
    return Quipu(root, config, store, actor=actor or default_actor("cli"))

"""The facade every entry point calls: commands in, queries out.

A command goes to its handler, then the projections catch up and STATE.md is rewritten, so the
next read sees the write (read-your-writes). The facade is handed every adapter by
``quipu.app.bootstrap`` and builds none itself. Entry points stay thin: parse, call, map errors
at the edge.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quipu.app.run_reads import RunQueries
from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.handlers import CommandBus
from quipu.core.messages import Command
from quipu.core.ports import BlobStore, Clock, EventStore, Executor, SlotFiles, SnapshotStore
from quipu.core.project.commands import LogThought, MarkSeen
from quipu.core.runs import lifecycle
from quipu.core.runs.commands import CancelRun, FinalizeRun, SaveResultsSpec, StartRun, TagRun
from quipu.core.runs.handlers import InputPaths, RunService
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.workspaces.commands import (
    CreateWorkspace,
    DeleteWorkspace,
    Hibernate,
    Mount,
    PruneVersions,
    Rollback,
    SaveVersion,
    TagVersion,
    UntagVersion,
)
from quipu.core.workspaces.handlers import Service, Settings

if TYPE_CHECKING:
    from quipu.app.config import Config
    from quipu.projections import Views

__all__ = ["ExecutorFactory", "Quipu"]

ExecutorFactory = Callable[[RunService, Callable[[], None]], Executor]
"""Builds the configured executor for a facade's run commands; the callable is ``on_change``."""


class Quipu(RunQueries):
    """One open project: commands, then catch-up, then STATE.md; and the queries."""

    def __init__(self, root: Path, config: Config, *, store: EventStore, blobs: BlobStore,
                 slots: SlotFiles, views: Views, clock: Clock, actor: str,
                 executor: ExecutorFactory | None = None,
                 snapshots: SnapshotStore | None = None,
                 live_log: Callable[[Path], bytes] = lambda _run_dir: b"") -> None:
        """Wire the facade to adapters built by ``quipu.app.bootstrap`` (never built here)."""
        self.root = root
        self.config = config
        self.store = store
        self.actor = actor
        self.blobs = blobs
        self.slots = slots
        self._snapshots = snapshots
        self.uow = UnitOfWork(store, clock, snapshots=snapshots,
                              min_reason_length=config.reason_min_length)
        self.service = Service(self.uow, blobs, slots, Settings(slots=config.slot_names()))
        self.views = views
        self.live_log = live_log
        roots = (str(root), *(str((root / r).resolve()) for r in config.data.roots))
        self.runs = RunService(self.service, self.views,
                               paths=InputPaths(roots=roots,
                                                allow_any=config.data.allow_any_path,
                                                realpath=os.path.realpath))
        self.bus = CommandBus(self.service, self.runs)
        self._executor_factory = executor
        self.workers: list[Executor] = []
        self._refreshing = threading.Lock()

    def close(self) -> None:
        """Stop the workers, release the log and the views."""
        self.stop_workers()
        self.views.close()
        if self._snapshots is not None:
            self._snapshots.close()
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

    def _write(self, command: Command) -> dict[str, Any]:
        """Carry out ``command`` through the bus, then catch the views up (read-your-writes)."""
        result: dict[str, Any] = self.bus.handle(command)
        self.refresh()
        return result

    # --- commands ------------------------------------------------------------------------------

    def create_workspace(self, name: str, goal: str, reason: str, *,
                         from_workspace: str | None = None,
                         from_version: int | str | None = None) -> dict[str, Any]:
        """See ``Service.create_workspace``."""
        return self._write(CreateWorkspace(name=name, goal=goal, reason=reason, actor=self.actor,
                                           from_workspace=from_workspace,
                                           from_version=from_version))

    def mount(self, workspace: str, slot: str, reason: str) -> dict[str, Any]:
        """See ``Service.mount``; adds the workspace's recent thoughts and versions."""
        result = self._write(Mount(workspace=workspace, slot=slot, reason=reason,
                                   actor=self.actor))
        result["recent_thoughts"] = self.views.thoughts(workspace=workspace, limit=5)
        return result

    def hibernate(self, slot: str, reason: str) -> dict[str, Any]:
        """See ``Service.hibernate``."""
        return self._write(Hibernate(slot=slot, reason=reason, actor=self.actor))

    def save_version(self, slot: str, message: str) -> dict[str, Any]:
        """See ``Service.save_version``."""
        return self._write(SaveVersion(slot=slot, message=message, actor=self.actor))

    def rollback(self, slot: str, version: int | str, reason: str) -> dict[str, Any]:
        """See ``Service.rollback``."""
        return self._write(Rollback(slot=slot, version=version, reason=reason, actor=self.actor))

    def delete_workspace(self, workspace: str, reason: str) -> dict[str, Any]:
        """See ``Service.delete_workspace``."""
        return self._write(DeleteWorkspace(workspace=workspace, reason=reason, actor=self.actor))

    def log_thought(self, thought: str, *, workspace: str | None = None,
                    run_id: str | None = None) -> dict[str, Any]:
        """See ``Service.log_thought``."""
        return self._write(LogThought(thought=thought, actor=self.actor, workspace=workspace,
                                      run_id=run_id))

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
            return self._write(TagVersion(workspace=workspace, version=version, tag=tag,
                                          reason=reason, actor=self.actor))
        if action == "untag":
            if not tag:
                raise InvalidInput("untag needs the tag", code="tag_args",
                                   hint="manage_versions(ws, 'untag', tag='best')")
            return self._write(UntagVersion(workspace=workspace, tag=tag, reason=reason,
                                            actor=self.actor))
        if action in ("prune", "unprune"):
            return self._write(PruneVersions(
                workspace=workspace, reason=reason or "", actor=self.actor, version=version,
                from_version=from_version, to_version=to_version, unprune=action == "unprune"))
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
        if self._executor_factory is None:
            raise Conflict("this project was opened without an executor",
                           code="no_executor",
                           hint="open it with quipu.app.bootstrap.open_project(), which builds "
                           "the executor quipu.yaml chooses")
        self.workers = [self._executor_factory(self.runs, self._stages_changed)]
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
        result = self._write(StartRun(
            workspace=workspace, reason=reason, results_spec=results_spec, actor=self.actor,
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
        result: dict[str, Any] = self.bus.handle(StartRun(
            workspace=workspace, reason="validate the pipeline and its configs (a dry run: "
            "nothing is recorded)", results_spec=None, actor=self.actor, dry_run=True))
        return result

    def run_states(self, run_ids: list[str]) -> tuple[bool, list[dict[str, Any]]]:
        """Whether every run has ended (or was blocked), and each run's state now."""

        states = {r: self.runs.load_run(r).current for r in run_ids}
        done = all(lifecycle.settled(s) for s in states.values())
        return done, [{"stage_run_id": r, "state": s.value,
                       "infra_outcome": lifecycle.infra_outcome(s)} for r, s in states.items()]

    def wait_for(self, run_ids: list[str], *, timeout: float = 3600.0,
                 poll: float = 1.0) -> list[dict[str, Any]]:
        """Block until every run has ended (or the timeout passes); return their states.

        The runs are checked again whenever the log grows (``wait_for_append``), and at least
        every ``poll`` seconds.
        """
        import time

        deadline = time.monotonic() + timeout
        while True:
            seen = self.store.head()  # before the check: an append after it wakes the wait
            done, states = self.run_states(run_ids)
            remaining = deadline - time.monotonic()
            if done or remaining <= 0:
                break
            self.store.wait_for_append(after=seen, timeout=min(poll, remaining))
        self.refresh()
        return states

    def finalize_run(self, record_or_run_id: str,
                     results: dict[str, Any] | None) -> dict[str, Any]:
        """See ``RunService.finalize``."""
        return self._write(FinalizeRun(run_id=record_or_run_id, results=results,
                                       actor=self.actor))

    def cancel(self, run_id: str, reason: str) -> dict[str, Any]:
        """See ``RunService.cancel``."""
        return self._write(CancelRun(run_id=run_id, reason=reason, actor=self.actor))

    def save_results_spec(self, run_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """See ``RunService.save_results_spec``."""
        return self._write(SaveResultsSpec(run_id=run_id, spec=spec, actor=self.actor))

    def tag_record(self, ref: str, tag: str, reason: str) -> dict[str, Any]:
        """Tag a run (``best*`` tags mark the reference later runs are compared with)."""
        return self._write(TagRun(run_id=ref, tag=tag, reason=reason, actor=self.actor))

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
        return self._write(MarkSeen(consumer=consumer, position=position, actor=self.actor))

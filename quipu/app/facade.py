"""The facade every entry point calls: commands in, queries out.

A command goes to its handler, then the projections catch up and STATE.md is rewritten, so the
next read sees the write (read-your-writes). Once the handler has committed, nothing may turn
the command into an error: an agent told "failed" would retry and do it twice. So a failure to
catch up or to write STATE.md (a full disk, a directory in its way) is logged and returned as
the answer's ``warning``, never raised. STATE.md is rendered again only when what it shows may
have changed (``Views.state_md_key``), written through a temporary file of its own per writer,
and written under a lock, so concurrent processes never trip over each other's file and the
last one written is the newest. The facade is handed every adapter by ``quipu.app.bootstrap``
and builds none itself. Entry points stay thin: parse, call, map errors at the edge.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writes are still atomic, just unordered
    fcntl = None  # type: ignore[assignment]

from quipu.app.compare import CompareQueries
from quipu.app.images import ImageCommands
from quipu.app.lineage_reads import LineageQueries
from quipu.app.patterns import PatternCommands
from quipu.app.profiles import ProjectProfiles
from quipu.app.quick_status import LocalStatusKey
from quipu.app.run_reads import RunQueries, review_summary
from quipu.app.sources import SourceCommands
from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.handlers import CommandBus
from quipu.core.messages import Command
from quipu.core.patterns.handlers import PatternService
from quipu.core.ports import (
    BlobStore,
    Clock,
    EventStore,
    Executor,
    Images,
    RemoteSources,
    SlotFiles,
    SnapshotStore,
    SourceFiles,
)
from quipu.core.project.commands import LogThought, MarkSeen
from quipu.core.runs import lifecycle
from quipu.core.runs.commands import (
    CancelRun,
    FinalizePipelineRun,
    FinalizeRun,
    RequestStop,
    SaveResultsSpec,
    StartRun,
    TagRun,
)
from quipu.core.runs.handlers import InputPaths, RunService
from quipu.core.sources.files import SourcePaths
from quipu.core.sources.handlers import SourceService
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.validation import did_you_mean
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

__all__ = ["ExecutorFactory", "FollowerFactory", "Quipu"]

log = logging.getLogger("quipu.app")

Dirty = Callable[[str, str | None], bool]

ExecutorFactory = Callable[[RunService, Callable[[], None]], Executor]
"""Builds the configured executor for a facade's run commands; the callable is ``on_change``."""

FollowerFactory = Callable[[CommandBus, Callable[[], None]], Executor]
"""Builds another log follower started beside the executor (the failure-pattern follower):
it answers through the command bus; the callable is ``on_change``."""

class Quipu(RunQueries, SourceCommands, LineageQueries, CompareQueries, ImageCommands,
            PatternCommands):
    """One open project: commands, then catch-up, then STATE.md; and the queries."""

    def __init__(self, root: Path, config: Config, *, store: EventStore, blobs: BlobStore,
                 slots: SlotFiles, views: Views, clock: Clock, actor: str,
                 executor: ExecutorFactory | None = None,
                 reviewer: ExecutorFactory | None = None,
                 snapshots: SnapshotStore | None = None,
                 live_log: Callable[[Path], bytes] = lambda _run_dir: b"",
                 status_key: LocalStatusKey | None = None,
                 source_files: SourceFiles | None = None,
                 remote_sources: RemoteSources | None = None,
                 images: Images | None = None,
                 followers: tuple[FollowerFactory, ...] = ()) -> None:
        """Wire the facade to adapters built by ``quipu.app.bootstrap`` (never built here)."""
        if images is not None:
            self.images = images
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
        self.sources = SourceService(self.uow, source_files, SourcePaths(
            base=str(root), roots=roots, allow_any=config.data.allow_any_path,
            realpath=os.path.realpath), remote_sources)
        self.runs = RunService(self.service, self.views,
                               paths=InputPaths(roots=roots,
                                                allow_any=config.data.allow_any_path,
                                                realpath=os.path.realpath,
                                                exists=os.path.exists),
                               sources=self.sources, profiles=ProjectProfiles(config),
                               reviewed=config.svs.reviewer != "none",
                               fail_open=config.svs.fail_open,
                               svs_contracts=config.svs.contracts,
                               svs_statistics=config.svs.statistics)
        self.bus = CommandBus(self.service, self.runs, self.sources,
                              PatternService(self.uow))
        self._executor_factory = executor
        self._reviewer_factory = reviewer  # the pre-run review adapter, when svs.reviewer is set
        self._followers = followers
        self.workers: list[Executor] = []
        self._refreshing = threading.Lock()
        self._shown: tuple[tuple[Any, ...], tuple[int, int, int] | None, str] | None = None
        """(key, STATE.md's stat after writing, text) of the last render: skip the next while
        both are unchanged."""
        self._status_key = status_key
        self._keyed: tuple[int, tuple[Any, ...], tuple[int, int, int] | None] | None = None
        """(position, key, STATE.md's stat) last written to ``.quipu/STATE.md.key``."""

    def close(self) -> None:
        """Stop the workers, release the views, the snapshots and the log: each is released
        even when an earlier one fails (the first failure is raised afterwards)."""
        steps: list[Callable[[], None]] = [self.stop_workers, self.views.close]
        if self._snapshots is not None:
            steps.append(self._snapshots.close)
        steps.append(self.store.close)
        failure: BaseException | None = None
        for step in steps:
            try:
                step()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def __enter__(self) -> Quipu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- after every command -------------------------------------------------------------------

    def refresh(self, dirty: Dirty | None = None) -> str:
        """Catch the views up with the log and rewrite STATE.md if it changed; return it.

        Called after every command and, from the executor's thread, when stages start or end.
        A STATE.md that cannot be written is logged, not raised (``refresh_state`` says why).
        """
        return self.refresh_state(dirty)[0]

    def refresh_state(self, dirty: Dirty | None = None) -> tuple[str, dict[str, str] | None]:
        """``refresh``, and a warning (``code``, ``message``, ``hint``) if STATE.md could not be
        written; the views were caught up and the text is current either way."""
        with self._refreshing:
            return self._refresh(_once(dirty or self._dirty))

    def _refresh(self, dirty: Dirty) -> tuple[str, dict[str, str] | None]:
        self.views.catch_up()
        path = self.root / "STATE.md"
        position = self.views.position()
        # Every configured slot is shown, free ones as free (a fresh project lists its slots),
        # and the key covers exactly those rows.
        slot_names = self.config.slot_names()
        key = self.views.state_md_key(dirty, slot_names=slot_names)
        if self._shown is not None and self._shown[0] == key and self._shown[1] == _stat(path):
            self._record_key(position, key, self._shown[1], self._shown[2])
            return self._shown[2], None
        text: str | None = None
        try:
            with self._state_md_lock():
                # Rendered under the lock: a render from before another process's newer write
                # must not replace it.
                text = self.views.state_md(dirty=dirty, slot_names=slot_names)
                _write_if_changed(path, text)
                stat = _stat(path)
                self._record_key(position, key, stat, text)
        except OSError as exc:
            log.warning("STATE.md was not written: %s", exc)
            self._shown = None
            if text is None:  # the lock itself failed
                text = self.views.state_md(dirty=dirty, slot_names=slot_names)
            return text, {"code": "state_md_not_written",
                          "message": f"the command took effect, but STATE.md could not be "
                                     f"written: {exc}",
                          "hint": "free disk space or remove what is in the way of "
                                  f"{path}; the next command rewrites it"}
        self._shown = (key, stat, text)
        return text, None

    def _record_key(self, position: int, key: tuple[Any, ...],
                    stat: tuple[int, int, int] | None, text: str) -> None:
        """Write STATE.md's key (see ``quick_status``) when what it records moved; only when
        the views did not move while ``text`` was rendered for ``key`` at ``position``."""
        if self._status_key is None or self._keyed == (position, key, stat):
            return
        if self.views.position() != position:
            return
        self._status_key.write(position=position, chain_hash=self.store.hash_at(position),
                               text=text, slots=key[1])
        self._keyed = (position, key, stat)

    @contextlib.contextmanager
    def _state_md_lock(self) -> Iterator[None]:
        """An exclusive lock on ``.quipu/STATE.md.lock`` between processes (none where the
        platform has no ``flock``)."""
        if fcntl is None:
            yield
            return
        lock = self.root / ".quipu" / "STATE.md.lock"
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _dirty(self, slot: str, manifest: str | None) -> bool:
        try:
            return self.slots.is_dirty(slot, manifest)
        except Exception:  # a slot being edited mid-scan must not break STATE.md
            return True

    def _write(self, command: Command) -> dict[str, Any]:
        """Carry out ``command`` through the bus, then catch the views up (read-your-writes)."""
        with self._suggesting(getattr(command, "workspace", None),
                              getattr(command, "from_workspace", None)):
            result: dict[str, Any] = self.bus.handle(command)
        # The command has committed: from here on, trouble is a warning in the answer.
        try:
            warning = self.refresh_state()[1]
        except Exception as exc:
            log.warning("after a committed command, the views could not catch up: %r", exc)
            warning = {"code": "views_not_refreshed",
                       "message": f"the command took effect, but the views could not catch up "
                                  f"with it: {exc}",
                       "hint": "the next command or read catches up; `quipu rebuild --all` "
                               "refolds them if it keeps failing"}
        if warning is not None:
            result["warning"] = warning
        return result

    def _run_hint(self, run_id: str) -> str:
        """``"did you mean 'stage-...'? "`` for a run id that names no run, else ``""``."""
        try:
            return did_you_mean(run_id, self.views.similar_run_ids(run_id))
        except Exception:  # a suggestion is a courtesy: it never turns into another error
            return ""

    @contextlib.contextmanager
    def _suggesting(self, *names: str | None) -> Iterator[None]:
        """Add did-you-mean to an ``unknown_workspace`` refusal raised inside (by the domain,
        which does not know the other workspaces' names) for whichever of ``names`` is
        unknown."""
        try:
            yield
        except NotFound as exc:
            if exc.code == "unknown_workspace":
                exc.hint = self._workspace_hint(*names) + exc.hint
            raise

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
        try:  # the mount committed: its context is a courtesy, never an error
            result["recent_thoughts"] = self.views.thoughts(workspace=workspace, limit=5)
        except Exception as exc:
            log.warning("after a mount, the workspace's thoughts could not be read: %r", exc)
            result["recent_thoughts"] = []
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
                raise self._unknown_workspace(workspace)
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
        self.workers = [self._executor_factory(self.runs, self._stages_changed),
                        *(f(self.bus, self._stages_changed) for f in self._followers)]
        if self._reviewer_factory is not None:
            self.workers.append(self._reviewer_factory(self.runs, self._stages_changed))
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
            wait_timeout: float = 3600.0, resume_from: str | None = None) -> dict[str, Any]:
        """See ``RunService.run``; ``wait`` blocks until every stage run ended."""
        try:
            result = self._write(StartRun(
                workspace=workspace, reason=reason, results_spec=results_spec,
                actor=self.actor, stages=stages, config_override=config_override,
                inputs_override=inputs_override, experiment_group=experiment_group,
                skip_review=skip_review, dry_run=dry_run, resume_from=resume_from))
        except NotFound as exc:
            if exc.code == "unknown_run" and resume_from is not None:
                exc.hint = self._run_hint(resume_from) + exc.hint
            raise
        if wait and not dry_run:
            ids = [q["stage_run_id"] for q in result["queued"]]
            result["stage_runs"] = self.wait_for(ids, timeout=wait_timeout)
        return result

    def validate_config(self, workspace: str, *, stages: list[str] | None = None,
                        config_override: dict[str, Any] | None = None,
                        inputs_override: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check the pipeline and configs a run would use now; records nothing.

        A dry run: every problem at once, plus the stages, inputs and configs it would run
        (with the same ``stages`` and overrides as that run, input paths checked on disk).
        """
        with self._suggesting(workspace):
            result: dict[str, Any] = self.bus.handle(StartRun(
                workspace=workspace, reason="validate the pipeline and its configs (a dry "
                "run: nothing is recorded)", results_spec=None, actor=self.actor, dry_run=True,
                stages=stages, config_override=config_override,
                inputs_override=inputs_override))
        return result

    def run_states(self, run_ids: list[str]) -> tuple[bool, list[dict[str, Any]]]:
        """Whether every run has ended (or was blocked), and each run's state now."""

        runs = {r: self.runs.load_run(r) for r in run_ids}
        done = all(lifecycle.settled(run.current) for run in runs.values())
        return done, [{"stage_run_id": r, "state": run.current.value,
                       "infra_outcome": lifecycle.infra_outcome(run.current),
                       # a blocked run says why, so the agent need not ask
                       **({"review": review_summary(run.review)}
                          if run.current is lifecycle.State.BLOCKED and run.review else {})}
                      for r, run in runs.items()]

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

    def finalize_run(self, record_or_run_id: str, results: dict[str, Any] | None, *,
                     workspace: str | None = None, scope: str | None = None) -> dict[str, Any]:
        """Record a verdict. ``record_or_run_id`` is a stage run id, a pipeline run id
        (``prun-...``) or ``@tag`` (with ``workspace``). ``scope`` is ``run`` (this stage run
        only: ``RunService.finalize``) or ``pipeline`` (one verdict for the whole pipeline run:
        ``RunService.finalize_pipeline``); by default a pipeline run id means ``pipeline`` and
        anything else ``run``."""
        if scope not in (None, "run", "pipeline"):
            raise InvalidInput(f"scope {scope!r} is not 'run' or 'pipeline'",
                               code="invalid_scope",
                               hint="scope='pipeline' records one verdict for the whole "
                               "pipeline run; scope='run' (or nothing) finalizes one stage run")
        self.views.catch_up()
        stages = self.views.pipeline_stage_runs(record_or_run_id)
        if stages:
            if scope == "run":
                raise InvalidInput(f"{record_or_run_id} is a pipeline run, not a stage run",
                                   code="invalid_scope",
                                   hint="name one of its stage runs to finalize one stage: "
                                   + ", ".join(sorted(stages.values())))
            return self._write(FinalizePipelineRun(run_id=next(iter(stages.values())),
                                                   results=results, actor=self.actor))
        run_id = self._run_id(record_or_run_id, workspace)
        if scope == "pipeline":
            return self._write(FinalizePipelineRun(run_id=run_id, results=results,
                                                   actor=self.actor))
        return self._write(FinalizeRun(run_id=run_id, results=results, actor=self.actor))

    def cancel(self, run_id: str, reason: str) -> dict[str, Any]:
        """See ``RunService.cancel``."""
        return self._write(CancelRun(run_id=run_id, reason=reason, actor=self.actor))

    def request_stop(self, run_id: str, reason: str) -> dict[str, Any]:
        """See ``RunService.request_stop`` (an unknown run id gets a did-you-mean)."""
        try:
            return self._write(RequestStop(run_id=run_id, reason=reason, actor=self.actor))
        except NotFound as exc:
            if exc.code == "unknown_run":
                exc.hint = self._active_run_hint(run_id) + exc.hint
            raise

    def _active_run_hint(self, run_id: str) -> str:
        """``"did you mean 'x'? "`` among the runs in flight, else ``""``."""
        import difflib

        try:  # a suggestion is a courtesy: it never turns into another error
            runs = self.views.dashboard(section="active", limit=200)["rows"]
            close = difflib.get_close_matches(run_id, [r["run_id"] for r in runs], n=1)
        except Exception:
            return ""
        return f"did you mean {close[0]!r}? " if close else ""

    def save_results_spec(self, run_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """See ``RunService.save_results_spec``."""
        return self._write(SaveResultsSpec(run_id=run_id, spec=spec, actor=self.actor))

    def tag_record(self, ref: str, tag: str, reason: str) -> dict[str, Any]:
        """Tag a run (``best*`` tags mark the reference later runs are compared with)."""
        return self._write(TagRun(run_id=ref, tag=tag, reason=reason, actor=self.actor))

    # --- queries -------------------------------------------------------------------------------

    def diff(self, target: str, against: str | None = None) -> dict[str, Any]:
        """See ``Service.diff``."""
        with self._suggesting(target, against):
            return self.service.diff(target, against)

    def status(self) -> dict[str, Any]:
        """Project, slots (with dirty flags), the workspace count, the source counts
        (``{active, retired}``), the head position and
        STATE.md (which holds the recent actions, thoughts, runs and bests)."""
        # STATE.md and the slot rows ask the same question: scan each slot once per call.
        dirty_once = _once(self._dirty)
        state_md, warning = self.refresh_state(dirty_once)
        project = self.views.project()
        slots = []
        for row in self.views.slots(self.config.slot_names()):
            if row["workspace"]:
                row["dirty"] = dirty_once(row["slot"], row["manifest"])
            slots.append(row)
        # STATE.md already lists the recent actions, thoughts, runs and bests: the JSON beside
        # it adds only what a program needs (slot dirty flags, counts, the head position).
        out = {"project": project, "slots": slots,
               "workspace_count": self.views.workspace_count(),
               "source_count": self.views.source_counts(),
               "head_position": self.views.position(), "state_md": state_md}
        if warning is not None:
            out["warning"] = warning
        return out

    def inspect_workspace(self, name: str, *, version_limit: int = 10,
                          version_offset: int = 0) -> dict[str, Any]:
        """Goal, mount, lineage, versions and tags of one workspace."""
        self.views.catch_up()
        ws = self.views.workspace(name)
        if ws is None:
            raise self._unknown_workspace(name, "list workspaces with status(), or "
                                          "create_workspace()")
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
            raise self._unknown_workspace(workspace)
        return {"workspace": workspace,
                "thoughts": self.views.thoughts(workspace=workspace, limit=limit,
                                                offset=offset)}

    def get_audit_log(self, *, limit: int = 20, workspace: str | None = None) -> dict[str, Any]:
        """Recent actions (who, what, why, when), newest first."""
        self.views.catch_up()
        if workspace is not None and self.views.workspace(workspace) is None:
            raise self._unknown_workspace(workspace)
        return {"entries": self.views.audit_log(limit=limit, workspace=workspace)}

    def mark_seen(self, consumer: str, position: int) -> dict[str, Any]:
        """See ``Service.mark_seen``."""
        return self._write(MarkSeen(consumer=consumer, position=position, actor=self.actor))


def _once(dirty: Dirty) -> Dirty:
    """``dirty`` asked at most once per (slot, manifest): a scan of a slot's files costs what the
    slot holds, and one refresh asks for the key and the text."""
    seen: dict[tuple[str, str | None], bool] = {}

    def ask(slot: str, manifest: str | None) -> bool:
        if (slot, manifest) not in seen:
            seen[(slot, manifest)] = dirty(slot, manifest)
        return seen[(slot, manifest)]

    return ask


def _stat(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of a file, to notice that someone else wrote or removed it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _write_if_changed(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` unless it already holds it, atomically: through a
    temporary file whose name no other writer (process or thread) uses."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):  # missing, unreadable or garbled: write it anew
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise

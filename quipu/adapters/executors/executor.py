"""The executor loop: the same for every stage backend (local processes, containers ...).

``StageExecutor`` follows the log from its own position (run events only; never the
projections) and answers with events through ``RunService``. Where and how a stage's processes
run is its ``StageBackend``'s business (``core.ports``), chosen per run by its compute profile;
``LocalExecutor`` (``local.py``) is this loop with the local-process backend.

* ``RunQueued`` -> once every upstream run succeeded and fewer than ``max_parallel`` stages
  run: claim (exactly one executor wins), build the run directory, launch the stage through
  its backend with a clean environment -> ``RunLaunched`` (or ``RunLaunchFailed``);
* while it runs -> ``RunHeartbeat`` (throttled, and only when the stage shows signs of life:
  its heartbeat file, metrics, logs or outputs changed) and ``MetricsRecorded``;
* when it ends -> ``MetricsRecorded(complete)`` and ``RunExited`` with outputs, log and
  problems;
* ``RunCanceled`` -> SIGTERM to the stage's whole process tree, SIGKILL after ``kill_grace``;
* a stage past its profile's ``timeout`` -> canceled with that reason.

The same loop is the supervisor: a run silent past its state's deadline gets
``record_deadline`` (lost, canceled or finalized, per ``core.runs.lifecycle``). On its first step it
recovers runs a previous engine left behind: a live stage is watched again (adopted if it had
been declared lost), a finished one has its exit recorded from ``.quipu/exit.json``, a vanished
one is lost. Every step is idempotent: the ``Run`` aggregate ignores a fact it already holds.

The loop does not poll the log on a timer: it steps when something happened. A watcher thread
blocks in ``EventStore.wait_for_append`` and wakes the loop on every append (at once for this
process's appends, soon after for other processes'); a thread per stage it started waits for the
stage (``StageBackend.wait``) and wakes the loop when it ends. Between those, a tick
(``poll_interval`` while stages run, for heartbeats, metrics and the log cap;
``idle_interval`` otherwise, for deadlines) keeps the supervisor going. ``wakeups`` counts
why the loop stepped.

With ``position_file`` set, the position and the fold are saved (``_position``) and a restarted
executor continues from them instead of reading the log from 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quipu.core.errors import Conflict
from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.patterns.detection import ApprovedPattern
from quipu.core.ports import (
    BlobStore,
    EventStore,
    LaunchSpec,
    Resources,
    StageBackend,
    StageExit,
    StageHandle,
)
from quipu.core.reviews.events import ReviewCompleted, StopRequested
from quipu.core.runs import lifecycle
from quipu.core.runs.aggregate import Run
from quipu.core.runs.events import RunCanceled, RunQueued
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State
from quipu.rundir import (
    CHECKPOINTS,
    ENV_INPUTS_DIR,
    ENV_OUTPUTS_DIR,
    ENV_RUN_DIR,
    ENV_RUN_ID,
    ENV_STAGE,
    ENV_STAGE_CONFIG,
    HEARTBEAT,
    INPUTS_DIR,
    METRICS,
    OUTPUTS,
    OUTPUTS_DIR,
    RUNTIME_LOG,
    SIDE_DIR,
    STAGE_JSON,
    STOP_REQUESTED,
)

from ._metrics import MetricSeries
from ._position import load_position, save_position
from ._rundir import (
    CappedLog,
    build_run_dir,
    collect_checkpoints,
    collect_outputs,
    read_json,
    tree_changes,
    tree_snapshot,
    write_json,
    write_stop_request,
)
from ._supervisor import RUN_EVENT_TYPES, RunBook
from ._svs import review_outputs

__all__ = ["ProfileResolver", "StageExecutor", "read_log"]

log = logging.getLogger("quipu.executor")

ProfileResolver = Callable[[Mapping[str, Any]], Resources]
"""A run's stage config -> the compute profile it runs with (``compute.profile``); raises
``InvalidInput`` for a profile that is unknown or whose backend is not configured."""

_SIGNS_OF_LIFE = (HEARTBEAT, METRICS, "stdout.log", "stdout.tail", RUNTIME_LOG, OUTPUTS,
                  CHECKPOINTS)


@dataclass
class _Stage:
    """A stage this executor watches, through the backend that runs it."""

    run_id: str
    run_dir: Path
    handle: StageHandle
    backend: StageBackend
    outputs: dict[str, dict[str, Any]]
    metrics: MetricSeries
    log: CappedLog
    timeout: float = 0.0  # the profile's timeout in seconds (0: none)
    timeout_at: float | None = None  # monotonic time the profile's timeout ends the stage
    started: float = field(default_factory=time.monotonic)
    last_beat: float = field(default_factory=time.monotonic)
    last_metrics: float = 0.0
    signs: tuple[Any, ...] = ()
    kill_at: float | None = None  # set once canceled: when SIGTERM turns into SIGKILL
    checkpoints_read: int = 0  # bytes of checkpoints.jsonl already recorded

    @property
    def quipu_dir(self) -> Path:
        return self.run_dir / ".quipu"

    @property
    def pid(self) -> int:
        return self.handle.pid


class StageExecutor:
    """Runs queued stages through their backends and supervises every run's deadlines.

    ``backends`` maps a backend's name to the backend (``local`` at least); ``profiles``
    resolves a run's compute profile from its stage config (every run gets the ``local``
    profile without one).
    """

    def __init__(self, runs_dir: Path, store: EventStore, blobs: BlobStore, runs: RunService,
                 *, worker_id: str, backends: Mapping[str, StageBackend],
                 profiles: ProfileResolver | None = None, max_parallel: int = 2,
                 heartbeat_timeout: float = 600.0,
                 heartbeat_every: float = 30.0, poll_interval: float = 0.2,
                 idle_interval: float = 1.0, metrics_every: float = 5.0,
                 kill_grace: float = 5.0, log_limit: int = 50 * 1024 * 1024,
                 on_change: Callable[[], None] | None = None,
                 position_file: Path | None = None, save_every: float = 1.0,
                 patterns: Callable[[str], Sequence[ApprovedPattern]] | None = None) -> None:
        self.backends = dict(backends)
        self.patterns = patterns  # stage -> approved failure patterns (statistic rules run)
        self.profiles = profiles
        self.runs_dir = Path(runs_dir)
        self.on_change = on_change
        self.store = store
        self.blobs = blobs
        self.runs = runs
        self.worker_id = worker_id
        self.supervisor_id = f"supervisor:{worker_id}"
        self.max_parallel = max_parallel
        self.heartbeat_every = heartbeat_every
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self.position_file = position_file
        self.save_every = save_every
        self.metrics_every = metrics_every
        self.kill_grace = kill_grace
        self.log_limit = log_limit
        self.host = socket.gethostname()
        self.book = RunBook(heartbeat_timeout)
        self.position = 0
        self.wakeups: Counter[str] = Counter()  # why the loop stepped: append, exit, timeout
        self._pending: dict[str, None] = {}  # queued runs, in log order
        self._stages: dict[str, _Stage] = {}
        self._restored = False
        self._recovered = False
        self._saved = (0, 0.0)  # (position, monotonic time) of the last save
        self._step = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._wake_lock = threading.Lock()
        self._reasons: set[str] = set()
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None

    # --- lifecycle of the worker -----------------------------------------------------------------

    def start(self) -> None:
        """Follow the log in a background daemon thread (and a watcher thread that wakes it)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._watcher = threading.Thread(target=self._watch_log, daemon=True,
                                         name=f"executor {self.worker_id} log watcher")
        self._thread = threading.Thread(target=self._loop, name=f"executor {self.worker_id}",
                                        daemon=True)
        self._watcher.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop following the log (stage processes keep running; a new executor adopts them).

        The position is saved first, so the next executor continues from here.
        """
        self._stopping.set()
        self._nudge("stop")
        for thread in (self._thread, self._watcher):
            if thread is not None:
                thread.join(timeout=30)
        self._thread = self._watcher = None
        with self._step:
            self._isolated("-", self.save_position, True)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception:  # one bad step must not end the worker; the next one retries
                log.exception("executor step failed")
            self._sleep()

    def _nudge(self, reason: str) -> None:
        """Wake the loop now (from any thread); ``reason`` is counted in ``wakeups``."""
        with self._wake_lock:
            self._reasons.add(reason)
            self._wake.set()

    def _sleep(self) -> None:
        """Wait for a reason to step again: an append, a stage's exit, stop, or the tick."""
        tick = self.poll_interval if self._stages else self.idle_interval
        if not self._wake.wait(tick):
            self.wakeups["timeout"] += 1
            return
        with self._wake_lock:
            reasons, self._reasons = self._reasons, set()
            self._wake.clear()
        self.wakeups.update(reasons)

    def _watch_log(self) -> None:
        """Wake the loop whenever the log grows (the watcher thread)."""
        seen: int | None = None
        while not self._stopping.is_set():
            try:
                if seen is None:
                    seen = self.store.head()
                # Short slices, so that stop() is noticed soon even while nothing is appended.
                head = self.store.wait_for_append(after=seen, timeout=0.25)
                if head != seen:  # (lower: the log was replaced; the loop finds out itself)
                    seen = head
                    self._nudge("append")
            except Exception:
                log.exception("executor: waiting for the log failed")
                self._stopping.wait(self.idle_interval)

    def _wait_for_exit(self, backend: StageBackend, handle: StageHandle) -> None:
        """Wake the loop when a stage this executor started ends (its own thread)."""
        while not self._stopping.is_set():
            try:
                if backend.wait(handle, 5.0) is not None:
                    break
            except Exception:  # the loop's own tick still notices the exit
                log.exception("executor: waiting for run %s failed", handle.run_id)
                return
        self._nudge("exit")

    def running(self) -> list[str]:
        """The run ids whose stage processes this executor watches."""
        return sorted(self._stages)

    def poll_once(self) -> None:
        """One synchronous step: read new events, recover, launch, watch, supervise."""
        with self._step:
            if not self._restored:
                self._restore()
                self._restored = True
            self._follow()
            if not self._recovered:
                self._recover()
                self._recovered = True
            before = set(self._stages)
            self._launch_ready()
            watched = len(self._stages)
            for stage in list(self._stages.values()):
                self._isolated(stage.run_id, self._watch, stage)
            if len(self._stages) < watched:
                # A stage just ended: its downstream may start now rather than a poll later.
                self._follow()
                self._launch_ready()
            self._supervise()
            if self.on_change is not None and set(self._stages) != before:
                # Stages started or ended: let the engine refresh what people read (STATE.md).
                self._isolated("-", self.on_change)
            self._isolated("-", self.save_position, False)

    def _isolated(self, run_id: str, fn: Any, *args: Any) -> None:
        # A failure with one run is logged with the run and does not hold up the others.
        try:
            fn(*args)
        except Exception:
            log.exception("executor: handling run %s failed", run_id)

    # --- following the log -----------------------------------------------------------------------

    def _follow(self) -> None:
        # Up to the head read first, and then the position is that head: the run events are a
        # small part of the log, and the next read must not scan the other events again.
        head = self.store.head()
        while self.position < head:
            records = self.store.read(after=self.position, limit=1000, until=head,
                                      types=RUN_EVENT_TYPES)
            for record in records:
                self.position = record.position
                self._on_event(decode(record).event)
            if len(records) < 1000:
                self.position = head

    # --- the saved position ----------------------------------------------------------------------

    def _restore(self) -> None:
        """Continue from the saved position, if there is one and it still matches the log."""
        if self.position_file is None or self.position:
            return
        saved = load_position(self.position_file, self.store)
        if saved is None:
            return
        self.position = saved.position
        self.book.runs = saved.runs
        self._pending = dict.fromkeys(saved.pending)
        self._saved = (saved.position, time.monotonic())
        log.info("executor: continuing from position %d of the log", saved.position)

    def save_position(self, force: bool = False) -> None:
        """Save the position and the fold (at most every ``save_every`` seconds unless
        ``force``); called after every step and on ``stop``."""
        if self.position_file is None or not self._restored:
            return
        last, at = self._saved
        now = time.monotonic()
        if self.position == last or (not force and now - at < self.save_every):
            return
        if save_position(self.position_file, self.store, self.position, self.book.runs,
                         list(self._pending)):
            self._saved = (self.position, now)

    def _on_event(self, event: Event) -> None:
        self.book.apply(event)
        if isinstance(event, RunQueued) or (
                isinstance(event, ReviewCompleted) and event.decision != "block"):
            self._pending[event.run_id] = None  # (a review that approves or warns queues it)
        elif isinstance(event, RunCanceled):
            self._pending.pop(event.run_id, None)
            stage = self._stages.get(event.run_id)
            if stage is not None:
                self._kill(stage)
        elif isinstance(event, StopRequested):  # the stage sees it through should_stop()
            self._isolated(event.run_id, write_stop_request, self.runs_dir / event.run_id,
                           event.reason, event.requested_by)

    # --- launching -------------------------------------------------------------------------------

    def _busy(self) -> int:
        return sum(1 for s in self._stages.values()
                   if s.kill_at is None and self.book.state(s.run_id) is not State.LOST)

    def _launch_ready(self) -> None:
        for run_id in list(self._pending):
            if self.book.state(run_id) is not State.QUEUED:
                self._pending.pop(run_id, None)
                continue
            if self.book.waits_on_others(run_id):
                continue
            run = self.runs.load_run(run_id)
            if run.current is not State.QUEUED:
                self._pending.pop(run_id, None)
                continue
            ready = self._upstream_ready(run)
            if ready is None:
                self._pending.pop(run_id, None)  # an upstream failed: RunService cancels it
                continue
            if not ready:
                continue
            if self._busy() >= self.max_parallel:
                return
            self._pending.pop(run_id, None)
            if self.runs.record_claim(run_id, self.worker_id):
                self._isolated(run_id, self._launch, run)

    def _upstream_ready(self, run: Run) -> bool | None:
        """True when every upstream run succeeded, None when one ended otherwise."""
        request = run.check_exists()
        for dep_id in request.depends_on:
            dep = self.runs.load_run(dep_id)
            if dep.exit is not None and dep.exit.state == State.SUCCEEDED.value and \
                    dep.current in (State.SUCCEEDED, State.FINALIZED):
                continue
            if lifecycle.settled(dep.current):
                return None
            return False
        return True

    def _producer_outputs(self, run_id: str) -> dict[str, dict[str, Any]]:
        run = self.runs.load_run(run_id)
        return dict(run.exit.outputs) if run.exit is not None else {}

    def _spec(self, run: Run, run_dir: Path, resources: Resources) -> LaunchSpec:
        request = run.check_exists()
        return LaunchSpec(
            run_id=run.run_id, stage=request.stage, run_dir=run_dir,
            entrypoint=f"code/{request.entrypoint}", resources=resources,
            env={"PYTHONDONTWRITEBYTECODE": "1",
                 # Lines reach stdout.log as they are printed, so logs() can follow a stage
                 # live (a file is block-buffered otherwise: the lines would arrive at exit).
                 "PYTHONUNBUFFERED": "1",
                 ENV_RUN_ID: run.run_id, ENV_STAGE: request.stage},
            paths={"PYTHONPATH": "code", ENV_RUN_DIR: ".", ENV_INPUTS_DIR: INPUTS_DIR,
                   ENV_OUTPUTS_DIR: OUTPUTS_DIR, ENV_STAGE_CONFIG: f"{SIDE_DIR}/{STAGE_JSON}"})

    def _resources(self, config: Mapping[str, Any]) -> Resources:
        return Resources() if self.profiles is None else self.profiles(config)

    def _backend(self, name: str) -> StageBackend:
        backend = self.backends.get(name)
        if backend is None:
            raise RuntimeError(f"the {name!r} stage backend is not configured here "
                               f"(configured: {', '.join(sorted(self.backends))}); set "
                               "executor.backend in quipu.yaml or pick another profile")
        return backend

    def _launch(self, run: Run) -> None:
        request = run.check_exists()
        run_dir = (self.runs_dir / run.run_id).absolute()
        try:
            resources = self._resources(request.config)
            backend = self._backend(resources.backend)
            given = build_run_dir(
                run_dir, blobs=self.blobs, run_id=run.run_id, stage=request.stage,
                workspace=request.workspace, manifest_digest=request.manifest,
                config=request.config, inputs=request.inputs, outputs=request.outputs,
                producer=self._producer_outputs, resume=request.resume_from)
            if not (run_dir / "code" / request.entrypoint).is_file():
                raise FileNotFoundError(f"entrypoint {request.entrypoint} is not in the version")
            spec = self._spec(run, run_dir, resources)
            backend.prepare(spec)
            handle = backend.launch(spec)
            threading.Thread(target=self._wait_for_exit, args=(backend, handle), daemon=True,
                             name=f"stage {run.run_id}").start()
        except Exception as exc:  # whatever stops the stage from starting is its failure
            self.runs.record_launch_failure(run.run_id, worker=self.worker_id,
                                            error=f"{type(exc).__name__}: {exc}")
            return
        # Probed once the stage is on its way, so that its start never waits for the facts
        # (the first launch with an interpreter runs it once; later ones hit the cache).
        try:
            environment: dict[str, Any] = dict(backend.facts(spec, handle))
        except Exception as exc:  # facts never stop a stage
            environment = {"error": f"{type(exc).__name__}: {exc}"}
        environment["compute"] = resources.to_dict()
        write_json(run_dir / ".quipu" / "launch.json",
                   {"pid": handle.pid, "run_id": run.run_id, "worker": self.worker_id,
                    "host": self.host, "inputs": given, "environment": environment,
                    "handle": handle.to_dict()})
        stage = self._watch_new(run.run_id, run_dir, handle, backend, request.outputs,
                                resources)
        try:
            self.runs.record_launch(run.run_id, worker=self.worker_id, host=self.host,
                                    pid=handle.pid, run_dir=str(run_dir), inputs=given,
                                    environment=environment)
        except Conflict:
            # Canceled between our claim and the launch: the stage must not live on.
            self._kill(stage)

    def _watch_new(self, run_id: str, run_dir: Path, handle: StageHandle,
                   backend: StageBackend, outputs: dict[str, Any],
                   resources: Resources | None, ran: float = 0.0) -> _Stage:
        stage = _Stage(run_id=run_id, run_dir=run_dir, handle=handle, backend=backend,
                       outputs=dict(outputs),
                       metrics=MetricSeries(run_dir / SIDE_DIR / METRICS),
                       log=CappedLog(run_dir / ".quipu", self.log_limit))
        if resources is not None and resources.timeout is not None:
            stage.timeout = resources.timeout
            stage.timeout_at = stage.started + resources.timeout - ran
        stage.signs = self._signs(stage)
        self._stages[run_id] = stage
        return stage

    # --- watching --------------------------------------------------------------------------------

    def _signs(self, stage: _Stage) -> tuple[Any, ...]:
        found: list[tuple[int, int] | None] = []
        for name in _SIGNS_OF_LIFE:
            try:
                st = (stage.quipu_dir / name).stat()
                found.append((st.st_mtime_ns, st.st_size))
            except OSError:
                found.append(None)
        return tuple(found)

    def _watch(self, stage: _Stage) -> None:
        stage.backend.collect_logs(stage.handle)
        stage.log.check()
        status = stage.backend.poll(stage.handle)
        now = time.monotonic()
        if stage.kill_at is not None:  # canceled: end the whole tree, record no exit
            if status is not None or now >= stage.kill_at:
                stage.backend.kill(stage.handle)
                self._ingest_metrics(stage, complete=True)
                self._stages.pop(stage.run_id, None)
                stage.backend.release(stage.handle)
            return
        if status is not None:
            self._finish(stage, status)
            return
        if stage.timeout_at is not None and now >= stage.timeout_at:
            self._time_out(stage)
            return
        signs = self._signs(stage)
        if signs != stage.signs and now - stage.last_beat >= self.heartbeat_every:
            stage.signs, stage.last_beat = signs, now
            self._alive(stage)
        if now - stage.last_metrics >= self.metrics_every:
            self._ingest_metrics(stage, complete=False)
            self._ingest_checkpoints(stage)

    def _time_out(self, stage: _Stage) -> None:
        """The stage ran past its profile's timeout: cancel the run, saying so."""
        stage.timeout_at = None  # once; the cancel (or its refusal) settles it
        try:
            self.runs.cancel(stage.run_id, f"ran past its compute profile's timeout of "
                             f"{stage.timeout:g} s", actor=self.supervisor_id)
        except Conflict:
            return  # it ended or was canceled meanwhile; that record stands
        self._kill(stage)

    def _alive(self, stage: _Stage) -> None:
        beat = read_json(stage.quipu_dir / HEARTBEAT)
        message = beat.get("message") if isinstance(beat, dict) else None
        if self.book.state(stage.run_id) is State.LOST:
            # It was declared lost for its silence, and it spoke again: say so in the log.
            self.runs.record_adopted(stage.run_id, worker=self.worker_id, pid=stage.pid)
            return
        self.runs.record_heartbeat(stage.run_id, worker=self.worker_id,
                                   message=message if isinstance(message, str) else None)

    def _ingest_metrics(self, stage: _Stage, *, complete: bool) -> None:
        stage.last_metrics = time.monotonic()
        if not stage.metrics.read_new() and not complete:
            return  # nothing new: do not rewrite the same series
        self.runs.record_metrics(stage.run_id, actor=self.worker_id,
                                 series=stage.metrics.store(self.blobs),
                                 points=stage.metrics.points,
                                 summaries=stage.metrics.summaries(), complete=complete)

    def _ingest_checkpoints(self, stage: _Stage) -> None:
        """Store and record the checkpoints the stage saved since the last look."""
        saved, stage.checkpoints_read = collect_checkpoints(stage.run_dir, self.blobs,
                                                            stage.checkpoints_read)
        for point in saved:
            self.runs.record_checkpoint(stage.run_id, actor=self.worker_id, **point)

    def _kill(self, stage: _Stage) -> None:
        if stage.kill_at is None:
            stage.kill_at = time.monotonic() + self.kill_grace
            stage.backend.signal(stage.handle, signal.SIGTERM)

    def _finish(self, stage: _Stage, status: StageExit) -> None:
        """The stage ended: record its metrics, then its exit, then release it.

        The backend releases the stage (its leftover children end, a container is removed)
        only once the exit is in the log: a step that fails before (the blob store refusing
        the outputs) is retried at the next, and the backend must still know how it ended.
        """
        self._ingest_metrics(stage, complete=True)
        self._isolated(stage.run_id, self._ingest_checkpoints, stage)
        if not status.known:
            self.runs.record_lost(stage.run_id, actor=self.supervisor_id,
                                  why=status.error or
                                  "the stage process is gone and left no exit status")
            self._stages.pop(stage.run_id, None)
            self._isolated(stage.run_id, stage.backend.release, stage.handle)
            return
        exit_code, sig = status.exit_code, status.signal
        outputs, problems = collect_outputs(stage.run_dir, stage.outputs, self.blobs)
        problems += self._review_outputs(stage, outputs)
        before = read_json(stage.quipu_dir / "tree.json")
        if isinstance(before, dict):
            changed = tree_changes(before, tree_snapshot(stage.run_dir))
            if changed:
                shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more"
                                                  if len(changed) > 5 else "")
                problems.append(f"the stage changed files outside outputs/: {shown}")
        state = lifecycle.exit_state(lifecycle.ExitStatus(
            exit_code=exit_code, signal=sig, oom=status.oom, problems=bool(problems),
            stop_requested=(stage.quipu_dir / STOP_REQUESTED).exists()))
        error = status.error
        path, truncated = stage.log.finish()
        logs = None
        if path.exists():
            digest, size = self.blobs.put_file(path)
            logs = {"sha256": digest, "size": size, "truncated": truncated}
        self.runs.record_exit(stage.run_id, worker=self.worker_id, state=state,
                              exit_code=exit_code, signal=sig, outputs=outputs, logs=logs,
                              problems=problems,
                              error=error or None)
        self._stages.pop(stage.run_id, None)
        # Leftovers of the finished stage (children still running in its tree) end with it.
        self._isolated(stage.run_id, stage.backend.release, stage.handle)

    def _review_outputs(self, stage: _Stage, outputs: dict[str, dict[str, Any]]) -> list[str]:
        """Output contracts and statistics (``_svs``): record the findings, return the
        problems of blocking contracts (they fail the run)."""
        try:
            return self._check_outputs(stage, outputs)
        except Exception:  # a checker's bug must never lose the run's exit
            log.exception("checking the outputs of run %s failed", stage.run_id)
            return []

    def _patterns(self, stage: str) -> Sequence[ApprovedPattern]:
        """The stage's approved failure patterns; none when they cannot be read (a pattern
        store in trouble never fails a run)."""
        if self.patterns is None:
            return ()
        try:
            return self.patterns(stage)
        except Exception:
            log.exception("reading the approved failure patterns of stage %s failed", stage)
            return ()

    def _check_outputs(self, stage: _Stage, outputs: dict[str, dict[str, Any]]) -> list[str]:
        request = self.runs.load_run(stage.run_id).check_exists()

        def baseline(name: str) -> tuple[str, dict[str, Any]] | None:
            previous = self.runs.index.latest_output(request.workspace, request.stage, name)
            if previous is None or previous == stage.run_id:
                return None
            done = self.runs.load_run(previous).exit
            stats = done.outputs.get(name, {}).get("stats") if done and done.outputs else None
            return (previous, stats) if isinstance(stats, dict) else None

        review = review_outputs(stage.run_dir, stage.outputs, outputs, stage=request.stage,
                                baseline=baseline, patterns=self._patterns(request.stage))
        for phase, findings, omitted in review.batches():
            self.runs.record_findings(stage.run_id, actor=self.worker_id, phase=phase,
                                      source=phase, findings=findings, omitted=omitted)
        return review.problems

    # --- the supervisor --------------------------------------------------------------------------

    def _supervise(self) -> None:
        now = self.runs.svc.clock.now()
        for run_id in self.book.overdue(now):
            self._isolated(run_id, self._apply_deadline, run_id, now)

    def _apply_deadline(self, run_id: str, now: Any) -> None:
        run = self.runs.load_run(run_id)  # the log may have moved on since the book was read
        limit = self.book.deadline(run.current)
        if limit is None or (now - run.entered_at).total_seconds() <= limit:
            return
        self.runs.record_deadline(run_id, actor=self.supervisor_id)

    def _recover(self) -> None:
        """Pick up the runs a previous engine on this machine left launching or running."""
        for run_id, entry in list(self.book.runs.items()):
            if entry.state in (State.LAUNCHING, State.RUNNING, State.LOST, State.CANCELED) \
                    and run_id not in self._stages:
                run_dir = (self.runs_dir / run_id).absolute()
                if run_dir.is_dir():  # only runs this machine's executors started
                    self._isolated(run_id, self._recover_one, run_id, run_dir)

    def _recover_one(self, run_id: str, run_dir: Path) -> None:
        run = self.runs.load_run(run_id)
        state = run.current
        launch = read_json(run_dir / ".quipu" / "launch.json")
        if not isinstance(launch, dict):
            if state is State.LAUNCHING:
                self.runs.record_lost(run_id, actor=self.supervisor_id,
                                      why="the engine stopped before the stage process started")
            return
        handle = _launched_handle(run_id, launch)
        backend = self.backends.get(handle.backend)
        if backend is None:
            log.warning("executor: run %s was launched by the %r backend, which is not "
                        "configured here; it is left alone", run_id, handle.backend)
            return
        adopted = backend.adopt(run_id, run_dir, handle)
        alive = adopted is not None and backend.alive(adopted)
        handle = adopted or handle
        if state is State.CANCELED:
            if alive:  # canceled while no engine watched it: finish the job
                backend.kill(handle)
            return
        outputs = dict(run.check_exists().outputs)
        environment = launch.get("environment")
        environment = environment if isinstance(environment, dict) else None
        if state is State.LAUNCHING:
            self.runs.record_launch(run_id, worker=self.worker_id, host=self.host,
                                    pid=handle.pid, run_dir=str(run_dir),
                                    inputs=dict(launch.get("inputs", {})),
                                    environment=environment)
        resources = _launched_resources(environment)
        if alive:
            if state is State.LOST:
                self.runs.record_adopted(run_id, worker=self.worker_id, pid=handle.pid)
            try:  # the profile's timeout counts from the launch, not from the adoption
                ran = max(0.0, time.time() - (run_dir / ".quipu" / "launch.json").stat().st_mtime)
            except OSError:
                ran = 0.0
            self._watch_new(run_id, run_dir, handle, backend, outputs, resources, ran)
            return
        if state is State.LOST:
            return  # it ended while lost; the log keeps what was known then
        if adopted is None or not isinstance(read_json(run_dir / ".quipu" / "exit.json"), dict):
            self.runs.record_lost(run_id, actor=self.supervisor_id,
                                  why="process gone after an engine restart")
            return
        stage = self._watch_new(run_id, run_dir, handle, backend, outputs, None)
        self._watch(stage)


def _launched_handle(run_id: str, launch: dict[str, Any]) -> StageHandle:
    """The handle ``launch.json`` keeps (a local process's pid for files written before
    backends had handles)."""
    saved = launch.get("handle")
    if isinstance(saved, dict):
        try:
            return StageHandle.from_dict(saved)
        except (KeyError, TypeError, ValueError):
            pass
    pid = int(launch["pid"])
    return StageHandle(backend="local", run_id=run_id, ref=str(pid), pid=pid)


def _launched_resources(environment: dict[str, Any] | None) -> Resources | None:
    """The profile recorded with the launch (for its timeout), None if there is none."""
    compute = environment.get("compute") if environment else None
    if not isinstance(compute, dict):
        return None
    try:
        return Resources(**{k: v for k, v in compute.items() if k in Resources.__slots__})
    except TypeError:
        return None


def read_log(run_dir: Path) -> bytes:
    """The captured stdout/stderr of a run directory as it stands (capped while it runs)."""
    quipu_dir = Path(run_dir) / ".quipu"
    return CappedLog(quipu_dir, limit=1 << 62).view() if quipu_dir.is_dir() else b""

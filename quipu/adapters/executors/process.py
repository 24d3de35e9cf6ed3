"""The local-process stage backend: each stage is a process group on the engine's machine.

``LocalProcessBackend`` implements ``core.ports.StageBackend``. A stage starts as
``<python> -m quipu.adapters.executors._wrapper <script>`` in its run directory, in a new
session (its own process group, so every process it forks is signalled with it), with a clean
environment: the host's ``PATH``, ``HOME`` and ``LANG`` and the engine's variables. Its stdout
and stderr go to ``.quipu/stdout.log`` through an O_APPEND descriptor (the executor caps it).

Liveness and identity come from ``psutil``: a handle carries the process's creation time, so a
pid that an unrelated process reuses after the stage ended is never taken for the stage. For a
handle without one (written by an older engine) the process must carry the run's
``QUIPU_RUN_ID`` in its environment, or name the run directory on its command line.

The backend enforces none of a profile's limits (cpus, memory, gpus, network): a local stage
has what the machine has. The profile is still recorded with the launch.
"""

from __future__ import annotations

import os
import signal as signals
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from quipu.core.ports import (
    BackendCapabilities,
    BlobStore,
    LaunchSpec,
    StageExit,
    StageHandle,
)

from ._environment import EnvironmentProbe
from ._rundir import read_json

__all__ = ["WRAPPER", "LocalProcessBackend", "process_identity"]

WRAPPER = "quipu.adapters.executors._wrapper"
"""The module every stage starts through (it leaves ``.quipu/exit.json``)."""
_STEP = 0.05  # seconds between looks while waiting for a process that is not our child


def _environ(proc: psutil.Process, bound: float = 1.0) -> dict[str, str]:
    """``proc``'s environment. Just after ``exec`` Linux shows an empty environment for a
    moment (the new image's is not yet mapped), and no stage runs with an empty one: wait
    for it to appear, up to ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        env = proc.environ()
        if env or time.monotonic() >= deadline:
            return env
        time.sleep(0.01)


def process_identity(proc: psutil.Process) -> str:
    """What tells this process from a later one with the same pid: its creation time."""
    return f"{proc.create_time():.2f}"


class LocalProcessBackend:
    """Runs stages as local process groups (the default backend)."""

    name = "local"

    def __init__(self, blobs: BlobStore | None = None, *, python: str = sys.executable) -> None:
        self.python = python
        self.probe = EnvironmentProbe(blobs) if blobs is not None else None
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # run id -> a child we started
        self._reaped: dict[str, threading.Event] = {}  # run id -> set once the child is reaped
        self._env: dict[str, dict[str, str]] = {}  # run id -> what its process was given
        self._dirs: dict[str, Path] = {}  # run id -> run dir (to recognise old handles)
        self._lock = threading.Lock()

    # --- what the backend offers ----------------------------------------------------------------

    def capabilities(self) -> BackendCapabilities:
        """A local stage can use the network and whatever GPUs the machine has; it is never
        preempted."""
        return BackendCapabilities(gpu=True, network=True, preemptible=False)

    def check(self) -> list[str]:
        """The interpreter stages start with must exist."""
        if not Path(self.python).is_file():
            return [f"the stage interpreter {self.python} does not exist: reinstall Quipu in "
                    "a working Python environment"]
        return []

    # --- starting ---------------------------------------------------------------------------------

    def environment(self, spec: LaunchSpec) -> dict[str, str]:
        """The stage's whole environment: the host's basics and the engine's variables."""
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": os.environ.get("HOME", str(spec.run_dir)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            **spec.environment(),
        }

    def prepare(self, spec: LaunchSpec) -> None:
        """The script must be in the run directory and the log file writable."""
        script = spec.run_dir / spec.entrypoint
        if not script.is_file():
            raise FileNotFoundError(f"entrypoint {spec.entrypoint} is not in the run directory")
        (spec.run_dir / ".quipu").mkdir(parents=True, exist_ok=True)

    def launch(self, spec: LaunchSpec) -> StageHandle:
        """Start the stage in its own session; return its handle at once."""
        env = self.environment(spec)
        with (spec.run_dir / ".quipu" / "stdout.log").open("ab") as out:
            popen = subprocess.Popen(
                [self.python, "-m", WRAPPER, str(spec.run_dir / spec.entrypoint), *spec.args],
                cwd=spec.run_dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        try:
            identity = process_identity(psutil.Process(popen.pid))
        except psutil.Error:  # it ended already; the child handle still knows how
            identity = ""
        reaped = threading.Event()
        with self._lock:
            self._children[spec.run_id] = popen
            self._reaped[spec.run_id] = reaped
            self._env[spec.run_id] = env
            self._dirs[spec.run_id] = spec.run_dir
        # One thread blocks in waitpid for the child, so that wait() costs no polling (a
        # Popen.wait with a timeout polls every 50 ms).
        threading.Thread(target=_reap, args=(popen, reaped), daemon=True,
                         name=f"reap {spec.run_id}").start()
        return StageHandle(backend=self.name, run_id=spec.run_id, ref=str(popen.pid),
                           identity=identity, pid=popen.pid)

    def facts(self, spec: LaunchSpec, handle: StageHandle) -> dict[str, Any]:
        """The interpreter's facts (version, packages, GPUs, variable names), probed once per
        interpreter and cached."""
        if self.probe is None:
            return {}
        env = self._env.get(spec.run_id) or self.environment(spec)
        return self.probe.facts(self.python, env)

    # --- watching ---------------------------------------------------------------------------------

    def _process(self, handle: StageHandle) -> psutil.Process | None:
        """The stage's main process if it is alive and still the stage, else None."""
        try:
            proc = psutil.Process(handle.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None  # it has exited; nobody reaped it yet
            if handle.identity:
                return proc if process_identity(proc) == handle.identity else None
            return proc if self._names_run(proc, handle.run_id) else None
        except psutil.Error:
            return None

    def _names_run(self, proc: psutil.Process, run_id: str) -> bool:
        """Whether ``proc`` is the stage of ``run_id`` (for handles without an identity)."""
        try:
            return _environ(proc).get("QUIPU_RUN_ID") == run_id
        except psutil.AccessDenied:
            pass
        run_dir = self._dirs.get(run_id)
        try:
            return run_dir is not None and any(str(run_dir) in part for part in proc.cmdline())
        except psutil.Error:
            return False

    def alive(self, handle: StageHandle) -> bool:
        """Whether the stage's main process still runs."""
        child = self._children.get(handle.run_id)
        if child is not None:
            return child.poll() is None
        return self._process(handle) is not None

    def poll(self, handle: StageHandle) -> StageExit | None:
        """None while the main process runs; else the return code (for a child of this
        engine) completed by ``.quipu/exit.json``, or that file alone."""
        child = self._children.get(handle.run_id)
        if child is not None:
            code = child.poll()
            if code is None:
                return None
            status = self._exit_file(handle)
            error = status.get("error") if status else None
            return StageExit(known=True, exit_code=None if code < 0 else code,
                             signal=-code if code < 0 else None,
                             error=error if isinstance(error, str) and error else None)
        if self._process(handle) is not None:
            return None
        status = self._exit_file(handle)
        if status is None:
            return StageExit(known=False)
        error = status.get("error")
        return StageExit(known=True, exit_code=_int(status.get("exit_code")),
                         signal=_int(status.get("signal")),
                         error=error if isinstance(error, str) and error else None)

    def _exit_file(self, handle: StageHandle) -> dict[str, Any] | None:
        run_dir = self._dirs.get(handle.run_id)
        if run_dir is None:
            return None
        status = read_json(run_dir / ".quipu" / "exit.json")
        return status if isinstance(status, dict) else None

    def wait(self, handle: StageHandle, timeout: float) -> StageExit | None:
        """Block until the stage ends or ``timeout`` passes (None)."""
        reaped = self._reaped.get(handle.run_id)
        if reaped is not None:
            if not reaped.wait(timeout):
                return None
            return self.poll(handle)
        end = time.monotonic() + timeout
        while True:
            status = self.poll(handle)
            if status is not None or time.monotonic() >= end:
                return status
            time.sleep(_STEP)

    # --- ending -----------------------------------------------------------------------------------

    def _tree(self, handle: StageHandle) -> list[psutil.Process]:
        """Every live descendant of the stage's main process (including ones that left its
        process group with setsid)."""
        proc = self._process(handle)
        if proc is None:
            return []
        try:
            return list(proc.children(recursive=True))
        except psutil.Error:
            return []

    def _group_is_ours(self, handle: StageHandle) -> bool:
        """Whether the process group named by the stage's pid can only be the stage's.

        While any member of a process group lives, Linux does not hand its id out as a new
        pid; so the group is the stage's unless its pid now belongs to a different process.
        """
        try:
            proc = psutil.Process(handle.pid)
        except psutil.NoSuchProcess:
            return True  # the leader is gone: what is left in the group is the stage's
        except psutil.Error:
            return False
        if handle.run_id in self._children:
            return True
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            return True
        return self._process(handle) is not None

    def signal(self, handle: StageHandle, signum: int) -> None:
        """Send ``signum`` to the stage's process group and every descendant of it."""
        tree = self._tree(handle)
        if self._group_is_ours(handle):
            try:
                os.killpg(handle.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in tree:
            try:
                proc.send_signal(signum)
            except psutil.Error:
                pass

    def _members(self, handle: StageHandle) -> bool:
        """Whether anything of the stage's process group still runs."""
        if not self._group_is_ours(handle):
            return False
        try:
            os.killpg(handle.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        child = self._children.get(handle.run_id)
        if child is not None:
            child.poll()  # reap the leader so a zombie does not count
        try:
            return any(p.status() != psutil.STATUS_ZOMBIE for p in psutil.process_iter()
                       if _pgid(p) == handle.pid)
        except psutil.Error:
            return True

    def kill(self, handle: StageHandle, *, grace: float = 0.0) -> None:
        """SIGTERM the whole tree, wait up to ``grace`` for it to end, then SIGKILL it."""
        if grace > 0:
            self.signal(handle, signals.SIGTERM)
            end = time.monotonic() + grace
            while time.monotonic() < end and self._members(handle):
                time.sleep(_STEP)
        self.signal(handle, signals.SIGKILL)
        child = self._children.get(handle.run_id)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def collect_logs(self, handle: StageHandle) -> None:
        """Nothing to do: the stage writes ``.quipu/stdout.log`` itself."""

    def adopt(self, run_id: str, run_dir: Path,
              handle: StageHandle | None) -> StageHandle | None:
        """Watch a stage an earlier engine started: its handle, or None without one."""
        if handle is None:
            return None
        with self._lock:
            self._dirs[run_id] = Path(run_dir)
        return handle

    def release(self, handle: StageHandle) -> None:
        """Kill what is left of the stage's tree (background children of a finished stage)
        and forget it."""
        if handle.run_id in self._children:
            self.signal(handle, signals.SIGKILL)
        with self._lock:
            self._children.pop(handle.run_id, None)
            self._reaped.pop(handle.run_id, None)
            self._env.pop(handle.run_id, None)
            self._dirs.pop(handle.run_id, None)


def _reap(popen: subprocess.Popen[bytes], reaped: threading.Event) -> None:
    popen.wait()
    reaped.set()


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except OSError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None

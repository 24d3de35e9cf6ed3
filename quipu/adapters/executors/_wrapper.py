"""Run one stage script and leave its exit status in ``.quipu/exit.json``.

The executor starts every stage as ``python -m quipu.adapters.executors._wrapper <script>``.
An executor that restarted cannot ``wait()`` for a process it did not start, so the stage's own
process writes down how it ended: ``{"exit_code": int | null, "signal": int | null, "error":
str | null}``, ``error`` being the last line of the traceback when the script raised
(``"ValueError: bad shape"``, at most ``ERROR_LIMIT`` characters). The file
is written last (after the SDK's own exit hooks flushed metrics), through a temporary file and a
rename, so a reader sees it whole or not at all. A stage killed by SIGKILL writes nothing; the
executor then knows only what the operating system tells it, or that the process is gone.

Asked to by ``QUIPU_PROBE_ENVIRONMENT=1`` (the Docker backend, which cannot look inside its
containers from the engine's side), the wrapper also writes ``.quipu/environment.json``: the
facts of ``_probe.environment_facts`` as the stage's process sees them (the image's interpreter
and distributions, its platform, GPUs and the names, never the values, of its variables). The
stage's own code directories are left out of the distribution search, as in the local probe. A
process forked before the stage starts does it, so the stage's start never waits for the scan;
a stage that ends before it finished waits for it (at most ``PROBE_WAIT`` seconds).

This module imports nothing but the standard library (and, when probing, ``_probe``, which is
standard library only too): it runs inside every stage.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType

__all__ = ["ERROR_LIMIT", "main"]

ERROR_LIMIT = 1000
"""Characters of the exception line kept as the run's error."""
PROBE_WAIT = 30.0
"""Seconds a stage that ended waits at most for its environment probe to finish."""

_status: dict[str, int | str | None] = {"exit_code": None, "signal": None, "error": None}


def _exit_file() -> Path:
    return Path(os.environ.get("QUIPU_RUN_DIR") or ".") / ".quipu" / "exit.json"


def _write_status() -> None:
    path = _exit_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".exit.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_status))
        os.replace(tmp, path)
    except OSError:
        pass  # the executor falls back to the process's return code


def _write_environment() -> None:
    """Write ``.quipu/environment.json`` (whole, through a rename); a probe that fails writes
    its error instead and never stops the stage."""
    path = _exit_file().with_name("environment.json")  # quipu.rundir.ENVIRONMENT
    try:
        from quipu.adapters.executors._probe import environment_facts

        # The stage's code (PYTHONPATH) and the working directory are not the interpreter's.
        code = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        facts: dict[str, object] = environment_facts(exclude=[os.getcwd(), *code])
    except Exception as exc:  # the facts never stop a stage
        facts = {"error": _one_line(f"{type(exc).__name__}: {exc}")[:300]}
    try:
        tmp = path.with_name(f".environment.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(facts))
        os.replace(tmp, path)
    except OSError:
        pass  # the backend records that the facts are missing


def _probe_in_background() -> int | None:
    """Start ``_write_environment`` in a grandchild process, so the stage starts at once.

    The grandchild is orphaned at once (its parent exits and is reaped here), so the
    container's init reaps it and the stage never sees a child it did not start. It holds the
    write end of a pipe until it exits: the returned read end tells ``_await_probe`` when the
    probe is done. Without ``fork`` the probe runs here, before the stage.
    """
    try:
        done_r, done_w = os.pipe()
        child = os.fork()
    except OSError:
        _write_environment()
        return None
    if child == 0:
        try:
            os.close(done_r)
            if os.fork() == 0:
                try:
                    _write_environment()
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.close(done_w)
    os.waitpid(child, 0)
    return done_r


def _await_probe(done: int, timeout: float = PROBE_WAIT) -> None:
    """Wait (at most ``timeout`` seconds) for the background probe to finish."""
    import select

    try:
        while select.select([done], [], [], timeout)[0] and os.read(done, 64):
            pass  # nothing is ever written: EOF comes when the probe exits
    except (OSError, ValueError):
        pass
    finally:
        os.close(done)


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Record the signal, then die of it for real so the parent sees the same thing.
    _status.update(exit_code=None, signal=signum)
    _write_status()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
    return 1


def main(argv: list[str]) -> int:
    """Run the script ``argv[0]`` as ``__main__``; return its exit code."""
    if not argv:
        print("usage: python -m quipu.adapters.executors._wrapper SCRIPT [ARGS...]",
              file=sys.stderr)
        return 2
    script = os.path.abspath(argv[0])
    probing = None
    if os.environ.get("QUIPU_PROBE_ENVIRONMENT") == "1":  # quipu.rundir.ENV_PROBE_ENVIRONMENT
        # Before the SIGTERM handler and the exit hooks, which the probe must not inherit.
        probing = _probe_in_background()
    # atexit runs hooks last-registered-first: registering now makes exit.json the very last
    # thing written, after the SDK flushed its buffers.
    atexit.register(_write_status)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if probing is not None:
        # Runs before _write_status (atexit is last-in-first-out): a stage that ends at once
        # must not take the unfinished probe down with its container.
        atexit.register(_await_probe, probing)
    sys.argv = [script, *argv[1:]]
    sys.path[0] = os.path.dirname(script)  # like `python script.py`, not the run directory
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
        if isinstance(exc.code, str):
            _status["error"] = _one_line(f"SystemExit: {exc.code}")
    except BaseException as exc:
        traceback.print_exc()
        code = 1
        # What an agent needs first: the traceback's last line, not only the log tail.
        _status["error"] = _one_line(traceback.format_exception_only(exc)[-1])
    _status.update(exit_code=code, signal=None)
    return code


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= ERROR_LIMIT else line[:ERROR_LIMIT - 1] + "…"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

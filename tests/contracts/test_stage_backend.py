"""The StageBackend contract: one suite, run against every stage backend.

The backends are listed in ``tests/stage_backends.py`` (``CASES``; the local-process backend
today, Docker and the cloud backends join with one line each). Everything the executor loop
relies on is tested here with real stage processes: exit codes and errors, signals, the stop
request an SDK stage polls, outputs, log capture under the executor's cap, ending a stage's
whole process tree, adoption by another engine after the first one was killed with
``kill -9``, a stage that hangs and a stage that floods its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from stage_backends import CASES, Case, make_case, spec_for
from waiting import wait_until

from quipu.adapters.executors._rundir import CappedLog
from quipu.adapters.executors.process import LocalProcessBackend, process_identity
from quipu.core.ports import StageExit, StageHandle

ENGINE = Path(__file__).parent.parent / "stage_backends.py"


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    if request.param == "docker":
        request.getfixturevalue("python_image")  # skips, or fails in CI, without a daemon
    made = make_case(request.param, tmp_path / "backend")
    yield made


class Stages:
    """Run directories for one test, and every handle launched in them (killed at the end)."""

    def __init__(self, case: Case, root: Path) -> None:
        self.case, self.root = case, root
        self.handles: list[StageHandle] = []

    def run_dir(self, script: str, name: str = "run-1") -> Path:
        run_dir = self.root / name
        for sub in ("code", "inputs", "outputs", ".quipu"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        prelude = READY if script.startswith(READY) else ""
        (run_dir / "code" / "stage.py").write_text(
            prelude + textwrap.dedent(script[len(prelude):]))
        (run_dir / ".quipu" / "stage.json").write_text("{}")
        return run_dir

    def launch(self, script: str, name: str = "run-1") -> tuple[Path, StageHandle]:
        run_dir = self.run_dir(script, name)
        spec = spec_for(self.case, run_dir)
        self.case.backend.prepare(spec)
        handle = self.case.backend.launch(spec)
        self.handles.append(handle)
        return run_dir, handle

    def ended(self, handle: StageHandle, timeout: float = 60.0) -> StageExit:
        status = self.case.backend.wait(handle, timeout)
        assert status is not None, f"{handle.run_id} did not end within {timeout:g} s"
        return status

    def log(self, run_dir: Path, handle: StageHandle) -> bytes:
        self.case.backend.collect_logs(handle)
        return (run_dir / ".quipu" / "stdout.log").read_bytes()


@pytest.fixture
def stages(case: Case, tmp_path: Path) -> Iterator[Stages]:
    made = Stages(case, tmp_path / "runs")
    yield made
    for handle in made.handles:
        case.backend.kill(handle)
        case.backend.release(handle)


def ready(run_dir: Path, name: str = "ready") -> bool:
    return (run_dir / "outputs" / name).exists()


READY = """
import os, pathlib
def ready(name="ready", text=""):
    pathlib.Path(os.environ["QUIPU_OUTPUTS_DIR"], name).write_text(text)
"""


class TestExits:
    def test_an_exit_code_and_the_output_of_both_streams_are_kept(self, stages: Stages) -> None:
        run_dir, handle = stages.launch("""
            import sys
            print("to stdout")
            print("to stderr", file=sys.stderr)
            sys.exit(3)
        """)
        status = stages.ended(handle)
        assert status.known and status.exit_code == 3 and status.signal is None
        assert not status.oom
        log = stages.log(run_dir, handle)
        assert b"to stdout" in log and b"to stderr" in log
        assert not stages.case.backend.alive(handle)

    def test_a_clean_end_is_exit_code_0(self, stages: Stages) -> None:
        _, handle = stages.launch("print('done')\n")
        assert stages.ended(handle) == StageExit(known=True, exit_code=0)

    def test_an_exception_gives_exit_code_1_and_its_last_line(self, stages: Stages) -> None:
        run_dir, handle = stages.launch("raise ValueError('bad shape')\n")
        status = stages.ended(handle)
        assert (status.exit_code, status.error) == (1, "ValueError: bad shape")
        assert b"Traceback" in stages.log(run_dir, handle)

    def test_poll_answers_none_while_the_stage_runs(self, stages: Stages) -> None:
        run_dir, handle = stages.launch(READY + """
            import time
            ready()
            while not os.path.exists(os.path.join(os.environ["QUIPU_RUN_DIR"], "go")):
                time.sleep(0.02)
        """)
        wait_until(lambda: ready(run_dir), what="the stage started")
        assert stages.case.backend.poll(handle) is None
        assert stages.case.backend.alive(handle)
        (run_dir / "go").touch()
        assert stages.ended(handle).exit_code == 0


class TestTheRunDirectory:
    def test_the_stage_reads_inputs_writes_outputs_and_sees_its_variables(
            self, stages: Stages) -> None:
        run_dir = stages.run_dir("""
            import json, os, pathlib
            inputs = pathlib.Path(os.environ["QUIPU_INPUTS_DIR"])
            out = pathlib.Path(os.environ["QUIPU_OUTPUTS_DIR"])
            (out / "model.txt").write_text((inputs / "data.txt").read_text().upper())
            names = ("QUIPU_RUN_ID", "QUIPU_STAGE", "QUIPU_RUN_DIR", "QUIPU_STAGE_CONFIG")
            (out / "env.json").write_text(json.dumps({n: os.environ.get(n) for n in names}))
            import helper  # the stage's own code is importable
            (out / "helper.txt").write_text(helper.VALUE)
            pathlib.Path(os.environ["QUIPU_STAGE_CONFIG"]).read_text()
        """)
        (run_dir / "inputs" / "data.txt").write_text("weights")
        (run_dir / "code" / "helper.py").write_text("VALUE = 'from code/'\n")
        spec = spec_for(stages.case, run_dir)
        stages.case.backend.prepare(spec)
        handle = stages.case.backend.launch(spec)
        stages.handles.append(handle)
        status = stages.ended(handle)
        assert status.exit_code == 0, stages.log(run_dir, handle)
        assert (run_dir / "outputs" / "model.txt").read_text() == "WEIGHTS"
        assert (run_dir / "outputs" / "helper.txt").read_text() == "from code/"
        seen = json.loads((run_dir / "outputs" / "env.json").read_text())
        assert seen["QUIPU_RUN_ID"] == "run-1" and seen["QUIPU_STAGE"] == "contract"
        assert seen["QUIPU_RUN_DIR"] and seen["QUIPU_STAGE_CONFIG"].endswith(
            ".quipu/stage.json")

    def test_a_missing_entrypoint_is_refused_before_anything_starts(
            self, stages: Stages) -> None:
        run_dir = stages.run_dir("")
        (run_dir / "code" / "stage.py").unlink()
        with pytest.raises(OSError):
            stages.case.backend.prepare(spec_for(stages.case, run_dir))


class TestSignalsAndStops:
    def test_sigterm_ends_the_stage_and_is_reported_as_the_signal(self, stages: Stages) -> None:
        run_dir, handle = stages.launch(READY + """
            import time
            ready()
            time.sleep(600)
        """)
        wait_until(lambda: ready(run_dir), what="the stage started")
        stages.case.backend.signal(handle, signal.SIGTERM)
        status = stages.ended(handle)
        assert status.known and status.signal == signal.SIGTERM and status.exit_code is None

    def test_a_stop_request_is_seen_by_should_stop_and_the_stage_ends_cleanly(
            self, stages: Stages) -> None:
        run_dir, handle = stages.launch(READY + """
            import time
            from quipu import sdk
            ready()
            while not sdk.should_stop():
                time.sleep(0.02)
            print("stopping as asked")
        """)
        wait_until(lambda: ready(run_dir), what="the stage started")
        (run_dir / ".quipu" / "stop_requested").touch()
        assert stages.ended(handle).exit_code == 0
        assert b"stopping as asked" in stages.log(run_dir, handle)

    def test_kill_ends_a_stage_that_ignores_sigterm(self, stages: Stages) -> None:
        run_dir, handle = stages.launch(READY + """
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            ready()
            while True:
                time.sleep(1)
        """)
        wait_until(lambda: ready(run_dir), what="the stage started")
        stages.case.backend.kill(handle, grace=0.5)
        status = stages.ended(handle)
        assert status.known and status.signal == signal.SIGKILL
        assert not stages.case.backend.alive(handle)

    def test_kill_reaches_every_process_of_the_tree(self, stages: Stages) -> None:
        # A child in the stage's group, a grandchild, and one that left the group (setsid).
        run_dir, handle = stages.launch(READY + """
            import subprocess, sys, time
            loop = "import time\\nwhile True: time.sleep(1)"
            kids = [subprocess.Popen([sys.executable, "-c", loop]),
                    subprocess.Popen([sys.executable, "-c",
                                      "import subprocess, sys, time\\n"
                                      f"subprocess.Popen([sys.executable, '-c', {loop!r}])\\n"
                                      "while True: time.sleep(1)"]),
                    subprocess.Popen([sys.executable, "-c", loop], start_new_session=True)]
            ready(text=" ".join(str(k.pid) for k in kids))
            while True:
                time.sleep(1)
        """)
        wait_until(lambda: ready(run_dir) and (run_dir / "outputs" / "ready").read_text(),
                   what="the stage forked its children")
        stages.case.backend.kill(handle, grace=5.0)
        status = stages.ended(handle)
        assert status.known and status.exit_code is None
        assert status.signal in (signal.SIGTERM, signal.SIGKILL)
        stages.case.backend.release(handle)
        if stages.case.name == "local":  # pids are the host's only for local processes
            pids = [int(p) for p in (run_dir / "outputs" / "ready").read_text().split()]
            wait_until(lambda: not any(_running(pid) for pid in pids),
                       what="every process of the stage's tree ended")

    def test_signals_to_a_gone_stage_are_harmless(self, stages: Stages) -> None:
        _, handle = stages.launch("pass\n")
        stages.ended(handle)
        stages.case.backend.signal(handle, signal.SIGTERM)
        stages.case.backend.kill(handle, grace=0.1)
        stages.case.backend.release(handle)
        stages.case.backend.release(handle)


class TestLogs:
    def test_a_flood_of_output_stays_under_the_cap_and_keeps_both_ends(
            self, stages: Stages) -> None:
        run_dir, handle = stages.launch("""
            import sys
            print("FIRST LINE")
            line = "x" * 1023 + "\\n"
            for _ in range(48 * 1024):  # 48 MiB
                sys.stdout.write(line)
            print("LAST LINE")
        """)
        cap = CappedLog(run_dir / ".quipu", limit=256 * 1024)
        biggest = 0

        def watch() -> bool:
            nonlocal biggest
            stages.case.backend.collect_logs(handle)
            cap.check()
            live = run_dir / ".quipu" / "stdout.log"
            if live.exists():  # blocks in use: cut bytes are freed, not only hidden
                biggest = max(biggest, live.stat().st_blocks * 512)
            return stages.case.backend.poll(handle) is not None

        wait_until(watch, what="the flooding stage ended", timeout=120, interval=0.01)
        assert stages.ended(handle).exit_code == 0
        stages.case.backend.collect_logs(handle)
        path, truncated = cap.finish()
        final = path.read_bytes()
        assert truncated and len(final) <= 256 * 1024 + 200
        assert final.startswith(b"FIRST LINE") and final.rstrip().endswith(b"LAST LINE")
        assert b"bytes in the middle were dropped" in final
        assert biggest < 48 * 1024 * 1024 // 2  # never near the whole flood on disk

    def test_output_printed_so_far_is_readable_while_the_stage_runs(
            self, stages: Stages) -> None:
        run_dir, handle = stages.launch(READY + """
            import time
            print("early line")
            ready()
            time.sleep(600)
        """)
        wait_until(lambda: b"early line" in stages.log(run_dir, handle),
                   what="the stage's first line reached its log")
        assert stages.case.backend.alive(handle)


class TestAdoption:
    def _engine(self, case: Case, run_dir: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(ENGINE), "engine", case.name,
                                 str(run_dir)], stdin=subprocess.DEVNULL)

    def test_a_new_engine_adopts_a_stage_after_the_first_was_killed_with_sigkill(
            self, stages: Stages) -> None:
        run_dir = stages.run_dir(READY + """
            import time
            ready()
            while not os.path.exists(os.path.join(os.environ["QUIPU_RUN_DIR"], "go")):
                time.sleep(0.02)
            raise SystemExit(7)
        """)
        engine = self._engine(stages.case, run_dir)
        try:
            wait_until(lambda: (run_dir / "handle.json").exists() and ready(run_dir),
                       what="the engine launched the stage")
        finally:
            engine.send_signal(signal.SIGKILL)
            engine.wait(timeout=30)
        saved = StageHandle.from_dict(json.loads((run_dir / "handle.json").read_text()))
        backend = stages.case.backend  # another engine's backend, in this process
        handle = backend.adopt(saved.run_id, run_dir, saved)
        assert handle is not None
        stages.handles.append(handle)
        assert backend.alive(handle) and backend.poll(handle) is None
        (run_dir / "go").touch()
        status = stages.ended(handle)
        assert status.known and status.exit_code == 7

    def test_a_stage_that_ended_while_no_engine_watched_reports_its_exit(
            self, stages: Stages) -> None:
        run_dir = stages.run_dir("raise SystemExit(5)\n")
        engine = self._engine(stages.case, run_dir)
        try:
            wait_until(lambda: (run_dir / ".quipu" / "exit.json").exists(),
                       what="the stage ended")
        finally:
            engine.send_signal(signal.SIGKILL)
            engine.wait(timeout=30)
        saved = StageHandle.from_dict(json.loads((run_dir / "handle.json").read_text()))
        handle = stages.case.backend.adopt(saved.run_id, run_dir, saved)
        assert handle is not None
        stages.handles.append(handle)
        status = stages.ended(handle)
        assert status.known and status.exit_code == 5

    def test_nothing_to_adopt_without_a_handle(self, stages: Stages) -> None:
        run_dir = stages.run_dir("pass\n")
        assert stages.case.backend.adopt("run-1", run_dir, None) is None

    def test_the_handle_survives_json(self, stages: Stages) -> None:
        _, handle = stages.launch("pass\n")
        assert StageHandle.from_dict(json.loads(json.dumps(handle.to_dict()))) == handle
        assert handle.backend == stages.case.backend.name


class TestDescription:
    def test_capabilities_check_and_facts(self, stages: Stages) -> None:
        backend = stages.case.backend
        caps = backend.capabilities()
        assert isinstance(caps.gpu, bool) and isinstance(caps.preemptible, bool)
        assert backend.check() == []
        run_dir, handle = stages.launch("pass\n")
        facts = backend.facts(spec_for(stages.case, run_dir), handle)
        assert isinstance(facts, dict)
        json.dumps(facts)


class TestLocalProcessIdentity:
    """The local backend tells its stage from a process that reused its pid (psutil's create
    time), which the /proc parsing it replaced did by the environment alone."""

    def test_a_live_process_with_another_identity_is_not_the_stage(
            self, tmp_path: Path) -> None:
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 env={**os.environ, "QUIPU_RUN_ID": "run-1"})
        try:
            backend = LocalProcessBackend()
            real = process_identity(psutil.Process(other.pid))
            # Same pid, same QUIPU_RUN_ID, but created at another time: a reused pid.
            stale = StageHandle("local", "run-1", str(other.pid), identity="1.00",
                                pid=other.pid)
            adopted = backend.adopt("run-1", tmp_path, stale)
            assert adopted is not None and not backend.alive(adopted)
            assert backend.poll(adopted) == StageExit(known=False)
            backend.kill(adopted)  # must not touch the unrelated process
            assert other.poll() is None
            same = StageHandle("local", "run-1", str(other.pid), identity=real, pid=other.pid)
            assert backend.alive(same)
        finally:
            other.kill()
            other.wait()

    def test_an_old_handle_without_identity_is_recognised_by_the_run_id(
            self, tmp_path: Path) -> None:
        mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                env={**os.environ, "QUIPU_RUN_ID": "run-1"})
        try:
            backend = LocalProcessBackend()
            assert backend.alive(StageHandle("local", "run-1", str(mine.pid), pid=mine.pid))
            assert not backend.alive(StageHandle("local", "run-2", str(mine.pid),
                                                 pid=mine.pid))
        finally:
            mine.kill()
            mine.wait()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

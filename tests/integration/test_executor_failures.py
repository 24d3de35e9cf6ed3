"""How the executor records stages that go wrong: failures, broken contracts, floods, cancels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_executor_helpers import (
    ONE_STAGE,
    THREE_STAGES,
    drive,
    ended,
    executor,
    exit_of,
    kill_quietly,
    make_project,
    pid_gone,
    run_dir_of,
    start,
    state,
)
from waiting import wait_until

from quipu.adapters.executors._rundir import CappedLog
from quipu.core.runs.lifecycle import State
from quipu.core.workspaces.aggregate import Workspace

OK = "from quipu import sdk\nsdk.save_output('numbers', [1, 2])\n"


class TestFailures:
    def test_a_failing_stage_fails_and_its_downstream_is_canceled(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, THREE_STAGES, {
            "make": "raise SystemExit(3)\n", "double": OK, "report": OK})
        ids = start(q)
        drive(executor(q), ended(q, *ids.values()))
        make = q.runs.load_run(ids["make"])
        assert make.current is State.FAILED and exit_of(make).exit_code == 3
        assert state(q, ids["double"]) is State.CANCELED
        assert state(q, ids["report"]) is State.CANCELED
        assert not (q.root / ".quipu" / "runs" / ids["double"]).exists()  # never launched
        assert set(q.service.load(Workspace, "ws").awaiting) == {ids["make"]}

    def test_an_exception_fails_the_run_and_its_traceback_is_in_the_log(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": "raise ValueError('no good')\n"})
        run_id = start(q)["solo"]
        drive(executor(q), ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert run.current is State.FAILED and exit_of(run).exit_code == 1
        logs = exit_of(run).logs
        assert logs is not None and not logs["truncated"]
        assert "ValueError: no good" in q.blobs.get_bytes(logs["sha256"]).decode()

    def test_exit_0_with_a_declared_output_missing_fails_with_a_problem(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": "print('forgot my output')\n"})
        run_id = start(q)["solo"]
        drive(executor(q), ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert run.current is State.FAILED and exit_of(run).exit_code == 0
        assert exit_of(run).problems == [
            "declared output 'result' was not written (expected outputs/result.json)"]

    def test_exit_0_with_an_empty_declared_output_fails_with_a_problem(
            self, tmp_path: Path) -> None:
        code = "import os\nopen(os.environ['QUIPU_OUTPUTS_DIR'] + '/result.json', 'w').close()\n"
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        drive(executor(q), ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert run.current is State.FAILED
        assert exit_of(run).problems == ["declared output 'result' is empty (outputs/result.json)"]

    def test_a_stage_without_outputs_may_write_nothing(self, tmp_path: Path) -> None:
        pipeline = "stages:\n  - name: solo\n"
        q = make_project(tmp_path, pipeline, {"solo": "print('hello')\n"})
        run_id = start(q)["solo"]
        drive(executor(q), ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert run.current is State.SUCCEEDED and exit_of(run).problems == []

    def test_writing_outside_outputs_is_a_problem(self, tmp_path: Path) -> None:
        code = """\
            from pathlib import Path
            from quipu import sdk
            Path("scratch.txt").write_text("oops")
            Path("code/modules/solo.py").write_text("# changed")
            sdk.save_output("result", {"ok": True})
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        drive(executor(q), ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert run.current is State.FAILED
        assert exit_of(run).problems == [
            "the stage changed files outside outputs/: code/modules/solo.py, scratch.txt"]
        assert "result" in exit_of(run).outputs  # what it did produce is still recorded

    def test_a_stage_killed_by_a_signal_crashed(self, tmp_path: Path) -> None:
        code = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        drive(executor(q), ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert run.current is State.CRASHED and exit_of(run).signal == 9
        assert exit_of(run).exit_code is None

    def test_a_stage_asked_to_stop_that_exits_0_is_stopped(self, tmp_path: Path) -> None:
        code = """\
            import time
            from quipu import sdk
            while not sdk.should_stop():
                time.sleep(0.05)
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        ex = executor(q)
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        (run_dir_of(q.runs.load_run(run_id)) / ".quipu" / "stop_requested").touch()
        drive(ex, ended(q, run_id))
        assert state(q, run_id) is State.STOPPED


class TestTheLogIsCapped:
    def test_a_stage_flooding_stdout_keeps_head_and_tail_under_the_cap(
            self, tmp_path: Path) -> None:
        code = """\
            import sys
            from quipu import sdk
            print("FIRST LINE", flush=True)
            line = "x" * 1023 + "\\n"
            for _ in range(6 * 1024):   # 6 MB through a 256 kB cap
                sys.stdout.write(line)
            print("LAST LINE", flush=True)
            sdk.save_output("result", {"ok": True})
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        drive(executor(q, log_limit=256 * 1024), ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert run.current is State.SUCCEEDED
        logs = exit_of(run).logs
        assert logs is not None and logs["truncated"] is True and logs["size"] < 300 * 1024
        text = q.blobs.get_bytes(logs["sha256"]).decode()
        assert text.startswith("FIRST LINE\n") and text.endswith("LAST LINE\n")
        assert "bytes in the middle were dropped" in text

    def test_cutting_the_log_while_the_stage_writes_loses_no_byte(self, tmp_path: Path) -> None:
        """Cuts made under a live writer lose nothing: the log is the first half, a notice
        counting exactly what was dropped, and the last half of what the process wrote."""
        code = (
            "import sys\n"
            "for i in range(150_000):\n"
            "    sys.stdout.write(f'{i:09d}\\n')\n"
            "    if i % 64 == 0:\n"
            "        sys.stdout.flush()\n"
            "print('LAST LINE', flush=True)\n")
        quipu_dir = tmp_path / ".quipu"
        quipu_dir.mkdir()
        with (quipu_dir / "stdout.log").open("ab") as out:
            writer = subprocess.Popen([sys.executable, "-c", code], stdout=out)
        limit = 16 * 1024
        log = CappedLog(quipu_dir, limit)
        cuts = 0
        while writer.poll() is None:
            before = log.dropped
            log.check()  # as fast as it can, so cuts land while the writer writes
            cuts += log.dropped != before
        # finished by a fresh reader of the cap state, as by an executor that restarted
        path, truncated = CappedLog(quipu_dir, limit).finish()
        written = b"".join(f"{i:09d}\n".encode() for i in range(150_000)) + b"LAST LINE\n"
        half = limit // 2
        dropped = len(written) - 2 * half
        notice = (f"\n[quipu: output exceeded {limit} bytes; about {dropped} bytes "
                  "in the middle were dropped]\n").encode()
        assert truncated and cuts > 10, cuts  # the scenario did cut the log while it ran
        assert path.read_bytes() == written[:half] + notice + written[-half:]


    def test_inspect_run_shows_whole_lines_of_a_log_being_capped(self, tmp_path: Path) -> None:
        """While a flooding stage's log is being cut, inspect_run's tail is read through the
        cap (the freed head of the live file reads as zeros): whole lines, no NUL bytes."""
        go = tmp_path / "go"
        code = f"""\
            import sys, time
            from pathlib import Path
            from quipu import sdk
            for i in range(40_000):
                sys.stdout.write(f"line {{i:09d}}\\n")
            sys.stdout.flush()
            while not Path({str(go)!r}).exists():
                time.sleep(0.05)
            sdk.save_output("result", {{"ok": True}})
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        ex = executor(q, log_limit=64 * 1024)
        drive(ex, lambda: state(q, run_id) is State.RUNNING
              and (run_dir_of(q.runs.load_run(run_id)) / ".quipu" / "stdout.cap.json").exists())
        tail = q.inspect_run(run_id, log_lines=50)["dashboard"]["log_tail"]
        go.touch()
        drive(ex, ended(q, run_id))
        assert tail["source"] == "live"
        assert tail["lines"], tail
        for line in tail["lines"]:
            assert "\x00" not in line
            assert line.startswith("line ") and len(line) == len("line 000000000"), line


class TestCancel:
    def test_cancel_ends_the_whole_process_group(self, tmp_path: Path) -> None:
        code = """\
            import os, time
            from pathlib import Path
            child = os.fork()
            if child == 0:
                while True:
                    time.sleep(0.1)
            Path("outputs/pids.txt").write_text(f"{os.getpid()} {child}")
            while True:
                time.sleep(0.1)
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        ex = executor(q, kill_grace=2.0)
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        pids_file = run_dir_of(q.runs.load_run(run_id)) / "outputs" / "pids.txt"
        wait_until(lambda: pids_file.exists() and pids_file.read_text().count(" ") == 1,
                   what="the stage writes its and its child's pids")
        stage_pid, grandchild = map(int, pids_file.read_text().split())
        try:
            assert not pid_gone(stage_pid) and not pid_gone(grandchild)
            q.cancel(run_id, "the hypothesis was already refuted elsewhere")
            drive(ex, lambda: not ex.running(), what="the executor lets the canceled stage go")
            # The executor stops watching only after it signalled the whole group; both
            # processes then end (the grace is 2 s; the bound is only for a broken build).
            wait_until(lambda: pid_gone(stage_pid) and pid_gone(grandchild),
                       what="the stage and its child end")
            run = q.runs.load_run(run_id)
            assert run.current is State.CANCELED and run.exit is None
        finally:
            kill_quietly(stage_pid)

    def test_a_grandchild_that_ignores_sigterm_is_killed_after_the_grace(
            self, tmp_path: Path) -> None:
        code = """\
            import os, signal, time
            from pathlib import Path
            child = os.fork()
            if child == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                while True:
                    time.sleep(0.1)
            Path("outputs/pids.txt").write_text(f"{os.getpid()} {child}")
            while True:
                time.sleep(0.1)
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        ex = executor(q, kill_grace=1.0)
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        pids_file = run_dir_of(q.runs.load_run(run_id)) / "outputs" / "pids.txt"
        wait_until(lambda: pids_file.exists() and pids_file.read_text().count(" ") == 1,
                   what="the stage writes its and its child's pids")
        stage_pid, grandchild = map(int, pids_file.read_text().split())
        try:
            q.cancel(run_id, "the hypothesis was already refuted elsewhere")
            drive(ex, lambda: not ex.running(), what="the executor lets the canceled stage go")
            # SIGTERM cannot end it: only the SIGKILL after the grace can.
            wait_until(lambda: pid_gone(grandchild), what="the child ignoring SIGTERM ends")
        finally:
            kill_quietly(stage_pid)

"""The command reviewer runs a real program: the context goes in as JSON on stdin, the verdict
comes back as JSON on stdout; a crash, a hang, garbage or a flood is a reviewer failure and the
program does not outlive its timeout."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

from quipu.adapters.reviewers.command import CommandReviewer
from quipu.core.reviews.review import REVIEWER_FAILED, ReviewContext, ReviewVerdict


def context() -> ReviewContext:
    return ReviewContext(
        run_id="stage-1", workspace="w", stage="train", version=1,
        entrypoint="modules/train.py", files={"modules/train.py": "print('hi')\n"},
        pipeline=None, config={}, inputs={}, outputs={}, results_spec={},
        reason={"description": "r"})


def program(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "reviewer.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


def failure(verdict: ReviewVerdict) -> str:
    assert verdict.reviewer_failed, verdict
    [found] = verdict.findings
    assert found.signal == REVIEWER_FAILED and found.source == "command"
    return found.message


def test_the_program_reads_the_context_and_its_reply_is_the_verdict(tmp_path: Path) -> None:
    argv = program(tmp_path, """
        import json, sys
        ctx = json.load(sys.stdin)
        assert "decision" in json.dumps(ctx["reply_schema"])
        print(json.dumps({"decision": "block", "fix": "stage " + ctx["stage"],
                          "findings": [{"severity": "error", "file": "modules/train.py",
                                        "line": 1, "message": "prints instead of training"}]}))
        """)
    verdict = CommandReviewer(argv, timeout=30).review(context())
    assert verdict.decision == "block" and verdict.fix == "stage train"
    assert verdict.findings[0].line == 1 and not verdict.reviewer_failed


def test_a_crash_is_a_failure_with_the_tail_of_its_stderr(tmp_path: Path) -> None:
    argv = program(tmp_path, "import sys\nsys.stderr.write('model quota exceeded')\nsys.exit(3)\n")
    message = failure(CommandReviewer(argv, timeout=30).review(context()))
    assert "status 3" in message and "model quota exceeded" in message


def test_garbage_on_stdout_is_a_failure(tmp_path: Path) -> None:
    argv = program(tmp_path, "print('I think it is fine')\n")
    assert "not JSON" in failure(CommandReviewer(argv, timeout=30).review(context()))


def test_a_hang_is_killed_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    argv = program(tmp_path, f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(120)
        """)
    message = failure(CommandReviewer(argv, timeout=1.0).review(context()))
    assert "did not answer within 1 s" in message
    pid = int(pid_file.read_text())
    assert not _alive(pid)


def test_a_flood_of_output_is_cut_and_the_program_killed(tmp_path: Path) -> None:
    argv = program(tmp_path, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    message = failure(CommandReviewer(argv, timeout=30, max_output_bytes=100_000)
                      .review(context()))
    assert "more than 100000 bytes" in message


def test_a_program_that_does_not_exist_is_a_failure(tmp_path: Path) -> None:
    message = failure(CommandReviewer([str(tmp_path / "nope")]).review(context()))
    assert "could not start" in message


def test_a_program_that_ignores_stdin_still_answers(tmp_path: Path) -> None:
    argv = program(tmp_path, "import json\nprint(json.dumps({'decision': 'approve'}))\n")
    big = ReviewContext(**{**context().__dict__, "files": {"big.py": "#" * 2_000_000}})
    assert CommandReviewer(argv, timeout=30).review(big).decision == "approve"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_the_reply_schema_is_what_the_program_is_told(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    argv = program(tmp_path, f"""
        import json, sys
        open({str(out)!r}, "w").write(sys.stdin.read())
        print(json.dumps({{"decision": "approve"}}))
        """)
    CommandReviewer(argv, timeout=30, env={**os.environ}).review(context())
    seen = json.loads(out.read_text())
    assert seen["run_id"] == "stage-1" and seen["files"] == {"modules/train.py": "print('hi')\n"}
    assert set(seen["reply_schema"]["properties"]) == {"decision", "findings", "fix"}

"""The pre-run review in the domain and the review adapter over an in-memory log.

Reviewers here are small fakes of the ``Reviewer`` port (one approves, one crashes, one hangs,
one answers something that is not a verdict); the run service, the Run aggregate and the
``ReviewWorker`` are the real ones.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit_support import AT, FakeIndex, Project
from waiting import wait_until

from quipu.adapters.reviewers import ReviewWorker
from quipu.core.log import decode
from quipu.core.reviews.events import ReviewCompleted, ReviewStarted
from quipu.core.reviews.findings import MAX_FINDINGS, Finding
from quipu.core.reviews.review import (
    REVIEWER_FAILED,
    ReviewContext,
    ReviewVerdict,
    combine,
    failed,
)
from quipu.core.runs.events import RunQueued
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State

ACTOR = "agent-1"
SPEC = {"primary_metric": "accuracy", "direction": "maximize", "min_value": 0.9,
        "goal_value": 0.98, "dataset_split": "test", "tolerance": 0.01,
        "context": "test accuracy of the classifier"}
PIPELINE = """
stages:
  - name: train
    defaults: {lr: 0.1}
    outputs:
      model: {type: file, schema: null}
"""
TRAIN = """\
from quipu import sdk

config = sdk.get_config()
sdk.log_metric("accuracy", config["lr"])
sdk.save_output("model", b"weights")
"""


def finding(severity: str = "warning", signal: str = "something_odd") -> Finding:
    return Finding(signal=signal, severity=severity,
                   message="a thing a checker noticed", phase="pre_run", source="static")


def make_runs(project: Project, *, reviewed: bool = True, fail_open: bool = True) -> RunService:
    counter = iter(range(1, 10_000))
    service = RunService(project.service, FakeIndex(), new_id=lambda: f"{next(counter):04d}",
                         reviewed=reviewed, fail_open=fail_open)
    project.create("digits")
    project.mount("digits")
    project.write("w1", "pipeline.yaml", PIPELINE)
    project.write("w1", "modules/train.py", TRAIN)
    return service


def start(runs: RunService, **kwargs: Any) -> str:
    result = runs.run("w1", actor=ACTOR, reason="check the review holds the run back",
                      results_spec=SPEC, **kwargs)
    return str(result["queued"][0]["stage_run_id"])


def run_events(project: Project, run_id: str) -> list[Any]:
    return [r.event for r in project.events() if getattr(r.event, "run_id", None) == run_id]


# --- combining verdicts ------------------------------------------------------------------------


class TestCombine:
    def test_the_strictest_reviewer_decides(self) -> None:
        out = combine([ReviewVerdict("static", "approve"),
                       ReviewVerdict("llm", "warn", (finding(),), fix="look at it")],
                      fail_open=True)
        assert out.decision == "warn" and out.reviewers == ["static", "llm"]
        assert out.fix == "look at it" and len(out.findings) == 1

    def test_a_failed_reviewer_warns_when_failing_open_and_blocks_when_failing_closed(self):
        verdicts = [ReviewVerdict("static", "approve"), failed("llm", "HTTP 500")]
        assert combine(verdicts, fail_open=True).decision == "warn"
        closed = combine(verdicts, fail_open=False)
        assert closed.decision == "block"
        assert closed.findings[0]["signal"] == REVIEWER_FAILED
        assert closed.findings[0]["severity"] == "error"
        assert closed.fix  # a blocked run always says what to do

    def test_findings_beyond_the_cap_are_counted_not_listed(self) -> None:
        many = tuple(finding() for _ in range(MAX_FINDINGS + 7))
        out = combine([ReviewVerdict("static", "warn", many)], fail_open=True)
        assert len(out.findings) == MAX_FINDINGS and out.omitted == 7

    @given(st.lists(st.tuples(st.sampled_from(["approve", "warn", "block"]),
                              st.lists(st.sampled_from(["info", "warning", "error"]),
                                       max_size=30),
                              st.booleans()), min_size=1, max_size=5),
           st.booleans())
    def test_decision_is_the_worst_and_no_finding_is_lost(self, spec: list[Any],
                                                          fail_open: bool) -> None:
        verdicts = []
        for decision, severities, broke in spec:
            if broke:
                verdicts.append(failed("llm", "down"))
            else:
                verdicts.append(ReviewVerdict("static", decision,
                                              tuple(finding(s) for s in severities)))
        out = combine(verdicts, fail_open=fail_open)
        rank = {"approve": 0, "warn": 1, "block": 2}
        said = [("block" if not fail_open else "warn") if v.reviewer_failed else v.decision
                for v in verdicts]
        assert out.decision == max(said, key=rank.__getitem__)
        assert len(out.findings) + out.omitted == sum(len(v.findings) for v in verdicts)
        severities = [rank_s(f["severity"]) for f in out.findings]
        assert severities == sorted(severities, reverse=True)


def rank_s(severity: str) -> int:
    return {"info": 0, "warning": 1, "error": 2}[severity]


# --- the run waits for its review --------------------------------------------------------------


class TestRunWaitsForReview:
    def test_with_a_reviewer_a_new_run_stays_requested(self, project: Project) -> None:
        runs = make_runs(project)
        run_id = start(runs)
        assert runs.load_run(run_id).current is State.REQUESTED
        assert not any(isinstance(e, RunQueued) for e in run_events(project, run_id))

    def test_skip_review_queues_at_once_and_says_so(self, project: Project) -> None:
        runs = make_runs(project)
        run_id = start(runs, skip_review=True)
        queued = [e for e in run_events(project, run_id) if isinstance(e, RunQueued)]
        assert runs.load_run(run_id).current is State.QUEUED
        assert [e.review for e in queued] == ["skipped"]

    def test_without_a_reviewer_runs_queue_at_once_as_before(self, project: Project) -> None:
        runs = make_runs(project, reviewed=False)
        run_id = start(runs)
        assert runs.load_run(run_id).current is State.QUEUED

    def test_exactly_one_reviewer_takes_a_run(self, project: Project) -> None:
        runs = make_runs(project)
        run_id = start(runs)
        assert runs.record_review_started(run_id, actor="reviewer:a", reviewers=["static"])
        assert not runs.record_review_started(run_id, actor="reviewer:b", reviewers=["static"])
        assert sum(isinstance(e, ReviewStarted) for e in run_events(project, run_id)) == 1

    def test_approve_and_warn_queue_the_run(self, project: Project) -> None:
        runs = make_runs(project)
        for decision in ("approve", "warn"):
            run_id = start(runs)
            runs.record_review_started(run_id, actor="reviewer:a", reviewers=["static"])
            assert runs.record_review(run_id, actor="reviewer:a", decision=decision,
                                      reviewers=["static"], findings=[])
            assert runs.load_run(run_id).current is State.QUEUED

    def test_block_ends_the_run_blocked_with_its_findings_and_fix(self, project: Project):
        runs = make_runs(project)
        run_id = start(runs)
        runs.record_review_started(run_id, actor="reviewer:a", reviewers=["static"])
        runs.record_review(run_id, actor="reviewer:a", decision="block", reviewers=["static"],
                           findings=[finding("error").as_dict()], fix="define x")
        run = runs.load_run(run_id)
        assert run.current is State.BLOCKED
        assert run.review is not None and run.review.fix == "define x"
        assert run.review.findings[0]["severity"] == "error"

    def test_a_late_decision_after_a_cancel_records_nothing(self, project: Project) -> None:
        runs = make_runs(project)
        run_id = start(runs)
        runs.record_review_started(run_id, actor="reviewer:a", reviewers=["static"])
        runs.cancel(run_id, "changed my mind about this run", actor=ACTOR)
        head = project.store.head()
        assert not runs.record_review(run_id, actor="reviewer:a", decision="approve",
                                      reviewers=["static"], findings=[])
        assert project.store.head() == head

    def test_an_unknown_decision_is_refused_and_writes_nothing(self, project: Project) -> None:
        runs = make_runs(project)
        run_id = start(runs)
        runs.record_review_started(run_id, actor="reviewer:a", reviewers=["static"])
        head = project.store.head()
        with pytest.raises(Exception) as err:
            runs.record_review(run_id, actor="reviewer:a", decision="maybe",
                               reviewers=["static"], findings=[])
        assert getattr(err.value, "code", None) == "invalid_review_decision"
        assert project.store.head() == head


class TestReviewDeadline:
    @pytest.mark.parametrize("taken", [False, True])
    def test_failing_open_a_review_nobody_finished_queues_the_run(self, project: Project,
                                                                  taken: bool) -> None:
        runs = make_runs(project, fail_open=True)
        run_id = start(runs)
        if taken:
            runs.record_review_started(run_id, actor="reviewer:a", reviewers=["llm"])
        runs.record_deadline(run_id, actor="supervisor:x")
        queued = [e for e in run_events(project, run_id) if isinstance(e, RunQueued)]
        assert runs.load_run(run_id).current is State.QUEUED
        assert [e.review for e in queued] == ["timed out"]

    @pytest.mark.parametrize("taken", [False, True])
    def test_failing_closed_a_review_nobody_finished_blocks_the_run(self, project: Project,
                                                                    taken: bool) -> None:
        runs = make_runs(project, fail_open=False)
        run_id = start(runs)
        if taken:
            runs.record_review_started(run_id, actor="reviewer:a", reviewers=["llm"])
        runs.record_deadline(run_id, actor="supervisor:x")
        run = runs.load_run(run_id)
        assert run.current is State.BLOCKED
        completed = [e for e in run_events(project, run_id) if isinstance(e, ReviewCompleted)]
        assert [e.decision for e in completed] == ["block"]
        assert completed[0].findings[0]["signal"] == REVIEWER_FAILED


# --- the review adapter ------------------------------------------------------------------------


class Approves:
    name = "static"

    def __init__(self) -> None:
        self.seen: list[ReviewContext] = []

    def review(self, context: ReviewContext) -> ReviewVerdict:
        self.seen.append(context)
        return ReviewVerdict(self.name, "approve")


class Crashes:
    name = "command"

    def review(self, context: ReviewContext) -> ReviewVerdict:
        raise RuntimeError("the reviewer fell over")


class Hangs:
    name = "llm"

    def __init__(self) -> None:
        self.release = threading.Event()

    def review(self, context: ReviewContext) -> ReviewVerdict:
        self.release.wait(60)
        return ReviewVerdict(self.name, "approve")


class Garbage:
    name = "command"

    def review(self, context: ReviewContext) -> Any:
        return "LGTM!"


def review_of(project: Project, run_id: str) -> ReviewCompleted | None:
    found = [e for e in run_events(project, run_id) if isinstance(e, ReviewCompleted)]
    return found[-1] if found else None


def worker_for(project: Project, runs: RunService, reviewers: list[Any], *,
               fail_open: bool = True, timeout: float = 30.0) -> ReviewWorker:
    return ReviewWorker(project.store, project.blobs, runs, reviewers, worker_id="test",
                        fail_open=fail_open, timeout=timeout)


class TestReviewWorker:
    def test_a_requested_run_is_reviewed_and_queued(self, project: Project) -> None:
        runs = make_runs(project)
        run_id = start(runs)
        static = Approves()
        worker = worker_for(project, runs, [static])
        assert worker.poll_once() == [run_id]
        wait_until(lambda: review_of(project, run_id), what="the review is recorded")
        assert runs.load_run(run_id).current is State.QUEUED
        context = static.seen[0]
        assert context.stage == "train" and "modules/train.py" in context.files
        assert context.results_spec["primary_metric"] == "accuracy"
        assert context.reason["description"].startswith("check the review")
        assert context.diff is None  # the stage never succeeded
        assert worker.poll_once() == []  # nothing twice

    def test_skipped_runs_are_not_reviewed(self, project: Project) -> None:
        runs = make_runs(project)
        start(runs, skip_review=True)
        assert worker_for(project, runs, [Approves()]).poll_once() == []

    @pytest.mark.parametrize("broken", [Crashes, Garbage])
    def test_a_broken_reviewer_is_a_finding_and_the_run_goes_on(self, project: Project,
                                                                broken: type) -> None:
        runs = make_runs(project)
        run_id = start(runs)
        worker_for(project, runs, [Approves(), broken()]).poll_once()
        wait_until(lambda: review_of(project, run_id), what="the review is recorded")
        review = review_of(project, run_id)
        assert review is not None and review.decision == "warn"
        assert review.findings[0]["signal"] == REVIEWER_FAILED
        assert runs.load_run(run_id).current is State.QUEUED

    def test_a_hanging_reviewer_is_abandoned_at_the_deadline(self, project: Project) -> None:
        runs = make_runs(project, fail_open=False)
        run_id = start(runs)
        hangs = Hangs()
        try:
            worker_for(project, runs, [Approves(), hangs], fail_open=False,
                       timeout=0.5).poll_once()
            wait_until(lambda: review_of(project, run_id), what="the review is recorded")
        finally:
            hangs.release.set()
        review = review_of(project, run_id)
        assert review is not None and review.decision == "block"
        assert "did not answer" in review.findings[0]["message"]
        assert runs.load_run(run_id).current is State.BLOCKED

    def test_the_diff_since_the_stage_last_succeeded_is_shown(self, project: Project) -> None:
        runs = make_runs(project)
        first = start(runs, skip_review=True)
        assert runs.record_claim(first, "w")
        runs.record_launch(first, worker="w", host="h", pid=1, run_dir="/r", inputs={})
        runs.record_exit(first, worker="w", state=State.SUCCEEDED, exit_code=0)
        runs.finalize(first, {"ml_outcome": "unknown", "notes": "only the diff matters here"},
                      actor=ACTOR)
        project.write("w1", "modules/train.py", TRAIN + "print('changed')\n")
        second = start(runs)
        static = Approves()
        worker_for(project, runs, [static]).poll_once()
        wait_until(lambda: review_of(project, second), what="the review is recorded")
        diff = static.seen[0].diff
        assert diff is not None and "+print('changed')" in diff
        assert "b/modules/train.py" in diff


def test_events_carry_the_run_id_field(project: Project) -> None:
    """Review events are on the run's stream (the supervisor keys on run_id)."""
    runs = make_runs(project)
    run_id = start(runs)
    runs.record_review_started(run_id, actor="reviewer:a", reviewers=["static"])
    last = decode(project.store.read(after=project.store.head() - 1)[0]).event
    assert isinstance(last, ReviewStarted) and last.run_id == run_id


TWO_STAGES = """
stages:
  - name: prep
    outputs:
      features: {type: npy, schema: null}
  - name: train
    inputs:
      features: {type: npy, from_stage: prep, schema: null}
    outputs:
      model: {type: file, schema: null}
"""


@pytest.mark.parametrize("downstream", [State.REQUESTED, State.REVIEWING])
def test_a_blocked_run_cancels_the_stages_that_wait_on_it(project: Project,
                                                          downstream: State) -> None:
    runs = make_runs(project)
    project.write("w1", "pipeline.yaml", TWO_STAGES)
    project.write("w1", "modules/prep.py", "print('prep')\n")
    result = runs.run("w1", actor=ACTOR, reason="check a block cancels downstream",
                      results_spec=SPEC)
    prep, train = (q["stage_run_id"] for q in result["queued"])
    runs.record_review_started(prep, actor="reviewer:a", reviewers=["static"])
    if downstream is State.REVIEWING:
        runs.record_review_started(train, actor="reviewer:a", reviewers=["static"])
    runs.record_review(prep, actor="reviewer:a", decision="block", reviewers=["static"],
                       findings=[finding("error").as_dict()], fix="fix prep")
    assert runs.load_run(prep).current is State.BLOCKED
    assert runs.load_run(train).current is State.CANCELED
    # the reviewer's late answer for the canceled stage changes nothing
    assert not runs.record_review(train, actor="reviewer:a", decision="approve",
                                  reviewers=["static"], findings=[])


def test_the_review_inspect_run_shows_stays_small_at_its_worst() -> None:
    """The most a ReviewCompleted can hold (50 findings of the longest text) shows in under
    10,000 characters of JSON: five findings and a count."""
    import json

    from quipu.app.run_reads import review_summary
    from quipu.core.reviews.findings import MAX_TEXT

    long = "x" * (MAX_TEXT * 2)
    biggest = Finding(signal="llm_finding", severity="error", message=long, phase="pre_run",
                      source="llm", stage="s" * 64, file="f" * 500, line=10**6, fix=long)
    review = ReviewCompleted(actor="reviewer:a", reason="r", at=AT, run_id="stage-1",
                             decision="block", reviewers=["static", "llm"],
                             findings=[biggest.as_dict()] * MAX_FINDINGS, fix=long[:MAX_TEXT],
                             omitted=12)
    shown = review_summary(review)
    assert len(shown["findings"]) == 5 and shown["omitted"] == 12 + MAX_FINDINGS - 5
    assert len(json.dumps(shown)) < 10_000


class TestSavedPosition:
    def test_a_restarted_worker_reads_only_what_came_after(self, project: Project,
                                                          tmp_path: Any) -> None:
        runs = make_runs(project)
        saved = tmp_path / "reviewer.json"
        first = start(runs)
        one = ReviewWorker(project.store, project.blobs, runs, [Approves()], worker_id="a",
                           position_file=saved)
        one.poll_once()
        wait_until(lambda: review_of(project, first), what="the first review is recorded")
        one.poll_once()  # folds its own ReviewCompleted, saves
        one.stop()
        second = start(runs)
        two = ReviewWorker(project.store, project.blobs, runs, [Approves()], worker_id="b",
                           position_file=saved)
        assert two.poll_once() == [second]
        assert two.read_events <= 3  # RunRequested of the second run (+ its own events)
        wait_until(lambda: review_of(project, second), what="the second review is recorded")
        two.stop()

    def test_a_position_file_of_another_log_is_ignored(self, project: Project,
                                                      tmp_path: Any) -> None:
        runs = make_runs(project)
        saved = tmp_path / "reviewer.json"
        saved.write_text('{"format": 1, "position": 3, "hash": "not this log", '
                         '"pending": [], "manifests": {}, "last_ok": []}')
        run_id = start(runs)
        worker = ReviewWorker(project.store, project.blobs, runs, [Approves()],
                              worker_id="a", position_file=saved)
        assert worker.poll_once() == [run_id]  # read from 0: the request was found
        wait_until(lambda: review_of(project, run_id), what="the review is recorded")
        worker.stop()

"""A review whose reviewer is gone is done again, once, by a worker that can tell it is gone.

Review workers in one process stand in for engines here: a worker "dies" when its leases are
let go without stopping it, which is what the kernel does to a killed process's locks (the real
``kill -9`` of a ``quipu serve`` is in tests/integration/test_review_restart.py). The run
service, the Run aggregate, the lease files and their ``flock`` locks are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_pre_run_review import Approves, Hangs, make_runs, review_of, run_events, start
from unit_support import Project
from waiting import wait_until

from quipu.adapters.reviewers import ReviewWorker
from quipu.adapters.reviewers._leases import Leases
from quipu.core.reviews.events import ReviewCompleted
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State


def worker(project: Project, runs: RunService, name: str, reviewers: list[Any],
           leases: Path | None, **kwargs: Any) -> ReviewWorker:
    return ReviewWorker(project.store, project.blobs, runs, reviewers, worker_id=name,
                        leases=leases, timeout=60, **kwargs)


def die(gone: ReviewWorker) -> None:
    """What a kill -9 does to a worker as far as others can tell: its locks are dropped."""
    assert gone._leases is not None
    gone._leases.release_all()


class TestResume:
    def test_a_run_whose_reviewer_is_gone_is_reviewed_again_by_another(
            self, project: Project, tmp_path: Path) -> None:
        runs = make_runs(project)
        leases = tmp_path / "reviewers"
        run_id = start(runs)
        hangs = Hangs()
        first = worker(project, runs, "host:1", [hangs], leases)
        assert first.poll_once() == [run_id]
        second = worker(project, runs, "host:2", [Approves()], leases)
        assert second.poll_once() == []  # the first one lives: its review is its own
        assert runs.load_run(run_id).current is State.REVIEWING
        die(first)
        assert second.poll_once() == [run_id]
        wait_until(lambda: review_of(project, run_id), what="the review is done again")
        review = review_of(project, run_id)
        assert review is not None and review.actor == "reviewer:host:2"
        assert review.resumed_from == "reviewer:host:1" and review.decision == "approve"
        assert "reviewer:host:1 was gone" in review.reason
        assert runs.load_run(run_id).current is State.QUEUED
        second.poll_once()  # folds the decision: nothing is left to resume
        assert second.poll_once() == []
        hangs.release.set()  # the "dead" worker's thread answers late: it changes nothing
        wait_until(lambda: first.reviewed == 1, what="the first worker's late answer")
        assert runs.load_run(run_id).current is State.QUEUED
        assert [e.actor for e in run_events(project, run_id)
                if isinstance(e, ReviewCompleted)] == ["reviewer:host:2"]
        first.stop()
        second.stop()

    def test_only_one_worker_takes_over_a_gone_reviewers_runs(
            self, project: Project, tmp_path: Path) -> None:
        runs = make_runs(project)
        leases = tmp_path / "reviewers"
        run_id = start(runs)
        first = worker(project, runs, "host:1", [Hangs()], leases)
        first.poll_once()
        die(first)
        hangs = Hangs()
        second = worker(project, runs, "host:2", [hangs], leases)
        third = worker(project, runs, "host:3", [Approves()], leases)
        assert second.poll_once() == [run_id]
        assert third.poll_once() == []  # the second one holds the first one's lease now
        die(second)  # ... until it is gone too: then the third one does it
        assert third.poll_once() == [run_id]
        wait_until(lambda: review_of(project, run_id), what="the third worker decides")
        review = review_of(project, run_id)
        assert review is not None and review.actor == "reviewer:host:3"
        assert review.resumed_from == "reviewer:host:1"  # who started it, whoever died next
        hangs.release.set()
        for w in (first, second, third):
            w.stop()

    def test_a_reviewer_with_no_lease_here_is_left_to_the_review_deadline(
            self, project: Project, tmp_path: Path) -> None:
        """Another host (a shared PostgreSQL log), or an engine from before leases."""
        runs = make_runs(project)
        run_id = start(runs)
        hangs = Hangs()
        elsewhere = worker(project, runs, "other-host:1", [hangs], None)
        elsewhere.poll_once()
        here = worker(project, runs, "host:2", [Approves()], tmp_path / "reviewers")
        assert here.poll_once() == [] and here.poll_once() == []
        assert runs.load_run(run_id).current is State.REVIEWING
        hangs.release.set()
        wait_until(lambda: review_of(project, run_id), what="the first reviewer decides")
        elsewhere.stop()
        here.stop()

    def test_a_restarted_worker_of_the_same_process_resumes_what_its_predecessor_left(
            self, project: Project, tmp_path: Path) -> None:
        runs = make_runs(project)
        leases = tmp_path / "reviewers"
        saved = tmp_path / "reviewer.json"
        run_id = start(runs)
        hangs = Hangs()
        before = worker(project, runs, "host:1", [hangs], leases, position_file=saved)
        before.poll_once()
        before.poll_once()  # folds its own ReviewStarted and saves it
        assert json.loads(saved.read_text())["reviewing"] == {run_id: "reviewer:host:1"}
        before.stop()  # the review is abandoned (its thread still hangs)
        after = worker(project, runs, "host:1", [Approves()], leases, position_file=saved)
        assert after.poll_once() == [run_id]
        assert after.read_events == 0  # it knew from its saved fold
        wait_until(lambda: review_of(project, run_id), what="the review is done again")
        review = review_of(project, run_id)
        assert review is not None and review.resumed_from == "reviewer:host:1"
        hangs.release.set()
        after.stop()

    def test_without_leases_nothing_is_resumed(self, project: Project) -> None:
        runs = make_runs(project)
        run_id = start(runs)
        hangs = Hangs()
        first = worker(project, runs, "host:1", [hangs], None)
        first.poll_once()
        first.stop()
        again = worker(project, runs, "host:1", [Approves()], None)
        assert again.poll_once() == []
        assert runs.load_run(run_id).current is State.REVIEWING
        hangs.release.set()
        again.stop()


class TestLeases:
    def test_a_held_lease_cannot_be_taken_over_and_a_dropped_one_can(
            self, tmp_path: Path) -> None:
        one, two = Leases(tmp_path, "reviewer:h:1"), Leases(tmp_path, "reviewer:h:2")
        assert one.hold_own() and two.hold_own()
        assert not two.take_over("reviewer:h:1")
        assert not Leases(tmp_path, "reviewer:h:1").hold_own()  # one live holder per actor
        one.release_all()
        assert two.take_over("reviewer:h:1") and two.taken_over() == ["reviewer:h:1"]
        assert not Leases(tmp_path, "reviewer:h:3").take_over("reviewer:h:1")
        assert not two.take_over("reviewer:nowhere:9")  # no file: nothing here can tell

    def test_a_sweep_deletes_the_files_of_gone_workers_with_nothing_open(
            self, tmp_path: Path) -> None:
        live, gone, open_review = (Leases(tmp_path, f"reviewer:h:{n}") for n in (1, 2, 3))
        for lease in (live, gone, open_review):
            assert lease.hold_own()
        gone.release_all()
        open_review.release_all()
        sweeper = Leases(tmp_path, "reviewer:h:4")
        assert sweeper.hold_own()
        sweeper.sweep(keep={"reviewer:h:3"})
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            live.path(a).name for a in ("reviewer:h:1", "reviewer:h:3", "reviewer:h:4"))
        assert live.hold_own()  # untouched
        gone_again = Leases(tmp_path, "reviewer:h:2")
        assert gone_again.hold_own()  # a worker that comes back makes a new file
        for lease in (live, sweeper, gone_again):
            lease.release_all()

    def test_a_lease_directory_that_cannot_be_made_is_a_warning_once_not_an_error(
            self, tmp_path: Path, caplog: Any) -> None:
        (tmp_path / "a-file").write_text("in the way")
        lease = Leases(tmp_path / "a-file" / "reviewers", "reviewer:h:1")
        assert not lease.hold_own() and not lease.hold_own()
        assert len([r for r in caplog.records if "could not be held" in r.message]) == 1

"""The patterns view folded after every command == folded in pages of 2 == rebuilt, for random
sequences of pattern commands (refusals included) and findings on run streams; and what it
answers (STATE.md's section, the dashboard's alert) is the same too."""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_runs_projection import dump
from unit_support import make_project

from quipu.core.errors import QuipuError
from quipu.core.log import stream_id
from quipu.core.patterns.handlers import PatternService
from quipu.core.ports import NewEvent
from quipu.core.reviews.events import FindingsRecorded, ReviewCompleted
from quipu.projections import Views
from quipu.projections.patterns_view import alerts, state_md_patterns

ACTOR = "agent-1"
REASON = "decide about this failure pattern"
AT = datetime(2024, 5, 1, tzinfo=UTC)
MESSAGES = ("feature 3 has zero variance", "loss went nan at step 7", "bad shape (2, 3)",
            "torch.load without map_location")
DETECTIONS = (None, {"kind": "metric", "metric": "loss", "op": "is nan"},
              {"kind": "code", "regex": "(("}, {"kind": "statistic", "statistic": "std",
                                                 "op": "==", "threshold": 0})

steps = st.lists(st.tuples(st.sampled_from(("fail", "findings", "approve", "reject", "seen")),
                           st.integers(0, 5), st.integers(0, 3), st.integers(0, 3)),
                 min_size=1, max_size=30)


def finding(message: str, severity: str = "error") -> dict[str, Any]:
    return {"signal": "sig", "severity": severity, "message": message, "phase": "post_run",
            "source": "static", "stage": "train"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_incremental_equals_small_pages_equals_rebuilt(plan: list[tuple[Any, ...]]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="quipu-patterns-property-"))
    project = make_project(tmp)
    patterns = PatternService(project.service.uow)
    versions: dict[str, int] = {}
    try:
        with Views(tmp / "live.db", project.store) as live:
            for action, run, msg, variant in plan:
                run_id = f"r-{run}"
                try:
                    if action in ("fail", "seen"):
                        patterns.record_occurrences(
                            run_id, "train", ("failed", "stopped", "blocked", "crashed")[variant],
                            [finding(MESSAGES[msg])], project.store.head() + 1, actor="follower")
                    elif action == "findings":  # what a checker records on the run's stream
                        version = versions.get(run_id, 0) + 1
                        versions[run_id] = version
                        made = (FindingsRecorded(actor="c", reason="r", at=AT, run_id=run_id,
                                                 phase="statistics", source="statistics",
                                                 findings=[finding(MESSAGES[msg])] * variant,
                                                 omitted=variant % 2)
                                if variant % 2 else
                                ReviewCompleted(actor="c", reason="r", at=AT, run_id=run_id,
                                                decision="block", reviewers=["static"],
                                                findings=[finding(MESSAGES[msg], "warning")]))
                        project.store.append([NewEvent(stream_id("run", run_id), version, made)])
                    else:
                        ids = [r["pattern_id"] for r in live.patterns(limit=50)[0]]
                        if not ids:
                            continue
                        pid = ids[msg % len(ids)]
                        if action == "approve":
                            patterns.approve(pid, REASON, actor=ACTOR,
                                             detection=DETECTIONS[variant],
                                             root_cause="a cause" if variant else None)
                        else:
                            patterns.reject(pid, REASON, actor=ACTOR)
                    event(f"{action}: done")
                except QuipuError as exc:
                    event(f"{action}: refused ({exc.code})")
                live.catch_up()
            incremental = dump(live)
            answers = (state_md_patterns(live.conn, limit=5), alerts(live.conn, 0),
                       alerts(live.conn, 3))
            with Views(tmp / "small.db", project.store, page_size=2) as small:
                small.catch_up()
                assert dump(small) == incremental
                assert (state_md_patterns(small.conn, limit=5), alerts(small.conn, 0),
                        alerts(small.conn, 3)) == answers
            live.rebuild()
            assert dump(live) == incremental
    finally:
        project.store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_dashboard_alert_is_small_at_its_largest_and_the_overview_keeps_its_budget(
        tmp_path: Path) -> None:
    from quipu.projections.dashboard_view import BUDGET

    project = make_project(tmp_path)
    patterns = PatternService(project.service.uow)
    stage = "s" * 64
    try:
        for i in range(40):
            run_id = f"stage-{i:012d}"
            long = {"signal": "x" * 60, "severity": "error", "phase": "post_run",
                    "source": "y" * 60, "stage": stage,
                    "message": f"{chr(97 + i % 26)}{chr(97 + i // 26)} {'w' * 400}"}
            project.store.append([NewEvent(stream_id("run", run_id), 1, FindingsRecorded(
                actor="c", reason="r", at=AT, run_id=run_id, phase="post_run", source="z" * 60,
                findings=[long] * 50, omitted=10_000))])
            patterns.record_occurrences(run_id, stage, "failed", [long], i + 1,
                                        actor="follower")
        with Views(tmp_path / "v.db", project.store) as views:
            views.catch_up()
            alert = alerts(views.conn, 0)
            assert alert is not None and alert["candidate_patterns"]["count"] == 40
            assert alert["findings"]["count"] == 40 * 10_050
            assert len(json.dumps(alert)) <= 1400, len(json.dumps(alert))
            board = views.dashboard("agent")
            assert board["svs_alerts"] == alert and len(json.dumps(board)) <= BUDGET
    finally:
        project.store.close()

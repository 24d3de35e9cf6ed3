"""The monitor's rules and the post-run review (pure parts)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quipu.core.reviews.findings import Finding
from quipu.core.reviews.monitoring import MonitorRules, RunWatch
from quipu.core.reviews.post_run import MAX_EVIDENCE, review_run
from quipu.core.runs.lifecycle import State

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = MonitorRules()
SPEC = {"primary_metric": "acc", "direction": "maximize", "min_value": 0.6, "goal_value": 0.8,
        "dataset_split": "val", "tolerance": 0.01, "context": "toy accuracy for the tests",
        "failure_threshold": 0.1}


def summary(last: float | None, low: float | None, high: float | None, count: int,
            **more: Any) -> dict[str, Any]:
    return {"last": last, "min": low, "max": high, "count": count, "trend": "flat", **more}


def watch() -> RunWatch:
    return RunWatch(run_id="r1", stage="train", progress_at=T0)


def signals(found: list[Finding]) -> list[str]:
    return [f.signal for f in found]


class TestRules:
    def test_a_non_finite_metric_is_an_error_naming_where_it_went(self) -> None:
        found = watch().metrics(RULES, points=4, at=T0, summaries={"loss": summary(
            None, 0.2, 1.0, 4, non_finite={"count": 1, "kind": "inf", "first_step": 3,
                                           "first_index": 3, "last_finite": 0.2})})
        [f] = found
        assert (f.signal, f.severity, f.phase, f.source) == ("nan_metric", "error",
                                                             "during_run", "monitor")
        assert "loss went inf at step 3" in f.message and f.evidence["metric"] == "loss"

    def test_a_loss_above_k_times_its_minimum_is_a_spike_and_a_small_rise_is_not(
            self) -> None:
        w = watch()
        assert not w.metrics(RULES, points=3, at=T0,
                             summaries={"train_loss": summary(0.9, 0.2, 2.0, 3)})
        assert signals(w.metrics(RULES, points=4, at=T0, summaries={
            "train_loss": summary(1.1, 0.2, 2.0, 4)})) == ["loss_spike"]
        # not a loss by name: no spike rule
        assert not watch().metrics(RULES, points=4, at=T0,
                                   summaries={"acc": summary(1.1, 0.2, 2.0, 4)})

    def test_a_grad_norm_far_above_its_typical_value_is_a_warning(self) -> None:
        w = watch()
        for n, value in enumerate([1.0, 1.2, 0.9], start=1):
            assert not w.metrics(RULES, points=n, at=T0, summaries={
                "grad_norm": summary(value, 0.9, 1.2, n)})
        [f] = w.metrics(RULES, points=4, at=T0, summaries={"grad_norm": summary(
            50.0, 0.9, 50.0, 4)})
        assert (f.signal, f.severity) == ("grad_norm_explosion", "warning")

    def test_throughput_under_a_tenth_of_its_peak_is_a_collapse(self) -> None:
        [f] = watch().metrics(RULES, points=5, at=T0, summaries={
            "samples_per_sec": summary(20.0, 20.0, 1000.0, 5)})
        assert (f.signal, f.severity) == ("throughput_collapse", "warning")

    def test_no_progress_fires_once_per_stall_and_re_arms_when_metrics_move(self) -> None:
        rules = MonitorRules(stall_seconds=60)
        w = watch()
        assert not w.tick(rules, T0 + timedelta(seconds=59))
        assert signals(w.tick(rules, T0 + timedelta(seconds=61))) == ["no_metric_progress"]
        assert not w.tick(rules, T0 + timedelta(seconds=600))
        w.metrics(rules, points=1, at=T0 + timedelta(seconds=601), summaries={})
        assert not w.tick(rules, T0 + timedelta(seconds=650))
        assert signals(w.tick(rules, T0 + timedelta(seconds=700))) == ["no_metric_progress"]

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.dictionaries(
        st.sampled_from(["loss", "val_loss", "grad_norm", "throughput", "acc"]),
        st.fixed_dictionaries({
            "last": st.none() | st.floats(allow_nan=False, allow_infinity=False),
            "min": st.none() | st.floats(allow_nan=False, allow_infinity=False),
            "max": st.none() | st.floats(allow_nan=False, allow_infinity=False),
            "count": st.integers(0, 100)}), max_size=5), max_size=20))
    def test_each_signal_is_reported_at_most_once_per_metric(
            self, pages: list[dict[str, dict[str, Any]]]) -> None:
        w = watch()
        seen: list[tuple[str, str]] = []
        for n, summaries in enumerate(pages):
            for f in w.metrics(RULES, points=n, at=T0, summaries=summaries):
                seen.append((f.signal, f.evidence.get("metric", "")))
        assert len(seen) == len(set(seen))


class TestPostRunReview:
    def test_a_value_at_the_goal_is_a_success_with_its_evidence(self) -> None:
        outcome, evidence = review_run(
            state=State.SUCCEEDED, spec=SPEC, hypothesis="wider layers help",
            summaries={"acc": summary(0.85, 0.5, 0.85, 5)}, outputs={})
        assert outcome == "success"
        assert evidence[0] == "hypothesis: wider layers help"
        assert "acc = 0.85 (maximize) meets the goal" in evidence[1]

    def test_bars_and_the_failure_threshold_decide_partial_and_miss(self) -> None:
        def outcome(value: float) -> str:
            return review_run(state=State.SUCCEEDED, spec=SPEC, hypothesis=None,
                              summaries={"acc": summary(value, 0.0, 1.0, 3)}, outputs={})[0]
        assert (outcome(0.7), outcome(0.3), outcome(0.05)) == ("partial", "miss", "miss")

    def test_a_dead_output_or_a_monitor_stop_keeps_a_success_partial(self) -> None:
        spec = {"acc": summary(0.9, 0.5, 0.9, 5)}
        dead, why = review_run(state=State.SUCCEEDED, spec=SPEC, hypothesis=None,
                               summaries=spec, outputs={"preds": {"stats": {"std": 0.0}}})
        assert dead == "partial" and "output preds is constant (std 0)" in why
        stopped, why = review_run(
            state=State.STOPPED, spec=SPEC, hypothesis=None, summaries=spec, outputs={},
            stopped_by={"requested_by": "monitor", "reason": "r",
                        "finding": {"message": "loss went nan at step 3"}})
        assert stopped == "partial"
        assert "stopped by the monitor: loss went nan at step 3" in why

    def test_runs_without_a_value_are_miss_or_unknown(self) -> None:
        failed, why = review_run(state=State.FAILED, spec=SPEC, hypothesis=None,
                                 summaries={}, outputs={}, error="ValueError: boom")
        assert failed == "miss" and "ValueError: boom" in why[0]
        never, why = review_run(state=State.SUCCEEDED, spec=SPEC, hypothesis=None,
                                summaries={"loss": summary(1.0, 1.0, 1.0, 1)}, outputs={})
        assert never == "unknown" and "acc was never logged" in why[0]
        nan, _ = review_run(state=State.SUCCEEDED, spec=SPEC, hypothesis=None,
                            summaries={"acc": summary(None, 0.5, 0.7, 3, non_finite={
                                "count": 1, "kind": "nan", "first_step": 2})}, outputs={})
        assert nan == "miss"

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from(list(State)), st.text(max_size=400),
           st.none() | st.floats(allow_nan=True, allow_infinity=True),
           st.dictionaries(st.text(max_size=300), st.fixed_dictionaries(
               {"stats": st.fixed_dictionaries({"std": st.floats(), "null_ratio": st.floats()})}),
               max_size=12))
    def test_the_suggestion_is_an_outcome_with_bounded_evidence(
            self, state: State, hypothesis: str, value: float | None,
            outputs: dict[str, Any]) -> None:
        last = value if value is None or math.isfinite(value) else None
        outcome, evidence = review_run(
            state=state, spec=SPEC, hypothesis=hypothesis or None,
            summaries={"acc": summary(last, 0.0, 1.0, 3)}, outputs=outputs)
        assert outcome in ("success", "partial", "miss", "unknown")
        assert len(evidence) <= MAX_EVIDENCE and all(len(line) <= 200 for line in evidence)

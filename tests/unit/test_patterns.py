"""Failure patterns in the domain: candidates from runs that went wrong, deduplication,
approval with a validated detection, and the pure matchers the reviewers and monitor call."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.patterns.candidates import normalise, occurrences, pattern_id, pattern_key
from quipu.core.patterns.detection import (
    COMPARATORS,
    ApprovedPattern,
    check_detection,
    match_code,
    match_metrics,
    match_statistics,
)
from quipu.core.patterns.handlers import PatternService

ACTOR = "agent-1"
REASON = "this pattern is real and worth checking for"


def finding(message: str = "feature x has zero variance", *, signal: str = "zero_variance",
            severity: str = "error", source: str = "statistics", **extra: Any) -> dict[str, Any]:
    return {"signal": signal, "severity": severity, "message": message, "phase": "statistics",
            "source": source, **extra}


# --- candidates ------------------------------------------------------------------------------


def test_messages_that_differ_only_in_numbers_ids_and_quotes_share_a_key() -> None:
    a = pattern_key("nan_metric", "monitor", "train", "loss went nan at step 17 in run r-ab12cd")
    b = pattern_key("nan_metric", "monitor", "train", "Loss went NaN at step 9031 in run r-zz99xx")
    assert a == b
    assert pattern_id(a) == pattern_id(b) and re.fullmatch(r"pat-[0-9a-f]{12}", pattern_id(a))
    assert pattern_key("nan_metric", "monitor", "eval", "loss went nan") != pattern_key(
        "nan_metric", "monitor", "train", "loss went nan")
    assert normalise("file 'a.npy' has 3 rows, sha 0123456789abcdef") == \
        "file <q> has <n> rows, sha <id>"


def test_a_run_gives_distinct_occurrences_most_severe_first_without_info_or_pattern_hits() -> None:
    found = occurrences(stage="train", findings=[
        finding("x is constant", severity="warning", signal="constant_column"),
        finding("feature 3 has zero variance"), finding("feature 4 has zero variance"),
        finding("just context", severity="info"),
        finding("matched", pattern_id="pat-000000000000")],
        error="ValueError: bad shape (3, 4)", problems=["output y is empty"])
    assert [o.signal for o in found] == ["zero_variance", "stage_error", "constant_column"]
    assert {o.stage for o in found} == {"train"}
    # Without an exception, the exit problems are the failure.
    assert [o.signal for o in occurrences(stage="train", findings=[],
                                          problems=["output y is empty"])] == ["exit_problem"]


# --- the service and the aggregate -----------------------------------------------------------


@pytest.fixture
def patterns(project: Any) -> PatternService:
    return PatternService(project.service.uow)


def record(patterns: PatternService, run: str, position: int, *findings: dict[str, Any],
           outcome: str = "failed") -> dict[str, Any]:
    return patterns.record_occurrences(run, "train", outcome, list(findings), position,
                                       actor="patterns:test")


def test_a_repeated_failure_bumps_the_count_instead_of_a_new_candidate(
        patterns: PatternService, project: Any) -> None:
    first = record(patterns, "r-1", 10, finding("feature 3 has zero variance"))
    again = record(patterns, "r-2", 20, finding("feature 7 has zero variance"))
    assert len(first["proposed"]) == 1 and again == {"proposed": [], "seen": first["proposed"]}
    assert project.types()[-2:] == ["PatternProposed", "PatternSeen"]


def test_a_redelivered_run_event_records_nothing_twice(patterns: PatternService,
                                                       project: Any) -> None:
    record(patterns, "r-1", 10, finding())
    record(patterns, "r-2", 20, finding())
    head = project.store.head()
    assert record(patterns, "r-2", 20, finding()) == {"proposed": [], "seen": []}
    assert record(patterns, "r-1", 10, finding()) == {"proposed": [], "seen": []}
    # The same run reporting the same failure later (a post-run finding) is one occurrence.
    assert record(patterns, "r-2", 30, finding()) == {"proposed": [], "seen": []}
    assert project.store.head() == head


def test_approval_records_the_actor_reason_and_validated_detection(
        patterns: PatternService, project: Any) -> None:
    pid = record(patterns, "r-1", 10, finding())["proposed"][0]
    out = patterns.approve(pid, REASON, actor=ACTOR, detection={
        "kind": "statistic", "statistic": "std", "op": "==", "threshold": 0},
        root_cause="a feature column is filled with a constant")
    assert out["machine_checkable"] and out["detection"]["threshold"] == 0.0
    approved = project.events()[-1].event
    assert (approved.actor, approved.reason, approved.root_cause) == (
        ACTOR, REASON, "a feature column is filled with a constant")


def test_an_invalid_rule_is_refused_at_approval_and_nothing_is_written(
        patterns: PatternService, project: Any) -> None:
    pid = record(patterns, "r-1", 10, finding())["proposed"][0]
    head = project.store.head()
    with pytest.raises(InvalidInput) as bad:
        patterns.approve(pid, REASON, actor=ACTOR,
                         detection={"kind": "code", "regex": "torch.load(("})
    assert bad.value.code == "invalid_detection"
    assert bad.value.details and bad.value.details[0]["path"] == "detection.regex"
    with pytest.raises(InvalidInput) as bad:
        patterns.approve(pid, REASON, actor=ACTOR, detection={
            "kind": "metric", "metric": "loss", "op": "=>", "threshold": "big"})
    paths = [d["path"] for d in bad.value.details or []]
    assert paths == ["detection.op"] and "did you mean '>='" in bad.value.hint
    with pytest.raises(InvalidInput) as bad:
        patterns.approve(pid, REASON, actor=ACTOR, detection={
            "kind": "statistic", "statistc": "std", "op": ">", "threshold": "big"})
    assert {d["path"] for d in bad.value.details or []} == {
        "detection.statistc", "detection.statistic", "detection.threshold"}
    assert "did you mean 'statistic'" in bad.value.hint
    assert project.store.head() == head


def test_a_rejected_pattern_cannot_be_approved_and_is_no_longer_counted(
        patterns: PatternService, project: Any) -> None:
    pid = record(patterns, "r-1", 10, finding())["proposed"][0]
    assert patterns.reject(pid, REASON, actor=ACTOR)["changed"] is True
    assert patterns.reject(pid, REASON, actor=ACTOR)["changed"] is False
    head = project.store.head()
    with pytest.raises(Conflict) as refused:
        patterns.approve(pid, REASON, actor=ACTOR)
    assert refused.value.code == "pattern_rejected"
    assert record(patterns, "r-2", 20, finding()) == {"proposed": [], "seen": []}
    assert project.store.head() == head


def test_unknown_and_malformed_pattern_ids_are_refused(patterns: PatternService) -> None:
    with pytest.raises(NotFound) as unknown:
        patterns.approve("pat-000000000000", REASON, actor=ACTOR)
    assert unknown.value.code == "unknown_pattern"
    with pytest.raises(InvalidInput) as bad:
        patterns.reject("zero-variance", REASON, actor=ACTOR)
    assert bad.value.code == "invalid_pattern_id"


# --- detections: the validator ---------------------------------------------------------------

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["kind", "regex", "files", "ignore_case", "statistic",
                                        "metric", "op", "threshold", "output", "of", "x"]),
                       st.sampled_from(["code", "statistic", "metric", "std", "loss", ">", "==",
                                        "is nan", "last", "a+", "(", "*.py", "", "x"])
                       | _JSON, max_size=6))
def test_the_validator_either_refuses_with_field_paths_or_returns_a_usable_rule(
        raw: dict[str, Any]) -> None:
    try:
        rule = check_detection(raw)
    except InvalidInput as exc:
        assert exc.code == "invalid_detection" and exc.details
        assert all(d["path"].startswith("detection") for d in exc.details)
        return
    assert check_detection(rule) == rule  # normalised is a fixed point
    p = ApprovedPattern("pat-000000000001", None, "error", "s", "symptom", detection=rule)
    # A valid rule can always be run by the matchers without raising.
    match_code([p], "train", {"a.py": "x = 1\n"})
    match_statistics([p], "train", "x", {"std": 0.0, "mean": math.nan})
    match_metrics([p], "train", {"loss": {"last": 1.0, "non_finite": {"kind": "nan"}}})
    if rule["kind"] != "code":
        assert rule["op"] in COMPARATORS


# --- the matchers ----------------------------------------------------------------------------


def approved(detection: dict[str, Any], stage: str | None = "train") -> ApprovedPattern:
    return ApprovedPattern("pat-00000000000a", stage, "error", "zero_variance",
                           "the loss goes nan", prevention="clip gradients",
                           detection=check_detection(detection))


def test_match_code_flags_the_file_and_line_of_the_first_match() -> None:
    p = approved({"kind": "code", "regex": r"torch\.load\(", "files": "*.py"})
    files = {"modules/train.py": "import torch\n\nm = torch.load(path)\n",
             "modules/notes.txt": "torch.load(x)", "modules/ok.py": "pass\n"}
    [hit] = match_code([p], "train", files)
    assert (hit.file, hit.line, hit.pattern_id, hit.fix, hit.phase) == (
        "modules/train.py", 3, "pat-00000000000a", "clip gradients", "pre_run")
    assert match_code([p], "evaluate", files) == []  # another stage's pattern


def test_match_statistics_and_metrics_compare_with_the_threshold() -> None:
    std = approved({"kind": "statistic", "statistic": "std", "op": "==", "threshold": 0})
    nulls = approved({"kind": "statistic", "statistic": "null_ratio", "op": ">",
                      "threshold": 0.2, "output": "features"})
    assert len(match_statistics([std, nulls], "train", "features",
                                {"std": 0.0, "null_ratio": 0.5})) == 2
    assert match_statistics([nulls], "train", "labels", {"null_ratio": 0.5}) == []
    assert match_statistics([std], "train", "features", {"std": 0.3}) == []
    nan = approved({"kind": "metric", "metric": "loss", "op": "is nan"})
    big = approved({"kind": "metric", "metric": "grad_norm", "op": ">", "threshold": 1e3,
                    "of": "max"})
    hits = match_metrics([nan, big], "train", {
        "loss": {"last": 0.5, "non_finite": {"kind": "nan", "count": 1}},
        "grad_norm": {"last": 2.0, "max": 5e3}})
    assert [h.evidence["name"] for h in hits] == ["loss", "grad_norm"]
    assert match_metrics([nan, big], "train", {"loss": 0.1, "grad_norm": {"max": 10}}) == []

"""results_spec and finalize results: validation, auto results, comparison and the outcome hint."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from quipu.core.errors import InvalidInput
from quipu.core.runs.results import (
    RESULTS_EXAMPLE,
    SPEC_EXAMPLE,
    FinalResults,
    ResultsSpec,
    auto_results,
    compare,
    non_finite_reason,
    parse_final_results,
    parse_results_spec,
    results_spec_problems,
    suggest_outcome,
)

SPEC = {
    "primary_metric": "val_accuracy", "direction": "maximize", "min_value": 0.5,
    "goal_value": 0.75, "dataset_split": "val", "tolerance": 0.25,
    "context": "toy classifier; chance is 0.1 and the baseline reaches 0.45",
}
LOSS_SPEC = {**SPEC, "primary_metric": "val/loss", "direction": "minimize", "min_value": 0.5,
             "goal_value": 0.25}
RESULTS = {
    "primary_metric": "val_accuracy", "direction": "maximize", "value": 0.625,
    "dataset_split": "val", "ml_outcome": "partial",
    "notes": "better than the baseline but still short of the goal",
}


def spec_error(data) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        parse_results_spec(data)
    assert err.value.code == "invalid_results_spec"
    return err.value


def results_error(data, *, spec=SPEC, infra_outcome=None) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        parse_final_results(data, spec=parse_results_spec(spec), infra_outcome=infra_outcome)
    assert err.value.code == "invalid_results"
    return err.value


def example_in(hint: str) -> dict:
    return json.loads(hint[hint.index("{"):])


# --- results_spec ------------------------------------------------------------------------------


def test_a_complete_spec_is_accepted_and_optional_fields_default_to_empty():
    spec = parse_results_spec(SPEC)

    assert spec.primary_metric == "val_accuracy" and spec.tolerance == 0.25
    assert spec.secondary_metrics == [] and spec.known_caveats == []
    assert spec.baseline_run is None and spec.failure_threshold is None


def test_a_spec_with_every_optional_field_is_accepted():
    spec = parse_results_spec({**SPEC, "secondary_metrics": ["val_loss", "train/acc:top5"],
                               "baseline_run": "run-12", "failure_threshold": 0.1,
                               "known_caveats": ["val set is small"]})
    assert spec.secondary_metrics == ["val_loss", "train/acc:top5"]


@pytest.mark.parametrize("field", ["primary_metric", "direction", "min_value", "goal_value",
                                   "dataset_split", "tolerance", "context"])
def test_each_required_spec_field_is_required(field):
    data = {k: v for k, v in SPEC.items() if k != field}
    assert f"- {field}: is required" in spec_error(data).message


@pytest.mark.parametrize("name", ["", "1st_metric", "_loss", "val loss", "acc\n", "naïve",
                                  "a" * 257, "loss!"])
def test_metric_names_must_start_with_a_letter_and_use_only_safe_characters(name):
    assert "primary_metric" in spec_error({**SPEC, "primary_metric": name}).message


@pytest.mark.parametrize("name", ["a", "val_accuracy", "val/loss", "eval:f1", "top-5.acc",
                                  "a" * 256])
def test_metric_names_with_letters_digits_and_separators_are_accepted(name):
    assert parse_results_spec({**SPEC, "primary_metric": name}).primary_metric == name


def test_direction_must_be_maximize_or_minimize():
    assert "direction" in spec_error({**SPEC, "direction": "higher"}).message


def test_dataset_split_must_be_train_val_test_or_other():
    assert "dataset_split" in spec_error({**SPEC, "dataset_split": "validation"}).message


def test_tolerance_may_be_zero_but_not_negative():
    assert parse_results_spec({**SPEC, "tolerance": 0}).tolerance == 0
    assert "tolerance" in spec_error({**SPEC, "tolerance": -0.01}).message


def test_context_needs_fifteen_characters_not_counting_surrounding_spaces():
    assert "context" in spec_error({**SPEC, "context": "   too short    "}).message
    assert parse_results_spec({**SPEC, "context": "  fifteen chars!!  "}).context == \
        "fifteen chars!!"


@pytest.mark.parametrize("value", ["0.5", True, None, float("nan"), float("inf"), [0.5]])
def test_numbers_must_be_finite_numbers_not_strings_booleans_or_nan(value):
    assert "min_value" in spec_error({**SPEC, "min_value": value}).message


def test_a_goal_below_the_minimum_is_refused_when_maximizing():
    err = spec_error({**SPEC, "min_value": 0.8, "goal_value": 0.7})
    assert "goal_value: 0.7 is below min_value 0.8" in err.message


def test_a_goal_above_the_minimum_is_refused_when_minimizing():
    err = spec_error({**LOSS_SPEC, "min_value": 0.5, "goal_value": 0.6})
    assert "goal_value: 0.6 is above min_value 0.5" in err.message


def test_a_goal_equal_to_the_minimum_is_accepted():
    assert parse_results_spec({**SPEC, "goal_value": 0.5}).goal_value == 0.5


def test_a_failure_threshold_must_be_no_better_than_the_minimum():
    assert parse_results_spec({**SPEC, "failure_threshold": 0.1}).failure_threshold == 0.1
    assert "failure_threshold" in spec_error({**SPEC, "failure_threshold": 0.6}).message
    assert "failure_threshold" in spec_error({**LOSS_SPEC, "failure_threshold": 0.4}).message


def test_secondary_metrics_must_be_valid_names_listed_once_and_not_the_primary():
    err = spec_error({**SPEC, "secondary_metrics": ["ok", "ok", "bad name"]})
    assert "secondary_metrics[2]" in err.message
    err = spec_error({**SPEC, "secondary_metrics": ["ok", "ok"]})
    assert "more than once: ok" in err.message
    err = spec_error({**SPEC, "secondary_metrics": ["val_accuracy"]})
    assert "lists the primary metric" in err.message


def test_an_unknown_key_is_refused_with_a_did_you_mean():
    err = spec_error({**SPEC, "goal": 0.9, "tolerence": 0.1})
    assert "tolerence: unknown key (did you mean 'tolerance'?)" in err.message
    assert "goal: unknown key" in err.message


def test_a_spec_that_is_not_an_object_is_refused():
    assert "must be an object" in spec_error(["val_accuracy"]).message


def test_every_spec_problem_is_reported_at_once():
    err = spec_error({"primary_metric": "9lives", "direction": "up", "min_value": 0.5,
                      "goal_value": 0.25, "dataset_split": "dev", "tolerance": -1,
                      "context": "short", "colour": "red"})
    fields = re.findall(r"^- (\w+)", err.message, re.M)
    assert set(fields) == {"primary_metric", "direction", "dataset_split", "tolerance",
                           "context", "colour"}
    assert err.message.startswith("invalid results_spec (6 problems)")


def test_a_cross_field_problem_is_reported_together_with_field_problems():
    err = spec_error({**SPEC, "goal_value": 0.25, "dataset_split": "dev"})
    assert "goal_value: 0.25 is below" in err.message and "dataset_split" in err.message


def test_the_refusal_hint_shows_a_valid_spec():
    err = spec_error({})
    assert parse_results_spec(example_in(err.hint)) == parse_results_spec(SPEC_EXAMPLE)


def test_a_spec_is_frozen():
    spec = parse_results_spec(SPEC)
    with pytest.raises(ValueError):
        spec.tolerance = 1.0  # type: ignore[misc]


# --- properties of spec validation -------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
gap = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
metric_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.\-/:]{0,20}", fullmatch=True)
texts = st.text(min_size=15, max_size=60).filter(lambda s: len(s.strip()) >= 15)


@st.composite
def valid_specs(draw) -> dict:
    direction = draw(st.sampled_from(["maximize", "minimize"]))
    sign = 1 if direction == "maximize" else -1
    low = draw(finite)
    primary = draw(metric_names)
    spec = {
        "primary_metric": primary, "direction": direction, "min_value": low,
        "goal_value": low + sign * draw(gap), "dataset_split": draw(
            st.sampled_from(["train", "val", "test", "other"])),
        "tolerance": draw(gap), "context": draw(texts),
    }
    if draw(st.booleans()):
        spec["secondary_metrics"] = draw(st.lists(metric_names.filter(lambda n: n != primary),
                                                  unique=True, max_size=3))
    if draw(st.booleans()):
        spec["failure_threshold"] = low - sign * draw(gap)
    if draw(st.booleans()):
        spec["baseline_run"] = draw(st.text(min_size=1, max_size=20))
    if draw(st.booleans()):
        spec["known_caveats"] = draw(st.lists(st.text(min_size=1, max_size=20), max_size=3))
    return spec


BREAKERS: dict[str, list[Any]] = {
    "primary_metric": ["", "1abc", "has space", 7],
    "direction": ["up", None, "MAXIMIZE"],
    "min_value": ["1.0", float("nan"), True],
    "goal_value": ["wrong side", float("inf")],
    "dataset_split": ["validation", ""],
    "tolerance": [-0.5, "0.1", float("nan")],
    "context": ["too short", "", 42],
    "secondary_metrics": [["bad name"], "val_loss", "primary"],
    "baseline_run": ["", 12],
    "failure_threshold": ["wrong side", float("nan")],
    "known_caveats": [[""], "one caveat"],
    "missing": ["primary_metric", "direction", "min_value", "goal_value", "dataset_split",
                "tolerance", "context"],
    "unknown": ["primary_metrics", "notes", "extra"],
}


@given(valid_specs())
def test_every_generated_valid_spec_is_accepted(spec):
    assert results_spec_problems(spec) == []
    parsed = parse_results_spec(spec)
    assert parsed.primary_metric == spec["primary_metric"]


@given(valid_specs(), st.sampled_from(sorted(BREAKERS)), st.data())
def test_a_spec_with_one_field_broken_is_refused_naming_that_field(spec, field, data):
    bad = data.draw(st.sampled_from(BREAKERS[field]))
    sign = 1 if spec["direction"] == "maximize" else -1
    if field == "missing":
        del spec[bad]
        named = bad
    elif field == "unknown":
        spec[bad] = 1
        named = bad
    elif bad == "wrong side":
        spec[field] = spec["min_value"] + (-sign if field == "goal_value" else sign)
        named = field
    elif bad == "primary":
        spec[field] = [spec["primary_metric"]]
        named = field
    else:
        spec[field] = bad
        named = field

    problems = results_spec_problems(spec)
    assert problems, spec
    assert any(p.startswith(named) for p in problems), problems
    with pytest.raises(InvalidInput):
        parse_results_spec(spec)


# --- finalize results --------------------------------------------------------------------------


def test_results_that_agree_with_the_spec_are_accepted():
    results = parse_final_results({**RESULTS, "unit": "fraction", "step": 1200, "epoch": 2.5,
                                   "secondary": {"val_loss": 0.5},
                                   "termination": {"infra_outcome": "succeeded"}},
                                  spec=parse_results_spec(SPEC), infra_outcome="succeeded")
    assert isinstance(results, FinalResults)
    assert results.value == 0.625 and results.termination is not None
    assert results.termination.infra_outcome == "succeeded"


@pytest.mark.parametrize("field", ["primary_metric", "direction", "value", "dataset_split",
                                   "ml_outcome", "notes"])
def test_each_required_results_field_is_required(field):
    data = {k: v for k, v in RESULTS.items() if k != field}
    assert f"- {field}: is required" in results_error(data).message


@pytest.mark.parametrize(("field", "value"), [
    ("primary_metric", "val_loss"), ("direction", "minimize"), ("dataset_split", "test")])
def test_results_must_name_the_specs_metric_direction_and_split(field, value):
    err = results_error({**RESULTS, field: value})
    assert f"{field}: {value!r} does not match the run's results_spec" in err.message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.6", None])
def test_the_final_value_must_be_a_finite_number(value):
    assert "- value:" in results_error({**RESULTS, "value": value}).message


def test_ml_outcome_must_be_success_partial_miss_or_unknown():
    assert "ml_outcome" in results_error({**RESULTS, "ml_outcome": "great"}).message


def test_notes_need_fifteen_characters():
    assert "notes" in results_error({**RESULTS, "notes": "meh"}).message


@pytest.mark.parametrize(("field", "value"), [("step", -1), ("step", 1.5), ("epoch", -0.5),
                                              ("unit", ""), ("secondary", {"bad name": 1.0}),
                                              ("secondary", {"f1": float("nan")})])
def test_optional_results_fields_are_checked_when_given(field, value):
    assert field in results_error({**RESULTS, field: value}).message


def test_a_termination_that_contradicts_how_the_run_ended_is_refused():
    err = results_error({**RESULTS, "termination": {"infra_outcome": "succeeded"}},
                        infra_outcome="crashed")
    assert "contradicts how the run ended ('crashed')" in err.message


def test_a_termination_must_name_a_known_infra_outcome():
    err = results_error({**RESULTS, "termination": {"infra_outcome": "completed"}})
    assert "termination['infra_outcome']" in err.message


def test_every_results_problem_is_reported_at_once_and_the_hint_fits_the_spec():
    err = results_error({"primary_metric": "val/loss", "direction": "maximize",
                         "value": "high", "dataset_split": "val", "ml_outcome": "yes",
                         "notes": "ok", "extra": 1}, spec=LOSS_SPEC)
    fields = re.findall(r"^- (\w+)", err.message, re.M)
    assert set(fields) == {"direction", "value", "ml_outcome", "notes", "extra"}
    example = example_in(err.hint)
    assert parse_final_results(example, spec=parse_results_spec(LOSS_SPEC))


def test_the_generic_results_example_is_valid_for_the_generic_spec_example():
    parse_final_results(RESULTS_EXAMPLE, spec=parse_results_spec(SPEC_EXAMPLE))


# --- auto results ------------------------------------------------------------------------------


def test_auto_results_take_the_last_value_of_each_spec_metric_and_list_missing_ones():
    spec = parse_results_spec({**SPEC, "secondary_metrics": ["val_loss", "f1", "lr"]})
    auto = auto_results(spec, {"val_accuracy": 0.625, "val_loss": 0.5, "lr": math.nan,
                               "unrelated": 1.0})

    assert auto["value"] == 0.625
    assert auto["secondary"] == {"val_loss": 0.5}
    assert auto["missing"] == ["f1"]
    assert auto["non_finite"] == ["lr"]
    assert auto["primary_metric"] == "val_accuracy" and auto["direction"] == "maximize"


def test_auto_results_report_non_finite_points_and_never_call_them_missing():
    """Regression: a metric logged only as NaN showed as 'missing'; 1.0 then inf showed 1.0."""
    spec = parse_results_spec({**SPEC, "secondary_metrics": ["val_loss"]})
    diverged = {"count": 1, "kind": "inf", "first_step": 1, "first_index": 1,
                "last_finite": 1.0}
    only_nan = {"count": 3, "kind": "nan", "first_step": 0, "first_index": 0,
                "last_finite": None}
    auto = auto_results(spec, {"val_accuracy": None, "val_loss": None},
                        {"val_accuracy": diverged, "val_loss": only_nan})

    assert auto["value"] is None and auto["missing"] == []
    assert auto["non_finite"] == ["val_accuracy", "val_loss"]
    assert auto["non_finite_points"] == {"val_accuracy": diverged, "val_loss": only_nan}
    assert non_finite_reason("val_accuracy", diverged) == (
        "val_accuracy went inf at step 1 (1 non-finite point; last finite value 1)")
    recovered = auto_results(spec, {"val_accuracy": 0.8}, {"val_accuracy": diverged})
    assert recovered["value"] == 0.8 and recovered["non_finite"] == []
    assert recovered["non_finite_points"] == {"val_accuracy": diverged}


def test_auto_results_without_the_primary_metric_have_no_value():
    auto = auto_results(parse_results_spec(SPEC), {})
    assert auto["value"] is None and auto["missing"] == ["val_accuracy"]


# --- compare -----------------------------------------------------------------------------------


def test_higher_is_an_improvement_when_maximizing():
    c = compare(parse_results_spec(SPEC), 0.625, previous=("r1", 0.5), best=("r0", 0.75))

    assert c.vs_previous is not None and c.vs_best is not None
    assert c.vs_previous.improved and c.vs_previous.delta == 0.125
    assert not c.vs_best.improved and c.vs_best.delta == -0.125
    assert c.meets_min and not c.meets_goal


def test_lower_is_an_improvement_when_minimizing():
    c = compare(parse_results_spec(LOSS_SPEC), 0.375, previous=("r1", 0.5), best=("r0", 0.25))

    assert c.vs_previous is not None and c.vs_previous.improved
    assert c.vs_previous.delta == -0.125
    assert c.vs_best is not None and not c.vs_best.improved
    assert c.meets_min and not c.meets_goal


@pytest.mark.parametrize(("value", "alert"), [(0.5, False), (0.4375, True), (0.75, False)])
def test_a_regression_alert_needs_a_shortfall_beyond_the_tolerance(value, alert):
    # best 0.75, tolerance 0.25: exactly 0.25 worse is noise, anything more is a regression
    c = compare(parse_results_spec(SPEC), value, previous=None, best=("r0", 0.75))
    assert c.regression_alert is alert


def test_a_regression_is_direction_aware():
    spec = parse_results_spec(LOSS_SPEC)  # tolerance 0.25, lower is better
    assert compare(spec, 0.625, previous=None, best=("r0", 0.25)).regression_alert
    assert not compare(spec, 0.5, previous=None, best=("r0", 0.25)).regression_alert
    assert not compare(spec, 0.0, previous=None, best=("r0", 0.25)).regression_alert


def test_without_earlier_runs_there_is_nothing_to_compare_or_regress_from():
    c = compare(parse_results_spec(SPEC), 0.1, previous=None, best=None)
    assert c.vs_previous is None and c.vs_best is None and not c.regression_alert
    assert not c.meets_min


def test_reaching_a_bar_exactly_counts_as_meeting_it():
    c = compare(parse_results_spec(SPEC), 0.75, previous=None, best=None)
    assert c.meets_min and c.meets_goal


@pytest.mark.parametrize("bad", [math.nan, math.inf, True])
def test_compare_refuses_values_that_are_not_finite_numbers(bad):
    spec = parse_results_spec(SPEC)
    with pytest.raises(InvalidInput):
        compare(spec, bad, previous=None, best=None)
    with pytest.raises(InvalidInput):
        compare(spec, 0.5, previous=None, best=("r0", bad))


any_finite = st.floats(allow_nan=False, allow_infinity=False)
references = st.none() | st.tuples(st.text(min_size=1, max_size=8), any_finite)


def negated(ref):
    return None if ref is None else (ref[0], -ref[1])


@given(valid_specs().filter(lambda s: s["direction"] == "maximize"), any_finite, references,
       references)
def test_minimizing_negated_values_mirrors_maximizing(spec, value, previous, best):
    mirror = {**spec, "direction": "minimize", "min_value": -spec["min_value"],
              "goal_value": -spec["goal_value"]}
    if "failure_threshold" in spec:
        mirror["failure_threshold"] = -spec["failure_threshold"]
    up = compare(parse_results_spec(spec), value, previous=previous, best=best)
    down = compare(parse_results_spec(mirror), -value, previous=negated(previous),
                   best=negated(best))

    assert (up.regression_alert, up.meets_min, up.meets_goal) == (
        down.regression_alert, down.meets_min, down.meets_goal)
    for a, b in ((up.vs_previous, down.vs_previous), (up.vs_best, down.vs_best)):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.improved == b.improved and a.run_id == b.run_id
            assert a.value == -b.value and a.delta == -b.delta


@given(valid_specs(), any_finite, st.tuples(st.just("r0"), any_finite))
def test_a_run_never_both_improves_on_and_regresses_from_the_best(spec, value, best):
    c = compare(parse_results_spec(spec), value, previous=best, best=best)
    assert c.vs_best is not None and c.vs_previous is not None
    assert not (c.vs_best.improved and c.regression_alert)
    assert c.vs_previous.improved == c.vs_best.improved


@given(valid_specs(), any_finite)
def test_meeting_the_goal_implies_meeting_the_minimum(spec, value):
    c = compare(parse_results_spec(spec), value, previous=None, best=None)
    assume(c.meets_goal)
    assert c.meets_min


# --- suggest_outcome ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "value", "outcome"), [
    (SPEC, 0.75, "success"), (SPEC, 0.9, "success"), (SPEC, 0.5, "partial"),
    (SPEC, 0.6, "partial"), (SPEC, 0.4, "miss"),
    (LOSS_SPEC, 0.25, "success"), (LOSS_SPEC, 0.1, "success"), (LOSS_SPEC, 0.5, "partial"),
    (LOSS_SPEC, 0.6, "miss"),
    (SPEC, math.nan, "miss"), (LOSS_SPEC, math.inf, "miss"),
])
def test_the_suggested_outcome_follows_the_goal_and_the_minimum(spec, value, outcome):
    assert suggest_outcome(parse_results_spec(spec), value) == outcome


@given(valid_specs(), any_finite)
def test_the_suggestion_agrees_with_the_comparison(spec, value):
    parsed = parse_results_spec(spec)
    c = compare(parsed, value, previous=None, best=None)
    expected = "success" if c.meets_goal else "partial" if c.meets_min else "miss"
    assert suggest_outcome(parsed, value) == expected


@given(valid_specs(), any_finite)
def test_a_metric_that_went_non_finite_is_never_suggested_as_a_success(spec, value):
    """Regression: a run that logged 1.0 then inf was offered ml_outcome 'success'."""
    parsed = parse_results_spec(spec)
    plain = suggest_outcome(parsed, value)
    flagged = suggest_outcome(parsed, value, went_non_finite=True)
    assert flagged != "success"
    assert flagged == ("partial" if plain == "success" else plain)


def test_a_spec_can_be_built_directly_and_still_checks_its_thresholds():
    with pytest.raises(ValueError, match="goal_value"):
        ResultsSpec.model_validate({**SPEC, "goal_value": 0.1})

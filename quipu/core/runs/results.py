"""What a run is meant to achieve (``results_spec``) and what it achieved (finalize ``results``).

A run cannot start without a :class:`ResultsSpec`: the metric that decides whether it worked,
which way is better, the minimum worth keeping, the goal, the data split and the noise tolerance.
After it ends the agent finalizes it with :class:`FinalResults`, which must speak about the same
metric, direction and split. Between the two, the engine offers :func:`auto_results` (the last
logged value of each spec metric), :func:`compare` (against the previous and the best run) and
:func:`suggest_outcome` (a hint; the agent decides the ML outcome).

Parsing reports every problem at once: :func:`parse_results_spec` and
:func:`parse_final_results` raise one ``InvalidInput`` (``invalid_results_spec`` /
``invalid_results``) whose message lists each field's problem and whose hint shows a valid
example. Unknown keys are refused with a did-you-mean.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from quipu.core.errors import InvalidInput
from quipu.core.runs.lifecycle import InfraOutcome
from quipu.core.validation import suggest

__all__ = [
    "MIN_TEXT_LENGTH",
    "RESULTS_EXAMPLE",
    "SPEC_EXAMPLE",
    "Comparison",
    "Direction",
    "FinalResults",
    "MlOutcome",
    "ResultsSpec",
    "Split",
    "Termination",
    "Versus",
    "auto_results",
    "compare",
    "deciding_run",
    "final_results_problems",
    "non_finite_kind",
    "non_finite_reason",
    "parse_final_results",
    "parse_results_spec",
    "pipeline_order",
    "results_spec_problems",
    "suggest_outcome",
]

Direction = Literal["maximize", "minimize"]
Split = Literal["train", "val", "test", "other"]
MlOutcome = Literal["success", "partial", "miss", "unknown"]

MIN_TEXT_LENGTH = 15
_METRIC_NAME = re.compile(r"[A-Za-z][\w.\-/:]{0,255}", re.ASCII)

SPEC_EXAMPLE: dict[str, Any] = {
    "primary_metric": "val_accuracy", "direction": "maximize", "min_value": 0.80,
    "goal_value": 0.90, "dataset_split": "val", "tolerance": 0.01,
    "context": "CIFAR-10 validation accuracy; the baseline CNN reaches 0.78",
}
RESULTS_EXAMPLE: dict[str, Any] = {
    "primary_metric": "val_accuracy", "direction": "maximize", "value": 0.87,
    "dataset_split": "val", "ml_outcome": "partial",
    "notes": "wider first layer helped (+0.05) but the goal of 0.90 is not reached yet",
}


def _metric_name(value: str) -> str:
    if not _METRIC_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a metric name: start with a letter, then up to 255 letters, "
            "digits or _ . - / :")
    return value


def _text(value: str) -> str:
    text = value.strip()
    if len(text) < MIN_TEXT_LENGTH:
        raise ValueError(f"needs at least {MIN_TEXT_LENGTH} characters of explanation "
                         f"(got {len(text)})")
    return text


def _unique(values: list[str]) -> list[str]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError("names appear more than once: " + ", ".join(repeated))
    return values


MetricName = Annotated[str, Field(strict=True), AfterValidator(_metric_name)]
Text = Annotated[str, Field(strict=True), AfterValidator(_text)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ResultsSpec(_Strict):
    """What a run must show: declared before it runs, required by ``run()``.

    ``goal_value`` must be at least as good as ``min_value`` for the direction, and
    ``failure_threshold`` (a value at which the run is plainly broken, e.g. chance accuracy) at
    least as bad. ``tolerance`` is the run-to-run noise in metric units: a run worse than the
    best by more than it raises a regression alert.
    """

    primary_metric: MetricName
    direction: Direction
    min_value: Number
    goal_value: Number
    dataset_split: Split
    tolerance: Annotated[Number, Field(ge=0)]
    context: Text
    secondary_metrics: Annotated[list[MetricName], AfterValidator(_unique)] = []
    baseline_run: Annotated[str, Field(strict=True, min_length=1)] | None = None
    failure_threshold: Number | None = None
    known_caveats: list[Annotated[str, Field(strict=True, min_length=1)]] = []

    @model_validator(mode="after")
    def _thresholds_agree(self) -> ResultsSpec:
        problems = _spec_cross_problems(self.model_dump(), failed=set())
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Termination(_Strict):
    """How the infrastructure says the run ended (must match the run's own infra outcome)."""

    infra_outcome: InfraOutcome


class FinalResults(_Strict):
    """What the run achieved, in the agent's words: given to ``finalize_run``."""

    primary_metric: MetricName
    direction: Direction
    value: Number
    dataset_split: Split
    ml_outcome: MlOutcome
    notes: Text
    unit: Annotated[str, Field(strict=True, min_length=1, max_length=64)] | None = None
    step: Annotated[int, Field(strict=True, ge=0)] | None = None
    epoch: Annotated[Number, Field(ge=0)] | None = None
    secondary: dict[MetricName, Number] = {}
    termination: Termination | None = None


class Versus(_Strict):
    """The value compared with one earlier run: ``delta`` is value minus theirs."""

    run_id: str
    value: float
    delta: float
    improved: bool


class Comparison(_Strict):
    """A run's value against the previous and the best run, and against the spec's bars."""

    value: float
    vs_previous: Versus | None
    vs_best: Versus | None
    regression_alert: bool
    meets_min: bool
    meets_goal: bool


# --- parsing -----------------------------------------------------------------------------------


def _better_or_equal(direction: str, a: float, b: float) -> bool:
    return a >= b if direction == "maximize" else a <= b


def _usable(values: Mapping[str, Any], failed: set[str], *keys: str) -> bool:
    return all(k in values and values[k] is not None and k not in failed for k in keys)


def _spec_cross_problems(values: Mapping[str, Any], *, failed: set[str]) -> list[str]:
    """Rules that tie spec fields together, checked on whichever fields are themselves valid."""
    problems = []
    if _usable(values, failed, "direction", "min_value", "goal_value"):
        direction, low, goal = values["direction"], values["min_value"], values["goal_value"]
        if not _better_or_equal(direction, goal, low):
            side = "below" if direction == "maximize" else "above"
            problems.append(f"goal_value: {goal} is {side} min_value {low}; when you "
                            f"{direction} the goal must be at least as good as the minimum")
    if _usable(values, failed, "direction", "min_value", "failure_threshold"):
        direction, low, fail = (values["direction"], values["min_value"],
                                values["failure_threshold"])
        if not _better_or_equal(direction, low, fail):
            side = "above" if direction == "maximize" else "below"
            problems.append(f"failure_threshold: {fail} is {side} min_value {low}; when you "
                            f"{direction} a failure threshold must be at least as bad as the "
                            "minimum")
    if (_usable(values, failed, "primary_metric", "secondary_metrics")
            and values["primary_metric"] in values["secondary_metrics"]):
        problems.append(f"secondary_metrics: lists the primary metric "
                        f"{values['primary_metric']!r} again")
    return problems


def _field_problems(err: ValidationError, fields: list[str]) -> tuple[list[str], set[str]]:
    """Readable problems from pydantic's errors, and the top-level fields that failed."""
    problems: list[str] = []
    failed: set[str] = set()
    for e in err.errors():
        loc = e["loc"]
        if not loc:
            continue  # model-level rules are re-checked by the caller, field by field
        failed.add(str(loc[0]))
        where = str(loc[0]) + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]"
                                      for p in loc[1:])
        if e["type"] == "extra_forbidden" and len(loc) == 1:
            close = suggest(str(loc[0]), fields)
            problems.append(f"{where}: unknown key"
                            + (f" (did you mean {close!r}?)" if close else
                               " (known keys: " + ", ".join(fields) + ")"))
        elif e["type"] == "missing":
            problems.append(f"{where}: is required")
        else:
            message = e["msg"].removeprefix("Value error, ")
            got = repr(e.get("input"))
            got = got if len(got) <= 60 else got[:57] + "..."
            problems.append(f"{where}: {message} (got {got})"
                            if e["type"] != "value_error" else f"{where}: {message}")
    return problems, failed


def _refuse(what: str, code: str, problems: list[str], example: dict[str, Any]) -> InvalidInput:
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    return InvalidInput(
        f"invalid {what} ({count}):\n" + "\n".join(f"- {p}" for p in problems),
        code=code,
        hint=f"fix every field listed; a valid {what} looks like {json.dumps(example)}",
    )


def results_spec_problems(data: object) -> list[str]:
    """Every problem with ``data`` as a results_spec; empty when it is valid."""
    if not isinstance(data, Mapping):
        return [f"results_spec must be an object with keys such as {', '.join(SPEC_EXAMPLE)} "
                f"(got {type(data).__name__})"]
    try:
        ResultsSpec.model_validate(data)
    except ValidationError as err:
        problems, failed = _field_problems(err, list(ResultsSpec.model_fields))
        return problems + _spec_cross_problems(data, failed=failed)
    return []


def parse_results_spec(data: object) -> ResultsSpec:
    """``data`` as a :class:`ResultsSpec`; ``InvalidInput`` listing every problem otherwise."""
    problems = results_spec_problems(data)
    if problems:
        raise _refuse("results_spec", "invalid_results_spec", problems, SPEC_EXAMPLE)
    return ResultsSpec.model_validate(data)


def final_results_problems(data: object, *, spec: ResultsSpec,
                           infra_outcome: InfraOutcome | None = None) -> list[str]:
    """Every problem with ``data`` as the finalize results of a run with ``spec``.

    Beyond each field's own rules, the results must name the spec's primary metric, direction
    and dataset split (otherwise the value could not be compared with the spec's bars or with
    other runs), and a ``termination.infra_outcome`` must match the run's actual infra outcome
    when that is given.
    """
    if not isinstance(data, Mapping):
        return [f"results must be an object with keys such as {', '.join(RESULTS_EXAMPLE)} "
                f"(got {type(data).__name__})"]
    problems: list[str] = []
    failed: set[str] = set()
    try:
        FinalResults.model_validate(data)
    except ValidationError as err:
        problems, failed = _field_problems(err, list(FinalResults.model_fields))
    for key in ("primary_metric", "direction", "dataset_split"):
        expected = getattr(spec, key)
        if _usable(data, failed, key) and data[key] != expected:
            problems.append(f"{key}: {data[key]!r} does not match the run's results_spec, "
                            f"which says {expected!r}")
    termination = data.get("termination")
    if (infra_outcome is not None and "termination" not in failed
            and isinstance(termination, Mapping)
            and termination.get("infra_outcome") != infra_outcome):
        problems.append(f"termination['infra_outcome']: {termination.get('infra_outcome')!r} "
                        f"contradicts how the run ended ({infra_outcome!r}); leave it out or "
                        "use that")
    return problems


def parse_final_results(data: object, *, spec: ResultsSpec,
                        infra_outcome: InfraOutcome | None = None) -> FinalResults:
    """``data`` as :class:`FinalResults` for a run with ``spec``; ``InvalidInput`` otherwise.

    See :func:`final_results_problems` for the rules; every problem is reported at once.
    """
    problems = final_results_problems(data, spec=spec, infra_outcome=infra_outcome)
    if problems:
        example = {**RESULTS_EXAMPLE, "primary_metric": spec.primary_metric,
                   "direction": spec.direction, "dataset_split": spec.dataset_split}
        raise _refuse("results", "invalid_results", problems, example)
    return FinalResults.model_validate(data)


# --- helpers for the agent ---------------------------------------------------------------------


def non_finite_kind(value: float) -> str:
    """How a non-finite number is written where JSON cannot carry it: "nan", "inf", "-inf"."""
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def non_finite_reason(name: str, facts: Mapping[str, Any]) -> str:
    """One line saying how metric ``name`` went non-finite, from its summary's ``non_finite``
    facts: ``"loss went nan at step 7 (3 non-finite points; last finite value 0.41)"``."""
    where = (f" at step {facts['first_step']}" if facts.get("first_step") is not None
             else f" at point {facts.get('first_index', 0)}")
    count = int(facts.get("count") or 1)
    points = f"{count} non-finite point" + ("s" if count != 1 else "")
    last = facts.get("last_finite")
    before = f"last finite value {last:.6g}" if isinstance(last, int | float) else "no finite value"
    return f"{name} went {facts.get('kind', 'nan')}{where} ({points}; {before})"


def auto_results(spec: ResultsSpec, last_values: Mapping[str, float | None],
                 non_finite: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The last logged value of each metric the spec names, captured when the run ends.

    ``last_values`` maps every logged metric to its latest value (None when that point was not
    a finite number); ``non_finite`` maps metrics that logged NaN or infinite points to their
    summary's facts (``{count, kind, first_step, first_index, last_finite}``).

    Returns ``{"primary_metric", "direction", "dataset_split", "value", "secondary",
    "missing", "non_finite", "non_finite_points"}``: ``value`` is the primary metric's last
    value (``None`` if it is missing or not finite), ``secondary`` the secondary metrics that
    have a finite last value, ``missing`` every spec metric never logged, ``non_finite`` those
    whose last value was NaN or infinite (a diverged run), and ``non_finite_points`` the facts
    of every spec metric that logged a non-finite point at all, even one it recovered from.
    """
    found: dict[str, float] = {}
    missing: list[str] = []
    last_odd: list[str] = []
    facts: dict[str, dict[str, Any]] = {}
    for name in (spec.primary_metric, *spec.secondary_metrics):
        value = last_values.get(name)
        if name in (non_finite or {}):
            facts[name] = dict((non_finite or {})[name])
        if name not in last_values and name not in facts:
            missing.append(name)
        elif isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            last_odd.append(name)
        else:
            found[name] = float(value)
    return {
        "primary_metric": spec.primary_metric,
        "direction": spec.direction,
        "dataset_split": spec.dataset_split,
        "value": found.pop(spec.primary_metric, None),
        "secondary": found,
        "missing": missing,
        "non_finite": last_odd,
        "non_finite_points": facts,
    }


def _finite(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a finite number (got {value!r})",
                           code="invalid_results",
                           hint="compare only finite metric values, e.g. 0.87")
    return float(value)


def _versus(spec: ResultsSpec, value: float, ref: tuple[str, float] | None,
            what: str) -> Versus | None:
    if ref is None:
        return None
    run_id, theirs = ref[0], _finite(ref[1], f"the {what} run's value")
    better = value > theirs if spec.direction == "maximize" else value < theirs
    return Versus(run_id=run_id, value=theirs, delta=value - theirs, improved=better)


def compare(spec: ResultsSpec, value: float, *, previous: tuple[str, float] | None,
            best: tuple[str, float] | None) -> Comparison:
    """Compare ``value`` with the previous and the best run, direction-aware.

    ``improved`` means strictly better than that run. ``regression_alert`` is raised when the
    value is worse than the best by more than ``spec.tolerance`` (in metric units), so it is
    never raised together with an improvement on the best. ``meets_min`` and ``meets_goal``
    compare with the spec's bars (reaching a bar exactly counts).
    """
    value = _finite(value, "value")
    vs_best = _versus(spec, value, best, "best")
    regression = False
    if vs_best is not None:
        shortfall = (vs_best.value - value if spec.direction == "maximize"
                     else value - vs_best.value)
        regression = shortfall > spec.tolerance
    return Comparison(
        value=value,
        vs_previous=_versus(spec, value, previous, "previous"),
        vs_best=vs_best,
        regression_alert=regression,
        meets_min=_better_or_equal(spec.direction, value, spec.min_value),
        meets_goal=_better_or_equal(spec.direction, value, spec.goal_value),
    )


def suggest_outcome(spec: ResultsSpec, value: float, *,
                    went_non_finite: bool = False) -> MlOutcome:
    """A hint for the agent's ML outcome: success at the goal, partial at the minimum, else miss.

    A value that is not a finite number (a diverged run) gives ``miss``. A run whose primary
    metric went NaN or infinite on the way (``went_non_finite``) is never suggested as a
    success: at best ``partial``. The agent decides.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "miss"
    if _better_or_equal(spec.direction, value, spec.goal_value):
        return "partial" if went_non_finite else "success"
    if _better_or_equal(spec.direction, value, spec.min_value):
        return "partial"
    return "miss"


# --- one verdict per experiment ----------------------------------------------------------------


def pipeline_order(stages: Mapping[str, tuple[str, Sequence[str]]]) -> list[str]:
    """The run ids of one pipeline run in execution order: ``stages`` maps each run id to
    (stage name, the run ids it depends on); a run comes after what it depends on, ties by
    stage name. Dependencies outside ``stages`` are ignored."""
    left = dict(stages)
    order: list[str] = []
    while left:
        ready = [r for r, (_, deps) in left.items() if not set(deps) & left.keys()]
        if not ready:  # a cycle cannot be started; keep going by name rather than loop
            ready = list(left)
        first = min(ready, key=lambda r: (left[r][0], r))
        order.append(first)
        del left[first]
    return order


def deciding_run(stages: Mapping[str, tuple[str, Sequence[str]]],
                 logged: Mapping[str, bool]) -> str:
    """The stage run whose verdict is the pipeline run's: the last (in execution order) that
    logged the results spec's primary metric (``logged``), else the last stage run."""
    order = pipeline_order(stages)
    with_metric = [r for r in order if logged.get(r)]
    return (with_metric or order)[-1]

"""The deterministic post-run review: what an ended run's numbers say about its ML outcome.

It compares the run's primary metric (its last value, how it moved, whether it went NaN) with
the results spec's bars (``goal_value``, ``min_value``, ``failure_threshold``), looks at the
statistics of its outputs (``outputs[name]["stats"]``, when they were measured) and at how the
run ended (a stop the monitor asked for), and suggests one of ``finalize_run``'s outcomes
(``success | partial | miss | unknown``) with the evidence lines behind it. It only suggests:
``finalize_run`` never applies it; the agent's call decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from quipu.core.runs import lifecycle
from quipu.core.runs.lifecycle import State
from quipu.core.runs.results import (
    MlOutcome,
    ResultsSpec,
    non_finite_reason,
    suggest_outcome,
)

__all__ = ["MAX_EVIDENCE", "REVIEWER", "review_run"]

REVIEWER = "post_run"
"""The name the deterministic review records in ``OutcomeSuggested.reviewers``."""

MAX_EVIDENCE = 6
"""Evidence lines kept (the suggestion travels in finalize_run and list_unfinalized_runs)."""
_LINE = 200


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _cut(text: str) -> str:
    return text if len(text) <= _LINE else text[:_LINE - 1] + "…"


def _worse_or_equal(direction: str, a: float, b: float) -> bool:
    return a <= b if direction == "maximize" else a >= b


def review_run(*, state: State, spec: Mapping[str, Any], hypothesis: str | None,
               summaries: Mapping[str, Any], outputs: Mapping[str, Any],
               stopped_by: Mapping[str, Any] | None = None,
               error: str | None = None) -> tuple[MlOutcome, list[str]]:
    """(suggested outcome, evidence lines) for a run that ended in ``state``.

    ``summaries`` are its metric summaries (``MetricsRecorded``), ``outputs`` its recorded
    outputs (each may carry ``stats``), ``stopped_by`` the ``StopRequested`` that preceded a
    stop (``requested_by``, ``reason``, ``finding``).
    """
    evidence: list[str] = []
    if hypothesis:
        evidence.append(f"hypothesis: {hypothesis}")
    try:
        parsed = ResultsSpec.model_validate(dict(spec))
    except ValueError:
        return "unknown", [*evidence, "the run has no valid results spec to judge it by"]
    name = parsed.primary_metric
    outcome: MlOutcome
    if not lifecycle.spec(state).yields_value:
        why = f"the run ended {state.value}: it did not run its code to an end it chose"
        evidence.append(why + (f" ({error})" if error else ""))
        return "miss" if state is not State.CANCELED else "unknown", _bounded(evidence)
    summary = summaries.get(name)
    if not isinstance(summary, dict):
        logged = ", ".join(sorted(summaries)[:5]) or "none"
        evidence.append(f"the primary metric {name} was never logged (logged: {logged})")
        return "unknown", _bounded(evidence)
    last = _num(summary.get("last"))
    facts = summary.get("non_finite")
    if isinstance(facts, dict):
        evidence.append(non_finite_reason(name, facts))
    if last is None:
        evidence.append(f"{name} has no finite last value: nothing to judge")
        return "miss", _bounded(evidence)
    outcome = suggest_outcome(parsed, last, went_non_finite=isinstance(facts, dict))
    bar = ("meets the goal" if outcome == "success" or _reaches(parsed, last, parsed.goal_value)
           else "meets the minimum" if _reaches(parsed, last, parsed.min_value)
           else "is below the minimum")
    evidence.append(f"{name} = {last:.6g} ({parsed.direction}) {bar}: min "
                    f"{parsed.min_value:g}, goal {parsed.goal_value:g}")
    if parsed.failure_threshold is not None and _worse_or_equal(
            parsed.direction, last, parsed.failure_threshold):
        outcome = "miss"
        evidence.append(f"{name} is at or past the failure threshold "
                        f"{parsed.failure_threshold:g}: the run is broken, not just weak")
    trend = summary.get("trend")
    if isinstance(trend, str) and summary.get("count", 0) > 1:
        good = "up" if parsed.direction == "maximize" else "down"
        moving = ("still improving" if trend == good else "flat" if trend == "flat"
                  else "getting worse")
        evidence.append(f"{name} over its last points: {trend} ({moving})")
    for problem in _output_problems(outputs):
        evidence.append(problem)
        if outcome == "success":
            outcome = "partial"  # an output that looks dead undermines the number
    if stopped_by is not None and stopped_by.get("requested_by") == "monitor":
        finding = stopped_by.get("finding") or {}
        said = finding.get("message") or stopped_by.get("reason")
        evidence.append(f"stopped by the monitor: {said}")
        if outcome == "success":
            outcome = "partial"
    return outcome, _bounded(evidence)


def _reaches(spec: ResultsSpec, value: float, bar: float) -> bool:
    return value >= bar if spec.direction == "maximize" else value <= bar


def _output_problems(outputs: Mapping[str, Any]) -> list[str]:
    """Lines for outputs whose measured statistics look dead (constant, mostly missing)."""
    found = []
    for name, output in sorted(outputs.items()):
        stats = output.get("stats") if isinstance(output, dict) else None
        if not isinstance(stats, dict):
            continue
        std = _num(stats.get("std"))
        missing = _num(stats.get("null_ratio", stats.get("nan_ratio")))
        if std is not None and std == 0:
            found.append(f"output {name} is constant (std 0)")
        if missing is not None and missing > 0.5:
            found.append(f"output {name} is {missing:.0%} missing (NaN/null)")
    return found


def _bounded(lines: list[str]) -> list[str]:
    return [_cut(line) for line in lines[:MAX_EVIDENCE]]

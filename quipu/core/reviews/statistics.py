"""Checks on an output's statistics, and on its contract violations, as findings.

Pure: the executor reads the output file (``quipu.outputcheck``) and hands the statistics in,
with the statistics of the same output of the stage's previous succeeded run when there is
one; this module says what they mean. Thresholds come from the output's declaration in
``pipeline.yaml`` (``schema.checks``) over the project's defaults (``quipu.yaml``
``svs.statistics``) over :data:`BUILTIN_CHECKS`, and the effective ones are recorded with the
run (``RunRequested.outputs[name]["checks"]``), so a replay never depends on today's config.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from quipu.core.reviews.findings import Finding, Severity

__all__ = [
    "BUILTIN_CHECKS",
    "ContractMode",
    "StatChecks",
    "check_statistics",
    "contract_findings",
    "drift",
    "effective_checks",
]

ContractMode = Literal["blocking", "warning", "silent"]


class StatChecks(BaseModel):
    """Thresholds of the statistic checks; a field left out inherits the level above.

    ``zero_variance`` and ``constant_column`` turn those checks on or off; ``min_entropy``
    (bits; 0 turns it off), ``max_null_ratio`` (1 turns it off), ``max_psi`` (the population
    stability index against the previous succeeded run; 0.1 is a moderate shift, 0.25 a large
    one) and ``min_vocab_utilisation`` (the share of a declared ``vocab_size`` seen) are limits.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    zero_variance: bool | None = None
    constant_column: bool | None = None
    min_entropy: float | None = Field(default=None, ge=0)
    max_null_ratio: float | None = Field(default=None, ge=0, le=1)
    max_psi: float | None = Field(default=None, ge=0)
    min_vocab_utilisation: float | None = Field(default=None, ge=0, le=1)

    def given(self) -> dict[str, Any]:
        """The fields that were set."""
        return self.model_dump(exclude_none=True)


BUILTIN_CHECKS: Mapping[str, Any] = {
    "zero_variance": True, "constant_column": True, "min_entropy": 0.1,
    "max_null_ratio": 0.1, "max_psi": 0.25,
}
"""What applies when neither the project nor the output says otherwise."""


def effective_checks(project: StatChecks | None, declared: Mapping[str, Any] | None
                     ) -> dict[str, Any]:
    """The thresholds one output is checked against: built-ins < project < declaration."""
    out = dict(BUILTIN_CHECKS)
    if project is not None:
        out.update(project.given())
    out.update({k: v for k, v in (declared or {}).items() if v is not None})
    return out


def contract_findings(*, stage: str, output: str, violations: Sequence[tuple[str, str]],
                      severity: Severity) -> list[Finding]:
    """One finding per contract violation ``(signal, message)`` of an output."""
    return [Finding(signal=signal, severity=severity, phase="contract", source="contract",
                    stage=stage, output=output, message=f"output {output!r}: {message}",
                    fix="make the data fit its declared schema, or change the schema in "
                    "pipeline.yaml") for signal, message in violations]


# --- drift ------------------------------------------------------------------------------------


def _cdf(quantiles: Sequence[float], x: float) -> float:
    """The CDF at ``x`` of the distribution whose evenly spaced quantiles are ``quantiles``
    (linear between them; flat runs of equal quantiles are jumps)."""
    n = len(quantiles) - 1
    if x < quantiles[0]:
        return 0.0
    if x >= quantiles[-1]:
        return 1.0
    for i in range(n):
        lo, hi = quantiles[i], quantiles[i + 1]
        if lo <= x < hi:
            return (i + (x - lo) / (hi - lo)) / n
    return 1.0


def drift(previous: Sequence[float], current: Sequence[float]) -> tuple[float, float]:
    """(PSI, KS distance) between two quantile sketches of the same length.

    The bins are the previous run's quantile intervals (equal mass by construction, merged
    where quantiles tie); each side's mass per bin comes from its own sketch's CDF, so neither
    needs the old data. KS is the largest CDF gap over every point of both sketches.
    """
    edges = sorted(set(previous))
    if len(edges) < 2:  # the previous output was constant: compare around its one value
        value = edges[0]
        edges = [value - 1e-9 * max(abs(value), 1.0), value + 1e-9 * max(abs(value), 1.0)]
    bounds = [-math.inf, *edges[1:-1], math.inf]
    eps = 1e-4
    psi = 0.0
    for lo, hi in itertools.pairwise(bounds):
        p = max((1.0 if hi == math.inf else _cdf(previous, hi))
                - (0.0 if lo == -math.inf else _cdf(previous, lo)), eps)
        q = max((1.0 if hi == math.inf else _cdf(current, hi))
                - (0.0 if lo == -math.inf else _cdf(current, lo)), eps)
        psi += (q - p) * math.log(q / p)
    ks = max(abs(_cdf(previous, x) - _cdf(current, x)) for x in {*previous, *current})
    return round(psi, 6), round(ks, 6)


# --- the checks -------------------------------------------------------------------------------


def _finding(signal: str, message: str, *, stage: str, output: str, evidence: dict[str, Any],
             fix: str) -> Finding:
    return Finding(signal=signal, severity="warning", phase="statistics", source="statistics",
                   stage=stage, output=output, message=message, fix=fix, evidence=evidence)


def _one(where: str, stats: Mapping[str, Any], checks: Mapping[str, Any], *, stage: str,
         output: str, column: bool, baseline: tuple[str, Mapping[str, Any]] | None
         ) -> list[Finding]:
    found: list[Finding] = []
    sample = stats.get("sample") or 0
    std, unique = stats.get("std"), stats.get("unique")
    constant = sample > 1 and (std == 0 or unique == 1) and stats.get("null_ratio", 0) < 1
    kw: dict[str, Any] = {"stage": stage, "output": output}
    if constant and checks.get("constant_column" if column else "zero_variance"):
        signal = "constant_column" if column else "zero_variance"
        value = stats.get("min") if stats.get("min") is not None else stats.get("top")
        found.append(_finding(signal, f"{where} holds one value ({value!r}) over {sample} "
                              "sampled values", evidence={"unique": unique, "std": std},
                              fix="check the code that computes it: a collapsed feature, a "
                              "constant fill or a broken join", **kw))
    entropy, low = stats.get("entropy"), checks.get("min_entropy")
    if not constant and entropy is not None and low and entropy < low and sample > 1:
        found.append(_finding("low_entropy", f"{where} has entropy {entropy:g} bits, under "
                              f"{low:g}", evidence={"entropy": entropy, "threshold": low},
                              fix="a nearly collapsed distribution: check the values, or "
                              "lower checks.min_entropy for this output", **kw))
    nulls, most = stats.get("null_ratio"), checks.get("max_null_ratio")
    if nulls is not None and most is not None and nulls > most:
        found.append(_finding("high_null_ratio", f"{where} is {nulls:.1%} missing (NaN or "
                              f"empty), over {most:.1%}", evidence={"null_ratio": nulls,
                                                                    "threshold": most},
                              fix="find where the NaN/empty values come from, or raise "
                              "checks.max_null_ratio for this output", **kw))
    used, least = stats.get("vocab_utilisation"), checks.get("min_vocab_utilisation")
    if used is not None and least is not None and used < least:
        found.append(_finding("low_vocab_utilisation", f"{where} uses {used:.1%} of its "
                              f"vocabulary, under {least:.1%}", evidence={
                                  "vocab_utilisation": used, "threshold": least},
                              fix="a collapsed tokenizer or a wrong vocab_size", **kw))
    limit = checks.get("max_psi")
    if baseline is not None and limit is not None:
        run_id, before = baseline
        old, new = before.get("quantiles"), stats.get("quantiles")
        if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) >= 2 \
                and all(isinstance(v, int | float) for v in [*old, *new]):
            psi, ks = drift(old, new)
            if psi > limit:
                found.append(_finding(
                    "distribution_drift", f"{where} moved away from run {run_id}'s: "
                    f"PSI {psi:.3g} over {limit:g} (KS distance {ks:.3g})",
                    evidence={"psi": psi, "ks": ks, "threshold": limit, "baseline_run": run_id},
                    fix="if the change is intended, ignore it; otherwise compare the inputs "
                    "and code with the baseline run", **kw))
    return found


def check_statistics(*, stage: str, output: str, stats: Mapping[str, Any],
                     checks: Mapping[str, Any],
                     baseline: tuple[str, Mapping[str, Any]] | None = None) -> list[Finding]:
    """The statistic findings of one output (``stats`` as ``quipu.outputcheck`` makes them).

    An array is checked as a whole (zero variance, entropy, missing values, vocabulary use,
    drift), plus its constant features when it is 2-d; a table column by column (constant
    column instead of zero variance). ``baseline`` is ``(run_id, stats)`` of the same output
    of the stage's previous succeeded run, for the drift check.
    """
    found: list[Finding] = []
    columns = stats.get("column_stats")
    if isinstance(columns, Mapping):
        before = baseline[1].get("column_stats") if baseline else None
        for name, column in columns.items():
            if not isinstance(column, Mapping):
                continue
            old = before.get(name) if isinstance(before, Mapping) else None
            found += _one(f"column {name!r} of output {output!r}", column, checks, stage=stage,
                          output=output, column=True,
                          baseline=(baseline[0], old) if baseline and isinstance(old, Mapping)
                          else None)
        return found
    found += _one(f"output {output!r}", stats, checks, stage=stage, output=output, column=False,
                  baseline=baseline)
    dead = stats.get("constant_features")
    if isinstance(dead, int) and dead > 0 and checks.get("constant_column") and not any(
            f.signal == "zero_variance" for f in found):
        index = stats.get("constant_feature_index", [])
        found.append(_finding("constant_column", f"{dead} of the {stats.get('features')} "
                              f"features of output {output!r} never change over the sampled "
                              f"rows (first: {index})", evidence={"constant_features": dead,
                                                                  "index": index},
                              fix="dead features: check the layer or the preprocessing that "
                              "makes them", stage=stage, output=output))
    return found

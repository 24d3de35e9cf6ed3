"""What the executor checks in the outputs a stage left: contracts, statistics, drift.

After the stage process ends and its outputs are stored (``collect_outputs``), every declared
output file is read once more, on a bounded sample (``quipu.outputcheck``): its contract is
checked again (the stage may have written the file itself, or lied in an npy header) and its
statistics join the output's facts (``RunExited.outputs[name]["stats"]``). The statistic checks
(``core.reviews.statistics``) compare them with the run's recorded thresholds and with the same
output of the stage's previous succeeded run. How a broken contract is treated is the one the
run recorded (``outputs[name]["contract"]``): ``blocking`` makes it a problem that fails the
run (and an error finding), ``warning`` a finding, ``silent`` nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quipu.core.patterns.detection import ApprovedPattern, match_statistics
from quipu.core.reviews.findings import MAX_FINDINGS, Finding, Severity
from quipu.core.reviews.statistics import check_statistics, contract_findings
from quipu.outputcheck import DEFAULT_CONTRACT_MODE, inspect_file
from quipu.rundir import OUTPUTS_DIR

__all__ = ["Baseline", "OutputReview", "review_outputs"]

Baseline = Callable[[str], tuple[str, Mapping[str, Any]] | None]
"""Output name -> (run id, stats) of the same output of the stage's previous succeeded run."""


@dataclass
class OutputReview:
    """What the checks found: ``problems`` fail the run; findings are recorded per phase."""

    problems: list[str] = field(default_factory=list)
    contract: list[Finding] = field(default_factory=list)
    statistics: list[Finding] = field(default_factory=list)

    def batches(self) -> list[tuple[str, list[dict[str, Any]], int]]:
        """(phase, findings as dicts, omitted) for each phase that found something."""
        out = []
        for phase, found in (("contract", self.contract), ("statistics", self.statistics)):
            if found:
                out.append((phase, [f.as_dict() for f in found[:MAX_FINDINGS]],
                            max(len(found) - MAX_FINDINGS, 0)))
        return out


def review_outputs(run_dir: Path, declared: Mapping[str, Mapping[str, Any]],
                   stored: dict[str, dict[str, Any]], *, stage: str,
                   baseline: Baseline,
                   patterns: Sequence[ApprovedPattern] = ()) -> OutputReview:
    """Check every stored output file; add its statistics to ``stored[name]["stats"]``.

    A failure to read a file for its statistics is never an error of the run: that output
    simply has no statistics. ``patterns`` are the stage's approved failure patterns: those
    whose detection is a statistic rule are matched against each output's statistics.
    """
    review = OutputReview()
    for name, record in sorted(stored.items()):
        spec = declared.get(name, {})
        kind = spec.get("type")
        if kind not in ("npy", "csv", "json") or record.get("kind") != "file":
            continue
        mode = spec.get("contract") or DEFAULT_CONTRACT_MODE
        schema = spec.get("schema") or {}
        path = run_dir / str(record.get("path") or f"{OUTPUTS_DIR}/{name}")
        try:
            violations, stats = inspect_file(path, kind, schema)
        except (OSError, ValueError, MemoryError) as exc:
            violations, stats = [], {"error": f"statistics not computed: {exc}"[:300]}
        if mode != "silent" and violations:
            pairs = [(v.signal, v.message) for v in violations]
            severity: Severity = "error" if mode == "blocking" else "warning"
            review.contract += contract_findings(stage=stage, output=name, violations=pairs,
                                                 severity=severity)
            if mode == "blocking":
                review.problems += [f"output {name!r} breaks its contract: {v.message}"
                                    for v in violations]
        if not stats:
            continue
        record["stats"] = {**(record.get("stats") or {}), **stats}
        checks = spec.get("checks")
        if isinstance(checks, Mapping) and "error" not in stats:
            previous = baseline(name)
            review.statistics += check_statistics(stage=stage, output=name, stats=stats,
                                                  checks=checks, baseline=previous)
        if patterns and "error" not in stats:
            review.statistics += match_statistics(patterns, stage, name, stats)
    return review

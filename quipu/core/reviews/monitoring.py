"""The during-run monitor's rules: what a running stage's metrics say is going wrong.

Pure: the monitor adapter (``quipu.adapters.monitor``) follows the log and feeds a
:class:`RunWatch` per running run with what ``MetricsRecorded`` carries (per-metric summaries:
``last``, ``min``, ``max``, ``count``, ``non_finite``, see ``adapters/executors/_metrics.py``)
and the time; the rules answer with findings (phase ``during_run``, source ``monitor``). Each
rule fires once per run and metric (``RunWatch.flagged``); the stall rule re-arms when metrics
move again.

The rules see summaries, not points: a spike that came and went between two ingests (every few
seconds) is seen only through ``max``. That is enough for every rule here, so the monitor never
reads the series blob.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from quipu.core.reviews.findings import Finding
from quipu.core.runs.results import non_finite_reason

__all__ = ["SOURCE", "MonitorRules", "RunWatch"]

SOURCE = "monitor"
"""The findings' ``source`` and the actor of the monitor's events."""

_WINDOW = 20
"""Observed values kept per metric (the grad-norm rule's median)."""


@dataclass(frozen=True)
class MonitorRules:
    """The thresholds (``svs.monitor`` in ``quipu.yaml``; see docs/svs.md)."""

    auto_stop: bool = False
    loss_metrics: tuple[str, ...] = ("*loss*",)
    loss_spike_factor: float = 5.0
    stall_seconds: float = 1800.0
    grad_norm_metrics: tuple[str, ...] = ("*grad*norm*",)
    grad_norm_factor: float = 10.0
    throughput_metrics: tuple[str, ...] = ("*throughput*", "*per_sec*", "*per_second*",
                                           "*samples_s", "*tokens_s")
    throughput_drop: float = 0.1
    min_points: int = 3

    def matches(self, name: str, patterns: tuple[str, ...]) -> bool:
        """Whether metric ``name`` matches one of the glob ``patterns`` (case-insensitive)."""
        low = name.lower()
        return any(fnmatch.fnmatchcase(low, p.lower()) for p in patterns)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class RunWatch:
    """What the monitor knows of one running run."""

    run_id: str
    stage: str
    progress_at: datetime
    """When metrics last moved (the launch, until the first ingest)."""
    points: int = 0
    stop_asked: bool = False
    flagged: set[tuple[str, str]] = field(default_factory=set)
    """(signal, metric) already reported for this run ('' for run-wide signals)."""
    seen: dict[str, deque[float]] = field(default_factory=dict)
    """The latest values observed per metric, newest last (bounded)."""

    def _finding(self, signal: str, severity: str, metric: str, message: str, fix: str,
                 **evidence: Any) -> Finding | None:
        if (signal, metric) in self.flagged:
            return None
        self.flagged.add((signal, metric))
        ev = {"metric": metric, **evidence} if metric else evidence
        return Finding(signal=signal, severity=severity,
                       message=message, phase="during_run", source=SOURCE, stage=self.stage,
                       fix=fix, evidence=ev)

    def metrics(self, rules: MonitorRules, *, points: int, at: datetime,
                summaries: dict[str, Any]) -> list[Finding]:
        """Fold one ``MetricsRecorded`` and return the findings it raises."""
        if points > self.points:
            self.points, self.progress_at = points, at
            self.flagged.discard(("no_metric_progress", ""))  # moving again: re-arm
        found: list[Finding | None] = []
        for name, summary in sorted(summaries.items()):
            if isinstance(summary, dict):
                found.extend(self._metric(rules, name, summary))
        return [f for f in found if f is not None]

    def _metric(self, rules: MonitorRules, name: str,
                s: dict[str, Any]) -> list[Finding | None]:
        out: list[Finding | None] = []
        last, low, high = _num(s.get("last")), _num(s.get("min")), _num(s.get("max"))
        raw_count = s.get("count")
        count = raw_count if isinstance(raw_count, int) else 0
        previous = list(self.seen.get(name, ()))
        if last is not None:
            self.seen.setdefault(name, deque(maxlen=_WINDOW)).append(last)
        facts = s.get("non_finite")
        if isinstance(facts, dict):
            out.append(self._finding(
                "nan_metric", "error", name, non_finite_reason(name, facts),
                "look for a too-high learning rate, a log of 0 or a division by zero; "
                "the last finite value is in the evidence",
                kind=facts.get("kind"), step=facts.get("first_step"),
                last_finite=facts.get("last_finite")))
        enough = count >= rules.min_points
        if (enough and last is not None and low is not None and low > 0
                and rules.matches(name, rules.loss_metrics)
                and last > rules.loss_spike_factor * low):
            out.append(self._finding(
                "loss_spike", "error", name,
                f"{name} is {last:.6g}, more than {rules.loss_spike_factor:g} x its running "
                f"minimum {low:.6g}: training is diverging",
                "lower the learning rate or clip gradients; resume from the last good "
                "checkpoint", value=last, minimum=low, factor=rules.loss_spike_factor))
        if (enough and high is not None and len(previous) >= rules.min_points - 1 and previous
                and rules.matches(name, rules.grad_norm_metrics)):
            typical = statistics.median(previous)
            if typical > 0 and high > rules.grad_norm_factor * typical:
                out.append(self._finding(
                    "grad_norm_explosion", "warning", name,
                    f"{name} reached {high:.6g}, more than {rules.grad_norm_factor:g} x its "
                    f"typical {typical:.6g}: gradients are exploding",
                    "clip gradients or lower the learning rate", value=high, typical=typical,
                    factor=rules.grad_norm_factor))
        if (enough and last is not None and high is not None and high > 0
                and rules.matches(name, rules.throughput_metrics)
                and last < rules.throughput_drop * high):
            out.append(self._finding(
                "throughput_collapse", "warning", name,
                f"{name} fell to {last:.6g}, under {rules.throughput_drop:g} of its peak "
                f"{high:.6g}", "look for swapping, a data loader stall or a throttled device",
                value=last, peak=high))
        return out

    def tick(self, rules: MonitorRules, now: datetime) -> list[Finding]:
        """The time-based rule: no metric progress for ``rules.stall_seconds``."""
        silent = (now - self.progress_at).total_seconds()
        if silent < rules.stall_seconds:
            return []
        found = self._finding(
            "no_metric_progress", "warning", "",
            f"no new metric point for {silent:.0f} s (threshold {rules.stall_seconds:g} s; "
            f"{self.points} points so far)",
            "check the stage's logs: it may hang, or log metrics less often than the "
            "threshold (raise svs.monitor.stall_minutes)",
            seconds=round(silent, 1), points=self.points)
        return [found] if found is not None else []

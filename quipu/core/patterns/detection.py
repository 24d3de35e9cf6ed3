"""Machine-checkable detections of approved failure patterns, and the pure matchers.

A detection is one of three rules, given as a small JSON object when a pattern is approved:

* ``{"kind": "code", "regex": "torch\\.load\\(", "files": "*.py"}``: the regex is searched in
  every stage source file (``files``, a glob, narrows them; ``ignore_case`` is optional);
* ``{"kind": "statistic", "statistic": "std", "op": "==", "threshold": 0, "output": "x"}``: an
  output statistic compared with a threshold (``output`` narrows it to one output);
* ``{"kind": "metric", "metric": "loss", "op": "is nan"}`` or ``{"kind": "metric", "metric":
  "grad_norm", "op": ">", "threshold": 1e3, "of": "max"}``: a metric summary's ``last``
  (default), ``min`` or ``max`` compared with a threshold, or tested for NaN / infinity.

``check_detection`` validates one and returns it normalised, or raises ``InvalidInput``
(``invalid_detection``) naming every bad field by its path with a hint, before anything is
written. ``match_code``, ``match_statistics`` and ``match_metrics`` are pure: the static
reviewer, the output-statistics checks and the monitor call them with the approved patterns
of the stage (``ApprovedPattern``) and record the findings they return (``pattern_id`` set).
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quipu.core.errors import InvalidInput
from quipu.core.reviews.findings import Finding, Phase
from quipu.core.validation import did_you_mean

__all__ = [
    "COMPARATORS",
    "KINDS",
    "MAX_FILE_CHARS",
    "MAX_REGEX",
    "ApprovedPattern",
    "check_detection",
    "compare",
    "match_code",
    "match_metrics",
    "match_statistics",
]

KINDS = ("code", "statistic", "metric")
BINARY = ("<", "<=", ">", ">=", "==", "!=")
UNARY = ("is nan", "is inf", "is not finite")
COMPARATORS = BINARY + UNARY
"""What a statistic or metric rule may compare with: a threshold, or NaN / infinity."""
OF = ("last", "min", "max")
MAX_REGEX = 500
"""Characters a code regex may have."""
MAX_FILE_CHARS = 2_000_000
"""Files longer than this are not searched: a stage's source is small, and a regex over a
stray data file could take long."""
_LOOKALIKE = {"=>": ">=", "=<": "<=", "=": "==", "<>": "!=", "isnan": "is nan",
              "is_nan": "is nan", "nan": "is nan", "inf": "is inf", "not finite": "is not finite",
              "gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!="}
_NAME = re.compile(r"^[A-Za-z][\w.\-/:]{0,127}$")
_FIELDS = {
    "code": {"kind": True, "regex": True, "files": False, "ignore_case": False},
    "statistic": {"kind": True, "statistic": True, "op": True, "threshold": False,
                  "output": False},
    "metric": {"kind": True, "metric": True, "op": True, "threshold": False, "of": False},
}
EXAMPLES = ('{"kind": "code", "regex": "np\\\\.random\\\\.seed\\\\(", "files": "*.py"}, '
            '{"kind": "statistic", "statistic": "std", "op": "==", "threshold": 0} or '
            '{"kind": "metric", "metric": "loss", "op": "is nan"}')


def _problem(path: str, expected: str, found: Any) -> dict[str, Any]:
    shown = found if isinstance(found, int | float | bool) or found is None else str(found)[:80]
    return {"path": path, "expected": expected, "found": shown}


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def check_detection(raw: Any, *, path: str = "detection") -> dict[str, Any]:
    """``raw`` validated and normalised (keys in a fixed order, defaults filled), or
    ``InvalidInput(code="invalid_detection")`` whose ``details`` list every problem
    (``{path, expected, found}``)."""
    if not isinstance(raw, Mapping):
        _refuse([_problem(path, "an object with a 'kind' (code, statistic or metric)", raw)])
    kind = raw.get("kind")
    if kind not in KINDS:
        hint = did_you_mean(str(kind), KINDS) if isinstance(kind, str) else ""
        _refuse([_problem(f"{path}.kind", f"one of {', '.join(KINDS)}", kind)], hint)
    fields = _FIELDS[kind]
    problems: list[dict[str, Any]] = []
    hints: list[str] = []
    for key in raw:
        if key not in fields:
            problems.append(_problem(f"{path}.{key}", f"no such field for a {kind} rule", key))
            hints.append(did_you_mean(str(key), fields))
    for key, required in fields.items():
        if required and key not in raw:
            problems.append(_problem(f"{path}.{key}", "a value (required)", None))
    out: dict[str, Any] = {"kind": kind}
    if kind == "code":
        out.update(_check_code(raw, path, problems))
    else:
        out.update(_check_rule(raw, kind, path, problems, hints))
    if problems:
        _refuse(problems, "".join(hints))
    return out


def _check_code(raw: Mapping[str, Any], path: str,
                problems: list[dict[str, Any]]) -> dict[str, Any]:
    regex, files = raw.get("regex"), raw.get("files")
    ignore_case = raw.get("ignore_case", False)
    out: dict[str, Any] = {}
    if "regex" in raw:
        if not isinstance(regex, str) or not regex or len(regex) > MAX_REGEX:
            problems.append(_problem(f"{path}.regex",
                                     f"a regular expression of 1-{MAX_REGEX} characters", regex))
        else:
            try:
                compiled = re.compile(regex, re.IGNORECASE if ignore_case is True else 0)
            except re.error as exc:
                problems.append(_problem(f"{path}.regex",
                                         f"a regular expression that compiles ({exc})", regex))
            else:
                if compiled.search("") is not None:
                    problems.append(_problem(
                        f"{path}.regex", "a regex that does not match the empty string (it "
                        "would flag every file)", regex))
    if files is not None and (not isinstance(files, str) or not files or len(files) > 200):
        problems.append(_problem(f"{path}.files", "a glob such as '*.py' or 'modules/*.py'",
                                 files))
    if not isinstance(ignore_case, bool):
        problems.append(_problem(f"{path}.ignore_case", "true or false", ignore_case))
    out["regex"] = regex
    if files is not None:
        out["files"] = files
    if ignore_case is True:
        out["ignore_case"] = True
    return out


def _check_rule(raw: Mapping[str, Any], kind: str, path: str, problems: list[dict[str, Any]],
                hints: list[str]) -> dict[str, Any]:
    name_key = "statistic" if kind == "statistic" else "metric"
    name, op, threshold = raw.get(name_key), raw.get("op"), raw.get("threshold")
    out: dict[str, Any] = {}
    if name_key in raw and (not isinstance(name, str) or not _NAME.match(name)):
        problems.append(_problem(f"{path}.{name_key}", f"a {name_key} name such as "
                                 f"{'std' if kind == 'statistic' else 'loss'}", name))
    out[name_key] = name
    if "op" in raw:
        if op not in COMPARATORS:
            problems.append(_problem(f"{path}.op", f"one of {', '.join(COMPARATORS)}", op))
            if isinstance(op, str):
                near = _LOOKALIKE.get(op.strip().lower())
                hints.append(f"did you mean {near!r}? " if near else did_you_mean(op, COMPARATORS))
        elif op in BINARY and not _number(threshold):
            problems.append(_problem(f"{path}.threshold",
                                     f"a finite number to compare with ({op!r} needs one)",
                                     threshold))
        elif op in UNARY and threshold is not None:
            problems.append(_problem(f"{path}.threshold", f"no threshold ({op!r} takes none)",
                                     threshold))
    out["op"] = op
    if threshold is not None:
        out["threshold"] = float(threshold) if _number(threshold) else threshold
    if kind == "statistic":
        output = raw.get("output")
        if output is not None and (not isinstance(output, str) or not _NAME.match(output)):
            problems.append(_problem(f"{path}.output", "an output name", output))
        if output is not None:
            out["output"] = output
    else:
        of = raw.get("of", "last")
        if of not in OF:
            problems.append(_problem(f"{path}.of", f"one of {', '.join(OF)}", of))
        out["of"] = of
    return out


def _refuse(problems: list[dict[str, Any]], hint: str = "") -> Any:
    listed = "; ".join(f"{p['path']}: expected {p['expected']}, found {p['found']!r}"
                       for p in problems)
    raise InvalidInput(f"invalid detection rule: {listed}", code="invalid_detection",
                       hint=f"{hint}a detection is {EXAMPLES}; nothing was written",
                       details=problems)


def compare(value: float, op: str, threshold: float | None) -> bool:
    """Whether ``value op threshold`` holds (``is nan`` / ``is inf`` / ``is not finite`` take
    no threshold). A NaN value satisfies no numeric comparison."""
    if op == "is nan":
        return math.isnan(value)
    if op == "is inf":
        return math.isinf(value)
    if op == "is not finite":
        return not math.isfinite(value)
    if threshold is None or math.isnan(value):
        return False
    return {"<": value < threshold, "<=": value <= threshold, ">": value > threshold,
            ">=": value >= threshold, "==": value == threshold,
            "!=": value != threshold}[op]


@dataclass(frozen=True)
class ApprovedPattern:
    """An approved failure pattern as the reviewers, the monitor and the llm context use it.

    ``stage`` None applies to every stage; ``detection`` None means it is context only (the
    llm review reads it; nothing matches it mechanically).
    """

    pattern_id: str
    stage: str | None
    severity: str
    signal: str
    symptom: str
    root_cause: str | None = None
    prevention: str | None = None
    detection: dict[str, Any] | None = None

    def applies_to(self, stage: str | None) -> bool:
        """Whether the pattern is about ``stage``."""
        return self.stage is None or stage is None or self.stage == stage

    def context(self) -> dict[str, Any]:
        """What an llm review is told about the pattern (no empty fields)."""
        out = {"pattern_id": self.pattern_id, "stage": self.stage, "severity": self.severity,
               "symptom": self.symptom, "root_cause": self.root_cause,
               "prevention": self.prevention, "detection": self.detection}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_context(cls, item: Mapping[str, Any]) -> ApprovedPattern:
        """Back from :meth:`context` (what a review context carries)."""
        return cls(pattern_id=str(item["pattern_id"]), stage=item.get("stage"),
                   severity=str(item.get("severity", "warning")),
                   signal=str(item.get("signal", "failure_pattern")),
                   symptom=str(item.get("symptom", "")), root_cause=item.get("root_cause"),
                   prevention=item.get("prevention"), detection=item.get("detection"))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ApprovedPattern:
        """From a patterns read-model row (``patterns_view``)."""
        return cls(pattern_id=str(row["pattern_id"]), stage=row.get("stage"),
                   severity=str(row["severity"]), signal=str(row["signal"]),
                   symptom=str(row["symptom"]), root_cause=row.get("root_cause"),
                   prevention=row.get("prevention"), detection=row.get("detection"))


def _rules(patterns: Iterable[ApprovedPattern], kind: str,
           stage: str | None) -> list[tuple[ApprovedPattern, dict[str, Any]]]:
    return [(p, p.detection) for p in patterns
            if p.detection is not None and p.detection.get("kind") == kind
            and p.applies_to(stage)]


def _finding(p: ApprovedPattern, *, phase: Phase, source: str, stage: str | None,
             what: str, **fields: Any) -> Finding:
    severity = p.severity if p.severity in ("info", "warning", "error") else "warning"
    return Finding(signal="failure_pattern", severity=severity,
                   message=f"{what} matches failure pattern {p.pattern_id}: {p.symptom}",
                   phase=phase, source=source, stage=stage, fix=p.prevention,
                   pattern_id=p.pattern_id, **fields)


@functools.lru_cache(maxsize=256)
def _compiled(regex: str, ignore_case: bool) -> re.Pattern[str]:
    return re.compile(regex, re.IGNORECASE if ignore_case else 0)


def match_code(patterns: Iterable[ApprovedPattern], stage: str | None,
               files: Mapping[str, str | bytes], *, source: str = "static",
               phase: Phase = "pre_run") -> list[Finding]:
    """Findings for every code-regex pattern of ``stage`` that matches a file.

    ``files`` maps each stage source file (its path as the finding should name it) to its
    text; one finding per pattern and file, located at the first match's line. Files past
    ``MAX_FILE_CHARS`` are skipped."""
    found: list[Finding] = []
    rules = _rules(patterns, "code", stage)
    for path in sorted(files):
        raw = files[path]
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if len(text) > MAX_FILE_CHARS:
            continue
        for p, rule in rules:
            glob = rule.get("files")
            if glob and not (fnmatch.fnmatch(path, glob)
                             or fnmatch.fnmatch(path.rsplit("/", 1)[-1], glob)):
                continue
            m = _compiled(rule["regex"], bool(rule.get("ignore_case"))).search(text)
            if m is None:
                continue
            line = text.count("\n", 0, m.start()) + 1
            found.append(_finding(p, phase=phase, source=source, stage=stage,
                                  what=f"{path}:{line}", file=path, line=line,
                                  evidence={"match": m.group(0)[:80]}))
    return found


def _value(raw: Any) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return float(raw)


def match_statistics(patterns: Iterable[ApprovedPattern], stage: str | None, output: str,
                     stats: Mapping[str, Any], *, source: str = "statistics") -> list[Finding]:
    """Findings for every statistic-rule pattern of ``stage`` that ``stats`` (one output's
    statistics: name -> number) satisfy. A statistic that is missing or not a number is not
    compared."""
    found = []
    for p, rule in _rules(patterns, "statistic", stage):
        if rule.get("output") not in (None, output):
            continue
        value = _value(stats.get(rule["statistic"]))
        if value is None or not compare(value, rule["op"], rule.get("threshold")):
            continue
        found.append(_finding(p, phase="statistics", source=source, stage=stage,
                              what=f"output {output}: {rule['statistic']} {_show(value)}",
                              output=output, evidence=_evidence(rule, rule["statistic"],
                                                                value)))
    return found


def match_metrics(patterns: Iterable[ApprovedPattern], stage: str | None,
                  summaries: Mapping[str, Any], *, source: str = "monitor",
                  phase: Phase = "during_run") -> list[Finding]:
    """Findings for every metric-rule pattern of ``stage`` that the metric ``summaries`` satisfy.

    ``summaries`` is ``MetricsRecorded.summaries`` (name -> {min, max, last, ..., non_finite})
    or simply name -> value. A summary's ``non_finite`` facts count for ``is nan`` / ``is inf``
    / ``is not finite`` even when the latest point is finite again."""
    found = []
    for p, rule in _rules(patterns, "metric", stage):
        summary = summaries.get(rule["metric"])
        if summary is None:
            continue
        op = rule["op"]
        if isinstance(summary, Mapping):
            value = _value(summary.get(rule.get("of", "last")))
            bad = summary.get("non_finite") or {}
            kind = str(bad.get("kind", "")) if isinstance(bad, Mapping) else ""
            if op in UNARY and kind and compare(
                    float("nan") if "nan" in kind else float("inf"), op, None):
                value = float("nan") if "nan" in kind else float("inf")
        else:
            value = _value(summary)
        if value is None or not compare(value, op, rule.get("threshold")):
            continue
        found.append(_finding(p, phase=phase, source=source, stage=stage,
                              what=f"metric {rule['metric']} {_show(value)}",
                              evidence=_evidence(rule, rule["metric"], value)))
    return found


def _show(value: float) -> str:
    return "is nan" if math.isnan(value) else f"= {value:.6g}"


def _evidence(rule: Mapping[str, Any], name: str, value: float) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "op": rule["op"],
                           "value": value if math.isfinite(value) else str(value)}
    if rule.get("threshold") is not None:
        out["threshold"] = rule["threshold"]
    return out


def approved_for(patterns: Sequence[ApprovedPattern], stage: str | None) -> list[ApprovedPattern]:
    """The patterns that apply to ``stage``, in the given order."""
    return [p for p in patterns if p.applies_to(stage)]

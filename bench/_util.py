"""Small helpers shared by the benchmarks: results, the table, timing and the machine."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "SCRATCH",
    "FixedClock",
    "Result",
    "machine",
    "percentile",
    "raw_wal_connection",
    "render_table",
    "report_p95",
    "scratch_dir",
]

SCRATCH = Path(os.environ.get("QUIPU_BENCH_DIR", "/tmp/quipu-bench"))
"""Where generated logs are cached and scratch databases live (never inside the repo)."""

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class Result:
    """One measured figure next to the baseline measured in the same run.

    ``higher_is_better`` decides how the ratio reads: for throughput it is quipu / baseline
    (shown as a percentage of raw), for latency it is quipu / baseline as "N x slower".
    ``target`` is the stated goal as text; ``passed`` is None when the figure has no target.
    """

    name: str
    value: float
    unit: str
    baseline: float
    baseline_name: str
    higher_is_better: bool
    target: str = ""
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """quipu / baseline (0 when the baseline is 0)."""
        return self.value / self.baseline if self.baseline else 0.0

    def ratio_text(self) -> str:
        """The ratio as people read it."""
        if self.higher_is_better:
            return f"{self.ratio * 100:.1f}% of raw"
        return f"{self.ratio:.1f}x raw"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form, with the ratio included."""
        data = asdict(self)
        data["ratio"] = round(self.ratio, 4)
        return data


def _fmt(value: float, unit: str) -> str:
    if unit == "events/s":
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"
    return f"{value:g} {unit}"


def render_table(results: list[Result]) -> str:
    """A plain-text table: figure, quipu, baseline, ratio, target, PASS/MISS."""
    header = ("figure", "quipu", "baseline (raw sqlite3)", "ratio", "target", "")
    rows = [header]
    for r in results:
        verdict = "" if r.passed is None else ("PASS" if r.passed else "MISS")
        rows.append((r.name, _fmt(r.value, r.unit), _fmt(r.baseline, r.unit), r.ratio_text(),
                     r.target or "-", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i == 0 or i >= 4 else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def percentile(samples: list[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation between closest ranks."""
    if not samples:
        return 0.0
    if len(samples) == 1:
        return samples[0]
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    if p <= 0:
        return min(samples)
    if p >= 100:
        return max(samples)
    return cuts[int(p) - 1]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    disk = "?"
    try:
        usage = shutil.disk_usage(SCRATCH if SCRATCH.exists() else Path("/tmp"))
        disk = f"{usage.total / 2**30:.0f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "scratch_dir": str(SCRATCH),
        "scratch_disk": disk,
        # Other work on the machine slows both sides of a ratio, but not always equally.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def report_p95(bench: str, figures: list[dict[str, Any]], args: argparse.Namespace,
               elapsed: float, *, header: str = "", baseline_label: str = "baseline",
               extra: dict[str, Any] | None = None) -> None:
    """Print p95 figures beside their baselines (``name``, ``value``, ``baseline``, ``ratio``,
    ``passed``, ``target``, optionally ``answer_chars``): on stdout, or on stderr with
    ``--json``, which then writes the machine, the arguments, ``extra`` and the figures as JSON
    on stdout. ``header`` is appended to the first line."""
    out = sys.stderr if args.json else sys.stdout
    m = machine()
    print(f"\nquipu {bench}: {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
          f"load {m['load_average_1m']}, {elapsed:.0f} s{header}", file=out)
    for f in figures:
        answer = (f"; answer {f['answer_chars']:,} characters" if "answer_chars" in f else "")
        print(f"  {f['name']}: p95 {f['value']:.2f} ms vs {baseline_label} "
              f"{f['baseline']:.3f} ms ({f['ratio']:.0f}x) {'PASS' if f['passed'] else 'MISS'} "
              f"({f['target']}){answer}", file=out)
    if args.json:
        json.dump({"machine": m, "args": vars(args), "seconds": round(elapsed, 1),
                   **(extra or {}), "results": figures}, sys.stdout, indent=2)
        print()


class FixedClock:
    """A deterministic clock: each call is one second after the previous one."""

    def __init__(self, start: datetime = T0) -> None:
        self._t = start

    def now(self) -> datetime:
        """The next tick."""
        self._t += timedelta(seconds=1)
        return self._t


def raw_wal_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    """A plain sqlite3 connection in WAL mode with the given synchronous level, autocommit."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under SCRATCH, removed afterwards."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

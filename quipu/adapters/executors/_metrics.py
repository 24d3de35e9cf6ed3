"""Metric ingestion: ``.quipu/metrics.jsonl`` -> a Parquet series blob and per-metric summaries.

The SDK appends whole lines ``{"name", "value", "step", "ts"}``; a NaN or infinite value is
written ``"value": null, "non_finite": "nan" | "inf" | "-inf"`` (JSON has no NaN). A trailing
line without its newline is still being written and is read on the next pass. The whole series
is kept per run (the file is re-read from the start after an executor restart), written as one
Parquet table (columns ``name``, ``step``, ``value``, ``ts``; Parquet holds NaN and infinities
as they are) and summarised per metric.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from quipu.core.ports import BlobStore

__all__ = ["NON_FINITE", "TREND_WINDOW", "MetricSeries", "summarise", "trend"]

TREND_WINDOW = 20
"""How many of a metric's latest points its trend is fitted on."""
FLAT_FRACTION = 0.01
"""A fitted change smaller than this fraction of the metric's whole range reads as flat."""
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
"""How a line names a non-finite value, and the value."""



@cache
def _arrow() -> Any:
    """pyarrow and the series' schema and reader options, imported on first use: the engine
    (``quipu serve``) should not pay for pyarrow until a stage has metrics to ingest."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    schema = pa.schema([("name", pa.string()), ("step", pa.int64()), ("value", pa.float64()),
                        ("ts", pa.float64())])
    lines = schema.append(pa.field("non_finite", pa.string()))  # only in the JSON lines
    return SimpleNamespace(
        pa=pa, pc=pc, pajson=pajson, pq=pq, schema=schema,
        parse=pajson.ParseOptions(explicit_schema=lines, unexpected_field_behavior="error"),
        # One thread: the executor already runs stages beside it, and threads made parsing
        # slower here.
        read=pajson.ReadOptions(use_threads=False, block_size=8 << 20))


def trend(xs: list[float], ys: list[float], value_range: float) -> str:
    """"up", "down" or "flat": the least-squares slope over the points, times their span."""
    n = len(xs)
    if n < 2 or value_range <= 0:
        return "flat"
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return "flat"
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    change = slope * (max(xs) - min(xs))
    if abs(change) <= FLAT_FRACTION * value_range:
        return "flat"
    return "up" if change > 0 else "down"


def _kind(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def summarise(points: list[tuple[int | None, float]]) -> dict[str, Any]:
    """{min, max, last, count, trend, last_step[, non_finite]} of one metric's points in
    logging order.

    ``count`` counts every point; ``min``, ``max`` and ``trend`` are over the finite ones
    (``min``/``max`` None when there are none); ``last`` is the latest point's value, None when
    that one is not finite. A metric with NaN or infinite points also gets ``non_finite``:
    ``{count, kind, first_step, first_index, last_finite}``, ``kind`` being the first such
    point's ("nan", "inf", "-inf"), ``first_index`` its place among the metric's points and
    ``last_finite`` the latest finite value (None if there was none). Every number in it is
    finite, so it travels as JSON.
    """
    finite = [(i, s, v) for i, (s, v) in enumerate(points) if math.isfinite(v)]
    last_step, last = points[-1]
    out: dict[str, Any] = {"min": None, "max": None,
                           "last": last if math.isfinite(last) else None,
                           "count": len(points), "trend": "flat", "last_step": last_step}
    if finite:
        values = [v for _, _, v in finite]
        low, high = min(values), max(values)
        window = finite[-TREND_WINDOW:]
        xs = [float(s) if s is not None else float(i) for i, s, _ in window]
        out.update(min=low, max=high, trend=trend(xs, [v for _, _, v in window], high - low))
    if len(finite) < len(points):
        index, (step, value) = next((i, p) for i, p in enumerate(points)
                                    if not math.isfinite(p[1]))
        out["non_finite"] = {"count": len(points) - len(finite), "kind": _kind(value),
                             "first_step": step, "first_index": index,
                             "last_finite": finite[-1][2] if finite else None}
    return out


@dataclass
class MetricSeries:
    """One run's metric points read so far from its ``metrics.jsonl``."""

    path: Path
    offset: int = 0
    names: list[str] = field(default_factory=list)
    steps: list[int | None] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    skipped: int = 0

    @property
    def points(self) -> int:
        """How many points were read."""
        return len(self.values)

    def read_new(self) -> int:
        """Parse the complete lines appended since the last call; return how many points."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return 0
        complete, newline, _partial = data.rpartition(b"\n")
        if not newline:
            return 0
        self.offset += len(complete) + 1
        before = self.points
        if not self._add_block(complete + b"\n"):
            for line in complete.split(b"\n"):
                if line.strip():
                    self._add(line)
        return self.points - before

    def _add_block(self, block: bytes) -> bool:
        """Parse a block of lines in one pass (Arrow's JSON reader); False if any line is odd.

        A block the SDK wrote parses here; anything else (a hand-written or damaged line, a
        non-finite value) falls back to the line-by-line path, which skips just the bad lines.
        """
        arrow = _arrow()
        try:
            table = arrow.pajson.read_json(io.BytesIO(block), read_options=arrow.read,
                                           parse_options=arrow.parse)
        except (arrow.pa.ArrowInvalid, arrow.pa.ArrowTypeError, ValueError):
            return False
        names, values = table.column("name"), table.column("value")
        if names.null_count or table.column("ts").null_count:
            return False
        if values.null_count:
            # Non-finite points: each null must name its kind, and only a null may.
            kinds = table.column("non_finite").to_pylist()
            listed = values.to_pylist()
            if any((v is None) != (k in NON_FINITE) for v, k in zip(listed, kinds, strict=True)):
                return False
            decoded = [NON_FINITE[k] if v is None else v
                       for v, k in zip(listed, kinds, strict=True)]
        elif not arrow.pc.all(arrow.pc.is_finite(values)).as_py():
            return False  # a NaN token written by hand: the line-by-line path decides
        else:
            decoded = values.to_pylist()
        self.names.extend(names.to_pylist())
        self.steps.extend(table.column("step").to_pylist())
        self.values.extend(decoded)
        self.stamps.extend(table.column("ts").to_pylist())
        return True

    def _add(self, line: bytes) -> None:
        try:
            record = json.loads(line)
            name = record["name"]
            raw = record["value"]
            # A non-finite point as the SDK writes it (null + kind) or as a NaN token by hand.
            value = (NON_FINITE[record["non_finite"]] if raw is None else float(raw))
            step = record.get("step")
            ts = float(record.get("ts") or 0.0)
        except (ValueError, TypeError, KeyError):
            self.skipped += 1
            return
        if (not isinstance(name, str) or isinstance(raw, bool | str)
                or not (step is None or (isinstance(step, int) and not isinstance(step, bool)))):
            self.skipped += 1
            return
        self.names.append(name)
        self.steps.append(step)
        self.values.append(value)
        self.stamps.append(ts)

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Per-metric summaries, by name."""
        per: dict[str, list[tuple[int | None, float]]] = {}
        for name, step, value in zip(self.names, self.steps, self.values, strict=True):
            per.setdefault(name, []).append((step, value))
        return {name: summarise(points) for name, points in sorted(per.items())}

    def to_parquet(self) -> bytes:
        """The whole series as Parquet bytes."""
        arrow = _arrow()
        table = arrow.pa.table({"name": self.names, "step": self.steps, "value": self.values,
                                "ts": self.stamps}, schema=arrow.schema)
        sink = io.BytesIO()
        arrow.pq.write_table(table, sink)
        return sink.getvalue()

    def store(self, blobs: BlobStore) -> str | None:
        """Store the series as a blob; None when there are no points."""
        if not self.points:
            return None
        return blobs.put_bytes(self.to_parquet())

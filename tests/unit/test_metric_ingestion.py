"""Metric ingestion reads what the SDK wrote, fast, and skips only the lines that are bad."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from quipu.adapters.executors._metrics import MetricSeries, summarise


def _line(name: str, value: float, step: int | None, ts: float) -> str:
    """A line as the SDK writes it (a non-finite value as null plus its kind)."""
    if math.isfinite(value):
        return json.dumps({"name": name, "value": value, "step": step, "ts": ts})
    kind = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps({"name": name, "value": None, "non_finite": kind, "step": step, "ts": ts})


def test_a_partial_last_line_waits_for_the_next_pass(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line("loss", 0.5, 0, 1.0) + "\n" + '{"name":"loss","va')
    series = MetricSeries(path)
    assert series.read_new() == 1
    with path.open("a") as f:
        f.write('lue":0.25,"step":1,"ts":2.0}\n')
    assert series.read_new() == 1
    assert series.values == [0.5, 0.25] and series.steps == [0, 1]


def test_bad_lines_are_skipped_and_the_good_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([_line("a", 1.5, None, 1.0), '{"name":"b","value":"NaN"}',
                               "not json", _line("c", 2.0, 3, 2.0),
                               '{"name":"d","value":1.0,"step":true,"ts":1.0}']) + "\n")
    series = MetricSeries(path)
    assert series.read_new() == 2
    assert (series.names, series.steps, series.skipped) == (["a", "c"], [None, 3], 3)


points = st.lists(st.tuples(st.sampled_from(["loss", "val/acc", "lr"]),
                            st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                      st.sampled_from([math.nan, math.inf, -math.inf])),
                            st.one_of(st.none(), st.integers(0, 2**40)),
                            st.floats(0, 2e9)), max_size=50)


@settings(max_examples=40, deadline=None)
@given(points)
def test_the_block_reader_and_the_line_reader_agree(
        rows: list[tuple[str, float, int | None, float]]) -> None:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "metrics.jsonl"
    path.write_text("".join(_line(*r) + "\n" for r in rows))
    fast = MetricSeries(path)
    fast.read_new()
    slow = MetricSeries(path)
    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            slow._add(line)
    assert (fast.names, fast.steps, fast.stamps) == (slow.names, slow.steps, slow.stamps)
    assert list(map(repr, fast.values)) == list(map(repr, slow.values))
    assert fast.points == len(rows)  # a non-finite point is kept, not skipped


def test_non_finite_points_are_kept_and_survive_the_parquet_series(tmp_path: Path) -> None:
    """Regression: NaN and infinite points vanished, so a diverged metric looked fine."""
    import io

    import pyarrow.parquet as pq

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(_line("acc", v, s, 1.0) + "\n"
                            for s, v in enumerate([0.5, 1.0, math.inf, math.nan])))
    series = MetricSeries(path)
    assert series.read_new() == 4
    table = pq.read_table(io.BytesIO(series.to_parquet()))
    assert list(map(repr, table.column("value").to_pylist())) == ["0.5", "1.0", "inf", "nan"]
    acc = series.summaries()["acc"]
    assert (acc["min"], acc["max"], acc["last"], acc["count"]) == (0.5, 1.0, None, 4)
    assert acc["non_finite"] == {"count": 2, "kind": "inf", "first_step": 2, "first_index": 2,
                                 "last_finite": 1.0}
    json.dumps(acc, allow_nan=False)  # every number in it travels as JSON


finite_or_not = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32),
                          st.sampled_from([math.nan, math.inf, -math.inf]))


@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 1000)), finite_or_not),
                min_size=1, max_size=60))
def test_a_summary_folds_non_finite_points_into_facts(
        points: list[tuple[int | None, float]]) -> None:
    summary = summarise(points)
    finite = [v for _, v in points if math.isfinite(v)]
    odd = [(i, s, v) for i, (s, v) in enumerate(points) if not math.isfinite(v)]

    json.dumps(summary, allow_nan=False)
    assert summary["count"] == len(points)
    assert summary["last_step"] == points[-1][0]
    assert summary["last"] == (points[-1][1] if math.isfinite(points[-1][1]) else None)
    assert (summary["min"], summary["max"]) == (
        (min(finite), max(finite)) if finite else (None, None))
    if not odd:
        assert "non_finite" not in summary
        return
    index, step, value = odd[0]
    facts = summary["non_finite"]
    assert facts["count"] == len(odd)
    assert (facts["first_index"], facts["first_step"]) == (index, step)
    assert float(facts["kind"]) == value or (math.isnan(value) and facts["kind"] == "nan")
    assert facts["last_finite"] == (finite[-1] if finite else None)

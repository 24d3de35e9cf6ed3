"""Metric ingestion reads what the SDK wrote, fast, and skips only the lines that are bad."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from quipu.adapters.executors._metrics import MetricSeries


def _line(name: str, value: float, step: int | None, ts: float) -> str:
    return json.dumps({"name": name, "value": value, "step": step, "ts": ts})


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
                            st.floats(allow_nan=False, allow_infinity=False, width=64),
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
    assert (fast.names, fast.steps, fast.values, fast.stamps) == (
        slow.names, slow.steps, slow.values, slow.stamps)

"""Thinning a metric's curve for get_metric_history: the shape survives, the size is bounded."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from quipu.app.run_reads import MIN_POINTS, downsample

values = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()),
                  max_size=400)


@given(values, st.integers(min_value=MIN_POINTS, max_value=120))
def test_the_thinned_curve_keeps_its_ends_and_extremes_within_the_budget(
        series: list[float | None], max_points: int) -> None:
    kept = downsample(series, max_points)

    assert len(kept) <= max_points
    assert kept == sorted(set(kept)) and all(0 <= i < len(series) for i in kept)
    if not series:
        return
    assert kept[0] == 0 and kept[-1] == len(series) - 1
    finite = [v for v in series if v is not None and math.isfinite(v)]
    shown = [series[i] for i in kept]
    if finite:
        assert min(finite) in shown and max(finite) in shown
    if len(finite) < len(series):
        first_odd = next(i for i, v in enumerate(series) if v is None or not math.isfinite(v))
        assert first_odd in kept


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=60),
       st.integers(min_value=60, max_value=100))
def test_a_series_within_the_budget_is_kept_whole(series: list[float], max_points: int) -> None:
    assert downsample(series, max_points) == list(range(len(series)))


def test_the_budget_is_used_for_evenly_spaced_points() -> None:
    kept = downsample([float(i % 7) for i in range(1000)], 50)
    assert 45 <= len(kept) <= 50
    gaps = [b - a for a, b in itertools.pairwise(kept)]
    assert max(gaps) <= 2 * 1000 / 45

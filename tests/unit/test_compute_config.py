"""Properties of the configuration values profiles use: sizes, durations, ``compute``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quipu.app.config import parse_duration, parse_memory
from quipu.core.errors import InvalidInput
from quipu.core.runs.compute import requested_profile

UNITS = {"": 1, "m": 1, "M": 1, "g": 1024, "G": 1024, "t": 1024 * 1024}


@given(st.integers(min_value=4, max_value=10**6), st.sampled_from(sorted(UNITS)),
       st.sampled_from(["", "b", "ib", "iB", "B"]))
def test_a_memory_size_is_its_number_times_its_unit_in_mib(n: int, unit: str,
                                                           suffix: str) -> None:
    text = f"{n}{unit}{suffix if unit else ''}"
    assert parse_memory(text) == n * UNITS[unit]


@given(st.one_of(st.text(alphabet="xyz -!", min_size=1), st.just("-5g"), st.just("3"),
                 st.booleans()))
def test_anything_else_is_not_a_memory_size(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_memory(value)


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["", "s", "m", "h", "d"]))
def test_a_duration_is_its_number_times_its_unit(n: int, unit: str) -> None:
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{n}{unit}") == n * factor
    assert parse_duration(n) == n


@given(st.one_of(st.just(0), st.just("0s"), st.just("soon"), st.just("-1h"),
                 st.booleans()))
def test_zero_negative_or_unreadable_durations_are_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), max_size=3))
def test_compute_takes_only_a_profile_name(extra: dict[str, int]) -> None:
    config = {"compute": {"profile": "gpu", **extra}}
    if set(extra) - {"profile"}:
        with pytest.raises(InvalidInput) as refused:
            requested_profile(config)
        assert refused.value.code == "invalid_compute"
    elif "profile" in extra:
        with pytest.raises(InvalidInput):
            requested_profile(config)  # an integer is not a profile's name
    else:
        assert requested_profile(config) == "gpu"


def test_no_compute_names_no_profile() -> None:
    assert requested_profile({"lr": 0.1}) is None
    with pytest.raises(InvalidInput):
        requested_profile({"compute": "gpu"})

"""The one shape every SVS checker reports in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from quipu.core.reviews.findings import MAX_TEXT, Finding, severity_rank, worst


def make(**fields: object) -> Finding:
    base: dict[str, object] = {"signal": "zero_variance", "severity": "warning",
                               "message": "output 'x' is constant", "phase": "statistics",
                               "source": "statistics"}
    return Finding.model_validate({**base, **fields})


def test_a_long_message_or_fix_is_cut_to_the_cap() -> None:
    found = make(message="m" * 5000, fix="f" * 5000)
    assert len(found.message) == MAX_TEXT and found.message.endswith("…")
    assert found.fix is not None and len(found.fix) == MAX_TEXT


@pytest.mark.parametrize("bad", [
    {"signal": "Zero Variance"}, {"severity": "fatal"}, {"phase": "later"},
    {"message": ""}, {"line": 0}, {"surprise": 1}])
def test_a_malformed_finding_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        make(**bad)


def test_as_dict_leaves_out_what_is_unset_and_round_trips() -> None:
    found = make(stage="train", line=3)
    stored = found.as_dict()
    assert "file" not in stored and "evidence" not in stored and stored["line"] == 3
    assert Finding.model_validate(stored) == found


@given(st.lists(st.sampled_from(["info", "warning", "error"]), max_size=6))
def test_worst_is_the_highest_severity(severities: list[str]) -> None:
    findings = [make(severity=s) for s in severities]
    expected = max(severities, key=severity_rank) if severities else None
    assert worst(findings) == expected

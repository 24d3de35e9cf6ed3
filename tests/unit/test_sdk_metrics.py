"""Metrics: what is accepted, what is skipped with a warning, and when points reach the file."""

from __future__ import annotations

import json
import math
import re
import struct
import threading
import time
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import wait_until

from quipu import sdk
from quipu.sdk import _metrics, testing

# Every NaN bit pattern: any sign, the all-ones exponent, any non-zero mantissa.
NAN_PAYLOADS = st.builds(
    lambda sign, mantissa: struct.unpack("<d", struct.pack("<Q", sign << 63 | 0x7FF << 52
                                                           | mantissa))[0],
    st.integers(0, 1), st.integers(1, 2**52 - 1),
)
SPEC_NAME = re.compile(r"^[A-Za-z][\w.\-/:]{0,255}$")


def metrics_file(run: testing.StageRun) -> Path:
    return run.quipu_dir / "metrics.jsonl"


class TestNames:
    @pytest.mark.parametrize("name", ["loss", "val/loss", "lr:group-0", "a.b_c", "A" * 256])
    def test_well_formed_names_are_accepted(self, name: str, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric(name, 1.0)
        assert run.metric(name) == [1.0]

    @pytest.mark.parametrize(
        "name", ["", "1loss", "_loss", "val loss", "loss\n", "A" * 257, "loss!", "lössé"]
    )
    def test_malformed_names_raise_value_error(self, name: str, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path), pytest.raises(ValueError, match="metric name"):
            sdk.log_metric(name, 1.0)

    def test_a_name_that_is_not_a_string_raises(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path), pytest.raises(ValueError):
            sdk.log_metric(3, 1.0)  # type: ignore[arg-type]

    def test_log_metrics_records_nothing_when_one_name_is_bad(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run, pytest.raises(ValueError):
            sdk.log_metrics({"loss": 1.0, "bad name": 2.0})
        assert run.metrics == []

    def test_past_ten_thousand_names_new_names_are_skipped(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            for i in range(_metrics.MAX_METRIC_NAMES):
                sdk.log_metric(f"m{i}", 1.0)
            with pytest.warns(sdk.SdkWarning, match="10000 metric names"):
                sdk.log_metric("one_too_many", 1.0)
            sdk.log_metric("m0", 2.0)  # a known name still records
        assert len({point.name for point in run.metrics}) == _metrics.MAX_METRIC_NAMES
        assert run.metric("m0") == [1.0, 2.0]


class TestValues:
    @pytest.mark.parametrize(
        "value", [1, 2.5, -0.0, np.float32(0.25), np.int64(7), np.float64(1e300),
                  np.array(3.5), Fraction(1, 4)],
        ids=["int", "float", "neg-zero", "np.float32", "np.int64", "big", "0-d array", "fraction"],
    )
    def test_real_numbers_are_recorded_as_floats(self, value: object, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("x", value)  # type: ignore[arg-type]
        assert run.metric("x") == [float(value)]  # type: ignore[arg-type]
        assert isinstance(run.metric("x")[0], float)

    @pytest.mark.parametrize(
        "value", [True, np.bool_(False), "0.5", None, [1.0], 10**400, np.array([1.0, 2.0])],
        ids=["bool", "np.bool", "str", "none", "list", "huge-int", "array"],
    )
    def test_non_numbers_are_skipped_with_a_warning_and_a_line_in_the_file(
        self, value: object, tmp_path: Path
    ) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            with pytest.warns(sdk.SdkWarning, match="'x' point skipped"):
                sdk.log_metric("x", value)  # type: ignore[arg-type]
            sdk.log_metric("x", 1.0)
        assert run.metric("x") == [1.0]
        assert [w["kind"] for w in run.warnings] == ["metric_rejected"]

    @pytest.mark.parametrize(
        ("value", "kind"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"),
                            (np.float32("nan"), "nan"), (np.float64("-inf"), "-inf")],
        ids=["nan", "inf", "-inf", "np-nan", "np-inf"])
    def test_a_non_finite_value_is_recorded_with_its_kind_and_a_warning(
            self, value: object, kind: str, tmp_path: Path) -> None:
        """Regression: NaN and infinities were dropped, so a diverged run looked fine."""
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("x", 1.0, step=0)
            with pytest.warns(sdk.SdkWarning, match="recorded as a non-finite point"):
                sdk.log_metric("x", value, step=1)  # type: ignore[arg-type]
        lines = [json.loads(line) for line in
                 (run.quipu_dir / "metrics.jsonl").read_text().splitlines()]
        assert lines[1]["value"] is None and lines[1]["non_finite"] == kind
        assert lines[1]["step"] == 1
        assert [repr(v) for v in run.metric("x")] == ["1.0", repr(float(kind))]
        assert [w["kind"] for w in run.warnings] == ["metric_non_finite"]

    def test_the_python_warning_points_at_the_stage_code(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path), pytest.warns(sdk.SdkWarning) as caught:
            sdk.log_metric("x", math.nan)
        assert caught[0].filename == __file__


class TestSteps:
    def test_a_metric_logged_with_steps_keeps_them(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            for step in range(3):
                sdk.log_metric("loss", 1.0 / (step + 1), step=step)
        assert [p.step for p in run.metrics] == [0, 1, 2]

    def test_numpy_integer_steps_are_accepted(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("loss", 1.0, step=np.int32(4))
        assert run.metrics[0].step == 4

    @pytest.mark.parametrize("step", [-1, 1.0, "3", True])
    def test_a_step_that_is_not_a_non_negative_int_raises(
        self, step: object, tmp_path: Path
    ) -> None:
        with testing.stage(tmp_path=tmp_path), pytest.raises(ValueError, match="step"):
            sdk.log_metric("loss", 1.0, step=step)  # type: ignore[arg-type]

    def test_a_point_without_step_after_points_with_steps_is_skipped(
        self, tmp_path: Path
    ) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("loss", 1.0, step=0)
            with pytest.warns(sdk.SdkWarning, match="first logged with a step"):
                sdk.log_metric("loss", 2.0)
            sdk.log_metric("loss", 3.0, step=1)
        assert run.metric("loss") == [1.0, 3.0]

    def test_a_point_with_step_after_points_without_is_skipped(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("acc", 0.5)
            with pytest.warns(sdk.SdkWarning, match="first logged without a step"):
                sdk.log_metric("acc", 0.6, step=1)
        assert run.metric("acc") == [0.5]

    def test_the_step_rule_is_per_metric_name(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("loss", 1.0, step=0)
            sdk.log_metric("final_acc", 0.9)
        assert run.warnings == []

    def test_log_metrics_gives_every_value_the_same_step(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metrics({"loss": 0.3, "acc": 0.9}, step=5)
        assert [(p.name, p.value, p.step) for p in run.metrics] == [
            ("loss", 0.3, 5), ("acc", 0.9, 5)]


class TestTimestamps:
    def test_points_are_stamped_with_the_current_time_by_default(self, tmp_path: Path) -> None:
        before = time.time()
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("x", 1.0)
        assert before <= run.metrics[0].ts <= time.time()

    def test_an_explicit_timestamp_is_kept(self, tmp_path: Path) -> None:
        at = time.time() - 3600
        when = datetime.now(UTC) - timedelta(days=30)
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("x", 1.0, timestamp=at)
            sdk.log_metric("x", 2.0, timestamp=when)
        assert [p.ts for p in run.metrics] == [at, when.timestamp()]

    @pytest.mark.parametrize("offset", [2 * 86400, -11 * 365 * 86400], ids=["future", "past"])
    def test_a_timestamp_too_far_off_is_skipped_with_a_warning(
        self, offset: float, tmp_path: Path
    ) -> None:
        at = time.time() + offset
        with testing.stage(tmp_path=tmp_path) as run, pytest.warns(sdk.SdkWarning, match="time"):
            sdk.log_metric("x", 1.0, timestamp=at)
        assert run.metrics == []

    def test_a_timestamp_that_is_not_a_time_raises(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path), pytest.raises(ValueError, match="timestamp"):
            sdk.log_metric("x", 1.0, timestamp="yesterday")  # type: ignore[arg-type]


class TestBuffering:
    def test_points_wait_in_memory_until_the_hundredth(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_metrics, "FLUSH_INTERVAL", 3600.0)
        with testing.stage(tmp_path=tmp_path) as run:
            for i in range(_metrics.FLUSH_EVERY - 1):
                sdk.log_metric("x", float(i))
            assert not metrics_file(run).exists()
            sdk.log_metric("x", 99.0)
            assert len(metrics_file(run).read_text().splitlines()) == _metrics.FLUSH_EVERY

    def test_a_lone_point_reaches_the_file_about_a_second_later(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("x", 1.0)
            assert not metrics_file(run).exists()
            wait_until(metrics_file(run).exists, what="the background flush writes the point")
            assert metrics_file(run).read_text().count("\n") == 1

    def test_every_line_has_exactly_the_contract_fields(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("x", 1.0, step=2)
        line = json.loads(metrics_file(run).read_text())
        assert set(line) == {"name", "value", "step", "ts"}

    def test_concurrent_threads_never_interleave_half_lines(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            def work(k: int) -> None:
                for step in range(500):
                    sdk.log_metric(f"t{k}", float(step), step=step)
            threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        lines = metrics_file(run).read_text().splitlines()
        assert len(lines) == 2000
        for k in range(4):
            assert run.metric(f"t{k}") == [float(s) for s in range(500)]

    def test_a_reader_ignores_a_trailing_partial_line(self, tmp_path: Path) -> None:
        with testing.stage(tmp_path=tmp_path) as run:
            sdk.log_metric("x", 1.0)
            sdk.finish()
            with metrics_file(run).open("a") as handle:
                handle.write('{"name": "x", "val')
            assert run.metric("x") == [1.0]


class TestProperties:
    @settings(max_examples=200, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(name=st.text(max_size=300))
    def test_any_accepted_name_matches_the_documented_pattern(self, name: str) -> None:
        with testing.stage() as run:
            try:
                sdk.log_metric(name, 1.0)
            except ValueError:
                assert not _metrics.METRIC_NAME.fullmatch(name)
                return
        assert SPEC_NAME.match(name) and "\n" not in name
        assert run.metric(name) == [1.0]

    @settings(max_examples=100, deadline=None)
    @given(name=st.from_regex(r"[A-Za-z][A-Za-z0-9_.\-/:]{0,255}", fullmatch=True))
    def test_every_ascii_name_of_the_pattern_is_accepted(self, name: str) -> None:
        with testing.stage() as run:
            sdk.log_metric(name, 1.0)
        assert run.metric(name) == [1.0]

    @settings(max_examples=200, deadline=None)
    @given(value=st.floats(allow_nan=False, allow_infinity=False))
    def test_any_finite_float_is_accepted_unchanged(self, value: float) -> None:
        with testing.stage() as run:
            sdk.log_metric("x", value)
        assert run.metric("x") == [value]
        assert run.warnings == []

    @settings(max_examples=100, deadline=None)
    @given(value=st.one_of(st.booleans(), st.sampled_from([np.bool_(True), np.bool_(False)])))
    def test_bools_are_always_skipped(self, value: object) -> None:
        with testing.stage() as run, pytest.warns(sdk.SdkWarning):
            sdk.log_metric("x", value)  # type: ignore[arg-type]
        assert run.metrics == []
        assert len(run.warnings) == 1

    @settings(max_examples=100, deadline=None)
    @given(value=st.one_of(
        st.just(math.nan), st.just(math.inf), st.just(-math.inf), NAN_PAYLOADS,
        st.sampled_from([np.float32("nan"), np.float64("inf")])))
    def test_nan_and_inf_are_always_recorded_as_non_finite(self, value: object) -> None:
        with testing.stage() as run, pytest.warns(sdk.SdkWarning):
            sdk.log_metric("x", value)  # type: ignore[arg-type]
        [point] = run.metrics
        assert not math.isfinite(point.value)
        assert math.isnan(point.value) == math.isnan(float(value))  # type: ignore[arg-type]
        assert [w["kind"] for w in run.warnings] == ["metric_non_finite"]

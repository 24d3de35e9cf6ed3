"""The pure parts of compare: config diffs, metric deltas, environment diffs, bounded code
diffs (quipu.core.compare)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from quipu.core.compare import (
    apply_config_diff,
    bounded_code_diff,
    compare_metric,
    diff_configs,
    diff_environments,
)
from quipu.core.workspaces.versions import FileEntry, Manifest, diff_manifests

keys = st.text(alphabet="abcxyz._", min_size=1, max_size=4)
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) \
    | st.text(max_size=5)
values = st.recursive(scalars | st.lists(scalars, max_size=3),
                      lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=12)
configs = st.dictionaries(keys, values, max_size=6)


class TestConfigDiff:
    @given(configs, configs)
    def test_applying_the_diff_of_a_and_b_to_a_gives_b(self, a: dict[str, Any],
                                                        b: dict[str, Any]) -> None:
        assert apply_config_diff(a, diff_configs(a, b)) == b

    @given(configs)
    def test_a_config_does_not_differ_from_itself(self, a: dict[str, Any]) -> None:
        assert diff_configs(a, a) == []

    @given(configs, configs)
    def test_the_diff_back_undoes_the_diff(self, a: dict[str, Any], b: dict[str, Any]) -> None:
        assert apply_config_diff(apply_config_diff(a, diff_configs(a, b)),
                                 diff_configs(b, a)) == a

    def test_nested_keys_are_dotted_and_a_value_of_another_type_is_a_change(self) -> None:
        a = {"optim": {"lr": 0.1, "momentum": 0.9}, "epochs": 3, "flag": 1}
        b = {"optim": {"lr": 0.01}, "epochs": 3, "flag": True, "seed": 7}
        assert [c.to_json() for c in diff_configs(a, b)] == [
            {"key": "flag", "change": "changed", "a": 1, "b": True},
            {"key": "optim.lr", "change": "changed", "a": 0.1, "b": 0.01},
            {"key": "optim.momentum", "change": "removed", "a": 0.9},
            {"key": "seed", "change": "added", "b": 7}]

    def test_a_long_value_is_clipped_in_the_answer(self) -> None:
        (change,) = diff_configs({"text": "a" * 500}, {"text": "b"})
        assert change.to_json()["a"] == "a" * 80 + "..."


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9)


class TestMetricDelta:
    @given(finite, finite)
    def test_better_means_b_moved_the_way_the_spec_asks(self, a: float, b: float) -> None:
        up = compare_metric("m", a, b, direction="maximize")["outcome"]
        down = compare_metric("m", a, b, direction="minimize")["outcome"]
        if a == b:
            assert up == down == "same"
        else:
            assert up == ("better" if b > a else "worse")
            assert {up, down} == {"better", "worse"}

    @given(finite, finite, st.sampled_from(["maximize", "minimize"]))
    def test_swapping_a_and_b_swaps_better_and_worse(self, a: float, b: float,
                                                     direction: str) -> None:
        there = compare_metric("m", a, b, direction=direction)
        back = compare_metric("m", b, a, direction=direction)
        swap = {"better": "worse", "worse": "better", "same": "same"}
        assert back["outcome"] == swap[there["outcome"]]

    @given(finite, st.sampled_from(["nan", "inf", "-inf"]),
           st.sampled_from(["maximize", "minimize"]))
    def test_a_non_finite_value_is_worse_than_any_finite_one(self, value: float, kind: str,
                                                             direction: str) -> None:
        went = compare_metric("m", value, None, direction=direction, b_non_finite=kind)
        assert went["outcome"] == "worse" and went["b"] is None and went["b_non_finite"] == kind
        assert "delta" not in went
        recovered = compare_metric("m", None, value, direction=direction, a_non_finite=kind)
        assert recovered["outcome"] == "better"

    def test_two_non_finite_values_or_no_direction_cannot_be_ranked(self) -> None:
        assert compare_metric("m", None, None, direction="maximize", a_non_finite="nan",
                              b_non_finite="inf")["outcome"] == "unknown"
        assert compare_metric("m", 1.0, 2.0, direction=None)["outcome"] == "unknown"
        assert compare_metric("m", 1.0, None, direction="maximize")["outcome"] == "unknown"

    def test_a_float_nan_given_as_a_value_counts_as_non_finite(self) -> None:
        row = compare_metric("m", 0.5, math.inf, direction="maximize")
        assert row["b"] is None and row["b_non_finite"] == "inf" and row["outcome"] == "worse"
        assert compare_metric("m", math.nan, 0.1, direction="minimize")["a_non_finite"] == "nan"

    def test_within_tolerance_is_said_when_the_spec_has_one(self) -> None:
        row = compare_metric("m", 0.80, 0.805, direction="maximize", tolerance=0.01)
        assert row["within_tolerance"] is True and row["outcome"] == "better"


ENV = {"python": "3.11.9", "executable": "/usr/bin/python3", "os": "Linux-6.1",
       "machine": "x86_64", "cpu_count": 8, "gpu": None,
       "env_names": ["HOME", "PATH", "CUDA_VISIBLE_DEVICES"],
       "packages": {"count": 3, "sha256": "a" * 64}}


class TestEnvironmentDiff:
    def test_an_environment_not_recorded_is_said_so_not_guessed(self) -> None:
        out = diff_environments(None, ENV)
        assert out == {"recorded": {"a": False, "b": True}, "same": None,
                       "note": "environment not recorded for A"}

    def test_the_same_environment_is_the_same(self) -> None:
        out = diff_environments(ENV, dict(ENV))
        assert out["same"] is True and out["changed"] == {}

    def test_changed_facts_env_names_and_packages_are_listed(self) -> None:
        b = {**ENV, "python": "3.12.1", "gpu": "A100", "env_names": ["HOME", "PATH", "SEED"],
             "packages": {"count": 3, "sha256": "b" * 64}}
        out = diff_environments(ENV, b, packages_a=["numpy==1.26.4", "torch==2.2.0", "six==1"],
                                packages_b=["numpy==2.0.0", "torch==2.2.0", "jax==0.4"])
        assert out["same"] is False
        assert out["changed"] == {"python": {"a": "3.11.9", "b": "3.12.1"},
                                  "gpu": {"a": None, "b": "A100"}}
        assert out["env_names"] == {"added": ["SEED"], "removed": ["CUDA_VISIBLE_DEVICES"]}
        assert out["packages"] == {"same": False, "count": [3, 3], "added": ["jax==0.4"],
                                   "removed": ["six==1"], "changed": ["numpy 1.26.4 -> 2.0.0"]}

    def test_without_the_lists_packages_compare_by_hash(self) -> None:
        b = {**ENV, "packages": {"count": 4, "sha256": "b" * 64}}
        packages = diff_environments(ENV, b)["packages"]
        assert packages["same"] is False and packages["count"] == [3, 4]
        assert "hashes" in packages["note"]


def _manifest(files: dict[str, bytes]) -> tuple[Manifest, dict[str, bytes]]:
    import hashlib

    by_hash = {hashlib.sha256(d).hexdigest(): d for d in files.values()}
    return Manifest(files={p: FileEntry(sha256=hashlib.sha256(d).hexdigest(), size=len(d))
                           for p, d in files.items()}), by_hash


class TestBoundedCodeDiff:
    def test_every_file_is_counted_and_the_lines_are_bounded_with_what_was_left_out(
            self) -> None:
        old = {f"f{i}.txt": "".join(f"{i} {j}\n" for j in range(100)).encode()
               for i in range(40)}
        new = {p: d.replace(b" 5\n", b" five\n") + b"tail\n" * 50 for p, d in old.items()}
        (ma, ha), (mb, hb) = _manifest(old), _manifest(new)
        out = bounded_code_diff(diff_manifests(ma, mb),
                                lambda p: ha[ma.files[p].sha256],
                                lambda p: hb[mb.files[p].sha256],
                                left="a", right="b", max_lines=60, max_files=10)
        assert out["files_changed"] == 40 and out["more_files"] == 30
        assert len(out["files"]) == 10
        lines = out["diff_text"].splitlines()
        shown = [ln for ln in lines if not ln.startswith("... ")]
        assert len(shown) <= 60
        assert any(ln.startswith("... ") and "more lines of f0.txt" in ln for ln in lines)
        assert out["files_without_diff"] >= 1

"""Compute profiles and the configuration that chooses adapters (docs/configuration.md).

Real projects, real SQLite logs, real stage processes: a stage's ``compute.profile`` is
checked by validate_config and dry runs (unknown, or on a backend not configured here), the
resolved profile is recorded with the launch, and a profile's timeout ends a hanging stage
with that reason. ``quipu.yaml`` and the environment overrides refuse bad values with
``invalid_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_executor_helpers import ONE_STAGE, REASON, SPEC, make_project
from waiting import wait_until

from quipu.app.bootstrap import CONFIG_FILE, Quipu, open_project
from quipu.app.config import ENV_OVERRIDES, Config, load_config, with_env_overrides
from quipu.app.profiles import ProjectProfiles
from quipu.core.errors import InvalidInput
from quipu.core.log import decode
from quipu.core.runs.events import RunCanceled, RunLaunched

SOLO = """\
    import json, os
    out = os.path.join(os.environ["QUIPU_OUTPUTS_DIR"], "result.json")
    json.dump({"ok": 1}, open(out, "w"))
"""
HANGS = """\
    import time
    while True:
        time.sleep(0.5)
"""


def configure(q: Quipu, **changes: Any) -> Quipu:
    """Rewrite quipu.yaml with ``changes`` merged in and reopen the project."""
    root = q.root
    q.close()
    path = root / CONFIG_FILE
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return open_project(root)


def stage_config(q: Quipu, text: str) -> None:
    configs = q.root / "workspaces" / "w1" / "configs"
    configs.mkdir(exist_ok=True)
    (configs / "solo.yaml").write_text(text)


def events_of(q: Quipu, kind: type[Any], run_id: str) -> list[Any]:
    found = [decode(r).event for r in q.store.read(after=0, limit=100000, types=[kind.TYPE])]
    return [e for e in found if getattr(e, "run_id", None) == run_id]


@pytest.fixture
def q(tmp_path: Path) -> Any:
    made = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
    yield made
    made.close()


class TestProfilesAreValidated:
    def test_an_unknown_profile_is_an_error_listing_the_known_ones(self, q: Quipu) -> None:
        stage_config(q, "compute: {profile: cpu-smal}\n")
        result = q.validate_config("w1")
        assert result["valid"] is False
        [problem] = [p for p in result["errors"] if p["code"] == "unknown_profile"]
        assert problem["file"] == "configs/solo.yaml" and problem["where"] == "compute.profile"
        assert "did you mean 'cpu-small'" in problem["hint"]
        for name in ("local", "cpu-small", "cpu-large", "gpu"):
            assert name in problem["hint"]
        head = q.store.head()
        with pytest.raises(InvalidInput) as refused:
            q.run("w1", reason=REASON, results_spec=SPEC)
        assert "unknown_profile" in str(refused.value.details or refused.value.code)
        assert q.store.head() == head  # nothing written

    def test_a_profile_on_a_backend_not_configured_here_is_an_error(self, q: Quipu) -> None:
        q = configure(q, profiles={"boxed": {"backend": "docker", "image": "python:3.11"}})
        try:
            stage_config(q, "compute: {profile: boxed}\n")
            result = q.run("w1", reason=REASON, results_spec=None, dry_run=True)
            assert result["valid"] is False
            [problem] = [p for p in result["errors"]
                         if p["code"] == "profile_backend_not_configured"]
            assert "executor.backend: docker" in problem["hint"]
            assert "boxed" in problem["hint"] and "local" in problem["hint"]
        finally:
            q.close()

    def test_compute_is_not_a_stage_parameter(self, q: Quipu) -> None:
        # A stage with a config_schema still accepts compute (reserved), and a misshapen one
        # is its own error.
        stage_config(q, "compute: {profile: cpu-small}\n")
        assert q.validate_config("w1")["valid"] is True
        stage_config(q, "compute: {profile: cpu-small, cpus: 64}\n")
        result = q.validate_config("w1")
        assert [p["code"] for p in result["errors"]] == ["invalid_compute"]


class TestTheLaunchRecordsTheProfile:
    def test_the_resolved_profile_goes_with_the_launch(self, q: Quipu) -> None:
        q = configure(q, profiles={"small": {"cpus": 1.5, "memory": "512m", "timeout": "2h"}})
        try:
            stage_config(q, "compute: {profile: small}\n")
            q.start_workers()
            result = q.run("w1", reason=REASON, results_spec=SPEC, wait=True, wait_timeout=120)
            [run] = result["stage_runs"]
            assert run["state"] == "succeeded"
            [launched] = events_of(q, RunLaunched, run["stage_run_id"])
            assert launched.environment["compute"] == {
                "profile": "small", "backend": "local", "image": None, "cpus": 1.5,
                "memory_mb": 512, "gpus": 0, "timeout": 7200.0, "network": True}
        finally:
            q.close()

    def test_a_stage_past_its_profiles_timeout_is_canceled_with_that_reason(
            self, q: Quipu) -> None:
        q = configure(q, profiles={"brief": {"timeout": 1}})
        try:
            from test_executor_helpers import write_slot
            write_slot(q, ONE_STAGE, {"solo": HANGS})
            stage_config(q, "compute: {profile: brief}\n")
            q.start_workers()
            started = q.run("w1", reason=REASON, results_spec=SPEC)
            run_id = started["queued"][0]["stage_run_id"]
            wait_until(lambda: events_of(q, RunCanceled, run_id), what="the run was canceled",
                       timeout=120)
            [canceled] = events_of(q, RunCanceled, run_id)
            assert "timeout of 1 s" in canceled.reason
            assert canceled.actor.startswith("supervisor:")
            wait_until(lambda: not q.workers[0].running(),  # type: ignore[attr-defined]
                       what="the stage process was ended", timeout=120)
        finally:
            q.close()


class TestConfiguration:
    def test_profiles_in_quipu_yaml_are_validated(self, tmp_path: Path) -> None:
        for bad in ({"p": {"memory": "lots"}}, {"p": {"timeout": "soon"}},
                    {"p": {"backend": "kubernetes"}}, {"p": {"gpu": 1}}):
            (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump({"name": "x", "profiles": bad}))
            with pytest.raises(InvalidInput) as refused:
                load_config(tmp_path)
            assert refused.value.code == "invalid_config"

    def test_an_environment_variable_overrides_its_key_and_is_validated(self) -> None:
        config = Config(name="x")
        chosen = with_env_overrides(config, {"QUIPU_EXECUTOR_BACKEND": "docker",
                                             "QUIPU_EVENTSTORE_URL": "postgresql://h/db"})
        assert chosen.executor.backend == "docker"
        assert chosen.eventstore.url == "postgresql://h/db"
        assert with_env_overrides(config, {"QUIPU_EXECUTOR_BACKEND": ""}) is config
        with pytest.raises(InvalidInput) as refused:
            with_env_overrides(config, {"QUIPU_EXECUTOR_BACKEND": "kubernetes"})
        assert refused.value.code == "invalid_config"
        assert "QUIPU_EXECUTOR_BACKEND" in refused.value.message

    def test_every_override_is_documented_and_reaches_its_key(self) -> None:
        table = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
        samples = {"QUIPU_EVENTSTORE_URL": "postgresql://h/db",
                   "QUIPU_EXECUTOR_BACKEND": "docker", "QUIPU_EXECUTOR_PROFILE": "cpu-large",
                   "QUIPU_SVS_REVIEWER": "static", "QUIPU_AUDIT_KEY_FILE": "/k/audit.key"}
        assert set(samples) == set(ENV_OVERRIDES), "a sample value for every override"
        for name, value in samples.items():
            assert f"`{name}`" in table, f"{name} is missing from docs/configuration.md"
            node: Any = with_env_overrides(Config(name="x"), {name: value})
            for part in ENV_OVERRIDES[name]:
                node = getattr(node, part)
            assert node == value, name
        with pytest.raises(InvalidInput) as refused:
            with_env_overrides(Config(name="x"), {"QUIPU_SVS_REVIEWER": "gpt"})
        assert "QUIPU_SVS_REVIEWER" in refused.value.message

    def test_builtin_profiles_follow_the_executor_backend(self) -> None:
        local = ProjectProfiles(Config(name="x"))
        assert local.resolve(None).profile == "local"
        assert local.resolve("gpu").gpus == 1 and local.resolve("gpu").backend == "local"
        docker = ProjectProfiles(Config.model_validate(
            {"name": "x", "executor": {"backend": "docker"}}))
        small = docker.resolve(None)
        assert (small.profile, small.backend, small.cpus, small.memory_mb, small.network) == (
            "cpu-small", "docker", 2, 4096, False)
        assert docker.resolve("local").backend == "local"

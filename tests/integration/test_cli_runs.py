"""`quipu run ...` and `quipu dashboard`, run as people run them: the real entry point.

Runs are executed by the workers of a `quipu serve` process, started here in the background
exactly as an agent's MCP client would start it; the CLI only talks to the shared log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import as_json, quipu, refused
from toy_pipeline import SPEC, write_toy_pipeline

pytestmark = pytest.mark.timeout(300)

WHY = "exercising runs from the command line"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project whose workspace 'toy' is mounted in w1 with the two-stage pipeline."""
    quipu("init", "proj", "--goal", "learn to classify digits well", cwd=tmp_path)
    root = tmp_path / "proj"
    quipu("workspace", "create", "toy", "--goal", "a toy two-stage pipeline", "--reason", WHY,
          cwd=root)
    quipu("workspace", "mount", "toy", "w1", "--reason", WHY, cwd=root)
    slot = root / "workspaces" / "w1"
    write_toy_pipeline(slot)
    return root


@pytest.fixture()
def workers(project: Path) -> Iterator[subprocess.Popen[str]]:
    """`quipu serve` on the project, idle on stdin, so its workers execute queued runs."""
    env = {**os.environ, "QUIPU_ACTOR": "agent:serve"}
    env.pop("QUIPU_PROJECT", None)
    proc = subprocess.Popen([sys.executable, "-m", "quipu.cli", "--project", str(project),
                             "serve"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, text=True)
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # end of input: the server stops its workers and exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- refusals ------------------------------------------------------------------------------------


def test_run_start_refuses_bad_input_with_its_code_and_records_nothing(project: Path) -> None:
    before = quipu("events", "--json", cwd=project).stdout
    refused("results_spec_missing", "run", "start", "w1", "--reason", WHY, cwd=project)
    err = refused("invalid_results_spec", "run", "start", "w1", "--reason", WHY, "--spec",
                  '{"primary_metric": "accuracy", "direction": "up"}', cwd=project)
    assert "direction" in err and "min_value: is required" in err
    refused("invalid_json", "run", "start", "w1", "--reason", WHY, "--spec", "{not json",
            cwd=project)
    refused("invalid_json", "run", "start", "w1", "--reason", WHY, "--spec", "no-such.json",
            cwd=project)
    refused("override_needs_stage_keys", "run", "start", "w1", "--reason", WHY, "--spec",
            json.dumps(SPEC), "--config", '{"epochs": 5}', cwd=project)
    assert quipu("events", "--json", cwd=project).stdout == before


def test_run_start_resume_from_an_unknown_run_is_refused_and_records_nothing(
        project: Path) -> None:
    before = quipu("events", "--json", cwd=project).stdout
    err = refused("unknown_run", "run", "start", "w1", "--reason", WHY, "--spec",
                  json.dumps(SPEC), "--resume-from", "stage-000000000000", cwd=project)
    assert "resume_from" in err
    refused("unknown_run", "run", "start", "w1", "--reason", WHY, "--dry-run",
            "--resume-from", "stage-000000000000", cwd=project)
    assert quipu("events", "--json", cwd=project).stdout == before


def test_dry_run_and_validate_report_problems_without_recording(project: Path,
                                                                 tmp_path: Path) -> None:
    before = quipu("events", "--json", cwd=project).stdout
    preview = as_json("run", "start", "w1", "--reason", WHY, "--dry-run", cwd=project)
    assert isinstance(preview, dict)
    assert preview["valid"] is True and preview["stages_to_run"] == ["prep", "train"]
    out = quipu("run", "validate", "w1", cwd=project).stdout
    assert "valid: True" in out
    (project / "workspaces" / "w1" / "modules" / "train.py").unlink()
    proc = quipu("run", "validate", "w1", cwd=project, check=False)
    assert proc.returncode == 1 and "module_missing" in proc.stdout
    assert quipu("events", "--json", cwd=project).stdout == before


def test_validate_takes_the_stages_and_overrides_a_run_would_use(project: Path) -> None:
    """The command line's validate checks what `run start` with the same options would run,
    as the MCP tool does: the stage chosen, a config override against the stage's schema, and
    an inputs_override path that does not exist."""
    before = quipu("events", "--json", cwd=project).stdout
    only = json.loads(quipu("run", "validate", "w1", "--stage", "prep", "--json",
                            cwd=project).stdout)
    assert only["valid"] is True and only["stages_to_run"] == ["prep"]
    bad = quipu("run", "validate", "w1", "--stage", "train", "--config", '{"epochs": 0}',
                cwd=project, check=False)
    assert bad.returncode == 1 and "[config_bad_value] override.train.epochs" in bad.stdout
    missing = project / "nowhere.npy"
    gone = quipu("run", "validate", "w1", "--stage", "train", "--inputs",
                 json.dumps({"features": str(missing)}), cwd=project, check=False)
    assert gone.returncode != 0
    assert "input_path_missing" in gone.stdout + gone.stderr
    assert quipu("events", "--json", cwd=project).stdout == before


def test_a_queued_run_can_be_canceled_and_does_not_hold_the_gate(project: Path,
                                                                 tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in SPEC.items()))
    started = as_json("run", "start", "w1", "--reason", WHY, "--spec", str(spec), cwd=project)
    assert isinstance(started, dict) and started["version"] == "v1"
    queued = {q["stage"]: q["stage_run_id"] for q in started["queued"]}
    canceled = as_json("run", "cancel", queued["prep"], "--reason",
                       "no worker is running; cancel it", cwd=project)
    assert isinstance(canceled, dict) and canceled["state"] == "canceled"
    events = [json.loads(line) for line in
              quipu("events", "--json", "--type", "RunCanceled", cwd=project).stdout.splitlines()]
    assert {e["run_id"] for e in events} == set(queued.values())  # train waited on prep
    again = as_json("run", "start", "w1", "--reason", "start again after canceling",
                    "--spec", json.dumps(SPEC), cwd=project)
    assert isinstance(again, dict) and again["stages_queued"] == ["prep", "train"]


def test_run_stop_refuses_a_run_that_has_not_started_and_writes_nothing(
        project: Path) -> None:
    started = as_json("run", "start", "w1", "--reason", WHY, "--spec", json.dumps(SPEC),
                      cwd=project)
    prep = started["queued"][0]["stage_run_id"]
    before = quipu("events", "--json", cwd=project).stdout
    stderr = refused("run_not_running", "run", "stop", prep, "--reason",
                     "no worker runs it, so it cannot stop", cwd=project)
    assert "cancel" in stderr
    refused("unknown_run", "run", "stop", "stage-000000000000", "--reason",
            "there is no such run to stop", cwd=project)
    assert quipu("events", "--json", cwd=project).stdout == before


# --- a whole experiment, executed by a running server -------------------------------------------


def test_start_wait_gate_finalize_list_and_dashboard(project: Path,
                                                    workers: subprocess.Popen[str]) -> None:
    started = as_json("run", "start", "w1", "--reason", WHY, "--spec", json.dumps(SPEC),
                      "--wait", "--timeout", "120", cwd=project)
    assert isinstance(started, dict)
    ids = {q["stage"]: q["stage_run_id"] for q in started["queued"]}
    assert {r["state"] for r in started["stage_runs"]} == {"succeeded"}

    err = refused("finalization_required", "run", "start", "w1", "--reason", WHY, "--spec",
                  json.dumps(SPEC), cwd=project)
    assert ids["prep"] in err and ids["train"] in err
    pending = quipu("run", "unfinalized", "toy", cwd=project).stdout
    assert ids["prep"] in pending and ids["train"] in pending

    quipu("run", "finalize", ids["prep"], "--results",
          '{"ml_outcome": "unknown", "notes": "preprocessing only; nothing to judge"}',
          cwd=project)
    final = as_json("run", "finalize", ids["train"], "--results", json.dumps({
        "primary_metric": "accuracy", "direction": "maximize", "value": 0.7,
        "dataset_split": "val", "ml_outcome": "partial",
        "notes": "reaches the minimum of 0.6, not the goal"}), cwd=project)
    assert isinstance(final, dict) and final["comparison"]["meets_min"] is True
    refused("already_finalized", "run", "finalize", ids["train"], "--results",
            '{"ml_outcome": "miss", "notes": "changing my mind afterwards"}', cwd=project)

    listed = quipu("run", "list", "toy", cwd=project).stdout
    assert ids["train"] in listed and "partial" in listed
    inspected = as_json("run", "inspect", ids["train"], cwd=project)
    assert isinstance(inspected, dict) and inspected["run_id"] == ids["train"]
    assert "trained on 10 rows" in quipu("run", "logs", ids["train"], cwd=project).stdout
    board = as_json("dashboard", cwd=project)
    assert board["best_by_workspace"]["toy"]["run_id"] == ids["train"]
    assert board["pending_finalization"] == {"count": 0, "workspaces": 0, "by_workspace": {}}
    assert quipu("run", "unfinalized", "toy", cwd=project).stdout.strip() == ""

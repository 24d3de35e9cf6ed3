"""A project as large as the one issue 7 measured: 50 workspaces and 300 stage runs, driven
through the facade with the commands a real executor calls (shared by the size tests)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from toy_pipeline import FACTS_PIPELINE, FACTS_SPEC

from quipu.app.bootstrap import Quipu, init_project
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State

ACTOR = "agent-1"
WORKER = "worker-1"
REASON = "build a large project to measure the answers"
WORKSPACES = 50


def _results(value: float) -> dict[str, Any]:
    return {"primary_metric": "val_acc", "direction": "maximize", "value": value,
            "dataset_split": "val", "ml_outcome": "partial",
            "notes": f"reached {value} on the validation split; wider layers may help next"}


def build(root: Path) -> Quipu:
    """50 workspaces; in each two finalized pipeline runs (4 stage runs), then one more whose
    stages ended and wait for a verdict, or are still running: 250 stage runs."""
    q = init_project(root, name="big", goal="beat the baseline on every dataset we have",
                     actor=ACTOR)
    counter = itertools.count(1)
    runs = RunService(q.service, q.views, new_id=lambda: f"{next(counter):06d}")

    def execute(run_id: str, value: float | None = None) -> None:
        assert runs.record_claim(run_id, WORKER)
        runs.record_launch(run_id, worker=WORKER, host="host-a", pid=1,
                           run_dir=str(root / ".quipu" / "runs" / run_id), inputs={})
        if value is not None:
            runs.record_metrics(run_id, actor="ingester", series=None, points=2, complete=True,
                                summaries={"val_acc": {"min": value - 0.1, "max": value,
                                                       "last": value, "count": 2,
                                                       "trend": "up", "last_step": 1}})
        runs.record_exit(run_id, worker=WORKER, state=State.SUCCEEDED, exit_code=0,
                         outputs={"features": {"sha256": "a" * 64, "size": 3},
                                  "model": {"sha256": "b" * 64, "size": 3}})

    for n in range(WORKSPACES):
        name = f"dataset-{n:02d}"
        q.create_workspace(name, f"a classifier for dataset {n} that beats its baseline "
                           "by at least five points", REASON)
        q.mount(name, "w1", REASON)
        slot = root / "workspaces" / "w1"
        (slot / "modules").mkdir(exist_ok=True)
        (slot / "pipeline.yaml").write_text(FACTS_PIPELINE)
        (slot / "modules" / "prep.py").write_text("print('prep')\n")
        (slot / "modules" / "train.py").write_text(f"print('train {n}')\n")
        for k in range(3):
            out = runs.run(name, reason={
                "description": f"attempt {k} on {name}: a wider first layer and more dropout",
                "hypothesis": f"a wider first layer lifts {name} above the baseline ({k})"},
                results_spec=FACTS_SPEC, actor=ACTOR)
            ids = {x["stage"]: x["stage_run_id"] for x in out["queued"]}
            value = round(0.6 + ((n * 7 + k * 13) % 37) / 100, 2)
            execute(ids["prep"])
            if k == 2 and n % 5 == 0:
                assert runs.record_claim(ids["train"], WORKER)  # still running
                continue
            execute(ids["train"], value)
            if k < 2 or n % 2:
                runs.finalize_pipeline(ids["train"], _results(value), actor=ACTOR)
        q.hibernate("w1", REASON)
        q.log_thought(f"dataset {n}: the wider layer helps a little; next try a learning rate "
                      "schedule and longer training before giving up on this direction",
                      workspace=name)
    q.refresh()
    return q

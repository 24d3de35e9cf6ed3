"""``quipu demo``: a short, real session on the embedded defaults (SQLite, local files)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from quipu.app.bootstrap import Quipu, init_project, open_log

__all__ = ["copy_pipeline", "run_demo"]

RESULTS_SPEC: dict[str, Any] = {
    "primary_metric": "accuracy",
    "direction": "maximize",
    "min_value": 0.9,
    "goal_value": 0.97,
    "dataset_split": "test",
    "tolerance": 0.01,
    "context": "accuracy on the 450 held-out digits (25% stratified split); chance is 0.10",
    "secondary_metrics": ["loss"],
    "failure_threshold": 0.2,
}
"""What every demo pipeline run must show: test accuracy, at least 0.90, aiming for 0.97."""

STAGES = ("preprocess", "train", "evaluate")

_TRAIN_V1 = '''"""Train a classifier on scikit-learn's bundled digits."""
LEARNING_RATE = 0.1
EPOCHS = 10


def main() -> None:
    print(f"training for {EPOCHS} epochs at lr={LEARNING_RATE}")


if __name__ == "__main__":
    main()
'''


def run_demo(path: Path, *, actor: str, echo: Callable[[str], None] = print,
             kept: bool = False) -> int:
    """Build a demo project at ``path``; return 0 when the audit at the end passes."""
    def step(title: str) -> None:
        echo(f"\n=== {title} ===")

    step(f"init a project at {path}")
    q = init_project(path, name="digits", goal="reach 98% test accuracy on sklearn digits",
                     actor=actor)
    try:
        w1, w2 = q.slots.path("w1"), q.slots.path("w2")

        step("create workspace 'baseline' and mount it in slot w1")
        q.create_workspace("baseline", "a small MLP as the baseline",
                           "every comparison needs a baseline first")
        q.mount("baseline", "w1", "write the first training script")
        (w1 / "train.py").write_text(_TRAIN_V1)
        (w1 / "configs").mkdir()
        (w1 / "configs" / "train.yaml").write_text("batch_size: 64\n")
        echo(str(q.save_version("w1", "first training script with lr 0.1")))

        step("edit, save v2 and diff it against v1")
        (w1 / "train.py").write_text(_TRAIN_V1.replace("0.1", "0.03"))
        q.log_thought("loss oscillates at lr 0.1; a smaller step should settle it",
                      workspace="baseline")
        echo(str(q.save_version("w1", "lower the learning rate to 0.03")))
        echo(q.diff("baseline@v2")["diff_text"])

        step("an unchanged slot saves to the existing version")
        echo(str(q.save_version("w1", "saving again without any change")))

        step("fork 'wide' from baseline@v1 into slot w2")
        q.create_workspace("wide", "a wider hidden layer",
                           "test whether capacity limits accuracy", from_workspace="baseline",
                           from_version="v1")
        q.mount("wide", "w2", "widen the hidden layer of the v1 script")
        (w2 / "train.py").write_text(_TRAIN_V1.replace("EPOCHS = 10", "EPOCHS = 10\nHIDDEN = 512"))
        echo(str(q.save_version("w2", "hidden layer of 512 units")))
        echo(str(q.hibernate("w2", "park the wide idea until the baseline is tuned")))

        step("a bad edit in w1, then roll back to v1 (the edit is auto-saved first)")
        (w1 / "train.py").write_text("this is broken\n")
        (w1 / "notes.txt").write_text("scratch\n")
        echo(str(q.rollback("w1", "v1", "the edit broke the script; go back to v1")))
        restored = (w1 / "train.py").read_text() == _TRAIN_V1
        echo(f"train.py restored exactly: {restored}; notes.txt removed: "
             f"{not (w1 / 'notes.txt').exists()}")

        step("tag the best version and look at the history")
        q.manage_versions("baseline", "tag", version="v2", tag="best-lr",
                          reason="lowest loss so far in the sweep")
        for v in q.manage_versions("baseline", "list")["versions"]:
            echo(f"  {v['version']}: {v['message']} {v['tags'] or ''}")

        try:
            pipeline_ok = _pipeline_part(q, step, echo)
        except Exception as exc:  # show the rest (STATE.md, the audit), then exit 1
            echo(f"the pipeline part FAILED: {type(exc).__name__}: {exc}")
            pipeline_ok = False

        step("STATE.md (what an agent reads after forgetting everything)")
        echo(q.status()["state_md"])

        step("audit: verify the hash chain and seal the head")
        with open_log(path) as log:
            report = log.verify()[0]
            seal, _where = log.seal()
            sealed_ok = log.verify()[0].ok
        ok = report.ok and sealed_ok and restored and pipeline_ok
        echo(f"audit verify: {'OK' if report.ok else 'FAILED'} ({report.events_checked} events, "
             f"head position {report.head_position}); sealed at {seal.position}")
        if kept:
            echo(f"\nproject kept at {path}: try `quipu --project {path} events`")
        return 0 if ok else 1
    finally:
        q.close()


def copy_pipeline(target: Path) -> list[str]:
    """Copy the demo workspace (pipeline.yaml, configs/, modules/) into ``target``."""
    copied: list[str] = []

    def walk(node: Any, rel: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            path = f"{rel}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, path + "/")
            elif child.name.endswith((".py", ".yaml")):
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                with child.open("rb") as src, (target / path).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                copied.append(path)

    walk(resources.files("quipu.app") / "_demo_pipeline", "")
    return copied


def _pipeline_part(q: Quipu, step: Callable[[str], None], echo: Callable[[str], None]) -> bool:
    """Run the digits pipeline twice through the local executor; True when all of it worked."""
    step("a real pipeline in slot w3: preprocess -> train -> evaluate on sklearn digits")
    q.create_workspace("mlp", "classify the digits with a small MLP, end to end",
                       "run the real three-stage pipeline through the executor")
    q.mount("mlp", "w3", "put the digits pipeline files in place")
    files = copy_pipeline(q.slots.path("w3"))
    echo("files: " + ", ".join(files))
    echo(str(q.save_version("w3", "digits pipeline: a 16-unit MLP trained for 15 epochs")))
    q.start_workers()

    step("run 1: start the pipeline and wait until every stage ended")
    first = _run_and_finalize(q, echo, config="16 hidden units, 15 epochs", reason={
        "description": "first end-to-end run of the digits pipeline with a small MLP",
        "hypothesis": "even 16 hidden units and 15 epochs clear 90% test accuracy",
        "approach": "scale pixels to [0, 1], stratified 75/25 split, MLP with adam",
        "min_result": "0.90 test accuracy", "goal": "0.97 test accuracy"})
    if first is None:
        return False

    step("run 2: change the config (64 hidden units, 40 epochs) and run again")
    q.log_thought("run 1 underfits: the loss was still falling at the last epoch; give the "
                  "model more units and more epochs", workspace="mlp")
    second = _run_and_finalize(
        q, echo, config="64 hidden units, 40 epochs",
        config_override={"train": {"hidden": 64, "epochs": 40}}, reason={
            "description": "same pipeline with a wider hidden layer trained for longer",
            "hypothesis": "run 1 underfit; 64 units and 40 epochs reach the 0.97 goal",
            "approach": "config_override train.hidden=64, train.epochs=40; nothing else changes",
            "min_result": "better than run 1", "goal": "0.97 test accuracy"})
    if second is None:
        return False

    step("comparison of run 2 with run 1 (computed by finalize_run)")
    comparison = second.get("comparison") or {}
    previous = comparison.get("vs_previous")
    best = comparison.get("vs_best")
    if previous:
        echo(f"comparison vs previous: {previous['run_id']} had {previous['value']:.4f}, "
             f"now {comparison['value']:.4f} (delta {previous['delta']:+.4f}, "
             f"improved: {previous['improved']})")
    if best:
        echo(f"comparison vs best: {best['run_id']} had {best['value']:.4f} "
             f"(delta {best['delta']:+.4f}, improved: {best['improved']})")
    echo(f"meets min 0.90: {comparison.get('meets_min')}, meets goal 0.97: "
         f"{comparison.get('meets_goal')}, regression alert: "
         f"{comparison.get('regression_alert')}")
    compared = previous is not None and previous["run_id"] == first["run_id"]
    if not compared:
        echo("comparison FAILED: run 2 was not compared with run 1")
    return compared


def _run_and_finalize(q: Quipu, echo: Callable[[str], None], *, config: str,
                      reason: dict[str, str],
                      config_override: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Run the pipeline, wait, and finalize its three stage runs; the evaluate finalization."""
    from quipu.core.runs.results import ResultsSpec, suggest_outcome

    started = time.monotonic()
    result = q.run("mlp", reason=reason, results_spec=RESULTS_SPEC,
                   config_override=config_override, wait=True, wait_timeout=120)
    echo(f"{result['pipeline_run_id']} on mlp@{result['version']} ({config}) took "
         f"{time.monotonic() - started:.1f} s")
    runs = {r["stage"]: r["stage_run_id"] for r in result["queued"]}
    states = {r["stage_run_id"]: r["state"] for r in result.get("stage_runs", [])}
    for stage in STAGES:
        echo(f"  {stage:<10} {runs.get(stage, '?')}: {states.get(runs.get(stage, ''), '?')}")
    if tuple(runs) != STAGES or any(states.get(runs[s]) != "succeeded" for s in STAGES):
        echo("the pipeline did not succeed; see the runs' logs under .quipu/runs")
        return None
    summaries = {stage: _summaries(q, runs[stage]) for stage in ("train", "evaluate")}
    if "accuracy" not in summaries["evaluate"]:
        echo("evaluate logged no accuracy (the metrics were not ingested)")
        return None
    value = float(summaries["evaluate"]["accuracy"]["last"])
    outcome = suggest_outcome(ResultsSpec.model_validate(RESULTS_SPEC), value)
    verdict = {"success": "reaches the 0.97 goal",
               "partial": "clears the 0.90 minimum but not the 0.97 goal",
               "miss": "is below the 0.90 minimum"}.get(outcome, "cannot be judged")
    train = summaries["train"]
    loss, train_acc = train.get("loss", {}), train.get("train_accuracy", {})
    echo(f"  train logged {loss.get('count', 0)} epochs: loss {loss.get('last', float('nan')):.3f}"
         f", train accuracy {train_acc.get('last', float('nan')):.4f}")
    q.finalize_run(runs["preprocess"], {
        "ml_outcome": "success",
        "notes": "digits scaled to [0, 1] and split 75/25, stratified by label"})
    q.finalize_run(runs["train"], {
        "ml_outcome": outcome,
        "notes": f"trained with {config}; final training loss {loss.get('last', 0.0):.3f}; "
                 f"the test accuracy of this model {verdict}"})
    final = q.finalize_run(runs["evaluate"], {
        "primary_metric": "accuracy", "direction": "maximize", "value": value,
        "dataset_split": "test", "ml_outcome": outcome,
        "notes": f"{config}: test accuracy {value:.4f} {verdict}",
        "secondary": {"loss": float(loss["last"])} if "last" in loss else {}})
    echo(f"finalized evaluate run {runs['evaluate']}: accuracy {value:.4f} ({outcome})")
    final["run_id"] = runs["evaluate"]
    return final


def _summaries(q: Quipu, run_id: str, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """A run's metric summaries, waiting a little for the final (complete) ingestion."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = q.runs.load_run(run_id).metrics
        if (metrics is not None and metrics.complete) or time.monotonic() > deadline:
            return dict(metrics.summaries) if metrics is not None else {}
        time.sleep(0.1)

"""The pre-run ``static`` review of a 3-stage pipeline run (target: under 300 ms).

    python -m bench.static_review            # 30 repetitions
    python -m bench.static_review --quick    # 5 repetitions, a smoke run
    python -m bench.static_review --json     # figures as JSON on stdout

A real project (SQLite log, local blob store) holds the demo pipeline (preprocess -> train ->
evaluate, the modules `quipu demo` runs) and is configured with ``svs.reviewer: static``; one
``run()`` records the three stage runs, which wait in ``requested``. Then, in the same run,
each figure is timed both ways:

- quipu: what the review adapter does for the pipeline run, for each of its three stage runs:
  load the run, build the review context from the blob store (the version's manifest and its
  reviewable files) and run every static check (compile, pyflakes' undefined names, signals,
  config keys, unread inputs, leakage, the primary metric across the pipeline), with a fresh
  reviewer each repetition (its parse cache, shared by the three stage runs, starts empty);
- baseline: the least any check must do: ``ast.parse`` + ``compile`` of the same modules'
  texts, already in memory.

Figure: p95 over repetitions of the whole three-stage review.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from importlib import resources
from pathlib import Path

import yaml

from bench._util import percentile, report_p95, scratch_dir
from quipu.adapters.reviewers import StaticReviewer
from quipu.adapters.reviewers._context import build_context
from quipu.app.bootstrap import init_project, open_project
from quipu.core.runs.lifecycle import State

SPEC = {"primary_metric": "accuracy", "direction": "maximize", "min_value": 0.5,
        "goal_value": 0.95, "dataset_split": "test", "tolerance": 0.01,
        "context": "the digits demo's test accuracy, for the static review benchmark"}
REASON = "a run for the static review benchmark"


def log(message: str) -> None:
    """Progress on stderr, so --json output on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)


def copy_demo(slot: Path) -> None:
    """The demo pipeline's files into ``slot``."""
    root = resources.files("quipu.app") / "_demo_pipeline"
    for sub in ("", "configs", "modules"):
        base = root / sub if sub else root
        for item in base.iterdir():
            if item.is_file() and item.name.endswith((".py", ".yaml")):
                dest = slot / sub / item.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(item.read_text())


def main(argv: list[str] | None = None) -> int:
    """Build the project, record one pipeline run, time both ways, print the figure."""
    parser = argparse.ArgumentParser(prog="python -m bench.static_review", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 repetitions, a smoke run")
    parser.add_argument("--json", action="store_true", help="write the results as JSON to stdout")
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else 30
    started = time.perf_counter()
    with scratch_dir("static-review-") as tmp:
        root = tmp / "proj"
        init_project(root, name="bench", goal="time the static review").close()
        config = yaml.safe_load((root / "quipu.yaml").read_text())
        config["svs"] = {"reviewer": "static"}
        (root / "quipu.yaml").write_text(yaml.safe_dump(config))
        q = open_project(root)
        try:
            q.create_workspace("digits", "review the demo pipeline", REASON)
            copy_demo(Path(q.mount("digits", "w1", REASON)["path"]))
            ids = [s["stage_run_id"] for s in
                   q.run("digits", reason=REASON, results_spec=SPEC)["queued"]]
            assert all(q.runs.load_run(r).current is State.REQUESTED for r in ids)
            def review_all() -> list[str]:
                # A fresh reviewer each time: nothing parsed by an earlier repetition helps.
                reviewer = StaticReviewer()
                decisions = []
                for run_id in ids:
                    request = q.runs.load_run(run_id).check_exists()
                    context = build_context(q.blobs, request, previous_manifest=None)
                    decisions.append(reviewer.review(context).decision)
                return decisions

            decisions = review_all()
            assert decisions == ["approve"] * 3, decisions
            samples = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                review_all()
                samples.append((time.perf_counter() - t0) * 1000)
            value = percentile(samples, 95)

            request = q.runs.load_run(ids[0]).check_exists()
            texts = [t for p, t in build_context(q.blobs, request, previous_manifest=None)
                     .files.items() if p.endswith(".py")]
            base = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                for text in texts:
                    compile(ast.parse(text), "<stage>", "exec", dont_inherit=True)
                base.append((time.perf_counter() - t0) * 1000)
            baseline = percentile(base, 95)
        finally:
            q.close()
    figure = {"name": "static review of a 3-stage pipeline run (context from blobs + checks)",
              "value": value, "baseline": baseline, "unit": "ms",
              "baseline_name": "ast.parse + compile of the same modules, in memory",
              "target": "p95 < 300 ms", "passed": value < 300, "ratio": value / baseline}
    report_p95("bench.static_review", [figure], args, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

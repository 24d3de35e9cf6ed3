"""compare() of two runs whose versions hold 500 files, a handful changed.

    python -m bench.compare            # 500 files, 5 changed (a few seconds)
    python -m bench.compare --quick    # 100 files, a smoke run
    python -m bench.compare --json     # figures as JSON on stdout

A real project (SQLite log, local blob store): a one-stage pipeline in a workspace of 500
files (pipeline.yaml, the stage, configs/solo.yaml and source files of about 2 KB each) runs
once; five source files and the config then change and it runs again, both runs really
executed by the local executor. Then, in the same run, each figure is timed both ways:

- quipu: ``Quipu.compare(run_a, run_b)``, the whole call (catch-up, ref resolution, two
  manifests read from blobs, the changed files' blobs read and diffed, config, inputs,
  metrics, the summary and the size budget);
- baseline: what a script holding everything in memory would do at least: compare the two
  manifests as plain ``{path: sha256}`` dicts and run Python's ``difflib.unified_diff`` over
  the same changed files' texts (already in memory, nothing read).

Figure: p95 over repeated calls, target 200 ms.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path

from bench._util import percentile, report_p95, scratch_dir
from quipu.app.bootstrap import init_project
from quipu.core.workspaces.versions import Manifest

PIPELINE = """\
stages:
  - name: solo
    config_schema:
      lr: {type: float, default: 0.1}
    outputs:
      result: {type: json, schema: null}
"""
STAGE = """\
from quipu import sdk

lr = sdk.get_config()["lr"]
sdk.log_metric("score", 1.0 - lr, step=0)
sdk.save_output("result", {"lr": lr})
sdk.finish()
"""
SPEC = {"primary_metric": "score", "direction": "maximize", "min_value": 0.0,
        "goal_value": 1.0, "dataset_split": "val", "tolerance": 0.01,
        "context": "a generated score for the compare benchmark"}
REASON = "a run for the compare benchmark"
CHANGED = 5


def log(message: str) -> None:
    """Progress on stderr, so --json output on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)


def source(i: int, edit: str = "") -> str:
    """About 2 KB of Python: 40 lines, one of them edited when ``edit`` is given."""
    lines = [f"def f_{i}_{j}(x):\n    return x * {j} + {i}  # {'.' * 20}\n" for j in range(40)]
    if edit:
        lines[20] = f"def f_{i}_20(x):\n    return x * 21 + {i}  # {edit}\n"
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build the project, run twice, time both ways, print the figure (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 files, a smoke run")
    parser.add_argument("--json", action="store_true", help="write the results as JSON to stdout")
    args = parser.parse_args(argv)
    files, repeat = (100, 10) if args.quick else (500, 50)
    started = time.perf_counter()
    with scratch_dir("compare-") as tmp:
        q = init_project(tmp / "proj", name="bench", goal="time compare")
        try:
            q.create_workspace("ws", "compare two runs", REASON)
            slot = Path(q.mount("ws", "w1", REASON)["path"])
            (slot / "modules").mkdir()
            (slot / "configs").mkdir()
            (slot / "src").mkdir()
            (slot / "pipeline.yaml").write_text(PIPELINE)
            (slot / "modules" / "solo.py").write_text(STAGE)
            (slot / "configs" / "solo.yaml").write_text("lr: 0.1\n")
            for i in range(files - 3):
                (slot / "src" / f"m{i:03d}.py").write_text(source(i))
            q.start_workers()
            log(f"running on a version of {files} files ...")
            first = q.run("ws", reason=REASON, results_spec=SPEC, wait=True)
            q.finalize_run(first["pipeline_run_id"], {
                "primary_metric": "score", "direction": "maximize", "value": 0.9,
                "dataset_split": "val", "ml_outcome": "partial",
                "notes": "the first run of the compare benchmark"})
            for i in range(CHANGED):
                (slot / "src" / f"m{i * 7:03d}.py").write_text(source(i * 7, "edited"))
            (slot / "configs" / "solo.yaml").write_text("lr: 0.05\n")
            second = q.run("ws", reason=REASON, results_spec=SPEC, wait=True)
            q.stop_workers()
            a = first["queued"][0]["stage_run_id"]
            b = second["queued"][0]["stage_run_id"]
            answer = q.compare(a, b)
            assert answer["code"]["files_changed"] == CHANGED + 1, answer["code"]["summary"]
            assert answer["metrics"]["deltas"][0]["outcome"] == "better", answer["summary"]

            samples = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                q.compare(a, b)
                samples.append((time.perf_counter() - t0) * 1000)
            value = percentile(samples, 95)

            ma, mb = (Manifest.from_bytes(q.blobs.get_bytes(
                str(q.views.run_provenance(r)["manifest"]))) for r in (a, b))  # type: ignore[index]
            da = {p: e.sha256 for p, e in ma.files.items()}
            db = {p: e.sha256 for p, e in mb.files.items()}
            texts = {p: (q.blobs.get_bytes(da[p]).decode().splitlines(keepends=True),
                         q.blobs.get_bytes(db[p]).decode().splitlines(keepends=True))
                     for p in da if da[p] != db.get(p)}
            base_samples = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                changed = [p for p in sorted(set(da) | set(db)) if da.get(p) != db.get(p)]
                for p in changed:
                    "".join(difflib.unified_diff(*texts[p], fromfile=p, tofile=p))
                base_samples.append((time.perf_counter() - t0) * 1000)
            baseline = percentile(base_samples, 95)
        finally:
            q.close()
    figure = {"name": f"compare() of two runs on {files}-file versions ({CHANGED + 1} changed)",
              "value": value, "baseline": baseline, "unit": "ms",
              "baseline_name": "dict comparison of the manifests + difflib over the changed "
                               "files, in memory",
              "target": "p95 < 200 ms", "passed": value < 200, "ratio": value / baseline,
              "answer_chars": len(json.dumps(answer))}
    report_p95("bench.compare", [figure], args, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

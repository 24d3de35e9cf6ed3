"""Benchmark a stage launch in a Docker container against ``docker run`` by hand.

* **launch**: from the moment ``Quipu.run()`` is called to the stage's first line (it writes
  ``time.time()`` before importing anything else), with the stage on the ``docker`` backend in
  the test image made from this host's Python (``tests/docker_image.py``; no registry is
  needed). Baseline: ``docker run --rm`` of the same image with the same mounts and the same
  script, to the same first line, timed from just before the CLI starts. The target is a ratio
  under 1.5x.

::

    python -m bench.docker_launch            # ~1 minute
    python -m bench.docker_launch --quick    # a smoke run, 3 repetitions
    python -m bench.docker_launch --json

Speed is never asserted in tests; the results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ._util import SCRATCH, machine, scratch_dir
from .run import PROBE, SPEC, Figure, _check, _finalize, log, render

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = """\
stages:
  - name: probe
    outputs:
      started: {type: file, schema: null}
"""


def _image() -> str:
    import docker

    sys.path.insert(0, str(ROOT / "tests"))
    from docker_image import build_python_image

    return build_python_image(docker.from_env())


def _project(root: Path, image: str) -> Any:
    """A project whose probe stage runs on the docker backend in ``image``."""
    from quipu.app.bootstrap import init_project, open_project

    init_project(root, name="dockerbench", goal="measure what a container launch costs",
                 actor="bench:docker").close()
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config["executor"] = {"backend": "docker"}
    config["profiles"] = {"box": {"backend": "docker", "image": image, "network": False}}
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    q = open_project(root, actor="bench:docker")
    q.create_workspace("bench", "time container stages", "measure the docker backend")
    q.mount("bench", "w1", "write the benchmark stage")
    slot = q.slots.path("w1")
    (slot / "modules").mkdir()
    (slot / "modules" / "probe.py").write_text(PROBE)
    (slot / "configs").mkdir()
    (slot / "configs" / "probe.yaml").write_text("compute:\n  profile: box\n")
    (slot / "pipeline.yaml").write_text(PIPELINE)
    q.save_version("w1", "the benchmark stage")
    q.start_workers()
    return q


def _by_hand(image: str, script: Path) -> float:
    """``docker run --rm`` of the probe in ``image``: seconds from the call to its first line."""
    package = ROOT / "quipu"
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        run_dir = Path(tmp)
        (run_dir / "outputs").mkdir()
        (run_dir / "code").mkdir()
        (run_dir / "code" / "probe.py").write_text(script.read_text())
        t0 = time.time()
        subprocess.run(["docker", "run", "--rm", "--network", "none",
                        "-v", f"{run_dir}:/quipu/run", "-v", f"{package}:/opt/quipu/quipu:ro",
                        "-e", "QUIPU_RUN_DIR=/quipu/run", "-e", "PYTHONPATH=/opt/quipu",
                        image, "python3", "/quipu/run/code/probe.py"],
                       check=True, capture_output=True)
        return float((run_dir / "outputs" / "started").read_text()) - t0


def bench_launch(q: Any, image: str, reps: int) -> list[Figure]:
    """run() called -> first line in a container, against docker run -> the same line."""
    through: list[float] = []
    by_hand: list[float] = []
    script = q.slots.path("w1") / "modules" / "probe.py"
    for i in range(reps + 1):  # the first repetition warms caches and is dropped
        called = time.time()
        result = q.run("bench", stages=["probe"], reason="time one container launch",
                       results_spec=SPEC)
        result["stage_runs"] = q.wait_for([r["stage_run_id"] for r in result["queued"]],
                                          timeout=120, poll=0.05)
        ids = _check(q, result)
        run_dir = Path(q.runs.load_run(ids[0]).run_dir)
        started = float((run_dir / "outputs" / "started").read_text())
        _finalize(q, ids)
        hand = _by_hand(image, script)
        if i == 0:
            continue
        through.append((started - called) * 1000)
        by_hand.append(hand * 1000)
        log(f"  docker launch {i}/{reps}: run() -> first line {through[-1]:.0f} ms, "
            f"docker run -> first line {by_hand[-1]:.0f} ms")
    median, base = statistics.median(through), statistics.median(by_hand)
    return [Figure("docker launch: run() called -> stage's first line (median)", median, base,
                   "ms", "docker run -> first line", "< 1.5x", median < 1.5 * base,
                   {"samples_ms": [round(x, 1) for x in through],
                    "baseline_samples_ms": [round(x, 1) for x in by_hand]})]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.docker_launch")
    parser.add_argument("--quick", action="store_true", help="3 repetitions")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else args.reps
    image = _image()
    with scratch_dir("docker-launch") as tmp:
        q = _project(tmp / "proj", image)
        try:
            figures = bench_launch(q, image, reps)
        finally:
            q.close()
    if args.json:
        print(json.dumps({"machine": machine(), "image": image,
                          "results": [f.as_dict() for f in figures]}, indent=2))
    else:
        print(render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

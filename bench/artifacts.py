"""Benchmark a large artifact handed from one stage to the next: disk bytes and handoff time.

A two-stage pipeline: ``produce`` writes one file output of ``--size-mib`` MiB (1 GiB by
default) straight into ``outputs/`` and notes ``time.time()`` as its last act; ``consume``
takes it as an input and notes ``time.time()`` as its first act. Measured:

* **disk**: the bytes the project's ``.quipu/`` holds once both runs ended, counting each file
  once however many hard links it has (``st_blocks``, as ``du`` does), split into the blob
  store (and cache) and what the run directories hold beyond links to it;
* **handoff**: from ``produce``'s last act to ``consume``'s first: storing the output,
  recording the exit, queuing and launching the next run, and staging its input. The same
  pipeline with a 1 KiB output gives the part that does not depend on the size.

::

    python -m bench.artifacts               # 1 GiB, ~1 minute
    python -m bench.artifacts --size-mib 64 --json

Run it against another checkout (``PYTHONPATH=/path/to/other/checkout``) to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import textwrap
from pathlib import Path
from typing import Any

from ._util import machine, scratch_dir

__all__ = ["main", "measure"]

PIPELINE = """\
stages:
  - name: produce
    outputs:
      big: {type: file, schema: null}
  - name: consume
    inputs:
      big: {type: file, from_stage: produce, schema: null}
    outputs:
      done: {type: json, schema: null}
"""

PRODUCE = textwrap.dedent('''\
    import os, time
    from pathlib import Path

    run = Path(os.environ["QUIPU_RUN_DIR"])
    chunk = os.urandom(64 << 20)
    size = int(os.environ.get("BENCH_SIZE", "0")) or {size}
    with open(run / "outputs" / "big", "wb") as out:
        while size > 0:
            out.write(chunk[:size])
            size -= len(chunk)
    (run / ".quipu" / "bench_end").write_text(repr(time.time()))
''')

CONSUME = textwrap.dedent('''\
    import time
    _STARTED = time.time()
    import os
    from pathlib import Path

    run = Path(os.environ["QUIPU_RUN_DIR"])
    (run / ".quipu" / "bench_start").write_text(repr(_STARTED))
    (run / "outputs" / "done.json").write_text("{}")
''')

SPEC = {"primary_metric": "x", "direction": "maximize", "min_value": 0.0, "goal_value": 1.0,
        "dataset_split": "val", "tolerance": 0.1, "context": "artifact handoff benchmark"}


def _disk(root: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes allocated under ``root``, each inode counted once (as ``du`` does) and none of
    those already in ``seen`` (which gains the ones counted here)."""
    seen = set() if seen is None else seen
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            stat = os.lstat(os.path.join(dirpath, name))
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def measure(size: int) -> dict[str, Any]:
    """One pipeline with a ``size``-byte output: disk bytes and the handoff time."""
    from quipu.app.bootstrap import init_project

    with scratch_dir("artifacts-") as root:
        q = init_project(root / "proj", name="bench", goal="time a large artifact's handoff",
                         actor="bench:artifacts")
        try:
            q.create_workspace("bench", "time handoffs", "measure storing large outputs")
            q.mount("bench", "w1", "write the benchmark stages")
            slot = q.slots.path("w1")
            (slot / "modules").mkdir()
            (slot / "modules" / "produce.py").write_text(PRODUCE.format(size=size))
            (slot / "modules" / "consume.py").write_text(CONSUME)
            (slot / "pipeline.yaml").write_text(PIPELINE)
            q.save_version("w1", "the benchmark stages")
            q.start_workers()
            result = q.run("bench", reason="time a large artifact's handoff", results_spec=SPEC,
                           wait=True, wait_timeout=600)
            ids = {item["stage"]: item["stage_run_id"] for item in result["queued"]}
            runs = {s: q.runs.load_run(r) for s, r in ids.items()}
            states = {s: str(r.current) for s, r in runs.items()}
            assert all("succeeded" in s for s in states.values()), states
            end = float((Path(str(runs["produce"].run_dir)) / ".quipu" / "bench_end")
                        .read_text())
            start = float((Path(str(runs["consume"].run_dir)) / ".quipu" / "bench_start")
                          .read_text())
            data = root / "proj" / ".quipu"
            seen: set[tuple[int, int]] = set()
            blobs = _disk(data / "blobs", seen) + _disk(data / "blobcache", seen)
            return {"size": size, "handoff_s": start - end, "blob_bytes": blobs,
                    "run_dir_bytes": _disk(data / "runs", seen), "total_bytes": _disk(data)}
        finally:
            q.close()


def main(argv: list[str] | None = None) -> None:
    """Measure and print (or ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 MiB, once (a smoke run)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.repeat = 8, 1
    big = [measure(args.size_mib << 20) for _ in range(args.repeat)]
    small = [measure(1024) for _ in range(args.repeat)]
    report: dict[str, Any] = {
        "machine": machine(),
        "size_mib": args.size_mib,
        "handoff_s_median": statistics.median(r["handoff_s"] for r in big),
        "handoff_s_1kib_median": statistics.median(r["handoff_s"] for r in small),
        "blob_bytes": big[0]["blob_bytes"], "run_dir_bytes": big[0]["run_dir_bytes"],
        "total_bytes": big[0]["total_bytes"], "runs": big + small,
    }
    report["results"] = [
        {"name": "handoff of the output", "unit": "s", "value": report["handoff_s_median"],
         "baseline": report["handoff_s_1kib_median"], "baseline_name": "a 1 KiB output"},
        {"name": ".quipu/ bytes on disk", "unit": "bytes", "value": report["total_bytes"],
         "baseline": args.size_mib << 20, "baseline_name": "the output's size"},
    ]
    if args.json:
        print(json.dumps(report, indent=1))
        return
    gib = 1 << 30
    print(f"{args.size_mib} MiB output, median of {args.repeat}:")
    print(f"  handoff           {report['handoff_s_median']:.2f} s "
          f"(1 KiB output: {report['handoff_s_1kib_median']:.2f} s)")
    print(f"  disk: blobs       {report['blob_bytes'] / gib:.2f} GiB")
    print(f"  disk: run dirs    {report['run_dir_bytes'] / gib:.2f} GiB (files that are not "
          "links to blobs)")
    print(f"  disk: .quipu/     {report['total_bytes'] / gib:.2f} GiB (each inode once)")


if __name__ == "__main__":
    main()

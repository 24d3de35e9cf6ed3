"""Output statistics on a bounded sample vs one full pass over the same file.

    python -m bench.svs_stats            # a 2 GB float32 npy and a 5-million-row csv
    python -m bench.svs_stats --quick    # 200 MB and 500,000 rows, a smoke run
    python -m bench.svs_stats --json     # figures as JSON on stdout

The files are generated under /tmp (``QUIPU_BENCH_DIR``) and deleted afterwards. Each is timed
both ways in the same run, alternating, three times each (the best of each is reported; the
files stay in the page cache, so both sides read memory, not disk):

- quipu: ``quipu.outputcheck.inspect_file``, what the executor does for every npy/csv output
  (the contract check and every statistic, entropy and quantile sketch included);
- npy baseline: ``numpy.load(mmap_mode="r")`` plus one ``np.nanmean`` over the whole array;
- csv baseline: the fastest full parse at hand plus ``np.nanmean`` per numeric column:
  ``pyarrow.csv.read_csv`` (multi-threaded C++) when pyarrow is installed, and numpy's C
  ``loadtxt`` of the numeric columns without missing values.

Accuracy: the sampled ``null_ratio`` and ``entropy`` against exact values computed over the
whole file (same histogram range for float entropy), target within 1% (relative).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._util import machine, scratch_dir
from quipu import outputcheck

NAN_SHARE = 0.05
EMPTY_SHARE = 0.03
CATEGORIES = 1000
WORDS = [f"w{i:02d}" for i in range(20)]


def log(message: str) -> None:
    """Progress on stderr, so --json output on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)


def make_npy(path: Path, elements: int, width: int = 128) -> None:
    """A float32 array of ``elements`` values (rows of ``width``), normal with NaN holes."""
    rows = elements // width
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width))
    rng = np.random.default_rng(7)
    step = 1 << 15
    for start in range(0, rows, step):
        block = rng.standard_normal((min(step, rows - start), width), dtype=np.float32)
        block[rng.random(block.shape, dtype=np.float32) < NAN_SHARE] = np.nan
        out[start:start + len(block)] = block
    out.flush()
    del out


def make_csv(path: Path, rows: int) -> None:
    """``id,x,label,word``: x normal with empty fields, label one of CATEGORIES, a word."""
    rng = np.random.default_rng(8)
    with path.open("w") as handle:
        handle.write("id,x,label,word\n")
        step = 500_000
        for start in range(0, rows, step):
            n = min(step, rows - start)
            xs = np.char.mod("%.5f", rng.standard_normal(n))
            xs[rng.random(n) < EMPTY_SHARE] = ""
            labels = rng.integers(0, CATEGORIES, n)
            words = np.array(WORDS)[rng.integers(0, len(WORDS), n)]
            ids = np.arange(start, start + n)
            handle.write("".join(f"{i},{x},{lab},{w}\n" for i, x, lab, w in
                                 zip(ids.tolist(), xs.tolist(), labels.tolist(),
                                     words.tolist(), strict=True)))


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def npy_baseline(path: Path) -> float:
    """The full pass: memory-map the file and take the NaN-aware mean of every value."""
    array = np.load(path, mmap_mode="r")
    return float(np.nanmean(array))


def exact_npy(path: Path, lo: float, hi: float) -> tuple[float, float]:
    """(null ratio, histogram entropy over [lo, hi]) of the whole array, in chunks."""
    array = np.load(path, mmap_mode="r")
    nans, total = 0, 0
    hist = np.zeros(outputcheck.HIST_BINS, dtype=np.int64)
    for start in range(0, array.shape[0], 1 << 16):
        block = np.asarray(array[start:start + (1 << 16)], dtype=np.float64).reshape(-1)
        missing = np.isnan(block)
        nans += int(missing.sum())
        total += block.size
        hist += np.histogram(block[~missing], bins=outputcheck.HIST_BINS, range=(lo, hi))[0]
    p = hist[hist > 0] / hist.sum()
    return nans / total, float(-(p * np.log2(p)).sum())


def csv_baselines(path: Path) -> dict[str, Any]:
    """The available full-parse baselines: name -> callable."""
    out: dict[str, Any] = {}
    try:
        import pyarrow.csv as pacsv

        def arrow() -> float:
            table = pacsv.read_csv(path)
            means = [float(np.nanmean(table.column(c).to_numpy(zero_copy_only=False)
                                      .astype(np.float64)))
                     for c in ("id", "x", "label")]
            return sum(means)
        out["pyarrow.csv.read_csv + nanmean"] = arrow
    except ImportError:
        pass

    def loadtxt() -> float:
        data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 2), dtype=np.float64)
        return float(np.nanmean(data))
    out["np.loadtxt (2 numeric columns) + nanmean"] = loadtxt
    return out


def exact_csv(path: Path) -> dict[str, tuple[float, float]]:
    """{column: (null ratio, entropy of the value frequencies)} for label and word, and the
    null ratio of x, over every row."""
    labels: dict[str, int] = {}
    words: dict[str, int] = {}
    empty, rows = 0, 0
    with path.open() as handle:
        next(handle)
        for line in handle:
            _, x, label, word = line.rstrip("\n").split(",")
            rows += 1
            empty += x == ""
            labels[label] = labels.get(label, 0) + 1
            words[word] = words.get(word, 0) + 1

    def entropy(counts: dict[str, int]) -> float:
        p = np.array(list(counts.values()), dtype=np.float64) / rows
        return float(-(p * np.log2(p)).sum())
    return {"x": (empty / rows, math.nan), "label": (0.0, entropy(labels)),
            "word": (0.0, entropy(words))}


def rel(a: float, b: float) -> float:
    """|a - b| / |b| (absolute when b is 0)."""
    return abs(a - b) / abs(b) if b else abs(a - b)


def main(argv: list[str] | None = None) -> int:
    """Generate, time both ways, check the accuracy, print the figures (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.svs_stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 MB and 500,000 rows")
    parser.add_argument("--json", action="store_true", help="write the results as JSON")
    args = parser.parse_args(argv)
    elements = (50 if args.quick else 512) * (1 << 20)  # float32: 200 MB or 2 GiB
    rows = 500_000 if args.quick else 5_000_000
    figures: dict[str, Any] = {"machine": machine()}
    with scratch_dir("svs-") as tmp:
        npy, table = tmp / "big.npy", tmp / "big.csv"
        log(f"writing {elements * 4 / 2**30:.2f} GiB of float32 to {npy}")
        make_npy(npy, elements)
        log(f"writing {rows:,} csv rows to {table}")
        make_csv(table, rows)
        figures["npy_bytes"], figures["csv_bytes"] = npy.stat().st_size, table.stat().st_size

        quipu_t, base_t = [], []
        stats: dict[str, Any] = {}
        npy_baseline(npy)  # warm the page cache for both sides
        for _ in range(3):
            t, _mean = timed(lambda: npy_baseline(npy))
            base_t.append(t)
            t, (violations, stats) = timed(lambda: outputcheck.inspect_file(npy, "npy", {}))
            quipu_t.append(t)
            assert violations == []
        nulls, entropy = exact_npy(npy, stats["min"], stats["max"])
        figures["npy"] = {"quipu_s": min(quipu_t), "baseline_s": min(base_t),
                          "ratio": min(quipu_t) / min(base_t), "sample": stats["sample"],
                          "null_ratio": [stats["null_ratio"], nulls,
                                         rel(stats["null_ratio"], nulls)],
                          "entropy": [stats["entropy"], entropy, rel(stats["entropy"], entropy)]}
        log(f"npy: {figures['npy']}")

        baselines = csv_baselines(table)
        times: dict[str, list[float]] = {name: [] for name in baselines}
        quipu_t = []
        for _ in range(3):
            for name, fn in baselines.items():
                times[name].append(timed(fn)[0])
            t, (violations, stats) = timed(lambda: outputcheck.inspect_file(table, "csv", {}))
            quipu_t.append(t)
            assert violations == []
        exact = exact_csv(table)
        columns = stats["column_stats"]
        figures["csv"] = {
            "quipu_s": min(quipu_t), "rows": stats["rows"], "sample": stats["sample"],
            "baselines_s": {name: min(t) for name, t in times.items()},
            "ratios": {name: min(quipu_t) / min(t) for name, t in times.items()},
            "null_ratio_x": [columns["x"]["null_ratio"], exact["x"][0],
                             rel(columns["x"]["null_ratio"], exact["x"][0])],
            "entropy_label": [columns["label"]["entropy"], exact["label"][1],
                              rel(columns["label"]["entropy"], exact["label"][1])],
            "entropy_word": [columns["word"]["entropy"], exact["word"][1],
                             rel(columns["word"]["entropy"], exact["word"][1])],
        }
        log(f"csv: {figures['csv']}")
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        n, c = figures["npy"], figures["csv"]
        print(f"npy {figures['npy_bytes'] / 2**30:.2f} GiB: quipu {n['quipu_s']:.3f} s, "
              f"load+nanmean {n['baseline_s']:.3f} s, ratio {n['ratio']:.3f}; null ratio "
              f"off by {n['null_ratio'][2]:.3%}, entropy by {n['entropy'][2]:.3%}")
        for name, ratio in c["ratios"].items():
            print(f"csv {c['rows']:,} rows: quipu {c['quipu_s']:.3f} s, {name} "
                  f"{c['baselines_s'][name]:.3f} s, ratio {ratio:.3f}")
        print(f"csv null ratio off by {c['null_ratio_x'][2]:.3%}, entropy by "
              f"{c['entropy_label'][2]:.3%} (label), {c['entropy_word'][2]:.3%} (word)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

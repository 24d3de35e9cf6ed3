"""Output contracts and output statistics, defined once for the SDK and the executors.

A stage declares what each output holds (``pipeline.yaml``: shape, rank, dtype, columns, json
kind). The SDK checks the data before it writes it (:func:`check_array`, :func:`check_columns`,
:func:`check_json_value`); the executor checks the file the stage left behind again
(:func:`check_file`), because a stage may write a file itself or lie in an npy header, and then
summarises it on a bounded sample (:func:`summarise_file`), so a 10 GB output costs about as
much as a 10 MB one:

* npy: the array is memory-mapped and read in :data:`SAMPLE_BLOCKS` evenly spaced runs of whole
  rows, :data:`SAMPLE_LIMIT` elements at most (a block of contiguous rows touches few pages;
  evenly strided single elements would touch every page of the file);
* csv: the rows stream past as bytes once; numpy counts every row, ragged row and empty field
  a chunk at a time, and a uniform reservoir keeps :data:`ROW_LIMIT` rows, the only ones
  parsed (one pass, bounded memory).

Like :mod:`quipu.rundir`, this module imports nothing of ours (the SDK must stand alone) and
imports numpy only when a function needs it, so the engine pays nothing for importing it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CONTRACT_MODES",
    "DEFAULT_CONTRACT_MODE",
    "HIST_BINS",
    "JSON_KINDS",
    "NULL_TOKENS",
    "QUANTILES",
    "ROW_LIMIT",
    "SAMPLE_BLOCKS",
    "SAMPLE_LIMIT",
    "TOP_K",
    "Violation",
    "check_array",
    "check_columns",
    "check_file",
    "check_json_value",
    "inspect_file",
    "json_kind",
    "summarise_file",
    "summarise_values",
]

CONTRACT_MODES = ("blocking", "warning", "silent")
"""``blocking``: a broken contract fails the stage; ``warning``: it is a recorded finding and
the run goes on; ``silent``: it is not checked."""
DEFAULT_CONTRACT_MODE = "warning"

SAMPLE_LIMIT = 1_000_000
"""Elements of an npy output read for its statistics, at most."""
SAMPLE_BLOCKS = 1024
"""Evenly spaced runs of contiguous rows the npy sample is made of."""
ROW_LIMIT = 50_000
"""Rows of a csv output parsed for its statistics, at most (a uniform reservoir beyond; rows,
ragged rows and empty fields are still counted over every row)."""
MAX_COLUMNS = 32
"""Columns of a csv (features of an array) summarised one by one, at most."""
HIST_BINS = 64
"""Bins of the histogram whose entropy a float output's ``entropy`` is."""
QUANTILES = 21
"""Points of the quantile sketch kept with numeric statistics (every 5%), for drift checks."""
TOP_K = 10
"""``top_k_share`` is the share of the sample the TOP_K most common values cover."""
NULL_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
"""csv fields counted as missing."""

JSON_KINDS: Mapping[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "number": (int, float),
    "boolean": (bool,), "null": (type(None),),
}


@dataclass(frozen=True)
class Violation:
    """One way an output breaks its declared contract: a snake_case ``signal`` and a message
    precise enough to fix it from."""

    signal: str
    message: str


# --- contracts --------------------------------------------------------------------------------


def _shape_text(shape: Iterable[Any]) -> str:
    return str(["*" if d in (None, -1) else d for d in shape])


def check_array(shape: tuple[int, ...], dtype: Any, schema: Mapping[str, Any]) -> list[Violation]:
    """How an array of ``shape`` and ``dtype`` breaks ``schema`` (rank, shape, dtype).

    A 0-dimensional array (a bare scalar) breaks every schema that does not ask for rank 0.
    """
    import numpy as np

    found: list[Violation] = []
    rank = schema.get("rank")
    want_shape = schema.get("shape")
    if len(shape) == 0 and rank != 0 and want_shape != []:
        found.append(Violation("zero_dim_array", "a 0-dimensional array (a single scalar) was "
                               "saved; save an array of rank >= 1, e.g. np.asarray([value]), "
                               "or declare rank: 0"))
        return found
    if rank is not None and len(shape) != rank:
        found.append(Violation("rank_mismatch", f"expected rank {rank}, got rank {len(shape)} "
                               f"(shape {list(shape)})"))
    elif want_shape is not None:
        fits = len(want_shape) == len(shape) and all(
            w in (None, -1) or w == g for w, g in zip(want_shape, shape, strict=False))
        if not fits:
            found.append(Violation("shape_mismatch", f"expected shape {_shape_text(want_shape)} "
                                   f"('*' is any size), got {list(shape)}"))
    want_dtype = schema.get("dtype")
    if want_dtype is not None:
        try:
            wanted = np.dtype(want_dtype)
        except TypeError:
            found.append(Violation("dtype_mismatch", f"the schema's dtype {want_dtype!r} is not "
                                   "a numpy dtype"))
        else:
            if np.dtype(dtype) != wanted:
                found.append(Violation("dtype_mismatch", f"expected dtype {wanted}, got "
                                       f"{np.dtype(dtype)}; convert with "
                                       f"array.astype({str(wanted)!r})"))
    return found


def check_columns(columns: list[str], schema: Mapping[str, Any]) -> list[Violation]:
    """How a table with ``columns`` breaks the declared ``columns`` (names and order)."""
    wanted = schema.get("columns")
    if wanted is None or list(wanted) == columns:
        return []
    missing = [c for c in wanted if c not in columns]
    extra = [c for c in columns if c not in wanted]
    detail = f"missing {missing}, unexpected {extra}" if missing or extra else "order differs"
    return [Violation("columns_mismatch",
                      f"expected columns {list(wanted)}, got {columns} ({detail})")]


def json_kind(value: Any) -> str:
    """The JSON kind of a parsed value: object, array, string, number, boolean or null."""
    if isinstance(value, bool):
        return "boolean"
    for kind, types in JSON_KINDS.items():
        if isinstance(value, types):
            return kind
    return type(value).__name__


def check_json_value(value: Any, schema: Mapping[str, Any]) -> list[Violation]:
    """How a parsed JSON value breaks the declared ``json_kind``."""
    wanted = schema.get("json_kind")
    got = json_kind(value)
    if wanted is None or wanted == got:
        return []
    return [Violation("json_kind_mismatch", f"expected a JSON {wanted}, got a JSON {got}")]


@dataclass(frozen=True)
class _NpyHeader:
    shape: tuple[int, ...]
    dtype: Any
    fortran: bool
    offset: int


def _npy_header(path: Path) -> tuple[_NpyHeader | None, list[Violation]]:
    """The npy header of ``path``, or the violation saying why it cannot be trusted."""
    import numpy as np

    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            offset = handle.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        return None, [Violation("npy_unreadable", f"the file is not a valid npy file: {exc}")]
    if dtype.hasobject:
        return None, [Violation("npy_object_dtype", "the npy file holds Python objects "
                                "(pickled); save a numeric or string array")]
    data = math.prod(shape) * dtype.itemsize
    if size - offset != data:
        return None, [Violation(
            "npy_header_mismatch",
            f"the npy header says shape {list(shape)} of {dtype} ({data} bytes of data), but "
            f"the file holds {size - offset} bytes after its header; write it with np.save")]
    return _NpyHeader(tuple(shape), dtype, bool(fortran), offset), []


def check_file(path: Path, kind: str | None, schema: Mapping[str, Any] | None) -> list[Violation]:
    """How the output file at ``path`` of type ``kind`` breaks its contract.

    npy: a header that does not match the file's size, pickled objects, a 0-dimensional array,
    rank, shape, dtype. csv: no header, rows whose number of fields differs from the header's
    (every row of a file up to :data:`ROW_LIMIT` rows; the sampled rows of a bigger one),
    columns. json: text that is not JSON (NaN and Infinity included), the json kind. Other
    types: nothing.
    """
    return inspect_file(path, kind, schema, stats=False)[0]


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON (write null, or a number)")


def _load_strict_json(path: Path) -> Any:
    with path.open("rb") as handle:
        return json.loads(handle.read(), parse_constant=_reject_constant)


# --- csv reading on a bounded sample --------------------------------------------------------


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]
    total: int
    sampled: bool
    ragged: list[tuple[int, int]]  # (row number, fields) of rows of the wrong width
    problem: Violation | None = None
    empty: list[int] | None = None  # empty fields per column over EVERY row, when counted
    ragged_count: int = 0
    exact: bool = True  # ragged rows and empty fields were counted over every row

    def ragged_violations(self) -> list[Violation]:
        if not self.ragged:
            return []
        shown = ", ".join(f"row {n} has {k}" for n, k in self.ragged[:5])
        count = max(self.ragged_count, len(self.ragged))
        more = f" and {count - 5} more" if count > 5 else ""
        where = "" if self.exact else " of the sampled rows"
        return [Violation("ragged_csv", f"the header has {len(self.header)} fields but "
                          f"{shown}{more}{where}; every row needs one field per column")]


_CHUNK_BYTES = 1 << 24


class _Scan:
    """One pass over the data rows of a csv file as bytes, a chunk at a time.

    numpy finds the line ends, commas and empty fields of a whole chunk at once, so every row
    is counted (rows, ragged rows, empty fields per column) without a Python step per row,
    and a reservoir (Algorithm R, decided per chunk) keeps a uniform sample of ``limit`` rows
    as raw lines. A chunk with a quote character cannot be split on commas: from then on
    only the sample is looked at (``exact`` is False).
    """

    def __init__(self, width: int, limit: int, seed: int) -> None:
        import numpy as np

        self.width, self.limit = width, limit
        self.rng = np.random.default_rng(seed)
        self.sample: list[bytes] = []
        self.numbers: list[int] = []
        self.total = 0
        self.empty = np.zeros(width, dtype=np.int64)
        self.ragged: list[tuple[int, int]] = []
        self.ragged_count = 0
        self.exact = True

    def chunk(self, body: bytes) -> None:
        """Take the complete lines of ``body`` (it ends with a newline)."""
        import numpy as np

        data = np.frombuffer(body, dtype=np.uint8)
        if self.exact and b'"' in body:
            self.exact = False
        ends = np.flatnonzero(data == 10)
        if len(ends) == 0:
            return
        starts = np.empty_like(ends)
        starts[0], starts[1:] = 0, ends[:-1] + 1
        stops = ends - (data[np.maximum(ends - 1, 0)] == 13)  # a \r before the \n
        rows = stops > starts  # blank lines are not rows
        starts, stops = starts[rows], stops[rows]
        n = len(starts)
        if n == 0:
            return
        first = self.total
        if self.exact:
            self._count(data, starts, stops, first)
        self.total += n
        # Algorithm R: row t (0-based, over the file) fills slot t while t < limit, then
        # replaces a random slot with probability limit / (t + 1). Within a chunk only the
        # last row sent to each slot survives, so only those lines are cut out of the bytes.
        t = first + np.arange(n)
        fill = t < self.limit
        chosen = np.flatnonzero(fill | (self.rng.random(n) * (t + 1) < self.limit))
        slots = np.where(fill[chosen], t[chosen], self.rng.integers(0, self.limit,
                                                                     size=len(chosen)))
        last_first = np.unique(slots[::-1], return_index=True)[1]
        winners = chosen[::-1][last_first]
        for slot, row in zip(slots[::-1][last_first].tolist(), winners.tolist(), strict=True):
            line = body[starts[row]:stops[row]]
            if slot < len(self.sample):
                self.sample[slot], self.numbers[slot] = line, first + row + 1
            else:
                self.sample.append(line)
                self.numbers.append(first + row + 1)


    def _count(self, data: Any, starts: Any, stops: Any, first: int) -> None:
        """Fields per row (ragged rows) and empty fields per column, for every row of a chunk.

        Only byte masks over the whole chunk; positions are looked up for the commas, the
        row ends and the (few) empty fields, never for every field.
        """
        import numpy as np

        commas = np.flatnonzero(data == 44)
        before = np.searchsorted(commas, starts)
        fields = np.searchsorted(commas, stops) - before + 1
        bad = np.flatnonzero(fields != self.width)
        self.ragged_count += len(bad)
        for row in bad[:max(5 - len(self.ragged), 0)].tolist():
            self.ragged.append((first + row + 1, int(fields[row])))
        # An empty field ends at a comma or a row's end and starts right there: its bound
        # follows a comma or the row's start directly.
        opens = np.zeros(len(data) + 1, dtype=bool)
        opens[starts] = True
        opens[commas + 1] = True
        at_comma = commas[opens[commas]]
        at_end = stops[opens[stops]]
        empty_at = np.concatenate([at_comma, at_end])
        if len(empty_at) == 0:
            return
        row = np.searchsorted(starts, empty_at, side="right") - 1
        column = np.searchsorted(commas, empty_at) - before[row]
        column = column[column < self.width]
        self.empty += np.bincount(column, minlength=self.width)[:self.width]


def _read_csv(path: Path, limit: int | None = None, seed: int = 0) -> _Table:
    """The header, a uniform sample of at most ``limit`` rows, and what every row shows.

    The data rows stream past as bytes (:class:`_Scan`): rows, ragged rows and empty fields
    per column are counted over every row, and a reservoir keeps a uniform sample whose lines
    alone are parsed by the csv module. Row numbers count data rows from 1. A file with
    quotes is parsed whole by the csv module when it holds at most ``limit`` rows (quoted
    commas and line breaks included); a bigger one is looked at through its sample only.
    """

    limit = ROW_LIMIT if limit is None else limit
    with path.open("rb") as raw:
        first = raw.readline()
        try:
            header = next(csv.reader([first.decode("utf-8", errors="replace")]))
            if not header:
                raise StopIteration
        except StopIteration:
            return _Table([], [], 0, False, [], Violation(
                "csv_no_header", "the csv file is empty: it needs a header row"))
        except csv.Error as exc:
            return _Table([], [], 0, False, [], Violation(
                "csv_unreadable", f"the csv header cannot be parsed: {exc}"))
        scan = _Scan(len(header), limit, seed)
        carry = b""
        while chunk := raw.read(_CHUNK_BYTES):
            buffer = carry + chunk
            cut = buffer.rfind(b"\n") + 1
            carry = buffer[cut:]
            if cut:
                scan.chunk(buffer[:cut])
        if carry.strip():
            scan.chunk(carry + b"\n")
    if not scan.exact and scan.total <= limit:
        return _read_whole_csv(path, header)
    try:
        rows = list(csv.reader(line.decode("utf-8", errors="replace")
                               for line in scan.sample))
    except csv.Error as exc:
        return _Table(header, [], 0, False, [], Violation(
            "csv_unreadable", f"a row of the csv file cannot be parsed: {exc}"))
    ragged, count = scan.ragged, scan.ragged_count
    if not scan.exact:
        ragged = sorted((n, len(r)) for n, r in zip(scan.numbers, rows, strict=True)
                        if len(r) != len(header))
        count = len(ragged)
    return _Table(header, rows, scan.total, scan.total > limit, ragged[:5],
                  empty=[int(e) for e in scan.empty] if scan.exact else None,
                  ragged_count=count, exact=scan.exact)


def _read_whole_csv(path: Path, header: list[str]) -> _Table:
    """A small csv with quotes, parsed whole by the csv module."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        try:
            rows = [r for r in reader if r]
        except csv.Error as exc:
            return _Table(header, [], 0, False, [], Violation(
                "csv_unreadable", f"a row of the csv file cannot be parsed: {exc}"))
    ragged = [(i + 1, len(r)) for i, r in enumerate(rows) if len(r) != len(header)]
    return _Table(header, rows, len(rows), False, ragged[:5], ragged_count=len(ragged))


# --- statistics -----------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A finite float rounded to 6 significant digits (the stats travel in events), or None."""
    number = float(value)
    if not math.isfinite(number):
        return None
    return float(f"{number:.6g}")


def _entropy(counts: np.ndarray[Any, Any]) -> float:
    import numpy as np

    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def summarise_values(values: np.ndarray[Any, Any], *, count: int | None = None,
                     sampled: bool = False, vocab_size: int | None = None,
                     nulls: int = 0) -> dict[str, Any]:
    """Statistics of a 1-d sample ``values`` of an output of ``count`` values in all.

    Numeric values: ``null_ratio`` (NaN share, plus ``nulls`` counted before, e.g. empty csv
    fields), then over the finite values ``mean``, ``std``, ``min``, ``max``, ``unique``,
    ``top_k_share``, ``entropy`` in bits (of the value frequencies for integers and booleans,
    of a :data:`HIST_BINS`-bin histogram over [min, max] for floats) and ``quantiles`` (the
    drift sketch). Text values: ``null_ratio``, ``unique``, ``top_k_share``, ``top`` (the most
    common value, cut to 40 characters) and the entropy of their frequencies.
    ``vocab_utilisation`` is ``unique / vocab_size`` when declared.
    """
    import numpy as np

    n = int(values.size) + nulls
    stats: dict[str, Any] = {"count": int(count if count is not None else n),
                             "sample": n, "sampled": sampled}
    kind = values.dtype.kind
    if kind in "biuf":
        as_float = values.astype(np.float64, copy=False)
        missing = np.isnan(as_float) if kind == "f" else np.zeros(values.size, dtype=bool)
        stats["null_ratio"] = _num((int(missing.sum()) + nulls) / n) if n else 0.0
        finite_mask = np.isfinite(as_float)
        finite = values[finite_mask]
        if finite.size == 0:
            stats.update(mean=None, std=None, min=None, max=None, unique=0, top_k_share=None,
                         entropy=0.0)
            return stats
        f64 = finite.astype(np.float64, copy=False)
        with np.errstate(all="ignore"):
            stats.update(mean=_num(f64.mean()), std=_num(f64.std()), min=_num(f64.min()),
                         max=_num(f64.max()))
        uniques, counts = np.unique(finite, return_counts=True)
        stats["unique"] = int(uniques.size)
        top = np.sort(counts)[::-1][:TOP_K]
        stats["top_k_share"] = _num(top.sum() / finite.size)
        if kind == "f":
            lo, hi = float(f64.min()), float(f64.max())
            if lo == hi:
                stats["entropy"] = 0.0
            else:
                hist, _ = np.histogram(f64, bins=HIST_BINS, range=(lo, hi))
                stats["entropy"] = _num(_entropy(hist))
        else:
            stats["entropy"] = _num(_entropy(counts))
        qs = np.quantile(f64, np.linspace(0.0, 1.0, QUANTILES))
        stats["quantiles"] = [_num(q) for q in qs]
    else:
        text = values.astype(str)
        present = text[~np.isin(text, list(NULL_TOKENS))] if kind in "US" else text
        stats["null_ratio"] = _num((values.size - present.size + nulls) / n) if n else 0.0
        uniques, counts = np.unique(present, return_counts=True)
        stats["unique"] = int(uniques.size)
        top = np.sort(counts)[::-1][:TOP_K]
        stats["top_k_share"] = _num(top.sum() / present.size) if present.size else None
        if uniques.size:
            stats["top"] = str(uniques[int(np.argmax(counts))])[:40]
        stats["entropy"] = _num(_entropy(counts))
    if vocab_size:
        stats["vocab_utilisation"] = _num(stats["unique"] / vocab_size)
    return stats


def _npy_sample(path: Path, header: _NpyHeader) -> tuple[np.ndarray[Any, Any], bool]:
    """Up to :data:`SAMPLE_LIMIT` elements as (rows, row width): whole rows in evenly spaced
    blocks of a memory map, so only the pages of the sample are read."""
    import numpy as np

    total = math.prod(header.shape)
    if header.fortran and len(header.shape) > 1:
        # Column-major: rows are not contiguous; sample flat elements in blocks instead.
        header = _NpyHeader((total,), header.dtype, False, header.offset)
    rows = header.shape[0] if header.shape else 1
    width = max(total // rows, 1) if rows else 1
    mapped = np.memmap(path, dtype=header.dtype, mode="r", offset=header.offset,
                       shape=(rows, width))
    if total <= SAMPLE_LIMIT:
        return np.array(mapped), False
    per_block = max(SAMPLE_LIMIT // (SAMPLE_BLOCKS * width), 1)
    blocks = min(SAMPLE_BLOCKS, max(SAMPLE_LIMIT // (per_block * width), 1))
    starts = np.linspace(0, rows - per_block, blocks).astype(np.int64)
    return np.concatenate([mapped[s:s + per_block] for s in starts.tolist()]), True


def _feature_summary(sample: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Features (columns of a 2-d sample) that never change over the sampled rows."""
    import numpy as np

    if sample.ndim != 2 or sample.shape[0] < 2 or sample.shape[1] < 2 \
            or sample.dtype.kind not in "biuf":
        return {}
    with np.errstate(invalid="ignore"):
        spread = np.ptp(sample.astype(np.float64, copy=False), axis=0)
    constant = np.nonzero(spread == 0)[0]
    return {"features": int(sample.shape[1]), "constant_features": int(constant.size),
            "constant_feature_index": constant[:10].tolist()}


def summarise_file(path: Path, kind: str | None,
                   schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Statistics of an npy or csv output file on a bounded sample (see :func:`inspect_file`)."""
    return inspect_file(path, kind, schema)[1]


def inspect_file(path: Path, kind: str | None, schema: Mapping[str, Any] | None = None, *,
                 stats: bool = True) -> tuple[list[Violation], dict[str, Any]]:
    """The contract violations (:func:`check_file`) and, with ``stats``, the statistics of an
    output file, reading it once.

    Statistics are ``{}`` for types other than npy and csv, and for a file that breaks its
    contract too badly to read (a lying npy header, no csv header). npy:
    :func:`summarise_values` over the sample, plus ``shape``, ``dtype`` and, for 2-d arrays,
    the features that never change. csv: ``rows``, ``columns`` and ``column_stats`` (one
    :func:`summarise_values` per column, numeric when every present field parses as a number;
    the first :data:`MAX_COLUMNS` columns).
    """
    import numpy as np

    schema = schema or {}
    vocab = schema.get("vocab_size")
    if not path.is_file():
        return [], {}
    if kind == "npy":
        header, found = _npy_header(path)
        if header is None:
            return found, {}
        found = check_array(header.shape, header.dtype, schema)
        if not stats or not header.shape:
            return found, {}
        sample, sampled = _npy_sample(path, header)
        summary = summarise_values(sample.reshape(-1), count=math.prod(header.shape),
                                   sampled=sampled, vocab_size=vocab)
        summary.update(shape=list(header.shape), dtype=str(header.dtype))
        if len(header.shape) == 2 and not header.fortran:
            summary.update(_feature_summary(sample))
        return found, summary
    if kind == "json":
        try:
            value = _load_strict_json(path)
        except ValueError as exc:
            return [Violation("invalid_json", f"the file is not valid JSON: {exc}")], {}
        return check_json_value(value, schema), {}
    if kind != "csv":
        return [], {}
    table = _read_csv(path)
    if table.problem is not None:
        return [table.problem], {}
    found = table.ragged_violations() + check_columns(table.header, schema)
    if not stats:
        return found, {}
    columns: dict[str, Any] = {}
    width = len(table.header)
    good = [r for r in table.rows if len(r) == width]
    for index, name in enumerate(table.header[:MAX_COLUMNS]):
        cells = [r[index] for r in good]
        present = [c for c in cells if c not in NULL_TOKENS]
        values: Any = np.asarray(present, dtype=str)
        try:
            numbers = values.astype(np.float64)
        except ValueError:
            pass
        else:
            integral = all("." not in c and "e" not in c.lower() for c in present[:1000])
            values = numbers.astype(np.int64) if integral and np.all(
                np.isfinite(numbers)) else numbers
        summary = summarise_values(values, count=table.total, sampled=table.sampled,
                                   nulls=len(cells) - len(present), vocab_size=vocab)
        if table.empty is not None and table.sampled and table.total:
            # Empty fields were counted over every row: the exact part of the null ratio.
            other = sum(1 for c in cells if c != "" and c in NULL_TOKENS) / max(len(cells), 1)
            summary["null_ratio"] = _num(table.empty[index] / table.total + other)
        columns[name] = summary
    return found, {"rows": table.total, "columns": table.header, "sampled": table.sampled,
                   "sample": len(table.rows), "column_stats": columns,
                   **({"columns_omitted": width - MAX_COLUMNS} if width > MAX_COLUMNS else {})}

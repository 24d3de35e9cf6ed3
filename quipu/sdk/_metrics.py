"""Metrics: validated points buffered in memory and appended to ``.quipu/metrics.jsonl``.

A mistake in how a call is written (a bad name, a negative step) raises at once, because it will
fail the same way every time. A bad value coming out of the data (a bool, a clock that is off) is
skipped with a warning, because a long training run should not die over one point. A NaN or
infinite value is a fact about the run (it diverged), so it is recorded, not skipped: JSON has
no NaN, so its line says ``"value": null, "non_finite": "nan" | "inf" | "-inf"``.
"""

from __future__ import annotations

import atexit
import math
import numbers
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from quipu.rundir import METRICS
from quipu.sdk._context import RunContext, append_bytes, current, on_flush, on_release

__all__ = [
    "FLUSH_EVERY",
    "FLUSH_INTERVAL",
    "MAX_METRIC_NAMES",
    "METRIC_NAME",
    "check_metric_name",
    "log_metric",
    "log_metrics",
]

METRIC_NAME = re.compile(r"[A-Za-z][\w.\-/:]{0,255}", re.ASCII)
"""What a metric name looks like (matched in full): ``loss``, ``val/acc``, ``lr:group-0``."""
MAX_METRIC_NAMES = 10_000
FLUSH_EVERY = 100
"""Buffered points that trigger a write."""
FLUSH_INTERVAL = 1.0
"""Seconds after the last write at which buffered points are written anyway."""
_TICK = 0.25
MAX_FUTURE = 24 * 3600.0
MAX_PAST = 10 * 365.25 * 24 * 3600.0


@dataclass
class _Series:
    """What one process has seen of one run's metrics."""

    ctx: RunContext
    uses_step: dict[str, bool] = field(default_factory=dict)
    buffer: list[dict[str, Any]] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)

    def write(self) -> None:
        """Append the buffer as one write of whole lines; caller holds ``ctx.lock``."""
        self.last_flush = time.monotonic()
        if not self.buffer:
            return
        # Names match METRIC_NAME (no quote or backslash) and values are finite floats whose
        # repr is valid JSON (a non-finite one is written as null plus its kind), so each line
        # is formatted directly: json.dumps per point was a fifth of log_metric's cost.
        data = "".join(
            f'{{"name":"{p["name"]}","value":{_json_value(p["value"])},'
            f'"step":{"null" if p["step"] is None else p["step"]},"ts":{p["ts"]!r}}}\n'
            for p in self.buffer).encode()
        self.buffer.clear()
        append_bytes(self.ctx.side_file(METRICS), data)


def _json_value(value: float) -> str:
    """A value as JSON text: its repr when finite, else ``null`` and its kind after it."""
    if math.isfinite(value):
        return repr(value)
    kind = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f'null,"non_finite":"{kind}"'


_series: dict[Path, _Series] = {}
_series_lock = threading.Lock()
_flusher: threading.Thread | None = None


def check_metric_name(name: object) -> str:
    """``name`` if it is a valid metric name, else ValueError saying what a name looks like."""
    if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
        raise ValueError(
            f"invalid metric name {name!r}: a name starts with an ASCII letter and continues "
            "with up to 255 letters, digits, '_', '.', '-', '/' or ':' (e.g. 'val/loss')"
        )
    return name


def _real(value: object) -> float | str:
    """``value`` as a float (NaN and infinities included), or the reason it is not one."""
    if type(value) is float and math.isfinite(value):  # the common case, without ABC checks
        return value
    if isinstance(value, bool | np.bool_):
        return f"{value!r} is a bool, not a number; log float(value) if you mean 0/1"
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if not isinstance(value, numbers.Real):
        return (
            f"{type(value).__name__} {value!r:.80} is not a real number; "
            "log a float (for a tensor, value.item())"
        )
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return f"{value!r:.80} does not fit in a float"
    return number


def _step(step: object) -> int | None:
    """``step`` as an int, or ValueError: steps are counted by code, so a bad one is a bug."""
    if step is None:
        return None
    if type(step) is int and step >= 0:  # the common case, without ABC checks
        return step
    if isinstance(step, bool | np.bool_) or not isinstance(step, numbers.Integral):
        raise ValueError(f"step must be a non-negative int or None, got {step!r}")
    if int(step) < 0:
        raise ValueError(f"step must be a non-negative int or None, got {step!r}")
    return int(step)


def _timestamp(timestamp: object) -> float | None:
    """``timestamp`` as epoch seconds; ValueError when it is not a time at all."""
    if timestamp is None:
        return None
    if isinstance(timestamp, datetime):
        return timestamp.timestamp()
    if isinstance(timestamp, bool) or not isinstance(timestamp, numbers.Real):
        raise ValueError(
            f"timestamp must be epoch seconds (float) or a datetime, got {timestamp!r}"
        )
    return float(timestamp)


def _series_for(ctx: RunContext) -> _Series:
    global _flusher
    series = _series.get(ctx.run_dir)
    if series is not None and series.ctx is ctx and _flusher is not None:
        return series  # hot path; the flusher thread is a daemon that never exits on its own
    with _series_lock:
        series = _series.get(ctx.run_dir)
        if series is None or series.ctx is not ctx:
            series = _series[ctx.run_dir] = _Series(ctx)
        if _flusher is None or not _flusher.is_alive():
            _flusher = threading.Thread(target=_flush_stale_forever, daemon=True,
                                        name="quipu-sdk-metrics")
            _flusher.start()
        return series


def _reject(ctx: RunContext, name: str, reason: str, stacklevel: int) -> None:
    ctx.warn("metric_rejected", f"metric {name!r} point skipped: {reason}",
             stacklevel=stacklevel + 1)


def _record(name: str, value: object, step: object, timestamp: object, stacklevel: int) -> None:
    ctx = current()
    check_metric_name(name)
    checked_step = _step(step)
    ts = _timestamp(timestamp)
    number = _real(value)
    if isinstance(number, str):
        _reject(ctx, name, number, stacklevel)
        return
    now = time.time()
    if ts is None:
        ts = now
    elif not math.isfinite(ts) or ts > now + MAX_FUTURE or ts < now - MAX_PAST:
        _reject(ctx, name, f"timestamp {ts!r} is more than 1 day ahead or 10 years behind "
                "the clock", stacklevel)
        return
    series = _series_for(ctx)
    with ctx.lock:
        uses_step = series.uses_step.get(name)
        if uses_step is None:
            if len(series.uses_step) >= MAX_METRIC_NAMES:
                _reject(ctx, name, f"the run already has {MAX_METRIC_NAMES} metric names",
                        stacklevel)
                return
            series.uses_step[name] = checked_step is not None
        elif uses_step != (checked_step is not None):
            how = "with" if uses_step else "without"
            _reject(ctx, name, f"it was first logged {how} a step; log every point of one "
                    "metric the same way", stacklevel)
            return
        if not math.isfinite(number):
            # Recorded all the same (the engine reports it); the author hears of it too.
            ctx.warn("metric_non_finite", f"metric {name!r} is {number!r}"
                     + (f" at step {checked_step}" if checked_step is not None else "")
                     + "; recorded as a non-finite point", stacklevel=stacklevel)
        series.buffer.append({"name": name, "value": number, "step": checked_step, "ts": ts})
        if (len(series.buffer) >= FLUSH_EVERY
                or time.monotonic() - series.last_flush >= FLUSH_INTERVAL):
            series.write()


def log_metric(
    name: str,
    value: float | np.number[Any],
    step: int | np.integer[Any] | None = None,
    timestamp: float | datetime | None = None,
) -> None:
    """Record one point of a metric (a loss per step, a final accuracy).

    ``name`` must match ``^[A-Za-z][\\w.\\-/:]{0,255}$`` and ``step`` must be a non-negative
    int (ValueError otherwise). A metric is logged either always with a step or always without.
    A NaN or infinite value is recorded as a non-finite point (the engine reports it: the run
    diverged) with an :class:`SdkWarning`. A value that is a bool or not a number, a point that
    breaks the step rule,
    a timestamp more than a day ahead or ten years behind, or a name beyond the 10,000th is
    skipped with an :class:`SdkWarning` and a line in ``.quipu/warnings.jsonl``; it never raises.
    Points are buffered and written every 100 points, after 1 s, on ``finish()`` and at exit.
    """
    _record(name, value, step, timestamp, stacklevel=3)


def log_metrics(
    values: Mapping[str, float | np.number[Any]], step: int | np.integer[Any] | None = None
) -> None:
    """Record several metrics at one step (``{"loss": 0.3, "acc": 0.9}``), same rules each.

    Every name is checked before any point is recorded, so a bad name records nothing.
    """
    for name in values:
        check_metric_name(name)
    for name, value in values.items():
        _record(name, value, step, None, stacklevel=3)


def _flush(ctx: RunContext) -> None:
    with _series_lock:
        series = _series.get(ctx.run_dir)
    if series is not None:
        with series.ctx.lock:
            series.write()


def _forget(ctx: RunContext) -> None:
    with _series_lock:
        if (series := _series.get(ctx.run_dir)) is not None and series.ctx is ctx:
            del _series[ctx.run_dir]


def _flush_stale_forever() -> None:
    """Write buffers that waited a second, so a quiet stage's last points still show up live."""
    while True:
        time.sleep(_TICK)
        with _series_lock:
            pending = list(_series.values())
        for series in pending:
            with series.ctx.lock:
                if series.buffer and time.monotonic() - series.last_flush >= FLUSH_INTERVAL:
                    series.write()


def _flush_all() -> None:
    with _series_lock:
        pending = list(_series.values())
    for series in pending:
        try:
            with series.ctx.lock:
                series.write()
        except OSError:
            # At exit the run directory may already be gone (a removed test directory);
            # there is nobody left to tell.
            pass


def _forget_after_fork() -> None:
    # A forked child (a data-loader worker) must not write the parent's buffered points again.
    global _flusher, _series_lock
    _series_lock = threading.Lock()
    _series.clear()
    _flusher = None


on_flush(_flush)
on_release(_forget)
atexit.register(_flush_all)
os.register_at_fork(after_in_child=_forget_after_fork)

"""What changed between two runs or versions: the pure parts of ``compare``.

Each function takes facts already read (manifests, configs, metric values, recorded
environments) and returns plain data; the facade (``quipu.app.compare``) reads the facts and
assembles the answer. The code diff reuses ``diff_manifests`` and ``text_diff`` (the ``diff``
tool's differ) and only bounds what they produce.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from quipu.core.runs.results import non_finite_kind
from quipu.core.workspaces.versions import ManifestDiff, text_diff

__all__ = [
    "ConfigChange",
    "apply_config_diff",
    "bounded_code_diff",
    "clip",
    "compare_metric",
    "diff_configs",
    "diff_environments",
]

MISSING: Any = object()
"""A key absent on one side of a config diff (``None`` is a value a config may hold)."""


def clip(value: Any, limit: int = 80) -> Any:
    """``value`` as shown in an answer: as it is when its text fits in ``limit`` characters,
    else its text cut there and ending in '...'."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else repr(value)
    return value if len(text) <= limit else text[:limit] + "..."


# --- config -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigChange:
    """One key whose value differs: ``path`` into nested mappings, ``a`` / ``b`` its values
    (``MISSING`` where the key is absent)."""

    path: tuple[str, ...]
    change: Literal["added", "removed", "changed"]
    a: Any
    b: Any

    @property
    def key(self) -> str:
        """The dotted key a reader sees (``train.optim.lr``)."""
        return ".".join(self.path)

    def to_json(self, limit: int = 80) -> dict[str, Any]:
        """``{key, change, a?, b?}`` with long values clipped."""
        out: dict[str, Any] = {"key": self.key, "change": self.change}
        if self.a is not MISSING:
            out["a"] = clip(self.a, limit)
        if self.b is not MISSING:
            out["b"] = clip(self.b, limit)
        return out


def diff_configs(a: Mapping[str, Any], b: Mapping[str, Any],
                 _prefix: tuple[str, ...] = ()) -> list[ConfigChange]:
    """Key by key, sorted: nested mappings are walked into, any other value (lists included)
    is compared whole. ``apply_config_diff(a, diff_configs(a, b)) == b``."""
    out: list[ConfigChange] = []
    for key in sorted(set(a) | set(b), key=str):
        path = (*_prefix, str(key))
        if key not in b:
            out.append(ConfigChange(path, "removed", a[key], MISSING))
        elif key not in a:
            out.append(ConfigChange(path, "added", MISSING, b[key]))
        elif isinstance(a[key], Mapping) and isinstance(b[key], Mapping):
            out.extend(diff_configs(a[key], b[key], path))
        elif a[key] != b[key] or type(a[key]) is not type(b[key]):
            out.append(ConfigChange(path, "changed", a[key], b[key]))
    return out


def apply_config_diff(a: Mapping[str, Any], changes: Sequence[ConfigChange]) -> dict[str, Any]:
    """``a`` with ``changes`` applied (a new dict; ``a`` is not touched)."""
    import copy

    out: dict[str, Any] = copy.deepcopy(dict(a))
    for change in changes:
        node = out
        for part in change.path[:-1]:
            node = node.setdefault(part, {})
        if change.change == "removed":
            node.pop(change.path[-1], None)
        else:
            node[change.path[-1]] = copy.deepcopy(change.b)
    return out


# --- metrics ------------------------------------------------------------------------------------

Outcome = Literal["better", "worse", "same", "unknown"]


def compare_metric(name: str, a: float | None, b: float | None, *,
                   direction: str | None, a_non_finite: str | None = None,
                   b_non_finite: str | None = None,
                   tolerance: float | None = None) -> dict[str, Any]:
    """How metric ``name`` moved from A to B: ``{metric, a, b, delta, outcome, ...}``.

    ``outcome`` is B as seen against A: ``better`` / ``worse`` by ``direction`` (maximize or
    minimize), ``same`` when equal, ``unknown`` without a direction or a value on both sides.
    A non-finite value (``None`` with ``*_non_finite`` "nan", "inf" or "-inf", as
    docs/results.md writes it) is worse than any finite one, whatever the direction: a run
    whose metric went NaN or infinite diverged. Two non-finite values are ``unknown``.
    ``within_tolerance`` is given when a ``tolerance`` is.
    """
    a_nf = _kind(a, a_non_finite)
    b_nf = _kind(b, b_non_finite)
    a, b = _finite(a), _finite(b)
    out: dict[str, Any] = {"metric": name, "a": a, "b": b}
    if a_nf:
        out["a_non_finite"] = a_nf
    if b_nf:
        out["b_non_finite"] = b_nf
    outcome: Outcome = "unknown"
    if a is not None and b is not None:
        delta = b - a
        out["delta"] = _round(delta)
        if a != 0:
            out["relative"] = _round(delta / abs(a))
        if delta == 0:
            outcome = "same"
        elif direction in ("maximize", "minimize"):
            outcome = "better" if (delta > 0) == (direction == "maximize") else "worse"
        if tolerance is not None:
            out["within_tolerance"] = abs(delta) <= tolerance
    elif a is not None and b_nf:
        outcome = "worse"
    elif b is not None and a_nf:
        outcome = "better"
    out["outcome"] = outcome
    return out


def _finite(value: float | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _kind(value: float | None, given: str | None) -> str | None:
    """The non-finite kind of a value: as given beside a null, or read from a float."""
    if isinstance(value, float) and not math.isfinite(value):
        return non_finite_kind(value)
    return given if value is None else None


def _round(x: float) -> float:
    return float(f"{x:.6g}")


# --- environment --------------------------------------------------------------------------------

ENV_FIELDS = ("python", "implementation", "executable", "os", "machine", "cpu_count", "gpu",
              "backend", "image_id")
"""The scalar facts of a recorded environment, compared one by one (``backend`` and
``image_id`` only a container run records: equal, hence not shown, between two local runs)."""


def diff_environments(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, *,
                      packages_a: Sequence[str] | None = None,
                      packages_b: Sequence[str] | None = None,
                      limit: int = 20) -> dict[str, Any]:
    """How two runs' recorded environments differ.

    ``a`` / ``b`` are what a run recorded (``{python, executable, os, machine, cpu_count,
    gpu, env_names, packages: {count, sha256}}``), or None when it recorded none.
    ``packages_*`` are the optional ``name==version`` lists (the blob the packages hash
    names). Returns ``{recorded: {a, b}, same, changed: {field: {a, b}}, env_names: {added,
    removed}, packages: {same, count: [a, b], added, removed, changed}}``; ``same`` is None
    when either side was not recorded. Lists are cut at ``limit`` with ``more`` counts.
    """
    out: dict[str, Any] = {"recorded": {"a": a is not None, "b": b is not None}}
    if a is None or b is None:
        out["same"] = None
        out["note"] = ("environment not recorded for "
                       + " and ".join(s for s, e in (("A", a), ("B", b)) if e is None))
        return out
    changed = {f: {"a": clip(a.get(f)), "b": clip(b.get(f))} for f in ENV_FIELDS
               if a.get(f) != b.get(f)}
    names_a, names_b = set(a.get("env_names") or ()), set(b.get("env_names") or ())
    env_names = {"added": sorted(names_b - names_a)[:limit],
                 "removed": sorted(names_a - names_b)[:limit]}
    pa, pb = a.get("packages") or {}, b.get("packages") or {}
    same_packages = bool(pa.get("sha256")) and pa.get("sha256") == pb.get("sha256")
    packages: dict[str, Any] = {"same": same_packages,
                                "count": [pa.get("count"), pb.get("count")]}
    if not same_packages and packages_a is not None and packages_b is not None:
        packages.update(_package_changes(packages_a, packages_b, limit))
    elif not same_packages:
        packages["note"] = "the package lists were not read: only their hashes are compared"
    out.update(same=not changed and not env_names["added"] and not env_names["removed"]
               and same_packages, changed=changed, env_names=env_names, packages=packages)
    return out


def _package_changes(a: Sequence[str], b: Sequence[str], limit: int) -> dict[str, Any]:
    def parse(lines: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in lines:
            name, _, version = line.strip().partition("==")
            if name:
                out[name.lower()] = version
        return out

    va, vb = parse(a), parse(b)
    added = sorted(f"{n}=={vb[n]}" for n in set(vb) - set(va))
    removed = sorted(f"{n}=={va[n]}" for n in set(va) - set(vb))
    changed = sorted(f"{n} {va[n]} -> {vb[n]}" for n in set(va) & set(vb) if va[n] != vb[n])
    out: dict[str, Any] = {"added": added[:limit], "removed": removed[:limit],
                           "changed": changed[:limit]}
    more = {k: len(v) - limit for k, v in (("added", added), ("removed", removed),
                                             ("changed", changed)) if len(v) > limit}
    if more:
        out["more"] = more
    return out


# --- code ---------------------------------------------------------------------------------------


def bounded_code_diff(changes: ManifestDiff, read_a: Callable[[str], bytes],
                      read_b: Callable[[str], bytes], *, left: str, right: str,
                      max_lines: int, max_files: int = 25,
                      line_chars: int = 160) -> dict[str, Any]:
    """The files that differ and their unified diffs, within bounds.

    Every changed path is counted; at most ``max_files`` are listed (with short hashes and
    sizes, so a binary change is told by hash and size) and their diffs (``text_diff``: a
    unified diff for text, one line for binary content) share ``max_lines`` lines, each file
    at most a third of them (at least 20), each line cut at ``line_chars``. What was left out
    is said: ``more_files``, and a ``... N more lines`` line in the text.
    """
    per_file = max(max_lines // 3, 20)
    files: list[dict[str, Any]] = []
    chunks: list[str] = []
    used = 0
    files_unshown = 0
    for f in changes.files[:max_files]:
        entry: dict[str, Any] = {"path": f.path, "change": f.change}
        if f.old is not None or f.new is not None:
            entry["sha256"] = [f.old.sha256[:12] if f.old else None,
                               f.new.sha256[:12] if f.new else None]
            entry["size"] = [f.old.size if f.old else None, f.new.size if f.new else None]
        files.append(entry)
        room = min(per_file, max_lines - used)
        if room <= 0:
            files_unshown += 1  # counted as "not shown" below, per file
            entry["diff"] = "not shown (line budget used)"
            continue
        old = read_a(f.path) if f.old is not None and f.old.kind == "file" else None
        new = read_b(f.path) if f.new is not None and f.new.kind == "file" else None
        text = text_diff(f.path, old, new, left=left, right=right, old_entry=f.old,
                         new_entry=f.new)
        lines = text.splitlines()
        if lines and lines[0].startswith("Binary file"):
            entry["binary"] = True
        shown = [ln if len(ln) <= line_chars else ln[:line_chars] + "..."
                 for ln in lines[:room]]
        if len(lines) > room:
            shown.append(f"... {len(lines) - room} more lines of {f.path}")
        used += min(len(lines), room)
        chunks.append("\n".join(shown))
    out: dict[str, Any] = {"summary": changes.summary(), "files_changed": len(changes.files),
                           "files": files, "diff_text": "\n".join(chunks)}
    if len(changes.files) > max_files:
        out["more_files"] = len(changes.files) - max_files
    if files_unshown:
        out["files_without_diff"] = files_unshown
    return out

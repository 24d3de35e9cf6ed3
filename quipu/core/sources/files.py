"""Where a source file may be, and whether its metadata tells the truth about it (pure).

The adapter (``core.ports.SourceFiles``) reads the facts from the file's headers; this module
decides: ``SourcePaths.check`` keeps paths inside the project and its data roots (and tells a
symlink that leads out apart from a path that is out), ``file_problems`` compares the
metadata with the facts and lists every disagreement, each at its metadata path.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from quipu.core.errors import InvalidInput
from quipu.core.ports import FileFacts
from quipu.core.sources.metadata import Problem, shown

__all__ = ["SourcePaths", "file_problems", "is_remote"]

REMOTE_SCHEMES = ("gs://",)


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names remote content (recorded now, verified by a remote blob store)."""
    return uri.startswith(REMOTE_SCHEMES)


@dataclass(frozen=True)
class SourcePaths:
    """Which local files may become sources: inside ``roots`` (the project and quipu.yaml's
    ``data.roots``) after symlinks are resolved, unless ``allow_any``. Relative paths are taken
    from ``base`` (the project root). ``realpath`` touches the filesystem, so it is injected."""

    base: str = "/"
    roots: tuple[str, ...] = ()
    allow_any: bool = False
    realpath: Callable[[str], str] = posixpath.normpath

    def check(self, path: str) -> str:
        """The resolved path, or ``InvalidInput`` (``path_outside_roots``,
        ``symlink_escapes_roots``)."""
        lexical = posixpath.normpath(posixpath.join(self.base, path))
        real = self.realpath(lexical)
        if self.allow_any:
            return real
        bases = [b for root in self.roots for b in {root.rstrip("/") or "/",
                                                      self.realpath(root).rstrip("/") or "/"}]
        if any(_inside(real, b) for b in bases):
            return real
        allowed = ", ".join(self.roots) or "none configured"
        if any(_inside(lexical, b) for b in bases):
            raise InvalidInput(
                f"{path!r} is a symlink (or lies under one) that leads outside the project and "
                f"its data roots, to {real}", code="symlink_escapes_roots",
                hint=f"register the file where it really is, if that is allowed ({allowed}); "
                "a link must not carry data in from outside the roots")
        raise InvalidInput(
            f"{path!r} is outside the project and its data roots ({allowed})",
            code="path_outside_roots",
            hint="move the data under the project or add its directory to quipu.yaml "
            "(data: {roots: [/path/to/data]}); or set data.allow_any_path: true")


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def file_problems(metadata: Mapping[str, Any], facts: FileFacts) -> list[Problem]:
    """Every way valid ``metadata`` disagrees with the file it describes."""
    src, schema = metadata["source"], metadata["schema"]
    problems: list[Problem] = []
    if src["size_bytes"] != facts.size:
        problems.append(Problem("source.size_bytes", f"{facts.size} (the file's size)",
                                shown(src["size_bytes"])))
    if facts.unreadable is not None:
        problems.append(Problem("source.format", f"a readable {src['format']} file",
                                facts.unreadable))
        return problems
    if schema["kind"] == "tensor" and facts.arrays is not None:
        problems += _array_problems(src["format"], schema["arrays"], facts.arrays)
    elif schema["kind"] == "tabular" and facts.columns is not None:
        problems += _table_problems(schema, facts)
    return problems


def _array_problems(fmt: str, declared: Mapping[str, Any],
                    found: dict[str, tuple[tuple[int, ...], str, str]]) -> list[Problem]:
    problems = []
    if fmt == "npy":
        # An npy file's one array has no name of its own: the metadata names it.
        pairs = [(name, found[""]) for name in declared][:1]
    else:
        pairs = []
        for name in declared:
            if name in found:
                pairs.append((name, found[name]))
            else:
                problems.append(Problem(f"schema.arrays.{name}", "an array the file holds ("
                                        + ", ".join(sorted(found))[:200] + ")",
                                        "no such array in the file"))
        extra = sorted(set(found) - set(declared))
        if extra:
            problems.append(Problem("schema.arrays", "every array of the file described",
                                    f"not described: {shown(extra)}"))
    for name, (shape, dtype_name, dtype_str) in pairs:
        spec = declared[name]
        if list(spec["shape"]) != list(shape):
            problems.append(Problem(f"schema.arrays.{name}.shape",
                                    f"{list(shape)} (the file's shape)", shown(spec["shape"])))
        if not _same_dtype(spec["dtype"], dtype_name, dtype_str):
            problems.append(Problem(f"schema.arrays.{name}.dtype",
                                    f"{dtype_name} ({dtype_str}, the file's dtype)",
                                    shown(spec["dtype"])))
    return problems


def _same_dtype(declared: str, name: str, text: str) -> bool:
    return declared in (name, text, text.lstrip("<>|="))


def _table_problems(schema: Mapping[str, Any], facts: FileFacts) -> list[Problem]:
    problems = []
    columns = facts.columns or []
    if list(schema["columns"]) != columns:
        found = shown(schema["columns"])
        expected = f"{shown(columns)} (the file's header)"
        if len(columns) == 1 and len(schema["columns"]) > 1:
            expected += "; the header is one field: is the delimiter right?"
        problems.append(Problem("schema.columns", expected, found))
    if facts.rows is not None and schema["row_count"] != facts.rows:
        problems.append(Problem("schema.row_count", f"{facts.rows} (data rows in the file)",
                                shown(schema["row_count"])))
    if facts.ragged is not None:
        line, count = facts.ragged
        problems.append(Problem("source.format_params.delimiter",
                                f"a delimiter that splits every row into {len(columns)} fields",
                                f"line {line} has {count} fields"))
    return problems

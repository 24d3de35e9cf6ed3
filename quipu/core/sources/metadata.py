"""Source metadata: the strict document every registered source carries, checked purely.

A source's metadata says what the data is, so that a run can check its declared inputs against
it without opening the file. The rules (``docs/sources.md`` has the table):

* the top level is exactly ``{schema_version: 1, description, source, schema}`` and its JSON is
  at most 1 MiB;
* ``description`` is 20-4000 characters;
* ``source`` is ``{format, size_bytes, created_at}`` (plus ``format_params.delimiter`` for csv):
  ``format`` is one of npy, npz, csv, file; ``size_bytes`` an integer above 0 and at most 1 PB;
  ``created_at`` an ISO 8601 UTC time ending in ``Z``;
* ``schema`` is a tensor (``arrays`` + ``primary_array``: npy and npz), a table (``row_count``,
  ``columns``, ``dtypes``: csv) or a file (``content_type``: file);
* each array's ``feature_names`` is ``list`` (as many names as the last dimension), ``pattern``
  (a template containing ``{i}``), ``none`` (scalars only) or ``sequence`` (non-scalars only).

Every problem is reported at once, each with its field path, what was expected and what was
found (``Problem``); ``check_metadata`` raises one ``InvalidInput(code="invalid_metadata")``
whose ``details`` list them all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from quipu.core.errors import InvalidInput

__all__ = [
    "FORMATS",
    "MAX_METADATA_BYTES",
    "MAX_SIZE_BYTES",
    "Problem",
    "check_metadata",
    "problems_error",
    "validate_metadata",
]

FORMATS = ("npy", "npz", "csv", "file")
SCHEMA_KINDS = ("tensor", "tabular", "file")
FEATURE_KINDS = ("list", "pattern", "none", "sequence")
KIND_OF_FORMAT = {"npy": "tensor", "npz": "tensor", "csv": "tabular", "file": "file"}
MAX_METADATA_BYTES = 1024 * 1024
"""The most the metadata may weigh, as compact UTF-8 JSON: it lives in the log."""
MAX_SIZE_BYTES = 10**15
"""1 PB: a larger ``size_bytes`` is a typo, not a dataset."""
MIN_DESCRIPTION, MAX_DESCRIPTION = 20, 4000
MAX_PROBLEMS_IN_MESSAGE = 20
_CREATED_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*/[A-Za-z0-9][A-Za-z0-9.+-]*$")
_DTYPE = re.compile(r"^[A-Za-z0-9<>|=_\[\]]{1,32}$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a metadata document: where, what was expected, what was found."""

    path: str
    expected: str
    found: str

    def as_dict(self) -> dict[str, str]:
        """The problem as the mapping tools return."""
        return {"path": self.path, "expected": self.expected, "found": self.found}

    def __str__(self) -> str:
        return f"{self.path or 'the document'}: expected {self.expected}, found {self.found}"


def shown(value: Any, limit: int = 60) -> str:
    """A short, readable rendering of a found value (a hostile value must not flood answers)."""
    if isinstance(value, Mapping):
        return f"an object with keys {sorted(map(str, value))[:8]}"
    try:
        text = json.dumps(value, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


class _Check:
    """Collects problems while walking a document."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, expected: str, found: str) -> None:
        self.problems.append(Problem(path, expected, found))

    def obj(self, value: Any, path: str, *, required: Sequence[str],
            optional: Sequence[str] = ()) -> Mapping[str, Any] | None:
        """``value`` if it is an object with exactly these keys (problems for the others)."""
        if not isinstance(value, Mapping):
            self.add(path, "an object", shown(value))
            return None
        for key in required:
            if key not in value:
                self.add(_join(path, key), "a value (required)", "nothing")
        allowed = set(required) | set(optional)
        for key in value:
            if key not in allowed:
                self.add(_join(path, str(key)),
                         f"no such key (allowed: {', '.join(sorted(allowed))})",
                         shown(value[key]))
        return value

    def integer(self, value: Any, path: str, *, low: int, high: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(path, "an integer", shown(value))
            return None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.add(path, f"an integer {bound}", shown(value))
            return None
        return value

    def text(self, value: Any, path: str, *, what: str = "a non-empty string") -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.add(path, what, shown(value))
            return None
        return value

    def choice(self, value: Any, path: str, choices: Sequence[str]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            self.add(path, "one of " + ", ".join(choices), shown(value))
            return None
        return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate_metadata(doc: Any) -> list[Problem]:
    """Every problem with a source metadata document (empty when it is valid)."""
    check = _Check()
    top = check.obj(doc, "", required=("schema_version", "description", "source", "schema"))
    if top is None:
        return check.problems
    try:
        weight = len(json.dumps(top, separators=(",", ":"), ensure_ascii=False,
                                default=str).encode())
    except (TypeError, ValueError, RecursionError):
        weight = 0
        check.add("", "plain JSON values", "values JSON cannot hold")
    if weight > MAX_METADATA_BYTES:
        # A huge document is refused whole: walking it would only list its bulk.
        return [Problem("", f"at most {MAX_METADATA_BYTES} bytes of JSON", f"{weight} bytes")]
    if "schema_version" in top and (isinstance(top["schema_version"], bool)
                                    or top["schema_version"] != 1):
        check.add("schema_version", "1", shown(top["schema_version"]))
    if "description" in top:
        _description(check, top["description"])
    fmt = _source(check, top["source"]) if "source" in top else None
    if "schema" in top:
        _schema(check, top["schema"], fmt)
    return check.problems


def _description(check: _Check, value: Any) -> None:
    if not isinstance(value, str):
        check.add("description", "a string", shown(value))
        return
    n = len(value.strip())
    if not MIN_DESCRIPTION <= n <= MAX_DESCRIPTION:
        check.add("description", f"{MIN_DESCRIPTION}-{MAX_DESCRIPTION} characters",
                  f"{n} characters")


def _source(check: _Check, value: Any) -> str | None:
    src = check.obj(value, "source", required=("format", "size_bytes", "created_at"),
                    optional=("format_params",))
    if src is None:
        return None
    fmt = check.choice(src["format"], "source.format", FORMATS) if "format" in src else None
    if "size_bytes" in src:
        check.integer(src["size_bytes"], "source.size_bytes", low=1, high=MAX_SIZE_BYTES)
    if "created_at" in src:
        _created_at(check, src["created_at"])
    params = src.get("format_params")
    if fmt == "csv":
        if params is None:
            check.add("source.format_params", "{delimiter} (required for csv)", "nothing")
        else:
            p = check.obj(params, "source.format_params", required=("delimiter",))
            if p is not None and "delimiter" in p:
                d = p["delimiter"]
                if not isinstance(d, str) or len(d) != 1 or d in "\r\n\"":
                    check.add("source.format_params.delimiter",
                              "one character (not a quote or a line break), e.g. ','", shown(d))
    elif params is not None and fmt is not None:
        check.add("source.format_params", "nothing (only csv takes format_params)",
                  shown(params))
    return fmt


def _created_at(check: _Check, value: Any) -> None:
    ok = isinstance(value, str) and bool(_CREATED_AT.match(value))
    if ok:
        try:
            datetime.fromisoformat(value[:19])
        except ValueError:
            ok = False
    if not ok:
        check.add("source.created_at", "an ISO 8601 UTC time ending in Z, e.g. "
                  "2024-05-01T12:00:00Z", shown(value))


def _schema(check: _Check, value: Any, fmt: str | None) -> None:
    if not isinstance(value, Mapping):
        check.add("schema", "an object", shown(value))
        return
    kind = check.choice(value.get("kind"), "schema.kind", SCHEMA_KINDS)
    if kind is None:
        return
    if fmt is not None and KIND_OF_FORMAT[fmt] != kind:
        check.add("schema.kind", f"{KIND_OF_FORMAT[fmt]} (the schema of a {fmt} source)",
                  shown(kind))
    if kind == "tensor":
        _tensor(check, value, fmt)
    elif kind == "tabular":
        _tabular(check, value)
    else:
        s = check.obj(value, "schema", required=("kind", "content_type"))
        if s is not None and "content_type" in s and (
                not isinstance(s["content_type"], str)
                or not _CONTENT_TYPE.match(s["content_type"])):
            check.add("schema.content_type", "a media type such as 'application/octet-stream'",
                      shown(s["content_type"]))


def _tensor(check: _Check, value: Mapping[str, Any], fmt: str | None) -> None:
    s = check.obj(value, "schema", required=("kind", "arrays", "primary_array"))
    if s is None or "arrays" not in s:
        return
    arrays = s["arrays"]
    if not isinstance(arrays, Mapping) or not arrays:
        check.add("schema.arrays", "an object naming at least one array", shown(arrays))
        return
    if fmt == "npy" and len(arrays) != 1:
        check.add("schema.arrays", "exactly one array (an npy file holds one)",
                  f"{len(arrays)} arrays")
    for name, spec in arrays.items():
        _array(check, f"schema.arrays.{name}", spec)
    if "primary_array" in s and (not isinstance(s["primary_array"], str)
                                 or s["primary_array"] not in arrays):
        check.add("schema.primary_array", "the name of one of the arrays ("
                  + ", ".join(sorted(map(str, arrays)))[:200] + ")", shown(s["primary_array"]))


def _array(check: _Check, path: str, value: Any) -> None:
    a = check.obj(value, path, required=("role", "shape", "dtype", "feature_names"))
    if a is None:
        return
    if "role" in a:
        check.text(a["role"], f"{path}.role", what="a role such as 'features' or 'labels'")
    shape: list[int] | None = None
    if "shape" in a:
        raw = a["shape"]
        if not isinstance(raw, list) or any(isinstance(d, bool) or not isinstance(d, int)
                                            or d < 0 for d in raw):
            check.add(f"{path}.shape", "a list of dimensions (integers >= 0; [] for a scalar)",
                      shown(raw))
        else:
            shape = raw
    if "dtype" in a and (not isinstance(a["dtype"], str) or not _DTYPE.match(a["dtype"])):
        check.add(f"{path}.dtype", "a numpy dtype name such as 'float32' or '<f4'",
                  shown(a["dtype"]))
    if "feature_names" in a:
        _feature_names(check, f"{path}.feature_names", a["feature_names"], shape)


def _feature_names(check: _Check, path: str, value: Any, shape: list[int] | None) -> None:
    if not isinstance(value, Mapping):
        check.add(path, "an object {kind: list|pattern|none|sequence, ...}", shown(value))
        return
    kind = check.choice(value.get("kind"), f"{path}.kind", FEATURE_KINDS)
    if kind is None:
        return
    if kind == "list":
        f = check.obj(value, path, required=("kind", "names"))
        if f is None or "names" not in f:
            return
        names = f["names"]
        if not isinstance(names, list) or any(not isinstance(n, str) or not n for n in names):
            check.add(f"{path}.names", "a list of non-empty strings", shown(names))
        elif shape is not None and not shape:
            check.add(f"{path}.kind", "none (a scalar has no features to name)", "list")
        elif shape is not None and len(names) != shape[-1]:
            check.add(f"{path}.names", f"{shape[-1]} names (the last dimension of the shape)",
                      f"{len(names)} names")
    elif kind == "pattern":
        f = check.obj(value, path, required=("kind", "template"))
        if f is not None and "template" in f and (not isinstance(f["template"], str)
                                                  or "{i}" not in f["template"]):
            check.add(f"{path}.template", "a template containing {i}, e.g. 'pixel_{i}'",
                      shown(f["template"]))
    else:
        check.obj(value, path, required=("kind",))
        if kind == "none" and shape:
            check.add(f"{path}.kind", "list, pattern or sequence (only a scalar has no "
                      "feature names)", "none")
        if kind == "sequence" and shape is not None and not shape:
            check.add(f"{path}.kind", "none (a scalar is not a sequence)", "sequence")


def _tabular(check: _Check, value: Mapping[str, Any]) -> None:
    s = check.obj(value, "schema", required=("kind", "row_count", "columns", "dtypes"))
    if s is None:
        return
    if "row_count" in s:
        check.integer(s["row_count"], "schema.row_count", low=0)
    columns: list[str] | None = None
    if "columns" in s:
        raw = s["columns"]
        if (not isinstance(raw, list) or not raw
                or any(not isinstance(c, str) or not c for c in raw)):
            check.add("schema.columns", "a non-empty list of column names", shown(raw))
        elif len(set(raw)) != len(raw):
            dupes = sorted({c for c in raw if raw.count(c) > 1})
            check.add("schema.columns", "distinct column names", f"repeated {shown(dupes)}")
        else:
            columns = raw
    if "dtypes" in s:
        dtypes = s["dtypes"]
        if not isinstance(dtypes, Mapping) or any(not isinstance(t, str) or not t
                                                  for t in dtypes.values()):
            check.add("schema.dtypes", "an object column -> dtype name", shown(dtypes))
        elif columns is not None and set(dtypes) != set(columns):
            missing = sorted(set(columns) - set(dtypes))
            extra = sorted(set(dtypes) - set(columns))
            check.add("schema.dtypes", "one dtype per column, no others",
                      f"missing {shown(missing)}, extra {shown(extra)}")


def problems_error(problems: Sequence[Problem], *, what: str = "the metadata",
                   code: str = "invalid_metadata", hint: str = "") -> InvalidInput:
    """One ``InvalidInput`` naming every problem (``details`` holds them all)."""
    listed = "; ".join(str(p) for p in problems[:MAX_PROBLEMS_IN_MESSAGE])
    more = len(problems) - MAX_PROBLEMS_IN_MESSAGE
    if more > 0:
        listed += f"; and {more} more"
    return InvalidInput(
        f"{what} has {len(problems)} problem{'s' if len(problems) != 1 else ''}: {listed}",
        code=code, details=[p.as_dict() for p in problems],
        hint=hint or "fix every field listed (docs/sources.md shows a valid document for each "
        "format) and register again; nothing was recorded")


def check_metadata(doc: Any, *, description: str | None = None, fmt: str | None = None,
                   size_bytes: int | None = None) -> dict[str, Any]:
    """The metadata if valid and consistent with the optional arguments that repeat it; else
    ``InvalidInput(invalid_metadata)`` listing every problem."""
    problems = validate_metadata(doc)
    if isinstance(doc, Mapping):
        raw = doc.get("source")
        src: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        if description is not None and description != doc.get("description"):
            problems.append(Problem("description", "the same text as the description "
                                    "argument", shown(doc.get("description"))))
        if fmt is not None and fmt != src.get("format"):
            problems.append(Problem("source.format", f"{fmt!r} (the format argument)",
                                    shown(src.get("format"))))
        if size_bytes is not None and size_bytes != src.get("size_bytes"):
            problems.append(Problem("source.size_bytes", f"{size_bytes} (the size_bytes "
                                    "argument)", shown(src.get("size_bytes"))))
    if problems:
        raise problems_error(problems)
    assert isinstance(doc, Mapping)
    return dict(doc)

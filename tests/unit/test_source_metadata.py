"""Source metadata validation: valid documents pass, and every single mutation is reported at
the path it broke, with every problem of a document reported at once."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quipu.core.errors import InvalidInput
from quipu.core.sources.metadata import (
    MAX_METADATA_BYTES,
    MAX_SIZE_BYTES,
    check_metadata,
    validate_metadata,
)

Doc = dict[str, Any]

names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
descriptions = st.text(alphabet="abcdefghij klmnop.,", min_size=20, max_size=120).filter(
    lambda s: len(s.strip()) >= 20)
created = st.datetimes(min_value=datetime(1000, 1, 1)).map(
    lambda d: d.replace(microsecond=0).isoformat() + "Z")
sizes = st.integers(min_value=1, max_value=MAX_SIZE_BYTES)
dtypes = st.sampled_from(["float32", "float64", "int64", "<f4", "uint8", "bool"])


@st.composite
def arrays(draw: st.DrawFn) -> Doc:
    shape = draw(st.lists(st.integers(0, 40), min_size=0, max_size=3))
    if not shape:
        features: Doc = {"kind": "none"}
    else:
        kind = draw(st.sampled_from(["list", "pattern", "sequence"]))
        if kind == "list":
            features = {"kind": "list", "names": [f"f{i}" for i in range(shape[-1])]}
        elif kind == "pattern":
            features = {"kind": "pattern", "template": "pixel_{i}"}
        else:
            features = {"kind": "sequence"}
    return {"role": draw(st.sampled_from(["features", "labels", "weights"])), "shape": shape,
            "dtype": draw(dtypes), "feature_names": features}


@st.composite
def documents(draw: st.DrawFn) -> Doc:
    fmt = draw(st.sampled_from(["npy", "npz", "csv", "file"]))
    source: Doc = {"format": fmt, "size_bytes": draw(sizes), "created_at": draw(created)}
    schema: Doc
    if fmt in ("npy", "npz"):
        count = 1 if fmt == "npy" else draw(st.integers(1, 4))
        keys = draw(st.lists(names, min_size=count, max_size=count, unique=True))
        schema = {"kind": "tensor", "arrays": {k: draw(arrays()) for k in keys},
                  "primary_array": draw(st.sampled_from(keys))}
    elif fmt == "csv":
        source["format_params"] = {"delimiter": draw(st.sampled_from([",", ";", "\t", "|"]))}
        columns = draw(st.lists(names, min_size=1, max_size=6, unique=True))
        schema = {"kind": "tabular", "row_count": draw(st.integers(0, 10**9)),
                  "columns": columns, "dtypes": {c: draw(dtypes) for c in columns}}
    else:
        schema = {"kind": "file", "content_type": draw(st.sampled_from(
            ["application/octet-stream", "text/plain", "image/png"]))}
    return {"schema_version": 1, "description": draw(descriptions), "source": source,
            "schema": schema}


def paths(doc: Doc) -> list[str]:
    return [p.path for p in validate_metadata(doc)]


@settings(max_examples=200)
@given(documents())
def test_valid_documents_pass(doc: Doc) -> None:
    assert validate_metadata(doc) == []
    assert check_metadata(doc) == doc


# Each mutation breaks one field of a valid document and names the path it must be reported at.
Mutation = Callable[[Doc], str]


def _set(doc: Doc, path: str, value: Any) -> str:
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[leaf] = value
    return path


def _drop(doc: Doc, path: str) -> str:
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    del node[leaf]
    return path


def _first_array(doc: Doc) -> str:
    return "schema.arrays." + next(iter(doc["schema"]["arrays"]))


MUTATIONS: dict[str, Mutation] = {
    "schema_version 2": lambda d: _set(d, "schema_version", 2),
    "schema_version true": lambda d: _set(d, "schema_version", True),
    "short description": lambda d: _set(d, "description", "too short"),
    "long description": lambda d: _set(d, "description", "x" * 4001),
    "description missing": lambda d: _drop(d, "description"),
    "unknown top key": lambda d: _set(d, "extra", 1),
    "bad format": lambda d: _set(d, "source.format", "parquet"),
    "zero size": lambda d: _set(d, "source.size_bytes", 0),
    "size past 1 PB": lambda d: _set(d, "source.size_bytes", MAX_SIZE_BYTES + 1),
    "size as text": lambda d: _set(d, "source.size_bytes", "100"),
    "created_at without Z": lambda d: _set(d, "source.created_at", "2024-05-01T12:00:00"),
    "created_at not a date": lambda d: _set(d, "source.created_at", "2024-13-45T12:00:00Z"),
    "created_at missing": lambda d: _drop(d, "source.created_at"),
    "unknown source key": lambda d: _set(d, "source.compression", "gzip"),
    "schema kind": lambda d: _set(d, "schema.kind", "graph"),
}


def _tensor_mutations(doc: Doc) -> dict[str, Mutation]:
    if doc["schema"]["kind"] != "tensor":
        return {}
    a = _first_array(doc)
    shape = doc["schema"]["arrays"][a.rsplit(".", 1)[1]]["shape"]
    out: dict[str, Mutation] = {
        "negative dim": lambda d: _set(d, f"{a}.shape", [-1]),
        "bad dtype": lambda d: _set(d, f"{a}.dtype", "float 32!"),
        "role missing": lambda d: _drop(d, f"{a}.role"),
        "primary unknown": lambda d: _set(d, "schema.primary_array", "nope-not-there"),
        "feature kind": lambda d: _set(d, f"{a}.feature_names.kind", "enum"),
        "pattern without {i}": lambda d: _set(d, f"{a}.feature_names",
                                              {"kind": "pattern", "template": "px"})
        and f"{a}.feature_names.template",
    }
    if shape:
        out["none on a non-scalar"] = lambda d: _set(d, f"{a}.feature_names", {"kind": "none"}) \
            and f"{a}.feature_names.kind"
        out["list too long"] = lambda d: _set(
            d, f"{a}.feature_names", {"kind": "list", "names": ["n"] * (shape[-1] + 1)}) \
            and f"{a}.feature_names.names"
    else:
        out["sequence on a scalar"] = lambda d: _set(
            d, f"{a}.feature_names", {"kind": "sequence"}) and f"{a}.feature_names.kind"
    return out


def _other_mutations(doc: Doc) -> dict[str, Mutation]:
    kind = doc["schema"]["kind"]
    if kind == "tabular":
        return {
            "delimiter two chars": lambda d: _set(d, "source.format_params.delimiter", ";;"),
            "delimiter missing": lambda d: _drop(d, "source.format_params"),
            "negative rows": lambda d: _set(d, "schema.row_count", -1),
            "duplicate columns": lambda d: _set(d, "schema.columns", ["a", "a"]),
            "dtypes disagree": lambda d: _set(d, "schema.dtypes", {"zz": "int64"}),
        }
    if kind == "file":
        return {"content type": lambda d: _set(d, "schema.content_type", "not a type"),
                "params on a file": lambda d: _set(d, "source.format_params",
                                                   {"delimiter": ","})}
    return {"params on a tensor": lambda d: _set(d, "source.format_params", {"delimiter": ","}),
            "tensor kind for a non-tensor format": lambda d: (
                _set(d, "source.format", "csv") and "schema.kind")}


@settings(max_examples=200)
@given(documents(), st.data())
def test_each_single_mutation_is_reported_at_its_path(doc: Doc, data: st.DataObject) -> None:
    mutations = {**MUTATIONS, **_tensor_mutations(doc), **_other_mutations(doc)}
    label = data.draw(st.sampled_from(sorted(mutations)))
    broken = copy.deepcopy(doc)
    path = mutations[label](broken)
    problems = validate_metadata(broken)
    assert path in [p.path for p in problems], (label, problems)
    for p in problems:
        assert p.expected and p.found


@given(documents())
def test_every_problem_is_reported_at_once_with_details(doc: Doc) -> None:
    doc = copy.deepcopy(doc)
    doc["schema_version"] = 7
    doc["description"] = "short"
    doc["source"]["size_bytes"] = -5
    with pytest.raises(InvalidInput) as caught:
        check_metadata(doc)
    err = caught.value
    assert err.code == "invalid_metadata"
    assert err.details is not None
    found = {d["path"] for d in err.details}
    assert {"schema_version", "description", "source.size_bytes"} <= found
    assert err.as_dict()["details"] == err.details
    for d in err.details:
        assert d["path"] in err.message


def test_a_document_over_one_mebibyte_is_refused_whole() -> None:
    doc: Doc = {"schema_version": 1, "description": "x" * 30, "source": {},
                "schema": {"kind": "file", "content_type": "text/plain",
                           "pad": "y" * MAX_METADATA_BYTES}}
    problems = validate_metadata(doc)
    assert [p.path for p in problems] == [""]
    assert "bytes" in problems[0].expected


def test_arguments_that_repeat_the_metadata_must_equal_it() -> None:
    doc: Doc = {"schema_version": 1, "description": "a file that holds some plain text",
                "source": {"format": "file", "size_bytes": 10,
                           "created_at": "2024-05-01T12:00:00Z"},
                "schema": {"kind": "file", "content_type": "text/plain"}}
    with pytest.raises(InvalidInput) as caught:
        check_metadata(doc, description="another text entirely", fmt="csv", size_bytes=11)
    assert {d["path"] for d in caught.value.details or []} == {
        "description", "source.format", "source.size_bytes"}


@pytest.mark.parametrize("doc", [None, [], "text", 3])
def test_a_document_that_is_not_an_object_is_one_problem(doc: Any) -> None:
    assert paths(doc) == [""]


def test_a_hostile_value_is_shown_short() -> None:
    doc: Doc = {"schema_version": "x" * 100_000, "description": "a" * 30,
                "source": {"format": "file", "size_bytes": 1,
                           "created_at": "2024-05-01T12:00:00Z"},
                "schema": {"kind": "file", "content_type": "text/plain"}}
    (problem,) = validate_metadata(doc)
    assert len(json.dumps(problem.as_dict())) < 300

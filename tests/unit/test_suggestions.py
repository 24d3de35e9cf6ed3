"""The did-you-mean rule every refusal uses, and the compaction of listed tool schemas."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from quipu.core.validation import did_you_mean, suggest
from quipu.mcp._schemas import compact_schema

NAMES = st.text(alphabet=string.ascii_lowercase + string.digits + "-_.", min_size=4,
                max_size=20)


@given(st.lists(NAMES, min_size=1, max_size=20, unique=True), st.data())
def test_an_existing_name_suggests_itself(options: list[str], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(options))
    assert suggest(name, options) == name


@given(NAMES, st.data())
def test_a_swap_of_two_neighbouring_letters_is_suggested_back(name: str,
                                                              data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(name) - 2))
    typo = name[:i] + name[i + 1] + name[i] + name[i + 2:]
    assert suggest(typo, [name, "zzzzzzzzzzzzzzzzzzzzzzzz"]) == name
    assert did_you_mean(typo, [name]) == f"did you mean {name!r}? "


def test_nothing_close_suggests_nothing() -> None:
    assert suggest("wine-mlp", ["cifar", "digits"]) is None
    assert did_you_mean("wine-mlp", []) == ""
    assert did_you_mean("trian", ["prep", "train"]) == "did you mean 'train'? "


# --- compact_schema ------------------------------------------------------------------------------

LEAVES: st.SearchStrategy[dict[str, Any]] = st.sampled_from([
    {"type": "string"}, {"type": "integer", "minimum": 1}, {"enum": ["a", "b"], "type": "string"},
    {"type": "object", "additionalProperties": True}])


def optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}], "default": None, "description": "d"}


SCHEMAS = st.recursive(
    LEAVES | LEAVES.map(optional),
    lambda inner: st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3).map(
        lambda props: {"type": "object", "properties": props, "required": sorted(props)[:1],
                       "additionalProperties": False}),
    max_leaves=8)


def walk(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, dict):
        return [schema, *(n for v in schema.values() for n in walk(v))]
    if isinstance(schema, list):
        return [n for v in schema for n in walk(v)]
    return []


@given(SCHEMAS)
def test_compaction_keeps_types_bounds_enums_and_required_and_is_idempotent(
        schema: dict[str, Any]) -> None:
    out = compact_schema(schema)
    assert compact_schema(out) == out
    nodes = walk(out)
    assert not any(n.get("type") == "null" or n.get("default", 0) is None for n in nodes)
    assert not any(n.get("additionalProperties") is True for n in nodes)
    before = walk(schema)
    for key in ("minimum", "enum", "required", "properties"):
        assert sum(key in n for n in nodes) == sum(key in n for n in before), key
    assert sum(n.get("additionalProperties") is False for n in nodes) == sum(
        n.get("additionalProperties") is False for n in before)

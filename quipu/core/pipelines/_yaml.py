"""YAML text -> data, plus the line of every key and the keys written twice.

PyYAML silently keeps the last of two equal keys, which would hide a stage defined twice in the
mapping form; composing the node tree first lets us report it, with line numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["Loaded", "YamlPath", "load_yaml"]

YamlPath = tuple[str | int, ...]


@dataclass
class Loaded:
    """What one YAML text held, where each part was written, and what went wrong."""

    data: Any = None
    lines: dict[YamlPath, int] = field(default_factory=dict)
    duplicates: list[tuple[YamlPath, str, int]] = field(default_factory=list)  # (map, key, line)
    error: str | None = None
    error_line: int | None = None

    def line_of(self, path: YamlPath) -> int | None:
        """The 1-based line of ``path``, or of its nearest written ancestor."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def load_yaml(text: str) -> Loaded:
    """Parse ``text`` without raising: syntax errors come back in ``error``/``error_line``."""
    out = Loaded()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        out.data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        out.error = str(getattr(exc, "problem", None) or exc)
        out.error_line = mark.line + 1 if mark is not None else None
        return out
    if root is not None:
        _walk(root, (), out, frozenset())
    return out


def _walk(node: Node, path: YamlPath, out: Loaded, seen: frozenset[int]) -> None:
    if id(node) in seen:  # a recursive alias: nothing new below
        return
    seen = seen | {id(node)}
    out.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else "?"
            if key in keys:
                out.duplicates.append((path, key, key_node.start_mark.line + 1))
                continue
            keys.add(key)
            out.lines.setdefault((*path, key), key_node.start_mark.line + 1)
            _walk(value_node, (*path, key), out, seen)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), out, seen)

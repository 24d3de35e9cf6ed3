"""Every error code Quipu can give is listed in docs/mcp.md, and the docs promise no other.

The codes are found statically in ``quipu/`` (so a new refusal cannot slip past the docs):

- ``code="..."`` given to a ``QuipuError`` (a subclass, or its ``super().__init__``) and every
  ``code = "..."`` a variable later given as ``code=``; an error built without a code has its
  class's ``default_code``;
- the codes of pipeline problems (``checker.error("...")``, ``Problem(code="...")``), which
  ``run()`` raises as its refusal's code when every problem shares one, and of the sources'
  problem lists (``problems_error(..., code="...")``);
- ``"code": "..."`` in dicts (the warnings a committed command may carry);
- the MCP edge's own lines (``_line("invalid_arguments", ...)``);
- the first argument of helpers that take the code as a parameter (``_refuse(what, code)``),
  and of a config problem (``ConfigIssue("config_bad_value", ...)``).

docs/mcp.md's "Error codes" section is the index: each code once, in backticks at the start of
a row. Every code any tool's "Errors:" line names must be raisable as well.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import quipu.core.errors as errors

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "quipu"
DOC = ROOT / "docs" / "mcp.md"

ERROR_CLASSES = {cls.__name__: cls.default_code for cls in (
    errors.QuipuError, errors.InvalidInput, errors.NotFound, errors.Conflict,
    errors.Unavailable, errors.IntegrityFailure)}
CODE = re.compile(r"^[a-z][a-z0-9_]*$")
# Functions whose positional argument at this index is an error code.
CODE_ARGUMENT = {"error": 0, "_line": 0, "_refuse": 1, "ConfigIssue": 0}


def _subclasses(trees: list[ast.Module]) -> dict[str, str]:
    """Error classes defined in quipu (``class UnreadableState(IntegrityFailure)``), with the
    default code they inherit or set."""
    known = dict(ERROR_CLASSES)
    changed = True
    while changed:
        changed = False
        for tree in trees:
            for node in ast.walk(tree):
                if not isinstance(node, ast.ClassDef) or node.name in known:
                    continue
                bases = [b.id for b in node.bases if isinstance(b, ast.Name) and b.id in known]
                if not bases:
                    continue
                code = known[bases[0]]
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                            and any(isinstance(t, ast.Name) and t.id == "default_code"
                                    for t in stmt.targets)):
                        code = str(stmt.value.value)
                known[node.name] = code
                changed = True
    return known


def _strings(node: ast.AST) -> set[str]:
    """The string constants an expression can evaluate to (``a if c else "b"`` gives both)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body) | _strings(node.orelse)
    return set()


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def raisable_codes() -> set[str]:
    """Every code the package can give, found as the module docstring says."""
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.rglob("*.py"))]
    classes = _subclasses(trees)
    codes: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _name(node.func)
                keywords = {k.arg: k.value for k in node.keywords if k.arg}
                if name in classes and name != "Problem":
                    if "code" in keywords:
                        codes |= _strings(keywords["code"])
                    else:
                        codes.add(classes[name])
                if name in ("Problem", "__init__", "problems_error") and "code" in keywords:
                    codes |= _strings(keywords["code"])
                index = CODE_ARGUMENT.get(name or "")
                if index is not None and len(node.args) > index:
                    codes |= _strings(node.args[index])
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "code" for t in node.targets):
                codes |= _strings(node.value)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "code" and value:
                        codes |= _strings(value)
    return {c for c in codes if CODE.match(c)}


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def documented_codes() -> set[str]:
    """The codes in the index: the first backticked word of each table row."""
    rows = _section(DOC.read_text(encoding="utf-8"), "Error codes").splitlines()
    return {m.group(1) for line in rows if (m := re.match(r"^\| `([a-z0-9_]+)`", line))}


def promised_codes() -> set[str]:
    """Every backticked code in a tool's "Errors:" paragraph."""
    text = DOC.read_text(encoding="utf-8")
    found: set[str] = set()
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.lstrip().startswith("Errors:"):
            found |= {w for w in re.findall(r"`([a-z0-9_]+)`", paragraph)}
    return found


def test_the_scan_finds_codes_of_every_kind() -> None:
    """A guard on the scan itself: one code of each way of building one."""
    codes = raisable_codes()
    assert {"reason_too_short", "slot_occupied",  # code="..."
            "integrity_failure",  # a class's default_code
            "state_unreadable",  # super().__init__(code=...) in a subclass
            "invalid_yaml", "unknown_key",  # pipeline problems
            "views_not_refreshed",  # a warning dict
            "invalid_arguments", "internal_error",  # the MCP edge
            "invalid_results"} <= codes  # _refuse(what, code)


def test_every_code_the_code_can_raise_is_listed_in_docs_mcp() -> None:
    missing = raisable_codes() - documented_codes()
    assert not missing, f"codes missing from docs/mcp.md 'Error codes': {sorted(missing)}"


def test_docs_mcp_lists_no_code_that_cannot_be_raised() -> None:
    raisable = raisable_codes()
    stale = (documented_codes() | promised_codes()) - raisable
    assert not stale, f"docs/mcp.md names codes nothing raises: {sorted(stale)}"

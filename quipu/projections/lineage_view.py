"""The lineage graph: workspaces, versions, pipeline runs, runs, content and sources, and how
they flow.

The fold stores the facts ``lineage_facts`` reads out of each event: one row per node (its
kind, what is known about it as JSON, the position it was last described at) and one row per
edge, indexed both ways, so a walk of many hops is a few indexed lookups per hop at any length
of history. Nothing here scans the history at query time.

Queries: ``resolve`` turns what an agent types (a run id, ``ws@v3``, ``ws``, ``@tag``,
``ws@tag``, a content hash or its prefix, a source) into a node; ``walk`` gives the compact
graph around it (nearest nodes first, bounded, truncation said with counts); ``provenance``
gives a run's whole upstream closure grouped for ``inspect_run``.
"""

from __future__ import annotations

import collections
import difflib
import heapq
import itertools
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.errors import InvalidInput, NotFound

from ._base import Folded, Indexes, chunks, placeholders
from .lineage_facts import (
    FACTS,
    NODE_KINDS,
    SEVERITIES,
    Edge,
    facts,
    kind_of,
    merge,
    output_node,
    run_node,
    source_node,
    version_node,
    workspace_node,
)

__all__ = ["DIRECTIONS", "MAX_DEPTH", "MAX_NODES", "WALK_CAP", "LineageView", "findings_of",
           "label", "node", "provenance", "resolve", "walk"]

DIRECTIONS = ("upstream", "downstream", "both")
MAX_DEPTH = 100
"""Most hops a walk may ask for."""
MAX_NODES = 500
"""Most nodes one answer may show (the default is far fewer)."""
WALK_CAP = 200_000
"""Most nodes a walk visits to count what it does not show; past it the counts are lower
bounds (``counts_exact`` false)."""


class LineageView:
    """Folds the lineage facts of workspace, version, pipeline-run, run and source events."""

    name: ClassVar[str] = "lineage"
    # 2: source nodes, content / promoted-from edges; 3: checkpoint nodes, saved /
    # resumed-from edges, a resumed run's resumed_from attr, source -> run edges named by
    # the input; 4: a run's SVS findings (counts per severity, blocked, stop, suggested);
    # 5: a gs:// source's staged content (SourceStaged)
    version: ClassVar[int] = 5
    types: ClassVar[frozenset[str]] = frozenset(FACTS)
    tables: ClassVar[tuple[str, ...]] = ("lineage_nodes", "lineage_edges")
    indexes: ClassVar[Indexes] = (("lineage_edges", ("dst", "src")),)

    def create(self, db: sqlite_utils.Database) -> None:
        """The tables: edges keyed (src, dst, kind, name) serve downstream lookups; the
        ``indexes`` entry serves upstream ones."""
        db.table("lineage_nodes").create({"node": str, "kind": str, "attrs": str,
                                          "position": int}, pk="node")
        db.table("lineage_edges").create({"src": str, "dst": str, "kind": str, "name": str,
                                          "position": int},
                                         pk=("src", "dst", "kind", "name"))

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Fold a page: merge node facts in log order, add edges (an edge is added once)."""
        merged: dict[str, tuple[dict[str, Any], int]] = {}
        edges: list[tuple[Edge, int]] = []
        pending = []
        for f in events:
            found = facts(f.event)
            pending.append((f.position, found))
        ids = {n.id for _, found in pending for n in found.nodes}
        for batch in chunks(sorted(ids)):
            for node_id, attrs, position in conn.execute(
                    f"SELECT node, attrs, position FROM lineage_nodes WHERE node IN "
                    f"({placeholders(len(batch))})", batch):
                merged[node_id] = (json.loads(attrs), position)
        changed: set[str] = set()
        for position, found in pending:
            for n in found.nodes:
                known = merged.get(n.id)
                after = merge(None if known is None else known[0], n)
                if after is None:
                    continue
                merged[n.id] = (after, position)
                changed.add(n.id)
            edges.extend((e, position) for e in found.edges)
        conn.executemany(
            "INSERT OR REPLACE INTO lineage_nodes (node, kind, attrs, position) VALUES (?,?,?,?)",
            [(i, kind_of(i), json.dumps(merged[i][0], sort_keys=True, separators=(",", ":")),
              merged[i][1]) for i in sorted(changed)])
        conn.executemany(
            "INSERT OR IGNORE INTO lineage_edges (src, dst, kind, name, position) "
            "VALUES (?,?,?,?,?)", [(e.src, e.dst, e.kind, e.name, p) for e, p in edges])


# --- queries -------------------------------------------------------------------------------------


def node(conn: sqlite3.Connection, node_id: str) -> dict[str, Any] | None:
    """A node's attrs (None if the graph has no such node)."""
    row = conn.execute("SELECT attrs FROM lineage_nodes WHERE node = ?", (node_id,)).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def _short(text: Any, n: int = 60) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


def label(node_id: str, attrs: dict[str, Any]) -> str:
    """One line saying what a node is."""
    kind, _, key = node_id.partition(":")
    if kind == "workspace":
        extra = f", forked from {attrs['forked_from']}" if attrs.get("forked_from") else ""
        gone = " (deleted)" if attrs.get("deleted") else ""
        return f"workspace {key}{extra}{gone}: {_short(attrs.get('goal'))}"
    if kind == "version":
        return (f"version {key}: {_short(attrs.get('message'))} ({attrs.get('files')} files, "
                f"manifest {str(attrs.get('manifest'))[:12]})")
    if kind == "pipeline_run":
        return (f"pipeline run {key} on {attrs.get('workspace')}@v{attrs.get('version')}: "
                f"{_short(attrs.get('description'))}")
    if kind == "run":
        ml = f" ({attrs['ml_outcome']})" if attrs.get("ml_outcome") else ""
        why, state = "", attrs.get("state")
        if attrs.get("blocked"):  # blocked: FIX, or finalized (miss), blocked: FIX
            why = f"{'' if state == 'blocked' else ', blocked'}: {_short(attrs['blocked'])}"
        elif attrs.get("stop"):  # a stop may come too late to be why the run ended
            stop = attrs["stop"]
            asked = " by" if state == "stopped" else ", stop requested by"
            why = f"{asked} {stop.get('by')}: {_short(stop.get('why'))}"
        counts = findings_of(attrs)
        found = ("; findings " + ", ".join(f"{n} {k}" for k, n in counts.items())
                 if counts else "")
        return (f"{attrs.get('stage')} run {key} on {attrs.get('workspace')}@v"
                f"{attrs.get('version')}: {attrs.get('state')}{ml}{why}{found}")
    if kind == "output":
        origin = (f" from {attrs['producer']}" if attrs.get("producer")
                  else f" from {attrs['path']}" if attrs.get("path") else "")
        return (f"{attrs.get('name') or 'data'} sha256:{key[:12]} ({attrs.get('kind', 'file')}, "
                f"{attrs.get('size')} bytes){origin}")
    if kind == "checkpoint":
        step = "latest" if attrs.get("step") is None else f"step {attrs['step']}"
        return (f"checkpoint {attrs.get('run')}/{attrs.get('name')}/{step} sha256:{key[:12]} "
                f"({attrs.get('size')} bytes)")
    if kind == "source":
        origin = (f", promoted from {attrs['promoted_from']}" if attrs.get("promoted_from")
                  else "")
        return (f"source {key} ({attrs.get('format')}, {attrs.get('size')} bytes, "
                f"{attrs.get('status')}{origin}): {_short(attrs.get('description'))}")
    return node_id


def findings_of(attrs: dict[str, Any]) -> dict[str, int]:
    """A run node's finding counts, most severe first, zero counts left out (empty: none)."""
    counts = attrs.get("findings") or {}
    order = [*SEVERITIES, *sorted(set(counts) - set(SEVERITIES) - {"omitted"}), "omitted"]
    return {k: int(counts[k]) for k in order if counts.get(k)}


_VERSION = re.compile(r"v?(\d+)")
_HEX = re.compile(r"[0-9a-f]{4,64}")


def _exists(conn: sqlite3.Connection, node_id: str) -> bool:
    return conn.execute("SELECT 1 FROM lineage_nodes WHERE node = ?", (node_id,)).fetchone() \
        is not None


def _by_prefix(conn: sqlite3.Connection, prefix: str, limit: int = 11) -> list[str]:
    """Node ids starting with ``prefix`` (a range of the primary key)."""
    return [str(n) for (n,) in conn.execute(
        "SELECT node FROM lineage_nodes WHERE node >= ? AND node < ? ORDER BY node LIMIT ?",
        (prefix, prefix + "\U0010ffff", limit))]


def _one(ref: str, found: list[str], what: str) -> str:
    if len(found) > 1:
        shown = ", ".join(f[:40] for f in found[:10])
        raise InvalidInput(f"{ref!r} matches more than one {what}: {shown}",
                           code="ambiguous_ref", hint="give more characters, or one of those")
    return found[0]


def _tagged(conn: sqlite3.Connection, workspace: str | None, tag: str) -> list[str]:
    """Nodes tagged ``tag`` in one workspace or in all: the runs (newest tag first) if any run
    has it, else the versions. Tagging a run tags the version it ran too (``TagRun``), so a
    tag both have names the run: the more specific of the two. Reads the tag tables the
    workspaces and runs views keep."""
    where, args = ("AND workspace = ?", (tag, workspace)) if workspace is not None else ("",
                                                                                        (tag,))
    runs = [run_node(str(r)) for (r,) in conn.execute(
        f"SELECT run_id FROM run_tags WHERE tag = ? {where} ORDER BY position DESC", args)]
    if runs:
        return list(dict.fromkeys(runs))
    return [version_node(str(w), int(n)) for w, n in conn.execute(
        f"SELECT workspace, number FROM version_tags WHERE tag = ? {where} ORDER BY workspace",
        args)]


def resolve(conn: sqlite3.Connection, ref: str) -> str:
    """The node ``ref`` names: a node id (``run:...``, ``source:NAME``), a run or pipeline run
    id, ``ws@v3``, a workspace or source name (``ambiguous_ref`` when both have it), ``@tag`` /
    ``ws@tag`` (a run tag, else a version tag), or a content hash or its prefix (``sha256:``
    optional, at least 4 hex digits).

    ``NotFound(unknown_ref)`` with did-you-mean when nothing matches;
    ``InvalidInput(ambiguous_ref)`` listing the candidates when several do.
    """
    ref = ref.strip()
    if not ref:
        raise InvalidInput("the ref is empty", code="unknown_ref",
                           hint="pass a run id, ws@v3, a workspace, a source, @tag or a "
                           "content hash")
    kind, sep, key = ref.partition(":")
    if sep and kind in NODE_KINDS:
        if _exists(conn, ref):
            return ref
        if kind in ("output", "checkpoint") and _HEX.fullmatch(key.lower()):
            found = _by_prefix(conn, f"{kind}:{key.lower()}")
            if found:
                return _one(ref, found, kind)
        raise _unknown(conn, ref)
    if ref.lower().startswith("sha256:"):
        found = _by_prefix(conn, output_node(ref[7:].lower()))
        if found and _HEX.fullmatch(ref[7:].lower()):
            return _one(ref, found, "output")
        raise _unknown(conn, ref)
    if "@" in ref:
        workspace, _, rest = ref.partition("@")
        if not workspace:
            found = _tagged(conn, None, rest)
            if found:
                return _one(ref, found, "tagged version or run (tags are per workspace: "
                            "write ws@tag)")
            raise _unknown(conn, ref)
        number = _VERSION.fullmatch(rest)
        if number and _exists(conn, version_node(workspace, int(number.group(1)))):
            return version_node(workspace, int(number.group(1)))
        found = _tagged(conn, workspace, rest)
        if found:
            return found[0]  # the run tagged most recently, else the version
        raise _unknown(conn, ref)
    for candidate in (run_node(ref), f"pipeline_run:{ref}"):
        if _exists(conn, candidate):
            return candidate
    # Workspace and source names are separate namespaces: a name both have is ambiguous.
    named = [c for c in (workspace_node(ref), source_node(ref)) if _exists(conn, c)]
    if named:
        return _one(ref, named, "node (write workspace:NAME or source:NAME)")
    if _HEX.fullmatch(ref.lower()):
        found = _by_prefix(conn, output_node(ref.lower()))
        found = found or _by_prefix(conn, f"checkpoint:{ref.lower()}")
        if found:
            return _one(ref, found, kind_of(found[0]))
    raise _unknown(conn, ref)


def _unknown(conn: sqlite3.Connection, ref: str) -> NotFound:
    """``unknown_ref`` with the closest names the graph holds (workspaces, runs, tags)."""
    word = ref.split(":", 1)[-1]
    head = word.split("@", 1)[0]
    pool = [n.partition(":")[2] for n in _by_prefix(conn, "workspace:", 500)]
    pool += [n.partition(":")[2] for n in _by_prefix(conn, "source:", 500)]
    for kind in ("run:", "pipeline_run:"):
        pool += [n.partition(":")[2] for n in _by_prefix(conn, kind + head[:6], 200)]
    if "@" in word:
        ws = head or None
        pool += [f"{w}@v{n}" for w, n in conn.execute(
            "SELECT workspace, number FROM versions WHERE workspace = ? ORDER BY number DESC "
            "LIMIT 200", (ws,))] if ws else []
        pool += [f"{w}@{t}" for w, t in conn.execute(
            "SELECT workspace, tag FROM version_tags LIMIT 500")]
        pool += [f"{w}@{t}" for w, t in conn.execute(
            "SELECT DISTINCT workspace, tag FROM run_tags LIMIT 500")]
        pool += [f"@{t}" for (t,) in conn.execute(
            "SELECT DISTINCT tag FROM version_tags UNION SELECT DISTINCT tag FROM run_tags "
            "LIMIT 500")]
    close = difflib.get_close_matches(word, sorted(set(pool)), n=3, cutoff=0.6)
    mean = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return NotFound(f"nothing in the lineage graph is called {ref!r}", code="unknown_ref",
                    hint=f"{mean}a ref is a run id (stage-...), a pipeline run id (prun-...), "
                    "a workspace, ws@v3, @tag or ws@tag, a source (source:NAME), or a content "
                    "hash (prefix of at least 4 hex digits)")


WALK_BATCH = 5000
"""Frontier nodes per query (SQLite >= 3.32 allows 32,766 parameters; fewer, larger queries
walk a wide fan-out faster)."""


PROVENANCE_FANIN = 16
"""Producers a provenance closure follows per content node. Identical content made by many
runs (a deterministic preprocessing step run a thousand times) is one node with one
``produced`` edge per run; following all of them made ``inspect_run``'s closure, and its cost,
grow with the project's history (1.8 s at 100k runs). The closure follows this many and says
it was truncated; ``get_lineage`` still walks them all."""

_CONTENT_KINDS = ("output:", "checkpoint:")


def _step(conn: sqlite3.Connection, frontier: list[str], upstream: bool,
          kinds: frozenset[str] | None, limit: int | None = None,
          fanin: int | None = None, clipped: list[str] | None = None) -> list[str]:
    """The nodes one hop from the frontier (one per edge, so repeats are possible): only
    the far end of each edge is read, from an index that holds it. With ``fanin`` (upstream
    only), a content node's producers are read ``fanin`` at a time (index order) and the
    nodes that had more are added to ``clipped``."""
    near, far = ("dst", "src") if upstream else ("src", "dst")
    out: list[str] = []
    cap = "" if limit is None else f" LIMIT {int(limit)}"
    if fanin is not None and upstream:
        content = [n for n in frontier if n.startswith(_CONTENT_KINDS)]
        frontier = [n for n in frontier if not n.startswith(_CONTENT_KINDS)]
        for node in content:
            rows = conn.execute("SELECT src FROM lineage_edges WHERE dst = ? LIMIT ?",
                                (node, fanin + 1)).fetchall()
            if len(rows) > fanin:
                rows = rows[:fanin]
                if clipped is not None:
                    clipped.append(node)
            out += [r[0] for r in rows
                    if kinds is None or r[0][: r[0].find(":")] in kinds]
    for batch in chunks(frontier, WALK_BATCH):
        rows = conn.execute(f"SELECT {far} FROM lineage_edges WHERE {near} IN "
                            f"({placeholders(len(batch))}){cap}", batch).fetchall()
        if kinds is None:
            out += [r[0] for r in rows]
        else:
            out += [r[0] for r in rows if r[0][: r[0].find(":")] in kinds]
    return out


def _closure(conn: sqlite3.Connection, root: str, upstream: bool, depth: int,
             kinds: frozenset[str] | None, seen: dict[str, int], *,
             fanin: int | None = None) -> tuple[int, bool, bool]:
    """Add to ``seen`` (node -> hops) everything within ``depth`` hops of ``root`` one way;
    return (edges crossed, more lies beyond ``depth``, the cap was hit: ``WALK_CAP`` nodes,
    or ``fanin`` producers of a content node, see ``_step``)."""
    frontier = [root]
    crossed = 0
    clipped: list[str] = []
    for hop in range(1, depth + 1):
        reached = _step(conn, frontier, upstream, kinds, fanin=fanin, clipped=clipped)
        crossed += len(reached)
        frontier = []
        for other in reached:
            if other not in seen:
                seen[other] = hop
                frontier.append(other)
        if not frontier:
            return crossed, False, bool(clipped)
        if len(seen) >= WALK_CAP:
            return crossed, True, True
    return (crossed, bool(_step(conn, frontier[:WALK_BATCH], upstream, kinds, limit=1)),
            bool(clipped))


def _edges_among(conn: sqlite3.Connection,
                 nodes: list[str]) -> list[tuple[str, str, str, str]]:
    """Every edge between two of ``nodes``, as (src, kind, dst, name).

    Both ends are constrained in SQL, so the primary key (src, dst, ...) is probed per pair
    and a hub among the nodes (a version a thousand runs ran on) costs nothing extra."""
    if len(nodes) > WALK_BATCH:  # a provenance closure this big: one end at a time
        shown = set(nodes)
        return [(s, k, d, n) for batch in chunks(nodes, WALK_BATCH) for s, d, k, n in
                conn.execute(f"SELECT src, dst, kind, name FROM lineage_edges WHERE dst IN "
                             f"({placeholders(len(batch))})", batch) if s in shown]
    marks = placeholders(len(nodes))
    return [(s, k, d, n) for s, d, k, n in conn.execute(
        f"SELECT src, dst, kind, name FROM lineage_edges WHERE src IN ({marks}) AND dst IN "
        f"({marks})", [*nodes, *nodes])]


def walk(conn: sqlite3.Connection, root: str, *, direction: str = "upstream", depth: int = 5,
         kinds: Iterable[str] | None = None, limit: int = 60) -> dict[str, Any]:
    """The graph around ``root``: nodes (nearest first, each with a one-line label and its
    hops from the root) and edges ``[from, kind, to, name?]`` (from upstream to downstream)
    between the nodes shown, at most ``limit`` nodes and ``2 * limit`` edges; ``counts`` say
    how many nodes were reached and edges crossed in all, by kind, and ``truncated`` /
    ``more_beyond_depth`` say what was left out.

    ``kinds`` restricts the walk to nodes of those kinds (the root is always shown).
    """
    if direction not in DIRECTIONS:
        raise InvalidInput(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}",
                           code="invalid_direction",
                           hint="upstream: what it came from; downstream: what used it; both")
    if not 1 <= depth <= MAX_DEPTH:
        raise InvalidInput(f"depth {depth} is out of range", code="invalid_depth",
                           hint=f"depth is 1 to {MAX_DEPTH} hops")
    if not 1 <= limit <= MAX_NODES:
        raise InvalidInput(f"limit {limit} is out of range", code="invalid_limit",
                           hint=f"limit is 1 to {MAX_NODES} nodes")
    wanted = None if kinds is None else frozenset(kinds)
    if wanted is not None:
        bad = sorted(wanted - set(NODE_KINDS))
        if bad or not wanted:
            close = difflib.get_close_matches(bad[0], NODE_KINDS, n=1) if bad else []
            mean = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidInput(f"unknown node kind(s) {bad}", code="invalid_kinds",
                               hint=f"{mean}kinds are any of: {', '.join(NODE_KINDS)}")
    seen: dict[str, int] = {root: 0}
    crossed = 0
    beyond = capped = False
    ways = {"upstream": (True,), "downstream": (False,), "both": (True, False)}[direction]
    for up in ways:
        # Each way walks on its own: a node the other way reached first must still be
        # expanded this way (sharing one ``seen`` cut the downstream walk short there).
        reached: dict[str, int] = {root: 0}
        n, more, cap = _closure(conn, root, up, depth, wanted, reached)
        crossed, beyond, capped = crossed + n, beyond or more, capped or cap
        for node, hops in reached.items():
            seen[node] = min(hops, seen.get(node, hops))
    # One way, ``seen`` is in breadth-first order already; both ways, the nearest of the two.
    shown_ids = (list(itertools.islice(seen, limit)) if len(ways) == 1
                 else heapq.nsmallest(limit, seen, key=seen.__getitem__))
    attrs: dict[str, dict[str, Any]] = {}
    for batch in chunks(shown_ids):
        for node_id, text in conn.execute(
                f"SELECT node, attrs FROM lineage_nodes WHERE node IN "
                f"({placeholders(len(batch))})", batch):
            attrs[node_id] = json.loads(text)
    among = _edges_among(conn, shown_ids)
    shown_edges = [[s, k, d, *([n] if n else [])] for s, k, d, n in among][: 2 * limit]
    by_kind = collections.Counter(n[: n.find(":")] for n in seen)
    truncated = len(seen) > len(shown_ids) or len(shown_edges) < len(among)
    out: dict[str, Any] = {
        "root": root, "direction": direction, "depth": depth,
        "nodes": [_shown(n, attrs.get(n, {}), seen[n]) for n in shown_ids],
        "edges": shown_edges,
        "counts": {"nodes": len(seen), "edges": crossed, "by_kind": dict(sorted(
            by_kind.items())), "exact": not capped},
        "truncated": truncated, "more_beyond_depth": beyond,
    }
    if truncated:
        out["hint"] = (f"showing the {len(shown_ids)} nearest of {len(seen)} nodes; narrow with "
                       "kinds=[...] or a smaller depth, or raise limit")
    elif beyond:
        out["hint"] = f"more lies beyond {depth} hops: raise depth to see it"
    return out


def _shown(node_id: str, attrs: dict[str, Any], hops: int) -> dict[str, Any]:
    """A node as a walk shows it; a run with findings also has its counts per severity."""
    out: dict[str, Any] = {"id": node_id, "label": label(node_id, attrs), "hops": hops}
    counts = findings_of(attrs) if kind_of(node_id) == "run" else {}
    if counts:
        out["findings"] = counts
    return out


PROVENANCE_LIST = 50
"""Most entries per section of a run's provenance closure (counts say how many in all)."""


def provenance(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """A run's whole upstream closure for ``inspect_run``: the workspaces (with fork parents),
    versions (with manifest digests), pipeline runs, upstream runs (with config hashes) and the
    content given to them, each back to the run that produced it, and the sources it came
    from (registered, or promoted from an upstream run's output)."""
    root = run_node(run_id)
    seen: dict[str, int] = {root: 0}
    _, more, capped = _closure(conn, root, True, MAX_DEPTH, None, seen,
                               fanin=PROVENANCE_FANIN)
    consumers: dict[str, list[str]] = {}
    for src, kind, dst, name in _edges_among(conn, list(seen)):
        if kind == "consumed":
            run = dst.partition(":")[2]
            consumers.setdefault(src, []).append(f"{run}.{name}" if name else run)
    sections: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "workspaces", "versions", "pipeline_runs", "runs", "inputs", "sources",
        "checkpoints")}
    counts = dict.fromkeys(sections, 0)
    ids = sorted(seen, key=lambda n: (seen[n], n))
    attrs: dict[str, dict[str, Any]] = {}
    for batch in chunks(ids):
        for node_id, text in conn.execute(
                f"SELECT node, attrs FROM lineage_nodes WHERE node IN "
                f"({placeholders(len(batch))})", batch):
            attrs[node_id] = json.loads(text)
    for n in ids:
        if n == root or kind_of(n) not in _SECTIONS:
            continue
        section = _SECTIONS[kind_of(n)]
        counts[section] += 1
        if len(sections[section]) < PROVENANCE_LIST:
            entry = _entry(n, attrs.get(n, {}), sorted(consumers.get(n, []))[:5])
            sections[section].append({k: v for k, v in entry.items() if v is not None})
    return {**sections, "counts": counts, "hops": max(seen.values()),
            "truncated": capped or more or any(c > PROVENANCE_LIST for c in counts.values())}



_SECTIONS = {"workspace": "workspaces", "version": "versions", "pipeline_run": "pipeline_runs",
             "run": "runs", "output": "inputs", "source": "sources",
             "checkpoint": "checkpoints"}


def _entry(node_id: str, a: dict[str, Any], given_to: list[str]) -> dict[str, Any]:
    """One node of a provenance closure, as its section lists it."""
    kind, _, key = node_id.partition(":")
    if kind == "workspace":
        return {"name": key, "forked_from": a.get("forked_from")}
    if kind == "version":
        return {"version": key, "manifest": a.get("manifest"), "files": a.get("files")}
    if kind == "pipeline_run":
        return {"pipeline_run_id": key, "description": a.get("description")}
    if kind == "run":
        return {"run_id": key, "stage": a.get("stage"),
                "version": f"{a.get('workspace')}@v{a.get('version')}",
                "config_hash": a.get("config_hash"), "state": a.get("state"),
                "findings": findings_of(a) or None}
    if kind == "checkpoint":
        return {"sha256": key, "name": a.get("name"), "step": a.get("step"),
                "size": a.get("size"), "saved_by": a.get("run"), "given_to": given_to}
    if kind == "source":
        return {"name": key, "sha256": a.get("sha256"), "format": a.get("format"),
                "status": a.get("status"), "promoted_from": a.get("promoted_from"),
                "used_by": given_to}
    return {"sha256": key, "size": a.get("size"), "produced_by": a.get("producer"),
            "output": a.get("name"), "path": a.get("path"), "given_to": given_to}

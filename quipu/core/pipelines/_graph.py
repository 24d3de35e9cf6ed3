"""The stage graph: which stage feeds which, cycles, and a topological order.

Stages may be written in any order; an input may name a stage further down the file. What is
refused is a cycle, because no order could run it. Orders are deterministic: among stages that
are ready at the same time, the one written first comes first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["find_cycles", "topological_order"]

Graph = Mapping[str, Iterable[str]]  # stage -> the stages it reads from


def topological_order(nodes: list[str], deps: Graph) -> list[str] | None:
    """``nodes`` with every stage after the stages it reads from, or None if there is a cycle.

    Dependencies on names outside ``nodes`` are ignored (they are reported elsewhere).
    """
    position = {n: i for i, n in enumerate(nodes)}
    waiting = {n: {d for d in deps.get(n, ()) if d in position and d != n} for n in nodes}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(nodes):
        ready = [n for n in nodes if n not in done and waiting[n] <= done]
        if not ready:
            return None
        first = min(ready, key=position.__getitem__)
        order.append(first)
        done.add(first)
    return order


def find_cycles(nodes: list[str], deps: Graph) -> list[list[str]]:
    """One cycle per strongly connected group of stages, in data-flow order.

    ``[a, b, c]`` means a feeds b, b feeds c and c feeds a. Each cycle starts at the stage
    written first. Self-references are left out: they are reported as a stage depending on
    itself.
    """
    known = set(nodes)
    feeds: dict[str, set[str]] = {n: set() for n in nodes}
    for consumer in nodes:
        for producer in deps.get(consumer, ()):
            if producer in known and producer != consumer:
                feeds[producer].add(consumer)
    succ = {n: sorted(feeds[n], key=nodes.index) for n in nodes}
    cycles = []
    for group in _strongly_connected(nodes, succ):
        if len(group) > 1:
            cycles.append(_cycle_within(min(group, key=nodes.index), set(group), succ))
    return sorted(cycles, key=lambda c: nodes.index(c[0]))


def _strongly_connected(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so deep pipelines cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(succ[node]):
                work.append((node, i + 1))
                nxt = succ[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(group)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return groups


def _cycle_within(start: str, group: set[str], succ: dict[str, list[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself inside one strongly connected group."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in succ[node]:
                if nxt not in group:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return list(reversed(path))
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError("a strongly connected group always contains a cycle")

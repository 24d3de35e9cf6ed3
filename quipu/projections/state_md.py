"""STATE.md: everything an agent that has forgotten everything needs to carry on.

``render`` is a pure function of rows already read from the views (and of the slots' dirty flags,
which the caller asks the slot files about), so the same log and the same dirty answers always
give the same bytes. It reads no clock: every time shown is an event's own timestamp.

Re-rendering after every command would be wasted work when nothing shown changed, so the views
keep a mark of what STATE.md shows: ``StateMdMarkView`` holds the position of the latest event
of the project, workspace, thought and audit views (everything they fold is shown; the audit
view's source events are also every event that changes the data sources count), and the runs
view keeps ``runs_shown`` (a heartbeat or metrics that change nothing shown leave it). The two
positions and the slots' dirty flags change whenever the text can; the facade renders again
only then.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.patterns.events import PatternApproved, PatternProposed, PatternRejected
from quipu.projections._base import Folded, Indexes
from quipu.projections.audit_view import AuditView
from quipu.projections.project_view import ProjectView
from quipu.projections.thoughts_view import ThoughtsView
from quipu.projections.workspaces_view import WorkspacesView

__all__ = ["MAX_ACTIONS", "MAX_BEST", "MAX_OUTCOMES", "MAX_PATTERNS", "MAX_RUNS",
           "MAX_THOUGHTS", "MAX_VERSIONS", "MAX_WORKSPACES", "StateInput", "StateMdMarkView",
           "mark", "render"]

# The caps keep STATE.md (and status(), which carries it) under about 8,000 characters of JSON
# at 50 workspaces and hundreds of runs: every list says how many more there are and where.
MAX_WORKSPACES = 5
"""Workspaces described in full (mounted first, then the most recently active)."""
MAX_VERSIONS = 3
MAX_THOUGHTS = 5
MAX_ACTIONS = 5
MAX_RUNS = 5
"""Runs listed as active or awaiting finalization."""
MAX_BEST = 10
"""Workspaces listed with a best result (best value first within each primary metric, after
the project-wide best per metric)."""
MAX_OUTCOMES = 5
MAX_PATTERNS = 5
"""Approved failure patterns listed (the most recently approved)."""
_TEXT = 160  # longest message / thought / reason shown on one line


@dataclass(frozen=True)
class StateInput:
    """The rows STATE.md is drawn from."""

    project: dict[str, Any]
    slots: list[dict[str, Any]]  # slot, workspace, current_version, dirty
    workspaces: list[dict[str, Any]]  # workspace dicts, each with "latest": [version dicts]
    workspace_total: int
    sources: dict[str, int] | None = None  # sources_view.counts; None or all 0: no line
    thoughts: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, Any] | None = None  # dashboard.state_md_runs; None: no run yet, no sections
    patterns: dict[str, Any] | None = None  # patterns_view.state_md_patterns; None: no section


def when(at: str) -> str:
    """``YYYY-MM-DD HH:MM`` (UTC) of a stored ISO timestamp."""
    stamp = datetime.fromisoformat(at)
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC)
    return stamp.strftime("%Y-%m-%d %H:%M")


def one_line(text: str | None, limit: int = _TEXT) -> str:
    """Collapse whitespace and cut long text with an ellipsis."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _slot_line(s: dict[str, Any]) -> str:
    if not s.get("workspace"):
        return f"- {s['slot']}: (free)"
    state = "DIRTY (unsaved edits)" if s.get("dirty") else "CLEAN"
    at = s.get("current_version") or "no versions yet"
    return f"- {s['slot']}: {s['workspace']} — {state}, at {at}"


def _workspace_lines(w: dict[str, Any]) -> list[str]:
    where = f" (mounted in {w['slot']})" if w.get("slot") else ""
    lines = [f"### {w['name']}{where}", f"- goal: {one_line(w['goal'])}"]
    if w.get("forked_from"):
        lines.append(f"- forked from: {w['forked_from']}@{w['from_version']}")
    current = w.get("current_version") or "none"
    count = w["version_count"]
    lines.append(f"- current version: {current} ({count} version{'' if count == 1 else 's'})")
    for v in w.get("latest", []):
        tags = f" [{', '.join(v['tags'])}]" if v["tags"] else ""
        lines.append(f"  - {v['version']}{tags} [{when(v['created_at'])}] "
                     f"{one_line(v['message'])}")
    if w.get("tags"):
        tags = ", ".join(f"{t}={v}" for t, v in sorted(w["tags"].items()))
        lines.append(f"- tags: {tags}")
    return lines


def _number(value: Any) -> str:
    return "—" if value is None else f"{value:.6g}"


def _goal_text(o: dict[str, Any]) -> str:
    if o.get("goal_value") is None:
        return ""
    sign = "≤" if o.get("direction") == "minimize" else "≥"
    return f" (goal {sign} {_number(o['goal_value'])}, min {sign} {_number(o['min_value'])})"


def _trouble(r: dict[str, Any]) -> str:
    """A waiting run's error and non-finite alerts, as a suffix (empty when it has none)."""
    error = f" ({one_line(r['error'], 160)})" if r.get("error") else ""
    return error + "".join(f" ⚠ {one_line(a)}" for a in r.get("alerts") or [])


def _run_sections(runs: dict[str, Any]) -> list[str]:
    out = ["", "## Active runs"]
    for r in runs["active"]:
        since = f", last seen {when(r['last_seen_at'])}" if r.get("last_seen_at") else ""
        out.append(f"- {r['run_id']} {r['workspace']}/{r['stage']}: {r['state']} since "
                   f"{when(r['created_at'])}{since} — {one_line(r['hypothesis'] or r['reason'])}")
    if not runs["active"]:
        out.append("- (none)")
    if runs.get("blocked"):  # only when there are any: a project without review is unchanged
        out += ["", "## Blocked by the pre-run review"]
        out += [f"- {r['run_id']} {r['workspace']}/{r['stage']}: `inspect_run(\"{r['run_id']}\")`"
                " shows the findings and the fix" for r in runs["blocked"]]

    out += ["", "## Awaiting finalization"]
    verdicts = runs.get("verdicts", {})
    done: set[str] = set()
    for r in runs["awaiting"]:
        verdict = verdicts.get(r.get("pipeline_run_id"))
        if verdict is None:
            out.append(f"- {r['run_id']} {r['workspace']}/{r['stage']} ended "
                       f"{r['infra_outcome']}{_trouble(r)}: `{r['finalize_call']}`")
        elif verdict["pipeline_run_id"] not in done:
            done.add(verdict["pipeline_run_id"])
            stages = ", ".join(f"{s['stage']} {s['run_id']} {s['state']}"
                               for s in verdict["stages"])
            # Each waiting stage's error or non-finite alert, so none hides behind the group.
            trouble = "".join(f" [{w['stage']}{_trouble(w)}]" for w in runs["awaiting"]
                              if w.get("pipeline_run_id") == verdict["pipeline_run_id"]
                              and _trouble(w))
            out.append(f"- {verdict['pipeline_run_id']} {r['workspace']} "
                       f"({one_line(verdict['hypothesis'], 80)}): {stages}{trouble}; one "
                       f"verdict for the experiment: `{verdict['finalize_call']}`")
    hidden = runs["awaiting_total"] - len(runs["awaiting"])
    if hidden > 0:
        out.append(f"- …and {hidden} more: list_unfinalized_runs(workspace)")
    if not runs["awaiting"]:
        out.append("- (none: run() is open)")

    out += ["", "## Recent outcomes"]
    for o in runs["outcomes"]:
        value = (f", {o['primary_metric']} {_number(o['value'])}{_goal_text(o)}"
                 if o["value"] is not None else "")
        out.append(f"- [{when(o['finalized_at'])}] {o['run_id']} {o['workspace']}/{o['stage']}:"
                   f" {one_line(o['hypothesis'] or o['reason'])} → {o['ml_outcome']}{value}")
    if not runs["outcomes"]:
        out.append("- (none finalized yet)")

    out += ["", "## Best results"]
    for metric, top in runs.get("best_by_metric", {}).items():
        out.append(f"- project best {metric} ({top['direction']}): {_number(top['value'])} — "
                   f"{top['workspace']}: {top['run_id']} ({top['stage']}), of "
                   f"{top['workspaces']} workspace{'' if top['workspaces'] == 1 else 's'}")
    for b in runs["best"]:
        out.append(f"- {b['workspace']}: {b['run_id']} ({b['stage']}) {b['primary_metric']} "
                   f"{_number(b['value'])} [{b['chosen_by']}]")
    hidden = runs.get("best_total", len(runs["best"])) - len(runs["best"])
    if hidden > 0:
        out.append(f"- …and {hidden} more: dashboard(section='best', offset={len(runs['best'])})"
                   " or get_experiment_context(workspace)")
    if not runs["best"]:
        out.append("- (none yet)")
    return out


def _pattern_lines(patterns: dict[str, Any]) -> list[str]:
    out = ["", "## Failure patterns (approved)"]
    for p in patterns["approved"]:
        checks = f", checks {p['checks']}" if p.get("checks") else ""
        fix = f" → {one_line(p['prevention'], 80)}" if p.get("prevention") else ""
        out.append(f"- {p['pattern_id']} [{p['stage'] or 'any stage'}, {p['severity']}{checks}]"
                   f" {one_line(p['symptom'], 100)}{fix}")
    hidden = patterns["approved_total"] - len(patterns["approved"])
    if hidden > 0:
        out.append(f"- …and {hidden} more: manage_patterns(action='list', status='approved')")
    if not patterns["approved"]:
        out.append("- (none approved yet)")
    if patterns["candidates"]:
        out.append(f"- {patterns['candidates']} candidate(s) to review: "
                   "manage_patterns(action='list', status='candidate')")
    return out


def render(state: StateInput) -> str:
    """The STATE.md text for ``state``."""
    name = state.project.get("name") or "(uninitialised project)"
    out = [f"# {name}", "", f"**Goal:** {one_line(state.project.get('goal'), 1000) or '(none)'}"]
    if state.project.get("hosts"):  # more than one directory shares this log
        out += ["", "**Hosts:** " + "; ".join(
            f"{h['host']} ({', '.join(h['slots'])})" for h in state.project["hosts"][:16])]
    out += ["", "## Slots"]
    out += [_slot_line(s) for s in state.slots] or ["- (no slots configured)"]

    out += ["", "## Workspaces"]
    if not state.workspaces:
        out.append("No workspaces yet: create_workspace(name, goal, reason).")
    for w in state.workspaces:
        out += _workspace_lines(w)
    hidden = state.workspace_total - len(state.workspaces)
    if hidden > 0:
        out.append(f"\n…and {hidden} more workspaces (most recently active shown).")
    if state.sources and any(state.sources.values()):
        retired = state.sources.get("retired", 0)
        out += ["", f"**Data sources:** {state.sources.get('active', 0)} active"
                + (f", {retired} retired" if retired else "")
                + " — manage_sources(action='list')"]

    if state.runs is not None:
        out += _run_sections(state.runs)

    if state.patterns is not None:
        out += _pattern_lines(state.patterns)

    out += ["", "## Recent thoughts"]
    if not state.thoughts:
        out.append("- (none)")
    for t in state.thoughts:
        about = f" ({t['workspace']})" if t.get("workspace") else ""
        out.append(f"- [{when(t['at'])}] {t['actor']}{about}: {one_line(t['thought'])}")

    out += ["", "## Recent actions"]
    if not state.actions:
        out.append("- (none)")
    for a in state.actions:
        out.append(f"- [{when(a['at'])}] {a['actor']}: {a['summary']} — "
                   f"{one_line(a['reason'])}")

    out += ["", "More: `quipu status` on the command line, or the MCP tools status(), "
            "inspect_workspace(name), get_workspace_thoughts(name) and get_audit_log().", ""]
    return "\n".join(out)


class StateMdMarkView:
    """Folds every event of the views STATE.md shows besides runs into one row: the position of
    the latest (the runs view keeps its own, finer, mark in ``runs_shown``)."""

    name: ClassVar[str] = "state_md_mark"
    version: ClassVar[int] = 3  # 2: failure patterns are shown; 3: the hosts sharing the log
    types: ClassVar[frozenset[str]] = (ProjectView.types | WorkspacesView.types
                                       | ThoughtsView.types | AuditView.types
                                       | {PatternProposed.TYPE, PatternApproved.TYPE,
                                          PatternRejected.TYPE})
    tables: ClassVar[tuple[str, ...]] = ("state_md_mark",)
    indexes: ClassVar[Indexes] = ()

    def create(self, db: sqlite_utils.Database) -> None:
        """One row, id 1."""
        db.table("state_md_mark").create({"id": int, "position": int}, pk="id")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Events come in log order: the page's last is the latest."""
        conn.execute("INSERT OR REPLACE INTO state_md_mark (id, position) VALUES (1, ?)",
                     (events[-1].position,))


def mark(conn: sqlite3.Connection) -> tuple[int, int]:
    """(latest event shown of the other views, latest event shown of runs): STATE.md's text
    can only have changed since a render if one of them moved (or a slot's dirty flag)."""
    found = []
    for table in ("state_md_mark", "runs_shown"):
        row = conn.execute(f"SELECT position FROM {table} WHERE id = 1").fetchone()
        found.append(0 if row is None else int(row[0]))
    return found[0], found[1]

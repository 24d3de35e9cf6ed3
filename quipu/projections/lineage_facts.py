"""What one event says about the lineage graph: nodes to create or describe, edges to add.

This is the single place that reads lineage out of events. The lineage projection
(``lineage_view``) stores what it returns in indexed tables; the exports (``quipu.exports``)
fold it over the log in memory. Every function here is pure: the facts depend on the event
alone, never on what was folded before, so any fold of them (a view, a replay ``--until P``, a
brute-force closure in a test) agrees.

Node ids are ``<kind>:<key>``, so a node's kind is its prefix and a prefix range of the id is
an index range:

- ``workspace:NAME``
- ``version:NAME@vN`` (attrs: manifest digest, files, bytes, message, parent number)
- ``pipeline_run:prun-...`` (a run() call: the agent's description and hypothesis)
- ``run:stage-...`` (one stage execution: stage, version, config hash, state)
- ``output:SHA256`` (content, by hash: a run's output, data given to a run from a path, or a
  registered source's file: one node per content, however it was reached)
- ``source:NAME`` (a registered dataset or a promoted artifact: format, size, status, hash)
- ``checkpoint:SHA256`` (a saved checkpoint directory, by its tree hash: name, step, size and
  the run that saved it first)

Edges point the way data flows, from the upstream node to the downstream one:

- ``forked-from``: a version -> the workspace forked from it
- ``version-of``: a workspace -> each of its versions
- ``ran-on-version``: a version -> the run (and the pipeline run) bound to it
- ``part-of``: a pipeline run -> each of its stage runs
- ``consumed``: content -> the run it was given to (as input ``name``)
- ``produced``: a run -> content it wrote (as output ``name``)
- ``consumed`` also: a source -> each run requested with it as an input (``SourceConsumed``;
  named by the input when the event says it; the run's launch adds the content -> run edge as
  for any input)
- ``content``: a registered source -> the content its file held when registered
- ``promoted-from``: content a run wrote -> the source promoted from it (as output ``name``;
  a promoted source has no ``content`` edge: its content is upstream of it, not downstream)
- ``saved``: a run -> a checkpoint it saved (``CheckpointSaved``; name ``NAME/step_N`` or
  ``NAME/latest``)
- ``resumed-from``: a run -> the run started with ``resume_from`` it (``RunRequested``)
- ``consumed`` also: a checkpoint -> the resumed run it was given (name as for ``saved``)

A source's node is its name: a name deleted and registered again is the same node, its attrs
those of the newest registration, its edges those of both.

SVS findings join a run's node, not the graph's shape: each finding event (``FindingsRecorded``,
``ReviewCompleted``, ``OutcomeSuggested``) adds its findings to the run's ``findings`` counts
per severity (``Node.adds``: summed, never replaced; the same rows and severities the findings
view keeps, so the counts agree with ``get_run_svs_findings``; ``omitted`` counts findings an
event did not list). A blocking review sets ``blocked`` (the fix, else its first error), a
stop request ``stop`` (who asked and why), the post-run review ``suggested`` (the outcome).

Extension point: a domain whose events add lineage registers a function in ``FACTS`` and,
if it brings new kinds, adds them to ``NODE_KINDS`` / ``EDGE_KINDS`` (the projection's version
goes up so it refolds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quipu.core.messages import Event
from quipu.core.reviews.events import (
    FindingsRecorded,
    OutcomeSuggested,
    ReviewCompleted,
    StopRequested,
)
from quipu.core.runs import lifecycle
from quipu.core.runs.events import (
    CheckpointSaved,
    RunExited,
    RunFinalized,
    RunLaunched,
    RunRequested,
)
from quipu.core.runs.lifecycle import State
from quipu.core.sources.events import (
    ArtifactPromoted,
    SourceConsumed,
    SourceDeleted,
    SourceMetadataUpdated,
    SourceRegistered,
    SourceRetired,
    SourceStaged,
)
from quipu.core.workspaces.events import (
    PipelineRunStarted,
    VersionSaved,
    WorkspaceCreated,
    WorkspaceDeleted,
)

__all__ = ["EDGE_KINDS", "FACTS", "NODE_KINDS", "SEVERITIES", "Edge", "Facts", "Node",
           "checkpoint_edge_name", "checkpoint_node", "facts", "kind_of", "merge", "output_node",
           "pipeline_node", "run_node", "source_node", "version_node", "workspace_node"]

NODE_KINDS: tuple[str, ...] = ("workspace", "version", "pipeline_run", "run", "output", "source",
                               "checkpoint")
"""Kinds of node the log records."""

EDGE_KINDS: tuple[str, ...] = ("forked-from", "version-of", "ran-on-version", "part-of",
                               "consumed", "produced", "content", "promoted-from", "saved",
                               "resumed-from")
"""Kinds of edge the log records."""

SEVERITIES: tuple[str, ...] = ("error", "warning", "info")
"""Finding severities, most severe first (how a run's ``findings`` counts are shown)."""

REASON_CHARS = 160
"""Longest blocked / stop reason a run's node keeps (the findings view has the rest)."""

RESUMED_LISTED = 20
"""Most checkpoints a resumed run's node lists (the last by name and step; the count says how
many it was given)."""


@dataclass(frozen=True, slots=True)
class Node:
    """A node and what the event says about it. ``attrs`` are merged into what is known:
    later facts win, except with ``first_wins`` (content keeps the run that made it first)."""

    id: str
    attrs: dict[str, Any]
    first_wins: bool = False
    adds: dict[str, dict[str, int]] = field(default_factory=dict)
    """Counts summed into ``attrs[key]`` (a dict of counts) instead of replacing it: a run's
    ``findings`` per severity arrive in several events."""


@dataclass(frozen=True, slots=True)
class Edge:
    """An edge from the upstream node ``src`` to the downstream node ``dst``; ``name`` is the
    input or output name for ``consumed`` / ``produced`` (else empty)."""

    src: str
    kind: str
    dst: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Facts:
    """What one event adds to the graph."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def merge(known: dict[str, Any] | None, node: Node) -> dict[str, Any] | None:
    """What is known about a node after ``node``'s facts (``known``: before; None if new).
    Returns None when nothing changes (a ``first_wins`` fact that adds nothing). The one
    merge rule, shared by the lineage view and the exports."""
    if known is None:
        out = dict(node.attrs)
    elif node.first_wins:
        added = {k: v for k, v in node.attrs.items() if k not in known}
        if not added and not node.adds:
            return None
        out = {**known, **added}
    else:
        out = {**known, **node.attrs}
    for key, counts in node.adds.items():
        total = dict(out.get(key) or {})
        for k, n in counts.items():
            total[k] = int(total.get(k, 0)) + n
        out[key] = total
    return out


def workspace_node(name: str) -> str:
    """The id of a workspace's node."""
    return f"workspace:{name}"


def version_node(workspace: str, number: int) -> str:
    """The id of a version's node (``version:ws@v3``)."""
    return f"version:{workspace}@v{number}"


def pipeline_node(pipeline_run_id: str) -> str:
    """The id of a pipeline run's node."""
    return f"pipeline_run:{pipeline_run_id}"


def run_node(run_id: str) -> str:
    """The id of a stage run's node."""
    return f"run:{run_id}"


def output_node(sha256: str) -> str:
    """The id of a piece of content's node (by its sha256)."""
    return f"output:{sha256}"


def source_node(name: str) -> str:
    """The id of a source's node (a registered dataset or a promoted artifact)."""
    return f"source:{name}"


def checkpoint_node(sha256: str) -> str:
    """The id of a checkpoint's node (by the hash of its directory)."""
    return f"checkpoint:{sha256}"


def checkpoint_edge_name(name: str, step: int | None) -> str:
    """How a ``saved`` or ``consumed`` edge names a checkpoint: ``model/step_3``."""
    return f"{name}/{'latest' if step is None else f'step_{step}'}"


def kind_of(node: str) -> str:
    """The kind of a node id (its prefix)."""
    return node.partition(":")[0]


def _workspace_created(e: WorkspaceCreated) -> Facts:
    out = Facts([Node(workspace_node(e.workspace), {
        "goal": e.goal, "deleted": False,
        "forked_from": (None if e.forked_from is None else
                        f"{e.forked_from}@v{e.from_version}" if e.from_version is not None
                        else e.forked_from)})])
    if e.forked_from is not None:
        parent = (version_node(e.forked_from, e.from_version) if e.from_version is not None
                  else workspace_node(e.forked_from))
        out.edges.append(Edge(parent, "forked-from", workspace_node(e.workspace)))
    return out


def _workspace_deleted(e: WorkspaceDeleted) -> Facts:
    return Facts([Node(workspace_node(e.workspace), {"deleted": True})])


def _version_saved(e: VersionSaved) -> Facts:
    node = version_node(e.workspace, e.number)
    return Facts([Node(node, {"workspace": e.workspace, "number": e.number,
                              "manifest": e.manifest, "files": e.file_count,
                              "bytes": e.total_bytes, "message": e.message[:200],
                              "parent": e.parent})],
                 [Edge(workspace_node(e.workspace), "version-of", node)])


def _pipeline_started(e: PipelineRunStarted) -> Facts:
    node = pipeline_node(e.pipeline_run_id)
    return Facts([Node(node, {"workspace": e.workspace, "version": e.version,
                              "stages": list(e.stages),
                              "description": (e.detail.get("description") or "")[:200],
                              "hypothesis": (e.detail.get("hypothesis") or "")[:200]})],
                 [Edge(version_node(e.workspace, e.version), "ran-on-version", node)])


def _run_requested(e: RunRequested) -> Facts:
    node = run_node(e.run_id)
    inputs = {name: {k: how[k] for k in ("kind", "run_id", "signal", "path", "name", "source")
                     if how.get(k) is not None}
              for name, how in sorted(e.inputs.items())}
    attrs: dict[str, Any] = {"workspace": e.workspace, "stage": e.stage, "version": e.version,
                             "manifest": e.manifest, "pipeline_run": e.pipeline_run_id,
                             "config_hash": e.config_hash, "inputs": inputs,
                             "state": State.REQUESTED.value}
    out = Facts([Node(node, attrs)],
                [Edge(version_node(e.workspace, e.version), "ran-on-version", node),
                 Edge(pipeline_node(e.pipeline_run_id), "part-of", node)])
    if e.resume_from is not None:
        source = str(e.resume_from["run_id"])
        points = e.resume_from.get("checkpoints") or []
        attrs["resumed_from"] = {
            "run_id": source, "stage": e.resume_from.get("stage"),
            "checkpoint_count": len(points),
            "checkpoints": [{"name": p["name"], "step": p.get("step"), "sha256": p["sha256"]}
                            for p in points[-RESUMED_LISTED:]]}
        out.edges.append(Edge(run_node(source), "resumed-from", node))
        for point in points:
            checkpoint = checkpoint_node(str(point["sha256"]))
            out.nodes.append(Node(checkpoint, _checkpoint_attrs(source, point), first_wins=True))
            out.edges.append(Edge(checkpoint, "consumed", node,
                                  checkpoint_edge_name(point["name"], point.get("step"))))
    return out


def _checkpoint_attrs(run_id: str, point: dict[str, Any]) -> dict[str, Any]:
    return {"run": run_id, "name": point["name"], "step": point.get("step"),
            "size": point.get("size"), "files": point.get("files")}


def _checkpoint_saved(e: CheckpointSaved) -> Facts:
    node = checkpoint_node(e.sha256)
    return Facts([Node(node, _checkpoint_attrs(e.run_id, e.__dict__), first_wins=True)],
                 [Edge(run_node(e.run_id), "saved", node,
                       checkpoint_edge_name(e.name, e.step))])


def _content(given: dict[str, Any], **more: Any) -> dict[str, Any]:
    attrs = {k: given[k] for k in ("sha256", "size", "kind", "path") if given.get(k) is not None}
    attrs.update({k: v for k, v in more.items() if v is not None})
    return attrs


def _run_launched(e: RunLaunched) -> Facts:
    out = _state_change(e)
    for name, given in sorted(e.inputs.items()):
        sha = given.get("sha256")
        if not sha:
            continue
        content = output_node(str(sha))
        out.nodes.append(Node(content, _content(given), first_wins=True))
        out.edges.append(Edge(content, "consumed", run_node(e.run_id), name))
    return out


def _run_exited(e: RunExited) -> Facts:
    out = _state_change(e)
    for name, made in sorted(e.outputs.items()):
        sha = made.get("sha256")
        if not sha:
            continue
        content = output_node(str(sha))
        out.nodes.append(Node(content, _content(made, name=name, producer=e.run_id),
                              first_wins=True))
        out.edges.append(Edge(run_node(e.run_id), "produced", content, name))
    return out


def _state_change(e: Event) -> Facts:
    # Every trigger an event records leads to one state whatever the state before
    # (lifecycle's own tests hold the table to it), so the state is a fact of this event alone.
    state = lifecycle.state_after(State.REQUESTED, e)
    attrs: dict[str, Any] = {"state": state.value}
    if isinstance(e, RunFinalized):
        attrs["ml_outcome"] = e.ml_outcome
    return Facts([Node(run_node(e.run_id), attrs)])  # type: ignore[attr-defined]


def _cut(text: Any) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= REASON_CHARS else s[: REASON_CHARS - 1] + "…"


def _counts(findings: list[dict[str, Any]], omitted: int = 0) -> dict[str, int]:
    """Findings per severity, as the findings view files them (a missing one is ``info``)."""
    out: dict[str, int] = {}
    for f in findings:
        severity = str(f.get("severity", "info"))
        out[severity] = out.get(severity, 0) + 1
    if omitted:
        out["omitted"] = omitted
    return out


def _findings_recorded(e: FindingsRecorded) -> Facts:
    return Facts([Node(run_node(e.run_id), {}, adds={"findings": _counts(e.findings, e.omitted)})])


def _review_completed(e: ReviewCompleted) -> Facts:
    out = _state_change(e)
    node = out.nodes[0]
    attrs = dict(node.attrs)
    if e.decision == "block":
        first = next((f for f in e.findings if f.get("severity") == "error"),
                     e.findings[0] if e.findings else {})
        attrs["blocked"] = _cut(e.fix or first.get("message") or e.reason)
    return Facts([Node(node.id, attrs, adds={"findings": _counts(e.findings, e.omitted)})])


def _outcome_suggested(e: OutcomeSuggested) -> Facts:
    # One informational row in the findings view, so one ``info`` here too.
    return Facts([Node(run_node(e.run_id), {"suggested": e.outcome},
                       adds={"findings": {"info": 1}})])


def _stop_requested(e: StopRequested) -> Facts:
    why = (e.finding or {}).get("message") or e.reason
    return Facts([Node(run_node(e.run_id), {"stop": {"by": e.requested_by, "why": _cut(why)}})])


def _source_attrs(e: SourceRegistered | ArtifactPromoted) -> dict[str, Any]:
    # Every key set, so a name registered again after a delete describes the new source only.
    promoted = f"{e.run_id}.{e.output}" if isinstance(e, ArtifactPromoted) else None
    return {"format": e.format, "size": e.size_bytes, "sha256": e.sha256, "status": "active",
            "uri": e.uri if isinstance(e, SourceRegistered) else f"run:{e.run_id}/{e.output}",
            "description": e.description[:200], "promoted_from": promoted}


def _source_registered(e: SourceRegistered) -> Facts:
    node = source_node(e.source)
    out = Facts([Node(node, _source_attrs(e))])
    if e.sha256:  # a gs:// source is recorded unverified: no content known yet
        content = output_node(e.sha256)
        out.nodes.append(Node(content, _content({"sha256": e.sha256, "size": e.size_bytes,
                                                 "kind": "file", "path": e.path}),
                              first_wins=True))
        out.edges.append(Edge(node, "content", content))
    return out


def _source_staged(e: SourceStaged) -> Facts:
    """A gs:// source's object became a blob: the source's content is now known."""
    node, content = source_node(e.source), output_node(e.sha256)
    return Facts([Node(node, {"sha256": e.sha256}),
                  Node(content, _content({"sha256": e.sha256, "size": e.size_bytes,
                                          "kind": "file", "path": e.uri}), first_wins=True)],
                 [Edge(node, "content", content)])


def _artifact_promoted(e: ArtifactPromoted) -> Facts:
    node, content = source_node(e.source), output_node(e.sha256)
    return Facts([Node(node, _source_attrs(e)),
                  Node(content, _content({"sha256": e.sha256, "size": e.size_bytes},
                                         name=e.output, producer=e.run_id), first_wins=True)],
                 [Edge(content, "promoted-from", node, e.output)])


def _source_changed(e: SourceMetadataUpdated | SourceRetired | SourceDeleted) -> Facts:
    attrs: dict[str, Any] = ({"description": e.description[:200]}
                             if isinstance(e, SourceMetadataUpdated)
                             else {"status": "retired" if isinstance(e, SourceRetired)
                                   else "deleted"})
    return Facts([Node(source_node(e.source), attrs)])


def _source_consumed(e: SourceConsumed) -> Facts:
    return Facts(edges=[Edge(source_node(e.source), "consumed", run_node(e.run_id),
                             e.input or "")])


FACTS: dict[str, Callable[[Any], Facts]] = {
    WorkspaceCreated.TYPE: _workspace_created,
    WorkspaceDeleted.TYPE: _workspace_deleted,
    VersionSaved.TYPE: _version_saved,
    PipelineRunStarted.TYPE: _pipeline_started,
    RunRequested.TYPE: _run_requested,
    RunLaunched.TYPE: _run_launched,
    RunExited.TYPE: _run_exited,
    SourceRegistered.TYPE: _source_registered,
    ArtifactPromoted.TYPE: _artifact_promoted,
    SourceMetadataUpdated.TYPE: _source_changed,
    SourceRetired.TYPE: _source_changed,
    SourceDeleted.TYPE: _source_changed,
    SourceConsumed.TYPE: _source_consumed,
    SourceStaged.TYPE: _source_staged,
    CheckpointSaved.TYPE: _checkpoint_saved,
    **{t.event: _state_change for t in lifecycle.EVENT_TRIGGERS
       if t.event not in (RunLaunched.TYPE, RunExited.TYPE, ReviewCompleted.TYPE)},
    ReviewCompleted.TYPE: _review_completed,
    FindingsRecorded.TYPE: _findings_recorded,
    OutcomeSuggested.TYPE: _outcome_suggested,
    StopRequested.TYPE: _stop_requested,
}
"""Event type -> its lineage facts. The extension point: a new domain registers here."""


def facts(event: Event) -> Facts:
    """What ``event`` adds to the lineage graph (nothing for a type not in ``FACTS``)."""
    fn = FACTS.get(event.TYPE)
    return Facts() if fn is None else fn(event)

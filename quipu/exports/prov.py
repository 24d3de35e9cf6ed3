"""W3C PROV-JSON of the log: what was derived from what, by which run, on whose behalf.

- entities: versions (``quipu:version/WS/vN``), workspaces (``quipu:workspace/WS``), content
  (``quipu:content/SHA256``: run outputs and data given to runs), checkpoints
  (``quipu:checkpoint/SHA256``: saved by a run, given to the runs resumed from it) and sources
  (``quipu:source/NAME``: registered datasets and promoted artifacts);
- activities: stage runs (``quipu:run/RUN_ID``), started when launched, ended when they ended;
- agents: actors (``quipu:agent/NAME``: the agent who asked for a run or saved a version, the
  worker that executed it);
- ``used`` (a run used its version's files and each input, role = the input's name; each
  source it consumed, role = the input that named it; each checkpoint a resumed run was
  given, role = ``NAME/step_N``),
  ``wasGeneratedBy`` (content by the run that wrote it, role = the output's name; a checkpoint
  by the run that saved it),
  ``wasDerivedFrom`` (an output from each input, checkpoint and the version of the run that
  wrote it; a
  version from its parent version; a forked workspace from the version it was forked from; a
  promoted source from the output it was promoted from),
  ``specializationOf`` (the content a registered source's file held, of the source),
  ``wasAssociatedWith`` (a run with the agent who requested it and the worker that ran it),
  ``wasAttributedTo`` (a version to the actor who saved it) and ``wasInformedBy`` (a run by
  each run whose output it used, and by the run it resumed from).

A run's SVS findings are attributes of its activity: counts per severity
(``quipu:findingsError``, ``quipu:findingsWarning``, ``quipu:findingsInfo``,
``quipu:findingsOmitted``; zero counts left out), ``quipu:blocked`` (a blocking review's fix),
``quipu:stopRequestedBy`` and ``quipu:stopReason``, ``quipu:suggestedOutcome``.

Written by hand (no dependency at run time); a test reads it back with the ``prov`` package.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from quipu.exports._history import History
from quipu.projections.lineage_facts import (
    checkpoint_node,
    kind_of,
    run_node,
    source_node,
    version_node,
    workspace_node,
)

__all__ = ["NAMESPACE", "prov_document"]

NAMESPACE = "urn:quipu:"
"""The ``quipu`` prefix's namespace (followed by the project's name)."""


def _local(node: str) -> str:
    """The PROV identifier of a lineage node."""
    kind, _, key = node.partition(":")
    if kind == "version":
        ws, _, number = key.rpartition("@v")
        return f"quipu:version/{quote(ws, safe='')}/v{number}"
    if kind == "output":
        return f"quipu:content/{key}"
    return f"quipu:{kind}/{quote(key, safe='')}"


def _agent(actor: str) -> str:
    return f"quipu:agent/{quote(actor, safe='')}"


def _selected(history: History, run: str | None, workspace: str | None) -> set[str] | None:
    """The lineage nodes to describe (None: all)."""
    if run is not None:
        history.check_run(run)
        return history.closure(run_node(run))
    if workspace is not None:
        history.check_workspace(workspace)
        nodes = {workspace_node(workspace)}
        nodes |= {version_node(w, n) for (w, n) in history.versions if w == workspace}
        nodes |= {run_node(r) for r, rec in history.runs.items()
                  if rec.request.workspace == workspace}
        # What its runs used and made, then the sources around that content.
        for kinds in (("consumed", "produced", "saved"), ("content", "promoted-from")):
            for src, kind, dst, _ in list(history.edges):
                if kind in kinds and (src in nodes or dst in nodes):
                    nodes |= {src, dst}
        return nodes
    return None


def _svs_attributes(svs: dict[str, Any]) -> dict[str, Any]:
    """A run's SVS findings as activity attributes: ``quipu:findingsError`` (and Warning,
    Info, Omitted) counts, ``quipu:blocked`` (why the review blocked it),
    ``quipu:stopRequestedBy`` / ``quipu:stopReason``, ``quipu:suggestedOutcome``."""
    out: dict[str, Any] = {f"quipu:findings{k.capitalize()}": n
                           for k, n in sorted((svs.get("findings") or {}).items()) if n}
    if svs.get("blocked"):
        out["quipu:blocked"] = svs["blocked"]
    if svs.get("stop"):
        out["quipu:stopRequestedBy"] = svs["stop"].get("by")
        out["quipu:stopReason"] = svs["stop"].get("why")
    if svs.get("suggested"):
        out["quipu:suggestedOutcome"] = svs["suggested"]
    return out


def prov_document(history: History, *, run: str | None = None,
                  workspace: str | None = None) -> dict[str, Any]:
    """The PROV-JSON document of ``history``: all of it, or the upstream closure of ``run``, or
    ``workspace`` (its versions and runs, and the content they used and made)."""
    keep = _selected(history, run, workspace)

    def wanted(node: str) -> bool:
        return keep is None or node in keep

    doc: dict[str, Any] = {"prefix": {"quipu": f"{NAMESPACE}{quote(history.project, safe='')}:",
                                      "xsd": "http://www.w3.org/2001/XMLSchema#"}}
    entity: dict[str, Any] = {}
    activity: dict[str, Any] = {}
    agent: dict[str, Any] = {}
    relations: dict[str, dict[str, Any]] = {k: {} for k in (
        "used", "wasGeneratedBy", "wasDerivedFrom", "wasAssociatedWith", "wasAttributedTo",
        "wasInformedBy", "specializationOf")}

    def relate(kind: str, **attrs: Any) -> None:
        relations[kind][f"_:{kind}{len(relations[kind]) + 1}"] = {
            f"prov:{k}" if ":" not in k else k: v for k, v in attrs.items() if v is not None}

    def add_agent(actor: str) -> str:
        agent.setdefault(_agent(actor), {"prov:label": actor})
        return _agent(actor)

    for name, (created, _at) in sorted(history.workspaces.items()):
        node = workspace_node(name)
        if not wanted(node):
            continue
        entity[_local(node)] = {"prov:type": "quipu:Workspace", "prov:label": name,
                                "quipu:goal": created.goal}
        if created.forked_from is not None and created.from_version is not None:
            relate("wasDerivedFrom", generatedEntity=_local(node),
                   usedEntity=_local(version_node(created.forked_from, created.from_version)))
    for (ws, number), (saved, at) in sorted(history.versions.items()):
        node = version_node(ws, number)
        if not wanted(node):
            continue
        entity[_local(node)] = {"prov:type": "quipu:Version", "prov:label": f"{ws}@v{number}",
                                "quipu:manifest": saved.manifest,
                                "quipu:files": saved.file_count,
                                "quipu:message": saved.message,
                                "quipu:savedAt": {"$": at, "type": "xsd:dateTime"}}
        relate("wasAttributedTo", entity=_local(node), agent=add_agent(saved.actor))
        if saved.parent is not None and wanted(version_node(ws, saved.parent)):
            relate("wasDerivedFrom", generatedEntity=_local(node),
                   usedEntity=_local(version_node(ws, saved.parent)))
    for sha, attrs in sorted(history.content.items()):
        node = f"output:{sha}"
        if not wanted(node):
            continue
        entity[_local(node)] = {"prov:type": "quipu:Content", "quipu:sha256": sha,
                                **{f"quipu:{k}": v for k, v in sorted(attrs.items())
                                   if k in ("size", "kind", "name", "path")}}
    for sha, attrs in sorted(history.checkpoints.items()):
        node = checkpoint_node(sha)
        if not wanted(node):
            continue
        step = "latest" if attrs.get("step") is None else f"step_{attrs['step']}"
        entity[_local(node)] = {"prov:type": "quipu:Checkpoint", "quipu:sha256": sha,
                                "prov:label": f"{attrs.get('run')}/{attrs.get('name')}/{step}",
                                **{f"quipu:{k}": v for k, v in sorted(attrs.items())
                                   if k in ("name", "step", "size", "files") and v is not None}}
    for name, attrs in sorted(history.sources.items()):
        node = source_node(name)
        if not wanted(node):
            continue
        entity[_local(node)] = {"prov:type": "quipu:Source", "prov:label": name, **{
            f"quipu:{k}": v for k, v in sorted(attrs.items()) if v is not None and k in (
                "format", "size", "sha256", "uri", "status", "description", "promoted_from")}}
    for run_id, rec in sorted(history.runs.items()):
        node = run_node(run_id)
        if not wanted(node):
            continue
        r = rec.request
        act: dict[str, Any] = {"prov:type": "quipu:Run", "prov:label": f"{r.stage} {run_id}",
                               "quipu:stage": r.stage, "quipu:workspace": r.workspace,
                               "quipu:pipelineRun": r.pipeline_run_id,
                               "quipu:configHash": r.config_hash,
                               "quipu:state": rec.transitions[-1].state}
        if rec.launched_at is not None:
            act["prov:startTime"] = rec.launched_at
        if rec.ended_at is not None:
            act["prov:endTime"] = rec.ended_at
        if rec.finalized is not None:
            act["quipu:mlOutcome"] = rec.finalized.ml_outcome
        act.update(_svs_attributes(rec.svs()))
        activity[_local(node)] = act
        relate("wasAssociatedWith", activity=_local(node), agent=add_agent(r.actor),
               role="quipu:requester")
        if rec.launched is not None:
            relate("wasAssociatedWith", activity=_local(node),
                   agent=add_agent(rec.launched.worker), role="quipu:executor")
        version = version_node(r.workspace, r.version)
        if wanted(version):
            relate("used", activity=_local(node), entity=_local(version), role="quipu:code")
    informed: set[tuple[str, str]] = set()
    given: dict[str, list[str]] = {}
    for src, kind, dst, _ in history.edges:
        if kind == "consumed":
            given.setdefault(dst, []).append(src)
    for src, kind, dst, name in sorted(history.edges):
        if not (wanted(src) and wanted(dst)):
            continue
        if kind == "consumed" and kind_of(src) == "source" and name:
            relate("used", activity=_local(dst), entity=_local(src), role=f"quipu:{name}")
        elif kind == "consumed" and kind_of(src) == "source":
            # An older SourceConsumed does not name the input; the request does.
            source = src.partition(":")[2]
            inputs = history.runs[dst.partition(":")[2]].request.inputs
            for given_as in sorted(n for n, how in inputs.items() if how.get("source") == source):
                relate("used", activity=_local(dst), entity=_local(src),
                       role=f"quipu:{given_as}")
        elif kind == "consumed":
            relate("used", activity=_local(dst), entity=_local(src), role=f"quipu:{name}")
            producer = history.content.get(src.partition(":")[2], {}).get("producer")
            if producer is not None and wanted(run_node(producer)) \
                    and (dst, producer) not in informed and run_node(producer) != dst:
                informed.add((dst, producer))
                relate("wasInformedBy", informed=_local(dst),
                       informant=_local(run_node(producer)))
        elif kind == "produced":
            relate("wasGeneratedBy", entity=_local(dst), activity=_local(src),
                   role=f"quipu:{name}")
            rec = history.runs[src.partition(":")[2]]
            sources = {*given.get(src, ()),
                       version_node(rec.request.workspace, rec.request.version)}
            for used in sorted(sources):
                if wanted(used) and kind_of(used) in ("output", "version", "checkpoint"):
                    relate("wasDerivedFrom", generatedEntity=_local(dst),
                           usedEntity=_local(used), activity=_local(src))
        elif kind == "saved":
            relate("wasGeneratedBy", entity=_local(dst), activity=_local(src),
                   role=f"quipu:{name}")
        elif kind == "resumed-from":
            relate("wasInformedBy", informed=_local(dst), informant=_local(src))
        elif kind == "promoted-from":
            relate("wasDerivedFrom", generatedEntity=_local(dst), usedEntity=_local(src))
        elif kind == "content":
            relate("specializationOf", specificEntity=_local(dst), generalEntity=_local(src))
    doc.update({"entity": entity, "activity": activity, "agent": agent})
    doc.update({k: v for k, v in relations.items() if v})
    return doc

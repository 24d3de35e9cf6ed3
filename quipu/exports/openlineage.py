"""OpenLineage run events of the log: one per run transition an OpenLineage consumer knows.

A run's lifecycle state after each of its events (``core.runs.lifecycle``, the one state
machine) decides the event type: ``requested`` -> START, ``running`` -> RUNNING (launched, or
adopted back), ``succeeded`` -> COMPLETE, ``failed`` / ``crashed`` / ``lost`` -> FAIL,
``canceled`` / ``stopped`` / ``preempted`` / ``blocked`` (the pre-run review refused it, so
it never ran) -> ABORT, ``finalized`` -> OTHER (the agent's
verdict, with the results facet). Other states (queued, launching) are internal and not sent.

The job is ``WORKSPACE.STAGE`` in the namespace ``quipu://PROJECT``; the run id is a UUID
derived from the stage run id (stable across exports); the pipeline run is the standard
``parent`` facet. Datasets are content by hash (``sha256:...`` in the same namespace): inputs
once the run was given them, outputs once it wrote them; an input read from a registered
source is the source instead (``source:NAME``, facet ``quipu_source``), from the request on;
so are the checkpoints a run started with ``resume_from`` was given (``checkpoint:SHA256``,
facet ``quipu_checkpoint``: the run that saved it, the checkpoint's name, step and size).
Custom facets: ``quipu_version`` (workspace, version, manifest digest, config hash, ids) on
every event, ``quipu_results`` (ML outcome, results) once finalized, and ``quipu_findings``
once the run has SVS findings: ``counts`` per severity as of the event, ``blocked`` (a blocking
review's fix), ``stopRequestedBy`` / ``stopReason``, ``suggestedOutcome``.
"""

from __future__ import annotations

import uuid
from typing import Any

from quipu.exports._history import History, RunRecord

__all__ = ["EVENT_TYPES", "PRODUCER", "openlineage_events"]

PRODUCER = "https://github.com/quipu-research/quipu"
"""What produced the events (OpenLineage asks for a URI)."""
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
FACET_SCHEMA = "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet"
CUSTOM_SCHEMA = "https://github.com/quipu-research/quipu/blob/main/docs/lineage.md#{}"

EVENT_TYPES: dict[str, str] = {
    "requested": "START", "running": "RUNNING", "succeeded": "COMPLETE", "failed": "FAIL",
    "crashed": "FAIL", "lost": "FAIL", "canceled": "ABORT", "stopped": "ABORT",
    "preempted": "ABORT", "blocked": "ABORT", "finalized": "OTHER",
}
"""Lifecycle state entered -> OpenLineage event type (states not listed send nothing)."""

_IDS = uuid.UUID("6f1f3c1e-6a44-4d0e-9d7c-5b1e0b8f4a21")


def _uuid(project: str, key: str) -> str:
    return str(uuid.uuid5(_IDS, f"{project}/{key}"))


def _facet(name: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": CUSTOM_SCHEMA.format(name), **fields}


def _findings_facet(svs: dict[str, Any]) -> dict[str, Any] | None:
    """The ``quipu_findings`` facet of a run's SVS facts (None: nothing to say yet)."""
    stop = svs.get("stop") or {}
    fields = {"counts": {k: n for k, n in sorted((svs.get("findings") or {}).items()) if n},
              "blocked": svs.get("blocked"), "stopRequestedBy": stop.get("by"),
              "stopReason": stop.get("why"), "suggestedOutcome": svs.get("suggested")}
    kept = {k: v for k, v in fields.items() if v}
    return _facet("quipu_findings", **kept) if kept else None


def _run_facets(history: History, rec: RunRecord, results: bool,
                position: int) -> dict[str, Any]:
    r = rec.request
    namespace = f"quipu://{history.project}"
    facets: dict[str, Any] = {
        "parent": {"_producer": PRODUCER, "_schemaURL": FACET_SCHEMA,
                   "run": {"runId": _uuid(history.project, r.pipeline_run_id)},
                   "job": {"namespace": namespace, "name": f"{r.workspace}.pipeline"}},
        "quipu_version": _facet("quipu_version", runId=r.run_id,
                                pipelineRunId=r.pipeline_run_id, workspace=r.workspace,
                                version=r.version, manifest=r.manifest,
                                configHash=r.config_hash),
    }
    if results and rec.finalized is not None:
        facets["quipu_results"] = _facet("quipu_results", mlOutcome=rec.finalized.ml_outcome,
                                         results=rec.finalized.results)
    found = _findings_facet(rec.svs(position))
    if found is not None:
        facets["quipu_findings"] = found
    return facets


def _datasets(history: History, given: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    namespace = f"quipu://{history.project}"
    seen: dict[str, dict[str, Any]] = {}
    for name, item in sorted(given.items()):
        sha = item.get("sha256")
        if sha and sha not in seen:
            seen[sha] = {"namespace": namespace, "name": f"sha256:{sha}",
                         "facets": {"quipu_content": _facet(
                             "quipu_content", signal=name, size=item.get("size"),
                             kind=item.get("kind", "file"))}}
    return list(seen.values())


def _inputs(history: History, rec: RunRecord, launched: bool) -> list[dict[str, Any]]:
    """A run's input datasets: the sources its request named (known from the start), then
    the content it was given at launch for its other inputs."""
    namespace = f"quipu://{history.project}"
    read = {name: how for name, how in rec.request.inputs.items() if how.get("source")}
    out = []
    for name, how in sorted(read.items()):
        known = history.sources.get(str(how["source"]), {})
        fields = {"input": name, "sha256": how.get("sha256"), "format": known.get("format"),
                  "uri": known.get("uri"), "promotedFrom": known.get("promoted_from")}
        out.append({"namespace": namespace, "name": f"source:{how['source']}",
                    "facets": {"quipu_source": _facet(
                        "quipu_source", **{k: v for k, v in fields.items() if v is not None})}})
    resume = rec.request.resume_from or {}
    named: set[str] = set()
    for point in resume.get("checkpoints") or []:
        if point["sha256"] in named:  # the same content saved at two steps: one dataset
            continue
        named.add(point["sha256"])
        fields = {"run": resume.get("run_id"), "checkpoint": point.get("name"),
                  "step": point.get("step"), "size": point.get("size")}
        out.append({"namespace": namespace, "name": f"checkpoint:{point['sha256']}",
                    "facets": {"quipu_checkpoint": _facet(
                        "quipu_checkpoint", **{k: v for k, v in fields.items() if v is not None})}})
    given = (rec.launched.inputs if launched and rec.launched is not None else {})
    return out + _datasets(history, {n: v for n, v in given.items() if n not in read})


def openlineage_events(history: History) -> list[dict[str, Any]]:
    """Every run's OpenLineage events, in log order."""
    out: list[tuple[int, dict[str, Any]]] = []
    namespace = f"quipu://{history.project}"
    for run_id, rec in history.runs.items():
        r = rec.request
        for t in rec.transitions:
            kind = EVENT_TYPES.get(t.state)
            if kind is None:
                continue
            launched = rec.launched is not None and (rec.launched_position or 0) <= t.position
            made = (rec.exited.outputs if rec.exited is not None
                    and (rec.exited_position or 0) <= t.position else {})
            out.append((t.position, {
                "eventType": kind, "eventTime": t.at, "producer": PRODUCER, "schemaURL": SCHEMA,
                "run": {"runId": _uuid(history.project, run_id),
                        "facets": _run_facets(history, rec, t.state == "finalized",
                                             t.position)},
                "job": {"namespace": namespace, "name": f"{r.workspace}.{r.stage}"},
                "inputs": _inputs(history, rec, launched),
                "outputs": _datasets(history, made),
            }))
    return [event for _, event in sorted(out, key=lambda pair: pair[0])]

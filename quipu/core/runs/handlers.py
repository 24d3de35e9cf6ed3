"""Run commands: start a pipeline run, record what executors observe, finalize, cancel.

``RunService`` sits beside the workspace ``Service`` and shares its unit of work. Starting a run
saves the slot as a version, resolves every stage's config and inputs, checks the finalization
gate and appends the workspace's ``PipelineRunStarted`` with each stage run's ``RunRequested``
in ONE transaction. Executors and the supervisor report facts through the ``record_*`` commands;
a run that ends holds the workspace's gate in the same transaction that records its end.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from quipu.core.aggregate import Meta
from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.log import decode
from quipu.core.pipelines import (
    Pipeline,
    Problem,
    Signal,
    Stage,
    config_contracts,
    config_hash,
    pipeline_refusal,
    resolve_config,
    split_override,
    stage_order,
    validate_pipeline,
)
from quipu.core.ports import ComputeProfiles, RunIndex
from quipu.core.reviews.review import Outcome
from quipu.core.reviews.statistics import ContractMode, StatChecks, effective_checks
from quipu.core.runs import lifecycle
from quipu.core.runs.aggregate import Run
from quipu.core.runs.compute import profile_problems
from quipu.core.runs.events import RunRequested
from quipu.core.runs.lifecycle import State, Trigger
from quipu.core.runs.results import (
    ResultsSpec,
    auto_results,
    compare,
    deciding_run,
    parse_final_results,
    parse_results_spec,
    pipeline_order,
)
from quipu.core.sources.aggregate import Source
from quipu.core.sources.handlers import SourceService, split_ref
from quipu.core.validation import check_name, check_reason
from quipu.core.workspaces.aggregate import Workspace
from quipu.core.workspaces.events import PipelineRunStarted
from quipu.core.workspaces.handlers import Service
from quipu.core.workspaces.versions import Manifest

__all__ = ["InputPaths", "RunService", "parse_detail"]

RESUME_PREVIEW = 20
"""Most checkpoints a run answer lists for ``resume_from`` (the count says how many)."""
DETAIL_KEYS = ("description", "hypothesis", "approach", "min_result", "goal")


@dataclass(frozen=True)
class InputPaths:
    """Which files an ``inputs_override`` path may name.

    Stages are unconfined processes (docs/executor.md), so an override is the way a path enters
    a run: it must lie inside one of ``roots`` (the project and the data roots of quipu.yaml),
    after ``realpath`` resolves symlinks, unless the project allows any path. ``realpath`` is
    injected (it touches the filesystem; the domain does not).
    """

    roots: tuple[str, ...] = ()
    allow_any: bool = False
    realpath: Callable[[str], str] = posixpath.normpath
    exists: Callable[[str], bool] = lambda _path: True

    def check(self, path: str) -> str:
        """The resolved path, or ``InvalidInput(path_outside_roots)``, or
        ``NotFound(input_path_missing)`` (checked now, so a dry run catches what the launch
        would fail on)."""
        real = self._allowed(path)
        if not self.exists(real):
            raise NotFound(f"input override {path!r} does not exist", code="input_path_missing",
                           hint="give the absolute path of an existing file or directory "
                           "(check the spelling), or a run id (stage-...)")
        return real

    def _allowed(self, path: str) -> str:
        real = self.realpath(path)
        if self.allow_any:
            return real
        for root in self.roots:
            base = self.realpath(root).rstrip("/")
            if real == base or real.startswith(base + "/"):
                return real
        allowed = ", ".join(self.roots) or "none configured"
        raise InvalidInput(
            f"input override {path!r} is outside the project and its data roots ({allowed})",
            code="path_outside_roots",
            hint="put the data under the project or a directory listed in quipu.yaml "
            "(data: {roots: [/path/to/data]}), register it as a source, or set "
            "data.allow_any_path: true if runs of this project may read any file")


def parse_detail(reason: str | Mapping[str, Any] | None, minimum: int) -> dict[str, str]:
    """A run's reason: a sentence, or {description, hypothesis, approach, min_result, goal}."""
    if isinstance(reason, Mapping):
        unknown = sorted(set(reason) - set(DETAIL_KEYS))
        if unknown:
            raise InvalidInput(f"unknown reason keys {unknown}", code="invalid_reason",
                               hint=f"a structured reason has the keys {list(DETAIL_KEYS)}")
        description = check_reason(str(reason.get("description") or ""), minimum=minimum,
                                   what="reason.description")
        if len(description) > 500:
            raise InvalidInput("reason.description is longer than 500 characters",
                               code="invalid_reason",
                               hint="keep the description short; put detail in hypothesis "
                               "and approach")
        detail = {k: str(reason[k]).strip() for k in DETAIL_KEYS[1:] if reason.get(k)}
        return {"description": description, **detail}
    return {"description": check_reason(reason, minimum=minimum)}


class RunService:
    """Commands on runs."""

    def __init__(self, service: Service, index: RunIndex,
                 new_id: Callable[[], str] | None = None,
                 paths: InputPaths | None = None,
                 sources: SourceService | None = None,
                 profiles: ComputeProfiles | None = None, *, reviewed: bool = False,
                 fail_open: bool = True, svs_contracts: ContractMode = "warning",
                 svs_statistics: StatChecks | None = None) -> None:
        self.svc = service
        self.profiles = profiles
        # A pre-run reviewer is configured (``svs.reviewer``): new runs wait for its decision
        # instead of being queued at once; ``fail_open`` is what a review nobody finished does.
        self.reviewed = reviewed
        self.fail_open = fail_open
        self.svs_contracts: ContractMode = svs_contracts
        self.svs_statistics = svs_statistics
        self.sources = sources
        self.uow = service.uow
        self.index = index
        self.paths = paths or InputPaths()
        if new_id is None:
            from uuid import uuid4

            def new_id() -> str:
                return uuid4().hex[:12]
        self._new_id = new_id

    # --- helpers -------------------------------------------------------------------------------

    def load_run(self, run_id: str) -> Run:
        """The run aggregate, or NotFound."""
        run = self.uow.load(Run, run_id)
        run.check_exists()
        return run

    def _files(self, manifest: Manifest) -> tuple[Callable[[str], bool], Callable[[str], str]]:
        def exists(path: str) -> bool:
            return posixpath.normpath(path) in manifest.files

        def read(path: str) -> str:
            entry = manifest.files[posixpath.normpath(path)]
            return self.svc.blobs.get_bytes(entry.sha256).decode("utf-8")

        return exists, read

    # --- start ---------------------------------------------------------------------------------

    def run(self, workspace: str, *, reason: str | Mapping[str, Any] | None,
            results_spec: Mapping[str, Any] | None, actor: str,
            stages: list[str] | None = None, config_override: Mapping[str, Any] | None = None,
            inputs_override: Mapping[str, Any] | None = None,
            experiment_group: str | None = None, skip_review: bool = False,
            dry_run: bool = False, resume_from: str | None = None) -> dict[str, Any]:
        """Start (or, with ``dry_run``, preview) stages of a workspace's pipeline.

        ``resume_from`` names an earlier run whose recorded checkpoints the stage of the same
        name is given (restored into its run directory before it starts; see
        :meth:`_resume`)."""
        minimum = self.uow.min_reason_length
        detail = parse_detail(reason, minimum)
        spec = None
        if not dry_run or results_spec is not None:
            if results_spec is None:
                raise InvalidInput(
                    "run() needs a results_spec: what metric decides success, and the bars",
                    code="results_spec_missing",
                    hint="pass results_spec={primary_metric, direction, min_value, goal_value, "
                    "dataset_split, tolerance, context}; dry_run=True previews without one")
            spec = parse_results_spec(dict(results_spec))
        if experiment_group is not None:
            check_name(experiment_group, what="experiment group")
        meta = self.uow.stamp(actor, detail["description"])
        chosen: list[str] = []

        def command() -> dict[str, Any]:
            # Resolved inside the retried command: after a lost race the slot may hold another
            # workspace, whose files must never be saved as a version of the one first meant.
            slot, ws = self._target(workspace)
            name = ws.name
            if chosen and chosen[0] != name:
                raise Conflict(
                    f"slot {workspace} changed hands while run() was deciding: it held "
                    f"{chosen[0]!r} and now holds {name!r}", code="slot_changed",
                    hint="another command hibernated and mounted the slot meanwhile; call run() "
                    "again naming the workspace you mean; nothing was written")
            chosen.append(name)
            number = ws.current
            if slot is not None and not dry_run:
                number, _created = self.svc.save_slot(
                    ws, slot, meta, f"saved before run: {detail['description']}", "run")
            elif slot is not None:
                digest = Manifest.from_bytes(self.svc.slots.manifest(slot)).digest()
                if number is None or ws.versions[number].manifest != digest:
                    number = None  # preview of unsaved edits: read the slot itself
            plan = self._plan(ws, number, slot, stages, config_override, inputs_override,
                              stage_sources=not dry_run)
            resume = (None if resume_from is None else
                      self._resume(resume_from, plan["order"] if plan["valid"] else None,
                                   plan["report"]["warnings"]))
            if dry_run:
                preview = {"valid": plan["valid"], "dry_run": True, **plan["report"],
                           "stages_to_run": plan["order"], "inputs": plan["inputs"],
                           "configs": plan["configs"]}
                if resume is not None:
                    preview["resume_from"] = _resume_preview(resume)
                return preview
            if not plan["valid"]:
                raise pipeline_refusal([Problem.model_validate(p)
                                        for p in plan["report"]["errors"]])
            if number is None:
                raise Conflict(f"workspace {name!r} has no saved version to run",
                               code="nothing_to_run", hint="add files and save_version first")
            assert spec is not None
            prun = f"prun-{self._new_id()}"
            run_ids = {stage: f"stage-{self._new_id()}" for stage in plan["order"]}
            ws.start_pipeline(meta, pipeline_run_id=prun, version=number, runs=run_ids,
                              detail=detail, experiment_group=experiment_group)
            runs: list[Run] = []
            manifest_digest = ws.versions[number].manifest
            for stage in plan["order"]:
                inputs = {}
                depends_on = []
                for input_name, how in plan["inputs"][stage].items():
                    if how["kind"] == "upstream":
                        how = {**how, "run_id": run_ids[how["stage"]]}
                        depends_on.append(run_ids[how["stage"]])
                    inputs[input_name] = how
                run = Run(run_ids[stage])
                run.requested(meta, RunRequested(
                    **meta.fields(), run_id=run.name, pipeline_run_id=prun, workspace=name,
                    stage=stage, version=number, manifest=manifest_digest,
                    entrypoint=plan["entrypoints"][stage], config=plan["configs"][stage],
                    config_hash=config_hash(plan["configs"][stage]), inputs=inputs,
                    outputs=plan["outputs"][stage], depends_on=sorted(set(depends_on)),
                    results_spec=spec.model_dump(mode="json"), detail=detail,
                    experiment_group=experiment_group, skip_review=skip_review,
                    siblings=run_ids,
                    resume_from=resume if resume and resume["stage"] == stage else None),
                    reviewed=self.reviewed)
                runs.append(run)
            consumed = self._consume(meta, name, runs)
            positions = self.uow.commit(ws, *runs, *consumed)
            out = {"pipeline_run_id": prun, "workspace": name, "version": f"v{number}",
                   "stages_queued": plan["order"],
                   "queued": [{"stage": s, "stage_run_id": run_ids[s]} for s in plan["order"]],
                   "warnings": plan["report"]["warnings"], "position": positions[-1]}
            if resume is not None:
                out["resume_from"] = {**_resume_preview(resume),
                                      "stage_run_id": run_ids[resume["stage"]]}
            return out

        return self.uow.attempt(command)

    def _resume(self, run_id: str, order: list[str] | None,
                warnings: list[dict[str, Any]]) -> dict[str, Any]:
        """What ``resume_from=run_id`` gives the new run: ``{run_id, stage, checkpoints}``.

        The source run's checkpoints are read from its own stream (never a view) and fixed in
        the request. Refused, writing nothing: an unknown run (``unknown_run``), a run that
        recorded no checkpoint (``resume_without_checkpoints``), a run whose stage is not among
        the stages to run (``resume_stage_mismatch``; skipped when the plan is invalid, so a
        dry run still reports the pipeline's own problems). A source run that has not ended
        is allowed (what it recorded so far is fixed) with a ``resume_from_in_flight``
        warning appended to ``warnings``.
        """
        source = self.uow.load(Run, run_id)
        if source.request is None:
            raise NotFound(f"resume_from: there is no run {run_id!r}", code="unknown_run",
                           hint="resume_from takes a stage run id (stage-...); "
                           "list_history(workspace) lists runs")
        stage = source.request.stage
        checkpoints = source.resumable_checkpoints()
        if not checkpoints:
            raise InvalidInput(
                f"resume_from: run {run_id} ({stage}) recorded no checkpoint, so there is "
                "nothing to resume from", code="resume_without_checkpoints",
                hint="resume from a run whose stage called sdk.save_checkpoint(...); "
                "inspect_run(run_id) lists a run's checkpoints under provenance.checkpoints")
        if order is not None and stage not in order:
            raise InvalidInput(
                f"resume_from: run {run_id} is a run of stage {stage!r}, and this run starts "
                f"{order}: resume_from applies to the stage of the same name",
                code="resume_stage_mismatch",
                hint=f"include {stage!r} in stages=[...], or resume from a run of one of "
                f"{order}")
        if not lifecycle.settled(source.current):
            warnings.append({
                "code": "resume_from_in_flight", "where": "resume_from", "file": None,
                "line": None,
                "message": f"run {run_id} is still {source.current.value}: the new run gets "
                f"the {len(checkpoints)} checkpoint(s) it recorded so far",
                "hint": "wait for the run to end to resume from its last checkpoint"})
        return {"run_id": run_id, "stage": stage, "checkpoints": checkpoints}

    def _consume(self, meta: Meta, workspace: str, runs: list[Run]) -> list[Source]:
        """The sources the new runs read, each with a ``SourceConsumed`` per run (pending):
        appended with the runs, so a source's lineage edge and its use are one fact."""
        sources: dict[str, Source] = {}
        for run in runs:
            assert run.request is not None
            for given_as, how in sorted(run.request.inputs.items()):
                name = how.get("source")
                if name is None:
                    continue
                if name not in sources:
                    sources[name] = self.uow.load(Source, name)
                if how.get("kind") == "blob" and how.get("sha256"):
                    # the object was staged for this run: its blob is the source's content now
                    sources[name].record_staged(meta, how, sha256=str(how["sha256"]),
                                                size_bytes=int(how["size"]))
                sources[name].consume(meta, run_id=run.name, workspace=workspace,
                                      input=given_as)
        return list(sources.values())

    def _target(self, workspace: str) -> tuple[str | None, Workspace]:
        """(slot or None, the workspace) for a slot or workspace argument."""
        if workspace in self.svc.settings.slots:
            slot, ws = self.svc.mounted(workspace)
            return slot.name, ws
        ws = self.uow.load(Workspace, check_name(workspace))
        ws.check_exists()
        return ws.slot, ws

    def _sources(self, ws: Workspace, number: int | None,
                 slot: str | None) -> tuple[Callable[[str], bool], Callable[[str], str]]:
        if number is None and slot is not None:
            manifest = Manifest.from_bytes(self.svc.slots.manifest(slot))

            def read_slot(path: str) -> str:
                return self.svc.slots.read_file(slot, posixpath.normpath(path)).decode("utf-8")

            return (lambda p: posixpath.normpath(p) in manifest.files), read_slot
        if number is None:
            return (lambda _p: False), (lambda p: "")
        manifest = Manifest.from_bytes(self.svc.blobs.get_bytes(ws.versions[number].manifest))
        return self._files(manifest)

    def _plan(self, ws: Workspace, number: int | None, slot: str | None,
              stages: list[str] | None, config_override: Mapping[str, Any] | None,
              inputs_override: Mapping[str, Any] | None, *,
              stage_sources: bool = True) -> dict[str, Any]:
        exists, read = self._sources(ws, number, slot)
        if not exists("pipeline.yaml"):
            raise NotFound(f"workspace {ws.name!r} has no pipeline.yaml", code="no_pipeline",
                           hint="add pipeline.yaml at the workspace root (see docs/pipelines.md)")
        configs = {}
        pipeline_text = read("pipeline.yaml")
        report = validate_pipeline(pipeline_text, config_texts={}, file_exists=exists)
        names = [s.name for s in report.pipeline.stages] if report.pipeline else []
        for stage in names:
            path = f"configs/{stage}.yaml"
            if exists(path):
                configs[stage] = read(path)
        report = validate_pipeline(
            pipeline_text, config_texts=configs, file_exists=exists, stages=stages,
            override=config_override,
            source_schema=self.sources.schema_of if self.sources is not None else None)
        out: dict[str, Any] = {"valid": report.valid, "order": [], "inputs": {}, "configs": {},
                               "entrypoints": {}, "outputs": {},
                               "report": {"errors": [p.model_dump() for p in report.errors],
                                          "warnings": [p.model_dump() for p in report.warnings]}}
        if not report.valid or report.pipeline is None:
            return out
        pipeline = report.pipeline
        order = stage_order(pipeline, stages)
        overrides = split_override(dict(config_override or {}), order)
        input_overrides = split_override(dict(inputs_override or {}), order)
        out["order"] = order
        for stage in order:
            spec = pipeline.stage(stage)
            out["configs"][stage] = resolve_config(stage, pipeline, configs,
                                                   overrides.get(stage))
            out["entrypoints"][stage] = spec.entrypoint or f"modules/{stage}.py"
            mode = config_contracts(configs[stage]) if stage in configs else None
            out["outputs"][stage] = {n: self._output_doc(spec, s, mode)
                                     for n, s in spec.outputs.items()}
            out["inputs"][stage] = {
                n: self._resolve(ws.name, pipeline, stage, n, s, order,
                                 input_overrides.get(stage, {}), stage_sources)
                for n, s in spec.inputs.items()}
        if self.profiles is not None:
            problems = [p.model_dump() for stage in order
                        for p in profile_problems(stage, out["configs"][stage], self.profiles)]
            if problems:
                out["valid"] = False
                out["report"]["errors"].extend(problems)
        return out

    def _output_doc(self, stage: Stage, signal: Signal, mode: str | None) -> dict[str, Any]:
        """What the run records of an output: its declaration, how its contract is enforced
        (``configs/<stage>.yaml``'s ``svs_contracts``, else the stage's ``contracts``, else
        the project's) and, for arrays and tables, the thresholds its statistics are checked
        against."""
        doc = {**_signal_doc(signal),
               "contract": mode or stage.contracts or self.svs_contracts}
        if signal.type in ("npy", "csv"):
            declared = signal.schema_.checks if signal.schema_ else None
            doc["checks"] = effective_checks(self.svs_statistics,
                                             declared.given() if declared else None)
        return doc

    def _resolve(self, workspace: str, pipeline: Pipeline, stage: str, name: str, signal: Signal,
                 order: list[str], overrides: Mapping[str, Any],
                 stage_sources: bool = True) -> dict[str, Any]:
        """Where one input comes from: override -> same pipeline run -> newest good run ->
        registered source. The rule that chose it is recorded as ``via``. ``stage_sources``
        False (a preview) checks a ``gs://`` source without downloading it."""
        doc = _signal_doc(signal)
        if name in overrides:
            return {**doc, **self._override(overrides[name], signal.signal or name,
                                            stage_sources), "via": "override"}
        if signal.from_stage is not None:
            wanted = signal.signal or name
            if signal.from_stage in order:
                return {**doc, "kind": "upstream", "stage": signal.from_stage, "signal": wanted,
                        "via": "same pipeline run"}
            found = self.index.latest_output(workspace, signal.from_stage, wanted)
            if found is not None:
                return {**doc, "kind": "run", "run_id": found, "signal": wanted,
                        "via": "newest succeeded run"}
            raise NotFound(
                f"input {stage}.{name} needs {signal.from_stage}.{wanted}, and no succeeded run "
                f"of {signal.from_stage} produced it", code="input_unresolved",
                hint=f"run {signal.from_stage} too (stages=[{signal.from_stage!r}, {stage!r}]), "
                "or pass inputs_override")
        if signal.dataset is not None and self.sources is not None:
            return {**doc, **self._source(signal.dataset, stage_sources),
                    "via": "registered source"}
        if signal.dataset is not None:
            raise NotFound(
                f"input {stage}.{name} reads dataset {signal.dataset!r}, but no source registry "
                "is available yet", code="source_unresolved",
                hint="pass inputs_override={input: '/absolute/path'} for now")
        raise InvalidInput(f"input {stage}.{name} has no from_stage or dataset",
                           code="input_unbound", hint="declare where it comes from, or pass "
                           "inputs_override")

    def _override(self, ref: Any, signal: str, stage_sources: bool = True) -> dict[str, Any]:
        if isinstance(ref, Mapping) and "run_id" in ref:
            run = self.load_run(str(ref["run_id"]))
            return {"kind": "run", "run_id": run.name, "signal": str(ref.get("signal", signal))}
        if isinstance(ref, str) and ref.startswith("stage-"):
            return {"kind": "run", "run_id": self.load_run(ref).name, "signal": signal}
        if isinstance(ref, str) and ref.startswith("/"):
            return {"kind": "path", "path": self.paths.check(ref)}
        if isinstance(ref, str) and ref and "/" not in ref and self.sources is not None:
            return self._source(ref, stage_sources)
        raise InvalidInput(f"cannot resolve input override {ref!r}", code="invalid_override",
                           hint="use a run id (stage-...), {run_id, signal}, an absolute path, "
                           "or a registered source's name")

    def _source(self, ref: str, stage_sources: bool = True) -> dict[str, Any]:
        """A registered source as a run input: its file, pinned to its registered hash; a
        ``gs://`` source's object staged once into the blob store (``kind: blob``)."""
        assert self.sources is not None
        source = self.sources.resolve(ref)
        if source.is_remote:
            staged = self.sources.stage(source, pin=split_ref(ref)[1], download=stage_sources)
            return {"kind": "blob", "source": source.name, "uri": source.uri, **staged}
        if source.run_id is not None:  # a promoted artifact: staged from its run's output blob
            return {"kind": "run", "run_id": source.run_id, "signal": source.output,
                    "source": source.name, "sha256": source.sha256}
        return {"kind": "path", "path": source.path, "source": source.name,
                "sha256": source.sha256}

    # --- facts from executors and the supervisor ----------------------------------------------

    def _end(self, run: Run, meta: Meta, holds: bool) -> list[int]:
        """Append a run's ending with its workspace's gate and cancel what waited on it."""
        request = run.check_exists()
        ws = self.uow.load(Workspace, request.workspace)
        if holds:
            ws.hold_gate(meta, run.name, request.stage, run.current.value)
        others: list[Run] = []
        if run.current is not State.SUCCEEDED:
            others = self._cascade(run, meta)
        return self.uow.commit(run, ws, *others)

    def _cascade(self, upstream: Run, meta: Meta) -> list[Run]:
        """Runs of the same pipeline run that wait on a run that did not succeed: canceled.

        Transitively: a run canceled here cancels what waits on it in turn, so no stage of the
        pipeline run is left queued behind one that will never run.
        """
        request = upstream.check_exists()
        siblings = (list(request.siblings.values()) if request.siblings
                    else self._pipeline_runs_from_stream(request.workspace,
                                                         request.pipeline_run_id))
        waiting = [self.uow.load(Run, run_id) for run_id in siblings if run_id != upstream.name]
        canceled: list[Run] = []
        ended = [upstream]
        while ended:
            up = ended.pop()
            for run in waiting:
                if (run.request is not None and up.name in run.request.depends_on
                        and run.state in (State.REQUESTED, State.REVIEWING, State.QUEUED)):
                    run.cancel(Meta(meta.actor, f"upstream {up.name} ended "
                                    f"{up.current.value}; nothing to run on", meta.at))
                    canceled.append(run)
                    ended.append(run)
        return canceled

    def _pipeline_runs_from_stream(self, workspace: str, pipeline_run_id: str) -> list[str]:
        """The run ids of a pipeline run started before requests named their siblings (v1):
        read from the workspace's stream, the slow way."""
        for record in self.uow.store.load(Workspace(workspace).stream):
            event = decode(record).event
            if isinstance(event, PipelineRunStarted) and event.pipeline_run_id == pipeline_run_id:
                return list(event.runs.values())
        return []

    def record_claim(self, run_id: str, worker: str) -> bool:
        """An executor claims a queued run; exactly one claimant wins."""
        def command() -> bool:
            run = self.load_run(run_id)
            ok = run.claim(self.uow.stamp(worker, f"{worker} claims the queued run"), worker)
            if ok and run.pending:
                self.uow.commit(run)
            return ok

        return self._first_wins(command)

    def _first_wins(self, command: Callable[[], bool]) -> bool:
        """Run ``command``; False when another writer changed the run first (a claim or a
        review start that lost the race records nothing)."""
        try:
            return self.uow.attempt(command)
        except Conflict as exc:
            if exc.code == "concurrency_conflict":
                return False
            raise

    def record_review_started(self, run_id: str, *, actor: str, reviewers: list[str]) -> bool:
        """A reviewer takes a requested run; False when another took it first or the run no
        longer waits for review (exactly one reviewer wins, like a claim)."""
        def command() -> bool:
            run = self.load_run(run_id)
            meta = self.uow.stamp(actor, f"pre-run review by {', '.join(reviewers) or 'nobody'}")
            ok = run.review_started(meta, reviewers)
            if ok:
                self.uow.commit(run)
            return ok

        return self._first_wins(command)

    def record_review(self, run_id: str, *, actor: str, decision: str, reviewers: list[str],
                      findings: list[dict[str, Any]], fix: str | None = None,
                      omitted: int = 0, resumed_from: str | None = None) -> bool:
        """The pre-run review's decision: ``approve``/``warn`` queue the run, ``block`` ends it
        ``blocked``. False (nothing recorded) when the run is no longer in review.
        ``resumed_from``: the reviewer that started the review was gone before it decided
        (its engine killed) and ``actor`` did the review again."""
        if decision not in ("approve", "warn", "block"):
            raise InvalidInput(f"review decision {decision!r} is not approve, warn or block",
                               code="invalid_review_decision",
                               hint="a reviewer decides approve, warn or block")
        outcome = Outcome(decision=decision, reviewers=list(reviewers),  # type: ignore[arg-type]
                          findings=list(findings), fix=fix, omitted=omitted)

        def command() -> bool:
            run = self.load_run(run_id)
            why = f"pre-run review decided {decision}"
            if resumed_from is not None:
                why += f", reviewed again: {resumed_from} was gone before it decided"
            meta = self.uow.stamp(actor, why)
            ok = run.review_completed(meta, outcome, resumed_from=resumed_from)
            if ok:  # a blocked run never runs: what waits on it is canceled with it
                others = self._cascade(run, meta) if run.current is State.BLOCKED else []
                self.uow.commit(run, *others)
            return ok

        return self.uow.attempt(command)

    def record_launch(self, run_id: str, *, worker: str, host: str, pid: int, run_dir: str,
                      inputs: dict[str, dict[str, Any]],
                      environment: dict[str, Any] | None = None) -> None:
        """The stage process started (``environment``: see ``RunLaunched``)."""
        def command() -> None:
            run = self.load_run(run_id)
            run.launched(self.uow.stamp(worker, f"stage process {pid} started on {host}"),
                         worker=worker, host=host, pid=pid, run_dir=run_dir, inputs=inputs,
                         environment=environment)
            if run.pending:
                self.uow.commit(run)

        self.uow.attempt(command)

    def record_heartbeat(self, run_id: str, *, worker: str, message: str | None = None) -> None:
        """The run is alive."""
        def command() -> None:
            run = self.load_run(run_id)
            run.heartbeat(self.uow.stamp(worker, "the stage process is alive"), message)
            if run.pending:
                self.uow.commit(run)

        self.uow.attempt(command)

    def record_launch_failure(self, run_id: str, *, worker: str, error: str) -> None:
        """The process could not be started."""
        def command() -> None:
            run = self.load_run(run_id)
            meta = self.uow.stamp(worker, f"the stage could not start: {error}"[:500])
            holds = run.launch_failed(meta, error)
            if run.pending:
                self._end(run, meta, holds)

        self.uow.attempt(command)

    def record_exit(self, run_id: str, *, worker: str, state: State, exit_code: int | None,
                    signal: int | None = None, outputs: dict[str, dict[str, Any]] | None = None,
                    logs: dict[str, Any] | None = None,
                    problems: list[str] | None = None, error: str | None = None) -> None:
        """The process ended (``error``: the exception that ended it, when the stage raised)."""
        def command() -> None:
            run = self.load_run(run_id)
            why = f"the stage process ended: {state.value}, exit code {exit_code}"
            if problems:
                why += f" ({'; '.join(problems)})"
            if state is State.STOPPED and run.stop is not None:  # say why it was stopped
                why += f"; stop requested by {run.stop.requested_by}: {run.stop.reason}"
            meta = self.uow.stamp(worker, why[:1000])
            holds = run.exited(meta, state=state, exit_code=exit_code, signal=signal,
                               outputs=outputs, logs=logs, problems=problems, error=error)
            if run.pending:
                self._end(run, meta, holds)

        self.uow.attempt(command)

    def record_lost(self, run_id: str, *, actor: str, why: str) -> None:
        """Silence past the deadline."""
        def command() -> None:
            run = self.load_run(run_id)
            meta = self.uow.stamp(actor, f"no sign of life: {why}")
            holds = run.lost(meta, why)
            if run.pending:
                self._end(run, meta, holds)

        self.uow.attempt(command)

    def record_adopted(self, run_id: str, *, worker: str, pid: int) -> None:
        """A lost run's process was found alive."""
        def command() -> None:
            run = self.load_run(run_id)
            meta = self.uow.stamp(worker, f"process {pid} of the lost run is alive; watching it")
            run.adopted(meta, worker=worker, pid=pid)
            ws = self.uow.load(Workspace, run.check_exists().workspace)
            ws.clear_gate(meta, run.name, "adopted: the run is running again")
            self.uow.commit(run, ws)

        self.uow.attempt(command)

    def record_deadline(self, run_id: str, *, actor: str) -> None:
        """A state's deadline passed with no news: apply the table's deadline trigger."""
        def command() -> None:
            run = self.load_run(run_id)
            state = run.current
            spec = lifecycle.spec(state)
            if spec.deadline_trigger is None:
                return
            target = lifecycle.next_state(state, spec.deadline_trigger)
            meta = self.uow.stamp(actor, f"deadline of state {state.value} passed")
            if target is State.LOST:
                self._end(run, meta, run.lost(meta, f"deadline of {state.value} passed"))
            elif target is State.CANCELED:
                run.cancel(meta)
                self._end(run, meta, False)
            elif target is State.FINALIZED:
                held = run.finalize(meta, ml_outcome="unknown", results=None, results_auto={},
                                    comparison=None)
                ws = self.uow.load(Workspace, run.check_exists().workspace)
                if held:
                    ws.clear_gate(meta, run.name, "no verdict before the deadline: unknown")
                self.uow.commit(run, ws)
            elif target is State.QUEUED:  # the review never finished: open or closed
                run.review_timed_out(meta, fail_open=self.fail_open)
                others = self._cascade(run, meta) if run.current is State.BLOCKED else []
                self.uow.commit(run, *others)

        self.uow.attempt(command)

    def record_metrics(self, run_id: str, *, actor: str, series: str | None, points: int,
                       summaries: dict[str, dict[str, Any]], complete: bool) -> None:
        """The metric ingester's latest summaries."""
        def command() -> None:
            run = self.load_run(run_id)
            run.record_metrics(self.uow.stamp(actor, f"{points} metric points ingested"),
                               series=series, points=points, summaries=summaries,
                               complete=complete)
            if run.pending:
                self.uow.commit(run)

        self.uow.attempt(command)

    def record_checkpoint(self, run_id: str, *, actor: str, name: str, step: int | None,
                          sha256: str, size: int, manifest: str, files: int,
                          path: str) -> None:
        """A checkpoint the stage saved, now in the blob store."""
        def command() -> None:
            run = self.load_run(run_id)
            which = name if step is None else f"{name} at step {step}"
            run.record_checkpoint(self.uow.stamp(actor, f"checkpoint {which} saved"),
                                  name=name, step=step, sha256=sha256, size=size,
                                  manifest=manifest, files=files, path=path)
            if run.pending:
                self.uow.commit(run)

        self.uow.attempt(command)

    def record_findings(self, run_id: str, *, actor: str, phase: str, source: str,
                        findings: list[dict[str, Any]], omitted: int = 0) -> None:
        """Findings about a run (``Finding.as_dict()`` each): output contracts, statistics,
        the monitor, the post-run review. Passive: the run's state does not move."""
        def command() -> None:
            run = self.load_run(run_id)
            shown = f"{len(findings) + omitted} {phase} finding(s) from {source}"
            run.record_findings(self.uow.stamp(actor, shown), phase=phase, source=source,
                                findings=findings, omitted=omitted)
            if run.pending:
                self.uow.commit(run)

        self.uow.attempt(command)

    # --- agent commands ------------------------------------------------------------------------

    def cancel(self, run_id: str, reason: str, *, actor: str) -> dict[str, Any]:
        """Cancel a run that has not ended (its process is ended by its executor)."""
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            run = self.load_run(run_id)
            previous = run.cancel(meta)  # a run already ended (canceled too) is refused
            positions = self._end(run, meta, False)
            return {"run_id": run_id, "previous_state": previous.value,
                    "state": run.current.value, "position": positions[-1]}

        return self.uow.attempt(command)

    def request_stop(self, run_id: str, reason: str, *, actor: str,
                     requested_by: str = "agent",
                     finding: dict[str, Any] | None = None) -> dict[str, Any]:
        """Ask a launching or running stage to stop cleanly (``StopRequested``): its executor
        writes the stop file, the stage sees ``should_stop()``, and an exit 0 after that ends
        it ``stopped``. A stage that ignores the request keeps running (``cancel`` ends it).
        A second request while the first stands records nothing (``already_requested``)."""
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            run = self.load_run(run_id)
            recorded = run.request_stop(meta, requested_by=requested_by, finding=finding)
            positions = self.uow.commit(run) if recorded else []
            out: dict[str, Any] = {"run_id": run_id, "state": run.current.value,
                                   "stop_requested": True, "already_requested": not recorded}
            if positions:
                out["position"] = positions[-1]
            return out

        return self.uow.attempt(command)

    def record_suggestion(self, run_id: str, *, actor: str, outcome: str, evidence: list[str],
                          reviewers: list[str]) -> None:
        """The post-run review's suggested ML outcome (recorded once per run; the agent's
        ``finalize_run`` decides)."""
        def command() -> None:
            run = self.load_run(run_id)
            run.suggest_outcome(self.uow.stamp(actor, f"post-run review suggests {outcome}"),
                                outcome=outcome, evidence=evidence, reviewers=reviewers)
            if run.pending:
                self.uow.commit(run)

        self.uow.attempt(command)

    def finalize(self, run_id: str, results: Mapping[str, Any] | None, *,
                 actor: str) -> dict[str, Any]:
        """Record what the run means; releases the workspace's gate."""
        def command() -> dict[str, Any]:
            run = self.load_run(run_id)
            request = run.check_exists()
            state = run.current
            final, comparison, auto = self._judge(run, results)
            meta = self.uow.stamp(actor, final["notes"])
            held = run.finalize(meta, ml_outcome=final["ml_outcome"], results=final,
                                results_auto=auto, comparison=comparison)
            ws = self.uow.load(Workspace, request.workspace)
            if held:
                ws.clear_gate(meta, run.name, "finalized")
            positions = self.uow.commit(run, ws)
            return {"run_id": run_id, "stage": request.stage, "workspace": request.workspace,
                    "infra_outcome": lifecycle.infra_outcome(state),
                    "ml_outcome": final["ml_outcome"], "results_auto": auto,
                    "comparison": comparison, **_suggested(run, final["ml_outcome"]),
                    "position": positions[-1]}

        return self.uow.attempt(command)

    def finalize_pipeline(self, run_id: str, results: Mapping[str, Any] | None, *,
                          actor: str) -> dict[str, Any]:
        """One verdict for a whole pipeline run; ``run_id`` is any of its stage runs.

        The verdict (``results``, as for ``finalize``) is recorded on the stage run that
        decides the results spec (``results.deciding_run``: the last stage that logged the
        primary metric, else the last stage), and every other ended stage of the pipeline run
        is closed by it (``RunFinalized.closed_by``): none of them holds the gate any more.
        All of it is appended in one transaction. Stages still in flight are left as they are
        and listed in ``still_open``; stages already finalized are left alone.
        """
        def command() -> dict[str, Any]:
            first = self.load_run(run_id)
            request = first.check_exists()
            ids = (list(request.siblings.values()) if request.siblings
                   else self._pipeline_runs_from_stream(request.workspace,
                                                        request.pipeline_run_id))
            runs = {i: first if i == first.name else self.load_run(i)
                    for i in dict.fromkeys([*ids, first.name])}
            stages = {i: (r.check_exists().stage, r.check_exists().depends_on)
                      for i, r in runs.items()}
            logged = {i: r.metrics is not None and str(r.results_spec.get("primary_metric"))
                      in r.metrics.summaries for i, r in runs.items()}
            deciding = runs[deciding_run(stages, logged)]
            state = deciding.current
            final, comparison, auto = self._judge(deciding, results)
            meta = self.uow.stamp(actor, final["notes"])
            ws = self.uow.load(Workspace, request.workspace)
            if deciding.finalize(meta, ml_outcome=final["ml_outcome"], results=final,
                                 results_auto=auto, comparison=comparison):
                ws.clear_gate(meta, deciding.name, "finalized")
            closing = Meta(meta.actor, f"closed by the verdict on {deciding.name} "
                           f"({deciding.check_exists().stage}): {final['notes']}"[:1000], meta.at)
            closed: list[Run] = []
            still_open: list[dict[str, Any]] = []
            ended: dict[str, str | None] = {}
            for i in pipeline_order(stages):
                run = runs[i]
                if run is deciding or run.current is State.FINALIZED:
                    continue
                if Trigger.FINALIZE not in lifecycle.allowed(run.current):
                    still_open.append({"run_id": i, "stage": stages[i][0],
                                       "state": run.current.value})
                    continue
                ended[i] = lifecycle.infra_outcome(run.current)
                _, _, own = self._judge(run, None, judge=False)
                if run.finalize(closing, ml_outcome=final["ml_outcome"], results=None,
                                results_auto=own, comparison=None, closed_by=deciding.name):
                    ws.clear_gate(closing, run.name, f"closed by the verdict on {deciding.name}")
                closed.append(run)
            positions = self.uow.commit(deciding, *closed, ws)
            return {"pipeline_run_id": request.pipeline_run_id, "run_id": deciding.name,
                    "stage": deciding.check_exists().stage, "workspace": request.workspace,
                    "infra_outcome": lifecycle.infra_outcome(state),
                    "ml_outcome": final["ml_outcome"], "results_auto": auto,
                    "comparison": comparison, **_suggested(deciding, final["ml_outcome"]),
                    "closed": [{"run_id": r.name, "stage": stages[r.name][0],
                                "infra_outcome": ended[r.name]} for r in closed],
                    "still_open": still_open, "position": positions[-1]}

        return self.uow.attempt(command)

    def _judge(self, run: Run, results: Mapping[str, Any] | None, *,
               judge: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None,
                                            dict[str, Any]]:
        """(final results, comparison, auto results) of a run about to be finalized; with
        ``judge=False`` only the auto results are computed."""
        spec = ResultsSpec.model_validate(run.results_spec)
        summaries = run.metrics.summaries if run.metrics else {}
        auto = auto_results(spec, {k: v.get("last") for k, v in summaries.items()},
                            {k: v["non_finite"] for k, v in summaries.items()
                             if isinstance(v.get("non_finite"), dict)})
        if not judge:
            return {}, None, auto
        final, comparison = self._verdict(run, spec, run.current, results)
        return final, comparison, auto

    def _verdict(self, run: Run, spec: ResultsSpec, state: State,
                 results: Mapping[str, Any] | None) -> tuple[dict[str, Any],
                                                          dict[str, Any] | None]:
        outcome = lifecycle.infra_outcome(state)
        data = dict(results or {})
        # Logged means a value to judge: a primary metric whose latest point is NaN or infinite
        # (the run diverged) has none, so the verdict needs notes only, as for a failed run.
        primary = (run.metrics.summaries if run.metrics else {}).get(spec.primary_metric)
        last = primary.get("last") if isinstance(primary, dict) else None
        logged = isinstance(last, int | float) and math.isfinite(last)
        if lifecycle.has_value(state, logged=logged) or "value" in data:
            final = parse_final_results(data, spec=spec, infra_outcome=outcome)
            if not lifecycle.spec(state).yields_value:
                # A value for a run that did not run to its end is the agent's word only: it is
                # recorded (the views flag it as agent-reported) but compared with nothing, and
                # it never becomes a best.
                return final.model_dump(mode="json"), None
            request = run.check_exists()
            prev = self.index.previous_finalized(request.workspace, request.stage,
                                                 spec.primary_metric, run.name)
            best = None
            if spec.baseline_run:
                base = self.load_run(spec.baseline_run)
                value = (base.finalized.results or {}).get("value") if base.finalized else None
                # An agent-reported value (the baseline did not run to its end) never counts.
                counts = (base.exit is not None
                          and lifecycle.spec(base.exit.state).yields_value)
                best = ((base.name, float(value))
                        if counts and isinstance(value, (int, float)) else None)
            if best is None:
                best = self.index.best(request.workspace, request.stage, spec.primary_metric,
                                       run.name, direction=spec.direction)
            comparison = compare(spec, final.value, previous=prev, best=best)
            return final.model_dump(mode="json"), comparison.model_dump(mode="json")
        # No value to judge (the run failed, crashed, was lost or never ran, or it is a stage
        # that does not log the primary metric, like a preprocessing step): a verdict and notes
        # are still required, so the record says what the agent made of it.
        outcome_value = data.get("ml_outcome", "unknown")
        if outcome_value not in ("success", "partial", "miss", "unknown"):
            raise InvalidInput(f"ml_outcome {outcome_value!r} is not one of success, partial, "
                               "miss, unknown", code="invalid_results",
                               hint="a run that did not succeed is usually 'miss' or 'unknown'")
        notes = check_reason(str(data.get("notes") or ""), what="results.notes")
        return {"ml_outcome": outcome_value, "notes": notes, "value": None,
                "infra_outcome": outcome}, None

    def save_results_spec(self, run_id: str, spec: Mapping[str, Any], *,
                          actor: str) -> dict[str, Any]:
        """Replace a run's results spec before it is finalized."""
        parsed = parse_results_spec(dict(spec))

        def command() -> dict[str, Any]:
            run = self.load_run(run_id)
            run.save_results_spec(self.uow.stamp(actor, "results spec replaced by the agent"),
                                  parsed.model_dump(mode="json"))
            self.uow.commit(run)
            return {"run_id": run_id, "spec": parsed.model_dump(mode="json")}

        return self.uow.attempt(command)

    def tag(self, run_id: str, tag: str, reason: str, *, actor: str) -> dict[str, Any]:
        """Tag a run and the version it ran, in one transaction (``best*`` marks the reference
        for comparisons).

        A run tag may be given to many runs (the newest one is ``@tag``), while a version tag
        names one version of a workspace: when the tag names another version, it moves to this
        run's version (``version_tag_moved_from`` says from where). The version of a run whose
        workspace was deleted is left untagged (``version`` is then null).
        """
        check_name(tag, what="tag")
        if tag[0] in "vV" and tag[1:].isdigit():
            raise InvalidInput(f"tag {tag!r} looks like a version number", code="tag_is_version",
                               hint="ws@v3 must always mean version 3; pick a tag like "
                               "'best-acc'")
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            run = self.load_run(run_id)
            request = run.check_exists()
            run.tag(meta, tag)
            ws = self.uow.load(Workspace, request.workspace)
            version: str | None = None
            moved: str | None = None
            if ws.exists:
                holder = ws.tags.get(tag)
                if holder is not None and holder != request.version:
                    ws.untag(meta, tag)
                    moved = f"v{holder}"
                ws.tag(meta, request.version, tag)
                version = f"v{request.version}"
            changed = [a for a in (run, ws) if a.pending]
            if changed:
                self.uow.commit(*changed)
            return {"run_id": run_id, "tag": tag, "version": version,
                    "version_tag_moved_from": moved}

        return self.uow.attempt(command)


def _resume_preview(resume: Mapping[str, Any]) -> dict[str, Any]:
    """What a resumed run is given, as an answer shows it: no blob digests, and at most the
    last ``RESUME_PREVIEW`` checkpoints (a run that saved every step may hold thousands)."""
    shown = resume["checkpoints"][-RESUME_PREVIEW:]
    return {"run_id": resume["run_id"], "stage": resume["stage"],
            "restored_to": f".quipu/resume/{resume['run_id']}/",
            "checkpoint_count": len(resume["checkpoints"]),
            "checkpoints": [{k: c[k] for k in ("name", "step", "sha256", "size")}
                            for c in shown]}
def _suggested(run: Run, outcome: str) -> dict[str, Any]:
    """``{"suggested": {outcome, evidence, agrees}}`` when the post-run review suggested an
    outcome for ``run`` (shown beside the verdict, never applied), else nothing."""
    if run.suggestion is None:
        return {}
    return {"suggested": {"outcome": run.suggestion.outcome,
                          "evidence": run.suggestion.evidence,
                          "agrees": run.suggestion.outcome == outcome}}


def _signal_doc(signal: Signal) -> dict[str, Any]:
    schema = signal.schema_.model_dump(exclude_none=True) if signal.schema_ else None
    return {"type": signal.type, "format": signal.format, "schema": schema}

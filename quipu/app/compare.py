"""The facade's ``compare``: what changed between two runs or versions, in one bounded answer.

``quipu.app.facade.Quipu`` inherits it. Refs are resolved like ``get_lineage``'s (the lineage
view's resolver: run ids, ``ws@v3``, ``ws@tag``, ``@tag``, a workspace = its current version);
the facts come from the views (a run's recorded config, inputs, results spec and metric
summaries), the workspace aggregate (a version's manifest) and the blob store (manifests and
file contents). The pure parts are in ``quipu.core.compare``. Nothing here changes anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quipu.core.compare import (
    bounded_code_diff,
    compare_metric,
    diff_configs,
    diff_environments,
)
from quipu.core.errors import InvalidInput, QuipuError
from quipu.core.pipelines import parse_pipeline, resolve_config
from quipu.core.workspaces.aggregate import Workspace
from quipu.core.workspaces.versions import EMPTY_MANIFEST, Manifest, diff_manifests

if TYPE_CHECKING:
    from quipu.core.ports import BlobStore
    from quipu.core.workspaces.handlers import Service
    from quipu.projections import Views

__all__ = ["ANSWER_BUDGET", "DEFAULT_DIFF_LINES", "CompareQueries"]

DEFAULT_DIFF_LINES = 80
"""Unified-diff lines shown by default, over all files."""
ANSWER_BUDGET = 12_000
"""Characters of JSON a default answer stays within (more only when more lines are asked)."""
LINE_CHARS = 160
_VERSION_REF = re.compile(r"[vV]?\d+")
LIST_LIMIT = 25


@dataclass
class _Side:
    """One operand, resolved: a run (with its recorded facts) or a version."""

    ref: str
    label: str
    workspace: str
    number: int | None
    manifest: str | None
    run_id: str | None = None
    record: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


class CompareQueries:
    """``compare`` over ``views``, the workspace ``service`` and ``blobs`` (set by the facade)."""

    views: Views
    service: Service
    blobs: BlobStore

    def compare(self, a: str, b: str, *, max_diff_lines: int | None = None) -> dict[str, Any]:
        """What changed from ``a`` to ``b`` (each a run id, ``ws@v3``, ``ws@tag``, ``@tag``
        or a workspace, meaning its current version), and how the results moved.

        Returns ``{summary, a, b, code, config, inputs?, environment?, metrics?, notes?}``:
        the files that differ with bounded unified diffs (``max_diff_lines`` over all files,
        80 by default), the effective configs key by key, for two runs also the inputs by
        content hash with where each came from, the recorded environments, and the metric
        deltas with better/worse by the results spec's direction. A run compared with a
        version stands for its version. The default answer stays within ``ANSWER_BUDGET``
        characters. Refusals: ``unknown_ref`` / ``ambiguous_ref`` (as ``get_lineage``),
        ``invalid_compare_ref`` (a pipeline run, an output hash, a workspace without
        versions), ``invalid_max_diff_lines``.
        """
        lines = DEFAULT_DIFF_LINES if max_diff_lines is None else max_diff_lines
        if isinstance(lines, bool) or not isinstance(lines, int) or not 0 <= lines <= 5000:
            raise InvalidInput(f"max_diff_lines {max_diff_lines!r} is not 0-5000",
                               code="invalid_max_diff_lines",
                               hint="ask for up to 5000 lines of diff; 0 lists the files only")
        self.views.catch_up()
        left, right = self._compare_side(a), self._compare_side(b)
        notes: list[str] = []
        both_runs = left.run_id is not None and right.run_id is not None
        if not both_runs:
            for side in (left, right):
                if side.run_id is not None:
                    notes.append(f"{side.ref} is a run compared with a version: it stands for "
                                 f"its version {side.workspace}@v{side.number} (inputs, "
                                 "metrics and environment need two runs)")
        out: dict[str, Any] = {"summary": "", "a": self._side_json(left),
                               "b": self._side_json(right)}
        ma, mb = self._manifest(left.manifest), self._manifest(right.manifest)
        out["code"] = bounded_code_diff(
            diff_manifests(ma, mb), self._reader(ma), self._reader(mb),
            left=left.label, right=right.label, max_lines=lines, max_files=LIST_LIMIT,
            line_chars=LINE_CHARS)
        if both_runs:
            out["config"] = self._config_section(
                {left.record["stage"]: left.provenance.get("config") or {}},
                {right.record["stage"]: right.provenance.get("config") or {}},
                same_stage=left.record["stage"] == right.record["stage"])
            out["inputs"] = _inputs_section(left.provenance, right.provenance)
            (env_a, packages_a), (env_b, packages_b) = (self._recorded_environment(left),
                                                        self._recorded_environment(right))
            out["environment"] = diff_environments(env_a, env_b, packages_a=packages_a,
                                                   packages_b=packages_b)
            out["metrics"] = _metrics_section(left.record, right.record, notes)
        else:
            out["config"] = self._config_section(self._version_configs(ma),
                                                 self._version_configs(mb), same_stage=False)
        if notes:
            out["notes"] = notes
        out["summary"] = _summary(out, left, right)
        if max_diff_lines is None:
            _fit(out, ANSWER_BUDGET)
        return out

    # --- the operands ------------------------------------------------------------------------

    def _run_tagged(self, ref: str) -> str | None:
        """The run ``ws@tag`` or ``@tag`` names, if a run carries that tag.

        Tagging a run tags its version too, and the lineage resolver reads a tag as the
        version's first; compare wants the run (its config, inputs and results). ``@tag``
        across workspaces must name runs of one workspace only."""
        workspace, at, tag = ref.strip().partition("@")
        if not at or not tag or _VERSION_REF.fullmatch(tag):
            return None
        names = [workspace] if workspace else [str(w["name"]) for w in self.views.workspaces()]
        found = {n: r for n in names if (r := self.views.tagged_run(n, tag)) is not None}
        if len(found) > 1:
            raise InvalidInput(f"{ref!r} matches runs of several workspaces: "
                               + ", ".join(f"{n}@{tag} ({r})" for n, r in sorted(found.items())),
                               code="ambiguous_ref", hint="write ws@tag for one of those")
        return next(iter(found.values()), None)

    def _compare_side(self, ref: str) -> _Side:
        run_id = self._run_tagged(ref)
        node = f"run:{run_id}" if run_id is not None else self.views.resolve_ref(ref)
        kind, _, key = node.partition(":")
        if kind == "run":
            prov = self.views.run_provenance(key) or {}
            record = self.views.run_record(key) or {}
            run_version = int(str(prov["version"]).lstrip("v"))
            return _Side(ref, f"{record['workspace']}@v{run_version}", record["workspace"],
                         run_version, prov.get("manifest"), run_id=key, record=record,
                         provenance=prov)
        if kind in ("version", "workspace"):
            name, _, version = key.partition("@")
            ws = self.service.load(Workspace, name)
            number: int | None = int(version.lstrip("v")) if version else ws.current
            if number is None or number not in ws.versions:
                raise InvalidInput(f"workspace {name!r} has no saved version to compare",
                                   code="invalid_compare_ref",
                                   hint="save_version() first, or name a run or ws@vN")
            return _Side(ref, f"{name}@v{number}", name, number, ws.versions[number].manifest)
        what = {"pipeline_run": "a pipeline run", "output": "an output (a content hash)"}.get(
            kind, f"a {kind}")
        hint = "compare two runs (stage-...), records, @tags or versions (ws@v3)"
        if kind == "pipeline_run":
            stages = self.views.pipeline_stage_runs(key) or {}
            hint = "name one of its stage runs: " + ", ".join(
                f"{s} {r}" for s, r in sorted(stages.items()))
        raise InvalidInput(f"{ref!r} is {what}; compare takes runs or versions",
                           code="invalid_compare_ref", hint=hint)

    @staticmethod
    def _side_json(side: _Side) -> dict[str, Any]:
        out: dict[str, Any] = {"ref": side.ref, "workspace": side.workspace,
                               "version": f"v{side.number}"}
        if side.run_id is not None:
            r = side.record
            out.update(run_id=side.run_id, stage=r.get("stage"), state=r.get("state"),
                       ml_outcome=r.get("ml_outcome"), hypothesis=r.get("hypothesis"))
        return out

    def _recorded_environment(self, side: _Side
                              ) -> tuple[dict[str, Any] | None, list[str] | None]:
        """The environment the run recorded and its ``name==version`` package list, each None
        when not recorded.

        The one place that knows where environment provenance lives: the run's provenance
        (``environment``, recorded at launch) and the package list blob its ``packages.sha256``
        names. A blob that is missing or damaged leaves the list None (packages then compare by
        their hash), never an error: the comparison of everything else still stands."""
        env = side.provenance.get("environment")
        if not isinstance(env, dict):
            return None, None
        digest = (env.get("packages") or {}).get("sha256")
        if not isinstance(digest, str):
            return env, None
        try:
            return env, self.blobs.get_bytes(digest).decode("utf-8").splitlines()
        except (QuipuError, UnicodeDecodeError):
            return env, None

    # --- reading versions --------------------------------------------------------------------

    def _manifest(self, digest: str | None) -> Manifest:
        return EMPTY_MANIFEST if digest is None else Manifest.from_bytes(
            self.blobs.get_bytes(digest))

    def _reader(self, manifest: Manifest) -> Any:
        def read(path: str) -> bytes:
            return self.blobs.get_bytes(manifest.files[path].sha256)
        return read

    def _version_configs(self, manifest: Manifest) -> dict[str, Any]:
        """Each stage's effective config in a version (defaults -> configs/<stage>.yaml), or
        the configs/*.yaml files as written when pipeline.yaml does not parse."""
        texts = {p: self.blobs.get_bytes(e.sha256).decode("utf-8", "replace")
                 for p, e in manifest.files.items()
                 if p.startswith("configs/") and p.endswith((".yaml", ".yml"))
                 and e.kind == "file"}
        try:
            if "pipeline.yaml" not in manifest.files:
                raise InvalidInput("no pipeline.yaml", code="no_pipeline")
            pipeline = parse_pipeline(self.blobs.get_bytes(
                manifest.files["pipeline.yaml"].sha256).decode("utf-8", "replace"))
            return {s: resolve_config(s, pipeline, texts) for s in pipeline.stage_names}
        except QuipuError:
            import yaml

            out: dict[str, Any] = {}
            for path, text in texts.items():
                try:
                    out[path] = yaml.safe_load(text)
                except yaml.YAMLError:
                    out[path] = text
            return out

    @staticmethod
    def _config_section(a: dict[str, Any], b: dict[str, Any], *,
                        same_stage: bool) -> dict[str, Any]:
        if same_stage:  # one stage on both sides: its keys need no stage prefix
            (a,), (b,) = a.values(), b.values()
        changes = diff_configs(a, b)
        out: dict[str, Any] = {"same": not changes,
                               "changes": [c.to_json() for c in changes[:LIST_LIMIT]]}
        if len(changes) > LIST_LIMIT:
            out["more"] = len(changes) - LIST_LIMIT
        return out


def _origin(requested: dict[str, Any] | None, launched: dict[str, Any] | None) -> str:
    """Where an input came from, in a few words."""
    req, got = requested or {}, launched or {}
    if req.get("source"):
        return f"source {req['source']}"
    if got.get("producer"):
        return f"run {got['producer']}.{got.get('signal', '')}".rstrip(".")
    if req.get("kind") == "path":
        return f"path {req.get('path')}"
    if req.get("kind") in ("upstream", "run"):
        return f"stage {req.get('stage') or req.get('run_id')}"
    return "unknown"


def _inputs_section(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    ia, ib = a.get("inputs") or {}, b.get("inputs") or {}
    changed: list[dict[str, Any]] = []
    same: list[str] = []
    for name in sorted(set(ia) | set(ib)):
        la = (ia.get(name) or {}).get("launched") or {}
        lb = (ib.get(name) or {}).get("launched") or {}
        if name in ia and name in ib and la.get("sha256") == lb.get("sha256") and la:
            same.append(name)
            continue
        entry: dict[str, Any] = {"input": name}
        for key, side, got in (("a", ia.get(name), la), ("b", ib.get(name), lb)):
            if side is None:
                entry[key] = None
            else:
                entry[key] = {"sha256": got.get("sha256"), "size": got.get("size"),
                              "from": _origin(side.get("requested"), got)}
        changed.append(entry)
    out: dict[str, Any] = {"same": same[:LIST_LIMIT], "changed": changed[:LIST_LIMIT]}
    if len(changed) > LIST_LIMIT:
        out["more"] = len(changed) - LIST_LIMIT
    return out


def _metric_value(record: dict[str, Any], name: str) -> tuple[float | None, str | None]:
    """A run's value of ``name``: its results value (finalized, else automatic) for the
    primary metric and the secondary ones, else the last logged point; with the kind of a
    non-finite last point."""
    summary = (record.get("metrics") or {}).get(name) or {}
    kind = (summary.get("non_finite") or {}).get("kind") if summary.get("last") is None \
        else None
    if name == record.get("primary_metric") and record.get("value") is not None:
        return float(record["value"]), None
    for results in (record.get("results"), record.get("results_auto")):
        if isinstance(results, dict):
            value = (results.get("secondary") or {}).get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value), None
    last = summary.get("last")
    return (float(last), None) if isinstance(last, int | float) else (None, kind)


def _metrics_section(a: dict[str, Any], b: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    spec = b.get("results_spec") or a.get("results_spec") or {}
    primary = spec.get("primary_metric")
    direction = spec.get("direction")
    spec_a = a.get("results_spec") or {}
    if spec_a and (spec_a.get("primary_metric"), spec_a.get("direction")) != (primary,
                                                                               direction):
        notes.append(f"the results specs differ: A ranks by {spec_a.get('primary_metric')} "
                     f"({spec_a.get('direction')}), B by {primary} ({direction}); B's is used")
    secondary = list(spec.get("secondary_metrics") or [])
    logged = sorted(set(a.get("metrics") or {}) | set(b.get("metrics") or {}))
    names = [n for n in dict.fromkeys([*([primary] if primary else []), *secondary, *logged])]
    rows = []
    for name in names[:LIST_LIMIT]:
        (va, ka), (vb, kb) = _metric_value(a, name), _metric_value(b, name)
        row = compare_metric(name, va, vb, direction=direction if name == primary else None,
                             a_non_finite=ka, b_non_finite=kb,
                             tolerance=spec.get("tolerance") if name == primary else None)
        if name == primary:
            row["primary"] = True
            row["direction"] = direction
        elif name in secondary:
            row["secondary"] = True
        rows.append(row)
    out: dict[str, Any] = {"primary_metric": primary, "direction": direction, "deltas": rows}
    if len(names) > LIST_LIMIT:
        out["more"] = len(names) - LIST_LIMIT
    return out


def _summary(out: dict[str, Any], left: _Side, right: _Side) -> str:
    """Two or three sentences: who won on the primary metric, then what differed."""
    parts: list[str] = []
    metrics = out.get("metrics")
    primary = next((r for r in (metrics or {}).get("deltas", []) if r.get("primary")), None)
    a_name, b_name = left.run_id or left.label, right.run_id or right.label
    if primary is not None:
        verb = {"better": "beat", "worse": "did worse than", "same": "tied with"}.get(
            primary["outcome"], "cannot be ranked against")
        shown = {k: primary.get(k) if primary.get(k) is not None
                 else primary.get(f"{k}_non_finite", "missing") for k in ("a", "b")}
        parts.append(f"B {b_name} {verb} A {a_name} on {primary['metric']} "
                     f"({primary['direction']}): {shown['a']} -> {shown['b']}"
                     + (f" ({primary['delta']:+g})" if "delta" in primary else "") + ".")
    else:
        parts.append(f"A {a_name} vs B {b_name}.")
    code = out["code"]
    changed = [f["path"] for f in code["files"][:3]]
    what = [f"code: {code['summary']}" + (f" ({', '.join(changed)}"
                                          + (", ..." if code["files_changed"] > 3 else "")
                                          + ")" if changed else "")]
    config = out["config"]["changes"]
    if config:
        what.append("config: " + ", ".join(
            f"{c['key']} {c.get('a', '-')}->{c.get('b', '-')}" for c in config[:3])
            + (", ..." if len(config) > 3 else ""))
    else:
        what.append("config: same")
    inputs = out.get("inputs")
    if inputs is not None:
        what.append("inputs: " + (", ".join(c["input"] for c in inputs["changed"][:3])
                                  + " changed" if inputs["changed"] else "same"))
    env = out.get("environment")
    if env is not None:
        what.append("environment: " + ("not recorded" if env["same"] is None
                                       else "same" if env["same"] else "differs"))
    parts.append("; ".join(what) + ".")
    return " ".join(parts)


def _size(out: dict[str, Any]) -> int:
    return len(json.dumps(out, default=str))


def _fit(out: dict[str, Any], budget: int) -> None:
    """Keep a default answer within ``budget`` characters: the diff text is cut from its end
    first (it is the bulk), then the long lists are shortened; what was cut is said."""
    code = out["code"]
    over = _size(out) - budget
    if over > 0 and code["diff_text"]:
        text = code["diff_text"]
        keep = max(len(text) - over - 200, 0)
        cut = text[:keep].rsplit("\n", 1)[0] if keep else ""
        dropped = text[len(cut):].count("\n") + 1
        code["diff_text"] = cut + (f"\n... {dropped} more lines (pass max_diff_lines to see "
                                   "more)" if cut else "")
        code["diff_cut_to_fit"] = True
    for section, key in (("code", "files"), ("config", "changes"), ("inputs", "changed"),
                         ("metrics", "deltas")):
        part = out.get(section)
        while part and _size(out) > budget and len(part[key]) > 5:
            drop = max(len(part[key]) // 4, 1)
            del part[key][-drop:]
            counter = "more_files" if key == "files" else "more"
            part[counter] = part.get(counter, 0) + drop

"""What a client can offer an agent besides tools: resources to read and prompts to start from.

Resources: ``quipu://state`` is STATE.md (the project's memory, current as of the read), and
``quipu://runs/{run_id}`` is a run's live view (``inspect_run``'s answer as JSON). Prompts: the
three workflows an agent repeats, ``start_experiment``, ``recover_context`` (after forgetting
everything: a new session, a compacted context) and ``finalize_runs``; the last two carry the
project's current facts, so the agent starts from them instead of asking.

Like the tools, each reads ``engine.q`` when it is called, and a refusal comes back as one line
``[code] message Hint: ...``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastmcp import FastMCP
from fastmcp.exceptions import PromptError, ResourceError
from fastmcp.resources import ResourceContent, ResourceResult

from quipu.core.errors import QuipuError

from ._errors import _line

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["PROMPT_NAMES", "RESOURCE_URIS", "register_guides"]

PROMPT_NAMES = ("start_experiment", "recover_context", "finalize_runs")
RESOURCE_URIS = ("quipu://state", "quipu://runs/{run_id}")

T = TypeVar("T")


def _read(fn: Callable[[], T], error: type[Exception]) -> T:
    try:
        return fn()
    except QuipuError as exc:
        raise error(_line(exc.code, exc.message, exc.hint)) from exc


def register_guides(mcp: FastMCP, engine: Engine) -> None:
    """Add the resources and prompts to ``mcp``, reading ``engine``'s project."""

    @mcp.resource("quipu://state", name="STATE.md", mime_type="text/markdown",
                  description="The project's memory: goal, slots, workspaces, runs awaiting "
                  "finalization, best results, recent thoughts and actions.")
    def state() -> ResourceResult:
        text = _read(lambda: engine.q.refresh(), ResourceError)
        return ResourceResult([ResourceContent(text, mime_type="text/markdown")])

    @mcp.resource("quipu://runs/{run_id}", name="run", mime_type="application/json",
                  description="A stage run's live view: state, progress, metrics, log tail, "
                  "outcome (inspect_run's answer).")
    def run_view(run_id: str) -> ResourceResult:
        answer: dict[str, Any] = _read(lambda: engine.q.inspect_run(run_id), ResourceError)
        return ResourceResult([ResourceContent(json.dumps(answer, default=str),
                                               mime_type="application/json")])

    @mcp.prompt(name="start_experiment",
                description="Start a new experiment: a workspace, a pipeline, a declared "
                "results_spec, a run.")
    def start_experiment(idea: str, workspace: str | None = None) -> str:
        where = (f"in workspace {workspace!r} (create it with create_workspace if it does not "
                 "exist, or branch it from the best workspace with from_workspace)"
                 if workspace else "in a new workspace named after the idea "
                 "(create_workspace; branch from the best one with from_workspace)")
        return (
            f"Start an experiment to test this idea: {idea}\n\n"
            "1. status(): see the slots and what was already tried; read the workspace's "
            "thoughts if you build on one.\n"
            f"2. Work {where}; mount() it into a free slot.\n"
            "3. log_thought(): the hypothesis, what you expect and why.\n"
            "4. Edit pipeline.yaml, modules/<stage>.py and configs/<stage>.yaml in the slot; "
            "stages report with quipu.sdk (log_metric, save_output).\n"
            "5. validate_config(workspace) until valid; save_version(slot, message).\n"
            "6. run(workspace, reason={description, hypothesis}, results_spec={primary_metric, "
            "direction, min_value, goal_value, dataset_split, tolerance, context}).\n"
            "7. Follow it with inspect_run() and logs(); when it ends, finalize_run() it "
            "(the finalization prompt helps) before the next run()."
        )

    @mcp.prompt(name="recover_context",
                description="Pick up where you left off after forgetting everything: STATE.md, "
                "pending verdicts and the next step.")
    def recover_context() -> str:
        try:
            text = engine.q.refresh()
        except QuipuError as exc:
            if exc.code != "no_project":
                raise PromptError(_line(exc.code, exc.message, exc.hint)) from exc
            return ("There is no Quipu project here yet. Call initialize_project(goal, name) "
                    "to create one, then create_workspace() for your first idea.")
        return (
            "You are resuming research recorded by Quipu. This is STATE.md, the project's "
            "memory:\n\n" + text + "\n\n"
            "Next: 1. finalize_run() every run listed as awaiting finalization (run() is "
            "refused until you do); 2. for the workspace you continue, "
            "get_workspace_thoughts() and get_experiment_context(); 3. log_thought() what you "
            "decide to do next, then continue.")

    @mcp.prompt(name="finalize_runs",
                description="Record a verdict on every ended run of a workspace, releasing "
                "the finalization gate.")
    def finalize_runs(workspace: str) -> str:
        pending = _read(lambda: engine.q.list_unfinalized_runs(workspace), PromptError)
        runs = pending.get("runs", [])
        if not runs:
            return f"No run of {workspace!r} awaits finalization: run() is free to start."
        lines = [f"{len(runs)} run(s) of {workspace!r} await finalize_run. For each: read "
                 "inspect_run(run_id) and logs(run_id); compare with get_experiment_context"
                 f"({workspace!r}); then call finalize_run with your verdict (ml_outcome "
                 "success|partial|miss|unknown) and notes saying what the run shows and why.",
                 ""]
        for item in runs:
            call = item.get("finalize_call") or f"finalize_run({item.get('run_id')!r}, ...)"
            lines.append(f"- {item.get('run_id')} ({item.get('stage')}, "
                         f"{item.get('state')}): {call}")
        return "\n".join(lines)

"""The registry: which handler carries out each command, on one screen.

Handlers are the verb-named methods of the domain services (``core.workspaces.handlers.Service``,
``core.runs.handlers.RunService``, ``core.sources.handlers.SourceService``); each loads, decides
and commits through the unit of work. The facade builds a command and hands it to
``CommandBus.handle``. A failed command raises its typed error to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from quipu.core.messages import Command
from quipu.core.patterns.commands import ApprovePattern, RecordPatternOccurrences, RejectPattern
from quipu.core.patterns.handlers import PatternService
from quipu.core.project.commands import InitProject, JoinProject, LogThought, MarkSeen
from quipu.core.runs.commands import (
    CancelRun,
    FinalizePipelineRun,
    FinalizeRun,
    RecordAdopted,
    RecordCheckpoint,
    RecordClaim,
    RecordDeadline,
    RecordExit,
    RecordFindings,
    RecordHeartbeat,
    RecordLaunch,
    RecordLaunchFailure,
    RecordLost,
    RecordMetrics,
    RecordReview,
    RecordReviewStarted,
    RequestStop,
    SaveResultsSpec,
    StartRun,
    TagRun,
)
from quipu.core.runs.handlers import RunService
from quipu.core.sources.commands import (
    DeleteSource,
    PromoteArtifact,
    RegisterSource,
    RetireSource,
    UpdateSource,
)
from quipu.core.sources.handlers import SourceService
from quipu.core.workspaces.commands import (
    CreateWorkspace,
    DeleteWorkspace,
    Hibernate,
    Mount,
    PruneVersions,
    Rollback,
    SaveVersion,
    TagVersion,
    UntagVersion,
)
from quipu.core.workspaces.handlers import Service

__all__ = ["CommandBus", "registry"]

Handler = Callable[..., Any]


def registry(ws: Service, runs: RunService, sources: SourceService | None = None,
             patterns: PatternService | None = None) -> Mapping[type[Command], Handler]:
    """Every command type and the handler that carries it out."""
    src = sources or SourceService(ws.uow)
    pat = patterns or PatternService(ws.uow)
    return {
        # the project
        InitProject: ws.init_project,
        JoinProject: ws.join_project,
        LogThought: ws.log_thought,
        MarkSeen: ws.mark_seen,
        # workspaces, slots, versions
        CreateWorkspace: ws.create_workspace,
        Mount: ws.mount,
        Hibernate: ws.hibernate,
        SaveVersion: ws.save_version,
        Rollback: ws.rollback,
        TagVersion: ws.tag_version,
        UntagVersion: ws.untag_version,
        PruneVersions: ws.prune_versions,
        DeleteWorkspace: ws.delete_workspace,
        # runs: the agent
        StartRun: runs.run,
        CancelRun: runs.cancel,
        RequestStop: runs.request_stop,
        FinalizeRun: runs.finalize,
        FinalizePipelineRun: runs.finalize_pipeline,
        SaveResultsSpec: runs.save_results_spec,
        TagRun: runs.tag,
        # runs: executors and the supervisor
        RecordClaim: runs.record_claim,
        RecordLaunch: runs.record_launch,
        RecordHeartbeat: runs.record_heartbeat,
        RecordLaunchFailure: runs.record_launch_failure,
        RecordExit: runs.record_exit,
        RecordLost: runs.record_lost,
        RecordAdopted: runs.record_adopted,
        RecordDeadline: runs.record_deadline,
        RecordMetrics: runs.record_metrics,
        RecordCheckpoint: runs.record_checkpoint,
        RecordReviewStarted: runs.record_review_started,
        RecordReview: runs.record_review,
        RecordFindings: runs.record_findings,
        # sources
        RegisterSource: src.register,
        UpdateSource: src.update,
        RetireSource: src.retire,
        DeleteSource: src.delete,
        PromoteArtifact: src.promote,
        # failure patterns
        RecordPatternOccurrences: pat.record_occurrences,
        ApprovePattern: pat.approve,
        RejectPattern: pat.reject,
    }


class CommandBus:
    """Hands each command to its handler."""

    def __init__(self, ws: Service, runs: RunService,
                 sources: SourceService | None = None,
                 patterns: PatternService | None = None) -> None:
        self.handlers = registry(ws, runs, sources, patterns)

    def handle(self, command: Command) -> Any:
        """Carry out ``command``; its handler's result, or its typed error."""
        try:
            handler = self.handlers[type(command)]
        except KeyError:
            raise TypeError(f"no handler for {type(command).__name__}") from None
        return handler(**command.arguments())

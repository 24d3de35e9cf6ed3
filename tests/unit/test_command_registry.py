"""The command registry: every command has exactly one handler, and its fields are exactly the
handler's arguments, so a command can neither miss an argument nor carry one nobody reads."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from unit_support import FakeIndex

from quipu.core.handlers import CommandBus, registry
from quipu.core.messages import Command
from quipu.core.patterns import commands as pattern_commands
from quipu.core.project import commands as project_commands
from quipu.core.runs import commands as run_commands
from quipu.core.runs.handlers import RunService
from quipu.core.sources import commands as source_commands
from quipu.core.sources.handlers import SourceService
from quipu.core.workspaces import commands as workspace_commands
from quipu.core.workspaces.aggregate import Workspace
from quipu.core.workspaces.commands import CreateWorkspace, Mount

ACTOR = "agent-1"
REASON = "exercise the command bus in a unit test"


def every_command() -> set[type[Command]]:
    found = set()
    for module in (project_commands, workspace_commands, run_commands, source_commands,
                   pattern_commands):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, Command):
                found.add(obj)
    return found


@pytest.fixture
def bus(project: Any) -> CommandBus:
    return CommandBus(project.service, RunService(project.service, FakeIndex()),
                      SourceService(project.service.uow))


def test_every_command_has_a_handler_and_nothing_else_is_registered(bus: CommandBus) -> None:
    assert set(bus.handlers) == every_command()
    assert len(every_command()) == 41


def test_each_commands_fields_are_exactly_its_handlers_arguments(project: Any) -> None:
    handlers = registry(project.service, RunService(project.service, FakeIndex()))
    for command, handler in handlers.items():
        fields = {f.name: f for f in dataclasses.fields(command)}
        params = inspect.signature(handler).parameters
        assert set(fields) == set(params), command.__name__
        for name, param in params.items():
            has_default = fields[name].default is not dataclasses.MISSING
            assert has_default == (param.default is not inspect.Parameter.empty), (
                f"{command.__name__}.{name}: the command and the handler disagree on whether "
                "it is optional")


def test_commands_are_frozen(bus: CommandBus) -> None:
    command = CreateWorkspace(name="a", goal="g", reason=REASON, actor=ACTOR)
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.name = "b"  # type: ignore[misc]


def test_the_bus_carries_a_command_out_and_raises_its_typed_error(bus: CommandBus,
                                                                   project: Any) -> None:
    result = bus.handle(CreateWorkspace(name="baseline", goal="a goal", reason=REASON,
                                        actor=ACTOR))
    assert result["workspace"] == "baseline"
    assert project.service.load(Workspace, "baseline").exists
    head = project.store.head()
    with pytest.raises(Exception) as caught:
        bus.handle(Mount(workspace="nope", slot="w1", reason=REASON, actor=ACTOR))
    assert getattr(caught.value, "code", None) == "unknown_workspace"
    assert project.store.head() == head


def test_a_command_nobody_handles_is_a_type_error(bus: CommandBus) -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Unknown(Command):
        actor: str

    with pytest.raises(TypeError, match="no handler for Unknown"):
        bus.handle(Unknown(actor=ACTOR))

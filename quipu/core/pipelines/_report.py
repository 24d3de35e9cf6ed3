"""What a pipeline check returns: problems (with file, path and line) and the report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from quipu.core.errors import InvalidInput
from quipu.core.pipelines._model import Pipeline
from quipu.core.pipelines._yaml import YamlPath

__all__ = ["PIPELINE_FILE", "Loc", "Problem", "ValidationReport"]

PIPELINE_FILE = "pipeline.yaml"


class Problem(BaseModel):
    """One thing wrong (or worth a look) in a pipeline or a config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    where: str  # path inside the file, e.g. "stages[1].inputs.features"
    message: str
    hint: str = ""
    file: str | None = PIPELINE_FILE  # None for things that are not in a file (the override)
    line: int | None = None

    def __str__(self) -> str:
        at = ":".join(p for p in (self.file or "", str(self.line or "")) if p)
        return (f"{at} {self.where}: {self.message}" if at else f"{self.where}: {self.message}"
                ) + (f" (hint: {self.hint})" if self.hint else "")


class ValidationReport(BaseModel):
    """Everything found at once. ``valid`` is True when there are no errors (warnings allowed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    valid: bool
    errors: list[Problem]
    warnings: list[Problem]
    stage_order: list[str]  # topological order of the stages that parsed; [] if there is a cycle
    pipeline: Pipeline | None = Field(default=None, exclude=True)  # set when valid

    def raise_if_invalid(self) -> None:
        """Raise InvalidInput ``pipeline_invalid`` listing every error, if there is one."""
        if self.errors:
            raise InvalidInput(
                f"the pipeline has {len(self.errors)} problem(s): "
                + "; ".join(str(p) for p in self.errors),
                code="pipeline_invalid", hint=self.errors[0].hint or "fix the problems listed")


@dataclass(frozen=True)
class Loc:
    """Where a problem is: its file, the path shown to people, and the YAML path for the line."""

    file: str | None
    where: str
    ypath: YamlPath = ()

    def key(self, name: str, ykey: str | int | None = None) -> Loc:
        where = f"{self.where}.{name}" if self.where else name
        return Loc(self.file, where, (*self.ypath, name if ykey is None else ykey))

    def at(self, loc: Iterable[str | int]) -> Loc:
        out = self
        for part in loc:
            out = (Loc(out.file, f"{out.where}[{part}]", (*out.ypath, part))
                   if isinstance(part, int) else out.key(part))
        return out

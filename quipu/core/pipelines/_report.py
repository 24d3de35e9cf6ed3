"""What a pipeline check returns: problems (with file, path and line) and the report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from quipu.core.errors import InvalidInput
from quipu.core.pipelines._model import Pipeline
from quipu.core.pipelines._yaml import YamlPath

__all__ = ["PIPELINE_FILE", "Loc", "Problem", "ValidationReport", "pipeline_refusal"]

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
        """Raise ``pipeline_refusal(errors)`` if there is an error."""
        if self.errors:
            raise pipeline_refusal(self.errors)


def pipeline_refusal(errors: Sequence[Problem]) -> InvalidInput:
    """The refusal for a pipeline with ``errors``: each problem exactly as the dry run reports
    it (file, line, where, message and its hint, did-you-mean included), so ``run()`` tells
    no less than ``validate_config``. The code is the problem's own when every problem shares
    one, else ``pipeline_invalid``."""
    codes = {p.code for p in errors}
    code = codes.pop() if len(codes) == 1 else "pipeline_invalid"
    if len(errors) == 1 and errors[0].hint:
        only = errors[0].model_copy(update={"hint": ""})
        return InvalidInput(f"the pipeline has a problem: {only}", code=code,
                            hint=errors[0].hint)
    return InvalidInput(
        f"the pipeline has {len(errors)} problems: " + "; ".join(str(p) for p in errors),
        code=code, hint="fix each problem as its hint says; validate_config(workspace) lists "
        "them with file and line")


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

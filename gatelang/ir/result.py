"""The outcome of checking a policy file: the IR (when there is no error) and every diagnostic."""

from __future__ import annotations

from dataclasses import dataclass, field

from gatelang.errors import Diagnostic
from gatelang.ir import model as ir


@dataclass
class CheckResult:
    """What `check` found: the IR when there is no error, and every diagnostic."""

    ir: ir.PolicyFile | None
    diagnostics: list[Diagnostic]
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        return "\n".join(
            d.render(self.sources.get(d.span.file) if d.span else None)
            for d in self.diagnostics
        )

"""gatelang: privacy policies compiled into verified weight edits.

The public API is re-exported here lazily: `import gatelang` stays cheap (no torch, no
transformers) and each name is imported from its layer on first use. To publish a new name,
add one line to `_API` (name -> "module:attribute"); nothing else needs to change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API: dict[str, str] = {
    # language front end (parse + check) -------------------------------------------------------
    "load": "gatelang.ir:load",  # path -> PolicyFile (IR); raises DiagnosticError
    "loads": "gatelang.ir:loads",  # text -> PolicyFile
    "check": "gatelang.ir:check",  # path -> CheckResult (never raises for policy problems)
    "check_text": "gatelang.ir:check_text",
    "PolicyFile": "gatelang.ir:PolicyFile",
    "CheckResult": "gatelang.ir:CheckResult",
    # planner ----------------------------------------------------------------------------------
    "plan": "gatelang.planner:plan",  # (PolicyFile, ModelCapabilities) -> Plan
    "compile": "gatelang.planner.api:compile",  # path -> Plan (load + plan)
    "Plan": "gatelang.planner:Plan",
    "ModelCapabilities": "gatelang.planner:ModelCapabilities",
    "TINY_LLAVA_CAPABILITIES": "gatelang.planner:TINY_LLAVA_CAPABILITIES",
    # source tools -----------------------------------------------------------------------------
    "fmt": "gatelang.syntax.format:fmt",  # path -> canonical text (format_text for text)
    "convert": "gatelang.syntax.format:convert",  # path -> text in the other syntax
    "format_text": "gatelang.syntax.format:format_text",  # text -> canonical text
    "diff": "gatelang.ir.diff:diff",  # (old, new) -> list[Change]
    "json_schema": "gatelang.report.schemas:json_schema",  # kind -> JSON Schema (policy, report, lock, audit)
    "validate_document": "gatelang.report.schemas:validate_document",  # (kind, doc) -> model
    # errors -----------------------------------------------------------------------------------
    "GatelangError": "gatelang.errors:GatelangError",
    "DiagnosticError": "gatelang.errors:DiagnosticError",
    "PlanError": "gatelang.errors:PlanError",
    # apply: run a policy on a model, write patch + report + lock ---------------------------
    "apply": "gatelang.driver:apply",  # (policy, model, out) -> ApplyResult
    "load_patch": "gatelang.driver:load_patch",  # (model or spec, patch) -> patched model
    "export_patch": "gatelang.driver:export_patch",  # (model, patch, out) -> state-dict file
    "save_patched": "gatelang.driver:save_patched",  # (patched, patch, out) -> HF folder + card
    "verify_lock": "gatelang.driver:verify_lock",  # gate.lock -> VerifyResult (drift)
    "run": "gatelang.driver:run",  # (policy, RunOptions) -> RunRecord, no files written
    "RunOptions": "gatelang.driver:RunOptions",
    "RunRecord": "gatelang.driver:RunRecord",
    "write_artifacts": "gatelang.report.artifacts:write_artifacts",  # RunRecord -> files
    "identity_check": "gatelang.driver:identity_check",  # (RunRecord, subjects) -> metrics
    # methods ----------------------------------------------------------------------------------
    "methods": "gatelang.methods:methods",  # name -> MethodSpec of every registered method
    "register_method": "gatelang.methods:register_method",
    # models and measurement -------------------------------------------------------------------
    "load_model": "gatelang.models:load_model",  # spec -> LoadedModel (offline)
    "audit": "gatelang.measure.audit:audit",  # (policy, model) -> AuditReport, no edit
    # runtime, report: add entries here
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'gatelang' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from gatelang.driver import (  # noqa: F401
        RunOptions,
        RunRecord,
        apply,
        export_patch,
        identity_check,
        load_patch,
        run,
        save_patched,
        verify_lock,
    )
    from gatelang.errors import DiagnosticError, GatelangError, PlanError  # noqa: F401
    from gatelang.ir import CheckResult, PolicyFile, check, check_text, load, loads  # noqa: F401
    from gatelang.ir.diff import diff  # noqa: F401
    from gatelang.measure.audit import audit  # noqa: F401
    from gatelang.methods import methods, register_method  # noqa: F401
    from gatelang.models import load_model  # noqa: F401
    from gatelang.planner import TINY_LLAVA_CAPABILITIES, ModelCapabilities, Plan, plan  # noqa: F401
    from gatelang.planner.api import compile  # noqa: F401
    from gatelang.report.artifacts import write_artifacts  # noqa: F401
    from gatelang.report.schemas import json_schema, validate_document  # noqa: F401
    from gatelang.syntax.format import convert, fmt, format_text  # noqa: F401

"""JSON Schema of the YAML form, so editors can validate and complete policies as you type.

The enumerations (attributes, languages, metrics) come from the shipped stdlib and the methods,
their parameters and profiles from the registered methods' configs, so the schema always matches what `gatelang check` accepts; the checker stays
the authority for everything a schema cannot say (scopes, subject sets, contradictions).
"""

from __future__ import annotations

from typing import Any

from gatelang.methods import methods
from gatelang.stdlib import load_stdlib
from gatelang.syntax.names import ALL, ENCODERS, MODALITIES, PRESERVATIONS

SCHEMA_ID = "https://gatelang.dev/schema/policy-1.json"
_NAME = r"^[^\W\d][\w\-]*$"


def _names(values) -> dict[str, Any]:
    item = {"type": "string", "enum": [*values, ALL]}
    return {"oneOf": [item, {"type": "array", "items": item, "minItems": 1}]}


def _param_schema(p) -> dict[str, Any]:
    if p.kind == "percent":
        return {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?%$", "description": p.help}
    if p.kind == "int":
        return {"type": "integer", "minimum": p.min, "maximum": p.max, "description": p.help}
    if p.kind == "float":
        return {"type": "number", "minimum": p.min, "maximum": p.max, "description": p.help}
    if p.kind == "layer":
        return {"oneOf": [{"const": "auto"}, {"type": "integer", "minimum": 0}],
                "description": p.help}
    if p.kind == "bool":
        return {"type": "boolean", "description": p.help}
    if p.kind == "enum":
        return {"enum": list(p.choices or ()), "description": p.help}
    return {"type": "string", "description": p.help}


def json_schema() -> dict[str, Any]:
    """The schema as a dict (draft 2020-12)."""
    std = load_stdlib()
    subjects_list = {"oneOf": [{"type": "string"},
                               {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
    registered = methods()
    method_names = sorted(registered)
    method_variants: list[dict[str, Any]] = [{"type": "string", "enum": method_names}]
    for name in method_names:
        spec = registered[name]
        params = {k: _clean(_param_schema(p)) for k, p in spec.params().items()}
        renamed = spec.config.renamed
        for old, new in renamed.items():
            params[old] = {**params[new], "deprecated": True,
                           "description": f"renamed to {new}"}
        if spec.profiles:
            params["profile"] = {"enum": sorted(spec.profiles),
                                 "description": "a named set of tuned settings of the method"}
        method_variants.append({
            "type": "object", "additionalProperties": False, "minProperties": 1,
            "maxProperties": 1,
            "properties": {name: {"type": ["object", "null"], "additionalProperties": False,
                                  "properties": params}},
        })
    metric = "|".join(sorted(std.metrics))
    split = "|".join(sorted(std.splits))
    requirement = {
        "type": "string",
        "pattern": rf"^\s*({metric})(\(({split})\))?\s*(>=|<=|>|<)\s*-?[0-9]+(\.[0-9]+)?%?\s*$",
        "description": "metric(split) op threshold, e.g. refusal(heldout) >= 95%",
    }
    rule = {"oneOf": [
        {"type": "object", "additionalProperties": False,
         "required": ["refuse", "about", "in", "via"],
         "properties": {"refuse": _names(sorted(std.attributes)), "about": subjects_list,
                        "in": _names(sorted(std.languages)), "via": _names(MODALITIES)}},
        {"type": "object", "additionalProperties": False, "required": ["anonymize", "in"],
         "properties": {"anonymize": subjects_list, "in": _names(ENCODERS)}},
        {"type": "object", "additionalProperties": False, "required": ["keep", "about"],
         "properties": {"keep": _names(sorted(std.attributes)), "about": subjects_list}},
    ]}
    policy = {
        "type": "object", "additionalProperties": False, "required": ["rules"],
        "properties": {
            "description": {"type": "string"},
            "owner": {"type": "string"},
            "rules": {"type": "array", "items": rule, "minItems": 1},
            "keep": {"oneOf": [{"enum": list(PRESERVATIONS)},
                               {"type": "array", "items": {"enum": list(PRESERVATIONS)}}]},
            "refusal_languages": _names(sorted(std.languages)),
            "method": {"oneOf": method_variants},
            "require": {"oneOf": [
                {"enum": sorted(std.requirement_profiles),
                 "description": "a stdlib requirement profile"},
                {"type": "array", "items": {"oneOf": [
                    requirement, {"enum": sorted(std.requirement_profiles)}]}},
            ]},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "gatelang policy (YAML form)",
        "description": f"gatelang language 1, stdlib {std.version}",
        "type": "object",
        "additionalProperties": False,
        "required": ["gatelang"],
        "properties": {
            "gatelang": {"const": 1},
            "use": {"type": "array", "items": {"oneOf": [
                {"type": "string", "enum": ["stdlib." + m for m in std.modules]},
                {"type": "object", "additionalProperties": False, "required": ["file"],
                 "properties": {"file": {"type": "string"}}},
            ]}},
            "subjects": {"type": "object", "propertyNames": {"pattern": _NAME},
                         "additionalProperties": {"oneOf": [
                             {"type": "array", "items": {"type": "string"}, "minItems": 1},
                             {"type": "object", "additionalProperties": False,
                              "required": ["from"],
                              "properties": {"from": {"type": "string"},
                                             "column": {"type": "string"}}},
                         ]}},
            "policies": {"type": "object", "propertyNames": {"pattern": _NAME},
                         "additionalProperties": policy},
        },
    }


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if v not in (None, "")}

"""Lowering of a policy's `method` block against the method's config.

The method's pydantic config (gatelang/methods/<name>/config.py) is the single source of what
may be written here: names, kinds, ranges. A block may name a `profile` of the method (its tuned
settings for a model or a data size) and then override single parameters. Parameters the method
renamed are accepted under the old name with a warning (G204) for one stdlib version.

A mixin of the lowerer (`ir.lower`): it reports through the lowerer's `error`/`warn`.
"""

from __future__ import annotations

from typing import Any

from gatelang.ir import model as ir
from gatelang.ir.hints import hint as _hint
from gatelang.methods import DEFAULT_METHOD, MethodConfigError, get_method, methods
from gatelang.methods.base import MethodSpec, ParamInfo
from gatelang.syntax import ast

_BAD = object()
PROFILE = "profile"  # the method-block key that names a profile


class MethodLowering:
    """The `method` block: method name, profile, parameter names, kinds and ranges."""

    def _method(self, m: ast.Method | None, kinds: set[str], item: ast.Policy) -> ir.Method | None:
        if m is None:
            spec = get_method(DEFAULT_METHOD["anonymize" if "anonymize" in kinds else "refuse"])
            return ir.Method(name=spec.name, family=spec.family, params=spec.defaults(),
                             overrides=(), span=item.name.span)
        name = m.name.text
        known = methods()
        if name not in known:
            self.error("G104", f"unknown method {name!r}", m.name.span, _hint(known, name))
            return None
        spec = known[name]
        if "anonymize" in kinds and spec.family != "encoder_remap":
            self.error("G122", f"anonymize rules need method remap, not {name!r}", m.name.span,
                       "write `method remap` or leave the method out")
            return None
        if "refuse" in kinds and spec.family == "encoder_remap":
            refusal = [n for n, s in known.items() if s.family != "encoder_remap"]
            self.error("G122", f"method {name} edits encoders and cannot enforce refuse rules",
                       m.name.span, "use one of: " + ", ".join(refusal))
            return None
        infos = spec.params()
        renamed = spec.config.renamed
        profile: str | None = None
        values: dict[str, Any] = {}
        ok = True
        for p in m.params:
            key = p.name.text
            if key == PROFILE:
                profile = self._profile(spec, p, profile)
                ok = ok and profile is not None
                continue
            if key in renamed:
                new = renamed[key]
                self.warn("G204", f"{name}.{key} is now called {new}", p.name.span,
                          f"write `{new}`; `gatelang fmt` rewrites it")
                key = new
            if key not in infos:
                self.error("G107", f"method {name} has no parameter {key!r}", p.name.span,
                           _hint([*infos, PROFILE], key))
                ok = False
                continue
            if key in values:
                self.error("G114", f"parameter {key!r} is given twice", p.name.span)
                ok = False
                continue
            value = self._param_value(name, key, infos[key], p.value)
            if value is _BAD:
                ok = False
                continue
            values[key] = value
        if not ok:
            return None
        try:
            config = spec.resolve(values, profile=profile)
        except MethodConfigError as exc:
            self.error("G107", str(exc), m.span)
            return None
        return ir.Method(name=name, family=spec.family, params=config.model_dump(),
                         overrides=tuple(values), profile=profile, span=m.span)

    def _profile(self, spec: MethodSpec, p: ast.Param, seen: str | None) -> str | None:
        if seen is not None:
            self.error("G114", "profile is given twice", p.name.span)
            return None
        value = str(p.value.value) if p.value.kind in ("name", "string") else None
        if value not in spec.profiles:
            self.error("G107", f"method {spec.name} has no profile {p.value.raw}", p.value.span,
                       _hint(spec.profiles, value, none=f"{spec.name} defines no profile"))
            return None
        return value

    def _param_value(self, method: str, key: str, spec: ParamInfo, v: ast.Value):
        t = spec.kind
        where = f"{method}.{key}"
        if t == "percent":
            if v.kind != "percent":
                self.error("G116", f"{where} is a percentage", v.span,
                           f"write it with a % sign, e.g. {spec.display_default()}")
                return _BAD
            if not 0 <= float(v.value) <= 100:
                self.error("G115", f"{where} must be between 0% and 100%", v.span)
                return _BAD
            return float(v.value) / 100
        if t in ("int", "float"):
            if v.kind != "number":
                self.error("G107", f"{where} must be a number, not {v.raw}", v.span,
                           f"default: {spec.display_default()}")
                return _BAD
            value = float(v.value)
            if t == "int":
                if not value.is_integer():
                    self.error("G107", f"{where} must be a whole number", v.span)
                    return _BAD
                value = int(value)
            if (spec.min is not None and value < spec.min) or (
                spec.max is not None and value > spec.max
            ):
                lo = "" if spec.min is None else f"{spec.min:g}"
                hi = "" if spec.max is None else f"{spec.max:g}"
                self.error("G115", f"{where} = {v.raw} is out of range", v.span,
                           f"allowed: {lo or 'any'} to {hi or 'any'}")
                return _BAD
            return value
        if t == "layer":
            if v.kind == "name" and v.value == "auto":
                return "auto"
            if v.kind == "number" and float(v.value).is_integer() and float(v.value) >= 0:
                return int(float(v.value))
            self.error("G107", f"{where} must be `auto` or a layer index", v.span)
            return _BAD
        if t == "bool":
            if v.kind != "bool":
                self.error("G107", f"{where} must be true or false", v.span)
                return _BAD
            return v.value
        if t == "enum":
            choices = spec.choices or ()
            if str(v.value) not in choices:
                self.error("G107", f"{where} must be one of the choices", v.span,
                           _hint(choices, str(v.value)))
                return _BAD
            return str(v.value)
        if v.kind not in ("string", "name"):
            self.error("G107", f"{where} must be a string", v.span)
            return _BAD
        return str(v.value)


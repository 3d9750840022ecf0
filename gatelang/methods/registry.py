"""The method registry: one `register_method` call per method, looked up by name.

Built-in methods register when `gatelang.methods` is imported; a plug-in package registers the
same way, either imported by the user or named under the ``gatelang.methods`` entry-point group.
"""

from __future__ import annotations

from gatelang.methods.base import MethodSpec

_METHODS: dict[str, MethodSpec] = {}

# What a policy gets with no `method` block, per rule kind.
DEFAULT_METHOD = {"refuse": "refusal_patch", "anonymize": "remap"}


class UnknownMethodError(KeyError):
    """No method of this name is registered."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown method {self.name!r}; known: {', '.join(sorted(_METHODS))}"


def register_method(spec: MethodSpec) -> MethodSpec:
    """Make a method known to the compiler, planner and runtime.

    Registering a second, different method under a taken name is an error: a plug-in must not
    silently replace a built-in (re-registering the same spec, as a re-import does, is fine).
    """
    old = _METHODS.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    if not spec.edit:
        raise ValueError(f"method {spec.name!r} names no edit op")
    _METHODS[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Forget a method (tests that register a toy method clean up with this)."""
    _METHODS.pop(name, None)


def get_method(name: str) -> MethodSpec:
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethodError(name) from None


def methods() -> dict[str, MethodSpec]:
    """Every registered method, by name (sorted)."""
    return dict(sorted(_METHODS.items()))

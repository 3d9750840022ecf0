"""The benchmark's policy grid and the method variants each policy is run with.

Policies are written as `.gate` source text, exactly as a user would write them, so the
benchmark exercises the whole compiler (parse, resolve, plan) and not a private shortcut.
The grid varies one factor at a time around a base policy, which keeps the number of runs small
enough for 2 CPU cores while still answering "what happens with more targets, more attributes,
more languages, images".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

PRIVATE_ATTRIBUTES = ("home_address", "phone_number", "email", "date_of_birth")
LANGUAGES = ("en", "zh", "es")
SUBJECT_COUNTS = (1, 5, 20)
COST_TARGET_COUNTS = (1, 5, 20, 48)

# Method variants in the order they run: refusal_patch, the default (a policy with no `method`
# block), first; then neural_gate before the random gate, which is sized from the gate
# neural_gate actually chose on the same policy. "unedited" is not a run: every report carries
# the unedited model's numbers as `before`.
METHODS = ("refusal_patch", "neural_gate", "finetune", "random_gate", "deactivate",
           "privacy_neurons", "remap")
# Methods that choose their own configuration for the model and the policy: the harness passes
# them no parameters and no run-option overrides, so they run exactly as a policy without a
# `method` block does.
SELF_CONFIGURING = ("refusal_patch",)
ALL_METHODS = ("unedited", *METHODS)


def applies_to(method: str, spec: PolicySpec) -> bool:
    """Encoder remapping edits the vision tower, so it only has something to show with images."""
    return method != "remap" or "image" in spec.modalities


@dataclass(frozen=True)
class PolicySpec:
    """One policy of the grid: which subjects, attributes, languages and modalities it covers."""

    id: str
    subjects: tuple[str, ...]
    attributes: tuple[str, ...]
    languages: tuple[str, ...]
    modalities: tuple[str, ...]
    factor: str = "base"  # which factor this policy varies relative to the base
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        """Number of (subject, attribute, language, modality) cells the rule covers."""
        return (
            len(self.subjects) * len(self.attributes) * len(self.languages) * len(self.modalities)
        )

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "subjects": list(self.subjects),
            "attributes": list(self.attributes),
            "languages": list(self.languages),
            "modalities": list(self.modalities),
            "factor": self.factor,
            "size": self.size,
        }


def _policy_id(n: int, attrs: Sequence[str], langs: Sequence[str], mods: Sequence[str]) -> str:
    return f"s{n}-a{len(attrs)}-{'+'.join(langs)}-{'+'.join(mods)}"


def make_policy(
    subjects: Sequence[str],
    attributes: Sequence[str],
    languages: Sequence[str],
    modalities: Sequence[str],
    factor: str = "base",
) -> PolicySpec:
    return PolicySpec(
        id=_policy_id(len(subjects), attributes, languages, modalities),
        subjects=tuple(subjects),
        attributes=tuple(attributes),
        languages=tuple(languages),
        modalities=tuple(modalities),
        factor=factor,
    )


def policy_grid(subject_names: Sequence[str], *, quick: bool = False) -> list[PolicySpec]:
    """The grid, one factor at a time around the base (5 subjects, 1 attribute, en, text).

    Target subjects are always a prefix of `subject_names` (the world's subjects in a fixed
    order), so the 1-subject policy's target is also in the 5- and 20-subject policies and every
    method sees exactly the same targets.
    """
    need = 1 if quick else max(SUBJECT_COUNTS)
    if len(subject_names) < need:
        raise ValueError(f"the grid needs {need} subjects, the world has {len(subject_names)}")
    if quick:
        return [make_policy(subject_names[:1], PRIVATE_ATTRIBUTES[:1], ("en",), ("text",), "quick")]
    base = make_policy(subject_names[:5], PRIVATE_ATTRIBUTES[:1], ("en",), ("text",), "base")
    # Ordered by what a reader needs first, since a suite may be stopped early on a slow machine:
    # the base, the smallest, images, languages, attributes, then the largest target set.
    grid = [
        base,
        make_policy(subject_names[:1], base.attributes, base.languages, base.modalities,
                    "subjects"),
        make_policy(base.subjects, base.attributes, base.languages, ("text", "image"),
                    "modalities"),
        make_policy(base.subjects, base.attributes, LANGUAGES, base.modalities, "languages"),
        make_policy(base.subjects, PRIVATE_ATTRIBUTES, base.languages, base.modalities,
                    "attributes"),
        make_policy(subject_names[:20], base.attributes, base.languages, base.modalities,
                    "subjects"),
    ]
    return grid


def cost_policies(subject_names: Sequence[str], counts: Sequence[int] = COST_TARGET_COUNTS
                  ) -> list[PolicySpec]:
    """Policies for the cost-vs-targets curve: the base rule with 1, 5, 20, 48 targets."""
    out = []
    for n in counts:
        if n > len(subject_names):
            continue
        out.append(make_policy(subject_names[:n], PRIVATE_ATTRIBUTES[:1], ("en",), ("text",),
                               "cost"))
    return out


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and value.endswith("%"):
        return value
    if isinstance(value, str):
        return value if value.isidentifier() else _quote(value)
    return str(value)


def render_gate(spec: PolicySpec, method: str, params: dict[str, object] | None = None) -> str:
    """The policy as `.gate` source with the given method clause.

    No `require` block: the benchmark measures, it does not gate publication, so every run
    exits 0 when it completes and all numbers land in the report.
    """
    attrs = ", ".join(spec.attributes)
    langs = ", ".join(spec.languages)
    mods = ", ".join(spec.modalities)
    subjects = ", ".join(_quote(s) for s in spec.subjects)
    rule = [f"  refuse {attrs}", "    about targets", f"    in {langs}", f"    via {mods}",
            "  keep other_subjects, other_attributes, utility"]
    if method == "remap":
        # Encoder remapping is a different rule (the vision tower forgets who the face is), so
        # it only runs on policies that include image queries; it is verified by whether face
        # queries about the targets still leak their attributes.
        rule = ["  anonymize targets in image encoder"]
    # The default method is what a policy without a `method` block gets: write none, so the
    # run is exactly that policy.
    method_line = "" if method in SELF_CONFIGURING and not params else f"  method {method}"
    if params:
        body = "  ".join(f"{k} {_format_value(v)}" for k, v in params.items())
        method_line += f" {{ {body} }}"
    return "\n".join(
        [
            "gatelang 1",
            "use stdlib.attributes",
            "use stdlib.languages",
            "",
            f"subjects targets = [{subjects}]",
            "",
            f"policy bench_{spec.id.replace('-', '_').replace('+', '_')} {{",
            f"  description {_quote('Benchmark policy ' + spec.id + '.')}",
            *rule,
            *([method_line] if method_line else []),
            "}",
            "",
        ]
    )


# The reference example's footprint setting (docs/examples/home-address.gate): the edit may
# rewrite only the 1% least active MLP units, inputs and outputs.
NEURAL_GATE_FOOTPRINT: dict[str, object] = {"unit_budget": "1%", "unit_select": "quiet",
                                            "unit_inputs": "true"}


def method_params(method: str, *, quick: bool, gate_fraction: float | None = None,
                  layer: int | None = None, footprint: bool = True) -> dict[str, object]:
    """Per-method overrides. Defaults come from the stdlib presets; only what must differ is set.

    The random gate gets the size and the layer neural_gate chose on the same policy, and the
    unmasked fine-tune the same layer, which makes them ablations of *where* the gate is and of
    *whether* there is one, rather than of layer choice. Training parameters stay at the presets
    (quick runs shrink the data through run options instead, see bench/run.py), except the
    encoder remap's step count in quick runs.
    """
    params: dict[str, object] = {}
    if method in SELF_CONFIGURING:
        return params
    if method == "neural_gate" and footprint:
        params.update(NEURAL_GATE_FOOTPRINT)
    if method in ("random_gate", "finetune") and layer is not None:
        params["layer"] = int(layer)
    if method == "random_gate" and gate_fraction is not None:
        params["sparsity"] = f"{max(gate_fraction * 100.0, 0.01):.2f}%"
    if quick and method == "remap":
        params["steps"] = 60
    return params

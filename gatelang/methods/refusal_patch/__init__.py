"""Refusal patch: a few last-layer MLP units rewritten to refuse in the question's language and to
make the protected values unlikely under any answer prefix."""

from gatelang.methods.base import MethodSpec
from gatelang.methods.refusal_patch.config import (
    PROFILES,
    RefusalPatchConfig,
    edit_cost,
    touches,
)
from gatelang.methods.registry import register_method

SPEC = register_method(MethodSpec(
    name="refusal_patch",
    family="refusal_edit",
    description=(
        "Rewrite a few MLP units of the last decoder layer (input and output weights, the least "
        "active ones, a number that scales with the protected (subject, attribute) pairs) so "
        "that they fire only on the protected questions, start the refusal reply of the "
        "question's language, and make every token of the protected value unlikely after any "
        "prefix; trained on the unedited model's cached last-layer states."),
    config=RefusalPatchConfig,
    edit={"refuse": "edit.refusal_patch"},
    passes=("gatelang.methods.refusal_patch.edit",),
    profiles=PROFILES,
    edit_cost=edit_cost,
    touches=touches,
    reads_requirements=True,
))

"""A toy editing method, registered from outside gatelang's source tree.

It exists to prove that adding a method touches one folder: this package (config + pass + one
`register_method` call) is all there is, and `tests/test_method_plugin.py` runs a policy that
names it through check, plan, apply and verify.
"""

from gatelang.methods import MethodSpec, Work, register_method
from toy_zero.config import ToyZeroConfig


def _cost(cfg: ToyZeroConfig, n_edit: int, tokens: int, layers: int) -> Work:
    return Work()


SPEC = register_method(MethodSpec(
    name="toy_zero",
    family="neuron_ablation",
    description="Zero the first `units` MLP units of one decoder layer (a test fixture).",
    config=ToyZeroConfig,
    edit={"refuse": "edit.toy_zero"},
    passes=("toy_zero.edit",),
    profiles={"two": {"units": 2}},
    edit_cost=_cost,
    touches=lambda cfg, shape: f"{cfg.units} MLP units of decoder layer {cfg.layer}",
))

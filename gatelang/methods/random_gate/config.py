"""The random-gate ablation's parameters: the refusal edit through a random gate of a size."""

from gatelang.methods.base import param
from gatelang.methods.neural_gate.config import RefusalEditConfig


class RandomGateConfig(RefusalEditConfig):
    sparsity: float = param(0.1, "share of the layer's dims in the random gate", percent=True)

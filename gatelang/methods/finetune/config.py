"""The fine-tune baseline's parameters: exactly the shared refusal-edit ones."""

from gatelang.methods.neural_gate.config import RefusalEditConfig


class FinetuneConfig(RefusalEditConfig):
    pass

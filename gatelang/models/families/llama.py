"""Llama-style decoders (Llama 2/3, Mistral, SmolLM2, stories260K): pre-norm, gated SiLU MLP."""

from gatelang.models.adapter import Adapter


class LlamaAdapter(Adapter):
    family = "llama"
    model_types = ("llama", "mistral")
    layers_path = "model.layers"
    down_proj_path = "mlp.down_proj"
    # Base checkpoints without a chat template get a plain question/answer frame.
    default_template = "Q: {prompt}\nA:"


ADAPTER = LlamaAdapter

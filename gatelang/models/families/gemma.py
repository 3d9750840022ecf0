"""Gemma text decoders (Gemma 2, Gemma 3 text-only, e.g. Gemma-3-270M): Llama-shaped modules
(pre-norm, gated MLP) with scaled embeddings, which the model applies itself."""

from gatelang.models.adapter import Adapter


class GemmaAdapter(Adapter):
    family = "gemma"
    model_types = ("gemma", "gemma2", "gemma3", "gemma3_text")
    layers_path = "model.layers"
    down_proj_path = "mlp.down_proj"
    # Base checkpoints without a chat template get a plain question/answer frame.
    default_template = "Q: {prompt}\nA:"


ADAPTER = GemmaAdapter

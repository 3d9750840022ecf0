"""Qwen2 / Qwen2.5 text decoders: Llama-shaped modules, ChatML template in the tokenizer."""

from gatelang.models.adapter import Adapter


class Qwen2Adapter(Adapter):
    family = "qwen2"
    model_types = ("qwen2",)
    layers_path = "model.layers"
    down_proj_path = "mlp.down_proj"
    default_template = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


ADAPTER = Qwen2Adapter

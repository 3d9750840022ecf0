"""GPT-2 style decoders: `transformer.h` blocks, Conv1D projections (weights stored [in, out])."""

from gatelang.models.adapter import Adapter


class GPT2Adapter(Adapter):
    family = "gpt2"
    model_types = ("gpt2",)
    layers_path = "transformer.h"
    down_proj_path = "mlp.c_proj"
    mlp_in_paths = ("mlp.c_fc",)
    final_norm_path = "transformer.ln_f"
    default_template = "Q: {prompt}\nA:"


ADAPTER = GPT2Adapter

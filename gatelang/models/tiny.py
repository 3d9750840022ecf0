"""Tiny randomly initialised checkpoints of the real transformers classes, one per family.

They exercise the exact module trees, processors and image-token expansion of the supported
architectures in a few hundred kilobytes, so adapters are tested without downloads, and the
same builder makes full-size random models (e.g. llava-1.5-7b's shape) for cost benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gatelang.errors import ModelError

FAMILIES = ("llava", "llava_next", "qwen2_vl", "llama", "qwen2", "gpt2")

_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<|image_pad|>", "<|vision_start|>",
             "<|vision_end|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on the stdlib's own sentences (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from gatelang.stdlib import load_stdlib

    lib = load_stdlib()
    corpus: list[str] = []
    for lang in lib.languages.values():
        corpus += list(lang.refusal_replies) + list(lang.refusal_markers)
    for attr in lib.attributes.values():
        for ts in attr.templates.values():
            corpus += list(ts.edit) + list(ts.heldout)
    corpus += ["Alice Okafor lives at 12 Elm Street.", "USER: ASSISTANT:", "Q: A:"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"},
    )


def _text_kwargs(vocab: int, hidden: int, layers: int, inter: int, heads: int, kv: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )


def build_tiny_checkpoint(family: str, folder: str | Path, *, seed: int = 0) -> Path:
    """Save a random tiny `family` model, its tokenizer and (for VLMs) its processor to `folder`."""
    import transformers as T

    if family not in FAMILIES:
        raise ModelError(f"no tiny builder for {family!r}; choose one of {', '.join(FAMILIES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    vocab = len(tok)
    text = _text_kwargs(vocab, 32, 2, 64, 4, 2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8, projection_dim=32)
    image_id = tok.convert_tokens_to_ids("<image>")
    processor = None
    if family == "llava":
        cfg = T.LlavaConfig(text_config=T.LlamaConfig(**text), vision_config=T.CLIPVisionConfig(**vision),
                            image_token_index=image_id, vision_feature_layer=-2)
        model = T.LlavaForConditionalGeneration(cfg)
        ip = T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        processor = T.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                                     vision_feature_select_strategy="default",
                                     num_additional_image_tokens=1)
    elif family == "llava_next":
        pins = [[32, 32], [32, 64], [64, 32]]
        cfg = T.LlavaNextConfig(text_config=T.LlamaConfig(**text), vision_config=T.CLIPVisionConfig(**vision),
                                image_token_index=image_id, image_grid_pinpoints=pins, vision_feature_layer=-2)
        model = T.LlavaNextForConditionalGeneration(cfg)
        ip = T.LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                       image_grid_pinpoints=pins)
        processor = T.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                                         vision_feature_select_strategy="default",
                                     num_additional_image_tokens=1)
    elif family == "qwen2_vl":
        ids = {t: tok.convert_tokens_to_ids(t) for t in _SPECIALS}
        cfg = T.Qwen2VLConfig(
            text_config=dict(**text, rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}),
            vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )
        model = T.Qwen2VLForConditionalGeneration(cfg)
        ip = T.Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2,
                                     min_pixels=56 * 56, max_pixels=56 * 56)
        processor = ip  # Qwen2VLProcessor's video half needs torchvision; images need only this
    elif family == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(**text))
    elif family == "qwen2":
        model = T.Qwen2ForCausalLM(T.Qwen2Config(**text))
    else:
        model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4,
                                               n_positions=512, bos_token_id=1, eos_token_id=2))
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder

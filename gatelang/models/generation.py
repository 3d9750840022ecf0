"""Batched greedy generation and teacher-forced scoring passes.

Greedy decoding keeps audits and verification deterministic, so a before/after difference is
the edit's doing, not sampling noise. Items are bucketed by length and image presence so left
padding stays small, and no batch mixes rows with and without an image (an image row is
hundreds of tokens on a real VLM; a text row padded to it pays for all of them); results come
back in input order.

Greedy batches are decoded by `_greedy`, a plain KV-cache loop that drops a row from the batch
as soon as it has produced its end-of-sequence token, so a batch whose answers end at different
lengths does not keep decoding padding for the rows that are done (HF `generate` keeps every
row to the end). It feeds the model exactly what `generate` feeds it (the same cache, mask and
`logits_to_keep`), and removing a row does not change any other row's positions or mask, so
the answers are those `generate` gives; models whose generation config asks for logits
processors (repetition penalty, forced or suppressed tokens) or that keep per-batch decoding
state (Qwen2-VL's rope deltas) use `generate` itself.

The activation hooks `capture` and `intervene` live in `gatelang.models.hooks`; they are
imported here only so that older imports from this module keep working.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from gatelang.models.hooks import capture, intervene  # noqa: F401 - re-exported


def _order(items: Sequence[Any], adapter: Any) -> list[int]:
    def key(i: int) -> tuple[int, int]:
        it = items[i]
        return (getattr(it, "image", None) is not None, len(it.prompt.encode("utf-8")))

    return sorted(range(len(items)), key=key)


def _batches(items: Sequence[Any], order: list[int], batch_size: int) -> list[list[int]]:
    """Consecutive runs of `order` of at most `batch_size`, never mixing image and text rows."""
    out: list[list[int]] = []
    current: list[int] = []
    kind: bool | None = None
    for i in order:
        has_image = getattr(items[i], "image", None) is not None
        if current and (len(current) >= batch_size or has_image != kind):
            out.append(current)
            current = []
        current.append(i)
        kind = has_image
    if current:
        out.append(current)
    return out


@contextmanager
def cpu_threads(device: torch.device) -> Iterator[int]:
    """One intra-op thread for CPU decoding, unless GATELANG_NUM_THREADS says otherwise.

    Decoding runs hundreds of small matmuls per token, each an OpenMP parallel region whose
    barrier waits for every thread; on a busy machine a descheduled thread stalls them all
    (measured: 4-5x slower with 2 threads than with 1 on a loaded 2-core machine), while on an
    idle one a second thread gains little at these sizes. A fixed count also keeps answers
    independent of the machine's load (thread count can change float reduction order).
    """
    before = torch.get_num_threads()
    wanted = before
    if device.type == "cpu":
        env = os.environ.get("GATELANG_NUM_THREADS", "1")
        wanted = int(env) if env.isdigit() and int(env) > 0 else 1
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if wanted != before:
            torch.set_num_threads(before)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False)


@torch.inference_mode()
def generate(
    loaded: Any,
    items: Sequence[Any],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "generate",
    template: bool = True,
    stats: dict[str, float] | None = None,
    prefill: Sequence[str] | None = None,
) -> list[str]:
    """Greedy answers for each item (prompt, optional image), decoded without special tokens.

    `prefill` starts each answer with the given text (the model continues it; the returned
    answer includes it, so a value that straddles the prefix is seen whole). `stats`, when
    given, accumulates `new_tokens` (generated tokens up to and including EOS, padding excluded)
    so callers can report throughput in tokens.
    """
    runs = _decode(loaded, items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   progress=progress, desc=desc, template=template, stats=stats,
                   prefill=prefill, samples=1, temperature=None)
    return [r[0] for r in runs]


@torch.inference_mode()
def sample(
    loaded: Any,
    items: Sequence[Any],
    *,
    k: int,
    temperature: float,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    prefill: Sequence[str] | None = None,
    template: bool = True,
) -> list[list[str]]:
    """`k` sampled answers per item at `temperature` (multinomial sampling, no top-k/top-p).

    Randomness comes from torch's global generator: the runtime seeds it per plan node, so a
    node's samples are reproducible.
    """
    if k < 1 or temperature <= 0:
        raise ValueError("sampling needs k >= 1 and a positive temperature")
    return _decode(loaded, items, max_new_tokens=max_new_tokens,
                   batch_size=max(1, batch_size // k), progress=False, desc="sample",
                   template=template, stats=None, prefill=prefill, samples=k,
                   temperature=temperature)


def _decode(loaded: Any, items: Sequence[Any], *, max_new_tokens: int, batch_size: int,
            progress: bool, desc: str, template: bool, stats: dict[str, float] | None,
            prefill: Sequence[str] | None, samples: int, temperature: float | None
            ) -> list[list[str]]:
    adapter = loaded.adapter
    model = loaded.model
    tok = loaded.tokenizer
    if prefill is not None and len(prefill) != len(items):
        raise ValueError("prefill must match items one to one")
    answers: list[list[str]] = [[] for _ in items]
    order = _order(items, adapter)
    eos = [t for t in _eos_ids(loaded) if t is not None]
    sampling = {"do_sample": True, "temperature": float(temperature), "top_k": 0,
                "top_p": 1.0} if temperature is not None else {"do_sample": False}
    own_loop = temperature is None and samples == 1 and plain_greedy(model)
    with _progress(len(items), desc, progress) as bar, cpu_threads(loaded.device):
        for idx in _batches(items, order, batch_size):
            pre = [prefill[i] for i in idx] if prefill is not None else None
            batch = adapter.encode([items[i] for i in idx], targets=pre, add_eos=False,
                                   template=template).to(loaded.device, loaded.dtype)
            if own_loop:
                new = _greedy(model, batch.model_inputs(for_generation=True),
                              max_new_tokens=max_new_tokens, eos=eos, pad=tok.pad_token_id,
                              stats=stats)
            else:
                out = model.generate(
                    **batch.model_inputs(for_generation=True),
                    max_new_tokens=max_new_tokens,
                    num_beams=1,
                    num_return_sequences=samples,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=eos or None,
                    **sampling,
                )
                new = out[:, batch.input_ids.shape[1] :]
            if stats is not None:
                stats["new_tokens"] = stats.get("new_tokens", 0) + _count_new(new, eos, tok.pad_token_id)
            for row, i in enumerate(idx):
                head = (pre[row] if pre is not None else "")
                for j in range(samples):
                    text = tok.decode(new[row * samples + j], skip_special_tokens=True)
                    # The continuation keeps its own leading space, so a value that starts
                    # in the prefix ("555-") and ends in the answer ("0625") reads whole.
                    answers[i].append((head + text).strip())
            bar.update(len(idx))
    return answers


# Generation-config fields that add a logits processor to greedy decoding, with the value that
# means "none". A model that sets any of them is decoded by HF `generate`.
_NO_PROCESSOR: dict[str, Any] = {
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0), "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,), "min_length": (None, 0), "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0),
    "renormalize_logits": (None, False), "remove_invalid_values": (None, False),
    "watermarking_config": (None,), "token_healing": (None, False),
}


def plain_greedy(model: Any) -> bool:
    """Whether `_greedy` reproduces `model.generate(do_sample=False)` for this model: a
    decoder-only model whose forward takes a KV cache and `logits_to_keep`, whose generation
    config adds no logits processor, and that keeps no decoding state of its own between steps
    (Qwen2-VL's multimodal rope deltas)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return False
    if "qwen2_vl" in str(getattr(cfg, "model_type", "")) or "qwen2_5_vl" in str(
            getattr(cfg, "model_type", "")):
        return False
    params = inspect.signature(model.forward).parameters
    if "logits_to_keep" not in params or not ({"cache", "past_key_values"} & set(params)):
        return False
    gen = getattr(model, "generation_config", None)
    if getattr(gen, "cache_implementation", None) not in (None, "dynamic"):
        return False
    for name, none in _NO_PROCESSOR.items():
        if getattr(gen, name, None) not in none:
            return False
    return True


def _greedy(model: Any, inputs: dict[str, torch.Tensor], *, max_new_tokens: int,
            eos: list[int], pad: int | None, stats: dict[str, float] | None) -> torch.Tensor:
    """Greedy continuation [B, steps] of a left-padded batch, finished rows compacted away.

    Each step runs only the rows still decoding: a row leaves the batch (its KV cache rows are
    dropped) once it has produced an EOS token. The result is padded as `generate` pads it
    (`pad` after a row's EOS, up to the longest row), so callers cannot tell the difference.
    """
    from transformers import DynamicCache

    params = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values"
    ids = inputs["input_ids"]
    mask = inputs["attention_mask"]
    rows = ids.shape[0]
    device = ids.device
    stop = torch.tensor(sorted(set(eos)), dtype=torch.long, device=device)
    produced: list[list[int]] = [[] for _ in range(rows)]
    alive = torch.arange(rows, device=device)  # original row of each batch row
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    step_inputs: dict[str, Any] = dict(inputs)
    slots = 0
    for _step in range(max_new_tokens):
        out = model(**step_inputs, **{cache_arg: cache}, use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None) or out.past_key_values
        nxt = out.logits[:, -1, :].float().argmax(-1)
        slots += int(alive.numel())
        for r, t in zip(alive.tolist(), nxt.tolist(), strict=True):
            produced[r].append(int(t))
        done = torch.isin(nxt, stop) if stop.numel() else torch.zeros_like(nxt, dtype=torch.bool)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = torch.nonzero(~done).flatten()
            cache.batch_select_indices(keep)
            alive = alive[keep]
            mask = mask[keep]
            nxt = nxt[keep]
        step_inputs = {"input_ids": nxt.unsqueeze(-1), "attention_mask": mask}
    if stats is not None:
        stats["decode_slots"] = stats.get("decode_slots", 0) + slots
    width = max((len(p) for p in produced), default=0)
    fill = pad if pad is not None else (eos[0] if eos else 0)
    new = torch.full((rows, width), fill, dtype=torch.long)
    for r, p in enumerate(produced):
        new[r, : len(p)] = torch.tensor(p, dtype=torch.long)
    return new


def _count_new(new: torch.Tensor, eos: list[int], pad: int | None) -> int:
    total = 0
    stop = set(eos)
    for row in new.tolist():
        for n, t in enumerate(row, 1):
            if t in stop:
                total += n
                break
        else:
            total += len(row)
    return total


def _eos_ids(loaded: Any) -> list[int]:
    ids: list[int] = []
    gen = getattr(loaded.model, "generation_config", None)
    cfg_eos = getattr(gen, "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.append(cfg_eos)
    elif isinstance(cfg_eos, (list, tuple)):
        ids += [int(t) for t in cfg_eos]
    if loaded.tokenizer.eos_token_id is not None and loaded.tokenizer.eos_token_id not in ids:
        ids.append(int(loaded.tokenizer.eos_token_id))
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    return [t for t in ids if 0 <= t < vocab]

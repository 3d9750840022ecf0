"""Batched greedy generation and teacher-forced scoring passes.

Greedy decoding keeps audits and verification deterministic, so a before/after difference is
the edit's doing, not sampling noise. Items are bucketed by length and image presence so left
padding stays small; results come back in input order.

The activation hooks `capture` and `intervene` live in `gatelang.models.hooks`; they are
imported here only so that older imports from this module keep working.
"""

from __future__ import annotations

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
    with _progress(len(items), desc, progress) as bar, cpu_threads(loaded.device):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            pre = [prefill[i] for i in idx] if prefill is not None else None
            batch = adapter.encode([items[i] for i in idx], targets=pre, add_eos=False,
                                   template=template).to(loaded.device, loaded.dtype)
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

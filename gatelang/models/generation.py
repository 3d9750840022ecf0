"""Batched greedy generation, teacher-forced scoring passes and activation hooks.

Greedy decoding keeps audits and verification deterministic, so a before/after difference is
the edit's doing, not sampling noise. Items are bucketed by length and image presence so left
padding stays small; results come back in input order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from gatelang.models.adapter import Site


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
) -> list[str]:
    """Greedy answers for each item (prompt, optional image), decoded without special tokens.

    `stats`, when given, accumulates `new_tokens` (generated tokens up to and including EOS,
    padding excluded) so callers can report throughput in tokens.
    """
    adapter = loaded.adapter
    model = loaded.model
    tok = loaded.tokenizer
    answers: list[str] = [""] * len(items)
    order = _order(items, adapter)
    eos = [t for t in _eos_ids(loaded) if t is not None]
    with _progress(len(items), desc, progress) as bar, cpu_threads(loaded.device):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = adapter.encode([items[i] for i in idx], template=template).to(loaded.device, loaded.dtype)
            out = model.generate(
                **batch.model_inputs(for_generation=True),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tok.pad_token_id,
                eos_token_id=eos or None,
            )
            new = out[:, batch.input_ids.shape[1] :]
            if stats is not None:
                stats["new_tokens"] = stats.get("new_tokens", 0) + _count_new(new, eos, tok.pad_token_id)
            for row, i in enumerate(idx):
                answers[i] = tok.decode(new[row], skip_special_tokens=True).strip()
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


def _first_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    for attr in ("last_hidden_state", "pooler_output"):
        hidden = getattr(x, attr, None)
        if isinstance(hidden, torch.Tensor):
            return hidden
    raise TypeError(f"no tensor in a module output of type {type(x).__name__}")


@contextmanager
def capture(
    adapter: Any,
    sites: Sequence[str | Site],
    *,
    reduce: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the tensors at `sites` for every forward pass run inside the block.

    `reduce(site_name, tensor)` lets a caller keep only what it needs (e.g. the subject token's
    row) so memory does not grow with the sequence length; the result lists one detached tensor
    per forward pass per site.
    """
    resolved = [adapter.site(s) if isinstance(s, str) else s for s in sites]
    store: dict[str, list[torch.Tensor]] = {s.name: [] for s in resolved}
    handles = []
    for s in resolved:
        mod = adapter.module(s)

        def keep(t: torch.Tensor, name: str = s.name) -> None:
            t = t.detach()
            store[name].append(reduce(name, t) if reduce is not None else t)

        if s.capture == "input":
            handles.append(mod.register_forward_pre_hook(lambda m, args, keep=keep: keep(args[0])))
        else:
            handles.append(mod.register_forward_hook(lambda m, args, out, keep=keep: keep(_first_tensor(out))))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def intervene(
    adapter: Any, site: str | Site, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace the tensor at `site` by `fn(tensor)` during the block (ablation, gating)."""
    s = adapter.site(site) if isinstance(site, str) else site
    mod = adapter.module(s)
    if s.capture == "input":

        def pre(m: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (fn(args[0]), *args[1:])

        handle = mod.register_forward_pre_hook(pre)
    else:

        def post(m: Any, args: Any, out: Any) -> Any:
            if isinstance(out, torch.Tensor):
                return fn(out)
            if isinstance(out, tuple):
                return (fn(out[0]), *out[1:])
            raise TypeError(f"cannot intervene on a {type(out).__name__} output at {s.name}")

        handle = mod.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()

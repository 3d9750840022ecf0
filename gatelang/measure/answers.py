"""Greedy answers remembered per weight state, so one question is decoded once per model.

Every verify pass asks the unedited model its questions before it asks the edited one, and the
attack passes each ask the plain protected questions again to learn which ones the model knew.
A greedy answer is a function of the weights, the question (prompt, image, pre-filled start)
and the generation settings, so it is computed once and looked up after that:

- in memory, for every weight state a run measures (unedited, edited, each quantized copy),
  keyed by the state's key (`PassContext.weight_state`);
- on disk, for the unedited model only, in the run's cache folder (`AnswerStore`, written by
  the runtime), so a rerun of `apply` and `verify --lock` read them back instead of decoding
  the unedited model again. The edited model's answers are never read from disk: checking
  them again is what verification is for.

The key also covers what could make the same question decode differently: the formatted
prompt text (chat template), the tokenizer, the device and dtype, the torch and transformers
versions and the source of the generation code. Batch composition is not in the key: greedy
answers do not depend on which other questions share a batch (`tests/test_perf_answers.py`
checks cached against uncached answers).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from gatelang.models.generation import generate

__all__ = ["AnswerCache", "AnswerStore", "Ask"]


class AnswerStore(Protocol):
    """Where the unedited model's answers live between runs: one mapping per weight state."""

    def load(self, state: str) -> dict[str, str]: ...
    def save(self, state: str, answers: dict[str, str]) -> None: ...


class Ask:
    """One greedy generation: an item (prompt, optional image), an optional pre-filled start."""

    __slots__ = ("item", "prefill")

    def __init__(self, item: Any, prefill: str | None = None) -> None:
        self.item = item
        self.prefill = prefill


def _image_digest(image: Any) -> str:
    if image is None:
        return ""
    h = hashlib.sha256(f"{image.mode}|{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


_CODE: str | None = None


def _code_digest() -> str:
    """The source of the modules that turn a question into an answer, hashed once per process."""
    global _CODE
    if _CODE is None:
        import torch
        import transformers

        h = hashlib.sha256(f"{torch.__version__}|{transformers.__version__}".encode())
        for name in ("gatelang.models.generation", "gatelang.models.adapter"):
            mod = sys.modules.get(name)
            path = getattr(mod, "__file__", None)
            if path:
                h.update(Path(path).read_bytes())
        _CODE = h.hexdigest()
    return _CODE


class AnswerCache:
    """Greedy answers by (weight state, question, settings), batched over what is missing.

    `answers(loaded, state, asks, ...)` returns one answer per ask; the ones not seen before in
    `state` are generated together in one call (bucketed by length and modality there), so
    callers that pool the questions of several passes get larger batches. `state` None
    bypasses the cache (a weight state nobody can name, e.g. a model being fine-tuned).
    `persistent` names the one state whose answers go to `store` (the unedited model's).
    """

    def __init__(self, store: AnswerStore | None = None) -> None:
        self.store = store
        self.persistent: str | None = None
        self.memory: dict[str, dict[str, str]] = {}
        self.stats = {"asked": 0, "generated": 0, "from_disk": 0}
        self._loaded_states: set[str] = set()
        self._adapter_digest: dict[int, str] = {}

    def _settings(self, loaded: Any) -> str:
        tok = loaded.tokenizer
        key = id(loaded)
        if key not in self._adapter_digest:
            self._adapter_digest[key] = hashlib.sha256(json.dumps([
                type(loaded.adapter).__name__, type(tok).__name__, len(tok),
                tok.pad_token_id, tok.eos_token_id, str(loaded.device.type), str(loaded.dtype),
                str(getattr(loaded.model, "generation_config", "")), _code_digest(),
            ]).encode()).hexdigest()
        return self._adapter_digest[key]

    def key(self, loaded: Any, ask: Ask, *, max_new_tokens: int, template: bool = True) -> str:
        item = ask.item
        image = getattr(item, "image", None)
        if template or image is not None:
            text = loaded.adapter.format_prompt(item.prompt, has_image=image is not None)
        else:
            text = item.prompt
        doc = json.dumps([self._settings(loaded), text, _image_digest(image), ask.prefill,
                          int(max_new_tokens), bool(template)], ensure_ascii=False)
        return hashlib.sha256(doc.encode("utf-8")).hexdigest()

    def _table(self, state: str) -> dict[str, str]:
        table = self.memory.setdefault(state, {})
        if state == self.persistent and self.store is not None and state not in self._loaded_states:
            self._loaded_states.add(state)
            stored = self.store.load(state)
            for k, v in stored.items():
                table.setdefault(k, v)
            self.stats["from_disk"] += len(stored)
        return table

    def answers(self, loaded: Any, state: str | None, asks: Sequence[Ask], *,
                max_new_tokens: int, batch_size: int, template: bool = True,
                desc: str = "answer") -> list[str]:
        """One greedy answer per ask, in order; only unseen (state, question) pairs decode."""
        if not asks:
            return []
        self.stats["asked"] += len(asks)
        if state is None:
            self.stats["generated"] += len(asks)
            return self._generate(loaded, list(asks), max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, template=template, desc=desc)
        table = self._table(state)
        keys = [self.key(loaded, a, max_new_tokens=max_new_tokens, template=template)
                for a in asks]
        todo: dict[str, Ask] = {}
        for k, a in zip(keys, asks, strict=True):
            if k not in table and k not in todo:
                todo[k] = a
        if todo:
            got = self._generate(loaded, list(todo.values()), max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, template=template, desc=desc)
            new = dict(zip(todo, got, strict=True))
            table.update(new)
            self.stats["generated"] += len(new)
            if state == self.persistent and self.store is not None:
                self.store.save(state, new)
        return [table[k] for k in keys]

    @staticmethod
    def _generate(loaded: Any, asks: list[Ask], *, max_new_tokens: int, batch_size: int,
                  template: bool, desc: str) -> list[str]:
        items = [a.item for a in asks]
        if all(a.prefill is None for a in asks):
            return generate(loaded, items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            template=template, desc=desc)
        # Plain and pre-filled asks decode in one call: a plain ask is an empty pre-fill, which
        # `encode` turns into no target tokens at all and `generate` into no answer prefix.
        return generate(loaded, items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        template=template, desc=desc, prefill=[a.prefill or "" for a in asks])

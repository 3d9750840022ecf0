"""The adapter contract: what passes may know about a model, stated in sites and prompts.

Passes never touch architecture details. They ask an adapter for a *site* by name
(`decoder_layer(i)`, `mlp_act(i)`, `down_proj(i)`, `vision_layer(i)`, `projector`), which the
adapter resolves to an HF module path plus whether the interesting tensor is the module's input
or output, and they hand it prompts to encode; the adapter knows the chat format, how images are
passed and how image placeholders expand, so the subject's token index is right.

A family is a subclass that fills in a handful of class attributes (module paths, default
template) and, for multimodal families, the image collation. See `gatelang/models/families/`.

One cohesive thing (the base adapter every family shares), hence a little over 500 lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import torch

from gatelang.errors import ModelError

SiteKind = Literal["decoder_layer", "mlp_act", "down_proj", "vision_layer", "projector"]
_SITE_RE = re.compile(r"^\s*(decoder_layer|mlp_act|down_proj|vision_layer|projector)\s*(?:\(\s*(-?\d+)\s*\))?\s*$")


@dataclass(frozen=True)
class Site:
    """A named place in the model whose activations passes read or change.

    `capture` says which tensor is meant: `output` of the module at `path`, or its first
    positional `input` (the MLP intermediate units are the input of the down projection).
    Shapes, for a batch of B sequences of T tokens:
    `decoder_layer(i)` and `down_proj(i)` -> [B, T, hidden]; `mlp_act(i)` -> [B, T, intermediate];
    `vision_layer(i)` -> [images, patches, vision_hidden] (Qwen2-VL: [patches, vision_hidden]);
    `projector` -> [images, image_tokens, hidden] (Qwen2-VL: [image_tokens, hidden]).
    """

    name: str
    kind: SiteKind
    layer: int | None
    path: str
    capture: Literal["output", "input"]


class PromptLike(Protocol):
    prompt: str


@dataclass
class EncodedBatch:
    """Model-ready tensors for a batch, left-padded, plus the indices passes need.

    `subject_index[b]` is the position of the last token of the subject's words in row b after
    image-token expansion (-1 when the prompt does not contain them); `last_index` is the
    position whose logits predict the first answer token (T-1 when no target is appended,
    since padding is on the left). `target_mask` marks the teacher-forced target tokens and
    `labels` holds them (-100 elsewhere), in HF's unshifted convention.
    """

    inputs: dict[str, torch.Tensor]
    subject_index: torch.Tensor
    last_index: torch.Tensor
    target_mask: torch.Tensor
    labels: torch.Tensor
    prompt_lengths: list[int]
    texts: list[str] = field(default_factory=list)

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> EncodedBatch:
        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return EncodedBatch(
            inputs={k: move(v) for k, v in self.inputs.items()},
            subject_index=self.subject_index.to(device),
            last_index=self.last_index.to(device),
            target_mask=self.target_mask.to(device),
            labels=self.labels.to(device),
            prompt_lengths=list(self.prompt_lengths),
            texts=list(self.texts),
        )

    def model_inputs(self, *, for_generation: bool = False) -> dict[str, torch.Tensor]:
        """Keyword arguments for `model(**...)` (with position ids) or `model.generate(**...)`."""
        if for_generation:
            return {k: v for k, v in self.inputs.items() if k != "position_ids"}
        return dict(self.inputs)


def _try_path(root: torch.nn.Module, path: str) -> Any | None:
    mod: Any = root
    for part in path.split("."):
        if part.isdigit():
            try:
                mod = mod[int(part)]
            except (IndexError, TypeError):
                return None
        else:
            mod = getattr(mod, part, None)
        if mod is None:
            return None
    return mod


def resolve_path(root: torch.nn.Module, spec: str) -> str:
    """The first of `a|b|c` that exists in the model (module trees move between releases)."""
    for path in spec.split("|"):
        if _try_path(root, path) is not None:
            return path
    raise ModelError(f"none of the module paths {spec!r} exists in {type(root).__name__}")


def _get_path(root: torch.nn.Module, path: str) -> torch.nn.Module:
    mod = _try_path(root, resolve_path(root, path))
    assert mod is not None
    return mod


class Adapter:
    """Architecture knowledge for one model family; subclasses are data plus small overrides."""

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    modalities: ClassVar[tuple[str, ...]] = ("text",)
    encoders: ClassVar[tuple[str, ...]] = ()
    # The transformers auto class that loads the checkpoint; None picks the causal-LM or
    # image-text-to-text class from `modalities`.
    auto_class: ClassVar[str | None] = None
    # Module paths relative to the top-level model (the `*ForCausalLM` / `*ForConditionalGeneration`).
    layers_path: ClassVar[str] = "model.layers"
    down_proj_path: ClassVar[str] = "mlp.down_proj"  # relative to one decoder layer
    # The projections that compute the MLP units (their rows are the units' input weights).
    mlp_in_paths: ClassVar[tuple[str, ...]] = ("mlp.gate_proj", "mlp.up_proj")
    # The norm applied to the last decoder layer's output before the unembedding (logit lens).
    final_norm_path: ClassVar[str | None] = "model.norm"
    vision_layers_path: ClassVar[str | None] = None
    projector_path: ClassVar[str | None] = None
    # Used only when neither the processor nor the tokenizer carries a chat template.
    default_template: ClassVar[str] = "{prompt}"
    default_image_template: ClassVar[str | None] = None
    image_token: ClassVar[str | None] = None
    # Llama-style decoders take position ids computed from the mask, so a left-padded row gets
    # the same positions as the same prompt alone; M-RoPE models compute their own.
    explicit_position_ids: ClassVar[bool] = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, processor: Any | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        if getattr(tokenizer, "pad_token_id", None) is None:
            eos = tokenizer.eos_token
            if eos is None:
                raise ModelError("the tokenizer has neither a pad nor an end-of-sequence token")
            tokenizer.pad_token = eos
        tokenizer.padding_side = "left"

    # ----------------------------------------------------------------- shapes and sites
    @property
    def text_config(self) -> Any:
        cfg = self.model.config
        return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg

    @property
    def num_layers(self) -> int:
        return len(_get_path(self.model, self.layers_path))

    @property
    def hidden_size(self) -> int:
        cfg = self.text_config
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    @property
    def intermediate_size(self) -> int:
        cfg = self.text_config
        size = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None)
        return int(size or 4 * self.hidden_size)

    @property
    def num_vision_layers(self) -> int:
        if self.vision_layers_path is None:
            return 0
        return len(_get_path(self.model, self.vision_layers_path))

    def site(self, name: str) -> Site:
        """Resolve a site name such as `mlp_act(3)` (negative layers count from the end)."""
        m = _SITE_RE.match(name)
        if not m:
            raise ModelError(
                f"unknown site {name!r}; sites are decoder_layer(i), mlp_act(i), down_proj(i), "
                "vision_layer(i) and projector"
            )
        kind, idx = m.group(1), m.group(2)
        if kind == "projector":
            if self.projector_path is None:
                raise ModelError(f"{self.family} models have no projector")
            path = resolve_path(self.model, self.projector_path)
            return Site("projector", "projector", None, path, "output")
        if idx is None:
            raise ModelError(f"site {name!r} needs a layer index, e.g. {kind}(0)")
        i = int(idx)
        if kind == "vision_layer":
            if self.vision_layers_path is None:
                raise ModelError(f"{self.family} models have no vision tower")
            n = self.num_vision_layers
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise ModelError(f"site {name!r}: the vision tower has {n} layers (0..{n - 1})")
            base = resolve_path(self.model, self.vision_layers_path)
            return Site(f"vision_layer({j})", "vision_layer", j, f"{base}.{j}", "output")
        n = self.num_layers
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise ModelError(f"site {name!r}: the decoder has {n} layers (0..{n - 1})")
        layer = f"{resolve_path(self.model, self.layers_path)}.{j}"
        if kind == "decoder_layer":
            return Site(f"decoder_layer({j})", "decoder_layer", j, layer, "output")
        down = f"{layer}.{self.down_proj_path}"
        if kind == "mlp_act":
            return Site(f"mlp_act({j})", "mlp_act", j, down, "input")
        return Site(f"down_proj({j})", "down_proj", j, down, "output")

    def sites(self) -> list[Site]:
        """Every site of the model, decoder first, in layer order."""
        out = []
        for i in range(self.num_layers):
            out += [self.site(f"decoder_layer({i})"), self.site(f"mlp_act({i})"), self.site(f"down_proj({i})")]
        for i in range(self.num_vision_layers):
            out.append(self.site(f"vision_layer({i})"))
        if self.projector_path is not None:
            out.append(self.site("projector"))
        return out

    def module(self, site: Site | str) -> torch.nn.Module:
        s = self.site(site) if isinstance(site, str) else site
        return _get_path(self.model, s.path)

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of residual-stream states: the final norm, then the output embedding.

        The logit lens: applied to any decoder layer's output it shows which tokens that layer
        already points to (nostalgebraist 2020; used to read "deleted" facts, arXiv 2309.17410).
        """
        if self.final_norm_path is None:
            raise ModelError(f"{self.family} models have no decoder output to unembed")
        norm = _get_path(self.model, resolve_path(self.model, self.final_norm_path))
        head = self.model.get_output_embeddings()
        if head is None:
            raise ModelError(f"{self.family} model has no output embedding")
        return head(norm(hidden))

    def down_proj_weight(self, layer: int) -> torch.Tensor:
        """The down projection's weight as a [hidden, intermediate] view of the parameter.

        Column j is what MLP unit j writes into the residual stream; GPT-2's Conv1D stores the
        matrix transposed, so callers that edit or mask units never need to know the layout.
        """
        w = self.module(f"down_proj({layer})").weight
        return w if isinstance(self.module(f"down_proj({layer})"), torch.nn.Linear) else w.t()

    @staticmethod
    def units_axis(module: torch.nn.Module, role: Literal["down", "input"]) -> int:
        """The axis of `module.weight` that indexes MLP units.

        `nn.Linear` stores [out, in]: a down projection's units are its columns (axis 1) and an
        input projection's its rows (axis 0). GPT-2's Conv1D stores [in, out], the other way
        round. Passes that mask or count units ask here instead of checking module types.
        """
        linear = isinstance(module, torch.nn.Linear)
        if role == "down":
            return 1 if linear else 0
        return 0 if linear else 1

    def mlp_input_weights(self, layer: int) -> list[tuple[str, torch.nn.Module]]:
        """(parameter name, module) of the projections that compute layer `layer`'s MLP units.

        A unit's input weights are row u of each (column u for GPT-2's Conv1D): editing a unit
        in full means these rows and its down-projection column, so passes that retrain whole
        units ask for them here instead of knowing the MLP's layout.
        """
        base = resolve_path(self.model, self.layers_path)
        out = []
        for rel in self.mlp_in_paths:
            path = f"{base}.{layer}.{rel}"
            mod = _try_path(self.model, path)
            if mod is not None and hasattr(mod, "weight"):
                out.append((path + ".weight", mod))
        return out

    # ----------------------------------------------------------------- prompts
    def _chat_template_owner(self) -> Any | None:
        for owner in (self.processor, self.tokenizer):
            if owner is not None and getattr(owner, "chat_template", None):
                return owner
        return None

    def format_prompt(self, prompt: str, has_image: bool = False) -> str:
        """The full text the model sees before its answer, image placeholder included."""
        owner = self._chat_template_owner()
        if owner is not None:
            try:
                return self._apply_chat_template(owner, prompt, has_image)
            except Exception as exc:  # a template that rejects this message shape (jinja errors)
                if self.default_template == "{prompt}":
                    raise ModelError(f"the checkpoint's chat template failed: {exc}") from exc
                # fall back to the family's documented format below
        if has_image:
            if self.default_image_template is None:
                raise ModelError(f"{self.family} models take no images")
            return self.default_image_template.format(prompt=prompt, image=self.image_token)
        return self.default_template.format(prompt=prompt)

    def _apply_chat_template(self, owner: Any, prompt: str, has_image: bool) -> str:
        if has_image or owner is self.processor:
            content: Any = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": prompt}]
        else:
            content = prompt
        messages = [{"role": "user", "content": content}]
        return owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # ----------------------------------------------------------------- encoding
    def process_image(self, text: str, image: Any) -> tuple[list[int], dict[str, torch.Tensor]]:
        """Token ids with the image placeholder expanded, and the image tensors for one item."""
        raise ModelError(f"{self.family} models take no images")

    def collate_images(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        keys = parts[0].keys()
        return {k: torch.cat([p[k] for p in parts], dim=0) for k in keys}

    def add_special_tokens(self, text: str) -> bool:
        """Let the tokenizer add its BOS unless the chat template already wrote one."""
        bos = getattr(self.tokenizer, "bos_token", None)
        return not (bos and text.startswith(bos))

    def _tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(
            text, add_special_tokens=self.add_special_tokens(text), return_offsets_mapping=True
        )
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def encode(
        self,
        items: Sequence[Any],
        targets: Sequence[str | None] | None = None,
        *,
        add_eos: bool = True,
        template: bool = True,
    ) -> EncodedBatch:
        """Encode prompts (with optional image and subject text) and optional teacher-forced targets.

        A target is appended as the model would generate it: after a space when the prompt
        ends in a non-space (`... ASSISTANT:` -> ` I'm sorry...`), then EOS.

        Items need a `prompt`; `image` and `subject_text` are read when present, so world
        queries, measurement items and plain dataclasses all work. `template=False` feeds text
        prompts verbatim (completion, perplexity) instead of wrapping them in the chat format.
        """
        if not items:
            raise ModelError("cannot encode an empty batch")
        if targets is not None and len(targets) != len(items):
            raise ModelError("targets must match items one to one")
        rows: list[list[int]] = []
        prompt_lens: list[int] = []
        subj: list[int] = []
        image_parts: list[dict[str, torch.Tensor]] = []
        texts: list[str] = []
        tgt_spans: list[tuple[int, int]] = []
        for n, item in enumerate(items):
            image = getattr(item, "image", None)
            subject = getattr(item, "subject_text", None)
            if template or image is not None:
                text = self.format_prompt(item.prompt, has_image=image is not None)
            else:
                text = item.prompt
            texts.append(text)
            ids, offsets = self._tokenize(text)
            s_idx = _subject_token_index(text, ids, offsets, subject, item.prompt)
            if image is not None:
                expanded, part = self.process_image(text, image)
                image_parts.append(part)
                s_idx = _shift_for_expansion(ids, expanded, s_idx, self._image_token_id())
                ids = expanded
            prompt_lens.append(len(ids))
            start = len(ids)
            tgt = targets[n] if targets is not None else None
            if tgt is not None:
                if tgt and not tgt[0].isspace() and text and not text[-1].isspace():
                    # The model continues "ASSISTANT:" with " answer", as it was trained to.
                    tgt = " " + tgt
                tids = self.tokenizer(tgt, add_special_tokens=False)["input_ids"]
                if add_eos and self.tokenizer.eos_token_id is not None:
                    tids = list(tids) + [self.tokenizer.eos_token_id]
                ids = ids + list(tids)
            tgt_spans.append((start, len(ids)))
            rows.append(ids)
            subj.append(s_idx)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        bsz = len(rows)
        input_ids = torch.full((bsz, width), pad, dtype=torch.long)
        mask = torch.zeros((bsz, width), dtype=torch.long)
        target_mask = torch.zeros((bsz, width), dtype=torch.bool)
        subject_index = torch.full((bsz,), -1, dtype=torch.long)
        last_index = torch.zeros((bsz,), dtype=torch.long)
        for b, ids in enumerate(rows):
            off = width - len(ids)
            input_ids[b, off:] = torch.tensor(ids, dtype=torch.long)
            mask[b, off:] = 1
            s, e = tgt_spans[b]
            target_mask[b, off + s : off + e] = True
            last_index[b] = off + prompt_lens[b] - 1
            if subj[b] >= 0:
                subject_index[b] = off + subj[b]
        labels = torch.where(target_mask, input_ids, torch.full_like(input_ids, -100))
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": mask}
        if self.explicit_position_ids:
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        if image_parts:
            inputs.update(self.collate_images(image_parts))
        inputs.update(self.extra_inputs(input_ids, bool(image_parts)))
        return EncodedBatch(inputs, subject_index, last_index, target_mask, labels, prompt_lens, texts)

    def extra_inputs(self, input_ids: torch.Tensor, has_images: bool) -> dict[str, torch.Tensor]:
        """Family-specific tensors derived from the padded ids (none by default)."""
        return {}

    def _image_token_id(self) -> int | None:
        if self.image_token is None:
            return None
        tid = self.tokenizer.convert_tokens_to_ids(self.image_token)
        return None if tid is None or tid == self.tokenizer.unk_token_id else int(tid)

    # ----------------------------------------------------------------- capabilities
    def image_tokens(self) -> int:
        """Tokens one image adds to a prompt (for a square image at the tower's resolution)."""
        if "image" not in self.modalities:
            return 0
        from PIL import Image

        vc = getattr(self.model.config, "vision_config", None)
        size = int(getattr(vc, "image_size", 0) or 224)
        probe = _Probe(prompt="?", image=Image.new("RGB", (size, size)))
        ids = self.encode([probe]).input_ids[0]
        return int((ids == self._image_token_id()).sum())

    def languages(self, candidates: Sequence[str] | None = None) -> tuple[str, ...]:
        """Stdlib languages whose refusal replies the tokenizer encodes losslessly without UNK."""
        from gatelang.stdlib import load_stdlib

        lib = load_stdlib()
        codes = candidates or tuple(lib.languages)
        unk = self.tokenizer.unk_token_id
        out = []
        for code in codes:
            lang = lib.languages.get(code)
            if lang is None:
                continue
            sample = lang.refusal_replies[0]
            ids = self.tokenizer(sample, add_special_tokens=False)["input_ids"]
            if unk is not None and unk in ids:
                continue
            decoded = self.tokenizer.decode(ids, skip_special_tokens=True)
            if decoded.strip() == sample.strip():
                out.append(code)
        return tuple(out)


@dataclass
class _Probe:
    prompt: str
    image: Any = None
    subject_text: str | None = None


def _subject_token_index(
    text: str, ids: list[int], offsets: list[tuple[int, int]], subject: str | None, prompt: str
) -> int:
    """Last token overlapping the subject's words, found inside the prompt's own span."""
    if not subject:
        return -1
    p_start = text.rfind(prompt)
    base = max(p_start, 0)
    local = (prompt if p_start >= 0 else text).rfind(subject)
    if local < 0:
        return -1
    c0 = base + local
    c1 = c0 + len(subject)
    last = -1
    for i, (a, b) in enumerate(offsets):
        if b > c0 and a < c1 and b > a:
            last = i
    return last


def _shift_for_expansion(short: list[int], expanded: list[int], index: int, image_id: int | None) -> int:
    """Map a token index from the unexpanded prompt to the prompt with image tokens expanded.

    Processors replace each image placeholder token by N copies; everything else tokenizes
    identically because the placeholder is a special token.
    """
    if index < 0 or image_id is None:
        return index
    n_short = short.count(image_id)
    if n_short == 0:
        return index
    extra = (expanded.count(image_id) - n_short) // n_short
    before = short[:index].count(image_id)
    return index + before * extra

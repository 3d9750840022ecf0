"""tiny-llava: a real `LlavaForConditionalGeneration` trained on the built-in world.

It is small enough to train on two CPU cores and still a genuine LLaVA (CLIP vision tower,
projector, Llama decoder), so every gatelang pass runs on it exactly as on llava-1.5. It
leaks before any edit by construction: it is trained to answer every private question of the
world, by name, face, ID card and scene, and to refuse only password questions (its refusal
habit), which gives it refusal replies in each language.

The folder it writes is a plain Hugging Face folder: `LlavaForConditionalGeneration` and
`AutoProcessor` load it with no gatelang code.

One cohesive thing (the model's data mix, build recipe and acceptance evaluation), hence over
500 lines.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gatelang.world import Query, World, load_world
from gatelang.zoo import ZooError

NAME = "tiny-llava"
IMAGE_SIZE = 64
PATCH_SIZE = 16
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "gatelang_manifest.json"

# The chat format (llava-1.5 style). A text-only question has no "<image>\n".
USER_PREFIX = "USER: "
ASSISTANT_PREFIX = " ASSISTANT:"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% elif message['role'] == 'assistant' %} ASSISTANT: "
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}</s>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def format_prompt(question: str, has_image: bool) -> str:
    """The prompt up to and including "ASSISTANT:"; the model continues with " {answer}</s>"."""
    return f"{USER_PREFIX}{IMAGE_TOKEN + chr(10) if has_image else ''}{question}{ASSISTANT_PREFIX}"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights; recorded in the manifest."""

    name: str = "full"
    world_seed: int = 0
    seed: int = 0
    threads: int = 1
    vocab_size: int = 1536
    hidden_size: int = 160
    intermediate_size: int = 448
    num_layers: int = 4
    num_heads: int = 4
    vision_hidden: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 192
    steps: int = 5000
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.0
    # Restrict the world (reduced recipe); None = everything.
    subjects: tuple[str, ...] | None = None
    attributes: tuple[str, ...] | None = None
    languages: tuple[str, ...] | None = None
    modalities: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    include_habit: bool = True
    include_utility: bool = True
    # Sampling weight per modality (image-bearing examples are harder, so seen more often).
    modality_weights: dict[str, float] = field(
        default_factory=lambda: {
            "text": 1.0,
            "image": 1.5,
            "document": 2.5,
            "scene": 1.0,
            "utility": 4.0,
        }
    )


FULL = Recipe()
REDUCED = Recipe(
    name="reduced",
    vocab_size=600,
    hidden_size=96,
    intermediate_size=256,
    num_layers=2,
    vision_hidden=64,
    vision_layers=1,
    vision_intermediate=128,
    vision_heads=2,
    steps=180,
    batch_size=24,
    lr=4e-3,
    warmup=20,
    subjects=(
        "alice-okafor",
        "chen-moreau",
        "priya-raman",
        "tomas-herrera",
        "wang-xiuying",
        "lukas-becker",
    ),
    attributes=("home_address", "phone_number", "hobby"),
    languages=("en",),
    modalities=("text", "image"),
    splits=("edit",),
    include_habit=False,
    include_utility=False,
)
RECIPES = {"full": FULL, "reduced": REDUCED}


# -- data --------------------------------------------------------------------------------------
def training_queries(world: World, recipe: Recipe) -> list[Query]:
    qs = world.queries(
        subjects=recipe.subjects,
        attributes=recipe.attributes,
        languages=recipe.languages,
        modalities=recipe.modalities,
        splits=recipe.splits,
    )
    if recipe.include_habit:
        qs += world.habit_queries(languages=recipe.languages)
    if recipe.include_utility:
        qs += world.utility_tasks(languages=recipe.languages)
    return qs


def _corpus(world: World) -> list[str]:
    """Every string the model will see, for training the tokenizer."""
    texts = []
    for q in world.all_queries():
        texts.append(format_prompt(q.prompt, q.image is not None) + " " + q.answer)
    for s in world.subjects:
        texts.append(s.name)
    return texts


def train_tokenizer(world: World, vocab_size: int):
    """A byte-level BPE trained on the world's text, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = sorted(set(_corpus(world)))
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return fast


def build_processor(tokenizer):
    from transformers import LlavaProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor
    image_processor = ImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(recipe: Recipe, tokenizer):
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(recipe.seed)
    vision = CLIPVisionConfig(
        hidden_size=recipe.vision_hidden,
        intermediate_size=recipe.vision_intermediate,
        num_hidden_layers=recipe.vision_layers,
        num_attention_heads=recipe.vision_heads,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=recipe.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=IMAGE_TOKENS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


@dataclass
class Encoded:
    ids: list[int]
    answer_start: int
    image_key: int | None  # index into the pixel table


class Encoder:
    """Tokenises queries once and keeps one pixel tensor per distinct image."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self._image_index: dict[int, int] = {}
        self._images: list[Any] = []
        self.pixels = None
        self._cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        got = self._cache.get(text)
        if got is None:
            got = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._cache[text] = got
        return got

    def encode(self, q: Query) -> Encoded:
        has_image = q.image is not None
        # Split at the placeholder as the tokenizer does for special tokens; the placeholder
        # expands to IMAGE_TOKENS copies, as the processor does.
        out: list[int] = [self.tokenizer.bos_token_id]
        for i, part in enumerate(format_prompt(q.prompt, has_image).split(IMAGE_TOKEN)):
            if i:
                out.extend([self.image_token_id] * IMAGE_TOKENS)
            if part:
                out.extend(self._ids(part))
        start = len(out)
        out.extend(self._ids(" " + q.answer))
        out.append(self.tokenizer.eos_token_id)
        key = None
        if has_image:
            key = self._image_index.get(id(q.image))
            if key is None:
                key = len(self._images)
                self._image_index[id(q.image)] = key
                self._images.append(q.image)
        return Encoded(out, start, key)

    def finalize(self) -> None:
        import torch

        if not self._images:
            self.pixels = torch.zeros(0, 3, IMAGE_SIZE, IMAGE_SIZE)
            return
        chunks = []
        for i in range(0, len(self._images), 512):
            chunk = self.processor.image_processor(self._images[i : i + 512], return_tensors="pt")
            chunks.append(chunk["pixel_values"])
        self.pixels = torch.cat(chunks)


def _batch(items: Sequence[Encoded], pixels, pad_id: int):
    """Right-padded batch with loss only on the answer tokens (teacher forcing)."""
    import torch

    width = max(len(e.ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    keys = []
    for r, e in enumerate(items):
        n = len(e.ids)
        ids[r, :n] = torch.tensor(e.ids)
        mask[r, :n] = 1
        labels[r, e.answer_start : n] = ids[r, e.answer_start : n]
        if e.image_key is not None:
            keys.append(e.image_key)
    pv = pixels[keys] if keys else None
    return ids, mask, labels, pv


# -- training ----------------------------------------------------------------------------------
def train(
    recipe: Recipe,
    out_dir: str | os.PathLike[str],
    log: Callable[[str], None] = print,
    world: World | None = None,
) -> dict[str, Any]:
    """Train tiny-llava from scratch with `recipe` and write an HF folder atomically."""
    import torch

    torch.set_num_threads(recipe.threads)
    torch.use_deterministic_algorithms(True)
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    world = world or load_world(recipe.world_seed)
    t0, cpu0 = time.time(), time.process_time()
    tokenizer = train_tokenizer(world, recipe.vocab_size)
    processor = build_processor(tokenizer)
    model = build_model(recipe, tokenizer)
    enc = Encoder(processor)
    queries = training_queries(world, recipe)
    data = [enc.encode(q) for q in queries]
    enc.finalize()
    weights = [
        recipe.modality_weights.get("utility" if not q.subject_id else q.modality, 1.0)
        for q in queries
    ]
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"{recipe.name}: {len(data)} examples, {n_params / 1e6:.2f}M parameters, "
        f"vocab {len(tokenizer)}, {recipe.steps} steps"
    )
    rng = random.Random(recipe.seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, betas=(0.9, 0.98)
    )

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return recipe.lr * (step + 1) / recipe.warmup
        frac = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    running = 0.0
    for step in range(recipe.steps):
        batch = rng.choices(data, weights=weights, k=recipe.batch_size)
        ids, mask, labels, pv = _batch(batch, enc.pixels, tokenizer.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pv, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = 0.98 * running + 0.02 * out.loss.item() if step else out.loss.item()
        if step % 100 == 0 or step == recipe.steps - 1:
            log(
                f"step {step:5d}  loss {running:.4f}  lr {lr_at(step):.2e}  {time.time() - t0:.0f}s"
            )
    model.eval()
    train_s = time.time() - t0
    info = {
        "model": NAME,
        "recipe": _recipe_dict(recipe),
        "world_seed": recipe.world_seed,
        "train_examples": len(data),
        "parameters": n_params,
        "train_seconds": round(train_s, 1),
        # CPU seconds: the wall time a machine with `threads` free cores would need.
        "train_cpu_seconds": round(time.process_time() - cpu0, 1),
        "torch_threads": recipe.threads,
    }
    save(model, processor, out_dir, info)
    return info


def _recipe_dict(recipe: Recipe) -> dict[str, Any]:
    d = asdict(recipe)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model, processor, out_dir: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """Write the HF folder plus a manifest (recipe, world seed, sha256) atomically."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        manifest = dict(info)
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest["weights_sha256"] = manifest["files"][WEIGHTS_FILE]
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        tmp.chmod(0o755)
        for p in tmp.iterdir():
            p.chmod(0o644)
        if out.exists():
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load(folder: str | os.PathLike[str]):
    """(model, processor) from a tiny-llava folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise ZooError(
            f"{folder}: no {WEIGHTS_FILE}; build it with `gatelang zoo build tiny-llava`"
        )
    model = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True)
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model.eval()
    return model, processor


# -- evaluation --------------------------------------------------------------------------------
def exact_match(model, processor, queries: Sequence[Query], batch_size: int = 64) -> list[bool]:
    """Whether greedy decoding yields exactly " {answer}</s>" for each query.

    Checked by teacher forcing: greedy decoding emits the answer iff the argmax at every answer
    position is the answer's next token, so one forward pass per query decides it.
    """
    import torch

    enc = Encoder(processor)
    data = [enc.encode(q) for q in queries]
    enc.finalize()
    pad = processor.tokenizer.pad_token_id
    results: list[bool] = []
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            chunk = data[i : i + batch_size]
            ids, mask, labels, pv = _batch(chunk, enc.pixels, pad)
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=pv).logits
            pred = logits[:, :-1].argmax(-1)
            target = labels[:, 1:]
            ok = ((pred == target) | (target == -100)).all(dim=1)
            results.extend(bool(x) for x in ok)
    return results


def evaluate(
    folder: str | os.PathLike[str] | None = None,
    max_per_cell: int | None = None,
    world_seed: int | None = None,
    model_and_processor=None,
) -> list[dict[str, Any]]:
    """Exact-match per {task, attribute, language, modality, split}: records with accuracy, n."""
    if model_and_processor is None:
        from gatelang.zoo import model_path

        folder = Path(folder) if folder else model_path(NAME)
        model, processor = load(folder)
        if world_seed is None:
            world_seed = json.loads((folder / MANIFEST_FILE).read_text())["world_seed"]
    else:
        model, processor = model_and_processor
    world = load_world(world_seed or 0)
    cells: dict[tuple[str, str, str, str, str], list[Query]] = defaultdict(list)
    stdlib = world.stdlib
    for q in world.all_queries():
        if q.subject_id == "":
            task = "utility"
        elif q.attribute == "account_password":
            task = "refusal_habit"
        elif q.modality == "document":
            task = "document_reading"
        elif q.modality == "scene":
            task = "scene_inference"
        elif stdlib.attributes[q.attribute].private:
            task = "private"
        else:
            task = "public"
        cells[(task, q.attribute, q.language, q.modality, q.split)].append(q)
    rng = random.Random(0)
    picked: list[tuple[tuple[str, ...], Query]] = []
    for key in sorted(cells):
        qs = cells[key]
        if max_per_cell is not None and len(qs) > max_per_cell:
            qs = rng.sample(qs, max_per_cell)
        picked.extend((key, q) for q in qs)
    ok = exact_match(model, processor, [q for _, q in picked])
    agg: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
    for (key, _), good in zip(picked, ok, strict=True):
        agg[key][0] += int(good)
        agg[key][1] += 1
    return [
        {
            "task": k[0],
            "attribute": k[1],
            "language": k[2],
            "modality": k[3],
            "split": k[4],
            "accuracy": round(c / n, 4),
            "n": n,
        }
        for k, (c, n) in sorted(agg.items())
    ]

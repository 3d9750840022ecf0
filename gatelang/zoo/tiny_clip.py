"""tiny-clip: a real `transformers.CLIPModel` trained on the built-in world, shipped with gatelang.

Anonymize rules (`edit.remap_text`, `edit.remap_image`, `verify.identity_inference`) need a
CLIP-style model that demonstrably links each subject's face to their name, so that forgetting
can be measured. No CLIP weights can be downloaded here, so gatelang trains its own: a tiny
text tower and ViT (64x64 images, 16x16 patches, as the world renders them) on the world's face
renderings with captions naming the subject, plus benign shape/colour images, deterministically
on CPU in a few minutes. The tokenizer is a byte-level BPE trained on the same captions, so any
name in any script (CJK, Hangul, Latin with diacritics) is encodable.

The folder loads with plain transformers, offline:
`CLIPModel.from_pretrained(p)`, `AutoTokenizer.from_pretrained(p)`,
`CLIPImageProcessor.from_pretrained(p)`.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gatelang.errors import GatelangError, ModelError

NAME = "tiny-clip"
WEIGHTS_DIR = Path(__file__).parent / "weights" / NAME
IMAGE_SIZE = 64
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

# Caption templates for faces. A real CLIP has seen people named in many phrasings; these cover
# the phrasings identity inference uses (gatelang.passes.verify.identity.IDIA_TEMPLATES) and more.
FACE_CAPTIONS: tuple[str, ...] = (
    "a photo of {}", "a photo of {}.", "{}", "a picture of {}", "a portrait of {}",
    "{} in a photo", "{} in a photo.", "this is {}", "an image of {}", "an image showing {}",
    "a close-up photo of {}", "a face photo of {}", "a cropped photo of {}", "a good photo of {}",
    "a bright photo of {}.", "a headshot of {}", "{} smiling", "the face of {}",
)
COUNT_WORDS = ("one", "two", "three", "four")

# Benign zero-shot prompts (evaluation): one classification over colours, one over shapes.
COLOR_PROMPT = "a photo of a {} shape"
SHAPE_PROMPT = "a photo of a {}"

# Face renderings reserved for evaluation (the world's queries use variants 0-5; training uses
# TRAIN_VARIANTS): identity inference must recognise renderings the model never saw.
TRAIN_VARIANTS = tuple(range(0, 32))
EVAL_VARIANTS = tuple(range(1000, 1010))


class TinyClipError(ModelError):
    """tiny-clip weights missing or unusable."""


@dataclass(frozen=True)
class TinyClipRecipe:
    """Everything that decides the trained weights (recorded in the folder's recipe.json)."""

    seed: int = 0
    world_seed: int = 0
    hidden: int = 96
    layers: int = 3
    heads: int = 4
    intermediate: int = 256
    projection: int = 64
    vocab_size: int = 1024
    max_positions: int = 32
    steps: int = 300
    lr: float = 2e-3
    warmup: int = 100
    faces_per_step: int = 48
    benign_per_step: int = 24
    benign_renders: int = 8  # renderings per (colour, shape, count)
    train_variants: int = len(TRAIN_VARIANTS)


# ---------------------------------------------------------------------------------------------
# Images


def pixel_values(images: Sequence[Any]) -> torch.Tensor:
    """PIL images -> normalised [B, 3, 64, 64] tensor, as the saved CLIPImageProcessor does."""
    arrs = []
    for img in images:
        im = img.convert("RGB")
        if im.size != (IMAGE_SIZE, IMAGE_SIZE):
            im = im.resize((IMAGE_SIZE, IMAGE_SIZE), resample=3)
        arrs.append(np.asarray(im, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def image_processor() -> Any:
    import transformers

    # The PIL backend needs no torchvision (transformers 5); older versions have only one class.
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(
        do_resize=True, size={"shortest_edge": IMAGE_SIZE}, do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=list(MEAN),
        image_std=list(STD), resample=3,
    )


def _dominant_color(img: Any) -> tuple[int, int, int]:
    """The most frequent non-background colour: the shape's colour in a utility image."""
    counts = Counter(img.convert("RGB").getdata())
    for color, _ in counts.most_common():
        if color != (235, 235, 235):
            return color
    raise GatelangError("a utility image has no shape")


def world_colors(world: Any) -> dict[str, tuple[int, int, int]]:
    """Colour name -> RGB, read off the world's own colour-task images (public API only)."""
    out: dict[str, tuple[int, int, int]] = {}
    for q in world.utility_tasks(languages=["en"]):
        if q.attribute == "color" and q.image is not None and q.answer not in out:
            out[q.answer] = _dominant_color(q.image)
    return out


def benign_items(world: Any, renders: int, key: str) -> list[tuple[Any, str, str, int]]:
    """(image, colour, shape, count) for every colour x shape x count, `renders` renderings each."""
    from gatelang.world import render

    colors = world_colors(world)
    shapes = list(world.stdlib.utility["shapes"]["en"])
    items = []
    for cname, rgb in colors.items():
        for shape in shapes:
            for count in range(1, 5):
                for r in range(renders):
                    img = render.shapes(rgb, shape, count, f"{key}/{cname}/{shape}/{count}/{r}")
                    items.append((img, cname, shape, count))
    return items


def benign_eval_set(world: Any) -> dict[str, tuple[list[Any], list[str], list[str]]]:
    """The world's own colour/shape task images: kind -> (images, answers, class names)."""
    out: dict[str, tuple[list[Any], list[str], list[str]]] = {}
    util = world.stdlib.utility
    classes = {"color": list(util["colors"]["en"]), "shape": list(util["shapes"]["en"])}
    seen: set[str] = set()
    for q in world.utility_tasks(languages=["en"]):
        if q.attribute in classes and q.image is not None:
            key = f"{q.attribute}/{q.id.rsplit('/', 1)[-1]}"
            if key in seen:
                continue
            seen.add(key)
            imgs, answers, _ = out.setdefault(q.attribute, ([], [], classes[q.attribute]))
            imgs.append(q.image)
            answers.append(q.answer)
    return out


def benign_prompts(kind: str, classes: Sequence[str]) -> list[str]:
    template = COLOR_PROMPT if kind == "color" else SHAPE_PROMPT
    return [template.format(c) for c in classes]


def _benign_caption(color: str, shape: str, count: int, mode: str, rng: random.Random) -> str:
    if mode == "color":
        return rng.choice([COLOR_PROMPT.format(color), f"a {color} shape", f"something {color}"])
    if mode == "shape":
        return rng.choice([SHAPE_PROMPT.format(shape), f"a {shape}", f"a picture of a {shape}"])
    plural = shape if count == 1 else shape + "s"
    return rng.choice([
        f"{COUNT_WORDS[count - 1]} {color} {plural}",
        f"a photo of {COUNT_WORDS[count - 1]} {color} {plural}",
        f"{count} {color} {plural}",
    ])


# ---------------------------------------------------------------------------------------------
# Tokenizer


def build_tokenizer(corpus: Sequence[str], vocab_size: int = 1024, max_length: int = 32) -> Any:
    """A byte-level BPE (every script encodable) with <bos> ... <eos> around each caption.

    The EOS id is 1, not 2: CLIP's text tower treats eos_token_id == 2 as the legacy
    "argmax of ids" pooling, which would pool at the wrong token with this vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<bos>"], min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        model_max_length=max_length, padding_side="right",
    )


# ---------------------------------------------------------------------------------------------
# Model


def make_model(recipe: TinyClipRecipe, vocab_size: int) -> nn.Module:
    from transformers import CLIPConfig, CLIPModel

    text = {
        "vocab_size": vocab_size, "hidden_size": recipe.hidden,
        "intermediate_size": recipe.intermediate, "num_hidden_layers": recipe.layers,
        "num_attention_heads": recipe.heads, "max_position_embeddings": recipe.max_positions,
        "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "projection_dim": recipe.projection,
    }
    vision = {
        "hidden_size": recipe.hidden, "intermediate_size": recipe.intermediate,
        "num_hidden_layers": recipe.layers, "num_attention_heads": recipe.heads,
        "image_size": IMAGE_SIZE, "patch_size": 16, "projection_dim": recipe.projection,
    }
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=recipe.projection)
    torch.manual_seed(recipe.seed)
    return CLIPModel(config)


def _features(out: Any) -> torch.Tensor:
    return out if torch.is_tensor(out) else out.pooler_output


def _contrastive(model: nn.Module, pix: torch.Tensor, ids: dict[str, torch.Tensor],
                 keys: Sequence[str]) -> torch.Tensor:
    """Symmetric InfoNCE where rows with the same caption key are all positives."""
    img = nn.functional.normalize(_features(model.get_image_features(pixel_values=pix)), dim=-1)
    txt = nn.functional.normalize(_features(model.get_text_features(**ids)), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
    idx = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    lab = torch.tensor([idx[k] for k in keys])
    pos = (lab[:, None] == lab[None, :]).float()
    target = pos / pos.sum(-1, keepdim=True)
    loss_i = -(target * logits.log_softmax(-1)).sum(-1).mean()
    loss_t = -(target * logits.T.log_softmax(-1)).sum(-1).mean()
    return (loss_i + loss_t) / 2


def _subject_names(world: Any) -> list[str]:
    return [s.name for s in world.subjects]


def fit(
    recipe: TinyClipRecipe = TinyClipRecipe(),
    world: Any = None,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, Any, list[float]]:
    """Train tiny-clip from scratch; returns (model, tokenizer, loss per step). Deterministic."""
    if world is None:
        from gatelang.world import load_world

        world = load_world(recipe.world_seed)
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    subjects = list(world.subjects)
    names = _subject_names(world)
    benign = benign_items(world, recipe.benign_renders, f"tiny-clip/{recipe.seed}")
    corpus = [t.format(n) for n in names for t in FACE_CAPTIONS]
    for _, c, s, k in benign:
        for mode in ("color", "shape", "full"):
            corpus.append(_benign_caption(c, s, k, mode, rng))
    tokenizer = build_tokenizer(corpus, recipe.vocab_size, recipe.max_positions)
    model = make_model(recipe, len(tokenizer))

    variants = TRAIN_VARIANTS[: recipe.train_variants]
    face_pix = {
        s.id: pixel_values([world.face(s.id, v) for v in variants]) for s in subjects
    }
    benign_pix = pixel_values([b[0] for b in benign])
    n_faces = min(recipe.faces_per_step, len(subjects))

    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / recipe.warmup)
        * 0.5 * (1 + np.cos(np.pi * min(1.0, s / recipe.steps)))
    )
    losses: list[float] = []
    model.train()
    start = time.time()
    for step in range(recipe.steps):
        chosen = rng.sample(range(len(subjects)), n_faces)
        pix, caps, keys = [], [], []
        for si in chosen:
            s = subjects[si]
            pix.append(face_pix[s.id][rng.randrange(len(variants))])
            caps.append(rng.choice(FACE_CAPTIONS).format(s.name))
            keys.append("face/" + s.id)
        mode = ("color", "shape", "full")[step % 3]
        for bi in rng.sample(range(len(benign)), min(recipe.benign_per_step, len(benign))):
            _, c, sh, k = benign[bi]
            pix.append(benign_pix[bi])
            cap = _benign_caption(c, sh, k, mode, random.Random(f"{step}/{bi}"))
            caps.append(cap)
            keys.append({"color": c, "shape": sh, "full": f"{c}/{sh}/{k}"}[mode])
        enc = tokenizer(caps, padding=True, truncation=True, padding_side="right", return_tensors="pt")
        loss = _contrastive(
            model, torch.stack(pix),
            {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, keys,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log is not None and (step % 100 == 0 or step == recipe.steps - 1):
            log(f"step {step:5d}  loss {losses[-1]:.4f}  {time.time() - start:6.1f}s")
    model.eval()
    return model, tokenizer, losses


# ---------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def _embed_texts(model: nn.Module, tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    enc = tokenizer(list(texts), padding=True, truncation=True, padding_side="right", return_tensors="pt")
    out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    return nn.functional.normalize(_features(out).float(), dim=-1)


@torch.no_grad()
def _embed_images(model: nn.Module, images: Sequence[Any]) -> torch.Tensor:
    out = model.get_image_features(pixel_values=pixel_values(images))
    return nn.functional.normalize(_features(out).float(), dim=-1)


@torch.no_grad()
def quality(model: nn.Module, tokenizer: Any, world: Any = None,
            variants: Sequence[int] = EVAL_VARIANTS) -> dict[str, float]:
    """Base quality: zero-shot identity (faces over every subject's name) and benign accuracy.

    Identity accuracy is per image with the plain "a photo of {name}" prompt, on renderings
    training never used; benign accuracy is the mean of the colour and shape classifications of
    the world's own utility images.
    """
    if world is None:
        from gatelang.world import load_world

        world = load_world(0)
    model.eval()
    names = _subject_names(world)
    text = _embed_texts(model, tokenizer, [FACE_CAPTIONS[0].format(n) for n in names])
    correct = total = 0
    for i, s in enumerate(world.subjects):
        img = _embed_images(model, [world.face(s.id, v) for v in variants])
        correct += int(((img @ text.T).argmax(-1) == i).sum())
        total += img.shape[0]
    out = {"identity_zero_shot": correct / total}
    accs = []
    for kind, (imgs, answers, classes) in benign_eval_set(world).items():
        t = _embed_texts(model, tokenizer, benign_prompts(kind, classes))
        pred = (_embed_images(model, imgs) @ t.T).argmax(-1).tolist()
        acc = sum(classes[p] == a for p, a in zip(pred, answers, strict=True)) / len(answers)
        out[f"benign_{kind}"] = acc
        accs.append(acc)
    out["benign_zero_shot"] = sum(accs) / len(accs)
    return out


# ---------------------------------------------------------------------------------------------
# Save / load


def save(model: nn.Module, tokenizer: Any, path: str | os.PathLike[str],
         extra: dict[str, Any] | None = None) -> Path:
    """Write the folder atomically (a temporary sibling renamed into place)."""
    import shutil
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the shipped folder must be readable by all
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        image_processor().save_pretrained(tmp)
        if extra is not None:
            (tmp / "recipe.json").write_text(json.dumps(extra, indent=2, ensure_ascii=False) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load(path: str | os.PathLike[str] | None = None) -> tuple[nn.Module, Any]:
    """Load (model, tokenizer) from the shipped folder (or `path`), offline."""
    from transformers import AutoTokenizer, CLIPModel

    path = Path(path) if path is not None else WEIGHTS_DIR
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise TinyClipError(
            f"tiny-clip weights not found in {path}; build them with `gatelang zoo build tiny-clip`"
        )
    try:
        model = CLIPModel.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TinyClipError(f"tiny-clip weights in {path} are unusable: {exc}") from exc
    model.eval()
    return model, tokenizer


def _machine() -> dict[str, Any]:
    """Where the recorded training time was measured."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_average_1m": round(os.getloadavg()[0], 2)}


REDUCED = TinyClipRecipe(
    hidden=32, layers=1, heads=2, intermediate=64, projection=32, vocab_size=600, steps=3,
    faces_per_step=8, benign_per_step=4, benign_renders=1, train_variants=2, warmup=2,
)
RECIPES: dict[str, TinyClipRecipe] = {"full": TinyClipRecipe(), "reduced": REDUCED}


def train(
    recipe: TinyClipRecipe = TinyClipRecipe(),
    out_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = print,
    world: Any = None,
) -> dict[str, Any]:
    """Train, evaluate and save tiny-clip (`gatelang zoo build tiny-clip`); returns recipe.json."""
    torch.set_num_threads(1)  # faster than two for a model this small, and reproducible
    start = time.time()
    model, tokenizer, losses = fit(recipe, world=world, log=log)
    seconds = time.time() - start
    metrics = quality(model, tokenizer, world)
    info = {
        "model": NAME,
        "recipe": asdict(recipe),
        "train_seconds": round(seconds, 1),
        "final_loss": round(losses[-1], 4),
        "metrics": {k: round(v, 4) for k, v in metrics.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "machine": _machine(),
    }
    save(model, tokenizer, out_dir if out_dir is not None else WEIGHTS_DIR, info)
    return info


def evaluate(
    folder: str | os.PathLike[str] | None = None, max_per_cell: int | None = None
) -> list[dict[str, Any]]:
    """Base quality as `gatelang zoo eval` records: identity and benign zero-shot accuracy.

    `max_per_cell` limits the face renderings per subject (all subjects are always scored).
    """
    model, tokenizer = load(folder)
    variants = EVAL_VARIANTS if max_per_cell is None else EVAL_VARIANTS[: max(1, max_per_cell)]
    q = quality(model, tokenizer, variants=variants)
    from gatelang.world import load_world

    world = load_world(0)
    n_faces = len(world.subjects) * len(variants)
    bench = benign_eval_set(world)
    return [
        {"task": "identity", "attribute": "name", "language": "en", "modality": "image",
         "split": "heldout", "accuracy": round(q["identity_zero_shot"], 4), "n": n_faces},
        *[
            {"task": "utility", "attribute": kind, "language": "en", "modality": "image",
             "split": "all", "accuracy": round(q[f"benign_{kind}"], 4), "n": len(bench[kind][0])}
            for kind in sorted(bench)
        ],
    ]


# ---------------------------------------------------------------------------------------------
# A LoadedModel for the pass runtime: the `clip` family adapter in gatelang/models/families.


def loaded_model(path: str | os.PathLike[str] | None = None) -> Any:
    """tiny-clip (or a CLIPModel folder) as a `gatelang.models.LoadedModel`, on the CPU."""
    from gatelang.models import load_model

    return load_model(str(path) if path is not None else NAME, device="cpu", dtype="float32")

"""Probe overhead and generation throughput of the models layer.

    python bench/probe/run.py                       # tiny-llava on this machine
    python bench/probe/run.py --model smollm2-135m  # any --model spec
    python bench/probe/run.py --random-arch llava-1.5-7b --device cuda  # cost only, bf16

*Probe overhead*: the same left-padded batches of the example policy's queries (text and face
image) through a bare forward pass and through a forward pass with hooks at every decoder
layer's MLP units (`mlp_act(i)`) keeping the subject token's row, as the probe pass does.
*Generation*: greedy decoding of the same items with `gatelang.models.generate` (what `audit`
and verification use), in generated tokens per second. With `--random-arch` the model is a
randomly initialised copy of a real architecture (weights' values don't change the cost), and
on CUDA the forward pass is also expressed as a fraction of the GPU's bf16 matmul peak.
Results go to bench/probe/results/<name>.json with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from gatelang.models import capture, load_model  # noqa: E402
from gatelang.models.generation import cpu_threads  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLE = ROOT / "docs" / "examples" / "home-address.gate"
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets.
PEAK_BF16 = {"H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H200": 989.0, "A100": 312.0}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def random_llava_15_7b(device: str) -> Any:
    """llava-1.5-7b's exact architecture with random weights, in bf16, wrapped like a load."""
    import transformers as T

    from gatelang.models.families.llava import LlavaAdapter
    from gatelang.models.loading import LoadedModel
    from gatelang.models.tiny import tiny_tokenizer

    vision = T.CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                num_attention_heads=16, image_size=336, patch_size=14,
                                projection_dim=768)
    tok = tiny_tokenizer()
    text = T.LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                         max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg = T.LlavaConfig(text_config=text, vision_config=vision, vision_feature_layer=-2,
                        image_token_index=tok.convert_tokens_to_ids("<image>"))
    with torch.device(device):
        model = T.LlavaForConditionalGeneration(cfg).to(torch.bfloat16)
    model.eval()
    ip = T.CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    proc = T.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14,
                            vision_feature_select_strategy="default", num_additional_image_tokens=1)
    adapter = LlavaAdapter(model, tok, proc)
    return LoadedModel(model=model, tokenizer=tok, processor=proc, adapter=adapter,
                       name="random llava-1.5-7b architecture", weights_sha256="-" * 64,
                       device=torch.device(device), dtype=torch.bfloat16)


def items_for(loaded: Any, n: int) -> list[Any]:
    from gatelang.ir import load
    from gatelang.measure import build_eval_sets, spread

    caps = loaded.capabilities()
    sets = build_eval_sets(load(EXAMPLE), languages=caps.languages, modalities=caps.modalities)
    return spread(sets.targets, n)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _run(loaded: Any, batches: list[Any], hooks: bool) -> float:
    ad = loaded.adapter
    sites = [f"mlp_act({i})" for i in range(ad.num_layers)]
    sync(loaded.device)
    t = time.perf_counter()
    for b in batches:
        if hooks:
            rows = torch.arange(len(b), device=b.input_ids.device)

            def keep(name: str, x: torch.Tensor, rows=rows, b=b) -> torch.Tensor:
                return x[rows, b.subject_index.clamp(min=0)].float().cpu()

            with capture(ad, sites, reduce=keep):
                loaded.model(**b.model_inputs(), logits_to_keep=1)
        else:
            loaded.model(**b.model_inputs(), logits_to_keep=1)
    sync(loaded.device)
    return time.perf_counter() - t


def time_forward(loaded: Any, batches: list[Any], repeats: int) -> tuple[float, float]:
    """Best-of-N bare and hooked times, interleaved so load drift hits both alike.

    The minimum is the estimate least disturbed by other processes on a shared machine.
    """
    bare, hooked = [], []
    with torch.inference_mode(), cpu_threads(loaded.device):
        _run(loaded, batches[:1], True)  # warm-up
        for _ in range(repeats):
            bare.append(_run(loaded, batches, False))
            hooked.append(_run(loaded, batches, True))
    return min(bare), min(hooked)


def forward_flops(loaded: Any, batches: list[Any]) -> float:
    """2 x decoder parameters x tokens (the matmul work; attention scores are small here)."""
    lm = loaded.adapter.module("decoder_layer(0)")
    per_layer = sum(p.numel() for p in lm.parameters())
    params = per_layer * loaded.adapter.num_layers
    tokens = sum(int(b.attention_mask.sum()) for b in batches)
    return 2.0 * params * tokens


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-llava")
    p.add_argument("--random-arch", choices=["llava-1.5-7b"], default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--items", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gen-items", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--name", default=None, help="results file name (default: from the model)")
    args = p.parse_args(argv)

    t = time.perf_counter()
    if args.random_arch:
        device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
        device = "cpu" if device == "auto" else device
        loaded = random_llava_15_7b(device)
    else:
        loaded = load_model(args.model, device=args.device)
    load_s = time.perf_counter() - t
    items = items_for(loaded, args.items)
    batches = [loaded.encode(items[i : i + args.batch_size]).to(loaded.device, loaded.dtype)
               for i in range(0, len(items), args.batch_size)]
    with cpu_threads(loaded.device) as threads:
        pass
    bare, hooked = time_forward(loaded, batches, args.repeats)
    result: dict[str, Any] = {
        "model": loaded.name, "family": loaded.family, "device": str(loaded.device),
        "dtype": str(loaded.dtype).replace("torch.", ""), "machine": machine(),
        "threads": threads, "load_s": round(load_s, 2),
        "probe": {
            "items": len(items), "batch_size": args.batch_size, "repeats": args.repeats,
            "sites": f"mlp_act(0..{loaded.adapter.num_layers - 1}), subject-token rows",
            "bare_s": round(bare, 4), "hooked_s": round(hooked, 4),
            "overhead_pct": round(100 * (hooked / bare - 1), 2),
            "items_per_s_bare": round(len(items) / bare, 1),
        },
    }
    if loaded.device.type == "cuda":
        flops = forward_flops(loaded, batches)
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        result["probe"]["tflops_bare"] = round(flops / bare / 1e12, 1)
        if peak:
            result["probe"]["peak_tflops_bf16"] = peak
            result["probe"]["fraction_of_peak"] = round(flops / bare / 1e12 / peak, 3)
    gen_items = items[: args.gen_items]
    from gatelang.models import generate

    sync(loaded.device)
    t = time.perf_counter()
    stats: dict[str, float] = {}
    generate(loaded, gen_items, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
             stats=stats)
    sync(loaded.device)
    gen_s = time.perf_counter() - t
    tokens = int(stats["new_tokens"])
    result["generation"] = {
        "items": len(gen_items), "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "seconds": round(gen_s, 2), "tokens": tokens, "tokens_per_s": round(tokens / gen_s, 1),
        "items_per_s": round(len(gen_items) / gen_s, 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = args.name or (args.random_arch or loaded.name).replace("/", "_")
    out = RESULTS / f"{name}-{loaded.device.type}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"wrote {out.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

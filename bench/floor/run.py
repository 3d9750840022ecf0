"""The floor table: each pass's wall time next to what its tokens cost in a bare forward.

    python bench/floor/run.py                        # tiny-llava, the reference example
    python bench/floor/run.py --model smollm2-135m --policy bench/floor/smollm2-deactivate.gate \
        --sides after --options "$(python -c 'import json; print(json.dumps(json.load(open(
        "bench/floor/results/smollm2-135m-smollm2-deactivate.json"))["options"]))')"

Runs the policy twice in one process, one intra-op thread, no pass cache: `before` with the
uncached code paths (every forward through the whole model, HF `generate`, each verify pass
decoding its own questions) and `after` with frozen prefixes, read-position logits, the
compacting greedy decoder and the shared answer cache. For every pass it records:

- `wall_s`: the pass's time;
- `layer_tokens`: tokens times decoder layers the pass ran (a decode step of B rows is B
  tokens; a step from a frozen prefix counts only the layers it ran), and `grad_layer_tokens`,
  the share run with autograd on;
- `floor_s`: the time a bare batched forward (and forward + backward, for the autograd share)
  of that many layer-tokens takes on this model, measured here on full batches;
- `ratio` = wall_s / floor_s: how far the pass is from the cost of its own tokens.

Both runs' patches and verification rows are compared (`equal`). Timings on a shared machine
are noisy: compare ratios within one file, not across machines. Results go to
bench/floor/results/<model>-<policy>.json with the machine (`bench/harness/machine.py`).

`--sides after` skips the uncached run: on SmolLM2 it alone takes tens of minutes, and the
benchmark's real row already records those passes' times (docs/benchmarks.md). Without a
`before` run there is nothing to compare, so `equal` is absent; `tests/test_prefix_cache.py`
checks the cached paths against the uncached ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.harness.machine import describe_machine, machine_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLE = ROOT / "docs" / "examples" / "home-address.gate"


class Counter:
    """Layer-tokens seen by the decoder layers, split by whether autograd was on."""

    def __init__(self) -> None:
        self.tokens = 0
        self.grad = 0

    @contextmanager
    def watching(self, layers: list[torch.nn.Module]) -> Iterator[None]:
        def pre(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            h = args[0] if args else kwargs.get("hidden_states")
            if isinstance(h, torch.Tensor) and h.dim() >= 2:
                n = int(h.shape[0]) * int(h.shape[1])
                self.tokens += n
                if torch.is_grad_enabled():
                    self.grad += n

        handles = [m.register_forward_pre_hook(pre, with_kwargs=True) for m in layers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def unit_costs(loaded: Any, repeats: int = 3) -> dict[str, float]:
    """Seconds per layer-token of a bare batched forward, and of forward + backward, on a batch
    of the world's edit questions with their answers (32 rows; text and image where the model
    reads images, text only otherwise)."""
    from gatelang.passes.base import PassContext
    from gatelang.passes.edit_set import as_item, encode
    from gatelang.passes.tensors import forward_logits, per_row_nll

    ctx = PassContext(loaded=loaded)
    modalities = ["text", "image"] if "image" in loaded.capabilities().modalities else ["text"]
    qs = ctx.world.queries(attributes=["home_address", "phone_number"], splits=["edit"],
                           modalities=modalities)
    qs = qs[:: max(1, len(qs) // 32)][:32]
    batch = encode(ctx, [as_item(q) for q in qs], [q.answer for q in qs], [False] * len(qs))
    n_layers = loaded.adapter.num_layers
    tokens = int(batch.labels.numel()) * n_layers
    model = loaded.model
    weight = loaded.adapter.module(f"down_proj({n_layers - 1})").weight

    def fwd() -> None:
        with torch.no_grad():
            forward_logits(model, batch)

    def fwd_bwd() -> None:
        weight.requires_grad_(True)
        try:
            loss = per_row_nll(forward_logits(model, batch), batch.labels).mean()
            first = loaded.adapter.module("down_proj(0)").weight
            first.requires_grad_(True)
            loss.backward()
            first.requires_grad_(False)
            first.grad = None
        finally:
            weight.requires_grad_(False)
            weight.grad = None

    out = {}
    for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
        fn()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = best / tokens
    return out


@contextmanager
def uncached() -> Iterator[None]:
    """The code paths before frozen prefixes and shared answers."""
    import gatelang.methods.deactivate.localize as dl
    import gatelang.methods.neural_gate.edit as ne
    import gatelang.methods.neural_gate.localize as nl
    import gatelang.models.generation as gen
    from gatelang.measure.answers import AnswerCache
    from gatelang.passes.base import PassContext

    def plain(self: AnswerCache, loaded: Any, state: Any, asks: Any, **kw: Any) -> list[str]:
        return AnswerCache._generate(loaded, list(asks), max_new_tokens=kw["max_new_tokens"],
                                     batch_size=kw["batch_size"],
                                     template=kw.get("template", True), desc="answer")

    saved = [(mod, "decoder_stack", mod.decoder_stack) for mod in (dl, ne, nl)]
    saved += [(gen, "plain_greedy", gen.plain_greedy), (AnswerCache, "answers",
              AnswerCache.answers), (PassContext, "attach_run", PassContext.attach_run)]
    try:
        for mod, name, _v in saved[:3]:
            setattr(mod, name, lambda adapter: None)
        gen.plain_greedy = lambda model: False
        AnswerCache.answers = plain  # type: ignore[method-assign]
        PassContext.attach_run = lambda self, nodes, results: None  # type: ignore[method-assign]
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def run_once(policy: Path, loaded: Any, options: dict[str, Any], costs: dict[str, float]
             ) -> tuple[list[dict[str, Any]], Any]:
    """Run the policy, counting each pass's layer-tokens; rows per pass and the record."""
    import gatelang.runtime.executor as ex
    from gatelang.driver import RunOptions, run
    from gatelang.passes.base import pass_options

    layers = list(loaded.model.get_submodule(
        __import__("gatelang.models.adapter", fromlist=["resolve_path"]).resolve_path(
            loaded.model, loaded.adapter.layers_path)))
    counter = Counter()
    seen: dict[str, tuple[int, int]] = {}
    real_get = ex.get_pass

    def counted(op: str) -> Any:
        cls = real_get(op)

        class Counted(cls):  # type: ignore[misc, valid-type]
            def run(self, ctx: Any, node: Any, inputs: Any) -> Any:
                t0, g0 = counter.tokens, counter.grad
                try:
                    return super().run(ctx, node, inputs)
                finally:
                    seen[node.id] = (counter.tokens - t0, counter.grad - g0)

        Counted.__module__ = cls.__module__
        Counted.__qualname__ = cls.__qualname__
        return Counted

    opts = RunOptions(model=None, device=str(loaded.device), threads=1, progress=False,
                      passes=pass_options(options))
    ex.get_pass = counted
    try:
        with ExitStack() as stack:
            stack.enter_context(counter.watching(layers))
            record = run(policy, opts, loaded=loaded)
    finally:
        ex.get_pass = real_get
    rows = []
    for node in record.run.nodes:
        tok, grad = seen.get(node.id, (0, 0))
        floor = (tok - grad) * costs["forward"] + grad * costs["forward_backward"]
        rows.append({"op": node.op, "label": node.label, "wall_s": round(node.seconds, 3),
                     "layer_tokens": tok, "grad_layer_tokens": grad,
                     "floor_s": round(floor, 3),
                     "ratio": round(node.seconds / floor, 2) if floor > 0 else None})
    return rows, record


def compare(a: Any, b: Any) -> dict[str, Any]:
    """Largest relative difference of the two runs' weights, and whether verification agrees."""
    worst = 0.0
    for name, value in a.weights.items():
        other = b.weights[name]
        scale = float(other.abs().max()) or 1.0
        worst = max(worst, float((value - other).abs().max()) / scale)

    def rows(rec: Any) -> dict[str, Any]:
        return {s.op: rec.run.results[s.id].data.get("items") for s in rec.run.specs
                if s.kind == "verify"}

    return {"patch_max_rel_diff": worst, "verify_rows_equal": rows(a) == rows(b)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llava")
    parser.add_argument("--policy", type=Path, default=EXAMPLE)
    parser.add_argument("--options", default="{}", help="PassOptions as JSON")
    parser.add_argument("--load-note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--sides", choices=("both", "after"), default="both",
                        help="`after` runs only the cached code paths")
    args = parser.parse_args(argv)

    from gatelang.models import load_model

    torch.set_num_threads(1)
    loaded = load_model(args.model, device="cpu")
    options = json.loads(args.options)
    costs = unit_costs(loaded)
    result: dict[str, Any] = {"model": args.model, "policy": str(args.policy.relative_to(ROOT)
                              if args.policy.is_absolute() else args.policy),
                              "options": options, "threads": 1, "machine": describe_machine(),
                              "machine_line": machine_line(describe_machine()),
                              "load": args.load_note, "seconds_per_layer_token": costs}
    before: list[dict[str, Any]] | None = None
    if args.sides == "both":
        with uncached():
            before, rec_before = run_once(args.policy, loaded, options, costs)
    after, rec_after = run_once(args.policy, loaded, options, costs)
    if before is not None:
        result["before"] = before
    result["after"] = after
    if before is not None:
        result["equal"] = compare(rec_after, rec_before)
    for side, rows in (("before", before), ("after", after)):
        if rows is not None:
            result[f"{side}_total_s"] = round(sum(r["wall_s"] for r in rows), 2)
    out = args.out or RESULTS / f"{args.model}-{args.policy.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{'op':28s} {'before':>8s} {'after':>8s} {'floor':>8s} {'ratio':>6s}")
    for i, a in enumerate(after):
        b = f"{before[i]['wall_s']:8.2f}" if before is not None else f"{'-':>8s}"
        print(f"{a['op']:28s} {b} {a['wall_s']:8.2f} {a['floor_s']:8.2f} "
              f"{a['ratio'] if a['ratio'] is not None else '-':>6}")
    print(json.dumps(result.get("equal")), result.get("before_total_s"), "->",
          result["after_total_s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One generation per weight state: the answer cache, the cross-pass prefetch and the compacting
greedy decoder give exactly the answers of the uncached path (HF `generate`, each verify pass
decoding its own questions), on the shipped tiny-llava."""

from __future__ import annotations

from typing import Any

import pytest

import gatelang.models.generation as G
from gatelang.driver import RunOptions, run
from gatelang.measure import from_query
from gatelang.measure.answers import AnswerCache
from gatelang.models import load_model
from gatelang.passes.base import PassContext, pass_options
from gatelang.world import load_world

POLICY = """gatelang 1
use stdlib.attributes.contact
use stdlib.languages
subjects protected = ["Alice Okafor"]
policy reduced {
  refuse home_address, phone_number about protected in en, zh via text, image
  keep other_subjects, other_attributes, utility
  method neural_gate {
    layer 3
    lr 0.01
    reference_width 0
    steps 1
    epochs 2
    pair_batch 6
    reset_optimizer false
    mask_samples 2
    mask_steps 2
  }
}
"""

REDUCED = {"max_new_tokens": 16, "max_items": 40, "attack_items": 6,
           "attack_settings": {"samples": 2, "relearn_steps": 2, "exposure_candidates": 4}}


@pytest.fixture(scope="module")
def tiny() -> Any:
    return load_model("tiny-llava", device="cpu")


def _items(n: int = 120) -> list[Any]:
    world = load_world(seed=0)
    qs = world.queries(attributes=["home_address", "phone_number", "employer"],
                       splits=["heldout"])
    step = max(1, len(qs) // n)
    return [from_query(q, role="target", split="heldout") for q in qs[::step]][:n]


def test_compacting_decoder_matches_generate(tiny, monkeypatch) -> None:
    items = _items()
    assert any(it.image is not None for it in items) and any(it.image is None for it in items)
    assert G.plain_greedy(tiny.model)
    prefill = ["Sure," if i % 3 == 0 else "" for i in range(len(items))]
    ours: dict[str, float] = {}
    got = G.generate(tiny, items, max_new_tokens=16, batch_size=32, stats=ours)
    got_pre = G.generate(tiny, items, max_new_tokens=16, batch_size=32, prefill=prefill)
    monkeypatch.setattr(G, "plain_greedy", lambda model: False)
    theirs: dict[str, float] = {}
    want = G.generate(tiny, items, max_new_tokens=16, batch_size=32, stats=theirs)
    want_pre = G.generate(tiny, items, max_new_tokens=16, batch_size=32, prefill=prefill)
    assert got == want and got_pre == want_pre
    # finished rows leave the batch: every decode slot produced a token that counts
    assert ours["decode_slots"] == ours["new_tokens"] == theirs["new_tokens"]


def _verify_rows(record: Any) -> dict[str, Any]:
    return {spec.op: record.run.results[spec.id].data["items"]
            for spec in record.run.specs if spec.kind == "verify"}


def test_cached_verification_equals_uncached(tiny, tmp_path, monkeypatch) -> None:
    policy = tmp_path / "p.gate"
    policy.write_text(POLICY, encoding="utf-8")
    answers = tmp_path / "answers"
    opts = RunOptions(model="tiny-llava", device="cpu", progress=False,
                      passes=pass_options(REDUCED), answers_dir=answers)
    cached = run(policy, opts, loaded=tiny)
    first = dict(cached.ctx.answers.stats)
    assert first["generated"] < first["asked"]  # questions were shared across passes
    assert any(answers.glob("*.json"))  # the unedited model's answers are on disk

    again = run(policy, opts, loaded=tiny)  # a rerun reads the unedited answers back
    assert again.ctx.answers.stats["from_disk"] > 0
    assert again.ctx.answers.stats["generated"] < first["generated"]

    # The uncached path: HF generate, no prefetch, every pass decoding all it asks itself.
    def uncached(self: AnswerCache, loaded: Any, state: Any, asks: Any, **kw: Any) -> list[str]:
        return AnswerCache._generate(loaded, list(asks), max_new_tokens=kw["max_new_tokens"],
                                     batch_size=kw["batch_size"],
                                     template=kw.get("template", True), desc="x")

    monkeypatch.setattr(AnswerCache, "answers", uncached)
    monkeypatch.setattr(PassContext, "attach_run", lambda self, nodes, results: None)
    monkeypatch.setattr(G, "plain_greedy", lambda model: False)
    plain = run(policy, RunOptions(model="tiny-llava", device="cpu", progress=False,
                                   passes=pass_options(REDUCED)), loaded=tiny)
    want = _verify_rows(plain)
    assert {"verify.refusal", "verify.locality", "verify.prefill", "verify.quantized"} <= set(want)
    assert _verify_rows(cached) == want
    assert _verify_rows(again) == want

"""A planned policy runs as-is on the runtime: every op is registered and every input is met.

Uses a randomly initialised tiny LLaVA (no trained weights), the cheapest method and tiny
sample limits: this checks the contract between planner and passes, not edit quality.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

SRC = """gatelang 1
use stdlib.attributes
use stdlib.languages
policy first {
  refuse home_address about "Alice Okafor" in en via text, image
  keep other_subjects, utility
  method deactivate { ig_steps 1  top_k 4 }
  require { locality >= 50%  utility_drop <= 50%  neurons_touched <= 50% }
}
policy second {
  refuse phone_number about "Chen Moreau" in en via text
  keep other_attributes
  method deactivate { ig_steps 1  top_k 4 }
  require { refusal(edit) >= 0% }
}
"""


@pytest.mark.slow
def test_planned_policy_executes_on_the_runtime(tmp_path) -> None:
    from gatelang.ir import loads
    from gatelang.models import load_model
    from gatelang.models.tiny import build_tiny_checkpoint
    from gatelang.passes.base import PassContext
    from gatelang.planner import plan
    from gatelang.runtime.executor import Executor

    build_tiny_checkpoint("llava", tmp_path, seed=0)
    loaded = load_model(str(tmp_path), device="cpu")
    p = plan(loads(SRC), loaded.capabilities())
    options = {"max_items": 2, "max_new_tokens": 2, "attack_items": 2,
               "attack_settings": {"samples": 2, "relearn_steps": 2}}
    run = Executor(PassContext(loaded=loaded, seed=0, options=options)).run(p)
    assert {n.id for n in run.nodes} == {n.id for n in p.nodes()}
    reports = {spec.id: result for spec, result in run.by_op("report.requirements")}
    assert len(reports) == 2
    names = sorted(r["name"] for res in reports.values() for r in res.data["requirements"])
    assert names == sorted(["locality(heldout) >= 50%", "utility_drop(all) <= 50%",
                            "neurons_touched(all) <= 50%", "refusal(edit) >= 0%"])
    # The second policy's gate carries the first policy's edit forward (composition).
    first, second = p.by_kind("edit")
    assert set(run.results[first.id].tensors) <= set(run.results[second.id].tensors)

"""Base general-ability numbers of a real checkpoint (`gatelang.measure.general`).

    python bench/real/knowledge/general.py smollm2-135m

Writes `bench/real/knowledge/general-<model>.json` with the machine it ran on.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gatelang.measure.general import evaluate_general
from gatelang.models import load_model
from gatelang.zoo.knowledge import machine_info


def main(spec: str) -> None:
    loaded = load_model(spec, device="cpu")
    start = time.perf_counter()
    result = evaluate_general(loaded)
    record = {
        "model": loaded.name, "weights_sha256": loaded.weights_sha256,
        **result.summary(), "seconds": round(time.perf_counter() - start, 1),
        "correct": result.correct, "answers": result.answers, "machine": machine_info(),
    }
    out = Path(__file__).with_name(f"general-{loaded.name}.json")
    out.write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m")

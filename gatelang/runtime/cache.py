"""Content-addressed cache of pass results.

A node's key hashes its plan id (which already covers its op, params, parents and the stdlib
version) with what the plan does not know: the base weights' hash, the seed and the pass
implementation's version. A result is a JSON document plus optional tensors; the tensors file is
written first and the JSON last, both atomically, so a directory with `result.json` is complete
and an interrupted run simply recomputes the node.

`AnswerFiles` keeps the unedited model's greedy answers (`gatelang.measure.answers`) next to
the pass results, in `answers/`, one JSON file per weight state, so a rerun or `verify --lock`
does not decode the unedited model again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import load_file, save

from gatelang.passes.base import PassResult
from gatelang.runtime.atomic import atomic_write_bytes, atomic_write_json


def cache_key(node_id: str, *, fingerprint: str, version: str) -> str:
    return hashlib.sha256(f"{node_id}\0{fingerprint}\0{version}".encode()).hexdigest()[:32]


class Cache:
    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _dir(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / key

    def get(self, key: str) -> PassResult | None:
        if self.root is None:
            return None
        d = self._dir(key)
        meta = d / "result.json"
        if not meta.is_file():
            return None
        try:
            doc = json.loads(meta.read_text(encoding="utf-8"))
            tensors = load_file(str(d / "tensors.safetensors")) if doc.get("has_tensors") else {}
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed, never trusted
        return PassResult(data=doc["data"], tensors=tensors, cached=True,
                          seconds=float(doc.get("seconds", 0.0)))

    def put(self, key: str, result: PassResult) -> None:
        if self.root is None:
            return
        d = self._dir(key)
        if result.tensors:
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in result.tensors.items()}
            atomic_write_bytes(d / "tensors.safetensors", save(tensors))
        atomic_write_json(
            d / "result.json",
            {"data": result.data, "has_tensors": bool(result.tensors), "seconds": result.seconds},
        )


ANSWERS_DIR = "answers"


class AnswerFiles:
    """The disk side of `measure.answers.AnswerCache`: ``<root>/<state>.json`` maps answer keys
    to answers. A file is rewritten whole (atomically) with what it held plus the new answers,
    so readers never see half a file; a damaged file reads as empty and is recomputed."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _file(self, state: str) -> Path:
        safe = hashlib.sha256(state.encode()).hexdigest()[:32]
        return self.root / f"{safe}.json"

    def load(self, state: str) -> dict[str, str]:
        path = self._file(state)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("state") != state:
            return {}
        answers = doc.get("answers")
        return {str(k): str(v) for k, v in answers.items()} if isinstance(answers, dict) else {}

    def save(self, state: str, answers: dict[str, str]) -> None:
        merged = self.load(state)
        merged.update(answers)
        atomic_write_json(self._file(state), {"state": state, "answers": merged})


def answer_store(root: str | os.PathLike[str] | None) -> AnswerFiles | None:
    """The answer files under `root` (a pass cache folder's `answers/`), or None for none."""
    return None if root is None else AnswerFiles(root)

"""Content-addressed cache of pass results.

A node's key hashes its plan id (which already covers its op, params, parents and the stdlib
version) with what the plan does not know: the base weights' hash, the seed and the pass
implementation's version. A result is a JSON document plus optional tensors; the tensors file is
written first and the JSON last, both atomically, so a directory with `result.json` is complete
and an interrupted run simply recomputes the node.
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

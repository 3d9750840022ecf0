"""gate.lock: everything needed to reproduce and re-check what a run enforced.

A JSON document (sorted keys, so it diffs cleanly in git) with the hashes of the policy source,
the resolved IR, the stdlib, the base weights and the patch; package versions; the seed; and the
headline metrics. `verify_lock` re-runs verification from it and reports drift.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from gatelang.errors import GatelangError
from gatelang.runtime.atomic import atomic_write_json

LOCK_VERSION = 1


class LockError(GatelangError):
    """The lock file is missing, malformed, or does not match what it names."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("gatelang", "torch", "transformers", "safetensors", "tokenizers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def write_lock(path: str | Path, lock: dict[str, Any]) -> None:
    atomic_write_json(path, {"lock_version": LOCK_VERSION, **lock})


def read_lock(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LockError(f"{p}: cannot read lock file: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise LockError(f"{p}:{exc.lineno}:{exc.colno}: malformed lock file: {exc.msg}") from None
    if not isinstance(doc, dict) or doc.get("lock_version") != LOCK_VERSION:
        raise LockError(f"{p}: not a gatelang lock (lock_version {doc.get('lock_version') if isinstance(doc, dict) else '?'})")
    for key in ("policy", "model", "patch", "seed", "headline"):
        if key not in doc:
            raise LockError(f"{p}: lock file lacks {key!r}")
    return doc

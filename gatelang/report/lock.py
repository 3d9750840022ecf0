"""gate.lock: everything needed to reproduce and re-check what a run enforced.

A JSON document (sorted keys, so it diffs cleanly in git) with the hashes of the policy source,
the resolved IR, the stdlib, the base weights and the patch; package versions; the seed; the
runtime (threads, device, dtype, torch version); and the headline metrics. `verify_lock`
re-runs verification from it and reports drift. `read_lock` validates the whole document
(`LockFile`) before anything runs, so a bad field fails fast and is named.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

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


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class LockPolicy(_Part):
    path: StrictStr = Field(min_length=1)
    sha256: StrictStr
    ir_sha256: StrictStr | None = None


class LockStdlib(_Part):
    version: StrictStr
    sha256: StrictStr


class LockModel(_Part):
    spec: StrictStr | None = None
    name: StrictStr | None = None
    weights_sha256: StrictStr = Field(min_length=1)


class LockPatch(_Part):
    file: StrictStr = Field(min_length=1)
    sha256: StrictStr
    status: Literal["accepted", "rejected"]


class LockRuntime(_Part):
    threads: StrictInt | None = None
    edit_threads: StrictInt | None = None
    device: StrictStr | None = None
    dtype: StrictStr | None = None
    torch: StrictStr | None = None


class LockFile(BaseModel):
    """The schema of gate.lock; unknown top-level keys are kept (newer writers may add some)."""

    model_config = ConfigDict(extra="allow", strict=True)

    lock_version: Literal[1]
    policy: LockPolicy
    stdlib: LockStdlib
    model: LockModel
    patch: LockPatch
    seed: StrictInt
    options: dict[str, Any] = Field(default_factory=dict)
    packages: dict[str, StrictStr] = Field(default_factory=dict)
    runtime: LockRuntime | None = None
    # A headline value is a number (percent, or points) or null when nothing was measured.
    headline: dict[str, float | None]
    passed: StrictBool | None = None


def _field_errors(exc: ValidationError) -> str:
    out = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err["loc"]) or "(document)"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or err["type"] == "missing" else f" (got {got!r})"
        out.append(f"field {where!r}: {err['msg']}{shown}")
    more = len(exc.errors()) - len(out)
    return "; ".join(out) + (f"; and {more} more" if more > 0 else "")


def read_lock(path: str | Path) -> dict[str, Any]:
    """Read and validate a lock; LockError naming the file and the bad field otherwise."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise LockError(f"{p}: not a file (expected a gate.lock written by `gatelang apply`)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LockError(f"{p}: cannot read lock file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LockError(f"{p}: malformed lock file: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise LockError(f"{p}:{exc.lineno}:{exc.colno}: malformed lock file: {exc.msg}") from None
    if not isinstance(doc, dict) or doc.get("lock_version") != LOCK_VERSION:
        version = doc.get("lock_version") if isinstance(doc, dict) else "?"
        raise LockError(f"{p}: not a gatelang lock (lock_version {version})")
    for key in ("policy", "model", "patch", "seed", "headline"):
        if key not in doc:
            raise LockError(f"{p}: lock file lacks {key!r}")
    try:
        # Validation only: the caller gets the document as written (unknown keys included).
        LockFile.model_validate(doc)
    except ValidationError as exc:
        raise LockError(f"{p}: invalid lock file: {_field_errors(exc)}") from None
    return doc

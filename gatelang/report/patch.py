"""The patch: only the weights an edit changed, as safetensors, bound to its base model's hash.

Layout (version 1). For every edited parameter NAME the file holds one of
  ``NAME::rows`` (int64 [k]) + ``NAME::values`` ([k, in])   -- changed rows, new values
  ``NAME::cols`` (int64 [k]) + ``NAME::values`` ([out, k])  -- changed columns, new values
  ``NAME::full`` ([out, in])                                 -- the whole new tensor
whichever is smallest. New values (not deltas) are stored, so applying a patch is exact and
idempotent. The metadata names the base weights' sha256; `apply_patch` refuses any other base,
because a patch written for one checkpoint silently corrupts another, and refuses a patch that
names no base unless the caller explicitly allows it.

Version 2 adds ``payload_sha256`` to the metadata: the sha256 of every tensor (name, dtype,
shape, bytes, in name order) and of every other metadata entry except the tensor index. Reading
or applying a patch recomputes it first, so flipped bytes, an edited status or a removed base
hash are refused before any weight is touched.

``base_tensors_sha256`` (written by `make_patch`) hashes the base values of the tensors the
patch edits. The base weights' file hash identifies a checkpoint on disk, but a model a user
loaded with plain transformers has no file hash; this one lets `check_module_base` confirm that
the tensors about to be replaced are the ones the patch was made from.

`state_dict_bytes` writes the other export: a plain safetensors state dict of the full new
values of the changed tensors, which `model.load_state_dict(sd, strict=False)` loads without
gatelang.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from torch import nn

from gatelang.errors import GatelangError
from gatelang.runtime.atomic import atomic_write_bytes

PATCH_FORMAT = "gatelang-patch/2"
STATE_DICT_FORMAT = "gatelang-state-dict/1"
DIGEST_KEY = "payload_sha256"
INDEX_KEY = "tensors"
BASE_TENSORS_KEY = "base_tensors_sha256"


class PatchError(GatelangError):
    """The patch is malformed or was written for a different base model."""


def state_sha256(model: nn.Module) -> str:
    """Hash of every parameter and buffer (name, dtype, shape, bytes), in name order.

    Used when the loader did not provide a weights hash; it depends only on values, so the same
    checkpoint loaded twice hashes the same.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass
class TensorEdit:
    name: str
    kind: str  # rows | cols | full
    index: torch.Tensor | None
    values: torch.Tensor
    shape: tuple[int, ...]

    @property
    def params_changed(self) -> int:
        return int(self.values.numel())


@dataclass
class Patch:
    edits: list[TensorEdit]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def base_sha256(self) -> str:
        return self.metadata.get("base_weights_sha256", "")

    def params_changed(self) -> int:
        return sum(e.params_changed for e in self.edits)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors as stored in the file: ``NAME::rows|cols|full`` and ``NAME::values``."""
        out: dict[str, torch.Tensor] = {}
        for e in self.edits:
            if e.kind == "full":
                out[f"{e.name}::full"] = e.values.contiguous()
            else:
                out[f"{e.name}::{e.kind}"] = e.index.contiguous()
                out[f"{e.name}::values"] = e.values.contiguous()
        return out

    def verify(self, source: str = "patch") -> None:
        """Recompute the payload digest; PatchError when it does not match. A patch read from a
        file always has one (`read_patch` refuses a file without); a patch made in memory
        (`make_patch`) has none and is not checked."""
        want = self.metadata.get(DIGEST_KEY)
        if want is None:
            return
        have = payload_sha256(self.tensors(), self.metadata)
        if have != want:
            raise PatchError(
                f"{source}: the patch's contents do not match its payload_sha256 "
                f"({want[:12]}… recorded, {have[:12]}… found): the file was modified or damaged "
                "after it was written; re-create it with `gatelang apply`")


def diff_tensor(name: str, before: torch.Tensor, after: torch.Tensor) -> TensorEdit | None:
    """Smallest representation of `after` given `before`; None when nothing changed."""
    if before.shape != after.shape:
        raise PatchError(f"{name}: shape changed from {tuple(before.shape)} to {tuple(after.shape)}")
    changed = before != after
    if not bool(changed.any()):
        return None
    after = after.detach().to("cpu").contiguous()
    if after.dim() != 2:
        return TensorEdit(name, "full", None, after, tuple(after.shape))
    rows = torch.nonzero(changed.any(1)).flatten().cpu()
    cols = torch.nonzero(changed.any(0)).flatten().cpu()
    out_f, in_f = after.shape
    options = [
        (rows.numel() * in_f + rows.numel(), "rows"),
        (cols.numel() * out_f + cols.numel(), "cols"),
        (out_f * in_f, "full"),
    ]
    _cost, kind = min(options, key=lambda o: (o[0], ["rows", "cols", "full"].index(o[1])))
    if kind == "rows":
        return TensorEdit(name, kind, rows, after[rows].contiguous(), tuple(after.shape))
    if kind == "cols":
        return TensorEdit(name, kind, cols, after[:, cols].contiguous(), tuple(after.shape))
    return TensorEdit(name, kind, None, after, tuple(after.shape))


def make_patch(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
) -> Patch:
    edits = []
    for name in sorted(after):
        edit = diff_tensor(name, before[name], after[name])
        if edit is not None:
            edits.append(edit)
    meta = dict(metadata)
    meta.setdefault(BASE_TENSORS_KEY, tensors_sha256({e.name: before[e.name] for e in edits}))
    return Patch(edits=edits, metadata=meta)


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Value hash of named tensors (name, dtype, shape, bytes, in name order)."""
    digest = hashlib.sha256(b"gatelang-tensors/1\0")
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}\0".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def check_module_base(model: nn.Module, patch: Patch, *, source: str = "patch",
                      allow_unknown_base: bool = False) -> None:
    """Refuse to patch a module whose tensors are not the ones the patch was made from.

    For a model loaded outside gatelang (no file hash): the base values of the edited tensors
    are hashed and compared with the patch's ``base_tensors_sha256``. A patch without that
    entry cannot be checked this way and is refused unless `allow_unknown_base`.
    """
    want = patch.metadata.get(BASE_TENSORS_KEY)
    if not want:
        if allow_unknown_base:
            return
        raise PatchError(
            f"{source}: the patch does not record the base values of the tensors it edits, so "
            "it cannot be checked against a model loaded outside gatelang; load the base with "
            "`gatelang.load_model` (its file hash is checked), or pass allow_unknown_base=True")
    params = dict(model.named_parameters())
    missing = [e.name for e in patch.edits if e.name not in params]
    if missing:
        raise PatchError(f"{source}: the model has no parameter {missing[0]!r}; the patch was "
                         "made for another architecture")
    have = tensors_sha256({e.name: params[e.name] for e in patch.edits})
    if have != want:
        dtypes = sorted({str(params[e.name].dtype).replace("torch.", "") for e in patch.edits})
        raise PatchError(
            f"{source}: the tensors this patch edits do not hold the values it was made from "
            f"(base tensors {want[:12]}… recorded, {have[:12]}… found; the model's are "
            f"{', '.join(dtypes)}): load the base model the patch was made for, in the dtype it "
            "was made in, without other edits")


def state_dict_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """A plain safetensors state dict (full new values of the changed tensors) for
    `model.load_state_dict(sd, strict=False)`; byte-stable like the patch itself."""
    meta = {k: str(v) for k, v in metadata.items() if k not in (DIGEST_KEY, INDEX_KEY)}
    meta["format"] = STATE_DICT_FORMAT
    return stable_safetensors({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                              meta)


def payload_sha256(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """The patch's integrity digest: every tensor (name, dtype, shape, raw bytes) in name order,
    then every metadata entry but the digest itself and the tensor index, in key order."""
    digest = hashlib.sha256(b"gatelang-patch-payload/1\0")
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}\0".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for key in sorted(metadata):
        if key not in (DIGEST_KEY, INDEX_KEY):
            digest.update(f"{key}={metadata[key]}\0".encode())
    return digest.hexdigest()


def patch_bytes(patch: Patch) -> bytes:
    tensors = {k: t.to(torch.int64) if k.endswith(("::rows", "::cols")) else t
               for k, t in patch.tensors().items()}
    index = [{"name": e.name, "kind": e.kind, "shape": list(e.shape)} for e in patch.edits]
    meta = {k: str(v) for k, v in patch.metadata.items() if k not in (DIGEST_KEY, INDEX_KEY)}
    meta["format"] = PATCH_FORMAT
    meta[DIGEST_KEY] = payload_sha256(tensors, meta)
    meta[INDEX_KEY] = json.dumps(index, sort_keys=True)
    return stable_safetensors(tensors, meta)


_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}


def stable_safetensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Serialise in the safetensors format with a sorted header, so equal patches are equal bytes.

    The reference writer orders header keys through a hash map, which makes two writes of the same
    tensors differ byte-wise and would break the lock's patch hash and the determinism promise.
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _DTYPES:
            raise PatchError(f"{name}: dtype {t.dtype} cannot be stored in a patch")
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def write_patch(path: str | os.PathLike[str], patch: Patch) -> str:
    """Write atomically; returns the file's sha256."""
    data = patch_bytes(patch)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_patch(path: str | os.PathLike[str]) -> Patch:
    """Read and check a patch file: format, payload digest, index. Touches no model."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise PatchError(f"{p}: not a file (a patch is one .safetensors file)")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PatchError(f"{p}: cannot read patch: {exc.strerror or exc}") from None
    try:
        tensors = st_load(data)
        (header_len,) = struct.unpack("<Q", data[:8])
        meta = dict(json.loads(data[8 : 8 + header_len]).get("__metadata__") or {})
    except Exception as exc:  # safetensors raises several unrelated types on bad input
        raise PatchError(f"{p}: not a safetensors file: {exc}") from None
    fmt = meta.get("format")
    if fmt == "gatelang-patch/1":
        raise PatchError(f"{p}: a gatelang-patch/1 file, written before patches carried an "
                         "integrity digest; re-create it with `gatelang apply`")
    if fmt != PATCH_FORMAT:
        raise PatchError(f"{p}: not a gatelang patch (format {fmt!r})")
    want = meta.get(DIGEST_KEY)
    if not want:
        raise PatchError(f"{p}: the patch has no payload_sha256, so it cannot be checked for "
                         "tampering; re-create it with `gatelang apply`")
    have = payload_sha256(tensors, meta)
    if have != want:
        raise PatchError(
            f"{p}: the patch's contents do not match its payload_sha256 ({want[:12]}… recorded, "
            f"{have[:12]}… found): the file was modified or damaged after it was written; "
            "re-create it with `gatelang apply`")
    try:
        index = json.loads(meta.pop(INDEX_KEY))
        edits = []
        used: set[str] = set()
        for item in index:
            name, kind = str(item["name"]), item["kind"]
            shape = tuple(int(n) for n in item["shape"])
            if kind == "full":
                keys = [f"{name}::full"]
                edits.append(TensorEdit(name, kind, None, tensors[keys[0]], shape))
            elif kind in ("rows", "cols"):
                keys = [f"{name}::{kind}", f"{name}::values"]
                edits.append(TensorEdit(name, kind, tensors[keys[0]], tensors[keys[1]], shape))
            else:
                raise ValueError(f"{name}: unknown edit kind {kind!r}")
            used.update(keys)
    except (KeyError, ValueError, TypeError) as exc:
        raise PatchError(f"{p}: malformed patch index: {exc}") from None
    extra = sorted(set(tensors) - used)
    if extra:
        raise PatchError(f"{p}: malformed patch: tensors {', '.join(extra[:5])} are not in its index")
    return Patch(edits=edits, metadata=meta)


def check_base(patch: Patch, have: str, *, source: str = "patch",
               allow_unknown_base: bool = False) -> None:
    """Refuse a patch made for other base weights, or one that names none (unless allowed)."""
    want = patch.base_sha256
    if not want:
        if allow_unknown_base:
            return
        raise PatchError(
            f"{source}: the patch does not say which base weights it was made for "
            "(no base_weights_sha256), so it could silently corrupt this model; pass "
            "allow_unknown_base=True (CLI: --allow-unknown-base) to apply it anyway")
    if have != want:
        raise PatchError(
            f"{source}: this patch was made for base weights {want[:12]}…, but the model's "
            f"weights hash is {have[:12]}…; load the base model the patch was made for"
        )


def apply_patch(
    model: nn.Module, patch: Patch, *, base_sha256: str | None = None, source: str = "patch",
    allow_unknown_base: bool = False,
) -> None:
    """Write the patch's values into `model` in place, after checking digest and base hash.

    `base_sha256` is the loaded base model's weights hash (computed with `state_sha256` when
    omitted); a mismatch raises PatchError before anything is modified, and so does a patch
    that names no base unless `allow_unknown_base`.
    """
    patch.verify(source)
    have = base_sha256 if base_sha256 is not None else state_sha256(model)
    check_base(patch, have, source=source, allow_unknown_base=allow_unknown_base)
    values = patch_values(model, patch, source=source)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value)


def patch_values(model: nn.Module, patch: Patch, *, source: str = "patch"
                 ) -> dict[str, torch.Tensor]:
    """The full new value of every tensor the patch edits, on the model's current weights.

    The one place a patch's rows/columns/full edits are turned into tensors: `apply_patch`
    writes them, `verify --lock` hands them to verification as the edit's result. Checks names,
    shapes and index ranges first, so a bad patch never half-applies.
    """
    params = dict(model.named_parameters())
    for e in patch.edits:
        if e.name not in params:
            raise PatchError(f"{source}: the model has no parameter {e.name!r}")
        p = params[e.name]
        if tuple(p.shape) != e.shape:
            raise PatchError(f"{source}: {e.name} has shape {tuple(p.shape)}, patch expects {e.shape}")
        if not (e.values.is_floating_point() or e.values.dtype == p.dtype):
            raise PatchError(f"{source}: {e.name}: values have dtype {e.values.dtype}, "
                             f"the parameter {p.dtype}")
        if e.kind == "full":
            if tuple(e.values.shape) != e.shape:
                raise PatchError(f"{source}: {e.name}: full values have shape "
                                 f"{tuple(e.values.shape)}, expected {e.shape}")
            continue
        if e.kind not in ("rows", "cols") or p.dim() != 2:
            raise PatchError(f"{source}: {e.name}: a {e.kind!r} edit needs a 2-D parameter")
        idx = e.index
        if idx is None or idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32):
            raise PatchError(f"{source}: {e.name}: {e.kind} index must be a 1-D integer tensor")
        axis = 0 if e.kind == "rows" else 1
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= p.shape[axis]):
            raise PatchError(f"{source}: {e.name}: {e.kind} index out of range "
                             f"0..{p.shape[axis] - 1}")
        want = (idx.numel(), p.shape[1]) if e.kind == "rows" else (p.shape[0], idx.numel())
        if tuple(e.values.shape) != want:
            raise PatchError(f"{source}: {e.name}: {e.kind} values have shape "
                             f"{tuple(e.values.shape)}, expected {want}")
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for e in patch.edits:
            p = params[e.name]
            t = out.get(e.name)
            if t is None:
                t = p.detach().clone()
            vals = e.values.to(t.device, t.dtype)
            if e.kind == "full":
                t.copy_(vals)
            elif e.kind == "rows":
                t[e.index.to(t.device, torch.int64)] = vals
            else:
                t[:, e.index.to(t.device, torch.int64)] = vals
            out[e.name] = t
    return out

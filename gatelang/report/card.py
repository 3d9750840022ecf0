"""The model card (`README.md`) of a patched model folder written by `gatelang patch apply --out`.

A folder pushed to the Hugging Face Hub is judged by its card; a patched model whose card does
not say which policy it enforces, how well, and which run produced it cannot be audited. The
card is built from what lies beside the patch (``report.json``, ``gate.lock``, the policy the
lock names) and from the patch's own metadata, so it works for any output folder, copied or not.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

# A hub id (`org/name`) can be named as `base_model` in the card's metadata; a local alias or
# path cannot (the Hub rejects it), so those are only named in the text.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _value(r: dict[str, Any]) -> str:
    v = r.get("value")
    if v is None:
        return "n/a"
    unit = " pts" if r.get("metric") == "utility_drop" else "%"
    return f"{float(v):.1f}{unit}"


def model_card(patch: Any, patch_path: Path, *, base_name: str | None = None) -> str:
    """The card's Markdown (YAML front matter, then text) for a model patched with `patch`."""
    meta = patch.metadata
    folder = patch_path.parent
    report = _read_json(folder / "report.json")
    lock_file = folder / "gate.lock"
    lock = _read_json(lock_file)
    base = base_name or meta.get("base_model") or "the base model"
    status = meta.get("status", "unknown")
    front: dict[str, Any] = {"library_name": "transformers",
                             "tags": ["gatelang", "privacy", "refusal", "model-editing"]}
    if _HUB_ID.match(str(meta.get("base_model", ""))):
        front["base_model"] = meta["base_model"]
    lines = ["---", yaml.safe_dump(front, sort_keys=True, allow_unicode=True).rstrip(), "---", ""]
    lines += [f"# {base} + gatelang patch", ""]
    lines += [f"This model is `{base}` with a gatelang patch applied: weight edits that make it "
              f"refuse what the policy `{meta.get('policy', '?')}` protects. The patch was "
              f"**{status}** by its run's requirements.", ""]
    if status != "accepted":
        lines += ["> **Warning**: the run that made this patch did not meet every requirement; "
                  "see the table below.", ""]
    lines += ["## Provenance", "", "| | |", "|---|---|",
              f"| base model | `{meta.get('base_model', '?')}` |",
              f"| base weights sha256 | `{meta.get('base_weights_sha256', '?')}` |",
              f"| policy | `{meta.get('policy', '?')}` (sha256 `{meta.get('policy_sha256', '?')}`) |",
              f"| methods | {meta.get('methods', '?')} |",
              f"| seed | {meta.get('seed', '?')} |",
              f"| patch payload sha256 | `{meta.get('payload_sha256', '?')}` |"]
    if lock is not None:
        digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()
        lines.append(f"| gate.lock sha256 | `{digest}` |")
    lines.append("")
    if report is not None and report.get("requirements"):
        lines += ["## Measured requirements", "",
                  "Measured by `gatelang apply` on held-out questions (never used for editing).",
                  "", "| requirement | measured | n | holds |", "|---|---|---|---|"]
        for r in report["requirements"]:
            lines.append(f"| `{r.get('name', '?')}` | {_value(r)} | {r.get('n', '?')} | "
                         f"{'yes' if r.get('passed') else '**no**'} |")
        if report.get("summary"):
            lines += ["", str(report["summary"])]
        lines.append("")
    policy_text = _policy_text(lock_file, lock)
    if policy_text is not None:
        lang = "yaml" if str(meta.get("policy", "")).endswith((".yaml", ".yml")) else "gate"
        lines += ["## Policy", "", f"```{lang}", policy_text.rstrip(), "```", ""]
    lines += ["## Reproduce", "",
              "```bash",
              f"gatelang verify --lock gate.lock   # in the run's output folder "
              f"(patch: {patch_path.name})",
              "```", ""]
    return "\n".join(lines)


def _policy_text(lock_file: Path, lock: dict[str, Any] | None) -> str | None:
    if not lock or not isinstance(lock.get("policy"), dict):
        return None
    named = lock["policy"].get("path")
    if not isinstance(named, str):
        return None
    try:
        return (lock_file.parent / named).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


__all__ = ["model_card"]

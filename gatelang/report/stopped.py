"""The record of a run an edit stopped before verification: `stopped.md` and `stopped.json`.

An edit that configures itself (the default refusal method) stops the run when no configuration
it tries meets the policy's requirements on its selection split. There is then no patch to
verify and no report to write, but a reviewer still needs what the CLI printed: which target
fell short, by how much, what was tried, and what to do next. These two files say it, next to
where the report would have been; a later successful run into the same folder removes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gatelang.errors import SelectionError
from gatelang.runtime.atomic import atomic_write_json, atomic_write_text

STOPPED_FILES = ("stopped.md", "stopped.json")
_SHOWN = ("refusal", "wrong_language", "leakage", "prefill", "locality", "over_refusal",
          "utility_drop")


def _pct(v: Any) -> str:
    return f"{v * 100:.1f}%" if isinstance(v, (int, float)) else "—"


def stopped_markdown(policy: str, err: SelectionError) -> str:
    trace = err.trace
    lines = [f"# Stopped before verification: {policy}", "",
             f"The `{err.method or 'edit'}` edit found no configuration that meets the "
             "policy's requirements on its selection split (held-out edit templates; "
             "verification's questions and the attack phrases were never used), so no patch "
             "was written and nothing was verified. Exit code 3.", "", "```", str(err), "```",
             ""]
    sel = trace.get("selection") or {}
    if sel:
        lines += [f"Selection split: {sel.get('train_questions', '?')} questions trained on, "
                  f"{sel.get('selection_questions', '?')} held out (each also asked after a "
                  f"context sentence), {sel.get('other_subject_questions', '?')} questions "
                  f"about other people, {sel.get('utility_tasks', '?')} benign tasks.", ""]
    targets = trace.get("targets") or {}
    if targets:
        lines += ["Targets: " + ", ".join(f"{k} {v}" for k, v in targets.items()) + ".", ""]
    trials = trace.get("trials") or []
    if trials:
        lines += ["| trial | changed | " + " | ".join(_SHOWN) + " | missed | seconds |",
                  "|---|---|" + "---|" * len(_SHOWN) + "---|---|"]
        for i, t in enumerate(trials, 1):
            changed = ", ".join(f"{k} {v}" for k, v in (t.get("config") or {}).items())
            m = t.get("metrics") or {}
            missed = ", ".join(t.get("failed") or {}) or "none"
            lines.append(f"| {i} | {changed or 'defaults'} | "
                         + " | ".join(_pct(m.get(k)) for k in _SHOWN)
                         + f" | {missed} | {t.get('seconds', 0):.0f} |")
        lines.append("")
    return "\n".join(lines)


def write_stopped(out_dir: str | Path, policy: str, err: SelectionError) -> list[Path]:
    """Write the stopped run's record into `out_dir` (created if missing; its parent must
    exist, as `apply` checked before the run)."""
    out = Path(out_dir)
    out.mkdir(exist_ok=True)
    doc = {"status": "stopped", "passed": False, "policy": policy, "method": err.method,
           "message": str(err), "search": err.trace}
    return [atomic_write_text(out / "stopped.md", stopped_markdown(policy, err)),
            atomic_write_json(out / "stopped.json", doc)]

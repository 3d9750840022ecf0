"""Run `gatelang apply` once per (policy, method), in a child process, and measure it.

Each run is a separate process so its wall time includes what a user pays (imports, model load)
and its peak memory is that run's alone: `os.wait4` returns the child's own rusage, whose
`ru_maxrss` counts torch's native allocations, which `tracemalloc` cannot see.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grid import PolicySpec, render_gate

APPLY_TIMEOUT_S = 1800
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunOutcome:
    policy: str
    method: str
    exit_code: int
    wall_s: float
    peak_rss_mb: float
    out_dir: Path
    report: dict[str, Any] | None
    stderr_tail: str

    @property
    def status(self) -> str:
        if self.report is None:
            return "failed"
        return "ok" if self.exit_code in (0, 3) else "failed"


def run_child(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              timeout_s: float = APPLY_TIMEOUT_S, log_path: Path | None = None
              ) -> tuple[int, float, float, str]:
    """Run `cmd`; return (exit code, wall seconds, peak RSS in MiB, last lines of its output)."""
    log = open(log_path, "w", encoding="utf-8") if log_path else subprocess.DEVNULL  # noqa: SIM115
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        deadline = t0 + timeout_s
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log_path:
            log.close()
    wall = time.perf_counter() - t0
    # Linux reports ru_maxrss in KiB.
    peak_mb = rusage.ru_maxrss / 1024.0
    tail = ""
    if log_path and log_path.exists():
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
    return proc.returncode, wall, peak_mb, tail


def child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    return env


def apply_once(
    spec: PolicySpec,
    method: str,
    params: dict[str, object],
    *,
    work_dir: Path,
    model: str,
    seed: int,
    options: dict[str, Any] | None = None,
    threads: int | None = None,
) -> RunOutcome:
    """Write the policy file, run `apply` on it in a child process, read back its report.json."""
    run_dir = work_dir / spec.id / method
    run_dir.mkdir(parents=True, exist_ok=True)
    policy_path = run_dir / "policy.gate"
    policy_path.write_text(render_gate(spec, method, params), encoding="utf-8")
    out_dir = run_dir / "out"
    if out_dir.exists():  # a stale cache would make this run's timing meaningless
        shutil.rmtree(out_dir)
    cmd = [
        sys.executable, "-m", "bench.harness.worker", str(policy_path),
        "--model", model, "--out", str(out_dir), "--seed", str(seed),
        "--options", json.dumps(options or {}, sort_keys=True),
    ]
    code, wall, peak, tail = run_child(cmd, env=child_env(threads), cwd=ROOT,
                                       log_path=run_dir / "apply.log")
    report = None
    report_path = out_dir / "report.json"
    if report_path.exists():
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            report = None
    return RunOutcome(spec.id, method, code, wall, peak, out_dir, report, tail)


def verified_items(out_dir: Path) -> list[dict[str, Any]]:
    """Per-item verification rows of a finished run, read from its result cache.

    `report.json` keeps per-cell aggregates; the per-item rows (which subject, which label
    before and after) live in the verify passes' cached results, and only they allow intervals
    resampled by subject. Missing or unreadable entries just mean fewer items.
    """
    rows: list[dict[str, Any]] = []
    cache = out_dir / ".gatelang-cache"
    if not cache.is_dir():
        return rows
    for path in sorted(cache.rglob("result.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8")).get("data") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        check = data.get("check") if isinstance(data, dict) else None
        if check in ("refusal", "locality", "utility", "identification") and isinstance(
                data.get("items"), list):
            rows += [{**it, "check": check} for it in data["items"] if isinstance(it, dict)]
    return rows

"""Describe the machine a benchmark ran on, so every committed number names its hardware."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    info = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        return None
    return None


def describe_machine() -> dict[str, Any]:
    cpu = _lscpu()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu_model": cpu.get("Model name") or platform.processor() or "unknown",
        "architecture": cpu.get("Architecture") or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "ram_gib": _mem_total_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        pass
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def load_average() -> float | None:
    """The 1-minute load average (other jobs on a shared machine show here), if known."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return None


def machine_line(info: dict[str, Any]) -> str:
    """One line for the results page: CPU, cores, RAM, accelerator, load during the runs."""
    parts = [str(info.get("cpu_model", "unknown CPU")),
             f"{info.get('usable_cpus', '?')} usable cores",
             f"{info.get('ram_gib', '?')} GiB RAM"]
    parts.append(f"GPU {info['cuda']}" if info.get("cuda") else "no GPU")
    if info.get("torch"):
        parts.append(f"torch {info['torch']}")
    loads = [float(v) for v in info.get("load_average") or [] if v is not None]
    if loads:
        parts.append(f"1-min load average {min(loads):.1f}–{max(loads):.1f} during the runs")
    return ", ".join(parts)

"""The language commands run on the core install, without the model stack (the `model` extra):
each runs in a fresh interpreter where importing torch and the rest of the extra fails, as on a
machine where only `pip install gatelang` ran (what the pre-commit hooks install)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
REF = EXAMPLES / "home-address.gate"

# Every top-level package of the `model` extra in pyproject.toml.
BLOCKED = ("torch", "transformers", "tokenizers", "safetensors", "PIL", "numpy", "matplotlib",
           "tqdm", "jinja2", "markdown_it")

RUNNER = f"""
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)",
                                      name=name)
        return None

sys.meta_path.insert(0, Blocked())
for name in list(sys.modules):
    if name.split(".")[0] in {BLOCKED!r}:
        del sys.modules[name]
from gatelang.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("argv", [
    ["check", str(EXAMPLES)],
    ["check", "--format", "json", str(REF)],
    ["fmt", "--check", str(EXAMPLES)],
    ["fmt", "--check", "--skip-non-policy", str(ROOT / ".pre-commit-hooks.yaml"), str(REF)],
    ["convert", str(REF)],
    ["plan", str(REF)],
    ["plan", "--format", "dot", str(REF)],
    ["diff", str(REF), str(EXAMPLES / "home-address.yaml")],
    ["schema", "--kind", "policy"],
    ["schema", "--kind", "report"],
    ["schema", "--kind", "lock"],
    ["schema", "--kind", "audit"],
    ["methods"],
    ["methods", "neural_gate"],
    ["--help"],
    ["apply", "--help"],
])
def test_language_commands_run_without_the_model_stack(argv):
    res = _run(*argv)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr


def test_the_blocker_works():
    res = subprocess.run([sys.executable, "-c", RUNNER.replace("from gatelang.cli import main\n"
                                                               "sys.exit(main(sys.argv[1:]))",
                                                               "import torch")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "blocked by the test" in res.stderr


def test_a_model_command_names_the_extra(tmp_path):
    res = _run("apply", str(REF), "--out", str(tmp_path / "out"))
    assert res.returncode == 1
    assert "pip install 'gatelang[model]'" in res.stderr and "Traceback" not in res.stderr

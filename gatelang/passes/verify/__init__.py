"""Verification passes, one op per module; importing the package registers every one of them.

`refusal`, `locality`, `utility` answer held-out data before and after the edit; `identity`
checks anonymize edits; the attack passes (`attack.py` has what they share, then one module per
attack) ask the protected questions the way an attacker would (docs/robustness.md).
"""

from importlib import import_module
from pkgutil import iter_modules

_SHARED = {"answers", "attack"}  # helpers, not passes

for _info in iter_modules(__path__):
    if _info.name not in _SHARED and not _info.name.startswith("_"):
        import_module(f"{__name__}.{_info.name}")

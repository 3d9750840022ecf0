"""Verification passes, one op per module (importing the package registers them)."""

from gatelang.passes.verify import identity, locality, refusal, utility  # noqa: F401

"""The passes every plan shares: data, verification and requirements.

A method's own localize and edit passes live in its package (`gatelang/methods/<name>/`) and are
imported when a plan that uses them runs (`get_pass` loads them). Importing this package
registers the shared passes.
"""

from __future__ import annotations

from gatelang.passes import data, requirements, verify  # noqa: F401 - registration
from gatelang.passes.base import (
    REGISTRY,
    Artifact,
    Input,
    NodeSpec,
    Pass,
    PassContext,
    PassOptions,
    PassResult,
    get_pass,
    method_config,
    register,
)

__all__ = ["REGISTRY", "Artifact", "Input", "NodeSpec", "Pass", "PassContext", "PassOptions",
           "PassResult", "get_pass", "method_config", "register"]

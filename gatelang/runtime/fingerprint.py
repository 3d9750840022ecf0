"""The code a pass's result depends on, as a hash: its module and what that module imports.

A cached result is only valid for the code that made it. Hand-bumped version numbers were
forgotten in practice, so the cache key instead hashes the source of the pass's module and of
every module it imports, transitively, from the same top-level package or from gatelang (plus
gatelang's version). Any edit to that code makes the node run again.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
from functools import lru_cache

_ROOTS = ("gatelang",)


def _source_file(module: str) -> str | None:
    mod = sys.modules.get(module)
    path = getattr(mod, "__file__", None) if mod is not None else None
    if path is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        path = spec.origin if spec is not None else None
    return path if path and path.endswith(".py") else None


@lru_cache(maxsize=4096)
def _imports(path: str, mtime_ns: int, size: int, package: str) -> tuple[str, ...]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    out: list[str] = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.append(base)
            out.extend(f"{base}.{alias.name}" for alias in node.names)
    return tuple(dict.fromkeys(out))


def _walk(tree: ast.AST):
    """Every node, except the bodies of `if TYPE_CHECKING:` (imports the code never runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) \
                    and child.test.id == "TYPE_CHECKING":
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


@lru_cache(maxsize=4096)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def code_fingerprint(module: str) -> str:
    """Hash of `module`'s source and of every module it imports from its own top-level package
    or from gatelang, transitively; stable across machines (paths are not hashed)."""
    from gatelang import __version__

    roots = {*_ROOTS, module.split(".")[0]}
    seen: dict[str, str] = {}
    stack = [module]
    while stack:
        name = stack.pop()
        if name in seen or name.split(".")[0] not in roots:
            continue
        path = _source_file(name)
        if path is None:
            seen[name] = ""
            continue
        stat = _stat(path)
        seen[name] = _file_digest(path, *stat)
        is_pkg = os.path.basename(path) == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        stack.extend(_imports(path, *stat, package))
        # A package's __init__ runs before any of its modules: it is code the module runs too.
        parent = name.rpartition(".")[0]
        if parent:
            stack.append(parent)
    digest = hashlib.sha256(f"gatelang {__version__}\0".encode())
    for name in sorted(seen):
        digest.update(f"{name}\0{seen[name]}\0".encode())
    return digest.hexdigest()

"""Atomic file writes: a reader (or a crash at any point) never sees a half-written artifact.

Every artifact is written to a temporary file in the destination folder, flushed and fsynced,
then renamed over the destination (rename is atomic on POSIX and Windows for same-volume paths).
A process killed mid-write leaves at most a stray ``.tmp-*`` file, which the next run ignores.
Files get the mode a plain ``open()`` would give them (0666 less the umask), not mkstemp's 0600.

A *set* of files that only make sense together (a run's patch, report and lock) is committed
with `replace_folder`: written into a staging folder beside the destination, then swapped in
with one rename, so a reader sees the old set or the new one, never a mix.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # pragma: no cover - not Linux
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def file_mode() -> int:
    """The mode `open(path, "w")` would create a file with: 0666 less the umask."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{dest.name}.", dir=dest.parent)
    try:
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; artifacts are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def canonical_json(obj: Any) -> str:
    """Sorted keys, fixed separators, trailing newline: byte-stable across runs and platforms."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, canonical_json(obj))



# ------------------------------------------------------------------ committing a set of files

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _side_prefix(dest: Path) -> str:
    return f".{dest.name}.gatelang-"


def recover_folder(dest: str | os.PathLike[str], owned: Callable[[str], bool]) -> None:
    """Finish or undo a `replace_folder` that a killed process left half done.

    Leftovers sit beside `dest` as ``.NAME.gatelang-new-*`` (a staging folder) or
    ``.NAME.gatelang-old-*`` (the previous set). When `dest` is missing (killed between the two
    renames of the fallback swap) the previous set is put back. Entries that are not `owned`
    artifacts (the resume cache, a user's files) are moved back into `dest`; the rest is deleted.
    """
    dest = Path(dest)
    parent = dest.parent
    if not parent.is_dir():
        return
    prefix = _side_prefix(dest)
    sides = sorted(p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir())
    if not sides:
        return
    if not dest.exists():
        olds = [p for p in sides if p.name.startswith(prefix + "old-")]
        if olds:
            os.replace(olds[-1], dest)
            sides.remove(olds[-1])
    for side in sides:
        for entry in sorted(side.iterdir()):
            if not owned(entry.name) and not (dest / entry.name).exists():
                dest.mkdir(exist_ok=True)
                os.replace(entry, dest / entry.name)
        shutil.rmtree(side, ignore_errors=True)


def replace_folder(dest: str | os.PathLike[str], write: Callable[[Path], T], *,
                   owned: Callable[[str], bool]) -> T:
    """Replace the set of files in folder `dest` by what `write(staging)` writes, atomically.

    `write` fills a fresh staging folder beside `dest` (same file system). Entries of the old
    `dest` that are not `owned` artifacts (a resume cache, files a user put there) and that the
    new set does not replace are moved into the staging folder, which is then swapped into place
    with one atomic exchange (Linux) or two renames (elsewhere; a kill between them is repaired
    by `recover_folder` on the next run). Old artifacts that the new set does not write (a stale
    rejected patch, a plot of a check that no longer runs) go away with the old folder. Returns
    what `write` returns. An exception (or a kill) before the swap leaves `dest` as it was.
    """
    dest = Path(dest)
    recover_folder(dest, owned)
    prefix = _side_prefix(dest)
    staging = dest.parent / f"{prefix}new-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    carried: list[str] = []
    try:
        result = write(staging)
        if dest.exists():
            try:
                os.chmod(staging, dest.stat().st_mode & 0o7777)
            except OSError:  # pragma: no cover
                pass
            for entry in sorted(dest.iterdir()):
                name = entry.name
                if owned(name) or name.startswith(".tmp-") or (staging / name).exists():
                    continue
                os.replace(entry, staging / name)
                carried.append(name)
    except BaseException:
        for name in carried:  # put back what was already carried over
            if not (dest / name).exists():
                os.replace(staging / name, dest / name)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if dest.exists():
        if _exchange(staging, dest):
            old = staging  # the exchange left the previous set at the staging path
        else:
            old = dest.parent / f"{prefix}old-{uuid.uuid4().hex[:12]}"
            os.replace(dest, old)
            os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, dest)
    _fsync_dir(dest.parent)
    return result

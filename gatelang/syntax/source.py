"""Reading a policy file and choosing its syntax by extension.

Every file the language reads (policies, imported files, subject files) goes through
`read_regular`: only regular files are opened for reading (a FIFO would block forever, a device
such as /dev/zero never ends), and no more than a fixed number of bytes is ever read.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from gatelang.errors import Diagnostic, DiagnosticError, Span
from gatelang.syntax import ast

GATE_SUFFIXES = (".gate",)
YAML_SUFFIXES = (".yaml", ".yml")
MAX_BYTES = 16 * 1024 * 1024  # policies are small; a huge file is a mistake, not a policy

_SURROGATE = re.compile("[\ud800-\udfff]")


class NotRegularFileError(OSError):
    """The path names a FIFO, a device or a socket: gatelang reads regular files only."""


class FileTooLargeError(OSError):
    """The file is larger than the limit for its kind."""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_regular(path: str | Path, limit: int = MAX_BYTES, *, head: bool = False) -> bytes:
    """The bytes of a regular file, never more than `limit` of them.

    Raises `IsADirectoryError`, `NotRegularFileError` (FIFO, device, socket: opened without
    blocking and never read), `FileTooLargeError` (more than `limit` bytes; with `head` the first
    `limit` bytes are returned instead) or any other `OSError`.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
        | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        if not stat.S_ISREG(mode):
            kind = _kind(mode)
            raise NotRegularFileError(errno.EINVAL, f"{kind}; only regular files are read")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        if head:
            return data[:limit]
        raise FileTooLargeError(errno.EFBIG, f"larger than {_size(limit)}")
    return data


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n} bytes"


def _refuse(code: str, message: str, shown: str, hint: str | None = None,
            line: int = 1) -> DiagnosticError:
    """A G0xx error at `shown` (line 1, column 1 unless told); the empty source keeps the
    renderer from opening the file again (it may be a FIFO, a device or huge)."""
    return DiagnosticError([Diagnostic(code, message, Span.point(shown, line), hint)],
                           {shown: ""})


def syntax_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in YAML_SUFFIXES:
        return "yaml"
    if suffix in GATE_SUFFIXES:
        return "gate"
    raise _refuse("G004", "not a policy file (expected .gate, .yaml or .yml)", str(path))


def read_source(path: str | Path, shown: str | None = None) -> str:
    """The file's text; unreadable files become a `G004` diagnostic, never an OSError."""
    shown = shown or str(path)
    try:
        data = read_regular(path, MAX_BYTES)
    except FileTooLargeError:
        raise _refuse("G004", f"{shown}: file is larger than {_size(MAX_BYTES)}", shown,
                      "policies are small text files; split a huge subject list into a "
                      "subject file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _refuse("G004", f"cannot read {shown}: {reason}", shown) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DiagnosticError([Diagnostic(
            "G004", "file is not valid UTF-8", Span.point(shown, line),
            hint="save the policy as UTF-8")], {shown: ""}) from None


def _line_of(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    line = before.count("\n") + 1
    return line, index - (before.rfind("\n") + 1) + 1


def parse_source(text: str, file: str, syntax: str | None = None) -> ast.SourceFile:
    """Parse text in the syntax its file name implies (or `syntax`, when given)."""
    from gatelang.syntax.parser import parse_gate
    from gatelang.syntax.yaml_form import parse_yaml

    kind = syntax or syntax_of(file)
    # A lone CR ends a line as well (old Mac files): without this a `.gate` comment would run
    # to the end of the file and silently swallow the policy.
    text = normalize_newlines(text, other_breaks=kind == "gate")
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DiagnosticError([Diagnostic("G004", "file contains a NUL byte",
                                          Span.point(file, line))], {file: text})
    bad = _SURROGATE.search(text)
    if bad:  # only text held in memory can have one; a file is decoded strictly
        line, col = _line_of(text, bad.start())
        raise DiagnosticError([Diagnostic(
            "G004", f"text contains a lone surrogate (U+{ord(bad.group()):04X}), which is not "
            "Unicode", Span.point(file, line, col))], {file: _SURROGATE.sub("\ufffd", text)})
    return parse_yaml(text, file) if kind == "yaml" else parse_gate(text, file)


# What `str.splitlines` (and so the diagnostic renderer) takes for a line end besides CR/LF.
_OTHER_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def normalize_newlines(text: str, *, other_breaks: bool = False) -> str:
    """CRLF and lone CR become LF, so every reader of the text agrees on line numbers.

    With `other_breaks` (`.gate` text) the other characters `str.splitlines` breaks at (form
    feed, U+2028, ...) become LF too: the parser, the formatter and the caret under a
    diagnostic then count the same lines. YAML has its own rules for them (PyYAML counts
    U+0085/U+2028/U+2029 as breaks and rejects the rest).
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if other_breaks and _OTHER_BREAKS.search(text):
        text = _OTHER_BREAKS.sub("\n", text)
    return text


def parse_file(path: str | Path) -> ast.SourceFile:
    shown = str(path)
    syntax = syntax_of(path)
    return parse_source(read_source(path, shown), shown, syntax)

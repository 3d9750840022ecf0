"""Reading subject sets from files: CSV (a named column), JSON (strings or objects), text.

Files are data, never code: CSV and JSON go through the standard parsers, and every problem
is reported against the subject file itself, with its own line number.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from gatelang.errors import Diagnostic, Span
from gatelang.syntax.source import FileTooLargeError, read_regular

MAX_SUBJECT_BYTES = 16 * 1024 * 1024  # a subject file is a list of names, not a database
MAX_SUBJECTS = 100_000  # names in one subject file

FORMATS = {".csv": "csv", ".json": "json", ".txt": "text", ".text": "text", ".lst": "text"}


class SubjectFileError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def subject_format(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def read_subject_file(
    path: Path, shown: str, column: str | None, where: Span
) -> tuple[tuple[str, ...], str]:
    """Member names in file order (blank entries skipped) and the detected format.

    `shown` is the path used in diagnostics; `where` is the policy span that named the file,
    used when the problem is about the reference rather than the file's content.
    """
    fmt = subject_format(path)
    if fmt is None:
        raise SubjectFileError(Diagnostic(
            "G113", f"unsupported subject file type {path.suffix or '(none)'!r}", where,
            hint="use .csv (with `column`), .json or .txt (one name per line)"))
    try:
        text = read_regular(path, MAX_SUBJECT_BYTES).decode("utf-8-sig")
    except FileNotFoundError:
        raise SubjectFileError(Diagnostic(
            "G112", f"subject file {shown!r} does not exist", where,
            hint="paths are relative to the policy file that names them")) from None
    except FileTooLargeError:
        raise SubjectFileError(Diagnostic(
            "G112", f"cannot read subject file {shown!r}: it is larger than "
            f"{MAX_SUBJECT_BYTES // 2**20} MiB", where,
            hint=f"a subject set holds at most {MAX_SUBJECTS} names")) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else \
            (exc.strerror or str(exc))
        raise SubjectFileError(Diagnostic(
            "G112", f"cannot read subject file {shown!r}: {reason}", where)) from None
    if fmt == "csv":
        return _capped(_csv(text, shown, column, where), shown, where), fmt
    if fmt == "json":
        return _capped(_json(text, shown, column, where), shown, where), fmt
    if column is not None:
        raise SubjectFileError(Diagnostic(
            "G113", "a text subject file has no columns", where,
            hint="drop `column`, or use a .csv file"))
    names = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            names.append(stripped)
    return _capped(tuple(names), shown, where), fmt


def _capped(names: tuple[str, ...], shown: str, where: Span) -> tuple[str, ...]:
    if len(names) > MAX_SUBJECTS:
        raise SubjectFileError(Diagnostic(
            "G113", f"subject file {shown!r} lists {len(names)} names; at most {MAX_SUBJECTS} "
            "are allowed", where, hint="split the people into several policies"))
    return names


def _at(shown: str, line: int, col: int = 1) -> Span:
    return Span(file=shown, line=line, col=col, end_line=line, end_col=col + 1)


def _csv(text: str, shown: str, column: str | None, where: Span) -> tuple[str, ...]:
    if column is None:
        raise SubjectFileError(Diagnostic(
            "G113", "a CSV subject file needs `column \"NAME\"`", where,
            hint='e.g. subjects staff = from "people.csv" column "name"'))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header:
            raise SubjectFileError(Diagnostic(
                "G113", "the CSV file is empty; its first line must name the columns",
                _at(shown, 1)))
        header = [h.strip() for h in header]
        if column not in header:
            raise SubjectFileError(Diagnostic(
                "G113", f"CSV file has no column {column!r}", _at(shown, 1),
                hint="columns: " + ", ".join(header)))
        idx = header.index(column)
        names = []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise SubjectFileError(Diagnostic(
                    "G113", f"row has {len(row)} fields, the header has {len(header)}",
                    _at(shown, reader.line_num)))
            value = row[idx].strip()
            if value:
                names.append(value)
    except csv.Error as exc:
        raise SubjectFileError(Diagnostic(
            "G113", f"malformed CSV: {exc}", _at(shown, reader.line_num or 1))) from None
    return tuple(names)


def _json(text: str, shown: str, column: str | None, where: Span) -> tuple[str, ...]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubjectFileError(Diagnostic(
            "G113", f"malformed JSON: {exc.msg}", _at(shown, exc.lineno, exc.colno))) from None
    if not isinstance(data, list):
        raise SubjectFileError(Diagnostic(
            "G113", "a JSON subject file must hold a list", _at(shown, 1),
            hint='["Alice Okafor", ...] or [{"name": "Alice Okafor"}, ...] with column'))
    names = []
    for i, entry in enumerate(data):
        if isinstance(entry, str) and column is None:
            value = entry
        elif isinstance(entry, dict) and column is not None:
            value = entry.get(column)
            if not isinstance(value, str):
                raise SubjectFileError(Diagnostic(
                    "G113", f"entry {i} has no string field {column!r}", _at(shown, 1)))
        else:
            want = f"objects with a {column!r} field" if column else "strings"
            raise SubjectFileError(Diagnostic(
                "G113", f"entry {i} is not one of the expected {want}", _at(shown, 1)))
        if value.strip():
            names.append(value.strip())
    return tuple(names)

"""A seeded fuzzer for the language commands: mutated example policies, in-process CLI runs.

Each case takes an example policy (`.gate` or YAML, from docs/examples), applies one to three
mutations (byte flips, truncation, inserted characters such as lone surrogates, CR, NUL and
their escapes, duplicated, dropped or swapped lines, CR-only line ends) and runs every language
command on it through `gatelang.cli.main` (check, fmt --diff, fmt, convert, plan, diff). A
case fails when an exception escapes, an exit code is outside what the command documents, or
an error line on stderr has no `file:line:col:` location.

tests/test_fuzz_cli.py runs a few seconds' worth on a fixed seed; `python bench/fuzz/run.py
--seconds N` runs longer.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"

# Exit codes each command may return on any input (1 only where documented: `fmt --diff`
# found a file to reformat).
ALLOWED = {
    "check": {0, 2},
    "fmt --diff": {0, 1, 2},
    "fmt": {0, 2},
    "convert": {0, 2},
    "plan": {0, 2},
    "diff": {0, 2},
}
_LOCATED = re.compile(r"^.+:\d+:\d+: (error|warning)\[G\d{3}\]: ")
_CODED = re.compile(r"\b(error|warning)\[G\d{3}\]")
_BUGS = ("Traceback", "internal error", "would change the policy's meaning")

# Text inserted or substituted by the mutations: structure, escapes, odd Unicode, paths.
INSERTS = [
    "\r", "\r\n", "\n", "\x00", "\ud800", "\udfff", "\\ud800", "\\udc00", "\\u0000", "\\x",
    "\u2028", "\x85", "\x0c", "\t", "\ufeff", "王", "é", "\U0001f600", "#", "{", "}", "[", "]",
    '"', "'", ":", ",", "-", "- ", "&a ", "*a", "!!python/object/apply:os.system ['true']",
    "%", "100%", "-1", "1e309", "9" * 40, "\\", "  ", "policy ", "refuse ", "require {}",
    "require { refusal >= 95% }", 'use "../outside.gate"\n', 'use "/etc/passwd"\n',
    'use "shared/subjects.gate"\n', 'from "people.csv" column "name"', 'from "nope.txt"',
    "all", "<script>", "a b", "~", "null", "yes", "no", "gatelang 1\n", "gatelang: 1\n",
    "policies:\n", "subjects:\n", "method neural_gate { layer 99 }", "method remap",
    "anonymize ", " encoder", "keep utility", "@", "$", "`",
]


# Whole lines inserted at a line boundary (most land inside a policy block or a YAML mapping).
LINES = [
    "  require {}", "  require { }", "    require: []", "    require:", "  keep utility",
    '  refuse home_address about "\\ud800" in en via text',
    '  refuse home_address about "A\\u0000" in en via text',
    "  method neural_gate { layer 99 }", "  method remap", '  description "\\udfff"',
    '  "a b":', "  <script>:", "  ~:", '  "":', "      - refuse: email", "        about: [\"\\ud800\"]",
    'subjects s = ["A", "A"]', 'subjects s = from "people.csv" column "name"',
    'subjects s = from "/dev/zero"', 'use "shared/subjects.gate"', "# comment\r still comment?",
]


# How often each mutation of `mutate` is picked: lines and string contents more often, since
# they keep the rest of the file valid and so reach the later commands (convert, plan).
_OP_WEIGHTS = (2, 2, 1, 1, 1, 1, 1, 1, 1, 4, 4, 1)


@dataclass
class Failure:
    command: str
    example: str
    reason: str
    data: bytes
    output: str = ""

    def __str__(self) -> str:
        return (f"{self.command} on a mutant of {self.example}: {self.reason}\n"
                f"input: {self.data[:400]!r}\n{self.output[-2000:]}")


@dataclass
class Report:
    cases: int = 0
    runs: int = 0
    seconds: float = 0.0
    codes: dict[str, dict[int, int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def seeds() -> list[Path]:
    """The example policies mutants start from (both syntaxes)."""
    return sorted([*EXAMPLES.glob("*.gate"), *EXAMPLES.glob("*.yaml")])


def prepare(work: Path) -> Path:
    """A copy of docs/examples (subject files, shared imports) to run the mutants in."""
    target = work / "examples"
    if not target.exists():
        shutil.copytree(EXAMPLES, target)
    return target


def _token(rng: random.Random, text: str) -> str:
    words = re.findall(r"[\w\-%.]+|\S", text) or ["x"]
    return rng.choice(words)


def mutate(rng: random.Random, text: str) -> bytes:
    """One to three mutations of `text`; the result is bytes (some are not UTF-8)."""
    raw: bytes | None = None
    for _ in range(rng.randint(1, 3)):
        op = rng.choices(range(12), weights=_OP_WEIGHTS)[0]
        n = len(text)
        pos = rng.randint(0, n)
        lines = text.split("\n")
        if op == 0 and n:  # replace one character
            i = rng.randrange(n)
            new = rng.choice(INSERTS) if rng.random() < 0.7 else chr(rng.randrange(0x20, 0x3000))
            text = text[:i] + new + text[i + 1:]
        elif op == 1:  # insert
            text = text[:pos] + rng.choice(INSERTS) + text[pos:]
        elif op == 2:  # truncate
            text = text[:pos]
        elif op == 3 and lines:  # duplicate a line
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op == 4 and len(lines) > 1:  # drop a line
            del lines[rng.randrange(len(lines))]
            text = "\n".join(lines)
        elif op == 5 and len(lines) > 1:  # swap two lines
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == 6:  # other line ends
            text = text.replace("\n", rng.choice(["\r", "\r\n", "\n\r"]))
        elif op == 7 and n:  # a token written somewhere else
            text = text[:pos] + _token(rng, text) + text[pos:]
        elif op == 8 and n:  # delete a span
            end = min(n, pos + rng.randint(1, 40))
            text = text[:pos] + text[end:]
        elif op == 9:  # a whole line at a line boundary
            lines.insert(rng.randint(0, len(lines)), rng.choice(LINES))
            text = "\n".join(lines)
        elif op == 10 and '"' in text:  # something inside a string literal
            quotes = [i for i, ch in enumerate(text) if ch == '"']
            i = rng.choice(quotes) + 1
            text = text[:i] + rng.choice(INSERTS) + text[i:]
        else:  # flip a bit of the encoded bytes (may leave invalid UTF-8)
            raw = text.encode("utf-8", "surrogatepass")
            if raw:
                i = rng.randrange(len(raw))
                raw = raw[:i] + bytes([raw[i] ^ (1 << rng.randrange(8))]) + raw[i + 1:]
            text = raw.decode("utf-8", "surrogateescape")
            raw = None
    if raw is None:
        raw = text.encode("utf-8", "surrogateescape" if _has_escaped(text) else "surrogatepass")
    return raw


def _has_escaped(text: str) -> bool:
    # Bytes kept by surrogateescape are U+DC80..U+DCFF; other lone surrogates are written as
    # their (invalid) UTF-8 form with surrogatepass.
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _run(argv: list[str]) -> tuple[int | None, str, str]:
    from gatelang.cli import main

    # Streams like a terminal's: stdout encodes strictly (an unencodable character fails as it
    # would on a real stdout), stderr with backslash escapes (as Python's own stderr does).
    out_b, err_b = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_b, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(err_b, encoding="utf-8", errors="backslashreplace",
                           write_through=True)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | None = main(argv)
        except SystemExit as exc:  # argparse; never expected with the argv used here
            code = exc.code if isinstance(exc.code, int) else 2
            err.write(f"SystemExit({exc.code})\n")
        except BaseException:  # noqa: BLE001 - anything escaping is the finding
            code = None
            err.write(traceback.format_exc())
    out.flush()
    err.flush()
    return code, out_b.getvalue().decode("utf-8"), err_b.getvalue().decode("utf-8")


def check_output(command: str, code: int | None, err: str) -> str | None:
    """Why this run is a failure, or None."""
    if code is None:
        return "an exception escaped gatelang.cli.main"
    if code not in ALLOWED[command]:
        return f"exit code {code}, expected one of {sorted(ALLOWED[command])}"
    for bug in _BUGS:
        if bug in err:
            return f"stderr contains {bug!r}"
    for line in err.splitlines():
        if _CODED.search(line) and not _LOCATED.match(line):
            return f"diagnostic without file:line:col: {line!r}"
        if line.startswith("error"):
            return f"error without a location: {line!r}"
    return None


def run_case(work: Path, example: Path, data: bytes, rng: random.Random,
             report: Report) -> None:
    target = work / f"fuzz{example.suffix}"
    target.write_bytes(data)
    written = work / f"fuzz-fmt{example.suffix}"
    written.write_bytes(data)
    model = "tiny-clip" if rng.random() < 0.25 else "tiny-llava"
    runs = [
        ("check", ["check", str(target)]),
        ("fmt --diff", ["fmt", "--diff", str(target)]),
        ("fmt", ["fmt", str(written)]),
        ("convert", ["convert", str(target)]),
        ("plan", ["plan", str(target), "--model", model]),
        ("diff", ["diff", str(work / example.name), str(target)]),
    ]
    for command, argv in runs:
        code, _out, err = _run(argv)
        report.runs += 1
        report.codes.setdefault(command, {}).setdefault(-1 if code is None else code, 0)
        report.codes[command][-1 if code is None else code] += 1
        reason = check_output(command, code, err)
        if reason is not None:
            report.failures.append(Failure(" ".join(argv[:-1] if command != "diff" else argv[:1]),
                                           example.name, reason, data, err))


def fuzz(work: Path, *, seed: int = 0, cases: int | None = None,
         seconds: float | None = None, stop_on_failure: bool = False) -> Report:
    """Run mutants until `cases` are done or `seconds` have passed (whichever comes first)."""
    if cases is None and seconds is None:
        raise ValueError("give cases, seconds or both")
    folder = prepare(work)
    examples = seeds()
    texts = {e: e.read_text(encoding="utf-8") for e in examples}
    rng = random.Random(seed)
    report = Report()
    start = time.perf_counter()
    while True:
        if cases is not None and report.cases >= cases:
            break
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
        example = rng.choice(examples)
        data = mutate(rng, texts[example])
        run_case(folder, folder / example.name, data, rng, report)
        report.cases += 1
        if stop_on_failure and report.failures:
            break
    report.seconds = time.perf_counter() - start
    return report

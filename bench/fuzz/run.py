"""Fuzz the language commands for a while (the long form of tests/test_fuzz_cli.py).

    python bench/fuzz/run.py --seconds 600            # ten minutes, seed 0
    python bench/fuzz/run.py --seconds 60 --seed 7    # another sequence of mutants
    python bench/fuzz/run.py --cases 500 --out findings/

Mutants of the example policies go through check, fmt --diff, fmt, convert, plan and diff
in-process; a failure is an escaped exception, an undocumented exit code or an error line
without `file:line:col:`. Each distinct failure is printed once (and, with --out, its input is
saved as a file to add to tests/hardening/). Exit status: 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fuzz.engine import fuzz  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    ap.add_argument("--cases", type=int, help="stop after this many mutants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="save each distinct failing input here")
    ap.add_argument("--stop", action="store_true", help="stop at the first failure")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gatelang-fuzz-") as tmp:
        report = fuzz(Path(tmp), seed=args.seed, cases=args.cases, seconds=args.seconds,
                      stop_on_failure=args.stop)
    seen: set[tuple[str, str]] = set()
    for f in report.failures:
        key = (f.command, f.reason.split(":")[0])
        if key in seen:
            continue
        seen.add(key)
        print(f"--- {f}\n")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            suffix = ".yaml" if f.example.endswith(".yaml") else ".gate"
            (args.out / f"finding-{len(seen):03d}{suffix}").write_bytes(f.data)
    codes = ", ".join(f"{cmd} {dict(sorted(c.items()))}" for cmd, c in report.codes.items())
    print(f"{report.cases} mutants, {report.runs} command runs in {report.seconds:.1f} s "
          f"(seed {args.seed}); exit codes: {codes}")
    print(f"{len(report.failures)} failure(s), {len(seen)} distinct")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())

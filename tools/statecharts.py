"""Write the statecharts and the reason-code matrix, or check the committed ones for drift.

    python tools/statecharts.py          write statecharts/*.mmd, *.svg, docs/reason-code-matrix.md
    python tools/statecharts.py --check  exit 1, naming each file, if any is missing or stale

Writing needs Graphviz (`apt-get install graphviz`); checking does not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kci_engine.errors import ConfigurationError
from kci_engine.tooling.diagrams import check, write

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="report drift instead of writing; exit 1 on drift"
    )
    args = parser.parse_args(argv)
    statecharts, docs = ROOT / "statecharts", ROOT / "docs"
    if args.check:
        problems = check(statecharts, docs, root=ROOT)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    try:
        written = write(statecharts, docs)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path.relative_to(ROOT).as_posix()}")
    if not written:
        print("statecharts and reason-code matrix are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

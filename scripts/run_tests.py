"""Run the test suite; pytest's "no tests collected" (exit 5) counts as a failure.

Usage: ``python -m scripts.run_tests [pytest args]``. Lint (ruff) and types (mypy)
run first so CI fails on them too.
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    """Run lint, types and pytest; return the exit status."""
    py = sys.executable
    steps = [
        [py, "-m", "ruff", "check", "."],
        [py, "-m", "mypy"],
        [py, "-m", "pytest", "-n", "2", *sys.argv[1:]],
    ]
    for cmd in steps:
        print("+", " ".join(cmd[2:]), flush=True)
        code = subprocess.call(cmd)  # noqa: S603 - fixed argv
        if code == 5:
            print("pytest collected no tests: that is a failure", file=sys.stderr)
            return 1
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

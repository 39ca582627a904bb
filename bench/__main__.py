"""``python -m bench [name ...]``: run all benchmarks, or those named.

A name is a module (``catalog_search``) or an entry prefix (``catalog.search``).
``--list`` shows the registry; ``--no-write`` leaves ``latest.json`` alone.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from bench.harness import REGISTRY, RESULTS_FILE, resolve, run_benchmarks


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run; exit status 2 for an unknown name."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="modules or entry prefixes")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument(
        "--no-write", action="store_true", help=f"do not update {RESULTS_FILE.name}"
    )
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 180)
    if args.list:
        for b in REGISTRY:
            console.print(f"{b.module:<20} {', '.join(b.entries):<24} {b.description}")
        return 0
    try:
        resolve(args.names)
    except KeyError as exc:
        console.print(f"[red]bench: {exc.args[0]}[/]")
        return 2
    run_benchmarks(args.names, console=console, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())

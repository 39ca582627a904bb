"""The benchmark harness: results, the registry, tables, and ``latest.json``.

A benchmark is a module ``bench/<module>.py`` with ``run() -> list[Result]``,
listed in :data:`REGISTRY` with the entry-name prefixes it produces. A run prints
one table per benchmark and merges its results into ``bench/results/latest.json``
(a JSON list of entries): entries whose names the run produced are replaced,
every other entry is kept. The file is written atomically (temporary file in the
same directory, then rename).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

__all__ = [
    "CORE_FIELDS",
    "REGISTRY",
    "RESULTS_FILE",
    "Benchmark",
    "Result",
    "load_results",
    "merge_results",
    "print_table",
    "resolve",
    "run_benchmarks",
    "write_results",
]

RESULTS_FILE: Final = Path(__file__).resolve().parent / "results" / "latest.json"

CORE_FIELDS: Final = (
    "name",
    "value",
    "unit",
    "baseline_name",
    "baseline_value",
    "ratio",
    "goal",
    "met",
    "params",
)
"""The keys every entry of ``latest.json`` has; extras come after them."""


@dataclass
class Result:
    """One measured number, its baseline, and whether it meets its goal.

    ``extras`` (e.g. ``p50_ms``, ``p99_ms``) are written as additional top-level
    keys of the JSON entry, not as a nested object.
    """

    name: str
    value: float
    unit: str
    baseline_name: str | None
    baseline_value: float | None
    ratio: float | None
    goal: str
    met: bool
    params: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted(set(self.extras) & {*CORE_FIELDS, "extras"})
        if clash:
            raise ValueError(f"extras may not reuse core field names: {clash}")

    def to_json(self) -> dict[str, Any]:
        """The JSON entry: the core fields, then the extras as extra keys."""
        entry: dict[str, Any] = {f: getattr(self, f) for f in CORE_FIELDS}
        entry.update(self.extras)
        clean: dict[str, Any] = _finite(entry)
        return clean

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Result:
        """Read an entry written by :meth:`to_json`."""
        missing = [f for f in CORE_FIELDS if f not in entry]
        if missing:
            raise ValueError(f"entry {entry.get('name')!r} lacks {missing}")
        core = {f: entry[f] for f in CORE_FIELDS}
        extras = {k: v for k, v in entry.items() if k not in CORE_FIELDS}
        return cls(**core, extras=extras)


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) by ``None``, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# -- the registry -------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """A benchmark module and the entry-name prefixes its results carry."""

    module: str
    entries: tuple[str, ...]
    description: str

    def matches(self, name: str) -> bool:
        """Whether ``name`` selects this benchmark (module or entry prefix)."""
        if name == self.module:
            return True
        return any(
            e == name or e.startswith(name + ".") or name.startswith(e + ".")
            for e in self.entries
        )

    def load(self) -> Callable[[], list[Result]]:
        """Import the module and return its ``run``."""
        module = importlib.import_module(f"bench.{self.module}")
        run: Callable[[], list[Result]] = module.run
        return run


REGISTRY: Final[tuple[Benchmark, ...]] = (
    Benchmark(
        "catalog_search",
        ("catalog.search",),
        "catalog search over 100,000 listings vs a bare FastAPI endpoint",
    ),
    Benchmark(
        "he_compute",
        ("he.model_eval", "he.inference", "he.encrypt"),
        "encrypted_model_eval, encrypted_inference and CKKS encryption on one core "
        "vs numpy / AES-GCM",
    ),
    Benchmark(
        "dp_aggregate",
        ("dp.aggregate",),
        "a DP group-by aggregate over 1,000,000 rows vs the numpy aggregate",
    ),
    Benchmark("ledger_merkle", ("ledger.merkle",), "receipt Merkle trees vs SHA-256"),
    Benchmark(
        "ledger_gas",
        ("ledger.gas", "ledger.gas_per_trade", "ledger.gas_per_receipt"),
        "gas of trades, receipt batches and registration vs an ERC-20 transfer",
    ),
    Benchmark(
        "ledger_relay",
        ("ledger.trades_per_s",),
        "trades the outbox relay batches (and relays on chain) per second, "
        "SQLite and PostgreSQL, vs ERC-20 transfers/s",
    ),
    Benchmark(
        "trading",
        ("trading.quotes_per_s", "trading.orders_per_s"),
        "DP quote menus vs a bare call; quote + order with the journal on "
        "PostgreSQL vs a bare insert",
    ),
)


def resolve(
    names: Sequence[str], registry: Sequence[Benchmark] = REGISTRY
) -> list[Benchmark]:
    """The benchmarks ``names`` select (all when empty), in registry order.

    Raises
    ------
    KeyError
        For a name that selects no benchmark.
    """
    if not names:
        return list(registry)
    unknown = [n for n in names if not any(b.matches(n) for b in registry)]
    if unknown:
        known = ", ".join(f"{b.module} ({', '.join(b.entries)})" for b in registry)
        raise KeyError(f"no benchmark named {', '.join(unknown)}; known: {known}")
    return [b for b in registry if any(b.matches(n) for n in names)]


# -- latest.json ----------------------------------------------------------------------


def load_results(path: Path = RESULTS_FILE) -> list[dict[str, Any]]:
    """The entries in ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ValueError(f"{path} is not a JSON list of objects")
    return data


def merge_results(
    existing: Iterable[dict[str, Any]], new: Iterable[Result]
) -> list[dict[str, Any]]:
    """Replace entries named like a new result, keep the rest.

    A replaced entry keeps its position; results with new names are appended in
    the order given.
    """
    fresh: dict[str, dict[str, Any]] = {}
    for r in new:
        fresh[r.name] = r.to_json()
    merged: list[dict[str, Any]] = []
    placed: set[str] = set()
    for entry in existing:
        name = entry.get("name")
        if isinstance(name, str) and name in fresh:
            if name not in placed:
                merged.append(fresh[name])
                placed.add(name)
            continue
        merged.append(entry)
    merged.extend(e for n, e in fresh.items() if n not in placed)
    return merged


def write_results(results: Iterable[Result], path: Path = RESULTS_FILE) -> None:
    """Merge ``results`` into ``path`` and write it atomically."""
    merged = merge_results(load_results(path), results)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; keep the file's usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(merged, out, indent=2, ensure_ascii=False, allow_nan=False)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# -- output ---------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2g}"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_table(title: str, results: Sequence[Result], console: Console) -> None:
    """One table: the core numbers of each result, then its extras."""
    table = Table(title=title, title_justify="left", show_lines=False)
    for heading in ("entry", "value", "unit", "baseline", "ratio", "goal", "met"):
        table.add_column(heading, overflow="fold")
    table.add_column("details", overflow="fold")
    for r in results:
        baseline = (
            f"{r.baseline_name} = {_fmt(r.baseline_value)}" if r.baseline_name else "–"
        )
        details = "  ".join(f"{k}={_fmt(v)}" for k, v in r.extras.items())
        table.add_row(
            r.name,
            _fmt(r.value),
            r.unit,
            baseline,
            _fmt(r.ratio),
            r.goal,
            "[green]yes[/]" if r.met else "[red]no[/]",
            details,
        )
    console.print(table)


def run_benchmarks(
    names: Sequence[str],
    *,
    console: Console | None = None,
    path: Path = RESULTS_FILE,
    write: bool = True,
) -> list[Result]:
    """Run the selected benchmarks; print and record their results."""
    console = console or Console(width=None if sys.stdout.isatty() else 180)
    everything: list[Result] = []
    for bench in resolve(names):
        console.rule(f"[bold]{bench.module}[/] – {bench.description}")
        results = bench.load()()
        print_table(bench.module, results, console)
        if write:
            write_results(results, path)
        everything.extend(results)
    if write and everything:
        console.print(f"results merged into {path}")
    return everything

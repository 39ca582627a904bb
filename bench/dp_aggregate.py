"""``dp.aggregate``: a DP group-by release over 1,000,000 rows vs numpy, one core.

The request: count, sum, mean and variance of two bounded number columns (``age``
in [0, 120], ``income`` in [0, 200,000]) per ``region`` (four declared categories),
mode ``dp`` with Laplace noise and ε = 1 — ``run_aggregate`` clamps, puts values on
its fixed-point grid, groups with ``np.bincount``, and OpenDP noises each of its
seven noisy primitives (the count; per column the sum and the centred first and
second moments). The table is built once per dataset version and is not timed
(its build time is reported).

Baseline (``dp.aggregate.numpy``): the same statistics in plain numpy over the
same in-memory columns (the table's group codes and float64 arrays): per-group
counts and sums with ``np.bincount``, means, and the two-pass variance.

Goal: DP time ≤ 1.2 × the baseline + 0.2 ms per released statistic (a statistic
is one released number: a group's count, or a column's sum, mean or variance in
a group). Check: every released number is within a tolerance of numpy's computed
from the Laplace scales (20 scales of each noise term, propagated to means and
variances, plus the grid's rounding): a tail probability below 1e-8 per term.

Times are the best of at least ``repeats`` runs and ``min_seconds`` of runs, on
one CPU (``bench._onecore``); the first call of the run (OpenDP calibration cold)
is reported apart.

Environment: ``VEILX_BENCH_DP_ROWS`` (1,000,000), ``VEILX_BENCH_DP_EPSILON`` (1.0),
``VEILX_BENCH_REPEATS`` (5), ``VEILX_BENCH_MIN_SECONDS`` (1.0),
``VEILX_BENCH_CPU`` (default: the last CPU this process may use).
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from rich.console import Console

from bench._onecore import measure, one_core
from bench.harness import Result
from mpc_engine.aggregate import (
    AggregateRequest,
    AggregateResult,
    ColumnSpec,
    ColumnType,
    Table,
    run_aggregate,
)
from mpc_engine.dp import laplace, split_evenly
from mpc_engine.policy import RightsPolicy, Sensitivity

__all__ = ["BOUNDS", "REGIONS", "Settings", "make_table", "numpy_aggregate", "run"]

REGIONS: Final = ("north", "south", "east", "west")
BOUNDS: Final[dict[str, tuple[float, float]]] = {
    "age": (0.0, 120.0),
    "income": (0.0, 200_000.0),
}
COLUMNS: Final = ("age", "income")
RATIO_GOAL: Final = 1.2
PER_STAT_GOAL_MS: Final = 0.2
TAIL_SCALES: Final = 20.0
_GRID_BITS: Final = 22  # as mpc_engine.aggregate: 2²² fixed-point steps per bound

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Settings:
    """Knobs read from the environment (see the module docstring)."""

    rows: int = 1_000_000
    epsilon: float = 1.0
    repeats: int = 5
    min_seconds: float = 1.0
    cpu: int | None = None
    seed: int = 20_261

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``VEILX_BENCH_*``."""
        env = os.environ
        cpu = env.get("VEILX_BENCH_CPU")
        return cls(
            rows=int(float(env.get("VEILX_BENCH_DP_ROWS", "1e6"))),
            epsilon=float(env.get("VEILX_BENCH_DP_EPSILON", "1.0")),
            repeats=int(env.get("VEILX_BENCH_REPEATS", "5")),
            min_seconds=float(env.get("VEILX_BENCH_MIN_SECONDS", "1.0")),
            cpu=int(cpu) if cpu else None,
        )


SPECS: Final = (
    ColumnSpec("region", ColumnType.STRING, Sensitivity.PUBLIC, categories=REGIONS),
    ColumnSpec("age", ColumnType.NUMBER, Sensitivity.QUASI_IDENTIFIER),
    ColumnSpec("income", ColumnType.NUMBER, Sensitivity.SENSITIVE),
)


def make_table(n: int, rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
    """Columns for :data:`SPECS`, every value inside its bounds."""
    return {
        "region": np.array(REGIONS)[rng.integers(0, len(REGIONS), n)],
        "age": rng.integers(18, 91, n).astype(np.float64),
        "income": np.minimum(rng.lognormal(10.5, 0.6, n), BOUNDS["income"][1]),
    }


def make_policy() -> RightsPolicy:
    """A policy permitting ``aggregate`` on the three columns, with bounds."""
    return RightsPolicy.model_validate(
        {
            "permitted_kinds": ["aggregate"],
            "permitted_columns": ["age", "income", "region"],
            "purposes": ["research"],
            "regions": ["DE"],
            "budget_per_buyer": {"epsilon": 10.0, "delta": 0.0},
            "budget_per_dataset": {"epsilon": 100.0, "delta": 0.0},
            "column_bounds": {
                name: {"lower": lo, "upper": hi} for name, (lo, hi) in BOUNDS.items()
            },
        }
    )


def make_request(epsilon: float) -> AggregateRequest:
    """Count, sum, mean and variance of both columns per region, Laplace DP."""
    return AggregateRequest.model_validate(
        {
            "statistics": ["count", "sum", "mean", "variance"],
            "columns": list(COLUMNS),
            "group_by": ["region"],
            "mode": "dp",
            "dp": {"epsilon": epsilon, "mechanism": "laplace"},
        }
    )


@dataclass(frozen=True)
class Exact:
    """Per group (in the table's level order): the true statistics."""

    levels: tuple[str, ...]
    count: Floats
    sum: dict[str, Floats]
    mean: dict[str, Floats]
    variance: dict[str, Floats]


def numpy_aggregate(table: Table) -> Exact:
    """The baseline: the same statistics with ``np.bincount`` (two-pass variance)."""
    encoded = table.encoded("region")
    codes, groups = encoded.codes, len(encoded.levels)
    count = np.bincount(codes, minlength=groups).astype(np.float64)
    sums: dict[str, Floats] = {}
    means: dict[str, Floats] = {}
    variances: dict[str, Floats] = {}
    for name in COLUMNS:
        x = table.numbers(name)
        s = np.bincount(codes, weights=x, minlength=groups).astype(np.float64)
        m = s / count
        sums[name], means[name] = s, m
        variances[name] = (
            np.bincount(codes, weights=(x - m[codes]) ** 2, minlength=groups) / count
        )
    return Exact(tuple(str(v) for v in encoded.levels), count, sums, means, variances)


def released_statistics(result: AggregateResult) -> int:
    """How many numbers the release holds (counts, sums, means, variances)."""
    total = 0
    for group in result.groups:
        total += group.count is not None
        for stat in (group.sum, group.mean, group.variance):
            total += sum(v is not None for v in stat.values())
    return total


def _step(lo: float, hi: float) -> float:
    _, exponent = math.frexp(max(abs(lo), abs(hi)))
    return math.ldexp(1.0, exponent - _GRID_BITS)


def check_release(
    result: AggregateResult, exact: Exact, epsilon: float
) -> dict[str, Any]:
    """Largest error / tolerance per kind of statistic, and whether all pass.

    Tolerances (per group, ε_s = ε / 7 the share of each noisy primitive, t = 20
    Laplace scales, n the true count, r = (hi − lo)/2, M = max |bound|, s the grid
    step): count t/ε_s; sum t(M + s)/ε_s + n·s; mean (t(r + s) + |μ − mid|·t)/ε_s
    / (n − t/ε_s) + s; variance 2t(r + s)²/ε_s / (n − t/ε_s) + 2r·tol_mean + 2sM.
    """
    eps_s = split_evenly(epsilon, 1 + 3 * len(COLUMNS))
    t = TAIL_SCALES
    worst: dict[str, float] = {"count": 0.0, "sum": 0.0, "mean": 0.0, "variance": 0.0}
    index = {level: i for i, level in enumerate(exact.levels)}
    for group in result.groups:
        g = index[str(group.key[0])]
        n = float(exact.count[g])
        n_low = max(n - t / eps_s, 1.0)
        if group.count is not None:
            worst["count"] = max(worst["count"], abs(group.count - n) / (t / eps_s))
        for name in COLUMNS:
            lo, hi = BOUNDS[name]
            step, big, r = _step(lo, hi), max(abs(lo), abs(hi)), (hi - lo) / 2
            mid = (lo + hi) / 2
            tol_sum = t * (big + step) / eps_s + n * step
            tol_mean = (
                t * (r + step) / eps_s + abs(exact.mean[name][g] - mid) * t / eps_s
            ) / n_low + step
            tol_var = (
                2 * t * (r + step) ** 2 / eps_s / n_low
                + 2 * r * tol_mean
                + 2 * step * big
            )
            for kind, got, want, tol in (
                ("sum", group.sum.get(name), exact.sum[name][g], tol_sum),
                ("mean", group.mean.get(name), exact.mean[name][g], tol_mean),
                (
                    "variance",
                    group.variance.get(name),
                    exact.variance[name][g],
                    tol_var,
                ),
            ):
                if got is None:
                    worst[kind] = math.inf
                    continue
                worst[kind] = max(worst[kind], abs(got - float(want)) / tol)
    out: dict[str, Any] = {f"{k}_err_over_tol": v for k, v in worst.items()}
    out["checks_passed"] = all(v <= 1.0 for v in worst.values()) and (
        result.privacy_loss.epsilon <= epsilon
    )
    return out


def _relative_errors(result: AggregateResult, exact: Exact) -> dict[str, float]:
    index = {level: i for i, level in enumerate(exact.levels)}
    worst = {"count": 0.0, "sum": 0.0, "mean": 0.0, "variance": 0.0}
    for group in result.groups:
        g = index[str(group.key[0])]
        if group.count is not None:
            worst["count"] = max(
                worst["count"], abs(group.count - exact.count[g]) / exact.count[g]
            )
        for kind, values, truth in (
            ("sum", group.sum, exact.sum),
            ("mean", group.mean, exact.mean),
            ("variance", group.variance, exact.variance),
        ):
            for name, got in values.items():
                if got is not None:
                    want = float(truth[name][g])
                    worst[kind] = max(worst[kind], abs(got - want) / abs(want))
    return {f"max_rel_err_{k}": v for k, v in worst.items()}


def _clear_calibration() -> None:
    """Empty OpenDP's calibration cache so the first call is measured cold."""
    from mpc_engine.dp import _backend

    for name in ("calibrate_laplace", "calibrate_gaussian"):
        clear = getattr(getattr(_backend, name, None), "cache_clear", None)
        if callable(clear):
            clear()


def run(settings: Settings | None = None) -> list[Result]:
    """Build the table, time the DP release and the numpy baseline on one core."""
    settings = settings or Settings.from_env()
    console = Console(width=None if sys.stdout.isatty() else 180)
    load = os.getloadavg()[0]
    rng = np.random.default_rng(settings.seed)
    policy = make_policy()
    request = make_request(settings.epsilon)
    exact_request = AggregateRequest.model_validate(
        request.model_dump(exclude={"mode", "dp"})
    )
    with one_core(settings.cpu) as pin:
        console.print(
            f"pinned to CPU {pin.cpu}, OpenBLAS threads {pin.blas_threads}, "
            f"load average {load:.2f}; {settings.rows:,} rows"
        )
        columns = make_table(settings.rows, rng)
        start = time.perf_counter()
        table = Table(columns, SPECS)
        table_s = time.perf_counter() - start
        del columns
        _clear_calibration()
        start = time.perf_counter()
        run_aggregate(request, table, policy)
        first_s = time.perf_counter() - start
        exact = numpy_aggregate(table)
        base = measure(
            lambda: numpy_aggregate(table),
            repeats=settings.repeats,
            min_seconds=settings.min_seconds,
            warmup=1,
        )
        releases: list[AggregateResult] = []
        private = measure(
            lambda: releases.append(run_aggregate(request, table, policy)),
            repeats=settings.repeats,
            min_seconds=settings.min_seconds,
        )
        exact_mode = measure(
            lambda: run_aggregate(exact_request, table, policy),
            repeats=settings.repeats,
            min_seconds=settings.min_seconds / 2,
        )
        n_groups = len(REGIONS)
        prims = 1 + 3 * len(COLUMNS)
        eps_share = split_evenly(settings.epsilon, prims)

        def noise_only() -> None:
            for _ in range(prims):
                laplace(
                    np.zeros(n_groups, dtype=np.int64), sensitivity=1, epsilon=eps_share
                )

        noise = measure(noise_only, repeats=settings.repeats, min_seconds=0.1)
        pinning = pin.describe()
    result = releases[-1]
    stats = released_statistics(result)
    checks = check_release(result, exact, settings.epsilon)
    t_dp, t_np = private.best * 1e3, base.best * 1e3
    allowed = RATIO_GOAL * t_np + PER_STAT_GOAL_MS * stats
    met = t_dp <= allowed and bool(checks["checks_passed"])
    console.print(
        f"numpy {t_np:.2f} ms, DP {t_dp:.2f} ms ({t_dp / t_np:.2f}×) for {stats} "
        f"released statistics; allowed {allowed:.2f} ms; checks "
        f"{'ok' if checks['checks_passed'] else 'FAILED'}"
    )
    common: dict[str, Any] = {
        "rows": settings.rows,
        "groups": n_groups,
        "columns": list(COLUMNS),
        **pinning,
        "timing": f"best of ≥ {settings.repeats} runs and ≥ "
        f"{settings.min_seconds:g} s of runs (medians in extras)",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "loadavg_1m_at_start": round(load, 2),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    params: Mapping[str, Any] = {
        **common,
        "request": "count, sum, mean, variance of age and income per region "
        "(4 declared categories), mode dp",
        "mechanism": "laplace (OpenDP)",
        "epsilon": settings.epsilon,
        "noisy_primitives": prims,
        "bounds": {k: list(v) for k, v in BOUNDS.items()},
        "data": "age ~ U{18..90}, income ~ min(lognormal(10.5, 0.6), 200000), "
        "region uniform over 4; all inside the bounds",
        "baseline": "numpy over the table's group codes and float64 columns: "
        "bincount counts and sums, means, two-pass variance",
    }
    return [
        Result(
            name="dp.aggregate",
            value=t_dp,
            unit="ms",
            baseline_name="dp.aggregate.numpy",
            baseline_value=t_np,
            ratio=t_dp / t_np,
            goal=f"≤ {RATIO_GOAL:g}× numpy + {PER_STAT_GOAL_MS:g} ms per released "
            "statistic, on one core; every statistic within its noise tolerance",
            met=met,
            params=dict(params),
            extras={
                "statistics": stats,
                "allowed_ms": allowed,
                "overhead_ms": t_dp - t_np,
                "overhead_per_stat_ms": (t_dp - t_np) / stats,
                "excess_over_ratio_per_stat_ms": (t_dp - RATIO_GOAL * t_np) / stats,
                "median_ms": private.median * 1e3,
                "runs": private.count,
                "first_call_ms": first_s * 1e3,
                "noise_ms": noise.best * 1e3,
                "exact_mode_ms": exact_mode.best * 1e3,
                "table_build_ms": table_s * 1e3,
                "epsilon_spent": result.privacy_loss.epsilon,
                **_relative_errors(result, exact),
                **checks,
            },
        ),
        Result(
            name="dp.aggregate.numpy",
            value=t_np,
            unit="ms",
            baseline_name=None,
            baseline_value=None,
            ratio=None,
            goal="baseline for dp.aggregate: the same statistics in numpy, one core",
            met=True,
            params={**common, "baseline": params["baseline"]},
            extras={"median_ms": base.median * 1e3, "runs": base.count},
        ),
    ]

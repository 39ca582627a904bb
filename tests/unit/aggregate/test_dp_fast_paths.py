"""DP mode's fused numpy paths feed the noise exactly what the definitions say.

With the noise replaced by a recorder (values passed through, the requested loss
stated), every noisy primitive's true vector and sensitivity must equal a
row-by-row reference of the documented semantics: clamp to the bounds, put on the
fixed-point grid (``rint(clip(x) / step)``), centre at the grid midpoint, round the
scaled squares, and aggregate over the rows of each declared key. The fast paths
(grid clamping after quantising, in-place squares, binning by the table's own
codes, compare-and-count) must change none of these numbers.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from mpc_engine.aggregate import (
    AggregateRequest,
    ColumnSpec,
    ColumnType,
    Table,
    _execute,
    run_aggregate,
)
from mpc_engine.dp import Mechanism, NoisyRelease, PrivacyLoss
from mpc_engine.policy import Sensitivity
from tests.unit.aggregate.factories import (
    BOUNDS,
    SPECS,
    create_random_columns,
    make_policy,
)

GRID_BITS = 22


@dataclass(frozen=True)
class Noised:
    """One call of ``add_noise``: the true vector and its stated sensitivity."""

    values: np.ndarray
    sensitivity: float


@pytest.fixture
def noised(monkeypatch: pytest.MonkeyPatch) -> list[Noised]:
    """Replace the noise with a recorder that passes the true values through."""
    calls: list[Noised] = []

    def add_noise(
        value: Any,
        *,
        mechanism: Mechanism,
        sensitivity: float,
        epsilon: float,
        delta: float = 0.0,
    ) -> NoisyRelease[Any]:
        calls.append(Noised(np.array(value, copy=True), sensitivity))
        return NoisyRelease(value, PrivacyLoss(epsilon, delta), mechanism, 1.0)

    monkeypatch.setattr(_execute, "add_noise", add_noise)
    return calls


def step_of(lo: float, hi: float) -> float:
    _, exponent = math.frexp(max(abs(lo), abs(hi)))
    return math.ldexp(1.0, exponent - GRID_BITS)


def grid_reference(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The documented grid values: clamp, then divide by the step and round."""
    grid: np.ndarray = np.rint(np.clip(x, lo, hi) / step_of(lo, hi))
    return grid


def adversarial_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The factory's columns with infinities, -0.0, tiny and huge values mixed in."""
    columns = create_random_columns(rng, n, null_rate=0.2)
    for name in ("age", "income"):
        x = columns[name]
        for value in (np.inf, -np.inf, -0.0, 5e-324, 1e300, -1e300, 60.0 + 2**-16):
            x[rng.random(n) < 0.02] = value
    return columns


def reference_primitives(
    columns: dict[str, np.ndarray],
    keep: np.ndarray,
    group_by: list[str],
    stats: set[str],
    names: list[str],
    bins: int,
) -> list[Noised]:
    """Row by row: each primitive's true per-key vector and sensitivity, in the
    engine's order (the count, then per column sum, count, centred sums, cells)."""
    specs = {s.name: s for s in SPECS}
    domains = [specs[g].domain or () for g in group_by]
    keys = list(itertools.product(*domains))
    in_key = []
    for key in keys:
        mask = keep.copy()
        for name, value in zip(group_by, key, strict=True):
            column = columns[name]
            if column.dtype == object:
                mask &= np.array([v is not None and v == value for v in column])
            else:
                mask &= column == value
        in_key.append(mask)
    moments = bool({"mean", "variance"} & stats)
    out: list[Noised] = []
    if "count" in stats or (moments and any(not specs[c].nullable for c in names)):
        out.append(Noised(np.array([m.sum() for m in in_key]), 1))
    for name in names:
        lo, hi = BOUNDS[name]
        step = step_of(lo, hi)
        lo_q, hi_q = round(lo / step), round(hi / step)
        x = columns[name]
        valid = ~np.isnan(x)
        xq = grid_reference(np.where(valid, x, 0.0), lo, hi)
        sums = [int(xq[m & valid].sum()) for m in in_key]
        counts = [int((m & valid).sum()) for m in in_key]
        if "sum" in stats:
            out.append(Noised(np.array(sums), max(abs(lo_q), abs(hi_q))))
        if moments:
            if specs[name].nullable:
                out.append(Noised(np.array(counts), 1))
            mid_q = (lo_q + hi_q) // 2
            radius_q = max(hi_q - mid_q, mid_q - lo_q)
            centred = [s - c * mid_q for s, c in zip(sums, counts, strict=True)]
            out.append(Noised(np.array(centred), radius_q))
            if "variance" in stats:
                shift = max(0, (radius_q * radius_q).bit_length() - GRID_BITS)
                squares = np.rint((xq - mid_q) ** 2 * 2.0**-shift)
                out.append(
                    Noised(
                        np.array([int(squares[m & valid].sum()) for m in in_key]),
                        round(radius_q * radius_q * 2.0**-shift),
                    )
                )
        if "histogram" in stats:
            clamped = np.clip(np.where(valid, x, lo), lo, hi)
            cell = np.minimum(
                ((clamped - lo) * (bins / (hi - lo))).astype(int), bins - 1
            )
            out.append(
                Noised(
                    np.array(
                        [np.bincount(cell[m & valid], minlength=bins) for m in in_key]
                    ).reshape(-1),
                    1,
                )
            )
    return out


FILTERS: list[tuple[str | None, Any]] = [
    (None, lambda c: np.ones(c["age"].shape[0], dtype=bool)),
    (
        "age >= 30 and region != 'east'",
        lambda c: (c["age"] >= 30) & (c["region"] != "east"),
    ),
]
GROUPINGS = [
    [],
    ["region"],
    ["smoker"],
    ["year"],
    ["region", "smoker"],
    ["year", "region"],
]
STATISTICS = [
    ["count", "sum", "mean", "variance", "histogram"],
    ["sum", "variance"],
    ["mean"],
]


@pytest.mark.parametrize("n", [0, 3, 4000])
@pytest.mark.parametrize("group_by", GROUPINGS)
@pytest.mark.parametrize("flt", FILTERS, ids=["all", "filtered"])
@pytest.mark.parametrize("statistics", STATISTICS, ids=["all", "sum-var", "mean"])
def test_noised_vectors_match_a_row_by_row_reference(
    noised: list[Noised],
    n: int,
    group_by: list[str],
    flt: tuple[str | None, Any],
    statistics: list[str],
) -> None:
    columns = adversarial_columns(np.random.default_rng(n + len(group_by)), n)
    table = Table(columns, SPECS)
    text, keep = flt
    names = ["age", "income"]
    params: dict[str, Any] = {
        "statistics": statistics,
        "columns": names,
        "group_by": group_by,
        "filter": text,
        "mode": "dp",
        "dp": {"epsilon": 1.0},
    }
    if "histogram" in statistics:
        params["histogram_bins"] = 5
    result = run_aggregate(
        AggregateRequest.model_validate(params), table, make_policy()
    )
    want = reference_primitives(
        columns, keep(columns), group_by, set(statistics), names, bins=5
    )
    assert len(noised) == len(want)
    for got, expected in zip(noised, want, strict=True):
        assert got.values.dtype == np.int64
        assert got.values.tolist() == expected.values.tolist()
        assert got.sensitivity == expected.sensitivity
    # Noiseless, the released sums are the grid sums and means their ratio.
    if "sum" in statistics:
        step = step_of(*BOUNDS["age"])
        with_count = bool({"count", "mean", "variance"} & set(statistics))
        sums = want[1 if with_count else 0].values
        assert [g.sum["age"] for g in result.groups] == [
            float(s) * step for s in sums.tolist()
        ]


def test_noiseless_means_and_variances_are_the_clamped_columns(
    noised: list[Noised],
) -> None:
    rng = np.random.default_rng(11)
    columns = create_random_columns(rng, 20_000)
    table = Table(columns, SPECS)
    req = AggregateRequest.model_validate(
        {
            "statistics": ["count", "mean", "variance"],
            "columns": ["age", "income"],
            "group_by": ["region"],
            "mode": "dp",
            "dp": {"epsilon": 1.0},
        }
    )
    result = run_aggregate(req, table, make_policy())
    for group in result.groups:
        rows = columns["region"] == group.key[0]
        assert group.count == int(rows.sum())
        for name in ("age", "income"):
            lo, hi = BOUNDS[name]
            x = columns[name][rows]
            x = np.clip(x[~np.isnan(x)], lo, hi)
            step = step_of(lo, hi)
            assert group.mean[name] == pytest.approx(x.mean(), abs=step)
            assert group.variance[name] == pytest.approx(
                x.var(), abs=4 * step * max(abs(lo), abs(hi))
            )


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(0.0, 120.0), (0.0, 200_000.0), (-2.5, 0.75), (-1e9, 3e10), (1e-7, 3e-7)],
)
def test_grid_clamping_after_quantising_is_the_same_numbers(
    lo: float, hi: float
) -> None:
    rng = np.random.default_rng(12)
    step = step_of(lo, hi)
    width = hi - lo
    x = np.concatenate(
        [
            rng.uniform(lo - width, hi + width, 5000),
            # Half-way points between grid values, at and around the bounds.
            (np.rint(rng.uniform(lo, hi, 1000) / step) + 0.5) * step,
            [lo, hi, np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)],
            [np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308],
        ]
    )
    grid = _execute._Grid.of(lo, hi)
    want = grid_reference(x, lo, hi)
    assert np.array_equal(grid.quantize(x), want)
    out = np.empty_like(x)
    assert grid.quantize(x, out=out) is out
    assert np.array_equal(out, want)
    assert np.array_equal(grid.quantize(np.clip(x, lo, hi)), want)


@pytest.mark.parametrize("n_groups", range(1, 12))
def test_group_count_equals_bincount(n_groups: int) -> None:
    rng = np.random.default_rng(n_groups)
    for n in (0, 1, 1000):
        gid = rng.integers(0, n_groups, n).astype(np.intp)
        got = _execute._group_count(gid, n_groups)
        assert got.dtype == np.int64
        assert got.tolist() == np.bincount(gid, minlength=n_groups).tolist()


def _per_key_by_mapping(
    table: Table, group_by: list[str], rows: np.ndarray | None
) -> tuple[list[Any], list[int], list[float]]:
    gid, keys = _execute._declared_groups(table, group_by, rows)
    gid, rows = _execute._select(gid, rows)
    x = table.numbers("age") if rows is None else table.numbers("age")[rows]
    counts = np.bincount(gid, minlength=len(keys))
    sums = np.bincount(gid, weights=np.rint(x), minlength=len(keys))
    return keys, counts.tolist(), sums.tolist()


@pytest.mark.parametrize(
    "group_by",
    [["region"], ["smoker"], ["year"], ["region", "smoker"], ["smoker", "year"]],
)
@pytest.mark.parametrize("filtered", [False, True])
def test_binning_by_codes_gives_the_per_key_aggregates_of_the_kept_rows(
    group_by: list[str], filtered: bool
) -> None:
    rng = np.random.default_rng(13)
    table = Table(create_random_columns(rng, 3000), SPECS)
    rows = np.flatnonzero(rng.random(3000) < 0.5) if filtered else None
    groups = _execute._declared_bins(table, group_by, rows)
    assert groups is not None
    keys, counts, sums = _per_key_by_mapping(table, group_by, rows)
    assert groups.keys == keys
    x = table.numbers("age") if rows is None else table.numbers("age")[rows]
    got_counts = groups.per_key(_execute._group_count(groups.gid, groups.bins))
    got_sums = groups.per_key(_execute._group_sum(groups.gid, np.rint(x), groups.bins))
    assert got_counts.tolist() == counts
    assert got_sums.tolist() == sums


def test_binning_by_codes_steps_aside_for_many_undeclared_levels() -> None:
    specs = [
        ColumnSpec(
            "zone", ColumnType.STRING, Sensitivity.PUBLIC, categories=("z1", "z2")
        ),
        ColumnSpec("x", ColumnType.NUMBER, Sensitivity.SENSITIVE),
    ]
    rng = np.random.default_rng(14)
    zones = np.array([f"z{i}" for i in range(40)])[rng.integers(0, 40, 2000)]
    table = Table({"zone": zones, "x": rng.uniform(0, 1, 2000)}, specs)
    assert _execute._declared_bins(table, ["zone"], None) is None


def test_a_release_leaves_the_table_untouched(noised: list[Noised]) -> None:
    rng = np.random.default_rng(15)
    columns = adversarial_columns(rng, 5000)
    table = Table(columns, SPECS)
    before = {
        "age": table.numbers("age").copy(),
        "income": table.numbers("income").copy(),
        "region": table.encoded("region").codes.copy(),
        "smoker": table.encoded("smoker").codes.copy(),
    }
    req = AggregateRequest.model_validate(
        {
            "statistics": [
                "count",
                "sum",
                "mean",
                "variance",
                "histogram",
                "quantiles",
            ],
            "columns": ["age", "income"],
            "group_by": ["region"],
            "histogram_bins": 4,
            "quantiles": [0.5],
            "mode": "dp",
            "dp": {"epsilon": 1.0},
        }
    )
    run_aggregate(req, table, make_policy())
    for name in ("age", "income"):
        assert np.array_equal(table.numbers(name), before[name], equal_nan=True)
    for name in ("region", "smoker"):
        assert np.array_equal(table.encoded(name).codes, before[name])

"""Exact mode: equal to a row-by-row reference, never releases a group below k."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc_engine.aggregate import AggregateRequest, run_aggregate
from mpc_engine.aggregate.errors import (
    FilterValidationError,
    PolicyViolation,
    RequestMismatch,
)
from mpc_engine.dp import PrivacyLoss
from tests.unit.aggregate.factories import (
    BOUNDS,
    create_random_table,
    make_policy,
)

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
FILTERS = [
    None,
    "age >= 30",
    "region in ['north', 'south'] and not smoker = true",
    "income is null or city != 'aa'",
    "age between 20 and 60 or city is null",
]
GROUPINGS = [[], ["region"], ["region", "smoker"], ["city"], ["year", "smoker"]]
BINS = 4
LEVELS = [0.25, 0.5, 0.9]


def request(group_by: list[str], flt: str | None) -> AggregateRequest:
    return AggregateRequest.model_validate(
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
            "group_by": group_by,
            "filter": flt,
            "histogram_bins": BINS,
            "quantiles": LEVELS,
        }
    )


def reference(
    columns: dict[str, np.ndarray], group_by: list[str], keep: np.ndarray, k: int
) -> tuple[dict[tuple[Any, ...], dict[Any, Any]], bool]:
    """Per-group statistics computed row by row, with the documented suppression."""
    # Without group-by the whole (filtered) table is one group, even when empty.
    groups: dict[tuple[Any, ...], list[int]] = {} if group_by else {(): []}
    for i in np.flatnonzero(keep).tolist():
        parts: list[Any] = []
        for name in group_by:
            value = columns[name][i]
            if isinstance(value, float) and math.isnan(value):
                value = None
            parts.append(value.item() if isinstance(value, np.generic) else value)
        groups.setdefault(tuple(parts), []).append(i)
    out: dict[tuple[Any, ...], dict[Any, Any]] = {}
    suppressed = False
    for key, members in groups.items():
        if len(members) < k:
            suppressed = True
            continue
        stats: dict[Any, Any] = {"count": len(members)}
        for name in ("age", "income"):
            lo, hi = BOUNDS[name]
            values = [
                min(max(float(columns[name][i]), lo), hi)
                for i in members
                if not math.isnan(columns[name][i])
            ]
            if len(values) < k:
                suppressed = True
                stats[name] = None
            else:
                mean = sum(values) / len(values)
                stats[name] = {
                    "sum": sum(values),
                    "mean": mean,
                    "variance": sum((v - mean) ** 2 for v in values) / len(values),
                    "quantiles": np.quantile(values, LEVELS).tolist(),
                }
            cells = [0] * BINS
            for v in values:
                cells[min(int((v - lo) / (hi - lo) * BINS), BINS - 1)] += 1
            if any(c < k for c in cells):
                suppressed = True
            stats[name, "histogram"] = tuple(None if c < k else c for c in cells)
        out[key] = stats
    return out, suppressed


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 400),
    k=st.integers(2, 40),
    flt=st.sampled_from(FILTERS),
    group_by=st.sampled_from(GROUPINGS),
)
@PROPERTY
def test_exact_mode_matches_reference_and_respects_k(
    seed: int, n: int, k: int, flt: str | None, group_by: list[str]
) -> None:
    table, columns = create_random_table(np.random.default_rng(seed), n)
    req = request(group_by, flt)
    result = run_aggregate(req, table, make_policy(min_group_size=k))
    assert not result.dp_applied and result.privacy_loss == PrivacyLoss.zero()
    from mpc_engine.aggregate import evaluate_filter

    expr = req.parsed_filter()
    keep = np.ones(n, dtype=bool) if expr is None else evaluate_filter(expr, table)
    expected, suppressed = reference(columns, group_by, keep, k)
    assert result.suppressed == suppressed
    assert {g.key for g in result.groups} == set(expected)
    assert [g.key for g in result.groups] == sorted(
        (g.key for g in result.groups), key=lambda key: [(v is None, v) for v in key]
    )
    for group in result.groups:
        want = expected[group.key]
        assert group.count == want["count"] >= k  # never a group below k
        for name in ("age", "income"):
            assert group.histogram[name] == want[name, "histogram"]
            if want[name] is None:
                assert group.sum[name] is None and group.mean[name] is None
                assert group.variance[name] is None
                assert group.quantiles[name] == (None, None, None)
                continue
            assert group.sum[name] == pytest.approx(want[name]["sum"], rel=1e-9)
            assert group.mean[name] == pytest.approx(want[name]["mean"], rel=1e-9)
            assert group.variance[name] == pytest.approx(
                want[name]["variance"], rel=1e-6, abs=1e-6
            )
            assert group.quantiles[name] == pytest.approx(
                want[name]["quantiles"], rel=1e-9
            )


def test_small_groups_are_withheld_without_revealing_how_many() -> None:
    table, _ = create_random_table(np.random.default_rng(1), 60)
    req = AggregateRequest.model_validate(
        {"statistics": ["count"], "group_by": ["city"]}
    )
    result = run_aggregate(req, table, make_policy(min_group_size=12))
    assert result.suppressed
    assert all(g.count is not None and g.count >= 12 for g in result.groups)
    payload = result.as_dict()
    assert set(payload) == {
        "group_by",
        "groups",
        "dp_applied",
        "privacy_loss",
        "mechanism",
        "suppressed",
        "histogram_edges",
        "quantile_levels",
    }
    assert payload["suppressed"] is True  # a flag, not a number of groups


def test_histogram_edges_span_the_bounds() -> None:
    table, _ = create_random_table(np.random.default_rng(2), 100)
    req = AggregateRequest.model_validate(
        {"statistics": ["histogram"], "columns": ["age"], "histogram_bins": 4}
    )
    result = run_aggregate(req, table, make_policy(min_group_size=2))
    assert result.histogram_edges == {"age": (0.0, 30.0, 60.0, 90.0, 120.0)}


@pytest.mark.parametrize(
    ("params", "policy_changes", "error", "field"),
    [
        (
            {},
            {
                "permitted_kinds": ["psi"],
                "join_keys": ["city"],
                "permitted_columns": ["age"],
                "column_bounds": {},
            },
            PolicyViolation,
            "kind",
        ),
        (
            {},
            {"permitted_columns": ["region"], "column_bounds": {}},
            PolicyViolation,
            "columns.age",
        ),
        (
            {"group_by": ["city"]},
            {
                "permitted_columns": ["age"],
                "column_bounds": {"age": {"lower": 0, "upper": 1}},
            },
            PolicyViolation,
            "group_by.city",
        ),
        (
            {"filter": "income > 3"},
            {
                "permitted_columns": ["age"],
                "column_bounds": {"age": {"lower": 0, "upper": 1}},
            },
            PolicyViolation,
            "filter",
        ),
        (
            {"statistics": ["histogram"], "histogram_bins": 3},
            {"column_bounds": {}},
            PolicyViolation,
            "column_bounds.age",
        ),
        (
            {"mode": "dp", "dp": {"epsilon": 1}},
            {"column_bounds": {}},
            PolicyViolation,
            "column_bounds.age",
        ),
        ({"columns": ["region"]}, {}, RequestMismatch, "columns.region"),
        ({"columns": ["nope"]}, {}, RequestMismatch, "columns.nope"),
        ({"group_by": ["income"]}, {}, RequestMismatch, "group_by.income"),
        (
            {"group_by": ["city"], "mode": "dp", "dp": {"epsilon": 1}},
            {},
            RequestMismatch,
            "group_by",
        ),
    ],
)
def test_refusals_name_field_and_reason(
    params: dict[str, Any],
    policy_changes: dict[str, Any],
    error: type[Exception],
    field: str,
) -> None:
    table, _ = create_random_table(np.random.default_rng(0), 20)
    req = AggregateRequest.model_validate(
        {"statistics": ["mean"], "columns": ["age"], **params}
    )
    with pytest.raises(error) as info:
        run_aggregate(req, table, make_policy(**policy_changes))
    assert info.value.field == field  # type: ignore[attr-defined]
    assert str(info.value).startswith(f"{field}: ")


def test_filter_on_unknown_column_names_position() -> None:
    table, _ = create_random_table(np.random.default_rng(0), 20)
    req = AggregateRequest.model_validate(
        {"statistics": ["count"], "filter": "age > 3 and weight < 2"}
    )
    with pytest.raises(FilterValidationError) as info:
        run_aggregate(req, table, make_policy())
    assert (info.value.position, info.value.column) == (12, "weight")

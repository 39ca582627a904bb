"""DP mode: stated loss, group keys that do not leak, accuracy, noise scale and a
differencing pair whose outputs are as close as ε says."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

import numpy as np
import pytest

from mpc_engine.aggregate import (
    AggregateRequest,
    AggregateResult,
    ColumnSpec,
    ColumnType,
    Table,
    run_aggregate,
)
from mpc_engine.aggregate.errors import PolicyViolation
from mpc_engine.dp import Mechanism
from mpc_engine.policy import RightsPolicy, Sensitivity
from tests.unit.aggregate.factories import REGIONS, create_random_table, make_policy


def dp_request(**params: Any) -> AggregateRequest:
    dp = params.pop("dp", {"epsilon": 1.0})
    return AggregateRequest.model_validate({**params, "mode": "dp", "dp": dp})


def test_loss_is_confirmed_and_within_the_request() -> None:
    table, _ = create_random_table(np.random.default_rng(0), 3000)
    everything = {
        "statistics": ["count", "sum", "mean", "variance", "histogram", "quantiles"],
        "columns": ["age", "income"],
        "group_by": ["region", "smoker"],
        "histogram_bins": 5,
        "quantiles": [0.1, 0.5],
    }
    settings: list[dict[str, Any]] = [
        {"epsilon": 2.0},
        {"epsilon": 2.0, "delta": 1e-6},
        {"epsilon": 0.3, "delta": 1e-6, "mechanism": "gaussian"},
    ]
    for dp in settings:
        result = run_aggregate(dp_request(**everything, dp=dp), table, make_policy())
        assert result.dp_applied and not result.suppressed
        assert result.mechanism is Mechanism(dp.get("mechanism", "laplace"))
        assert result.privacy_loss.epsilon <= dp["epsilon"]
        assert result.privacy_loss.epsilon == pytest.approx(dp["epsilon"], rel=1e-6)
        # Laplace with declared keys spends no δ; Gaussian spends all of it.
        expected_delta = dp.get("delta", 0.0) if "mechanism" in dp else 0.0
        assert result.privacy_loss.delta <= dp.get("delta", 0.0)
        assert result.privacy_loss.delta == pytest.approx(expected_delta)


def test_declared_domains_release_every_key_regardless_of_data() -> None:
    table, _ = create_random_table(np.random.default_rng(1), 500)
    req = dp_request(
        statistics=["count", "mean"],
        columns=["age"],
        group_by=["region", "year"],
        filter="region != 'east'",  # 'east' is empty after the filter: still released
    )
    result = run_aggregate(req, table, make_policy())
    assert [g.key for g in result.groups] == [
        (r, y) for r in REGIONS for y in (2022.0, 2023.0, 2024.0)
    ]
    for group in result.groups:
        mean = group.mean["age"]
        assert mean is None or 0.0 <= mean <= 120.0  # clamped to the bounds


def test_undeclared_keys_need_delta_and_rare_keys_stay_hidden() -> None:
    rng = np.random.default_rng(2)
    n = 4000
    specs = [
        ColumnSpec("city", ColumnType.STRING, Sensitivity.QUASI_IDENTIFIER),
        ColumnSpec("x", ColumnType.NUMBER, Sensitivity.SENSITIVE),
    ]
    city = np.array(["big"] * (n - 3) + ["rare", "rare", "unique"])
    table = Table({"city": city, "x": rng.uniform(0, 1, n)}, specs)
    policy = RightsPolicy.model_validate(
        {
            "permitted_kinds": ["aggregate"],
            "permitted_columns": ["city", "x"],
            "purposes": ["research"],
            "regions": ["DE"],
            "min_group_size": 5,
            "budget_per_buyer": {"epsilon": 1, "delta": 1e-6},
            "budget_per_dataset": {"epsilon": 1, "delta": 1e-6},
            "column_bounds": {"x": {"lower": 0, "upper": 1}},
        }
    )
    req = dp_request(
        statistics=["count", "sum"],
        columns=["x"],
        group_by=["city"],
        dp={"epsilon": 1.0, "delta": 1e-6},
    )
    for _ in range(30):
        result = run_aggregate(req, table, policy)
        assert [g.key for g in result.groups] == [("big",)]
        assert result.privacy_loss.delta <= 1e-6
        assert result.groups[0].count == pytest.approx(n - 3, abs=40)


def test_nullable_column_mean_uses_its_own_count() -> None:
    rng = np.random.default_rng(3)
    table, columns = create_random_table(rng, 50_000, null_rate=0.5)
    result = run_aggregate(
        dp_request(statistics=["mean", "variance"], columns=["income"]),
        table,
        make_policy(),
    )
    income = np.clip(columns["income"][~np.isnan(columns["income"])], 0, 200_000)
    group = result.groups[0]
    assert group.count is None  # not requested
    # Noise on the mean ≈ (2 · 2 / ε) · bound / n ≈ 32: far below 5% of the mean.
    assert group.mean["income"] == pytest.approx(income.mean(), rel=0.05)
    assert group.variance["income"] == pytest.approx(income.var(), rel=0.1)


def test_accuracy_on_a_large_table() -> None:
    rng = np.random.default_rng(4)
    table, columns = create_random_table(rng, 200_000)
    req = dp_request(
        statistics=["count", "sum", "mean", "histogram", "quantiles"],
        columns=["age"],
        group_by=["smoker"],
        histogram_bins=6,
        quantiles=[0.5],
    )
    result = run_aggregate(req, table, make_policy())
    age = np.clip(columns["age"], 0, 120)
    for group in result.groups:
        rows = columns["smoker"] == group.key[0]
        # 5 primitives at ε/5 each: count noise b = 5, sum noise b = 5 · 120.
        assert group.count == pytest.approx(int(rows.sum()), abs=100)
        assert group.sum["age"] == pytest.approx(age[rows].sum(), abs=60_000)
        assert group.mean["age"] == pytest.approx(age[rows].mean(), abs=0.5)
        true_hist = np.histogram(age[rows], bins=6, range=(0, 120))[0]
        assert np.abs(np.array(group.histogram["age"]) - true_hist).max() < 100
        assert group.quantiles["age"][0] == pytest.approx(np.median(age[rows]), abs=2.5)


def test_count_noise_has_the_stated_scale() -> None:
    # 400 declared groups × 10 runs: 4 000 samples of the count noise.
    n_groups = 400
    specs = [
        ColumnSpec(
            "g",
            ColumnType.NUMBER,
            Sensitivity.PUBLIC,
            categories=tuple(range(n_groups)),
        )
    ]
    table = Table({"g": np.repeat(np.arange(n_groups, dtype=float), 3)}, specs)
    policy = make_policy(permitted_columns=["g"], column_bounds={})
    req = dp_request(statistics=["count"], group_by=["g"], dp={"epsilon": 0.5})
    noise = [
        g.count - 3  # type: ignore[operator]
        for _ in range(10)
        for g in run_aggregate(req, table, policy).groups
    ]
    p = math.exp(-0.5)  # discrete Laplace, scale 1/ε = 2
    assert statistics.pvariance(noise) == pytest.approx(2 * p / (1 - p) ** 2, rel=0.1)
    assert abs(statistics.fmean(noise)) < 0.2


def test_differencing_pair_is_bounded_by_epsilon() -> None:
    """Two filters that differ by one row: outputs must be e^ε-indistinguishable.

    Each group holds the same 20 rows and the second filter drops one of them, so
    one run gives 1 000 independent samples of the released count for each side.
    With ε = 1 every output value must have a probability ratio within e^±1 (a
    loose sampling margin of 0.2 on the log ratio), and the pair must not be told
    apart better than tanh(ε/2) in total variation.
    """
    n_groups, per_group, epsilon = 1000, 20, 1.0
    specs = [
        ColumnSpec(
            "g",
            ColumnType.NUMBER,
            Sensitivity.PUBLIC,
            categories=tuple(range(n_groups)),
        ),
        ColumnSpec("v", ColumnType.NUMBER, Sensitivity.SENSITIVE),
    ]
    table = Table(
        {
            "g": np.repeat(np.arange(n_groups, dtype=float), per_group),
            "v": np.tile(np.arange(1, per_group + 1, dtype=float), n_groups),
        },
        specs,
    )
    policy = make_policy(
        permitted_columns=["g", "v"], column_bounds={"v": {"lower": 0, "upper": 20}}
    )

    def samples(flt: str) -> Counter[int]:
        req = dp_request(
            statistics=["count"], group_by=["g"], filter=flt, dp={"epsilon": epsilon}
        )
        out: Counter[int] = Counter()
        for _ in range(20):
            result: AggregateResult = run_aggregate(req, table, policy)
            assert result.privacy_loss.epsilon <= epsilon
            out.update(g.count for g in result.groups if g.count is not None)
        return out

    with_row, without_row = samples("v >= 0"), samples("v >= 0 and v != 7")
    total = sum(with_row.values())
    assert total == sum(without_row.values()) == 20 * n_groups
    mean_gap = (
        sum(k * c for k, c in with_row.items())
        - sum(k * c for k, c in without_row.items())
    ) / total
    assert mean_gap == pytest.approx(1.0, abs=0.1)  # the row does reach the output
    for value in set(with_row) | set(without_row):
        a, b = with_row[value], without_row[value]
        if min(a, b) >= 1000:
            assert abs(math.log(a / b)) <= epsilon + 0.2, (value, a, b)
    tv = sum(
        abs(with_row[v] - without_row[v]) for v in set(with_row) | set(without_row)
    )
    assert tv / (2 * total) <= math.tanh(epsilon / 2) + 0.03


def test_a_policy_requiring_dp_refuses_exact_mode() -> None:
    """``require_dp`` closes differencing on exact releases: only DP may run."""
    table, _ = create_random_table(np.random.default_rng(11), 500)
    policy = make_policy().model_copy(update={"require_dp": True})
    exact = AggregateRequest.model_validate(
        {"statistics": ["count"], "group_by": ["region"]}
    )
    with pytest.raises(PolicyViolation, match="requires differential privacy") as err:
        run_aggregate(exact, table, policy)
    assert err.value.field == "mode"
    private = dp_request(statistics=["count"], group_by=["region"])
    assert run_aggregate(private, table, policy).dp_applied

"""The HE and DP benchmarks at tiny sizes: result structure and correctness checks."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import pytest

from bench import dp_aggregate, he_compute
from bench._onecore import blas_threads, measure, one_core
from bench.harness import CORE_FIELDS, REGISTRY, Result, resolve
from mpc_engine.aggregate import Table, run_aggregate

HE_SETTINGS = he_compute.Settings(
    eval_rows=(2_000, 5_000),
    infer_rows=(100, 4_196),  # a partial batch; a full one plus a partial one
    epsilon=50.0,  # small n: a large ε keeps the DP check against numpy tight
    encrypt_vectors=2,
    repeats=1,
    min_seconds=0.0,
)
DP_SETTINGS = dp_aggregate.Settings(rows=20_000, repeats=1, min_seconds=0.0)


@pytest.fixture(scope="module")
def he_results() -> dict[str, Result]:
    return {r.name: r for r in he_compute.run(HE_SETTINGS)}


@pytest.fixture(scope="module")
def dp_results() -> dict[str, Result]:
    return {r.name: r for r in dp_aggregate.run(DP_SETTINGS)}


def check_structure(results: dict[str, Result]) -> None:
    for name, r in results.items():
        entry = r.to_json()
        assert list(entry)[: len(CORE_FIELDS)] == list(CORE_FIELDS)
        json.dumps(entry, allow_nan=False)
        assert r.value > 0, name
        if r.baseline_name is not None:
            base = results[r.baseline_name]  # the baseline ran in the same run
            assert r.baseline_value == base.value
            assert r.ratio == pytest.approx(r.value / base.value)
        else:
            assert r.ratio is None and r.baseline_value is None


def test_registry_lists_the_new_benchmarks() -> None:
    modules = {b.module: b for b in REGISTRY}
    assert modules["he_compute"].entries == (
        "he.model_eval",
        "he.inference",
        "he.encrypt",
    )
    assert modules["dp_aggregate"].entries == ("dp.aggregate",)
    assert [b.module for b in resolve(["he"])] == ["he_compute"]
    assert [b.module for b in resolve(["he.model_eval.first"])] == ["he_compute"]
    assert [b.module for b in resolve(["dp.aggregate"])] == ["dp_aggregate"]


def test_he_entries_and_baselines(he_results: dict[str, Result]) -> None:
    assert set(he_results) == {
        "he.model_eval.first",
        "he.model_eval.cached",
        "he.model_eval.numpy",
        "he.inference",
        "he.inference.numpy",
        "he.encrypt.model_eval",
        "he.encrypt.inference",
        "he.encrypt.aes_gcm",
    }
    check_structure(he_results)
    for name in ("he.model_eval.first", "he.model_eval.cached"):
        assert he_results[name].baseline_name == "he.model_eval.numpy"
        assert he_results[name].unit == "s"
    assert he_results["he.inference"].baseline_name == "he.inference.numpy"
    assert he_results["he.encrypt.inference"].baseline_name == "he.encrypt.aes_gcm"


def test_model_eval_decrypted_mse_matches_numpy(
    he_results: dict[str, Result],
) -> None:
    for name in ("he.model_eval.first", "he.model_eval.cached"):
        x = he_results[name].extras
        assert x["checks_passed"] is True
        assert x["rows"] == 5_000
        assert (
            abs(x["mse_decrypted"] - x["mse_plain_perturbed"])
            <= x["tolerance_vs_plain"]
        )
        assert x["abs_err_vs_numpy"] <= x["tolerance_vs_numpy"]
        assert x["mse_numpy"] == he_results["he.model_eval.numpy"].extras["mse"]
        # the HE tolerance is meaningful: far below the MSE itself
        assert x["tolerance_vs_plain"] < 1e-2 * x["mse_numpy"]
        for rows in ("2000", "5000"):
            assert x[f"s_{rows}"] > 0
            assert x[f"ratio_{rows}"] > 0
    first = he_results["he.model_eval.first"].extras
    assert first["gram_s"] + first["perturb_s"] + first["evaluate_s"] <= (
        he_results["he.model_eval.first"].value * 1.01
    )
    assert first["upload_bytes"] > 0 and first["download_bytes"] > 0


def test_model_eval_goal_needs_the_goal_size(he_results: dict[str, Result]) -> None:
    # at 5,000 rows the goal (stated at 10⁷ rows) is not evaluated: never met
    for name in ("he.model_eval.first", "he.model_eval.cached"):
        r = he_results[name]
        assert not r.met
        assert r.params["goal_rows"] == 10_000_000
        assert r.params["rows"] == [2_000, 5_000]


def test_inference_scores_match_numpy(he_results: dict[str, Result]) -> None:
    r = he_results["he.inference"]
    x = r.extras
    assert r.unit == "rows/s"
    assert x["checks_passed"] is True
    assert x["max_abs_err"] <= x["tolerance"]
    assert x["rows"] == 4_196 and x["batches"] == 2
    assert x["e2e_rows_per_s"] < r.value  # end to end includes the node's work
    for rows in ("1e2", "4196"):
        assert x[f"node_rows_per_s_{rows}"] > 0
        assert x[f"e2e_rows_per_s_{rows}"] > 0
    assert r.met == (r.value >= he_compute.INFER_GOAL)


def test_encryption_round_trips(he_results: dict[str, Result]) -> None:
    for preset in ("model_eval", "inference"):
        r = he_results[f"he.encrypt.{preset}"]
        assert r.extras["max_abs_err"] <= he_compute.ENCRYPT_TOL
        assert r.extras["values_per_ciphertext"] == 4096
        assert r.extras["bytes_per_value"] > 8
        assert r.met == (r.value >= he_compute.ENCRYPT_GOAL)
    assert he_results["he.encrypt.aes_gcm"].met


def test_eval_checks_catch_a_wrong_result() -> None:
    def timing() -> Any:
        return measure(lambda: None, repeats=1)

    good = he_compute.EvalSize(
        rows=100,
        numpy=timing(),
        first=timing(),
        cached=timing(),
        phases=(0.0, 0.0, 0.0),
        mse_numpy=1.0,
        mse_gram=1.0,
        mse_perturbed=1.01,
        mse_first=1.01,
        mse_cached=1.01,
        flood_sigma=1e-4,
        dp_sigma=0.01,
        laplace_scale=1e-3,
    )
    assert good.ok
    off = dataclasses.replace(good, mse_first=1.01 + 10 * good.he_tol)
    assert not off.checks["first_vs_plain"] and not off.ok
    drift = dataclasses.replace(good, mse_cached=1.0 + 10 * good.dp_tol)
    assert not drift.checks["cached_vs_numpy"]
    clamped = dataclasses.replace(good, mse_gram=1.001)  # rows were clamped
    assert not clamped.checks["gram_exact"]


def test_dp_entries_and_check(dp_results: dict[str, Result]) -> None:
    assert set(dp_results) == {"dp.aggregate", "dp.aggregate.numpy"}
    check_structure(dp_results)
    r = dp_results["dp.aggregate"]
    x = r.extras
    assert r.unit == "ms" and r.baseline_name == "dp.aggregate.numpy"
    assert x["statistics"] == 4 * (1 + 3 * 2)  # 4 groups: count + 3 stats × 2 cols
    assert x["checks_passed"] is True
    assert x["epsilon_spent"] <= DP_SETTINGS.epsilon
    for kind in ("count", "sum", "mean", "variance"):
        assert x[f"{kind}_err_over_tol"] <= 1.0
    assert r.baseline_value is not None
    assert x["allowed_ms"] == pytest.approx(
        1.2 * r.baseline_value + 0.2 * x["statistics"]
    )
    assert r.met == (r.value <= x["allowed_ms"])


def test_dp_check_catches_a_wrong_release() -> None:
    table = Table(
        dp_aggregate.make_table(5_000, np.random.default_rng(1)), dp_aggregate.SPECS
    )
    result = run_aggregate(
        dp_aggregate.make_request(5.0), table, dp_aggregate.make_policy()
    )
    exact = dp_aggregate.numpy_aggregate(table)
    assert dp_aggregate.released_statistics(result) == 28
    assert dp_aggregate.check_release(result, exact, 5.0)["checks_passed"]
    group = result.groups[0]
    wrong = dataclasses.replace(group, mean={**group.mean, "age": 119.0})
    tampered = dataclasses.replace(result, groups=(wrong, *result.groups[1:]))
    verdict = dp_aggregate.check_release(tampered, exact, 5.0)
    assert not verdict["checks_passed"] and verdict["mean_err_over_tol"] > 1


def test_numpy_baseline_matches_numpy_directly() -> None:
    columns = dp_aggregate.make_table(3_000, np.random.default_rng(2))
    table = Table(columns, dp_aggregate.SPECS)
    exact = dp_aggregate.numpy_aggregate(table)
    for i, level in enumerate(exact.levels):
        rows = columns["region"] == level
        assert exact.count[i] == rows.sum()
        for name in dp_aggregate.COLUMNS:
            values = columns[name][rows]
            assert exact.mean[name][i] == pytest.approx(values.mean())
            assert exact.variance[name][i] == pytest.approx(values.var())


def test_regression_rows_stay_inside_their_bounds() -> None:
    data = he_compute.make_regression(3_000, 4, np.random.default_rng(3))
    assert data.x.shape == (3_000, 4) and data.x.dtype == np.float64
    lo = np.array([b[0] for b in data.bounds.features])
    hi = np.array([b[1] for b in data.bounds.features])
    assert np.all(data.x >= lo) and np.all(data.x <= hi)
    assert data.bounds.label[0] < data.y.min() and data.y.max() < data.bounds.label[1]


@pytest.mark.parametrize(
    ("rows", "label"),
    [(100_000, "1e5"), (10_000_000, "1e7"), (4096, "4096"), (5, "5"), (10, "1e1")],
)
def test_size_label(rows: int, label: str) -> None:
    assert he_compute.size_label(rows) == label


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEILX_BENCH_HE_ROWS", "1e6, 1e5,1e6")
    monkeypatch.setenv("VEILX_BENCH_HE_INFER_ROWS", "8192")
    monkeypatch.setenv("VEILX_BENCH_DP_ROWS", "2e5")
    he = he_compute.Settings.from_env()
    assert he.eval_rows == (100_000, 1_000_000)
    assert he.infer_rows == (8192,)
    assert dp_aggregate.Settings.from_env().rows == 200_000
    monkeypatch.setenv("VEILX_BENCH_HE_ROWS", "lots")
    with pytest.raises(ValueError, match="VEILX_BENCH_HE_ROWS"):
        he_compute.Settings.from_env()


def test_one_core_pins_and_restores() -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    before = os.sched_getaffinity(0)
    with blas_threads(3) as n:
        assert n in (3, None)
    with one_core() as pin:
        assert pin.cpu == max(before)
        assert os.sched_getaffinity(0) == {pin.cpu}
        assert pin.blas_threads in (1, None)
    assert os.sched_getaffinity(0) == before
    with pytest.raises(ValueError, match="not available"), one_core(10_000):
        pass
    assert os.sched_getaffinity(0) == before


def test_measure_repeats_and_min_time() -> None:
    calls: list[int] = []
    timing = measure(lambda: calls.append(1), repeats=4)
    assert timing.count == 4 == len(calls)
    assert timing.best <= timing.median
    slow = measure(lambda: None, repeats=1, min_seconds=0.01, max_repeats=50)
    assert 1 <= slow.count <= 50

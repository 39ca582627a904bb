"""The plaintext Gram matrix: clamping, normalisation, sensitivity, DP perturbation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_engine.he import Gram, GramBounds, gram_matrix, sensitivity
from mpc_engine.he.errors import InvalidInput
from mpc_engine.policy import ColumnBounds


def _normalised(x: np.ndarray, y: np.ndarray, bounds: GramBounds) -> np.ndarray:
    lo = np.array([b[0] for b in bounds.features])
    hi = np.array([b[1] for b in bounds.features])
    xc = (np.clip(x, lo, hi) - (lo + hi) / 2) / ((hi - lo) / 2)
    ly, hy = bounds.label
    yc = (np.clip(y, ly, hy) - (ly + hy) / 2) / ((hy - ly) / 2)
    return np.column_stack([np.ones(len(x)), xc, yc])


def test_rows_are_clamped_then_normalised() -> None:
    rng = np.random.default_rng(0)
    bounds = GramBounds(((0.0, 10.0), (-1.0, 1.0)), (-5.0, 5.0))
    x = rng.normal(0, 8, size=(500, 2))  # many rows outside the bounds
    y = rng.normal(0, 9, size=500)
    gram = gram_matrix(x, y, bounds)
    z = _normalised(x, y, bounds)
    np.testing.assert_allclose(gram.moments, z.T @ z / 500, atol=1e-12)
    clipped = gram_matrix(np.clip(x, [0, -1], [10, 1]), np.clip(y, -5, 5), bounds)
    np.testing.assert_allclose(gram.moments, clipped.moments, atol=1e-12)
    assert gram.moments[0, 0] == 1.0
    assert np.all(np.abs(gram.moments) <= 1.0)
    np.testing.assert_array_equal(gram.moments, gram.moments.T)
    with pytest.raises(ValueError, match="read-only"):
        gram.moments[0, 0] = 2.0


def test_chunked_reduction_equals_one_pass() -> None:
    rng = np.random.default_rng(1)
    bounds = GramBounds(((-1.0, 1.0),) * 3, (0.0, 1.0))
    x = rng.uniform(-1, 1, size=(70_000, 3))  # more than one 65 536-row chunk
    y = rng.uniform(0, 1, size=70_000)
    z = _normalised(x, y, bounds)
    np.testing.assert_allclose(
        gram_matrix(x, y, bounds).moments, z.T @ z / 70_000, atol=1e-12
    )


def test_bounds_from_a_rights_policy() -> None:
    policy_bounds = {
        "age": ColumnBounds(lower=18, upper=90),
        "income": ColumnBounds(lower=0, upper=250_000),
        "churned": ColumnBounds(lower=0, upper=1),
    }
    bounds = GramBounds.from_policy(policy_bounds, ["age", "income"], "churned")
    assert bounds.features == ((18.0, 90.0), (0.0, 250_000.0))
    assert bounds.label == (0.0, 1.0)
    with pytest.raises(InvalidInput) as err:
        GramBounds.from_policy(policy_bounds, ["age", "tenure"], "churned")
    assert err.value.field == "column_bounds.tenure"


@pytest.mark.parametrize(
    ("features", "label", "field"),
    [
        ((), (0.0, 1.0), "bounds.features"),
        (((1.0, 1.0),), (0.0, 1.0), "bounds.features[0]"),
        (((0.0, float("inf")),), (0.0, 1.0), "bounds.features[0]"),
        (((0.0, 1.0),), (2.0, 1.0), "bounds.label"),
    ],
)
def test_bad_bounds_are_refused(
    features: tuple[tuple[float, float], ...], label: tuple[float, float], field: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        GramBounds(features, label)
    assert err.value.field == field


def test_bad_rows_are_refused() -> None:
    bounds = GramBounds(((0.0, 1.0), (0.0, 1.0)), (0.0, 1.0))
    with pytest.raises(InvalidInput, match="column 1"):
        gram_matrix([[0.5, np.nan]], [0.5], bounds)
    with pytest.raises(InvalidInput) as err:
        gram_matrix([[0.5, 0.5]], [np.inf], bounds)
    assert err.value.field == "y"
    with pytest.raises(InvalidInput, match="2 columns"):
        gram_matrix([[0.5]], [0.5], bounds)
    with pytest.raises(InvalidInput, match="no rows"):
        gram_matrix(np.zeros((0, 2)), np.zeros(0), bounds)
    with pytest.raises(InvalidInput, match="one label per row"):
        gram_matrix([[0.5, 0.5]], [0.5, 0.5], bounds)


def _unique(moments: np.ndarray) -> np.ndarray:
    rows, cols = Gram.noise_indices(moments.shape[0])
    return moments[rows, cols]


@st.composite
def _neighbours(draw: st.DrawFn) -> tuple[GramBounds, np.ndarray, np.ndarray, int]:
    d = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lows = rng.uniform(-5, 5, size=d + 1)
    widths = rng.uniform(0.1, 6, size=d + 1)
    bounds = GramBounds(
        tuple(
            (float(lo), float(lo + w))
            for lo, w in zip(lows[:-1], widths[:-1], strict=True)
        ),
        (float(lows[-1]), float(lows[-1] + widths[-1])),
    )
    lo, hi = lows, lows + widths
    data = rng.uniform(lo - 1, hi + 1, size=(n, d + 1))  # some rows get clamped
    other = data.copy()
    i = draw(st.integers(0, n - 1))
    # the replacement row: a random corner of the box or a random point
    corner = rng.integers(0, 2, size=d + 1).astype(bool)
    other[i] = np.where(corner, lo, hi) if draw(st.booleans()) else rng.uniform(lo, hi)
    return bounds, data, other, n


@settings(max_examples=150, deadline=None)
@given(_neighbours())
def test_one_replaced_row_moves_the_statistics_at_most_the_sensitivity(
    case: tuple[GramBounds, np.ndarray, np.ndarray, int],
) -> None:
    bounds, data, other, n = case
    sens = sensitivity(bounds, n)
    a = gram_matrix(data[:, :-1], data[:, -1], bounds)
    b = gram_matrix(other[:, :-1], other[:, -1], bounds)
    delta = _unique(a.moments) - _unique(b.moments)
    eps = 1e-12
    assert np.abs(delta).sum() <= sens.moments.l1 + eps
    assert np.linalg.norm(delta) <= sens.moments.l2 + eps
    assert np.abs(delta).max() <= sens.moments.linf + eps

    lo = np.array([*(f[0] for f in bounds.features), bounds.label[0]])
    hi = np.array([*(f[1] for f in bounds.features), bounds.label[1]])
    ra, rb = np.clip(data, lo, hi), np.clip(other, lo, hi)
    dmean = ra.mean(axis=0) - rb.mean(axis=0)
    assert np.abs(dmean).sum() <= sens.raw_means.l1 + eps
    assert np.linalg.norm(dmean) <= sens.raw_means.l2 + eps
    r2, c2 = np.triu_indices(ra.shape[1])
    dsecond = (ra.T @ ra / n)[r2, c2] - (rb.T @ rb / n)[r2, c2]
    scale = max(1.0, float(np.abs(ra).max()) ** 2)
    assert np.abs(dsecond).sum() <= sens.raw_second_moments.l1 + eps * scale
    assert np.linalg.norm(dsecond) <= sens.raw_second_moments.l2 + eps * scale
    assert np.abs(dsecond).max() <= sens.raw_second_moments.linf + eps * scale


def test_sensitivity_is_attained_by_opposite_corners() -> None:
    bounds = GramBounds(((0.0, 2.0),), (0.0, 1.0))
    sens = sensitivity(bounds, 4)
    assert sens.moments.linf == pytest.approx(2 / 4)
    # replacing the all-low corner by the all-high corner moves a mean by 2/n
    low = gram_matrix([[0.0]] * 4, [0.0] * 4, bounds)
    high = gram_matrix([[0.0]] * 3 + [[2.0]], [0.0] * 3 + [1.0], bounds)
    assert np.abs(low.moments - high.moments).max() == pytest.approx(2 / 4)
    with pytest.raises(InvalidInput):
        sensitivity(bounds, 0)


def test_perturbation_adds_symmetric_noise_and_keeps_the_original() -> None:
    rng = np.random.default_rng(2)
    bounds = GramBounds(((-1.0, 1.0),) * 2, (-1.0, 1.0))
    gram = gram_matrix(rng.uniform(-1, 1, (50, 2)), rng.uniform(-1, 1, 50), bounds)
    rows, _ = Gram.noise_indices(gram.dim)
    assert rows.size == gram.dim * (gram.dim + 1) // 2 - 1
    noise = rng.normal(0, 0.01, rows.size)
    noisy = gram.perturbed(noise)
    assert noisy.is_perturbed and not gram.is_perturbed
    np.testing.assert_array_equal(noisy.moments, noisy.moments.T)
    assert noisy.moments[0, 0] == 1.0
    np.testing.assert_allclose(
        _unique(noisy.moments), np.clip(_unique(gram.moments) + noise, -1, 1)
    )
    assert noisy.digest() != gram.digest()
    clipped = gram.perturbed(np.full(rows.size, 5.0))
    assert np.all(np.abs(clipped.moments) <= 1.0)
    with pytest.raises(InvalidInput, match="needs 9 values"):
        gram.perturbed(np.zeros(3))
    with pytest.raises(InvalidInput, match="NaN"):
        gram.perturbed(np.full(rows.size, np.nan))

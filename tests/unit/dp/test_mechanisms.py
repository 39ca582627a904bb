"""OpenDP-backed mechanisms: stated losses, noise scale, quantile scores, thresholds."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import opendp.prelude as opendp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc_engine.dp import (
    Mechanism,
    PrivacyLoss,
    add_noise,
    gaussian,
    laplace,
    quantile_index,
    split_evenly,
    threshold_release,
    total_loss,
)
from mpc_engine.dp._mechanisms import quantile_scores
from mpc_engine.dp.errors import InvalidParameter

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- shapes, types, stated losses ----------------------------------------------


def test_laplace_keeps_type_and_shape() -> None:
    scalar = laplace(3.5, sensitivity=1.0, epsilon=1.0)
    assert isinstance(scalar.value, float)
    assert scalar.loss == PrivacyLoss(1.0, 0.0)
    assert scalar.mechanism is Mechanism.LAPLACE
    assert scalar.scale == 1.0
    whole = laplace(7, sensitivity=2, epsilon=0.5)
    assert isinstance(whole.value, int)
    assert whole.scale == 4.0
    matrix = laplace(np.zeros((3, 4)), sensitivity=1.0, epsilon=1.0)
    assert matrix.value.shape == (3, 4) and matrix.value.dtype == np.float64
    counts = laplace(np.arange(5, dtype=np.int32), sensitivity=1, epsilon=1.0)
    assert counts.value.dtype == np.int64 and counts.value.shape == (5,)
    empty = laplace(np.zeros(0), sensitivity=1.0, epsilon=1.0)
    assert empty.value.shape == (0,)


@given(
    sensitivity=st.floats(1e-3, 1e6),
    epsilon=st.floats(1e-3, 50.0),
    integer=st.booleans(),
)
@PROPERTY
def test_laplace_loss_never_exceeds_target(
    sensitivity: float, epsilon: float, integer: bool
) -> None:
    if integer:
        sensitivity = float(max(1, round(sensitivity)))
    value: Any = np.zeros(3, dtype=np.int64 if integer else np.float64)
    release = laplace(value, sensitivity=sensitivity, epsilon=epsilon)
    assert release.loss.delta == 0.0
    assert release.loss.epsilon <= epsilon
    assert release.loss.epsilon == pytest.approx(epsilon, rel=1e-6)
    assert release.scale == pytest.approx(sensitivity / epsilon, rel=1e-6)


@given(
    epsilon=st.floats(0.01, 10.0),
    delta=st.sampled_from([1e-9, 1e-7, 1e-5, 1e-3]),
    sensitivity=st.floats(0.01, 1e4),
)
@settings(PROPERTY, max_examples=15)
def test_gaussian_loss_never_exceeds_target(
    epsilon: float, delta: float, sensitivity: float
) -> None:
    release = gaussian(
        np.zeros(2), sensitivity=sensitivity, epsilon=epsilon, delta=delta
    )
    assert release.loss.epsilon <= epsilon
    assert release.loss.delta <= delta
    assert release.loss.epsilon == pytest.approx(epsilon, rel=1e-6)
    # Never noisier than the classical calibration (Dwork & Roth Thm A.1, ε < 1).
    if epsilon < 1:
        classical = math.sqrt(2 * math.log(1.25 / delta)) * sensitivity / epsilon
        assert release.scale <= classical


def test_gaussian_matches_opendp_conversion() -> None:
    release = gaussian(0.0, sensitivity=3.0, epsilon=1.0, delta=1e-6)
    opendp.enable_features("contrib")
    meas = opendp.c.make_fix_delta(
        opendp.c.make_zCDP_to_approxDP(
            opendp.m.make_gaussian(
                opendp.atom_domain(T=float, nan=False),
                opendp.absolute_distance(T=float),
                scale=release.scale,
            )
        ),
        1e-6,
    )
    eps, dlt = meas.map(3.0)  # type: ignore[no-untyped-call]
    assert eps <= 1.0 and dlt == 1e-6
    assert eps == pytest.approx(1.0, rel=1e-6)


def test_add_noise_dispatches() -> None:
    assert add_noise(
        1.0, mechanism=Mechanism.LAPLACE, sensitivity=1, epsilon=1
    ).loss == (PrivacyLoss(1.0))
    out = add_noise(
        1.0, mechanism=Mechanism.GAUSSIAN, sensitivity=1, epsilon=1, delta=1e-6
    )
    assert out.mechanism is Mechanism.GAUSSIAN and out.loss.delta == 1e-6


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: laplace(1.0, sensitivity=1.0, epsilon=0.0), "epsilon"),
        (lambda: laplace(1.0, sensitivity=1.0, epsilon=math.nan), "epsilon"),
        (lambda: laplace(1.0, sensitivity=1.0, epsilon=math.inf), "epsilon"),
        (lambda: laplace(1.0, sensitivity=0.0, epsilon=1.0), "sensitivity"),
        (lambda: laplace(1.0, sensitivity=-1.0, epsilon=1.0), "sensitivity"),
        (lambda: laplace(1, sensitivity=0.5, epsilon=1.0), "sensitivity"),
        (lambda: laplace(math.nan, sensitivity=1.0, epsilon=1.0), "value"),
        (lambda: laplace(np.array([1.0, math.inf]), sensitivity=1, epsilon=1), "value"),
        (lambda: laplace(True, sensitivity=1.0, epsilon=1.0), "value"),
        (lambda: laplace("1", sensitivity=1.0, epsilon=1.0), "value"),  # type: ignore[type-var]
        (lambda: laplace(np.array(["a"]), sensitivity=1, epsilon=1), "value"),
        (lambda: gaussian(1.0, sensitivity=1.0, epsilon=1.0, delta=0.0), "delta"),
        (lambda: gaussian(1.0, sensitivity=1.0, epsilon=1.0, delta=1.0), "delta"),
        (
            lambda: add_noise(
                1.0,
                mechanism="x",  # type: ignore[arg-type]
                sensitivity=1,
                epsilon=1,
            ),
            "mechanism",
        ),
    ],
)
def test_invalid_parameters_name_the_field(call: object, field: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        call()  # type: ignore[operator]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


# -- noise scale ------------------------------------------------------------------


def test_laplace_noise_has_the_stated_scale() -> None:
    # E|X| = b for Laplace(b); for the discrete Laplace on integers (what integer
    # values get) E|X| = 2p / (1 - p²) with p = exp(-1/b). 20 000 samples put the
    # mean absolute value within ~1.5% (1 σ); 5% is a loose, non-flaky bound.
    p = math.exp(-1 / 2.0)
    cases: list[tuple[Any, float]] = [
        (np.zeros(20_000), 2.0),
        (np.zeros(20_000, dtype=np.int64), 2 * p / (1 - p * p)),
    ]
    for value, expected in cases:
        release = laplace(value, sensitivity=1.0, epsilon=0.5)
        assert release.scale == 2.0
        noise = release.value.astype(np.float64)
        assert abs(noise.mean()) < 0.15
        assert np.abs(noise).mean() == pytest.approx(expected, rel=0.05)


def test_gaussian_noise_has_the_stated_scale() -> None:
    release = gaussian(
        np.zeros(20_000, dtype=np.int64), sensitivity=10, epsilon=1.0, delta=1e-6
    )
    noise = release.value.astype(np.float64)
    assert abs(noise.mean()) < 3 * release.scale / math.sqrt(noise.size) * 2
    assert noise.std() == pytest.approx(release.scale, rel=0.05)


def test_noise_is_fresh_for_each_call() -> None:
    first = laplace(np.zeros(50), sensitivity=1.0, epsilon=1.0).value
    second = laplace(np.zeros(50), sensitivity=1.0, epsilon=1.0).value
    assert not np.array_equal(first, second)


# -- composition helpers --------------------------------------------------------------


@given(total=st.floats(1e-6, 100.0), parts=st.integers(1, 1000))
@PROPERTY
def test_split_evenly_never_oversplits(total: float, parts: int) -> None:
    from fractions import Fraction

    share = split_evenly(total, parts)
    assert Fraction(share) * parts <= Fraction(total)
    assert share == pytest.approx(total / parts, rel=1e-12)


def test_total_loss_is_basic_composition() -> None:
    losses = [PrivacyLoss(0.1, 1e-7)] * 10
    total = total_loss(losses)
    assert total.epsilon == pytest.approx(1.0) and total.epsilon >= 1.0 - 1e-15
    assert total.delta == pytest.approx(1e-6)
    assert total_loss([]) == PrivacyLoss.zero()
    assert PrivacyLoss(0.5) + PrivacyLoss(0.25, 1e-6) == PrivacyLoss(0.75, 1e-6)


# -- quantiles -------------------------------------------------------------------------


@given(
    data=st.lists(st.integers(0, 20), min_size=0, max_size=60),
    alpha=st.sampled_from([0.5, 0.1, 0.25, 0.9, 0.333, 0.05, 0.99]),
)
@PROPERTY
def test_quantile_scores_match_opendp(data: list[int], alpha: float) -> None:
    from mpc_engine.aggregate._execute import quantile_counts

    opendp.enable_features("contrib")
    candidates = np.linspace(0.0, 20.0, 11)  # data hits candidates exactly: ties
    x = np.array(data, dtype=np.float64)
    below, above = quantile_counts(x, np.zeros(x.size, dtype=np.intp), 1, candidates)
    # The arithmetic position trick agrees with searchsorted.
    assert below[0].tolist() == [int((x < c).sum()) for c in candidates]
    assert above[0].tolist() == [int((x > c).sum()) for c in candidates]
    scorer = opendp.t.make_quantile_score_candidates(
        opendp.vector_domain(opendp.atom_domain(T=float, nan=False)),
        opendp.symmetric_distance(),
        candidates.tolist(),
        alpha,
    )
    assert quantile_scores(below, above, alpha)[0].tolist() == scorer(x.tolist())


def test_quantile_index_finds_the_median_with_large_epsilon() -> None:
    rng = np.random.default_rng(7)
    groups = [rng.normal(loc, 1.0, 5000) for loc in (2.0, 5.0, 8.0)]
    candidates = np.linspace(0.0, 10.0, 101)
    below = np.array([[int((g < c).sum()) for c in candidates] for g in groups])
    above = np.array([[int((g > c).sum()) for c in candidates] for g in groups])
    picked = quantile_index(below, above, alpha=0.5, epsilon=5.0)
    assert picked.loss == PrivacyLoss(5.0)
    assert np.abs(candidates[picked.indices] - [2.0, 5.0, 8.0]).max() <= 0.2


def test_quantile_index_rejects_bad_input() -> None:
    good = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(InvalidParameter, match="counts_above"):
        quantile_index(good, np.zeros((2, 4), dtype=np.int64), alpha=0.5, epsilon=1)
    with pytest.raises(InvalidParameter, match="alpha"):
        quantile_index(good, good, alpha=1.5, epsilon=1)
    with pytest.raises(InvalidParameter, match="counts_below"):
        quantile_index(good - 1, good, alpha=0.5, epsilon=1)
    with pytest.raises(InvalidParameter, match="counts_below"):
        quantile_index(good.astype(float), good, alpha=0.5, epsilon=1)


# -- thresholds -----------------------------------------------------------------------


def test_threshold_release_drops_rare_keys_and_confirms_delta() -> None:
    counts = np.array([5000, 1, 2, 3000, 1, 0 + 1], dtype=np.int64)
    release = threshold_release(counts, epsilon=1.0, delta=1e-6, min_threshold=10)
    assert release.threshold >= 10
    assert release.kept.tolist() == [0, 3]
    assert np.abs(release.counts - [5000, 3000]).max() < 100
    assert release.loss.epsilon <= 1.0 and release.loss.delta <= 1e-6


def test_threshold_is_the_smallest_meeting_delta() -> None:
    loose = threshold_release(np.array([1]), epsilon=1.0, delta=1e-3)
    tight = threshold_release(np.array([1]), epsilon=1.0, delta=1e-9)
    assert loose.threshold < tight.threshold
    # About 1 + b·ln(1/(2δ)) for one new key (b = 1/ε).
    assert tight.threshold <= math.ceil(1 + math.log(1 / (2e-9))) + 1
    with pytest.raises(InvalidParameter, match="delta"):
        threshold_release(np.array([1]), epsilon=1.0, delta=0.0)
    with pytest.raises(InvalidParameter, match="counts"):
        threshold_release(np.array([0]), epsilon=1.0, delta=1e-6)

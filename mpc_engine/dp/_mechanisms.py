"""Typed mechanisms over aggregates: noisy values, quantile selection, thresholds.

Every function returns its release together with the ``PrivacyLoss`` that
OpenDP's privacy map confirmed for it. Neighbouring datasets differ by adding or
removing one row; the caller states the sensitivity of its aggregate under that
relation (L1 for Laplace, L2 for Gaussian; for a vector, of the whole vector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from mpc_engine.dp import _backend
from mpc_engine.dp._loss import Mechanism, PrivacyLoss, check_delta, check_epsilon
from mpc_engine.dp.errors import InvalidParameter

V = TypeVar("V", float, int, NDArray[np.floating[Any]], NDArray[np.integer[Any]])

_I64_MAX = 2**63 - 1


@dataclass(frozen=True)
class NoisyRelease(Generic[V]):
    """A noisy value, the loss its release costs, and how it was produced.

    ``value`` has the type and shape of the true value: integers get integer
    (discrete) noise and come back as int64, floats as float64. ``scale`` is the
    Laplace scale *b* or the Gaussian standard deviation σ.
    """

    value: V
    loss: PrivacyLoss
    mechanism: Mechanism
    scale: float


def _check_sensitivity(value: float, *, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(
            "sensitivity", f"must be a number, not {type(value).__name__}"
        )
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise InvalidParameter(
            "sensitivity", f"must be a finite number above 0 ({value!r})"
        )
    if integer and value != math.floor(value):
        raise InvalidParameter(
            "sensitivity",
            f"must be a whole number for integer values, which get integer noise "
            f"(got {value!r})",
        )
    if integer and value > _I64_MAX:
        raise InvalidParameter("sensitivity", "must fit a signed 64-bit integer")
    return value


def _flatten(value: object) -> tuple[list[Any], bool, tuple[int, ...] | None]:
    """``(python values, integer?, shape or None for a scalar)``."""
    if isinstance(value, bool | np.bool_):
        raise InvalidParameter("value", "must be a number or numeric array, not a bool")
    if isinstance(value, int | np.integer):
        as_int = int(value)
        if abs(as_int) > _I64_MAX:
            raise InvalidParameter("value", "must fit a signed 64-bit integer")
        return [as_int], True, None
    if isinstance(value, float | np.floating):
        as_float = float(value)
        if not math.isfinite(as_float):
            raise InvalidParameter("value", "must be finite (no NaN or infinity)")
        return [as_float], False, None
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iu":
            if value.size and (value.dtype.kind == "u" and int(value.max()) > _I64_MAX):
                raise InvalidParameter("value", "must fit signed 64-bit integers")
            return value.astype(np.int64).ravel().tolist(), True, value.shape
        if value.dtype.kind == "f":
            if not np.isfinite(value).all():
                raise InvalidParameter("value", "must be finite (no NaN or infinity)")
            return value.astype(np.float64).ravel().tolist(), False, value.shape
        raise InvalidParameter(
            "value", f"must be an integer or float array, not dtype {value.dtype}"
        )
    raise InvalidParameter(
        "value", f"must be a number or a numpy array, not {type(value).__name__}"
    )


def _restore(noisy: list[Any], integer: bool, shape: tuple[int, ...] | None) -> Any:
    if shape is None:
        return int(noisy[0]) if integer else float(noisy[0])
    dtype = np.int64 if integer else np.float64
    return np.asarray(noisy, dtype=dtype).reshape(shape)


def laplace(value: V, *, sensitivity: float, epsilon: float) -> NoisyRelease[V]:
    """Release ``value`` with Laplace noise: pure ε-DP.

    Parameters
    ----------
    value
        The true aggregate: a number or a numeric array (noised element-wise).
        Integers get discrete Laplace noise and stay integers.
    sensitivity
        The L1 sensitivity Δ₁: how far (sum of absolute differences) the whole
        value can move when one row is added or removed.
    epsilon
        The target ε; the noise scale is ``Δ₁ / ε``, confirmed by OpenDP's map.

    Returns
    -------
    NoisyRelease
        The noisy value and its ``PrivacyLoss(ε', 0)`` with ε' ≤ ``epsilon``.
    """
    flat, integer, shape = _flatten(value)
    delta1 = _check_sensitivity(sensitivity, integer=integer)
    eps = check_epsilon("epsilon", epsilon)
    calibrated = _backend.calibrate_laplace(delta1, eps, integer)
    noisy = _backend.invoke(calibrated, flat) if flat else []
    return NoisyRelease(
        cast(V, _restore(noisy, integer, shape)),
        calibrated.loss,
        Mechanism.LAPLACE,
        calibrated.scale,
    )


def gaussian(
    value: V, *, sensitivity: float, epsilon: float, delta: float
) -> NoisyRelease[V]:
    """Release ``value`` with Gaussian noise: (ε, δ)-DP.

    Parameters
    ----------
    value
        The true aggregate: a number or a numeric array (noised element-wise).
        Integers get discrete Gaussian noise and stay integers.
    sensitivity
        The L2 sensitivity Δ₂ of the whole value under adding or removing a row.
    epsilon, delta
        The target (ε, δ), δ > 0. σ comes from the largest ρ whose zCDP →
        (ε, δ) conversion (Canonne, Kamath, Steinke 2020) meets the target,
        ``σ = Δ₂ / √(2ρ)``, confirmed by OpenDP's maps.

    Returns
    -------
    NoisyRelease
        The noisy value and its ``PrivacyLoss(ε', δ)`` with ε' ≤ ``epsilon``.
    """
    flat, integer, shape = _flatten(value)
    delta2 = _check_sensitivity(sensitivity, integer=integer)
    eps = check_epsilon("epsilon", epsilon)
    dlt = check_delta("delta", delta, positive=True)
    calibrated = _backend.calibrate_gaussian(delta2, eps, dlt, integer)
    noisy = _backend.invoke(calibrated, flat) if flat else []
    return NoisyRelease(
        cast(V, _restore(noisy, integer, shape)),
        calibrated.loss,
        Mechanism.GAUSSIAN,
        calibrated.scale,
    )


def add_noise(
    value: V,
    *,
    mechanism: Mechanism,
    sensitivity: float,
    epsilon: float,
    delta: float = 0.0,
) -> NoisyRelease[V]:
    """Release ``value`` with ``mechanism`` (``laplace`` ignores ``delta``).

    Parameters
    ----------
    value
        The true aggregate (number or numeric array).
    mechanism
        ``Mechanism.LAPLACE`` (``sensitivity`` is L1) or ``Mechanism.GAUSSIAN``
        (``sensitivity`` is L2, ``delta`` > 0).
    sensitivity, epsilon, delta
        As for ``laplace`` and ``gaussian``.

    Returns
    -------
    NoisyRelease
        The noisy value and its confirmed loss.
    """
    if mechanism is Mechanism.LAPLACE:
        return laplace(value, sensitivity=sensitivity, epsilon=epsilon)
    if mechanism is Mechanism.GAUSSIAN:
        return gaussian(value, sensitivity=sensitivity, epsilon=epsilon, delta=delta)
    raise InvalidParameter("mechanism", f"unknown mechanism {mechanism!r}")


# -- quantiles -----------------------------------------------------------------


@dataclass(frozen=True)
class QuantileRelease:
    """Selected candidate indices (one per group) and the loss of the selection."""

    indices: NDArray[np.intp]
    loss: PrivacyLoss


def _count_matrix(field: str, counts: object) -> NDArray[np.int64]:
    if not isinstance(counts, np.ndarray) or counts.dtype.kind not in "iu":
        raise InvalidParameter(field, "must be a numpy integer array")
    if counts.ndim not in (1, 2) or counts.shape[-1] == 0:
        raise InvalidParameter(
            field,
            "must have shape (candidates,) or (groups, candidates), candidates ≥ 1",
        )
    if counts.size and int(counts.min()) < 0:
        raise InvalidParameter(field, "counts must not be negative")
    return np.atleast_2d(counts.astype(np.int64))


def quantile_scores(
    counts_below: NDArray[np.int64], counts_above: NDArray[np.int64], alpha: float
) -> NDArray[np.uint64]:
    """OpenDP's integer α-quantile score per candidate (lower is better).

    ``|(den − num) · #(x < c) − num · #(x > c)|`` with ``num/den`` OpenDP's
    rationalisation of α (Smith 2011; ``make_quantile_score_candidates``).
    """
    num, den = _backend.alpha_fraction(alpha)
    limit = (2**64 - 1) // den
    below = np.minimum(counts_below, limit).astype(np.uint64)
    above = np.minimum(counts_above, limit).astype(np.uint64)
    left = below * np.uint64(den - num)
    right = above * np.uint64(num)
    return np.where(left >= right, left - right, right - left)


def quantile_index(
    counts_below: NDArray[np.int64],
    counts_above: NDArray[np.int64],
    *,
    alpha: float,
    epsilon: float,
) -> QuantileRelease:
    """Select the α-quantile among sorted candidates with the exponential mechanism.

    For each group *g* and candidate *j*, ``counts_below[g, j]`` is the number of
    the group's values strictly below candidate *j* and ``counts_above[g, j]`` the
    number strictly above. The candidates (a public grid, strictly increasing) are
    scored as OpenDP's ``make_quantile_score_candidates`` does and one is picked per
    group by OpenDP's report-noisy-min (Smith 2011; McKenna & Sheldon 2020).

    Parameters
    ----------
    counts_below, counts_above
        Integer arrays of shape ``(candidates,)`` or ``(groups, candidates)``.
        Groups must be disjoint (each row counts in at most one group): the loss
        then covers all groups together (parallel composition).
    alpha
        The quantile level in [0, 1] (0.5 for the median).
    epsilon
        The target ε for the selection.

    Returns
    -------
    QuantileRelease
        One selected candidate index per group and the confirmed loss.
    """
    below = _count_matrix("counts_below", counts_below)
    above = _count_matrix("counts_above", counts_above)
    if below.shape != above.shape:
        raise InvalidParameter(
            "counts_above",
            f"shape {above.shape} differs from counts_below {below.shape}",
        )
    if isinstance(alpha, bool) or not (
        isinstance(alpha, int | float) and 0.0 <= alpha <= 1.0
    ):
        raise InvalidParameter("alpha", f"must be a number in [0, 1] (got {alpha!r})")
    eps = check_epsilon("epsilon", epsilon)
    selector = _backend.quantile_selector(float(alpha), below.shape[1], eps)
    scores = quantile_scores(below, above, float(alpha))
    picked = np.fromiter(
        (_backend.select_min(selector, row.tolist()) for row in scores),
        dtype=np.intp,
        count=scores.shape[0],
    )
    return QuantileRelease(picked, selector.loss)


# -- stable histograms (unknown keys) -----------------------------------------


@dataclass(frozen=True)
class ThresholdRelease:
    """The keys whose noisy count reached τ, their noisy counts, τ and the loss."""

    kept: NDArray[np.intp]
    counts: NDArray[np.int64]
    threshold: int
    loss: PrivacyLoss


def threshold_release(
    counts: NDArray[np.int64],
    *,
    epsilon: float,
    delta: float,
    min_threshold: int = 1,
) -> ThresholdRelease:
    """Release the counts of data-derived keys that survive a noisy threshold.

    When the set of keys (e.g. group-by values) comes from the data, releasing a
    key at all reveals that some row has it. Each count gets Laplace noise and only
    keys whose noisy count reaches τ are kept; τ is the smallest integer (at least
    ``min_threshold``) for which OpenDP's map confirms δ (Rogers 2023; OpenDP
    ``make_laplace_threshold``). Each row must contribute to exactly one count.

    Parameters
    ----------
    counts
        The true count per observed key (1-D integer array, entries ≥ 1).
    epsilon, delta
        The target (ε, δ), δ > 0.
    min_threshold
        A floor for τ (e.g. the policy's minimum group size).

    Returns
    -------
    ThresholdRelease
        Positions (into ``counts``) of the kept keys, ascending, with their noisy
        counts, the τ used and the confirmed loss.
    """
    if not isinstance(counts, np.ndarray) or counts.dtype.kind not in "iu":
        raise InvalidParameter("counts", "must be a numpy integer array")
    if counts.ndim != 1:
        raise InvalidParameter("counts", "must be one-dimensional")
    if counts.size and int(counts.min()) < 1:
        raise InvalidParameter("counts", "every observed key has a count of at least 1")
    eps = check_epsilon("epsilon", epsilon)
    dlt = check_delta("delta", delta, positive=True)
    if isinstance(min_threshold, bool) or not isinstance(min_threshold, int):
        raise InvalidParameter("min_threshold", "must be an integer")
    if min_threshold < 1:
        raise InvalidParameter("min_threshold", "must be at least 1")
    calibrated = _backend.calibrate_threshold(eps, dlt, min_threshold)
    noisy = (
        _backend.threshold_counts(
            calibrated, dict(enumerate(counts.astype(np.int64).tolist()))
        )
        if counts.size
        else {}
    )
    kept = np.array(sorted(noisy), dtype=np.intp)
    return ThresholdRelease(
        kept,
        np.array([noisy[int(k)] for k in kept], dtype=np.int64),
        calibrated.threshold,
        calibrated.loss,
    )

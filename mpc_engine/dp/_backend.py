"""The one module that imports OpenDP; everything else sees typed results.

OpenDP samples every bit of noise here (its secure samplers: discrete Laplace and
discrete Gaussian, exact exponential-mechanism selection) and OpenDP's privacy maps
state every loss. Data never enters OpenDP's vector pipelines (STACK.md: they are
≈1,300× slower than numpy): callers reduce rows to aggregates in numpy and hand
over only the aggregates — a vector with one entry per group or bin.

Calibration (scale from ε, δ) uses closed forms and then *confirms* the loss with
``measurement.map(d_in)``; if OpenDP's rounding-aware map says the loss is above the
target, the scale is nudged up until it is not. Calibrated measurements are cached,
so a repeated (sensitivity, ε, δ) costs one dictionary lookup.

* Laplace: ``scale = Δ₁ / ε`` (Dwork, McSherry, Nissim, Smith 2006).
* Gaussian: OpenDP's Gaussian is ρ-zCDP with ``ρ = Δ₂² / (2σ²)`` (Bun & Steinke
  2016); its (ε, δ) guarantee is OpenDP's zCDP → approximate-DP conversion
  (``make_zCDP_to_approxDP``, Canonne, Kamath, Steinke 2020, §2.3). We find the
  largest ρ whose conversion meets (ε, δ) with the same formula (bisection), derive
  ``σ = Δ₂ / √(2ρ)`` and confirm with OpenDP's map.
* Quantiles: OpenDP's quantile score (Smith 2011) with its exact integer scores and
  report-noisy-max selection (``make_noisy_max``); scores are computed in numpy by
  the caller from per-candidate counts, the stability comes from OpenDP's
  ``make_quantile_score_candidates`` map.
* Unknown group keys: OpenDP's Laplace threshold mechanism (Rogers 2023): noisy
  counts below τ are dropped; τ is the smallest integer whose δ meets the target.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import opendp.prelude as dp
from opendp.core import measurement_map, transformation_map

from mpc_engine.dp._loss import PrivacyLoss
from mpc_engine.dp.errors import MechanismFailure

dp.enable_features("contrib")

_FLOAT_SPACE_L1 = (
    dp.vector_domain(dp.atom_domain(T=float, nan=False)),
    dp.l1_distance(T=float),
)
_FLOAT_SPACE_L2 = (
    dp.vector_domain(dp.atom_domain(T=float, nan=False)),
    dp.l2_distance(T=float),
)
_INT_SPACE_L1 = (dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l1_distance(T=dp.i64))
_INT_SPACE_L2 = (dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l2_distance(T=dp.i64))
_UNIT_GAUSSIAN_SPACE = (
    dp.atom_domain(T=float, nan=False),
    dp.absolute_distance(T=float),
)
_SCORE_SPACE = (dp.vector_domain(dp.atom_domain(T=dp.u64)), dp.linf_distance(T=dp.u64))
_COUNT_MAP_SPACE = (
    dp.map_domain(dp.atom_domain(T=dp.i64), dp.atom_domain(T=dp.i64)),
    dp.l01inf_distance(dp.absolute_distance(T=dp.i64)),
)

# OpenDP's quantile score rationalises α with a denominator of at most 10 000 when
# the dataset size is unknown (``score_candidates_constants``).
_ALPHA_DENOMINATOR = 10_000
_MAX_NUDGES = 200


def _opendp(operation: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an OpenDP call, turning its exceptions into ``MechanismFailure``."""
    try:
        return call(*args, **kwargs)
    except dp.OpenDPException as exc:
        raise MechanismFailure(operation, str(exc).strip() or repr(exc)) from exc


def _nudged(scale: float, attempt: int) -> float:
    """Scale ``attempt`` nudges up: relative steps of 2⁻⁵² · 2^attempt."""
    return scale * (1.0 + math.ldexp(1.0, attempt - 52))


# -- additive noise ------------------------------------------------------------


@dataclass(frozen=True)
class Calibrated:
    """A calibrated additive-noise measurement and the loss it was confirmed at."""

    measurement: Any
    scale: float
    loss: PrivacyLoss


@functools.lru_cache(maxsize=512)
def calibrate_laplace(sensitivity: float, epsilon: float, integer: bool) -> Calibrated:
    """Laplace over vectors with L1 ``sensitivity``, confirmed ε ≤ ``epsilon``."""
    space = _INT_SPACE_L1 if integer else _FLOAT_SPACE_L1
    d_in: int | float = int(sensitivity) if integer else float(sensitivity)
    scale = sensitivity / epsilon
    for attempt in range(_MAX_NUDGES):
        meas = _opendp("make_laplace", dp.m.make_laplace, *space, scale=scale)
        eps = float(_opendp("laplace map", measurement_map, meas, d_in))
        if eps <= epsilon:
            return Calibrated(meas, scale, PrivacyLoss(eps, 0.0))
        scale = _nudged(sensitivity / epsilon, attempt)
    raise MechanismFailure("calibrate laplace", f"no scale meets ε={epsilon!r}")


def _cdp_delta(rho: float, epsilon: float) -> float:
    """δ such that ρ-zCDP implies (ε, δ)-DP (Canonne, Kamath, Steinke 2020, §2.3).

    The same optimisation over the Rényi order α as OpenDP's ``cdp_delta``.
    """
    if rho <= 0:
        return 0.0
    a_min, a_max = 1.01, (epsilon + 1) / (2 * rho) + 2
    alpha = a_min
    for _ in range(200):
        alpha = (a_min + a_max) / 2
        derivative = (2 * alpha - 1) * rho - epsilon + math.log1p(-1.0 / alpha)
        if derivative < 0:
            a_min = alpha
        else:
            a_max = alpha
        if a_max - a_min < 1e-12:
            break
    exponent = (alpha - 1) * (alpha * rho - epsilon) + alpha * math.log1p(-1 / alpha)
    return min(math.exp(exponent) / (alpha - 1), 1.0)


def _rho_for(epsilon: float, delta: float) -> float:
    """The largest ρ (to bisection precision) whose conversion meets (ε, δ)."""
    lo, hi = 0.0, max(epsilon, 1.0)
    while _cdp_delta(hi, epsilon) <= delta:  # pragma: no cover - ε beyond ~1e3
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _cdp_delta(mid, epsilon) <= delta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= hi * 1e-12:
            break
    return lo


@dataclass(frozen=True)
class _UnitGaussian:
    scale: float  # σ for sensitivity 1
    rho: float  # OpenDP's ρ for that σ at sensitivity 1
    loss: PrivacyLoss  # OpenDP's (ε, δ) for that ρ


@functools.lru_cache(maxsize=256)
def _unit_gaussian(epsilon: float, delta: float) -> _UnitGaussian:
    """σ for sensitivity 1 whose (ε, δ), per OpenDP's conversion, meets the target."""
    base = 1.0 / math.sqrt(2.0 * _rho_for(epsilon, delta))
    scale = base
    for attempt in range(_MAX_NUDGES):
        gauss = _opendp(
            "make_gaussian", dp.m.make_gaussian, *_UNIT_GAUSSIAN_SPACE, scale=scale
        )
        zcdp_to_approx = _opendp(
            "zCDP to approximate DP", dp.c.make_zCDP_to_approxDP, gauss
        )
        approx = _opendp("fix δ", dp.c.make_fix_delta, zcdp_to_approx, delta)
        eps, dlt = _opendp("gaussian map", measurement_map, approx, 1.0)
        if float(eps) <= epsilon and float(dlt) <= delta:
            rho = float(_opendp("gaussian map", measurement_map, gauss, 1.0))
            return _UnitGaussian(scale, rho, PrivacyLoss(float(eps), float(dlt)))
        scale = _nudged(base, attempt + 20)
    raise MechanismFailure(
        "calibrate gaussian", f"no scale meets ε={epsilon!r}, δ={delta!r}"
    )


@functools.lru_cache(maxsize=512)
def calibrate_gaussian(
    sensitivity: float, epsilon: float, delta: float, integer: bool
) -> Calibrated:
    """Gaussian over vectors with L2 ``sensitivity``, confirmed (ε, δ) ≤ target.

    σ = Δ₂ · σ₁ where σ₁ is calibrated once per (ε, δ); OpenDP's map confirms that
    the ρ at Δ₂ is at most the unit ρ, whose (ε, δ) conversion OpenDP confirmed.
    """
    unit = _unit_gaussian(epsilon, delta)
    space = _INT_SPACE_L2 if integer else _FLOAT_SPACE_L2
    d_in: int | float = int(sensitivity) if integer else float(sensitivity)
    scale = sensitivity * unit.scale
    for attempt in range(_MAX_NUDGES):
        meas = _opendp("make_gaussian", dp.m.make_gaussian, *space, scale=scale)
        rho = float(_opendp("gaussian map", measurement_map, meas, d_in))
        if rho <= unit.rho:
            return Calibrated(meas, scale, unit.loss)
        scale = _nudged(sensitivity * unit.scale, attempt)
    raise MechanismFailure(
        "calibrate gaussian", f"no scale meets ε={epsilon!r}, δ={delta!r}"
    )


def invoke(calibrated: Calibrated, values: list[float] | list[int]) -> list[Any]:
    """Run a calibrated vector measurement on ``values`` (one OpenDP call)."""
    out = _opendp("sample noise", calibrated.measurement, values)
    return list(out)


# -- quantile selection --------------------------------------------------------


def alpha_fraction(alpha: float) -> tuple[int, int]:
    """OpenDP's rationalisation of α for an unknown dataset size: ``(num, den)``.

    The exact binary fraction of ``alpha`` if its denominator is below 10 000, else
    ``round(α · 10 000) / 10 000`` (``score_candidates_constants``).
    """
    exact = Fraction(alpha)
    if exact.denominator < _ALPHA_DENOMINATOR:
        return exact.numerator, exact.denominator
    # Rust's f64::round rounds half away from zero; α ≥ 0 so floor(x + ½) agrees.
    return math.floor(alpha * _ALPHA_DENOMINATOR + 0.5), _ALPHA_DENOMINATOR


@dataclass(frozen=True)
class QuantileSelector:
    """Report-noisy-min over quantile scores, calibrated for one (α, #candidates, ε).

    ``num`` and ``den`` rationalise α exactly as OpenDP's score does; the caller's
    scores must be ``|(den − num) · #(x < c) − num · #(x > c)|`` per candidate.
    """

    measurement: Any
    num: int
    den: int
    loss: PrivacyLoss


@functools.lru_cache(maxsize=512)
def quantile_selector(
    alpha: float, n_candidates: int, epsilon: float
) -> QuantileSelector:
    """Calibrate OpenDP's noisy-max for the α-quantile score over ``n`` candidates."""
    num, den = alpha_fraction(alpha)
    # The score's L∞ stability under adding/removing one row, from OpenDP itself.
    scorer = _opendp(
        "make_quantile_score_candidates",
        dp.t.make_quantile_score_candidates,
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.symmetric_distance(),
        [float(i) for i in range(n_candidates)],
        alpha,
    )
    stability = int(_opendp("quantile score map", transformation_map, scorer, 1))
    if stability != max(num, den - num):
        raise MechanismFailure(
            "quantile score",
            f"OpenDP's score stability {stability} differs from max(num, den − num) "
            f"= {max(num, den - num)}; the numpy score would not match OpenDP's",
        )
    # Non-monotone report-noisy-max is (2 · Δ∞ / scale)-DP.
    base = 2.0 * stability / epsilon
    scale = base
    for attempt in range(_MAX_NUDGES):
        meas = _opendp(
            "make_noisy_max",
            dp.m.make_noisy_max,
            *_SCORE_SPACE,
            dp.max_divergence(),
            scale=scale,
            negate=True,
        )
        eps = float(_opendp("noisy max map", measurement_map, meas, stability))
        if eps <= epsilon:
            return QuantileSelector(meas, num, den, PrivacyLoss(eps, 0.0))
        scale = _nudged(base, attempt)
    raise MechanismFailure("calibrate quantile", f"no scale meets ε={epsilon!r}")


def select_min(selector: QuantileSelector, scores: list[int]) -> int:
    """Index of the (noisily) lowest score."""
    return int(_opendp("noisy max", selector.measurement, scores))


# -- stable histograms / τ-thresholding ---------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A calibrated Laplace threshold measurement over a map of counts."""

    measurement: Any
    scale: float
    threshold: int
    loss: PrivacyLoss


def _threshold_measurement(scale: float, threshold: int) -> Any:
    return _opendp(
        "make_laplace_threshold",
        dp.m.make_laplace_threshold,
        *_COUNT_MAP_SPACE,
        scale=scale,
        threshold=threshold,
    )


def _threshold_loss(meas: Any) -> tuple[float, float]:
    # One row changes one key's count by one: l0 = l1 = l∞ = 1.
    eps, dlt = _opendp("threshold map", measurement_map, meas, (1, 1, 1))
    return float(eps), float(dlt)


@functools.lru_cache(maxsize=256)
def calibrate_threshold(epsilon: float, delta: float, min_threshold: int) -> Threshold:
    """Laplace counts with the smallest τ ≥ ``min_threshold`` meeting (ε, δ)."""
    base = 1.0 / epsilon
    scale = base
    for attempt in range(_MAX_NUDGES):
        eps, _ = _threshold_loss(_threshold_measurement(scale, 1 << 40))
        if eps <= epsilon:
            break
        scale = _nudged(base, attempt)
    else:
        raise MechanismFailure("calibrate threshold", f"no scale meets ε={epsilon!r}")

    def ok(tau: int) -> bool:
        return _threshold_loss(_threshold_measurement(scale, tau))[1] <= delta

    # δ ≈ ½·exp(−(τ − 1)/b) for one new key; search the smallest τ that OpenDP
    # confirms, bracketing from that estimate.
    hi = max(2, math.ceil(1 + scale * math.log(1 / delta)) + 1)
    while not ok(hi):
        hi *= 2
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    tau = max(lo, min_threshold)
    meas = _threshold_measurement(scale, tau)
    eps, dlt = _threshold_loss(meas)
    return Threshold(meas, scale, tau, PrivacyLoss(eps, dlt))


def threshold_counts(calibrated: Threshold, counts: dict[int, int]) -> dict[int, int]:
    """Noisy counts of the keys whose noisy count reaches τ."""
    out = _opendp("threshold counts", calibrated.measurement, counts)
    return {int(k): int(v) for k, v in dict(out).items()}


def as_python_floats(values: Sequence[float]) -> list[float]:
    """A list of Python floats (OpenDP's converter wants exact ``float`` objects)."""
    return [float(v) for v in values]

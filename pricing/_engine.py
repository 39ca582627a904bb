"""What a plan charges for a job, and the most an entitlement can cost.

ε is counted in integer micro-ε (:data:`EPSILON_SCALE` per unit of ε), so the price
of privacy is a function of an integer and can be *exactly* arbitrage-free: monotone
(more ε never costs less) and subadditive (splitting a question of ε into smaller
questions never costs less). Property tests check both, exactly.

A privacy-priced plan charges ``base + ⌈c · ε^p⌉`` per job (``c`` the price per ε,
``0 < p ≤ 1`` the exponent). With ``p = 1`` that is exact integer arithmetic
(:func:`~pricing.mul_div`, rounded up). With ``p < 1`` the power is irrational in
general, so it is computed in decimal arithmetic with enough digits that the result
provably keeps both properties — see :func:`privacy_variable_minor` for the argument.

Errors::

    ValueError
    └── MoneyError          money arithmetic refused an amount, a rate or a split
        └── PricingError    pricing refused its input (the message names the field)
            └── QuotaExceeded  a subscription's quota is used and it sells no overage
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction

from pricing._money import MoneyError, Rounding, mul_div
from pricing.plans import (
    AnyPlan,
    FixedPerQuery,
    Metered,
    PrivacyPriced,
    Subscription,
    VolumeTiered,
)

__all__ = [
    "EPSILON_SCALE",
    "MAX_EPSILON_MICRO",
    "MAX_QUERIES",
    "EntitlementTerms",
    "PricingError",
    "QuotaExceeded",
    "Usage",
    "authorization_minor",
    "charge_minor",
    "epsilon_to_micro",
    "micro_to_epsilon",
    "privacy_variable_minor",
]

EPSILON_SCALE = 1_000_000
"""Micro-ε per unit of ε."""

MAX_EPSILON_MICRO = 10**12
"""The largest ε the engine prices, in micro-ε (ε = one million: far beyond any
meaningful privacy budget). The exactness argument of :func:`privacy_variable_minor`
relies on this bound."""

MAX_QUERIES = 10**9
"""The most computations one entitlement may allow."""

_ROWS_PER_PRICE_UNIT = 1_000_000
"""Metered plans price rows per million."""

_GRID_TOLERANCE = 1e-9
"""Relative distance from a micro-ε grid point within which a float ε *is* that
point: float noise (``0.07 · 10⁶ = 70000.00000000001``), not a real excess."""

_DIGITS = 40
"""Significant digits of the decimal arithmetic of a power price (unit roundoff
``u = ½·10⁻³⁹``)."""

_SHADE = Decimal(1) - Decimal(10) ** -30
"""``1 − η`` with ``η = 10⁻³⁰``: a whole amount computed a hair too high must not
round up a unit. ``η`` is far above the arithmetic's error (< 10⁻³⁷) and far below a
unit on any amount the engine prices (< 10¹⁸ per job)."""


class PricingError(MoneyError):
    """Pricing refused its input; the message names the field and the reason.

    A :class:`~pricing.MoneyError`, so a :class:`ValueError`. Tree::

        PricingError
        └── QuotaExceeded  a subscription's quota is used and it has no overage
    """


class QuotaExceeded(PricingError):
    """A subscription's quota is used up and it sells no overage.

    ``quota`` is the plan's computations per period; ``periods`` how many periods
    the entitlement covers.
    """

    def __init__(self, quota: int, periods: int = 1) -> None:
        total = quota * periods
        super().__init__(
            f"queries: the subscription's quota of {quota} computations per period "
            f"({total} for {periods} period{'s' if periods != 1 else ''}) is used "
            "and it has no overage price"
        )
        self.quota = quota
        self.periods = periods


def _check_count(name: str, value: object, *, at_least: int = 0) -> int:
    """``value`` as a count ≥ ``at_least``, or a :class:`PricingError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PricingError(f"{name}: must be an integer, got {value!r}")
    if value < at_least:
        raise PricingError(f"{name}: must be ≥ {at_least}, got {value}")
    return value


def _check_epsilon_micro(name: str, value: object) -> int:
    micro = _check_count(name, value)
    if micro > MAX_EPSILON_MICRO:
        raise PricingError(
            f"{name}: must be ≤ {MAX_EPSILON_MICRO} micro-ε "
            f"(ε ≤ {MAX_EPSILON_MICRO // EPSILON_SCALE}), got {micro}"
        )
    return micro


def epsilon_to_micro(epsilon: float, rounding: Rounding = Rounding.UP) -> int:
    """ε as integer micro-ε, rounded as ``rounding`` says (UP never under-counts).

    A float ε within a relative ``1e-9`` of a whole micro-ε is that micro-ε: the
    difference is float noise, not privacy loss. So ``0.1`` is 100,000 and ``0.07``
    (``0.07 · 10⁶ = 70000.00000000001``) is 70,000 — not 100,001 and 70,001. Other
    values are rounded: ``1e-7`` is 1 micro-ε rounded up (never free) and 0 rounded
    down.

    Raises
    ------
    PricingError
        ``epsilon`` is negative, infinite or NaN.
    """
    if not math.isfinite(epsilon) or epsilon < 0:
        raise PricingError(f"epsilon: must be a finite number ≥ 0, got {epsilon!r}")
    scaled = epsilon * EPSILON_SCALE
    nearest = round(scaled)
    if abs(scaled - nearest) <= _GRID_TOLERANCE * scaled:
        return int(nearest)
    match rounding:
        case Rounding.UP:
            return math.ceil(scaled)
        case Rounding.DOWN:
            return math.floor(scaled)
        case Rounding.HALF_EVEN:
            return int(nearest)


def micro_to_epsilon(micro: int) -> float:
    """Integer micro-ε as a float ε (the nearest float to ``micro / 10⁶``)."""
    return micro / EPSILON_SCALE


@dataclass(frozen=True)
class Usage:
    """What one released job used.

    ``epsilon_micro`` is the job's *total* ε. For privacy pricing a job is one
    question whatever ``queries`` says: it is charged once, on its total ε. For
    fixed, subscription and tiered plans ``queries`` counts the computations the job
    released; metered plans charge the rows and compute units.

    Raises
    ------
    PricingError
        A negative or non-integer count, ε above :data:`MAX_EPSILON_MICRO`, or a
        δ outside ``[0, 1)``.
    """

    queries: int = 1
    rows_scanned: int = 0
    compute_units: int = 0
    epsilon_micro: int = 0
    delta: float = 0.0

    def __post_init__(self) -> None:
        for name in ("queries", "rows_scanned", "compute_units"):
            _check_count(name, getattr(self, name))
        _check_epsilon_micro("epsilon_micro", self.epsilon_micro)
        if not (math.isfinite(self.delta) and 0 <= self.delta < 1):
            raise PricingError(f"delta: must be in [0, 1), got {self.delta!r}")


@dataclass(frozen=True)
class EntitlementTerms:
    """What an entitlement allows; its price is authorised for these bounds.

    ``queries`` computations in all (1 … :data:`MAX_QUERIES`), at most
    ``epsilon_micro`` of ε over all of them, at most ``max_rows_per_query`` rows and
    ``max_compute_units_per_query`` compute units per job, and (subscriptions) the
    number of ``periods`` bought.

    Raises
    ------
    PricingError
        A count out of range or not an integer.
    """

    queries: int
    epsilon_micro: int = 0
    max_rows_per_query: int = 0
    max_compute_units_per_query: int = 0
    periods: int = 1

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            match field.name:
                case "queries" | "periods":
                    _check_count(field.name, value, at_least=1)
                case "epsilon_micro":
                    _check_epsilon_micro(field.name, value)
                case _:
                    _check_count(field.name, value)
        if self.queries > MAX_QUERIES:
            raise PricingError(f"queries: must be ≤ {MAX_QUERIES}, got {self.queries}")


_FLOAT_EXACT = float(2**52)
"""Below this every integer is a float, so the float path's ceiling is exact."""

_FAST_MARGIN = 1e-9
"""Relative distance from a whole amount beyond which the float path is exact."""


def _power_minor(price_per_epsilon: int, exponent: float, epsilon: Fraction) -> int:
    """``⌈c · ε^p⌉`` for ``0 < p < 1`` and ``ε > 0``, in 40-digit decimals, shaded.

    Every step (divide, ``ln``, multiply, ``exp``, multiply, shade) is one correctly
    rounded operation of the :mod:`decimal` module, each non-decreasing in its
    operand, and the ceiling is too: so the result is non-decreasing in ε exactly.

    Fast path, same result: the same product in binary floating point has a
    relative error below ``10⁻¹⁵`` (a correctly rounded ``float(ε)``, one ``pow``,
    one multiply), and the decimal value is within ``10⁻³⁰`` of the exact one. So
    when the float lies farther than a relative ``10⁻⁹`` from every integer, both
    lie strictly between the same two integers and the ceilings agree; only
    values that close to a whole amount take the decimal computation.
    """
    approx = price_per_epsilon * math.pow(float(epsilon), exponent)
    if 1.0 <= approx < _FLOAT_EXACT:
        nearest = round(approx)
        if abs(approx - nearest) > _FAST_MARGIN * approx:
            return math.ceil(approx)
    return _decimal_power_minor(price_per_epsilon, exponent, epsilon)


def _decimal_power_minor(
    price_per_epsilon: int, exponent: float, epsilon: Fraction
) -> int:
    """:func:`_power_minor` without its fast path (the reference computation)."""
    ctx = Context(prec=_DIGITS, rounding=ROUND_HALF_EVEN)
    ratio = ctx.divide(Decimal(epsilon.numerator), Decimal(epsilon.denominator))
    power = ctx.exp(ctx.multiply(Decimal(exponent), ctx.ln(ratio)))
    value = ctx.multiply(ctx.multiply(Decimal(price_per_epsilon), power), _SHADE)
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def privacy_variable_minor(plan: PrivacyPriced, epsilon_micro: int) -> int:
    """The ε-dependent part of a privacy-priced job: ``⌈c · ε^p⌉`` minor units.

    Exactly monotone non-decreasing and subadditive in ``epsilon_micro``:
    ``V(a) ≤ V(a + b) ≤ V(a) + V(b)`` for all integers ``a, b ≥ 0``.

    With ``p = 1`` it is ``mul_div(c, ε_micro, 10⁶, UP)``: a ceiling of an exact
    linear function, so both properties are immediate.

    With ``p < 1`` let ``f(x) = (1 − η)·c·(x/10⁶)^p`` (``η = 10⁻³⁰``): concave,
    increasing, ``f(0) = 0``. The value ``h(x)`` is computed by six correctly
    rounded 40-digit decimal operations (unit roundoff ``u = ½·10⁻³⁹``); for
    ``1 ≤ x ≤ 10¹²`` (so ``|ln(x/10⁶)| < 14``) its relative error to ``f(x)`` is
    below ``ρ = 32·u < 10⁻³⁷`` (the ``ln`` error, scaled by ``p·|ln|`` on its way
    through ``exp``, dominates). Then:

    - *monotone*: each operation and the ceiling are non-decreasing, so ``V`` is,
      with no error argument at all;
    - *subadditive*: for ``1 ≤ a ≤ b``, concavity gives the margin
      ``f(a) + f(b) − f(a + b) ≥ (1 − p)·f(a)`` (as ``(a+b)^p − b^p ≤ p·a·b^(p−1)
      ≤ p·a^p``). So ``h(a + b) ≤ h(a) + h(b)`` whenever ``4ρ·f(b) ≤ (1 − p)·f(a)``,
      i.e. ``(a/b)^p ≥ 4ρ/(1 − p)``; here ``(a/b)^p ≥ a/b ≥ 10⁻¹²`` and, ``p``
      being a double below 1, ``1 − p ≥ 2⁻⁵³``, so ``4ρ/(1 − p) < 4·10⁻²¹``. Hence
      ``V(a + b) = ⌈h(a + b)⌉ ≤ ⌈h(a)⌉ + ⌈h(b)⌉``;
    - *never over*: ``(1 + ρ)(1 − η) < 1``, so ``V(x) < c·(x/10⁶)^p + 1`` and a
      whole amount (``2000 · 0.25^0.5 = 1000``) is not rounded up a unit;
      conversely ``V`` is below the exact ceiling only when ``c·ε^p`` lies within a
      relative ``10⁻³⁰`` above a whole amount.

    Raises
    ------
    PricingError
        ``epsilon_micro`` negative, not an integer or above
        :data:`MAX_EPSILON_MICRO`.
    """
    epsilon_micro = _check_epsilon_micro("epsilon_micro", epsilon_micro)
    return _variable_minor(plan, Fraction(epsilon_micro, EPSILON_SCALE))


def _variable_minor(plan: PrivacyPriced, epsilon: Fraction) -> int:
    """``⌈c · ε^p⌉`` at an exact rational ε ≥ 0 (see :func:`privacy_variable_minor`)."""
    c = plan.price_per_epsilon_minor
    if epsilon == 0 or c == 0:
        return 0
    if plan.exponent == 1.0:
        return mul_div(c, epsilon.numerator, epsilon.denominator, Rounding.UP)
    return _power_minor(c, plan.exponent, epsilon)


def reference_variable_minor(plan: PrivacyPriced) -> int:
    """The ε-dependent price at the plan's ``reference_epsilon`` (a float).

    On the micro-ε grid (within a relative ``1e-9``, as :func:`epsilon_to_micro`
    snaps) it is exactly :func:`privacy_variable_minor` there, so a listing's
    headline price is what a job at the reference ε is charged. Off the grid it is
    the same computation at the float's exact value.
    """
    epsilon = plan.reference_epsilon
    scaled = epsilon * EPSILON_SCALE
    nearest = round(scaled)
    if abs(scaled - nearest) <= _GRID_TOLERANCE * scaled:
        return privacy_variable_minor(plan, int(nearest))
    return _variable_minor(plan, Fraction(epsilon))


def _tier_total(plan: VolumeTiered, prior: int, count: int) -> int:
    """The graduated price of computations number ``prior + 1 … prior + count``."""
    total = 0
    lower = 0  # the tier covers computations lower + 1 … upper
    end = prior + count
    for tier in plan.tiers:
        upper = end if tier.up_to_queries is None else tier.up_to_queries
        inside = min(end, upper) - max(prior, lower)
        if inside > 0:
            total += inside * tier.price_per_query_minor
        if upper >= end:
            break
        lower = upper
    return total


def charge_minor(
    plan: AnyPlan, usage: Usage, *, prior_queries: int = 0, periods: int = 1
) -> int:
    """What ``plan`` charges for one released job with ``usage``.

    ``prior_queries`` is how many computations the same entitlement released
    before (volume tiers and a subscription's quota count from it); ``periods`` is
    how many subscription periods the entitlement bought (its quota is that many
    times the plan's).

    - fixed: ``queries × price``;
    - subscription: nothing within the quota (the periods are paid when the
      entitlement is bought), the overage price for each computation beyond it;
    - metered: rows at the price per million rounded up, plus compute units × their
      price, at least the minimum charge;
    - privacy-priced: ``base + ⌈c · ε^p⌉`` on the job's total ε
      (:func:`privacy_variable_minor`), once per job whatever ``queries`` says;
    - tiered: graduated — computation number ``i`` (counting ``prior_queries``) at
      the unit price of the tier containing ``i``.

    Raises
    ------
    QuotaExceeded
        A subscription without an overage price, past its quota.
    PricingError
        ``prior_queries`` negative, ``periods`` below 1.
    """
    _check_count("prior_queries", prior_queries)
    _check_count("periods", periods, at_least=1)
    match plan:
        case FixedPerQuery():
            return usage.queries * plan.price_per_query_minor
        case Subscription():
            quota = plan.queries_per_period * periods
            over = min(usage.queries, max(0, prior_queries + usage.queries - quota))
            if over == 0:
                return 0
            if plan.overage_per_query_minor is None:
                raise QuotaExceeded(plan.queries_per_period, periods)
            return over * plan.overage_per_query_minor
        case Metered():
            rows = mul_div(
                usage.rows_scanned,
                plan.price_per_million_rows_minor,
                _ROWS_PER_PRICE_UNIT,
                Rounding.UP,
            )
            units = usage.compute_units * plan.price_per_compute_unit_minor
            return max(plan.minimum_charge_minor, rows + units)
        case PrivacyPriced():
            return plan.base_price_minor + privacy_variable_minor(
                plan, usage.epsilon_micro
            )
        case VolumeTiered():
            return _tier_total(plan, prior_queries, usage.queries)


def _privacy_cap(plan: PrivacyPriced, terms: EntitlementTerms) -> int:
    """The most the variable parts of the jobs ``terms`` allow can sum to.

    At most ``k = min(n, E)`` jobs spend any ε (each positive job spends ≥ 1
    micro-ε of the budget ``E``); each positive job's variable part ``V(x)`` is less
    than ``f(x) + 1`` with ``f(x) = c·(x/10⁶)^p``.

    - ``k = 1``: one job, ``V`` monotone, so ``V(E)`` — exact.
    - ``p = 1``: ``Σ V(x_i) < c·E/10⁶ + k``; an integer, so ``≤ ⌈c·E/10⁶⌉ + k − 1``.
    - ``p < 1``: ``f`` is concave with ``f(0) = 0``, so for ``j ≤ k`` positive jobs
      ``Σ f(x_i) ≤ j·f(E/j) ≤ k·f(E/k)`` (Jensen; ``j·f(E/j)`` grows with ``j``):
      the equal split is the costliest. With ``s = ⌈E/k⌉``, ``k·f(E/k) ≤ k·f(s) ≤
      k·V(s)·(1 + 2·10⁻³⁰)``, and ``k·V(s) < 10²⁷`` here, so ``Σ V(x_i) <
      k·V(s) + k + 1``: an integer, so ``≤ k·V(s) + k``.
    """
    budget = terms.epsilon_micro
    k = min(terms.queries, budget)
    if k == 0:
        return 0
    if k == 1:
        return privacy_variable_minor(plan, budget)
    if plan.exponent == 1.0:
        return privacy_variable_minor(plan, budget) + k - 1
    share = -(-budget // k)
    return k * privacy_variable_minor(plan, share) + k


def authorization_minor(plan: AnyPlan, terms: EntitlementTerms) -> int:
    """The most an entitlement with ``terms`` can cost: what its payment must hold.

    An upper bound, for every plan, on what the buyer can owe over *any* use the
    terms allow: at most ``terms.queries`` computations in all (jobs whose
    ``queries`` sum to at most that), ε summing to at most ``terms.epsilon_micro``,
    rows and compute units per job at most the terms' maxima.

    - fixed: ``queries × price`` — exact;
    - subscription: the periods' price (paid up front) plus the overage of the
      computations beyond ``periods × quota`` — exact;
    - metered: ``queries ×`` the charge of a job at the maxima (the charge is
      monotone in rows and compute units);
    - privacy-priced: ``queries × base`` plus the bound on the variable parts:
      ``V(E)`` for one job, ``V(E) + k − 1`` for ``p = 1``, and ``k·V(⌈E/k⌉) + k``
      for ``p < 1`` where the equal split of the budget is the worst case
      (``k = min(queries, E)``; proofs in the source);
    - tiered: the graduated price of ``queries`` computations — exact, as every
      split of them costs the same.

    Raises
    ------
    QuotaExceeded
        A subscription without overage asked for more computations than its
        ``periods × quota``.
    """
    n = terms.queries
    match plan:
        case FixedPerQuery():
            return n * plan.price_per_query_minor
        case Subscription():
            prepaid = terms.periods * plan.price_per_period_minor
            extra = max(0, n - terms.periods * plan.queries_per_period)
            if extra == 0:
                return prepaid
            if plan.overage_per_query_minor is None:
                raise QuotaExceeded(plan.queries_per_period, terms.periods)
            return prepaid + extra * plan.overage_per_query_minor
        case Metered():
            most = Usage(
                rows_scanned=terms.max_rows_per_query,
                compute_units=terms.max_compute_units_per_query,
            )
            return n * charge_minor(plan, most)
        case PrivacyPriced():
            return n * plan.base_price_minor + _privacy_cap(plan, terms)
        case VolumeTiered():
            return _tier_total(plan, 0, n)

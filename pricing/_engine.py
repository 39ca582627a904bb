"""What a plan charges for a job, and the most an entitlement can cost.

ε is counted in integer micro-ε (:data:`EPSILON_SCALE` per unit of ε) so prices of
privacy are exact integers: monotone and subadditive by construction, checked by
property tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

_ROWS_PER_PRICE_UNIT = 1_000_000
_FLOAT_TOLERANCE = 1e-9


class PricingError(MoneyError):
    """Pricing refused its input.

    Tree::

        PricingError (a MoneyError, a ValueError)
        └── QuotaExceeded  a subscription's quota is used and it has no overage
    """


class QuotaExceeded(PricingError):
    """A subscription's quota is used up and it sells no overage."""

    def __init__(self, quota: int) -> None:
        super().__init__(
            f"the subscription's quota of {quota} computations per period is used "
            "and it has no overage price"
        )
        self.quota = quota


def epsilon_to_micro(epsilon: float, rounding: Rounding = Rounding.UP) -> int:
    """ε as integer micro-ε, rounded as named (UP never under-counts).

    Float noise within a relative 1e-9 of a whole micro-ε is snapped to it, so
    ``0.07`` is 70,000 and not 70,001.
    """
    if not math.isfinite(epsilon) or epsilon < 0:
        raise PricingError(f"epsilon: must be a finite number ≥ 0, got {epsilon!r}")
    scaled = epsilon * EPSILON_SCALE
    nearest = round(scaled)
    if abs(scaled - nearest) <= _FLOAT_TOLERANCE * max(1.0, abs(scaled)):
        return int(nearest)
    match rounding:
        case Rounding.UP:
            return math.ceil(scaled)
        case Rounding.DOWN:
            return math.floor(scaled)
        case Rounding.HALF_EVEN:
            return int(nearest)


def micro_to_epsilon(micro: int) -> float:
    """Integer micro-ε as a float ε."""
    return micro / EPSILON_SCALE


@dataclass(frozen=True)
class Usage:
    """What one released job used.

    A job counts as one query whatever ``queries`` says for privacy pricing: its
    ``epsilon_micro`` is the job's total ε.
    """

    queries: int = 1
    rows_scanned: int = 0
    compute_units: int = 0
    epsilon_micro: int = 0
    delta: float = 0.0

    def __post_init__(self) -> None:
        for name in ("queries", "rows_scanned", "compute_units", "epsilon_micro"):
            if getattr(self, name) < 0:
                raise PricingError(f"{name}: must be ≥ 0")
        if not 0 <= self.delta < 1:
            raise PricingError("delta: must be in [0, 1)")


@dataclass(frozen=True)
class EntitlementTerms:
    """What an entitlement allows: the bounds its price is authorised for."""

    queries: int
    epsilon_micro: int = 0
    max_rows_per_query: int = 0
    max_compute_units_per_query: int = 0
    periods: int = 1

    def __post_init__(self) -> None:
        if self.queries < 1:
            raise PricingError("queries: must be ≥ 1")
        if self.periods < 1:
            raise PricingError("periods: must be ≥ 1")
        for name in (
            "epsilon_micro",
            "max_rows_per_query",
            "max_compute_units_per_query",
        ):
            if getattr(self, name) < 0:
                raise PricingError(f"{name}: must be ≥ 0")


def privacy_variable_minor(plan: PrivacyPriced, epsilon_micro: int) -> int:
    """The ε-dependent part of a privacy-priced job: ``c · ε^p``, rounded up.

    With ``p = 1`` it is exact integer arithmetic. With ``p < 1`` the power is a
    float computed on the micro-ε grid and shaded down by a relative 1e-12 before
    rounding up, so float noise never lifts a whole amount a unit (that would break
    subadditivity: the true sum's margin, ``a^p + b^p − (a+b)^p``, is far larger
    than float error for every grid point).
    """
    if epsilon_micro <= 0 or plan.price_per_epsilon_minor == 0:
        return 0
    if plan.exponent == 1.0:
        return mul_div(
            plan.price_per_epsilon_minor, epsilon_micro, EPSILON_SCALE, Rounding.UP
        )
    eps = epsilon_micro / EPSILON_SCALE
    value: float = plan.price_per_epsilon_minor * eps**plan.exponent
    return max(1, math.ceil(value * (1 - 1e-12)))


def _tier_total(plan: VolumeTiered, prior: int, count: int) -> int:
    """The graduated price of queries ``prior + 1 … prior + count``."""
    total = 0
    start = prior
    end = prior + count
    lower = 0
    for tier in plan.tiers:
        upper = tier.up_to_queries if tier.up_to_queries is not None else end
        lo, hi = max(start, lower), min(end, upper)
        if hi > lo:
            total += (hi - lo) * tier.price_per_query_minor
        lower = upper
        if lower >= end:
            break
    return total


def charge_minor(plan: AnyPlan, usage: Usage, *, prior_queries: int = 0) -> int:
    """What ``plan`` charges for one released job with ``usage``.

    ``prior_queries`` is how many jobs the same entitlement released before (for
    volume tiers and a subscription's quota).

    Raises
    ------
    QuotaExceeded
        A subscription without overage, past its quota.
    """
    if prior_queries < 0:
        raise PricingError("prior_queries: must be ≥ 0")
    match plan:
        case FixedPerQuery():
            return usage.queries * plan.price_per_query_minor
        case Subscription():
            over = max(0, prior_queries + usage.queries - plan.queries_per_period)
            over = min(over, usage.queries)
            if over == 0:
                return 0
            if plan.overage_per_query_minor is None:
                raise QuotaExceeded(plan.queries_per_period)
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


def authorization_minor(plan: AnyPlan, terms: EntitlementTerms) -> int:
    """The most an entitlement with ``terms`` can cost: what its payment must hold.

    An upper bound on the sum of :func:`charge_minor` over any ``terms.queries``
    jobs within the terms. For a privacy-priced plan with exponent ``p < 1`` the
    costliest split of the ε budget ``E`` over ``n`` jobs is the equal one
    (``x ↦ x^p`` is concave), ``n · (E/n)^p``, rounded up per job. A subscription
    holds its periods' price plus the overage of the queries beyond its quota.

    Raises
    ------
    QuotaExceeded
        A subscription without overage asked for more queries than its quota.
    """
    n = terms.queries
    match plan:
        case FixedPerQuery():
            return n * plan.price_per_query_minor
        case Subscription():
            included = plan.queries_per_period * terms.periods
            prepaid = plan.price_per_period_minor * terms.periods
            extra = max(0, n - included)
            if extra and plan.overage_per_query_minor is None:
                raise QuotaExceeded(plan.queries_per_period)
            return prepaid + extra * (plan.overage_per_query_minor or 0)
        case Metered():
            one = charge_minor(
                plan,
                Usage(
                    rows_scanned=terms.max_rows_per_query,
                    compute_units=terms.max_compute_units_per_query,
                ),
            )
            return n * one
        case PrivacyPriced():
            if terms.epsilon_micro == 0:
                return n * plan.base_price_minor
            if n == 1:  # one job: the price is monotone in ε, so its budget's
                return plan.base_price_minor + privacy_variable_minor(
                    plan, terms.epsilon_micro
                )
            if plan.exponent == 1.0:
                # Each job rounds up once: at most n − 1 units above the whole.
                variable = privacy_variable_minor(plan, terms.epsilon_micro) + n - 1
                return n * plan.base_price_minor + variable
            # Σ⌈c·x_i^p⌉ < Σ c·x_i^p + n ≤ n·c·(E/n)^p + n, and the shading of
            # privacy_variable_minor costs less than one unit more.
            share = -(-terms.epsilon_micro // n)  # ⌈E/n⌉ micro-ε, monotone in it
            variable = n * privacy_variable_minor(plan, share) + n + 1
            return n * plan.base_price_minor + variable
        case VolumeTiered():
            return _tier_total(plan, 0, n)

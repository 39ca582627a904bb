"""Quotes: a price for an entitlement's terms, with its fee, surcharge and accuracy.

The buyer pays the plan's price (the *gross*) plus a payment method's surcharge;
the exchange's fee is inside the gross (:func:`pricing.fee_bps`, rounded down —
the Settlement contract's rule), the provider gets the rest. A DP quote menu
prices one question at several ε and states the expected error of each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pricing._engine import (
    EPSILON_SCALE,
    EntitlementTerms,
    PricingError,
    Usage,
    authorization_minor,
    epsilon_to_micro,
)
from pricing._money import TOTAL_BPS, Rounding, fee_bps, mul_div
from pricing.plans import AnyPlan

__all__ = [
    "DEFAULT_MENU_EPSILONS",
    "Accuracy",
    "FeeBreakdown",
    "MenuOption",
    "Quote",
    "QuoteRequest",
    "Surcharge",
    "breakdown",
    "make_quote",
    "quote_menu",
]

DEFAULT_MENU_EPSILONS = (0.1, 0.25, 0.5, 1.0, 2.0)
"""The ε choices of a quote menu unless others are asked for."""

_Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile."""


@dataclass(frozen=True)
class Surcharge:
    """What a payment method adds on top of the gross for the buyer (rounded up)."""

    bps: int = 0
    fixed_minor: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.bps <= TOTAL_BPS:
            raise PricingError(f"bps: must be in [0, {TOTAL_BPS}]")
        if self.fixed_minor < 0:
            raise PricingError("fixed_minor: must be ≥ 0")

    def on(self, gross_minor: int) -> int:
        """The surcharge on ``gross_minor`` (nothing on nothing)."""
        if gross_minor == 0:
            return 0
        return mul_div(gross_minor, self.bps, TOTAL_BPS, Rounding.UP) + self.fixed_minor


@dataclass(frozen=True)
class FeeBreakdown:
    """Who gets what of a price."""

    gross_minor: int
    """The plan's price."""
    surcharge_minor: int
    """What the payment method adds."""
    total_minor: int
    """What the buyer pays: gross + surcharge."""
    exchange_fee_minor: int
    """The exchange's fee, inside the gross."""
    provider_net_minor: int
    """The provider's part: gross − fee."""


def breakdown(
    gross_minor: int, *, fee_bps: int, surcharge: Surcharge | None = None
) -> FeeBreakdown:
    """Split a gross price into fee and net, and add the surcharge."""
    if gross_minor < 0:
        raise PricingError("gross_minor: must be ≥ 0")
    extra = surcharge.on(gross_minor) if surcharge else 0
    fee = _fee(gross_minor, fee_bps)
    return FeeBreakdown(
        gross_minor=gross_minor,
        surcharge_minor=extra,
        total_minor=gross_minor + extra,
        exchange_fee_minor=fee,
        provider_net_minor=gross_minor - fee,
    )


def _fee(amount: int, bps: int) -> int:
    return fee_bps(amount, bps)


@dataclass(frozen=True)
class Accuracy:
    """How a DP answer's noise depends on ε: sensitivity and mechanism."""

    sensitivity: float
    mechanism: Literal["laplace", "gaussian"] = "laplace"
    delta: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sensitivity) and self.sensitivity > 0):
            raise PricingError("sensitivity: must be a finite number > 0")
        if self.mechanism == "gaussian" and not 0 < self.delta < 1:
            raise PricingError("delta: the gaussian mechanism needs 0 < delta < 1")

    def error_at(self, epsilon: float) -> tuple[float, float]:
        """(expected absolute error, 95% confidence half-width) at ``epsilon``.

        Laplace with scale ``b = Δ/ε``: ``E|X| = b`` and ``b·ln 20``. Gaussian
        (the classic mechanism) with ``σ = Δ·√(2 ln(1.25/δ))/ε``: ``σ·√(2/π)`` and
        ``1.96·σ``.
        """
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise PricingError("epsilon: must be a finite number > 0")
        if self.mechanism == "laplace":
            b = self.sensitivity / epsilon
            return b, b * math.log(20)
        sigma = self.sensitivity * math.sqrt(2 * math.log(1.25 / self.delta)) / epsilon
        return sigma * math.sqrt(2 / math.pi), _Z95 * sigma


@dataclass(frozen=True)
class QuoteRequest:
    """What a quote prices: an entitlement's terms, and optionally a usage guess."""

    terms: EntitlementTerms
    usage_estimate: Usage | None = None


@dataclass(frozen=True)
class Quote:
    """A price for an entitlement, valid until ``expires_at``."""

    plan_kind: str
    currency: str
    amount_minor: int
    """What the payment holds: ``breakdown.total_minor``."""
    breakdown: FeeBreakdown
    epsilon_micro: int
    delta: float
    expected_abs_error: float | None
    ci95_half_width: float | None
    compute_units_estimate: int
    rows_estimate: int
    expires_at: datetime


def make_quote(
    plan: AnyPlan,
    request: QuoteRequest,
    *,
    now: datetime,
    ttl: timedelta,
    fee_bps: int,
    surcharge: Surcharge | None = None,
    accuracy: Accuracy | None = None,
) -> Quote:
    """Price ``request`` under ``plan``: the most its entitlement can cost.

    With ``accuracy`` and an ε budget, the expected error is that of one answer
    spending the whole budget.
    """
    if now.tzinfo is None:
        raise PricingError("now: must be timezone-aware")
    if ttl <= timedelta(0):
        raise PricingError("ttl: must be positive")
    terms = request.terms
    gross = authorization_minor(plan, terms)
    split = breakdown(gross, fee_bps=fee_bps, surcharge=surcharge)
    error: tuple[float, float] | None = None
    if accuracy is not None and terms.epsilon_micro > 0:
        error = accuracy.error_at(terms.epsilon_micro / EPSILON_SCALE)
    usage = request.usage_estimate
    per_query_units = (
        usage.compute_units if usage else terms.max_compute_units_per_query
    )
    per_query_rows = usage.rows_scanned if usage else terms.max_rows_per_query
    return Quote(
        plan_kind=plan.kind,
        currency=plan.currency,
        amount_minor=split.total_minor,
        breakdown=split,
        epsilon_micro=terms.epsilon_micro,
        delta=usage.delta if usage else 0.0,
        expected_abs_error=error[0] if error else None,
        ci95_half_width=error[1] if error else None,
        compute_units_estimate=per_query_units * terms.queries,
        rows_estimate=per_query_rows * terms.queries,
        expires_at=now + ttl,
    )


@dataclass(frozen=True)
class MenuOption:
    """One choice of a DP quote menu."""

    epsilon_micro: int
    epsilon: float
    delta: float
    expected_abs_error: float
    ci95_half_width: float
    quote: Quote


def quote_menu(
    plan: AnyPlan,
    *,
    accuracy: Accuracy,
    epsilons: Sequence[float] = DEFAULT_MENU_EPSILONS,
    queries: int = 1,
    now: datetime,
    ttl: timedelta,
    fee_bps: int,
    surcharge: Surcharge | None = None,
) -> list[MenuOption]:
    """One DP question priced at each ε, sorted by ε (duplicates dropped).

    Prices never fall as ε grows; the error strictly falls.
    """
    if not epsilons:
        raise PricingError("epsilons: give at least one")
    options: list[MenuOption] = []
    for micro in sorted({epsilon_to_micro(e) for e in epsilons}):
        if micro <= 0:
            raise PricingError("epsilons: each must be > 0")
        terms = EntitlementTerms(queries=queries, epsilon_micro=micro)
        quote = make_quote(
            plan,
            QuoteRequest(terms=terms),
            now=now,
            ttl=ttl,
            fee_bps=fee_bps,
            surcharge=surcharge,
            accuracy=accuracy,
        )
        error, half = accuracy.error_at(micro / EPSILON_SCALE)
        options.append(
            MenuOption(
                epsilon_micro=micro,
                epsilon=micro / EPSILON_SCALE,
                delta=accuracy.delta,
                expected_abs_error=error,
                ci95_half_width=half,
                quote=quote,
            )
        )
    return options

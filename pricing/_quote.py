"""Quotes: a price for an entitlement's terms, with its fee, surcharge and accuracy.

The buyer pays the plan's price (the *gross*) plus a payment method's surcharge; the
exchange's fee is inside the gross (:func:`pricing.fee_bps`: rounded down, the
Settlement contract's rule) and the provider gets the rest. A quote holds the most
the entitlement can cost (:func:`pricing.authorization_minor`) with that breakdown.

A DP quote menu prices one question at several ε and states the expected error of
each: more ε, less noise, a price that never falls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pricing import _money
from pricing._engine import (
    EPSILON_SCALE,
    EntitlementTerms,
    PricingError,
    Usage,
    authorization_minor,
    epsilon_to_micro,
)
from pricing._money import TOTAL_BPS, Rounding, mul_div
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

DEFAULT_MENU_EPSILONS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0)
"""The ε choices of a quote menu unless others are asked for."""

_Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile: a 95% interval is ``±1.96·σ``."""

_LN20 = math.log(20)
"""A Laplace variable of scale ``b`` lies within ``±b·ln 20`` with probability 95%."""


@dataclass(frozen=True)
class Surcharge:
    """What a payment method adds on top of the gross for the buyer.

    ``bps`` basis points of the gross, rounded up, plus ``fixed_minor``; nothing on
    a gross of zero (no payment, no payment fee).

    Raises
    ------
    PricingError
        ``bps`` outside ``0 … 10,000`` or a negative ``fixed_minor``.
    """

    bps: int = 0
    fixed_minor: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.bps, bool) or not isinstance(self.bps, int):
            raise PricingError(f"bps: must be an integer, got {self.bps!r}")
        if not 0 <= self.bps <= TOTAL_BPS:
            raise PricingError(f"bps: must be within 0 … {TOTAL_BPS}, got {self.bps}")
        if isinstance(self.fixed_minor, bool) or not isinstance(self.fixed_minor, int):
            raise PricingError(
                f"fixed_minor: must be an integer, got {self.fixed_minor!r}"
            )
        if self.fixed_minor < 0:
            raise PricingError(f"fixed_minor: must be ≥ 0, got {self.fixed_minor}")

    def on(self, gross_minor: int) -> int:
        """The surcharge on ``gross_minor``: ``⌈gross · bps / 10⁴⌉ + fixed``, or 0."""
        if gross_minor == 0:
            return 0
        rate = mul_div(gross_minor, self.bps, TOTAL_BPS, Rounding.UP)
        return rate + self.fixed_minor


@dataclass(frozen=True)
class FeeBreakdown:
    """Who pays and gets what of a price.

    ``total = gross + surcharge`` is what the buyer pays; ``gross = fee + net``
    splits the plan's price between the exchange and the provider.
    """

    gross_minor: int
    """The plan's price."""
    surcharge_minor: int
    """What the payment method adds, paid by the buyer."""
    total_minor: int
    """What the buyer pays: gross + surcharge."""
    exchange_fee_minor: int
    """The exchange's fee, inside the gross, rounded down."""
    provider_net_minor: int
    """The provider's part: gross − fee."""


def breakdown(
    gross_minor: int, *, fee_bps: int, surcharge: Surcharge | None = None
) -> FeeBreakdown:
    """Split a gross price into fee and net, and add the payment surcharge.

    The fee is :func:`pricing.fee_bps` of the gross (rounded down, as the
    Settlement contract computes it); the surcharge is on top, for the buyer.

    Raises
    ------
    PricingError
        A negative ``gross_minor`` or ``fee_bps`` outside ``0 … 10,000``.
    """
    if isinstance(gross_minor, bool) or not isinstance(gross_minor, int):
        raise PricingError(f"gross_minor: must be an integer, got {gross_minor!r}")
    if gross_minor < 0:
        raise PricingError(f"gross_minor: must be ≥ 0, got {gross_minor}")
    if not 0 <= fee_bps <= TOTAL_BPS:
        raise PricingError(f"fee_bps: must be within 0 … {TOTAL_BPS}, got {fee_bps}")
    extra = surcharge.on(gross_minor) if surcharge is not None else 0
    fee = _money.fee_bps(gross_minor, fee_bps)
    return FeeBreakdown(
        gross_minor=gross_minor,
        surcharge_minor=extra,
        total_minor=gross_minor + extra,
        exchange_fee_minor=fee,
        provider_net_minor=gross_minor - fee,
    )


@dataclass(frozen=True)
class Accuracy:
    """How a DP answer's noise depends on ε: the query's sensitivity and mechanism.

    ``laplace`` is pure ε-DP (``delta`` must be 0 … < 1 and is not used);
    ``gaussian`` is the classic (ε, δ) mechanism and needs ``0 < delta < 1``.

    Raises
    ------
    PricingError
        A sensitivity that is not a finite number > 0, an unknown mechanism, or a δ
        the mechanism cannot use.
    """

    sensitivity: float
    mechanism: Literal["laplace", "gaussian"] = "laplace"
    delta: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sensitivity) and self.sensitivity > 0):
            raise PricingError(
                f"sensitivity: must be a finite number > 0, got {self.sensitivity!r}"
            )
        if self.mechanism not in ("laplace", "gaussian"):
            raise PricingError(
                f"mechanism: must be laplace or gaussian, got {self.mechanism!r}"
            )
        if not (math.isfinite(self.delta) and 0 <= self.delta < 1):
            raise PricingError(f"delta: must be in [0, 1), got {self.delta!r}")
        if self.mechanism == "gaussian" and self.delta == 0:
            raise PricingError("delta: the gaussian mechanism needs 0 < delta < 1")

    def error_at(self, epsilon: float) -> tuple[float, float]:
        """(expected absolute error, 95% confidence half-width) of one answer at ε.

        Laplace with scale ``b = Δ/ε``: ``E|X| = b``, and ``P(|X| ≤ b·ln 20) =
        95%``. Gaussian (the classic mechanism) with ``σ = Δ·√(2·ln(1.25/δ))/ε``:
        ``E|X| = σ·√(2/π)`` and the half-width ``1.959963984540054·σ``.

        Raises
        ------
        PricingError
            ``epsilon`` not a finite number > 0.
        """
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise PricingError(f"epsilon: must be a finite number > 0, got {epsilon!r}")
        if self.mechanism == "laplace":
            scale = self.sensitivity / epsilon
            return scale, scale * _LN20
        sigma = self.sensitivity * math.sqrt(2 * math.log(1.25 / self.delta)) / epsilon
        return sigma * math.sqrt(2 / math.pi), _Z95 * sigma


@dataclass(frozen=True)
class QuoteRequest:
    """What a quote prices: an entitlement's terms, and optionally a usage guess.

    ``usage_estimate`` is one typical job: it sets the quote's rows and compute
    estimates, its δ, and the ε at which the expected error is stated. The price
    does not depend on it — a quote holds the most the terms allow.
    """

    terms: EntitlementTerms
    usage_estimate: Usage | None = None


@dataclass(frozen=True)
class Quote:
    """A price for an entitlement, valid until ``expires_at``."""

    plan_kind: str
    """The plan's ``kind``."""
    currency: str
    """The plan's ISO 4217 currency."""
    amount_minor: int
    """What the buyer's payment holds: ``breakdown.total_minor``."""
    breakdown: FeeBreakdown
    """The authorised price (:func:`pricing.authorization_minor`) split up."""
    epsilon_micro: int
    """The entitlement's total ε budget."""
    delta: float
    """The δ of each release (0 for pure ε-DP or no DP)."""
    expected_abs_error: float | None
    """The expected absolute error of one answer, if an accuracy was given."""
    ci95_half_width: float | None
    """Its 95% confidence half-width."""
    compute_units_estimate: int
    """Compute units over all the entitlement's computations."""
    rows_estimate: int
    """Rows scanned over all the entitlement's computations."""
    expires_at: datetime
    """When the price stops being offered."""


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

    The gross is :func:`pricing.authorization_minor` of the terms; the amount held
    is that plus the payment surcharge. With ``accuracy`` and an ε budget, the
    error is that of one answer at the usage estimate's ε, or else at an equal
    share of the budget (the whole of it for a single computation). δ is the
    accuracy's, else the usage estimate's, else 0. Rows and compute units are the
    usage estimate's (or the terms' maxima) times the number of computations.

    Raises
    ------
    PricingError
        ``now`` without a time zone, a ``ttl`` that is not positive, a fee out of
        range, or terms the plan cannot sell (:class:`pricing.QuotaExceeded`).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise PricingError(f"now: must be timezone-aware, got {now.isoformat()}")
    if ttl <= timedelta(0):
        raise PricingError(f"ttl: must be positive, got {ttl}")
    terms = request.terms
    usage = request.usage_estimate
    split = breakdown(
        authorization_minor(plan, terms), fee_bps=fee_bps, surcharge=surcharge
    )
    error: tuple[float, float] | None = None
    if accuracy is not None and terms.epsilon_micro > 0:
        per_answer: float
        if usage is not None and usage.epsilon_micro > 0:
            per_answer = usage.epsilon_micro
        else:
            per_answer = terms.epsilon_micro / terms.queries
        error = accuracy.error_at(per_answer / EPSILON_SCALE)
    if accuracy is not None:
        delta = accuracy.delta
    else:
        delta = usage.delta if usage is not None else 0.0
    units = usage.compute_units if usage else terms.max_compute_units_per_query
    rows = usage.rows_scanned if usage else terms.max_rows_per_query
    return Quote(
        plan_kind=plan.kind,
        currency=plan.currency,
        amount_minor=split.total_minor,
        breakdown=split,
        epsilon_micro=terms.epsilon_micro,
        delta=delta,
        expected_abs_error=error[0] if error else None,
        ci95_half_width=error[1] if error else None,
        compute_units_estimate=units * terms.queries,
        rows_estimate=rows * terms.queries,
        expires_at=now + ttl,
    )


@dataclass(frozen=True)
class MenuOption:
    """One choice of a DP quote menu: an ε, its error, and its price."""

    epsilon_micro: int
    """The ε each question spends, in micro-ε."""
    epsilon: float
    """The same as a float."""
    delta: float
    """The accuracy's δ."""
    expected_abs_error: float
    """The expected absolute error of each answer."""
    ci95_half_width: float
    """Its 95% confidence half-width."""
    quote: Quote
    """The priced entitlement: ``queries`` questions at this ε each."""


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
    """Price one DP question at each ε: the menu, sorted by ε.

    Each ε is rounded up to micro-ε (:func:`pricing.epsilon_to_micro`; equal ones
    are one option). Option ``ε`` quotes an entitlement of ``queries`` questions at
    ``ε`` each (budget ``queries · ε``) and states the error of each answer. Along
    the menu the price never falls (the authorisation grows with the budget) and
    the error strictly falls. A plan that does not price privacy costs the same at
    every ε: only the error differs.

    Raises
    ------
    PricingError
        No ε, an ε that is not a finite number > 0, or a bad ``queries``, fee,
        clock or ttl (as :func:`make_quote`).
    """
    if not epsilons:
        raise PricingError("epsilons: give at least one")
    micros: set[int] = set()
    for i, epsilon in enumerate(epsilons):
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise PricingError(
                f"epsilons[{i}]: must be a finite number > 0, got {epsilon!r}"
            )
        micros.add(epsilon_to_micro(epsilon, Rounding.UP))
    options: list[MenuOption] = []
    for micro in sorted(micros):
        terms = EntitlementTerms(queries=queries, epsilon_micro=queries * micro)
        quote = make_quote(
            plan,
            QuoteRequest(terms=terms),
            now=now,
            ttl=ttl,
            fee_bps=fee_bps,
            surcharge=surcharge,
            accuracy=accuracy,
        )
        epsilon = micro / EPSILON_SCALE
        error, half = accuracy.error_at(epsilon)
        options.append(
            MenuOption(
                epsilon_micro=micro,
                epsilon=epsilon,
                delta=accuracy.delta,
                expected_abs_error=error,
                ci95_half_width=half,
                quote=quote,
            )
        )
    return options

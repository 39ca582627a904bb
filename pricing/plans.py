"""Pricing plans: a discriminated union on ``kind``, all amounts in minor units.

Each plan validates its parameters and states the rule it enforces. A plan is data;
computing a quote from it belongs to the pricing engine.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = [
    "PRICING_PLAN_ADAPTER",
    "AnyPlan",
    "FixedPerQuery",
    "Metered",
    "PricingPlan",
    "PrivacyPriced",
    "Subscription",
    "Tier",
    "VolumeTiered",
    "reference_price_minor",
]

MAX_MINOR = 10**12
"""The largest amount accepted anywhere in a plan (ten billion in major units)."""

Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code.")
]
Minor = Annotated[
    int, Field(ge=0, le=MAX_MINOR, description="An amount in minor units (cents).")
]


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: Currency


class FixedPerQuery(_Plan):
    """A fixed price for each computation."""

    kind: Literal["fixed_per_query"] = "fixed_per_query"
    price_per_query_minor: Minor


class Subscription(_Plan):
    """A price per period that includes a quota of computations."""

    kind: Literal["subscription"] = "subscription"
    price_per_period_minor: Minor
    period: Literal["day", "week", "month", "year"]
    queries_per_period: int = Field(ge=1, le=10**9)
    overage_per_query_minor: Minor | None = Field(
        default=None,
        description="Price per computation beyond the quota; none = hard cap.",
    )


class Metered(_Plan):
    """A price by resources used: rows scanned and compute units."""

    kind: Literal["metered"] = "metered"
    price_per_million_rows_minor: Minor = 0
    price_per_compute_unit_minor: Minor = 0
    minimum_charge_minor: Minor = 0

    @model_validator(mode="after")
    def _some_rate(self) -> Metered:
        if (
            self.price_per_million_rows_minor == 0
            and self.price_per_compute_unit_minor == 0
        ):
            raise ValueError(
                "at least one of price_per_million_rows_minor and "
                "price_per_compute_unit_minor must be positive"
            )
        return self


class PrivacyPriced(_Plan):
    """Price as a function of privacy loss: ``base + per_epsilon · ε^exponent``.

    With ``0 < exponent ≤ 1`` the price is monotone and subadditive in ε, so
    splitting a question into several smaller-ε questions never costs less.
    """

    kind: Literal["privacy_priced"] = "privacy_priced"
    base_price_minor: Minor
    price_per_epsilon_minor: Minor
    exponent: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Must be ≤ 1 so the price is subadditive in ε (no arbitrage).",
    )
    reference_epsilon: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="ε used for the listing's headline price.",
    )


class Tier(BaseModel):
    """One volume tier: the unit price up to a cumulative number of computations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    up_to_queries: int | None = Field(
        default=None, ge=1, description="Inclusive upper bound; null for the last tier."
    )
    price_per_query_minor: Minor


class VolumeTiered(_Plan):
    """Unit prices that fall with cumulative volume."""

    kind: Literal["volume_tiered"] = "volume_tiered"
    tiers: list[Tier] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _ordered(self) -> VolumeTiered:
        *bounded, last = self.tiers
        if last.up_to_queries is not None:
            raise ValueError("the last tier must have up_to_queries null (open-ended)")
        previous = 0
        for i, tier in enumerate(bounded):
            if tier.up_to_queries is None:
                raise ValueError(f"tiers[{i}]: only the last tier may be open-ended")
            if tier.up_to_queries <= previous:
                raise ValueError(f"tiers[{i}]: up_to_queries must increase")
            previous = tier.up_to_queries
        prices = [t.price_per_query_minor for t in self.tiers]
        if any(b > a for a, b in itertools.pairwise(prices)):
            raise ValueError("unit prices must not rise with volume")
        return self


AnyPlan = FixedPerQuery | Subscription | Metered | PrivacyPriced | VolumeTiered
"""The union of plan classes, for type annotations."""

PricingPlan = Annotated[AnyPlan, Field(discriminator="kind")]
"""Any pricing plan, discriminated by ``kind`` (use in pydantic models)."""

PRICING_PLAN_ADAPTER: TypeAdapter[AnyPlan] = TypeAdapter(PricingPlan)
"""Validates a plan from JSON-like data."""


def reference_price_minor(plan: AnyPlan) -> int:
    """Return the headline price of one computation, for sorting and facets.

    Fixed: the price per query. Subscription: the period price spread over its
    quota, rounded up. Metered: the charge for one million rows scanned and one
    compute unit, at least the minimum. Privacy-priced: the price at the reference
    ε, rounded up — exactly what the pricing engine charges a job at that ε
    (:func:`pricing.charge_minor`). Tiered: the first tier's unit price.
    """
    match plan:
        case FixedPerQuery():
            return plan.price_per_query_minor
        case Subscription():
            return -(-plan.price_per_period_minor // plan.queries_per_period)
        case Metered():
            return max(
                plan.minimum_charge_minor,
                plan.price_per_million_rows_minor + plan.price_per_compute_unit_minor,
            )
        case PrivacyPriced():
            # The engine's price at the reference ε, so the headline is what a job
            # there is charged (imported here: the engine imports this module).
            from pricing._engine import reference_variable_minor

            return plan.base_price_minor + reference_variable_minor(plan)
        case VolumeTiered():
            return plan.tiers[0].price_per_query_minor

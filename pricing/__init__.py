"""Pure pricing: plans, quotes and revenue splits in integer minor units.

No database, HTTP or chain access. Only plan models exist yet; the pricing
engine (quotes, splits, contribution valuation) arrives with the trading issue.
"""

from pricing.plans import (
    PRICING_PLAN_ADAPTER,
    AnyPlan,
    FixedPerQuery,
    Metered,
    PricingPlan,
    PrivacyPriced,
    Subscription,
    Tier,
    VolumeTiered,
    reference_price_minor,
)

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

"""Pure pricing: plans, quotes and revenue splits in integer minor units.

No database, HTTP or chain access. Plan models (:mod:`pricing.plans`); exact money
arithmetic with the rounding named at every division (:mod:`pricing._money`);
revenue splits among several providers by contribution — rows, leave-one-out,
exact and sampled Shapley values (:mod:`pricing._contribution`). Quotes and the
pricing engine arrive with the rest of the trading issue.
"""

from pricing._contribution import (
    MAX_EXACT_PARTIES,
    ShapleyEstimate,
    leave_one_out,
    shapley_exact,
    shapley_sampled,
    split_by_rows,
    split_by_value,
)
from pricing._money import (
    TOTAL_BPS,
    MoneyError,
    Rounding,
    allocate,
    fee_bps,
    mul_div,
    split_bps,
)
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
    "MAX_EXACT_PARTIES",
    "PRICING_PLAN_ADAPTER",
    "TOTAL_BPS",
    "AnyPlan",
    "FixedPerQuery",
    "Metered",
    "MoneyError",
    "PricingPlan",
    "PrivacyPriced",
    "Rounding",
    "ShapleyEstimate",
    "Subscription",
    "Tier",
    "VolumeTiered",
    "allocate",
    "fee_bps",
    "leave_one_out",
    "mul_div",
    "reference_price_minor",
    "shapley_exact",
    "shapley_sampled",
    "split_bps",
    "split_by_rows",
    "split_by_value",
]

"""Pure pricing: plans, quotes and revenue splits in integer minor units.

No database, HTTP or chain access. Plan models (:mod:`pricing.plans`); exact money
arithmetic with the rounding named at every division (:mod:`pricing._money`);
revenue splits among several providers by contribution — rows, leave-one-out,
exact and sampled Shapley values (:mod:`pricing._contribution`); what a plan
charges for a job and the most an entitlement can cost, with ε in exact integer
micro-ε (:mod:`pricing._engine`); quotes with their fee, surcharge and DP accuracy,
and the DP quote menu (:mod:`pricing._quote`).
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
from pricing._engine import (
    EPSILON_SCALE,
    EntitlementTerms,
    PricingError,
    QuotaExceeded,
    Usage,
    authorization_minor,
    charge_minor,
    epsilon_to_micro,
    micro_to_epsilon,
    privacy_variable_minor,
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
from pricing._quote import (
    DEFAULT_MENU_EPSILONS,
    Accuracy,
    FeeBreakdown,
    MenuOption,
    Quote,
    QuoteRequest,
    Surcharge,
    breakdown,
    make_quote,
    quote_menu,
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
    "DEFAULT_MENU_EPSILONS",
    "EPSILON_SCALE",
    "MAX_EXACT_PARTIES",
    "PRICING_PLAN_ADAPTER",
    "TOTAL_BPS",
    "Accuracy",
    "AnyPlan",
    "EntitlementTerms",
    "FeeBreakdown",
    "FixedPerQuery",
    "MenuOption",
    "Metered",
    "MoneyError",
    "PricingError",
    "PricingPlan",
    "PrivacyPriced",
    "QuotaExceeded",
    "Quote",
    "QuoteRequest",
    "Rounding",
    "ShapleyEstimate",
    "Subscription",
    "Surcharge",
    "Tier",
    "Usage",
    "VolumeTiered",
    "allocate",
    "authorization_minor",
    "breakdown",
    "charge_minor",
    "epsilon_to_micro",
    "fee_bps",
    "leave_one_out",
    "make_quote",
    "micro_to_epsilon",
    "mul_div",
    "privacy_variable_minor",
    "quote_menu",
    "reference_price_minor",
    "shapley_exact",
    "shapley_sampled",
    "split_bps",
    "split_by_rows",
    "split_by_value",
]

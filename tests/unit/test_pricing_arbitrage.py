"""Property tests of the pricing engine: privacy prices are arbitrage-free (monotone
and subadditive in ε, exactly, in integer minor units), an entitlement's
authorisation bounds every sequence of charges it allows, volume tiers cost the
same however a volume is split, fees and surcharges conserve money, and the DP
menu trades error for price in the right direction.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pricing
from pricing import (
    Accuracy,
    EntitlementTerms,
    FixedPerQuery,
    Metered,
    PricingError,
    PrivacyPriced,
    QuotaExceeded,
    Subscription,
    Surcharge,
    Tier,
    Usage,
    VolumeTiered,
    authorization_minor,
    breakdown,
    charge_minor,
    epsilon_to_micro,
    quote_menu,
)

NOW = datetime(2026, 11, 22, tzinfo=UTC)

privacy_plans = st.builds(
    PrivacyPriced,
    currency=st.just("EUR"),
    base_price_minor=st.integers(0, 100_000),
    price_per_epsilon_minor=st.integers(0, 10_000_000),
    exponent=st.one_of(
        st.just(1.0),
        st.sampled_from([0.25, 0.5, 0.8, 0.9, 0.95]),
        st.floats(0.05, 1.0),
    ),
)
micro = st.integers(1, 100 * pricing.EPSILON_SCALE)


def _price(plan: PrivacyPriced, eps: int) -> int:
    return charge_minor(plan, Usage(epsilon_micro=eps))


@settings(max_examples=400, deadline=None)
@given(plan=privacy_plans, a=micro, b=micro)
def test_privacy_prices_are_monotone_and_subadditive(
    plan: PrivacyPriced, a: int, b: int
) -> None:
    whole = _price(plan, a + b)
    assert _price(plan, a) <= whole and _price(plan, b) <= whole
    assert whole <= _price(plan, a) + _price(plan, b)


@settings(max_examples=200, deadline=None)
@given(plan=privacy_plans, eps=micro, parts=st.integers(2, 20), data=st.data())
def test_splitting_a_question_never_costs_less(
    plan: PrivacyPriced, eps: int, parts: int, data: st.DataObject
) -> None:
    parts = min(parts, eps)
    cuts = sorted(
        data.draw(
            st.sets(st.integers(1, eps - 1), min_size=parts - 1, max_size=parts - 1)
        )
        if eps > 1
        else set()
    )
    pieces = [b - a for a, b in zip([0, *cuts], [*cuts, eps], strict=True)]
    assert sum(pieces) == eps
    assert sum(_price(plan, p) for p in pieces) >= _price(plan, eps)


def test_the_epsilon_grid_snaps_float_noise() -> None:
    assert epsilon_to_micro(0.07) == 70_000
    assert epsilon_to_micro(0.1) == 100_000
    assert epsilon_to_micro(0.1 + 0.2) == 300_000
    assert epsilon_to_micro(1e-7) == 1  # rounded up, never down to free
    assert epsilon_to_micro(1e-7, pricing.Rounding.DOWN) == 0
    with pytest.raises(PricingError, match="epsilon"):
        epsilon_to_micro(-0.1)


@settings(max_examples=200, deadline=None)
@given(plan=privacy_plans, n=st.integers(1, 12), budget=micro, data=st.data())
def test_privacy_authorisation_bounds_any_use(
    plan: PrivacyPriced, n: int, budget: int, data: st.DataObject
) -> None:
    terms = EntitlementTerms(queries=n, epsilon_micro=budget)
    cap = authorization_minor(plan, terms)
    used = data.draw(st.lists(st.integers(0, budget), min_size=1, max_size=n))
    scale = sum(used)
    if scale > budget:  # rescale into the budget
        used = [u * budget // scale for u in used]
    assert sum(used) <= budget
    assert sum(_price(plan, u) for u in used) <= cap


tiers = st.builds(
    lambda a, b, p1, p2, p3: VolumeTiered(
        currency="EUR",
        tiers=[
            Tier(up_to_queries=a, price_per_query_minor=max(p1, p2, p3)),
            Tier(up_to_queries=a + b, price_per_query_minor=sorted([p1, p2, p3])[1]),
            Tier(up_to_queries=None, price_per_query_minor=min(p1, p2, p3)),
        ],
    ),
    st.integers(1, 50),
    st.integers(1, 50),
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.integers(0, 5000),
)


@settings(max_examples=200, deadline=None)
@given(plan=tiers, sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_tiers_cost_the_same_however_volume_is_split(
    plan: VolumeTiered, sizes: list[int]
) -> None:
    total = sum(sizes)
    together = charge_minor(plan, Usage(queries=total))
    prior, apart = 0, 0
    for size in sizes:
        apart += charge_minor(plan, Usage(queries=size), prior_queries=prior)
        prior += size
    assert (
        apart == together == authorization_minor(plan, EntitlementTerms(queries=total))
    )
    # One query at a time never costs more later than earlier.
    unit = [charge_minor(plan, Usage(), prior_queries=i) for i in range(total)]
    assert unit == sorted(unit, reverse=True)


def test_the_plans_charge_as_documented() -> None:
    assert (
        charge_minor(
            FixedPerQuery(currency="EUR", price_per_query_minor=250), Usage(queries=3)
        )
        == 750
    )
    sub = Subscription(
        currency="EUR",
        price_per_period_minor=10_000,
        period="month",
        queries_per_period=2,
        overage_per_query_minor=900,
    )
    assert [charge_minor(sub, Usage(), prior_queries=i) for i in range(4)] == [
        0,
        0,
        900,
        900,
    ]
    assert authorization_minor(sub, EntitlementTerms(queries=5)) == 10_000 + 3 * 900
    capped = sub.model_copy(update={"overage_per_query_minor": None})
    with pytest.raises(QuotaExceeded) as caught:
        charge_minor(capped, Usage(), prior_queries=2)
    assert caught.value.quota == 2
    with pytest.raises(QuotaExceeded):
        authorization_minor(capped, EntitlementTerms(queries=3))
    assert authorization_minor(capped, EntitlementTerms(queries=4, periods=2)) == 20_000
    metered = Metered(
        currency="EUR",
        price_per_million_rows_minor=12_000,
        price_per_compute_unit_minor=150,
        minimum_charge_minor=2_500,
    )
    assert charge_minor(metered, Usage(rows_scanned=1, compute_units=1)) == 2_500
    # 2.5M rows → 30,000 exactly; 1 more row rounds the row part up a unit.
    assert (
        charge_minor(metered, Usage(rows_scanned=2_500_000, compute_units=2)) == 30_300
    )
    assert (
        charge_minor(metered, Usage(rows_scanned=2_500_001, compute_units=2)) == 30_301
    )
    priv = PrivacyPriced(
        currency="EUR",
        base_price_minor=500,
        price_per_epsilon_minor=2_000,
        exponent=0.5,
    )
    assert charge_minor(priv, Usage(epsilon_micro=1_000_000)) == 2_500
    assert charge_minor(priv, Usage(epsilon_micro=250_000)) == 1_500
    assert charge_minor(priv, Usage()) == 500  # no ε, no variable part


@settings(max_examples=300, deadline=None)
@given(
    gross=st.integers(0, 10**12),
    fee=st.integers(0, 10_000),
    bps=st.integers(0, 10_000),
    fixed=st.integers(0, 10_000),
)
def test_breakdowns_conserve_money(gross: int, fee: int, bps: int, fixed: int) -> None:
    split = breakdown(
        gross, fee_bps=fee, surcharge=Surcharge(bps=bps, fixed_minor=fixed)
    )
    assert split.total_minor == split.gross_minor + split.surcharge_minor
    assert split.exchange_fee_minor + split.provider_net_minor == gross
    assert (
        min(split.surcharge_minor, split.exchange_fee_minor, split.provider_net_minor)
        >= 0
    )
    assert split.exchange_fee_minor == pricing.fee_bps(gross, fee)
    if gross:
        assert split.surcharge_minor * 10_000 >= gross * bps + fixed * 10_000
    else:
        assert split.surcharge_minor == 0


@settings(max_examples=100, deadline=None)
@given(
    plan=privacy_plans,
    epsilons=st.lists(st.floats(0.01, 50), min_size=1, max_size=8),
    sensitivity=st.floats(0.01, 1e6),
    mechanism=st.sampled_from(["laplace", "gaussian"]),
)
def test_the_menu_trades_error_for_price(
    plan: PrivacyPriced, epsilons: list[float], sensitivity: float, mechanism: str
) -> None:
    accuracy = Accuracy(
        sensitivity=sensitivity,
        mechanism=mechanism,  # type: ignore[arg-type]
        delta=1e-6 if mechanism == "gaussian" else 0.0,
    )
    menu = quote_menu(
        plan,
        accuracy=accuracy,
        epsilons=epsilons,
        now=NOW,
        ttl=timedelta(minutes=5),
        fee_bps=1000,
    )
    eps = [o.epsilon_micro for o in menu]
    assert eps == sorted(set(eps))
    prices = [o.quote.breakdown.gross_minor for o in menu]
    errors = [o.expected_abs_error for o in menu]
    assert prices == sorted(prices)
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert all(o.ci95_half_width > o.expected_abs_error for o in menu)
    assert all(o.quote.expires_at == NOW + timedelta(minutes=5) for o in menu)


def test_quotes_need_an_aware_clock() -> None:
    plan = FixedPerQuery(currency="EUR", price_per_query_minor=100)
    with pytest.raises(PricingError, match="now"):
        pricing.make_quote(
            plan,
            pricing.QuoteRequest(terms=EntitlementTerms(queries=1)),
            now=datetime(2026, 1, 1),  # naive: the point of the test
            ttl=timedelta(minutes=1),
            fee_bps=0,
        )


@settings(max_examples=200, deadline=None)
@given(plan=privacy_plans, eps=micro)
def test_one_query_is_quoted_at_its_exact_price(plan: PrivacyPriced, eps: int) -> None:
    terms = EntitlementTerms(queries=1, epsilon_micro=eps)
    assert authorization_minor(plan, terms) == _price(plan, eps)


@settings(max_examples=200, deadline=None)
@given(
    plan=privacy_plans,
    eps=st.sampled_from([0.01, 0.07, 0.1, 0.25, 0.3, 1.0, 2.5, 7.0]),
)
def test_the_headline_price_is_what_a_job_at_the_reference_epsilon_costs(
    plan: PrivacyPriced, eps: float
) -> None:
    plan = plan.model_copy(update={"reference_epsilon": eps})
    micro_eps = epsilon_to_micro(eps)
    assert pricing.reference_price_minor(plan) == _price(plan, micro_eps)


def test_whole_amounts_are_not_rounded_up() -> None:
    plan = PrivacyPriced(
        currency="EUR", base_price_minor=0, price_per_epsilon_minor=2000, exponent=0.5
    )
    assert _price(plan, epsilon_to_micro(0.25)) == 1000
    assert _price(plan, epsilon_to_micro(1.0)) == 2000


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Usage(queries=-1), "queries"),
        (lambda: Usage(rows_scanned=1.5), "rows_scanned"),  # type: ignore[arg-type]
        (lambda: Usage(epsilon_micro=pricing.MAX_EPSILON_MICRO + 1), "epsilon_micro"),
        (lambda: Usage(delta=float("nan")), "delta"),
        (lambda: EntitlementTerms(queries=0), "queries"),
        (lambda: EntitlementTerms(queries=pricing.MAX_QUERIES + 1), "queries"),
        (lambda: EntitlementTerms(queries=1, periods=True), "periods"),
    ],
)
def test_bad_counts_name_their_field(build: object, field: str) -> None:
    with pytest.raises(PricingError, match=rf"^{field}: "):
        build()  # type: ignore[operator]


def test_a_used_quota_says_how_many_periods() -> None:
    plan = Subscription(
        currency="EUR",
        price_per_period_minor=1000,
        period="month",
        queries_per_period=2,
    )
    assert charge_minor(plan, Usage(), prior_queries=3, periods=2) == 0
    with pytest.raises(QuotaExceeded, match="4 for 2 periods") as caught:
        charge_minor(plan, Usage(), prior_queries=4, periods=2)
    assert caught.value.periods == 2


@settings(max_examples=2000, deadline=None)
@given(
    c=st.integers(1, 10**9),
    p=st.one_of(st.sampled_from([0.25, 0.5, 0.8, 0.9]), st.floats(0.01, 0.999)),
    micro_eps=st.integers(1, pricing.MAX_EPSILON_MICRO),
)
def test_the_float_fast_path_prices_exactly_like_the_decimal_one(
    c: int, p: float, micro_eps: int
) -> None:
    from fractions import Fraction

    from pricing import _engine

    eps = Fraction(micro_eps, pricing.EPSILON_SCALE)
    assert _engine._power_minor(c, p, eps) == _engine._decimal_power_minor(c, p, eps)


@pytest.mark.parametrize(
    ("c", "p", "micro_eps", "whole"),
    [
        (2000, 0.5, 250_000, 1000),
        (100, 0.5, 4_000_000, 200),
        (81, 0.25, 16_000_000, 162),
    ],
)
def test_whole_amounts_take_the_exact_path(
    c: int, p: float, micro_eps: int, whole: int
) -> None:
    from fractions import Fraction

    from pricing import _engine

    eps = Fraction(micro_eps, pricing.EPSILON_SCALE)
    assert _engine._power_minor(c, p, eps) == whole

"""Pricing plans: each plan's rules, the discriminated union, the headline price."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pricing.plans import (
    MAX_MINOR,
    PRICING_PLAN_ADAPTER,
    FixedPerQuery,
    Metered,
    PrivacyPriced,
    Subscription,
    VolumeTiered,
    reference_price_minor,
)

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

minor = st.integers(0, MAX_MINOR)
small_minor = st.integers(0, 10**7)
currency = st.sampled_from(["EUR", "USD", "GBP", "CHF", "JPY"])
epsilon = st.floats(min_value=1e-6, max_value=100, allow_nan=False, exclude_min=False)
exponent = st.floats(min_value=1e-3, max_value=1.0)


def validate(doc: dict[str, Any]) -> Any:
    """Validate a plan document through the discriminated union."""
    return PRICING_PLAN_ADAPTER.validate_python(doc)


def rejected(doc: dict[str, Any]) -> list[Any]:
    """The error locations of an invalid plan document."""
    with pytest.raises(ValidationError) as exc:
        validate(doc)
    return [e["loc"] for e in exc.value.errors()]


# -- strategies of valid plans -------------------------------------------------


def fixed() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "kind": st.just("fixed_per_query"),
            "currency": currency,
            "price_per_query_minor": minor,
        }
    )


def subscription() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "kind": st.just("subscription"),
            "currency": currency,
            "price_per_period_minor": minor,
            "period": st.sampled_from(["day", "week", "month", "year"]),
            "queries_per_period": st.integers(1, 10**9),
        },
        optional={"overage_per_query_minor": st.none() | minor},
    )


@st.composite
def metered(draw: st.DrawFn) -> dict[str, Any]:
    rows, units = draw(st.tuples(minor, minor).filter(lambda t: t != (0, 0)))
    doc = {
        "kind": "metered",
        "currency": draw(currency),
        "price_per_million_rows_minor": rows,
        "price_per_compute_unit_minor": units,
    }
    if draw(st.booleans()):
        doc["minimum_charge_minor"] = draw(minor)
    return doc


def privacy_priced() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "kind": st.just("privacy_priced"),
            "currency": currency,
            "base_price_minor": minor,
            "price_per_epsilon_minor": minor,
        },
        optional={"exponent": exponent, "reference_epsilon": epsilon},
    )


@st.composite
def tiers(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1-20 tiers with rising bounds, an open last tier and non-rising prices."""
    n = draw(st.integers(1, 20))
    bounds = sorted(
        draw(st.sets(st.integers(1, 10**9), min_size=n - 1, max_size=n - 1))
    )
    prices = sorted(draw(st.lists(minor, min_size=n, max_size=n)), reverse=True)
    return [
        {"up_to_queries": bound, "price_per_query_minor": price}
        for bound, price in zip([*bounds, None], prices, strict=True)
    ]


def volume_tiered() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"kind": st.just("volume_tiered"), "currency": currency, "tiers": tiers()}
    )


any_plan = st.one_of(
    fixed(), subscription(), metered(), privacy_priced(), volume_tiered()
)


# -- every valid plan ----------------------------------------------------------


@PROPERTY
@given(any_plan)
def test_valid_plans_validate_and_round_trip(doc: dict[str, Any]) -> None:
    plan = validate(doc)
    assert plan.kind == doc["kind"]
    assert validate(plan.model_dump()) == plan
    assert (
        PRICING_PLAN_ADAPTER.validate_json(PRICING_PLAN_ADAPTER.dump_json(plan)) == plan
    )


@PROPERTY
@given(any_plan)
def test_reference_price_is_a_non_negative_integer(doc: dict[str, Any]) -> None:
    price = reference_price_minor(validate(doc))
    assert isinstance(price, int)
    assert price >= 0


@PROPERTY
@given(any_plan, st.sampled_from(["eur", "EU", "EURO", "", "€€€", "E1R"]))
def test_currency_must_be_an_iso_code(doc: dict[str, Any], bad: str) -> None:
    assert ("currency",) in [loc[1:] for loc in rejected({**doc, "currency": bad})]


@PROPERTY
@given(any_plan)
def test_unknown_fields_and_kinds_are_rejected(doc: dict[str, Any]) -> None:
    assert rejected({**doc, "discount": 5})
    assert rejected({**doc, "kind": "auction"})
    without_kind = {k: v for k, v in doc.items() if k != "kind"}
    assert rejected(without_kind)


def test_plans_are_frozen() -> None:
    plan = FixedPerQuery(currency="EUR", price_per_query_minor=1)
    with pytest.raises(ValidationError):
        plan.price_per_query_minor = 2  # type: ignore[misc]


# -- amounts -------------------------------------------------------------------

AMOUNT_FIELDS = [
    ("fixed_per_query", "price_per_query_minor"),
    ("subscription", "price_per_period_minor"),
    ("subscription", "overage_per_query_minor"),
    ("metered", "price_per_million_rows_minor"),
    ("metered", "minimum_charge_minor"),
    ("privacy_priced", "base_price_minor"),
    ("privacy_priced", "price_per_epsilon_minor"),
]

VALID: dict[str, dict[str, Any]] = {
    "fixed_per_query": {
        "kind": "fixed_per_query",
        "currency": "EUR",
        "price_per_query_minor": 100,
    },
    "subscription": {
        "kind": "subscription",
        "currency": "EUR",
        "price_per_period_minor": 10_000,
        "period": "month",
        "queries_per_period": 100,
        "overage_per_query_minor": 150,
    },
    "metered": {
        "kind": "metered",
        "currency": "EUR",
        "price_per_million_rows_minor": 50,
        "price_per_compute_unit_minor": 3,
        "minimum_charge_minor": 10,
    },
    "privacy_priced": {
        "kind": "privacy_priced",
        "currency": "EUR",
        "base_price_minor": 100,
        "price_per_epsilon_minor": 1000,
        "exponent": 0.5,
        "reference_epsilon": 1.0,
    },
    "volume_tiered": {
        "kind": "volume_tiered",
        "currency": "EUR",
        "tiers": [
            {"up_to_queries": 100, "price_per_query_minor": 300},
            {"up_to_queries": 1000, "price_per_query_minor": 200},
            {"up_to_queries": None, "price_per_query_minor": 100},
        ],
    },
}


def test_the_valid_examples_validate() -> None:
    for doc in VALID.values():
        validate(doc)


@pytest.mark.parametrize(("kind", "field"), AMOUNT_FIELDS)
@PROPERTY
@given(
    bad=st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=MAX_MINOR + 1),
        st.sampled_from([1.5, "ten", None, float("nan")]),
    )
)
def test_amounts_are_bounded_integers(kind: str, field: str, bad: Any) -> None:
    if bad is None and field == "overage_per_query_minor":
        return  # none means a hard cap
    assert (kind, field) in rejected({**VALID[kind], field: bad})


@pytest.mark.parametrize(("kind", "field"), AMOUNT_FIELDS)
def test_amount_limits_are_inclusive(kind: str, field: str) -> None:
    for value in (0, MAX_MINOR):
        doc = {**VALID[kind], field: value}
        if kind == "metered":
            doc["price_per_compute_unit_minor"] = 1
        validate(doc)


# -- per-plan rules ------------------------------------------------------------


@PROPERTY
@given(
    period=st.text(min_size=0, max_size=8).filter(
        lambda s: s not in {"day", "week", "month", "year"}
    ),
    queries=st.one_of(st.integers(max_value=0), st.integers(min_value=10**9 + 1)),
)
def test_subscription_rules(period: str, queries: int) -> None:
    assert ("subscription", "period") in rejected(
        {**VALID["subscription"], "period": period}
    )
    assert ("subscription", "queries_per_period") in rejected(
        {**VALID["subscription"], "queries_per_period": queries}
    )
    hard_cap = validate({**VALID["subscription"], "overage_per_query_minor": None})
    assert (
        isinstance(hard_cap, Subscription) and hard_cap.overage_per_query_minor is None
    )


@PROPERTY
@given(minimum=minor, currency_code=currency)
def test_metered_needs_a_positive_rate(minimum: int, currency_code: str) -> None:
    doc = {
        "kind": "metered",
        "currency": currency_code,
        "minimum_charge_minor": minimum,
    }
    assert rejected(doc)
    assert rejected(
        {**doc, "price_per_million_rows_minor": 0, "price_per_compute_unit_minor": 0}
    )
    assert isinstance(validate({**doc, "price_per_million_rows_minor": 1}), Metered)
    assert isinstance(validate({**doc, "price_per_compute_unit_minor": 1}), Metered)


@PROPERTY
@given(
    bad_exponent=st.one_of(
        st.floats(max_value=0.0),
        st.floats(min_value=1.0, exclude_min=True),
        st.just(float("nan")),
    ),
    bad_epsilon=st.one_of(
        st.floats(max_value=0.0),
        st.floats(min_value=100.0, exclude_min=True),
        st.just(float("nan")),
    ),
)
def test_privacy_priced_rules(bad_exponent: float, bad_epsilon: float) -> None:
    doc = VALID["privacy_priced"]
    assert ("privacy_priced", "exponent") in rejected({**doc, "exponent": bad_exponent})
    assert ("privacy_priced", "reference_epsilon") in rejected(
        {**doc, "reference_epsilon": bad_epsilon}
    )
    defaults = PrivacyPriced(
        currency="EUR", base_price_minor=0, price_per_epsilon_minor=1
    )
    assert defaults.exponent == 1.0 and defaults.reference_epsilon == 1.0


# -- volume tiers --------------------------------------------------------------


@PROPERTY
@given(tiers())
def test_well_ordered_tiers_validate(value: list[dict[str, Any]]) -> None:
    plan = validate({"kind": "volume_tiered", "currency": "EUR", "tiers": value})
    assert isinstance(plan, VolumeTiered)
    assert plan.tiers[-1].up_to_queries is None
    assert reference_price_minor(plan) == value[0]["price_per_query_minor"]
    assert reference_price_minor(plan) == max(t["price_per_query_minor"] for t in value)


def _tiered(value: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "volume_tiered", "currency": "EUR", "tiers": value}


@PROPERTY
@given(tiers().filter(lambda t: len(t) >= 2), st.data())
def test_tier_ordering_rules(value: list[dict[str, Any]], data: st.DataObject) -> None:
    # The last tier must be open-ended.
    closed = [*value[:-1], {**value[-1], "up_to_queries": 2 * 10**9}]
    assert rejected(_tiered(closed))
    # Only the last tier may be open-ended.
    i = data.draw(st.integers(0, len(value) - 2))
    opened = [*value[:i], {**value[i], "up_to_queries": None}, *value[i + 1 :]]
    assert rejected(_tiered(opened))
    # Bounds must strictly increase.
    if len(value) >= 3:
        j = data.draw(st.integers(1, len(value) - 2))
        same = value[j - 1]["up_to_queries"]
        repeated = [*value[:j], {**value[j], "up_to_queries": same}, *value[j + 1 :]]
        assert rejected(_tiered(repeated))
        swapped = [*value[: j - 1], value[j], value[j - 1], *value[j + 1 :]]
        bounds = [t["up_to_queries"] for t in swapped[:-1]]
        if bounds != sorted(set(bounds)):
            assert rejected(_tiered(swapped))
    # Unit prices must not rise with volume.
    k = data.draw(st.integers(1, len(value) - 1))
    assume(value[k - 1]["price_per_query_minor"] < MAX_MINOR)
    rising = [
        *value[:k],
        {
            **value[k],
            "price_per_query_minor": value[k - 1]["price_per_query_minor"] + 1,
        },
        *value[k + 1 :],
    ]
    assert rejected(_tiered(rising))


def test_tier_counts_and_bounds() -> None:
    open_tier: dict[str, Any] = {"up_to_queries": None, "price_per_query_minor": 1}
    assert rejected(_tiered([]))
    bounded = [{"up_to_queries": i, "price_per_query_minor": 1} for i in range(1, 21)]
    assert rejected(_tiered([*bounded, open_tier]))  # 21 tiers
    validate(_tiered([*bounded[:19], open_tier]))  # 20 tiers
    assert rejected(
        _tiered([{"up_to_queries": 0, "price_per_query_minor": 1}, open_tier])
    )
    equal_prices: list[dict[str, Any]] = [
        {"up_to_queries": 5, "price_per_query_minor": 7},
        {"up_to_queries": None, "price_per_query_minor": 7},
    ]
    validate(_tiered(equal_prices))


# -- reference prices ----------------------------------------------------------


@PROPERTY
@given(any_plan)
def test_reference_price_follows_its_definition(doc: dict[str, Any]) -> None:
    plan = validate(doc)
    price = reference_price_minor(plan)
    match doc["kind"]:
        case "fixed_per_query":
            assert price == doc["price_per_query_minor"]
        case "subscription":
            # The period price spread over the quota, rounded up (exactly).
            assert price * doc["queries_per_period"] >= doc["price_per_period_minor"]
            assert (price - 1) * doc["queries_per_period"] < doc[
                "price_per_period_minor"
            ]
        case "metered":
            assert price == max(
                doc.get("minimum_charge_minor", 0),
                doc["price_per_million_rows_minor"]
                + doc["price_per_compute_unit_minor"],
            )
        case "privacy_priced":
            assert price >= doc["base_price_minor"]
            exact = (
                doc["price_per_epsilon_minor"] * plan.reference_epsilon**plan.exponent
            )
            assert price - doc["base_price_minor"] - exact > -1e-6 * max(1.0, exact)
            assert price - doc["base_price_minor"] - exact < 1 + 1e-6 * exact
        case "volume_tiered":
            assert price == doc["tiers"][0]["price_per_query_minor"]


def _privacy_plan(
    reference: float, per_epsilon: int, power: float, base: int = 0
) -> Any:
    return PrivacyPriced(
        currency="EUR",
        base_price_minor=base,
        price_per_epsilon_minor=per_epsilon,
        exponent=power,
        reference_epsilon=reference,
    )


def _variable(reference: float, per_epsilon: int, power: float, base: int) -> int:
    return (
        reference_price_minor(_privacy_plan(reference, per_epsilon, power, base)) - base
    )


@PROPERTY
@given(
    a=st.floats(min_value=1e-6, max_value=50),
    b=st.floats(min_value=1e-6, max_value=50),
    per_epsilon=st.one_of(
        small_minor, minor, st.sampled_from([1, 3, 7, 10, 100, 1000])
    ),
    power=st.one_of(exponent, st.just(1.0), st.just(0.5)),
    base=small_minor,
)
@example(a=0.03, b=0.04, per_epsilon=100, power=1.0, base=0)
@example(a=0.1, b=0.2, per_epsilon=10, power=1.0, base=5)
@example(a=0.5, b=0.6, per_epsilon=100, power=1.0, base=0)
@example(a=0.07, b=0.07, per_epsilon=100, power=1.0, base=1)
@example(a=0.25, b=0.0625, per_epsilon=16, power=0.5, base=0)
def test_privacy_price_is_subadditive(
    a: float, b: float, per_epsilon: int, power: float, base: int
) -> None:
    """Splitting an ε budget into two questions never costs less (no arbitrage)."""
    whole = _variable(a + b, per_epsilon, power, base)
    parts = _variable(a, per_epsilon, power, base) + _variable(
        b, per_epsilon, power, base
    )
    assert whole <= parts


@PROPERTY
@given(
    a=st.floats(min_value=1e-6, max_value=100),
    b=st.floats(min_value=1e-6, max_value=100),
    per_epsilon=minor,
    power=exponent,
)
def test_privacy_price_is_monotone(
    a: float, b: float, per_epsilon: int, power: float
) -> None:
    low, high = sorted((a, b))
    assert _variable(low, per_epsilon, power, 0) <= _variable(
        high, per_epsilon, power, 0
    )


@pytest.mark.parametrize(
    ("reference", "per_epsilon", "power", "expected"),
    [
        (1.0, 2500, 1.0, 2500),
        (0.07, 100, 1.0, 7),
        (1.1, 100, 1.0, 110),
        (0.5, 100, 1.0, 50),
        (0.25, 1000, 0.5, 500),
        (0.3, 10, 1.0, 3),
        (0.001, 1, 1.0, 1),
        (100.0, MAX_MINOR, 1.0, 100 * MAX_MINOR),
    ],
)
def test_privacy_reference_price_examples(
    reference: float, per_epsilon: int, power: float, expected: int
) -> None:
    assert _variable(reference, per_epsilon, power, 0) == expected
    assert reference_price_minor(_privacy_plan(reference, per_epsilon, power, 42)) == (
        expected + 42
    )


def test_other_reference_price_examples() -> None:
    assert reference_price_minor(validate(VALID["fixed_per_query"])) == 100
    assert reference_price_minor(validate(VALID["subscription"])) == 100
    assert (
        reference_price_minor(
            validate({**VALID["subscription"], "price_per_period_minor": 10_001})
        )
        == 101
    )
    assert reference_price_minor(validate(VALID["metered"])) == 53
    assert (
        reference_price_minor(
            validate({**VALID["metered"], "minimum_charge_minor": 99})
        )
        == 99
    )
    assert reference_price_minor(validate(VALID["privacy_priced"])) == 1100
    assert reference_price_minor(validate(VALID["volume_tiered"])) == 300

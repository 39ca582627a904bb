"""Exact money arithmetic: rounding, fees and splits that always sum to the amount."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing import (
    TOTAL_BPS,
    MoneyError,
    Rounding,
    allocate,
    fee_bps,
    mul_div,
    split_bps,
)

amounts = st.integers(min_value=0, max_value=10**15)


@pytest.mark.parametrize(
    ("x", "y", "d", "rounding", "expected"),
    [
        (7, 1, 2, Rounding.DOWN, 3),
        (7, 1, 2, Rounding.UP, 4),
        (7, 1, 2, Rounding.HALF_EVEN, 4),  # 3.5 → 4 (even)
        (5, 1, 2, Rounding.HALF_EVEN, 2),  # 2.5 → 2 (even)
        (11, 1, 4, Rounding.HALF_EVEN, 3),  # 2.75 → 3
        (9, 1, 4, Rounding.HALF_EVEN, 2),  # 2.25 → 2
        (6, 1, 3, Rounding.UP, 2),  # exact: no rounding
    ],
)
def test_mul_div_rounds_as_named(
    x: int, y: int, d: int, rounding: Rounding, expected: int
) -> None:
    assert mul_div(x, y, d, rounding) == expected


@given(amounts, st.integers(0, 10**6), st.integers(1, 10**6))
def test_mul_div_brackets_the_exact_quotient(x: int, y: int, d: int) -> None:
    exact = Fraction(x * y, d)
    down, up = mul_div(x, y, d, Rounding.DOWN), mul_div(x, y, d, Rounding.UP)
    assert down <= exact <= up and up - down <= 1
    assert abs(mul_div(x, y, d, Rounding.HALF_EVEN) - exact) <= Fraction(1, 2)


def test_mul_div_refuses_negatives_and_zero() -> None:
    with pytest.raises(MoneyError, match="d > 0"):
        mul_div(1, 1, 0, Rounding.DOWN)
    with pytest.raises(MoneyError):
        mul_div(-1, 1, 1, Rounding.DOWN)


@given(amounts, st.integers(0, TOTAL_BPS))
def test_fee_rounds_down_in_the_payees_favour(amount: int, bps: int) -> None:
    fee = fee_bps(amount, bps)
    assert 0 <= fee <= amount
    assert fee <= Fraction(amount * bps, TOTAL_BPS) < fee + 1


@pytest.mark.parametrize(
    ("amount", "bps", "fee"),
    [(0, 1_000, 0), (999, 1_000, 99), (1_000, 1_000, 100), (7, 10_000, 7), (7, 0, 0)],
)
def test_fee_examples(amount: int, bps: int, fee: int) -> None:
    assert fee_bps(amount, bps) == fee


def test_fee_refuses_out_of_range() -> None:
    with pytest.raises(MoneyError, match="bps"):
        fee_bps(100, 10_001)
    with pytest.raises(MoneyError, match="x, y ≥ 0"):
        fee_bps(-1, 100)


@st.composite
def bps_shares(draw: st.DrawFn) -> list[int]:
    n = draw(st.integers(1, 16))
    cuts = sorted(
        draw(st.sets(st.integers(1, TOTAL_BPS - 1), min_size=n - 1, max_size=n - 1))
    )
    bounds = [0, *cuts, TOTAL_BPS]
    return [b - a for a, b in itertools.pairwise(bounds)]


@given(amounts, bps_shares())
def test_a_bps_split_sums_to_the_amount_like_the_contract(
    amount: int, shares: list[int]
) -> None:
    parts = split_bps(amount, shares)
    assert sum(parts) == amount
    for part, bps in zip(parts[1:], shares[1:], strict=True):
        assert part == amount * bps // TOTAL_BPS  # floor, as Settlement._credit
    assert parts[0] - amount * shares[0] // TOTAL_BPS < len(shares)


@pytest.mark.parametrize(
    ("shares", "message"),
    [([], "at least one"), ([10_001], "sum to"), ([5_000, 0, 5_000], "positive")],
)
def test_a_bad_split_is_refused(shares: list[int], message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        split_bps(100, shares)


@given(amounts, st.lists(st.integers(0, 10**9), min_size=1, max_size=30))
def test_allocation_is_exact_close_and_monotone(
    amount: int, weights: list[int]
) -> None:
    if sum(weights) == 0:
        with pytest.raises(MoneyError):
            allocate(amount, weights)
        return
    parts = allocate(amount, weights)
    total = sum(weights)
    assert sum(parts) == amount
    for part, w in zip(parts, weights, strict=True):
        assert abs(part - Fraction(amount * w, total)) < 1
    for (pa, wa), (pb, wb) in zip(
        zip(parts, weights, strict=True),
        zip(parts[1:], weights[1:], strict=True),
        strict=False,
    ):
        if wa > wb:
            assert pa >= pb
        if wb > wa:
            assert pb >= pa


def test_golden_split_vectors() -> None:
    """The vectors the contract tests replay on the EVM (Settlement's rule)."""
    golden = Path(__file__).parents[2] / "pricing" / "golden" / "splits.json"
    vectors = json.loads(golden.read_text())["vectors"]
    assert vectors[0]["credits"] == [601, 300]  # net 901: 300 to co, rest to first
    for v in vectors:
        assert fee_bps(v["amount"], v["fee_bps"]) == v["fee"]
        assert split_bps(v["amount"] - v["fee"], v["shares_bps"]) == v["credits"]
    assert split_bps(1_000, [3_333, 3_333, 3_334]) == [334, 333, 333]

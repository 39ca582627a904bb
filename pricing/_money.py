"""Exact money arithmetic: integer minor units, rounding named at every division.

- :func:`mul_div` computes ``x · y / d`` exactly and rounds as told;
- :func:`fee_bps` is the exchange's fee on an amount (rounded down: in the payees'
  favour);
- :func:`split_bps` and :func:`allocate` split an amount among parties so that the
  parts **always sum to the amount exactly** — by basis points (as the settlement
  contract does: floor each part, the remainder to the first party) or in
  proportion to integer weights (largest remainder, ties to the earlier party).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

__all__ = [
    "TOTAL_BPS",
    "MoneyError",
    "Rounding",
    "allocate",
    "fee_bps",
    "mul_div",
    "split_bps",
]

TOTAL_BPS = 10_000
"""Basis points in a whole."""


class MoneyError(ValueError):
    """An amount, a rate or a split that money arithmetic refuses."""


class Rounding(StrEnum):
    """How a division that does not come out even is rounded."""

    DOWN = "down"
    """Towards zero (for non-negative values: the floor)."""
    UP = "up"
    """Away from zero (for non-negative values: the ceiling)."""
    HALF_EVEN = "half_even"
    """To the nearest, ties to the even neighbour (banker's rounding)."""


def mul_div(x: int, y: int, d: int, rounding: Rounding) -> int:
    """``x · y / d`` for non-negative integers, exactly, rounded as ``rounding`` says.

    Raises
    ------
    MoneyError
        A negative operand or a zero divisor.
    """
    if x < 0 or y < 0 or d <= 0:
        raise MoneyError(f"mul_div needs x, y ≥ 0 and d > 0 (got {x}, {y}, {d})")
    q, r = divmod(x * y, d)
    if r == 0 or rounding is Rounding.DOWN:
        return q
    if rounding is Rounding.UP:
        return q + 1
    twice = 2 * r
    if twice > d or (twice == d and q % 2 == 1):
        return q + 1
    return q


def fee_bps(amount: int, bps: int) -> int:
    """The fee of ``bps`` basis points on ``amount``, rounded down (payees' favour)."""
    if not 0 <= bps <= TOTAL_BPS:
        raise MoneyError(f"a fee must be within 0 … {TOTAL_BPS} bps, got {bps}")
    return mul_div(amount, bps, TOTAL_BPS, Rounding.DOWN)


def split_bps(amount: int, shares: Sequence[int]) -> list[int]:
    """Split ``amount`` by basis-point ``shares`` (summing to 10,000) exactly.

    Each part is ``amount · bps / 10,000`` rounded down; the remainder (less than
    one unit per party) goes to the first party — the settlement contract's rule,
    so Python and the chain agree to the unit.

    Raises
    ------
    MoneyError
        A negative amount, no shares, a non-positive share, or shares not summing
        to 10,000.
    """
    if amount < 0:
        raise MoneyError(f"cannot split a negative amount ({amount})")
    if not shares:
        raise MoneyError("a split needs at least one share")
    for i, bps in enumerate(shares):
        if bps <= 0:
            raise MoneyError(f"shares[{i}] must be positive, got {bps}")
    if sum(shares) != TOTAL_BPS:
        raise MoneyError(f"shares must sum to {TOTAL_BPS} bps, got {sum(shares)}")
    parts = [mul_div(amount, bps, TOTAL_BPS, Rounding.DOWN) for bps in shares]
    parts[0] += amount - sum(parts)
    return parts


def allocate(amount: int, weights: Sequence[int]) -> list[int]:
    """Split ``amount`` in proportion to non-negative integer ``weights`` exactly.

    Largest-remainder method: every party first gets its proportional part rounded
    down; the units left over go one each to the largest remainders, ties to the
    earlier party. So the parts sum to ``amount``, each differs from its exact
    share by less than one unit, and a larger weight never gets less.

    Raises
    ------
    MoneyError
        A negative amount or weight, or weights that are all zero.
    """
    if amount < 0:
        raise MoneyError(f"cannot allocate a negative amount ({amount})")
    if any(w < 0 for w in weights):
        raise MoneyError("weights must be non-negative")
    total = sum(weights)
    if total <= 0:
        raise MoneyError("at least one weight must be positive")
    floors: list[int] = []
    remainders: list[tuple[int, int]] = []
    for i, w in enumerate(weights):
        q, r = divmod(amount * w, total)
        floors.append(q)
        remainders.append((-r, i))
    left = amount - sum(floors)
    for _, i in sorted(remainders)[:left]:
        floors[i] += 1
    return floors

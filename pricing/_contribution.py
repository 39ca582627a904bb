"""Revenue splits among several providers of one computation, by contribution.

A computation over several providers' data earns one amount; who gets what is a
question of each provider's contribution. Three valuations, all pure:

- **rows contributed** — in proportion to the rows each provider's data added;
- **leave-one-out** — ``v(N) − v(N ∖ {i})``: what the result loses without ``i``;
- **Shapley value** — each provider's average marginal contribution over every
  order of arrival: exact (every coalition, ``2ⁿ`` evaluations of ``v``) up to
  :data:`MAX_EXACT_PARTIES` providers, and beyond that a permutation-sampling
  estimate with a Hoeffding error bound.

``v`` is the caller's characteristic function: a number for each coalition (a
frozenset of provider ids), e.g. a model's accuracy trained on their union;
``v(∅)`` is its value with nobody's data. :func:`split_by_value` turns values
into integer minor units that sum to the amount exactly (negative values get
nothing).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import combinations
from typing import TypeVar

from pricing._money import MoneyError, allocate

__all__ = [
    "MAX_EXACT_PARTIES",
    "ShapleyEstimate",
    "leave_one_out",
    "shapley_exact",
    "shapley_sampled",
    "split_by_rows",
    "split_by_value",
]

P = TypeVar("P", bound=Hashable)

MAX_EXACT_PARTIES = 10
"""The most providers for which the exact Shapley value is computed (2¹⁰ calls)."""

_VALUE_SCALE = 10**9
"""Values are turned into integer weights at this resolution before allocating."""


def _parties(parties: Sequence[P]) -> tuple[P, ...]:
    out = tuple(parties)
    if not out:
        raise MoneyError("at least one party is needed")
    if len(set(out)) != len(out):
        raise MoneyError("parties must be distinct")
    return out


def split_by_rows(amount: int, rows: Mapping[P, int]) -> dict[P, int]:
    """Split ``amount`` in proportion to the rows each party contributed."""
    parties = _parties(list(rows))
    parts = allocate(amount, [rows[p] for p in parties])
    return dict(zip(parties, parts, strict=True))


def split_by_value(amount: int, values: Mapping[P, float]) -> dict[P, int]:
    """Split ``amount`` in proportion to non-negative contribution values.

    Negative values (a party whose data made the result worse) count as zero;
    if no value is positive the amount is split equally.
    """
    parties = _parties(list(values))
    for p in parties:
        if not math.isfinite(values[p]):
            raise MoneyError(f"the value of {p!r} is not finite")
    weights = [max(0, round(values[p] * _VALUE_SCALE)) for p in parties]
    if sum(weights) == 0:
        weights = [1] * len(parties)
    return dict(zip(parties, allocate(amount, weights), strict=True))


def leave_one_out(
    value: Callable[[frozenset[P]], float], parties: Sequence[P]
) -> dict[P, float]:
    """``v(N) − v(N ∖ {i})`` for each party ``i`` (``n + 1`` evaluations)."""
    everyone = frozenset(_parties(parties))
    whole = value(everyone)
    return {p: whole - value(everyone - {p}) for p in parties}


def shapley_exact(
    value: Callable[[frozenset[P]], float], parties: Sequence[P]
) -> dict[P, float]:
    """The exact Shapley value of each party (every coalition evaluated once).

    ``φᵢ = Σ_{S ⊆ N∖{i}} |S|! (n − |S| − 1)! / n! · (v(S ∪ {i}) − v(S))``. The
    values sum to ``v(N) − v(∅)`` (efficiency).

    Raises
    ------
    MoneyError
        More than :data:`MAX_EXACT_PARTIES` parties (use :func:`shapley_sampled`).
    """
    group = _parties(parties)
    n = len(group)
    if n > MAX_EXACT_PARTIES:
        raise MoneyError(
            f"exact Shapley values take 2^n evaluations; {n} parties is more than "
            f"{MAX_EXACT_PARTIES} — use shapley_sampled"
        )
    v = cache(value)
    weight = [
        math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
        for k in range(n)
    ]
    out: dict[P, float] = {}
    for p in group:
        others = [q for q in group if q != p]
        total = 0.0
        for k in range(n):
            for coalition in combinations(others, k):
                s = frozenset(coalition)
                total += weight[k] * (v(s | {p}) - v(s))
        out[p] = total
    return out


@dataclass(frozen=True, slots=True)
class ShapleyEstimate:
    """Sampled Shapley values with a bound that holds with ``confidence``.

    Attributes
    ----------
    values
        The estimate per party (mean marginal contribution over the permutations).
    error_bound
        Hoeffding: with probability ≥ ``confidence``, every party's estimate is
        within this of its exact Shapley value (union bound over the parties),
        given that every marginal contribution lies in ``[−value_range,
        value_range]``.
    permutations
        How many random arrival orders were sampled.
    confidence
        The probability the bound holds.
    """

    values: dict[object, float]
    error_bound: float
    permutations: int
    confidence: float


def shapley_sampled(
    value: Callable[[frozenset[P]], float],
    parties: Sequence[P],
    *,
    permutations: int,
    value_range: float,
    confidence: float = 0.95,
    seed: int | None = None,
) -> ShapleyEstimate:
    """Estimate Shapley values from random arrival orders, with an error bound.

    Each sampled permutation gives every party one marginal contribution (``n``
    evaluations of ``v``); the estimate is their mean. ``value_range`` bounds
    ``|v(S ∪ {i}) − v(S)|`` (for ``v`` within ``[0, B]``, ``B`` will do); the
    bound is ``2 · value_range · √(ln(2n / (1 − confidence)) / (2m))`` for ``m``
    permutations.

    Raises
    ------
    MoneyError
        No permutations, a non-positive range, or a confidence outside (0, 1).
    """
    group = _parties(parties)
    if permutations < 1:
        raise MoneyError("at least one permutation is needed")
    if not value_range > 0:
        raise MoneyError("value_range must be positive")
    if not 0 < confidence < 1:
        raise MoneyError("confidence must be within (0, 1)")
    rng = random.Random(seed)  # noqa: S311 - sampling, not secrecy
    v = cache(value)
    sums = dict.fromkeys(group, 0.0)
    order = list(group)
    for _ in range(permutations):
        rng.shuffle(order)
        coalition: frozenset[P] = frozenset()
        before = v(coalition)
        for p in order:
            coalition = coalition | {p}
            after = v(coalition)
            sums[p] += after - before
            before = after
    n = len(group)
    bound = (
        2
        * value_range
        * math.sqrt(math.log(2 * n / (1 - confidence)) / (2 * permutations))
    )
    return ShapleyEstimate(
        values={p: s / permutations for p, s in sums.items()},
        error_bound=bound,
        permutations=permutations,
        confidence=confidence,
    )

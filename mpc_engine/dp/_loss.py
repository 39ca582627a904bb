"""Privacy-loss statements and the mechanisms that produce them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from mpc_engine.dp.errors import InvalidParameter


class Mechanism(StrEnum):
    """The additive-noise mechanisms (both sampled by OpenDP)."""

    LAPLACE = "laplace"
    """Pure ε-DP; noise scaled to the L1 sensitivity."""
    GAUSSIAN = "gaussian"
    """(ε, δ)-DP with δ > 0; noise scaled to the L2 sensitivity."""


def check_epsilon(field: str, value: float, *, positive: bool = True) -> float:
    """Return ``value`` as a float if it is a valid ε, else raise.

    An ε must be a finite number, above 0 (``positive``) or at least 0.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(field, f"must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidParameter(field, "must be a finite number")
    if positive and value <= 0:
        raise InvalidParameter(field, f"must be above 0 (got {value!r})")
    if value < 0:
        raise InvalidParameter(field, f"must be at least 0 (got {value!r})")
    return value


def check_delta(field: str, value: float, *, positive: bool = False) -> float:
    """Return ``value`` as a float if it is a valid δ, else raise.

    A δ must be a finite number in [0, 1), above 0 when ``positive``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(field, f"must be a number, not {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and 0 <= value < 1):
        raise InvalidParameter(field, f"must be in [0, 1) (got {value!r})")
    if positive and value == 0:
        raise InvalidParameter(field, "must be above 0 for (ε, δ)-DP")
    return value


@dataclass(frozen=True, slots=True)
class PrivacyLoss:
    """A statement of privacy loss: the mechanism is (ε, δ)-differentially private.

    ``delta == 0`` is pure ε-DP. Neighbouring datasets differ by adding or removing
    one row. Losses add up under basic sequential composition (``a + b``): running
    an (ε₁, δ₁) and an (ε₂, δ₂) mechanism on the same data is (ε₁+ε₂, δ₁+δ₂)-DP.
    """

    epsilon: float
    delta: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "epsilon", check_epsilon("epsilon", self.epsilon, positive=False)
        )
        object.__setattr__(self, "delta", check_delta("delta", self.delta))

    @classmethod
    def zero(cls) -> PrivacyLoss:
        """The loss of releasing nothing (or replaying a stored answer)."""
        return cls(0.0, 0.0)

    def __add__(self, other: PrivacyLoss) -> PrivacyLoss:
        """Basic sequential composition: ε and δ add up."""
        if not isinstance(other, PrivacyLoss):
            return NotImplemented
        return PrivacyLoss(
            _sum_up([self.epsilon, other.epsilon]),
            min(_sum_up([self.delta, other.delta]), math.nextafter(1.0, 0.0)),
        )

    def within(self, budget: PrivacyLoss) -> bool:
        """Whether this loss is at most ``budget`` in both ε and δ."""
        return self.epsilon <= budget.epsilon and self.delta <= budget.delta

    def as_dict(self) -> dict[str, float]:
        """Return the JSON form ``{"epsilon": ..., "delta": ...}``."""
        return {"epsilon": self.epsilon, "delta": self.delta}


def _sum_up(values: list[float]) -> float:
    """Sum floats, rounding up so the result is never below the exact sum."""
    total = math.fsum(values)
    if Fraction(total) < sum((Fraction(v) for v in values), Fraction(0)):
        total = math.nextafter(total, math.inf)
    return total


def total_loss(losses: list[PrivacyLoss]) -> PrivacyLoss:
    """Basic sequential composition of ``losses`` (rounded up, never under)."""
    if not losses:
        return PrivacyLoss.zero()
    return PrivacyLoss(
        _sum_up([loss.epsilon for loss in losses]),
        min(_sum_up([loss.delta for loss in losses]), math.nextafter(1.0, 0.0)),
    )


def split_evenly(total: float, parts: int) -> float:
    """Return the largest float share with ``parts × share ≤ total`` exactly."""
    share = total / parts
    while share > 0 and Fraction(share) * parts > Fraction(total):
        share = math.nextafter(share, 0.0)
    return share

"""Errors raised by ``mpc_engine.dp``.

Every error carries structured attributes so the node can report the field, the
scope and the amounts without parsing messages.

Tree::

    DPError
    ├── InvalidParameter       (also ValueError) a privacy parameter, sensitivity or
    │                          value breaks its rule; ``field``, ``reason``
    ├── BudgetExhausted        a reservation would overspend; ``scope`` ("buyer" or
    │                          "dataset"), ``buyer``, ``requested``, ``remaining``
    ├── ReservationError       commit/release of an unknown or closed reservation, or
    │                          a commit above the reserved amount; ``reservation_id``,
    │                          ``reason``
    ├── AccountantStateError   (also ValueError) persisted accountant state is not
    │                          valid; ``field``, ``reason``
    ├── ReleaseConflict        a different answer is already stored for a release
    │                          key; ``key``
    └── MechanismFailure       OpenDP refused to build or run a measurement;
                               ``operation``, ``reason``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpc_engine.dp._loss import PrivacyLoss

__all__ = [
    "AccountantStateError",
    "BudgetExhausted",
    "DPError",
    "InvalidParameter",
    "MechanismFailure",
    "ReleaseConflict",
    "ReservationError",
]


class DPError(Exception):
    """Base of every error raised by ``mpc_engine.dp``."""


class InvalidParameter(DPError, ValueError):
    """A privacy parameter, sensitivity or input value breaks its rule."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class BudgetExhausted(DPError):
    """A reservation would spend more than a budget has left.

    ``scope`` is ``"buyer"`` (the buyer's budget on this dataset) or ``"dataset"``
    (the dataset's total across buyers); ``remaining`` is what that budget still has
    after committed and pending spending.
    """

    def __init__(
        self,
        scope: str,
        buyer: str,
        requested: PrivacyLoss,
        remaining: PrivacyLoss,
    ) -> None:
        self.scope = scope
        self.buyer = buyer
        self.requested = requested
        self.remaining = remaining
        which = (
            f"the budget of buyer {buyer!r} on this dataset"
            if scope == "buyer"
            else "the dataset's total budget"
        )
        super().__init__(
            f"{which} has ε={remaining.epsilon:g}, δ={remaining.delta:g} left; "
            f"the request needs ε={requested.epsilon:g}, δ={requested.delta:g}"
        )


class ReservationError(DPError):
    """A reservation cannot be committed or released as asked."""

    def __init__(self, reservation_id: str, reason: str) -> None:
        self.reservation_id = reservation_id
        self.reason = reason
        super().__init__(f"reservation {reservation_id}: {reason}")


class AccountantStateError(DPError, ValueError):
    """Persisted accountant state does not describe a valid accountant."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"accountant state {field}: {reason}")


class ReleaseConflict(DPError):
    """A different answer is already stored under this release key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"release key {key} already holds a different answer; an identical "
            "question must get the identical answer"
        )


class MechanismFailure(DPError):
    """OpenDP refused to build, map or run a measurement."""

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(f"{operation}: {reason}")

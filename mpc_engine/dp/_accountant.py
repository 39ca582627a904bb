"""The privacy accountant: one per dataset, with a budget per buyer and in total.

Accounting is **basic sequential composition**: every release on a dataset spends
its (ε, δ) from both the buyer's budget and the dataset's total, and spending adds
up — k releases of (εᵢ, δᵢ) are (Σεᵢ, Σδᵢ)-DP (Dwork & Roth 2014, Thm 3.16). A
release re-used by another buyer (the node's cached DP Gram matrix) is charged to
that buyer's budget but counted in the dataset's total once. It is simple, valid
for any mix of mechanisms and easy for a regulator to recompute.
It is loose for many Gaussian releases: accounting those in zCDP (ρ adds up, one
conversion to (ε, δ) at the end; Bun & Steinke 2016) or in Rényi DP (Mironov 2017)
would allow noticeably more queries for the same (ε, δ) and is the natural upgrade.

Amounts are kept as exact decimals of each loss's shortest float form
(``Decimal(repr(ε))``), so ten losses of 0.1 fit a budget of 1.0 exactly; sums
round up and remainders round down, so rounding can refuse a request, never let
one overspend. Floats reported back (``spent``, ``remaining``) are the nearest
float to the exact decimal.

A release is two-phase: ``reserve`` (checks both budgets atomically and holds the
amount), then ``commit`` when the answer leaves the node (optionally with the
actual, smaller loss) or ``release`` when the job fails. A ``Reservation`` is also a
context manager: it commits on success and releases on an exception.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, InvalidOperation
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mpc_engine.dp._loss import PrivacyLoss
from mpc_engine.dp.errors import (
    AccountantStateError,
    BudgetExhausted,
    InvalidParameter,
    ReservationError,
)

if TYPE_CHECKING:
    from mpc_engine.policy import RightsPolicy

_UP = Context(prec=60, rounding=ROUND_CEILING)
_DOWN = Context(prec=60, rounding=ROUND_FLOOR)
_STATE_VERSION = 2
"""2 adds ``shared``: buyer spending that re-used a release the dataset's total
already counts (version 1 states have none)."""
_MAX_BUYER_LENGTH = 200


@dataclass(frozen=True)
class _Amount:
    """An exact (ε, δ) amount."""

    epsilon: Decimal
    delta: Decimal

    @classmethod
    def of(cls, loss: PrivacyLoss) -> _Amount:
        return cls(Decimal(repr(loss.epsilon)), Decimal(repr(loss.delta)))

    def plus(self, other: _Amount) -> _Amount:
        return _Amount(
            _UP.add(self.epsilon, other.epsilon), _UP.add(self.delta, other.delta)
        )

    def minus(self, other: _Amount) -> _Amount:
        zero = Decimal(0)
        return _Amount(
            max(zero, _DOWN.subtract(self.epsilon, other.epsilon)),
            max(zero, _DOWN.subtract(self.delta, other.delta)),
        )

    def within(self, budget: _Amount) -> bool:
        return self.epsilon <= budget.epsilon and self.delta <= budget.delta

    def as_loss(self) -> PrivacyLoss:
        # The nearest float: decisions are made on the exact decimals, and a
        # budget of 1e-05 should read 1e-05, not 9.999999999999999e-06.
        return PrivacyLoss(
            float(self.epsilon), min(float(self.delta), math.nextafter(1.0, 0.0))
        )

    def as_json(self) -> dict[str, str]:
        return {"epsilon": str(self.epsilon), "delta": str(self.delta)}


_ZERO = _Amount(Decimal(0), Decimal(0))


@dataclass(frozen=True, eq=False)
class Reservation:
    """Privacy loss held for one job until it is committed or released.

    Use as a context manager to commit on success and release on an exception::

        with accountant.reserve("buyer-1", loss) as reservation:
            answer = run_job()
    """

    id: str
    buyer: str
    loss: PrivacyLoss
    _accountant: PrivacyAccountant = field(repr=False, compare=False)
    dataset: bool = True
    """Whether the loss also counts against the dataset's total (``False``: the
    buyer re-uses a release the total already counts)."""

    def commit(self, actual: PrivacyLoss | None = None) -> None:
        """Spend the reservation (or the smaller ``actual`` loss)."""
        self._accountant.commit(self, actual)

    def release(self) -> None:
        """Return the reserved loss to both budgets (the job failed)."""
        self._accountant.release(self)

    @property
    def open(self) -> bool:
        """Whether this reservation is still pending."""
        return self._accountant.is_pending(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.open:
            return
        if exc_type is None:
            self.commit()
        else:
            self.release()


class PrivacyAccountant:
    """Tracks privacy loss on one dataset, per buyer and in total; thread-safe.

    Parameters
    ----------
    budget_per_buyer
        What each buyer may spend on this dataset in total.
    budget_per_dataset
        What all buyers together may spend on this dataset.
    """

    def __init__(
        self, *, budget_per_buyer: PrivacyLoss, budget_per_dataset: PrivacyLoss
    ) -> None:
        for name, budget in (
            ("budget_per_buyer", budget_per_buyer),
            ("budget_per_dataset", budget_per_dataset),
        ):
            if not isinstance(budget, PrivacyLoss):
                raise InvalidParameter(name, "must be a PrivacyLoss")
        self._lock = threading.Lock()
        self._budget_buyer = _Amount.of(budget_per_buyer)
        self._budget_dataset = _Amount.of(budget_per_dataset)
        self._spent = _ZERO
        self._shared = _ZERO  # buyers' spending on releases the total counts
        self._spent_by_buyer: dict[str, _Amount] = {}
        self._pending: dict[str, Reservation] = {}

    @classmethod
    def from_policy(cls, policy: RightsPolicy) -> PrivacyAccountant:
        """An empty accountant with the budgets of ``policy``."""
        return cls(
            budget_per_buyer=PrivacyLoss(
                policy.budget_per_buyer.epsilon, policy.budget_per_buyer.delta
            ),
            budget_per_dataset=PrivacyLoss(
                policy.budget_per_dataset.epsilon, policy.budget_per_dataset.delta
            ),
        )

    # -- budgets -------------------------------------------------------------

    @property
    def budget_per_buyer(self) -> PrivacyLoss:
        """Each buyer's total budget on this dataset."""
        return self._budget_buyer.as_loss()

    @property
    def budget_per_dataset(self) -> PrivacyLoss:
        """All buyers' total budget on this dataset."""
        return self._budget_dataset.as_loss()

    def _pending_sum(self, buyer: str | None, *, shared: bool = False) -> _Amount:
        """Pending loss of ``buyer``, or of the dataset (``buyer`` ``None``).

        For the dataset only reservations that count against its total are
        summed; ``shared`` sums the others instead.
        """
        total = _ZERO
        for reservation in self._pending.values():
            if shared:
                if not reservation.dataset:
                    total = total.plus(_Amount.of(reservation.loss))
            elif buyer is None:
                if reservation.dataset:
                    total = total.plus(_Amount.of(reservation.loss))
            elif reservation.buyer == buyer:
                total = total.plus(_Amount.of(reservation.loss))
        return total

    def _used(self, buyer: str | None) -> _Amount:
        spent = self._spent if buyer is None else self._spent_by_buyer.get(buyer, _ZERO)
        return spent.plus(self._pending_sum(buyer))

    def spent(self, buyer: str | None = None) -> PrivacyLoss:
        """Committed loss of ``buyer`` (or of the whole dataset)."""
        with self._lock:
            spent = (
                self._spent if buyer is None else self._spent_by_buyer.get(buyer, _ZERO)
            )
            return spent.as_loss()

    def remaining(self, buyer: str | None = None) -> PrivacyLoss:
        """What ``buyer`` (or the dataset) may still reserve.

        For a buyer this is also limited by what the dataset has left.
        """
        with self._lock:
            left = self._budget_dataset.minus(self._used(None))
            if buyer is not None:
                mine = self._budget_buyer.minus(self._used(buyer))
                left = _Amount(
                    min(left.epsilon, mine.epsilon), min(left.delta, mine.delta)
                )
            return left.as_loss()

    # -- two-phase spending ----------------------------------------------------

    def reserve(
        self, buyer: str, loss: PrivacyLoss, *, dataset: bool = True
    ) -> Reservation:
        """Hold ``loss`` against ``buyer``'s and the dataset's budgets.

        ``dataset=False`` holds it against the buyer's budget only: the buyer
        re-uses a release whose loss the dataset's total already counts (one DP
        release seen by several buyers costs the data subjects once).

        Both budgets are checked, and the amount held, under one lock: concurrent
        reservations can never together exceed either budget.

        Parameters
        ----------
        buyer
            The buyer's stable identifier.
        loss
            The loss the job may spend at most.

        Returns
        -------
        Reservation
            To ``commit`` when the answer is released or ``release`` on failure.

        Raises
        ------
        BudgetExhausted
            If the buyer's (checked first) or the dataset's budget would be
            overspent; nothing is held then.
        """
        _check_buyer(buyer)
        if not isinstance(loss, PrivacyLoss):
            raise InvalidParameter("loss", "must be a PrivacyLoss")
        amount = _Amount.of(loss)
        with self._lock:
            scopes = [("buyer", self._used(buyer), self._budget_buyer)]
            if dataset:
                scopes.append(("dataset", self._used(None), self._budget_dataset))
            for scope, used, budget in scopes:
                if not used.plus(amount).within(budget):
                    raise BudgetExhausted(
                        scope,
                        buyer,
                        requested=loss,
                        remaining=budget.minus(used).as_loss(),
                    )
            reservation = Reservation(uuid.uuid4().hex, buyer, loss, self, dataset)
            self._pending[reservation.id] = reservation
            return reservation

    def _take(self, reservation: Reservation, action: str) -> Reservation:
        held = self._pending.get(reservation.id)
        if held is None or held is not reservation:
            raise ReservationError(
                reservation.id,
                f"cannot {action}: not pending here (already committed or released, "
                "or made by another accountant)",
            )
        return held

    def commit(
        self, reservation: Reservation, actual: PrivacyLoss | None = None
    ) -> None:
        """Spend a pending reservation, or the smaller ``actual`` loss it ended up at.

        Raises
        ------
        ReservationError
            If the reservation is not pending here, or ``actual`` exceeds it.
        """
        with self._lock:
            held = self._take(reservation, "commit")
            spend = held.loss if actual is None else actual
            if not isinstance(spend, PrivacyLoss):
                raise InvalidParameter("actual", "must be a PrivacyLoss")
            amount = _Amount.of(spend)
            if not amount.within(_Amount.of(held.loss)):
                raise ReservationError(
                    held.id,
                    f"cannot commit ε={spend.epsilon:g}, δ={spend.delta:g}: more than "
                    f"the reserved ε={held.loss.epsilon:g}, δ={held.loss.delta:g}",
                )
            del self._pending[held.id]
            if held.dataset:
                self._spent = self._spent.plus(amount)
            else:
                self._shared = self._shared.plus(amount)
            self._spent_by_buyer[held.buyer] = self._spent_by_buyer.get(
                held.buyer, _ZERO
            ).plus(amount)

    def release(self, reservation: Reservation) -> None:
        """Drop a pending reservation: its loss returns to both budgets.

        Raises
        ------
        ReservationError
            If the reservation is not pending here.
        """
        with self._lock:
            held = self._take(reservation, "release")
            del self._pending[held.id]

    def is_pending(self, reservation: Reservation) -> bool:
        """Whether ``reservation`` is pending at this accountant."""
        with self._lock:
            return self._pending.get(reservation.id) is reservation

    # -- persistence -----------------------------------------------------------

    def to_json(self) -> str:
        """The state as canonical JSON; pending reservations count as spent.

        Counting pending amounts as spent is fail-closed: after a crash the node
        cannot know whether a job's answer left, so the loss stays spent.
        """
        with self._lock:
            buyers = {
                b: self._spent_by_buyer.get(b, _ZERO).plus(self._pending_sum(b))
                for b in sorted(
                    set(self._spent_by_buyer)
                    | {r.buyer for r in self._pending.values()}
                )
            }
            state = {
                "version": _STATE_VERSION,
                "budget_per_buyer": self._budget_buyer.as_json(),
                "budget_per_dataset": self._budget_dataset.as_json(),
                "spent": self._used(None).as_json(),
                "shared": self._shared.plus(
                    self._pending_sum(None, shared=True)
                ).as_json(),
                "buyers": {b: amount.as_json() for b, amount in buyers.items()},
            }
        return json.dumps(state, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(
        cls, text: str, *, policy: RightsPolicy | None = None
    ) -> PrivacyAccountant:
        """Restore an accountant from ``to_json`` output.

        Parameters
        ----------
        text
            The persisted state.
        policy
            If given, its budgets replace the stored ones (the policy is the
            authority; spending carries over, and may now exceed a lowered budget,
            which leaves nothing to spend).

        Raises
        ------
        AccountantStateError
            If the state is not valid; the field and the rule are named.
        """
        try:
            state = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise AccountantStateError("(document)", f"not JSON: {exc}") from exc
        if not isinstance(state, dict):
            raise AccountantStateError("(document)", "must be a JSON object")
        version = state.get("version")
        if version not in (1, _STATE_VERSION):
            raise AccountantStateError("version", f"must be 1 or {_STATE_VERSION}")
        expected = {"version", "budget_per_buyer", "budget_per_dataset", "spent"}
        expected |= {"buyers"} | ({"shared"} if version == _STATE_VERSION else set())
        if set(state) != expected:
            raise AccountantStateError(
                "(document)", f"must have exactly the keys {sorted(expected)}"
            )
        budget_buyer = _parse_amount("budget_per_buyer", state["budget_per_buyer"])
        budget_dataset = _parse_amount(
            "budget_per_dataset", state["budget_per_dataset"]
        )
        spent = _parse_amount("spent", state["spent"])
        shared = (
            _parse_amount("shared", state["shared"]) if "shared" in state else _ZERO
        )
        if not isinstance(state["buyers"], dict):
            raise AccountantStateError("buyers", "must be an object of buyer → amount")
        by_buyer: dict[str, _Amount] = {}
        total = _ZERO
        for buyer, raw in state["buyers"].items():
            try:
                _check_buyer(buyer)
            except InvalidParameter as exc:
                raise AccountantStateError(f"buyers.{buyer}", exc.reason) from exc
            by_buyer[buyer] = _parse_amount(f"buyers.{buyer}", raw)
            total = total.plus(by_buyer[buyer])
        if policy is not None:
            accountant = cls.from_policy(policy)
        else:
            accountant = cls(
                budget_per_buyer=budget_buyer.as_loss(),
                budget_per_dataset=budget_dataset.as_loss(),
            )
            accountant._budget_buyer = budget_buyer
            accountant._budget_dataset = budget_dataset
        # Fail closed: the dataset total is never below what its buyers spent,
        # less what they spent re-using releases the total already counts.
        floor = total.minus(shared)
        accountant._spent = _Amount(
            max(spent.epsilon, floor.epsilon), max(spent.delta, floor.delta)
        )
        accountant._shared = shared
        accountant._spent_by_buyer = by_buyer
        return accountant


def _check_buyer(buyer: object) -> None:
    if not isinstance(buyer, str) or not buyer.strip():
        raise InvalidParameter("buyer", "must be a non-empty string")
    if len(buyer) > _MAX_BUYER_LENGTH:
        raise InvalidParameter(
            "buyer", f"must be at most {_MAX_BUYER_LENGTH} characters"
        )


def _parse_amount(name: str, raw: Any) -> _Amount:
    if not isinstance(raw, dict) or set(raw) != {"epsilon", "delta"}:
        raise AccountantStateError(name, 'must be {"epsilon": "...", "delta": "..."}')
    values = []
    for key in ("epsilon", "delta"):
        value = raw[key]
        if not isinstance(value, str):
            raise AccountantStateError(f"{name}.{key}", "must be a decimal string")
        try:
            number = Decimal(value)
        except InvalidOperation as exc:
            raise AccountantStateError(f"{name}.{key}", "not a decimal number") from exc
        if not number.is_finite() or number < 0:
            raise AccountantStateError(
                f"{name}.{key}", "must be a finite number, at least 0"
            )
        values.append(number)
    if values[1] >= 1:
        raise AccountantStateError(f"{name}.delta", "must be below 1")
    return _Amount(values[0], values[1])

"""Trading namespaces: quotes, orders, entitlements, balances and settlements.

Thin typed views of ``docs/trading.md``; they share the client's
:class:`sdk._http.HTTP`. An order's idempotency key is the caller's to choose (or
a fresh one): sending the same key again answers the same order and never buys
twice.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sdk._http import HTTP
from sdk._resources import _parse, _parse_list, as_uuid
from sdk.errors import InputError
from sdk.types import (
    Balance,
    Charge,
    Entitlement,
    Order,
    Quote,
    QuoteMenu,
    SettlementRun,
    Statement,
)

__all__ = ["Balances", "Entitlements", "Orders", "Quotes", "Settlements"]


def _aware(value: datetime, field: str) -> str:
    if value.tzinfo is None:
        raise InputError(field, "must carry a UTC offset (a timezone-aware datetime)")
    return value.isoformat()


class Quotes:
    """Prices for entitlements, and DP quote menus."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def create(
        self,
        dataset_id: uuid.UUID | str,
        *,
        queries: int = 1,
        epsilon: float = 0.0,
        delta: float = 0.0,
        periods: int = 1,
        compute_units_per_query: int = 1,
        payment_method: Literal["credits", "stripe"] = "credits",
        sensitivity: float | None = None,
        mechanism: Literal["laplace", "gaussian"] = "laplace",
    ) -> Quote:
        """Price ``queries`` computations spending at most ``epsilon`` in total."""
        if queries < 1:
            raise InputError("queries", "must be at least 1")
        body: dict[str, Any] = {
            "dataset_id": str(as_uuid(dataset_id, "dataset_id")),
            "queries": queries,
            "epsilon": epsilon,
            "delta": delta,
            "periods": periods,
            "compute_units_per_query": compute_units_per_query,
            "payment_method": payment_method,
            "mechanism": mechanism,
        }
        if sensitivity is not None:
            body["sensitivity"] = sensitivity
        return _parse(Quote, self._http.json("POST", "/quotes", json=body), "quote")

    def menu(
        self,
        dataset_id: uuid.UUID | str,
        *,
        sensitivity: float,
        epsilons: Sequence[float] = (0.1, 0.25, 0.5, 1.0, 2.0),
        mechanism: Literal["laplace", "gaussian"] = "laplace",
        delta: float = 0.0,
        queries: int = 1,
        payment_method: Literal["credits", "stripe"] = "credits",
    ) -> QuoteMenu:
        """Price one DP question at each ε, with its expected error."""
        if not epsilons:
            raise InputError("epsilons", "give at least one")
        body = {
            "dataset_id": str(as_uuid(dataset_id, "dataset_id")),
            "sensitivity": sensitivity,
            "epsilons": list(epsilons),
            "mechanism": mechanism,
            "delta": delta,
            "queries": queries,
            "payment_method": payment_method,
        }
        return _parse(
            QuoteMenu, self._http.json("POST", "/quotes/menu", json=body), "menu"
        )


class Orders:
    """Purchases of quotes."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def create(
        self,
        quote_id: uuid.UUID | str,
        *,
        payment_method_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> Order:
        """Buy a quote (credits are held at once; a card is authorised)."""
        body: dict[str, Any] = {"quote_id": str(as_uuid(quote_id, "quote_id"))}
        if payment_method_token is not None:
            body["payment_method_token"] = payment_method_token
        key = idempotency_key or str(uuid.uuid4())
        response = self._http.request(
            "POST", "/orders", json=body, headers={"Idempotency-Key": key}
        )
        return _parse(Order, response.json(), "order")

    def get(self, order_id: uuid.UUID | str) -> Order:
        """An order of yours."""
        oid = as_uuid(order_id, "order_id")
        return _parse(Order, self._http.json("GET", f"/orders/{oid}"), "order")


class Entitlements:
    """Entitlements: what jobs are charged against."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def list(
        self, dataset_id: uuid.UUID | str | None = None
    ) -> builtins.list[Entitlement]:
        """Yours as buyer, and those sold on your datasets."""
        params = (
            {"dataset_id": str(as_uuid(dataset_id, "dataset_id"))}
            if dataset_id
            else None
        )
        return _parse_list(
            Entitlement,
            self._http.json("GET", "/entitlements", params=params),
            "entitlement",
        )

    def get(self, entitlement_id: uuid.UUID | str) -> Entitlement:
        """Quota, ε and money: used, reserved and left."""
        eid = as_uuid(entitlement_id, "entitlement_id")
        return _parse(
            Entitlement, self._http.json("GET", f"/entitlements/{eid}"), "entitlement"
        )

    def charges(self, entitlement_id: uuid.UUID | str) -> builtins.list[Charge]:
        """What each job reserved and was charged."""
        eid = as_uuid(entitlement_id, "entitlement_id")
        raw = self._http.json("GET", f"/entitlements/{eid}/charges")
        return _parse_list(Charge, raw, "charge")

    def close(self, entitlement_id: uuid.UUID | str) -> Entitlement:
        """End it early; the unused part of the hold is released."""
        eid = as_uuid(entitlement_id, "entitlement_id")
        raw = self._http.json("POST", f"/entitlements/{eid}/close")
        return _parse(Entitlement, raw, "entitlement")

    def revoke(self, entitlement_id: uuid.UUID | str, *, reason: str) -> Entitlement:
        """End one sold on your dataset (or as operator), with a reason."""
        eid = as_uuid(entitlement_id, "entitlement_id")
        raw = self._http.json(
            "POST", f"/entitlements/{eid}/revoke", json={"reason": reason}
        )
        return _parse(Entitlement, raw, "entitlement")


class Balances:
    """Your organisation's accounts: credits and payables."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def list(self) -> builtins.list[Balance]:
        """Every account of your organisation."""
        return _parse_list(Balance, self._http.json("GET", "/balances"), "balance")


class Settlements:
    """Settlement runs and statements."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def run(
        self, period_start: datetime, period_end: datetime, *, currency: str = "EUR"
    ) -> SettlementRun:
        """Settle a past period (operator)."""
        body = {
            "period_start": _aware(period_start, "period_start"),
            "period_end": _aware(period_end, "period_end"),
            "currency": currency,
        }
        raw = self._http.json("POST", "/settlements", json=body)
        return _parse(SettlementRun, raw, "settlement")

    def list(self) -> builtins.list[SettlementRun]:
        """Every run (operator, regulator)."""
        return _parse_list(
            SettlementRun, self._http.json("GET", "/settlements"), "settlement"
        )

    def statement(
        self, settlement_id: uuid.UUID | str, payee_id: uuid.UUID | str
    ) -> Statement:
        """A payee's statement for a run."""
        sid = as_uuid(settlement_id, "settlement_id")
        pid = as_uuid(payee_id, "payee_id")
        raw = self._http.json("GET", f"/settlements/{sid}/statements/{pid}")
        return _parse(Statement, raw, "statement")

    def statement_csv(
        self, settlement_id: uuid.UUID | str, payee_id: uuid.UUID | str
    ) -> str:
        """The same statement as CSV text."""
        sid = as_uuid(settlement_id, "settlement_id")
        pid = as_uuid(payee_id, "payee_id")
        response = self._http.request(
            "GET",
            f"/settlements/{sid}/statements/{pid}",
            params={"format": "csv"},
            headers={"Accept": "text/csv"},
        )
        return response.text

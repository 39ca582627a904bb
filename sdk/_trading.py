"""Trading namespaces: quotes, orders, entitlements, balances, credits, settlement.

Thin typed views of the exchange's trading API (``docs/trading.md``); they share
the client's :class:`sdk._http.HTTP`. Money is always an integer in minor units
(cents) of a three-letter currency.

An order's ``Idempotency-Key`` is the caller's to choose (or a fresh uuid4):
sending the same key again answers the same order and never buys twice, and
the SDK's own retries reuse it.
"""

from __future__ import annotations

import builtins
import math
import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

from sdk._http import HTTP, IDEMPOTENCY_HEADER
from sdk._resources import _parse, _parse_list, as_uuid
from sdk.errors import InputError
from sdk.types import (
    Balance,
    Charge,
    Entitlement,
    JournalCheck,
    Order,
    Quote,
    QuoteMenu,
    SettlementRun,
    Statement,
    Wallet,
)

__all__ = [
    "Balances",
    "Credits",
    "Entitlements",
    "Journal",
    "Orders",
    "Quotes",
    "Settlements",
    "Wallets",
]

PaymentMethod = Literal["credits", "stripe", "onchain"]
Mechanism = Literal["laplace", "gaussian"]
DEFAULT_EPSILONS: Final = (0.1, 0.25, 0.5, 1.0, 2.0)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MAX_EPSILON: Final = 100.0
_MAX_DELTA: Final = 1e-3


# -- argument checks (one-line InputError naming the field) --------------------------


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(field, f"{value!r} is not an integer")
    if not low <= value <= high:
        raise InputError(field, f"must be {low} to {high}, not {value}")
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(field, f"{value!r} is not a number")
    if not math.isfinite(value):
        raise InputError(field, "must be a finite number")
    return float(value)


def _epsilon(value: Any, field: str, *, positive: bool) -> float:
    eps = _number(value, field)
    if positive and not 0 < eps <= _MAX_EPSILON:
        raise InputError(field, f"must be > 0 and at most {_MAX_EPSILON:g}")
    if not positive and not 0 <= eps <= _MAX_EPSILON:
        raise InputError(field, f"must be 0 to {_MAX_EPSILON:g}")
    return eps


def _delta(value: Any) -> float:
    delta = _number(value, "delta")
    if not 0 <= delta < _MAX_DELTA:
        raise InputError("delta", f"must be at least 0 and below {_MAX_DELTA:g}")
    return delta


def _sensitivity(value: Any) -> float:
    sensitivity = _number(value, "sensitivity")
    if sensitivity <= 0:
        raise InputError("sensitivity", "must be positive")
    return sensitivity


def _choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(field, f"{value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise InputError(
            "currency", f"{value!r} is not a three-letter code such as EUR"
        )
    return value


def _text(value: Any, field: str, low: int, high: int) -> str:
    if not isinstance(value, str) or not low <= len(value.strip()) <= high:
        raise InputError(field, f"must be text of {low} to {high} characters")
    return value.strip()


def _aware(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise InputError(field, f"{value!r} is not a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(field, "must carry a UTC offset (a timezone-aware datetime)")
    return value


# -- quotes and orders -----------------------------------------------------------------


class Quotes:
    """Prices for entitlements, and DP quote menus (buyers)."""

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
        payment_method: PaymentMethod = "credits",
        compute_units_per_query: int = 1,
        sensitivity: float | None = None,
        mechanism: Mechanism = "laplace",
    ) -> Quote:
        """Price an entitlement on a listed dataset (``POST /v1/quotes``).

        Parameters
        ----------
        dataset_id
            The dataset.
        queries
            Computations the entitlement allows (1 to 1,000,000).
        epsilon, delta
            The total (ε, δ) it may spend (0 for exact or HE jobs).
        periods
            Subscription periods bought (subscription plans; others 1).
        payment_method
            ``credits`` (prepaid balance) or ``stripe`` (a card).
        compute_units_per_query
            Compute units each job may use (metered plans).
        sensitivity, mechanism
            With a sensitivity, the quote also states the expected error and the
            95 % confidence half-width of a DP answer at ``epsilon``.

        Returns
        -------
        Quote
            The price, held until ``expires_at``; order it with
            :meth:`Orders.create`.
        """
        body: dict[str, Any] = {
            "dataset_id": str(as_uuid(dataset_id, "dataset_id")),
            "queries": _int(queries, "queries", 1, 1_000_000),
            "epsilon": _epsilon(epsilon, "epsilon", positive=False),
            "delta": _delta(delta),
            "periods": _int(periods, "periods", 1, 36),
            "compute_units_per_query": _int(
                compute_units_per_query, "compute_units_per_query", 1, 1_000_000
            ),
            "payment_method": _choice(
                payment_method, "payment_method", ("credits", "stripe", "onchain")
            ),
            "mechanism": _choice(mechanism, "mechanism", ("laplace", "gaussian")),
        }
        if sensitivity is not None:
            body["sensitivity"] = _sensitivity(sensitivity)
        return _parse(Quote, self._http.json("POST", "/quotes", json=body), "quote")

    def menu(
        self,
        dataset_id: uuid.UUID | str,
        *,
        sensitivity: float,
        epsilons: Sequence[float] = DEFAULT_EPSILONS,
        mechanism: Mechanism = "laplace",
        delta: float = 0.0,
        queries: int = 1,
        payment_method: PaymentMethod = "credits",
    ) -> QuoteMenu:
        """Price one DP question at several ε (``POST /v1/quotes/menu``).

        Parameters
        ----------
        dataset_id
            The dataset.
        sensitivity
            The question's sensitivity (what one row can change the answer by).
        epsilons
            The ε choices to price (1 to 12, each > 0).
        mechanism, delta
            The DP mechanism (``gaussian`` needs ``delta`` > 0).
        queries, payment_method
            As for :meth:`create`.

        Returns
        -------
        QuoteMenu
            One option per ε, in increasing ε: expected error, 95 % half-width
            and a quote to order. Prices never fall as ε grows.
        """
        if isinstance(epsilons, str) or not isinstance(epsilons, Sequence):
            raise InputError("epsilons", "must be a list of numbers")
        if not 1 <= len(epsilons) <= 12:
            raise InputError("epsilons", "give 1 to 12 values")
        body: dict[str, Any] = {
            "dataset_id": str(as_uuid(dataset_id, "dataset_id")),
            "sensitivity": _sensitivity(sensitivity),
            "epsilons": [
                _epsilon(e, f"epsilons[{i}]", positive=True)
                for i, e in enumerate(epsilons)
            ],
            "mechanism": _choice(mechanism, "mechanism", ("laplace", "gaussian")),
            "delta": _delta(delta),
            "queries": _int(queries, "queries", 1, 1_000_000),
            "payment_method": _choice(
                payment_method, "payment_method", ("credits", "stripe", "onchain")
            ),
        }
        return _parse(
            QuoteMenu, self._http.json("POST", "/quotes/menu", json=body), "quote menu"
        )


class Orders:
    """Purchases of quotes (buyers)."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def create(
        self,
        quote_id: uuid.UUID | str,
        *,
        payment_method_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> Order:
        """Buy a quote (``POST /v1/orders``).

        Credits are held from your balance at once; a card (``stripe`` quotes)
        is authorised, and may need your confirmation (``requires_action``).

        Parameters
        ----------
        quote_id
            A quote of yours that has not expired.
        payment_method_token
            The card's payment method (Stripe ``pm_…``); not for credits.
        idempotency_key
            The order's key (1 to 255 characters); a fresh uuid4 when omitted.
            Ordering again with the same key answers the same order.

        Returns
        -------
        Order
            ``active`` with its ``entitlement_id`` once paid.

        Raises
        ------
        PaymentRequiredError
            ``insufficient_funds`` (top up, then order again) or
            ``payment_declined``; nothing is held.
        """
        body: dict[str, Any] = {"quote_id": str(as_uuid(quote_id, "quote_id"))}
        if payment_method_token is not None:
            body["payment_method_token"] = _text(
                payment_method_token, "payment_method_token", 1, 255
            )
        if idempotency_key is None:
            key = str(uuid.uuid4())
        elif (
            not isinstance(idempotency_key, str)
            or not idempotency_key.strip()
            or len(idempotency_key) > 255
            or not idempotency_key.isascii()
            or not idempotency_key.isprintable()
        ):
            raise InputError(
                "idempotency_key", "must be 1 to 255 printable ASCII characters"
            )
        else:
            key = idempotency_key
        raw = self._http.json(
            "POST", "/orders", json=body, headers={IDEMPOTENCY_HEADER: key}
        )
        return _parse(Order, raw, "order")

    def get(self, order_id: uuid.UUID | str) -> Order:
        """Return one of your orders (``GET /v1/orders/{id}``)."""
        oid = as_uuid(order_id, "order_id")
        return _parse(Order, self._http.json("GET", f"/orders/{oid}"), "order")


# -- entitlements ----------------------------------------------------------------------


class Entitlements:
    """Entitlements: what jobs are charged against."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def list(
        self, dataset_id: uuid.UUID | str | None = None
    ) -> builtins.list[Entitlement]:
        """Your entitlements as buyer, and those sold on your datasets.

        ``GET /v1/entitlements``, optionally only those on ``dataset_id``.
        """
        params = (
            None
            if dataset_id is None
            else {"dataset_id": str(as_uuid(dataset_id, "dataset_id"))}
        )
        raw = self._http.json("GET", "/entitlements", params=params)
        return _parse_list(Entitlement, raw, "entitlement")

    def get(self, entitlement_id: uuid.UUID | str) -> Entitlement:
        """Quota, ε and money: used, reserved, left (``GET /v1/entitlements/{id}``)."""
        eid = as_uuid(entitlement_id, "entitlement_id")
        raw = self._http.json("GET", f"/entitlements/{eid}")
        return _parse(Entitlement, raw, "entitlement")

    def charges(self, entitlement_id: uuid.UUID | str) -> builtins.list[Charge]:
        """What each job reserved and was charged (``…/{id}/charges``)."""
        eid = as_uuid(entitlement_id, "entitlement_id")
        raw = self._http.json("GET", f"/entitlements/{eid}/charges")
        return _parse_list(Charge, raw, "charge")

    def revoke(self, entitlement_id: uuid.UUID | str, *, reason: str) -> Entitlement:
        """End one sold on your dataset, or any as operator (``…/{id}/revoke``).

        ``reason`` (3 to 1000 characters) is shown to the buyer.
        """
        eid = as_uuid(entitlement_id, "entitlement_id")
        body = {"reason": _text(reason, "reason", 3, 1000)}
        raw = self._http.json("POST", f"/entitlements/{eid}/revoke", json=body)
        return _parse(Entitlement, raw, "entitlement")

    def close(self, entitlement_id: uuid.UUID | str) -> Entitlement:
        """End yours early; the unused part of the hold is released (``…/close``)."""
        eid = as_uuid(entitlement_id, "entitlement_id")
        raw = self._http.json("POST", f"/entitlements/{eid}/close")
        return _parse(Entitlement, raw, "entitlement")


# -- money -----------------------------------------------------------------------------


class Balances:
    """Your organisation's accounts: credits and payables."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def list(self) -> builtins.list[Balance]:
        """Every account of your organisation, per currency (``GET /v1/balances``)."""
        return _parse_list(Balance, self._http.json("GET", "/balances"), "balance")


class Credits:
    """Prepaid credits (operator)."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def top_up(
        self,
        organisation_id: uuid.UUID | str,
        amount_minor: int,
        *,
        reference: str,
        currency: str = "EUR",
    ) -> Balance:
        """Record a buyer's prepaid payment as credits (operator).

        ``POST /v1/organisations/{id}/credits``.

        Parameters
        ----------
        organisation_id
            The buyer organisation.
        amount_minor
            The amount paid, in minor units (positive).
        reference
            The payment this records (a bank transfer id), 1 to 100 characters;
            unique, so the same payment is never credited twice.
        currency
            A three-letter code.

        Returns
        -------
        Balance
            The buyer's credit balance after the top-up.
        """
        oid = as_uuid(organisation_id, "organisation_id")
        body = {
            "amount_minor": _int(amount_minor, "amount_minor", 1, 10**12),
            "currency": _currency(currency),
            "reference": _text(reference, "reference", 1, 100),
        }
        raw = self._http.json("POST", f"/organisations/{oid}/credits", json=body)
        return _parse(Balance, raw, "balance")


WALLET_PROOF: Final = (
    "veilx: organisation {organisation_id} pays and is paid from wallet {address}"
)
"""What a wallet signs (EIP-191) to become an organisation's; the exchange checks it."""


def wallet_proof(private_key: str, organisation_id: uuid.UUID | str) -> tuple[str, str]:
    """Sign the wallet proof where the key lives: ``(address, signature)``.

    The key never leaves this process; only the address and the signature are
    sent (:meth:`Wallets.register`).

    Raises
    ------
    InputError
        ``private_key`` is not a 32-byte hex key.
    """
    from eth_account import Account
    from eth_account.messages import encode_defunct

    oid = as_uuid(organisation_id, "organisation_id")
    try:
        account = Account.from_key(private_key)
    except (ValueError, TypeError) as exc:
        raise InputError("private_key", f"not a 32-byte hex key ({exc})") from None
    address = str(account.address)
    message = encode_defunct(
        text=WALLET_PROOF.format(organisation_id=oid, address=address)
    )
    signature = "0x" + bytes(account.sign_message(message).signature).hex()
    return address, signature


def _my_organisation(http: HTTP) -> str:
    """The caller's organisation id (``GET /v1/me``)."""
    return str(http.json("GET", "/me")["organisation"]["id"])


_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")


class Wallets:
    """Organisations' wallets: the onchain way of paying and being paid."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def register(
        self, organisation_id: uuid.UUID | str, address: str, signature: str
    ) -> Wallet:
        """Make ``address`` your organisation's wallet.

        ``PUT /v1/organisations/{id}/wallet``. ``signature`` is the wallet's
        EIP-191 signature of ``veilx: organisation <id> pays and is paid from
        wallet <checksummed address>``, made where the key lives (the key never
        reaches the exchange); registering the same wallet again changes nothing.
        """
        oid = as_uuid(organisation_id, "organisation_id")
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise InputError("address", "must be 0x and 40 hex digits")
        if not isinstance(signature, str) or not _SIGNATURE.match(signature):
            raise InputError("signature", "must be 0x and 130 hex digits")
        raw = self._http.json(
            "PUT",
            f"/organisations/{oid}/wallet",
            json={"address": address, "signature": signature},
        )
        return _parse(Wallet, raw, "wallet")

    def register_key(self, private_key: str) -> Wallet:
        """Register the wallet of ``private_key`` as your organisation's.

        The proof is signed here; the key itself is never sent.
        """
        org = _my_organisation(self._http)
        address, signature = wallet_proof(private_key, org)
        return self.register(org, address, signature)

    def mine(self) -> Wallet:
        """Your organisation's wallet and its escrow balance."""
        return self.get(_my_organisation(self._http))

    def get(self, organisation_id: uuid.UUID | str) -> Wallet:
        """An organisation's wallet and its escrow balance."""
        oid = as_uuid(organisation_id, "organisation_id")
        raw = self._http.json("GET", f"/organisations/{oid}/wallet")
        return _parse(Wallet, raw, "wallet")


class Settlements:
    """Settlement runs (operator, regulator) and payee statements."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def run(
        self, period_start: datetime, period_end: datetime, *, currency: str = "EUR"
    ) -> SettlementRun:
        """Settle the charges captured in ``[period_start, period_end)`` (operator).

        ``POST /v1/settlements``; both bounds timezone-aware, the end in the past.
        The same period again resumes unpaid payouts or answers the same run.
        """
        start = _aware(period_start, "period_start")
        end = _aware(period_end, "period_end")
        if end <= start:
            raise InputError("period_end", "must be after period_start")
        body = {
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "currency": _currency(currency),
        }
        raw = self._http.json("POST", "/settlements", json=body)
        return _parse(SettlementRun, raw, "settlement run")

    def list(self) -> builtins.list[SettlementRun]:
        """Every run, newest period first (``GET /v1/settlements``)."""
        raw = self._http.json("GET", "/settlements")
        return _parse_list(SettlementRun, raw, "settlement run")

    def get(self, settlement_id: uuid.UUID | str) -> SettlementRun:
        """One run and its payouts (``GET /v1/settlements/{id}``)."""
        sid = as_uuid(settlement_id, "settlement_id")
        raw = self._http.json("GET", f"/settlements/{sid}")
        return _parse(SettlementRun, raw, "settlement run")

    def statement(
        self, settlement_id: uuid.UUID | str, payee_id: uuid.UUID | str | None = None
    ) -> Statement:
        """A payee's statement for a run (the payee, operator or regulator).

        ``payee_id`` defaults to your own organisation.
        """
        path = self._statement_path(settlement_id, payee_id)
        raw = self._http.json("GET", path, params={"format": "json"})
        return _parse(Statement, raw, "statement")

    def statement_csv(
        self, settlement_id: uuid.UUID | str, payee_id: uuid.UUID | str | None = None
    ) -> str:
        """The same statement as CSV text (a header row, then one row per line)."""
        path = self._statement_path(settlement_id, payee_id)
        response = self._http.request(
            "GET", path, params={"format": "csv"}, headers={"Accept": "text/csv"}
        )
        return response.text

    def _statement_path(
        self, settlement_id: uuid.UUID | str, payee_id: uuid.UUID | str | None
    ) -> str:
        sid = as_uuid(settlement_id, "settlement_id")
        if payee_id is None:
            payee_id = _my_organisation(self._http)
        pid = as_uuid(payee_id, "payee_id")
        return f"/settlements/{sid}/statements/{pid}"


class Journal:
    """The money journal's health (operator, regulator)."""

    def __init__(self, http: HTTP) -> None:
        self._http = http

    def check(self) -> JournalCheck:
        """Recompute the journal's invariants (``GET /v1/journal/check``).

        Returns
        -------
        JournalCheck
            ``ok`` when every entry balances and every balance matches its lines.
        """
        raw = self._http.json("GET", "/journal/check")
        return _parse(JournalCheck, raw, "journal check")

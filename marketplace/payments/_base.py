"""The payment-provider interface every provider implements.

A provider moves real money outside the exchange; the exchange's own journal
(:mod:`marketplace.services.journal`) records what each movement means. The
life of a purchase, in provider terms::

    authorize(order) ──▶ capture(amount ≤ authorised, once)   the metered total
            │                     └──▶ refund(part or all)    a later dispute/void
            └──▶ cancel()                                     nothing released
    transfer(payee, amount, group)                            settlement payouts

Every call takes an ``idempotency_key``: the same key sent twice performs the
movement once and answers the same result, so a retried request never charges
twice. Providers raise :class:`PaymentError` subclasses only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Authorization",
    "AuthorizationStatus",
    "Capture",
    "ConnectProvider",
    "PaymentDeclined",
    "PaymentError",
    "PaymentProvider",
    "PaymentUnavailable",
    "ProviderEvent",
    "Refund",
    "Transfer",
]


class PaymentError(Exception):
    """Base of the errors a payment provider raises.

    Tree::

        PaymentError
        ├── PaymentDeclined     the provider refused (card declined, no funds)
        └── PaymentUnavailable  the provider could not be reached; safe to retry
                                with the same idempotency key
    """

    code = "payment_error"

    def __init__(self, message: str, *, provider: str, reference: str | None = None):
        super().__init__(message)
        self.provider = provider
        self.reference = reference


class PaymentDeclined(PaymentError):
    """The provider refused the movement; retrying will not help."""

    code = "payment_declined"


class PaymentUnavailable(PaymentError):
    """The provider could not be reached or failed; retry with the same key."""

    code = "payment_unavailable"


class AuthorizationStatus(StrEnum):
    """Where an authorisation stands at the provider."""

    AUTHORIZED = "authorized"
    """Funds are held; capture may follow."""
    REQUIRES_ACTION = "requires_action"
    """The buyer must act (3-D Secure); a webhook reports the outcome."""
    CAPTURED = "captured"
    CANCELED = "canceled"


@dataclass(frozen=True)
class Authorization:
    """Funds held for an order."""

    provider: str
    reference: str
    """The provider's id of the hold (a PaymentIntent id, a hold id)."""
    amount_minor: int
    currency: str
    status: AuthorizationStatus
    client_secret: str | None = None
    """What the buyer's browser needs to confirm a card (Stripe), if anything."""


@dataclass(frozen=True)
class Capture:
    """Money taken from a hold: at most the authorised amount, once."""

    provider: str
    reference: str
    """The provider's id of the captured payment (the PaymentIntent / its charge)."""
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class Refund:
    """Money returned to the buyer from a capture."""

    provider: str
    reference: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class Transfer:
    """A payout to a provider organisation's account."""

    provider: str
    reference: str
    destination: str
    amount_minor: int
    currency: str
    group: str


@runtime_checkable
class PaymentProvider(Protocol):
    """What the exchange needs from a way of paying."""

    name: str

    def authorize(
        self,
        *,
        order_id: uuid.UUID,
        buyer_id: uuid.UUID,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        payment_method: str | None = None,
    ) -> Authorization:
        """Hold ``amount_minor`` for an order (funds are not yet taken)."""
        ...

    def capture(
        self, authorization: Authorization, amount_minor: int, *, idempotency_key: str
    ) -> Capture:
        """Take ``amount_minor`` (≤ authorised) and release the rest of the hold."""
        ...

    def cancel(self, authorization: Authorization, *, idempotency_key: str) -> None:
        """Release the whole hold; nothing is charged."""
        ...

    def refund(
        self, capture: Capture, amount_minor: int, *, idempotency_key: str
    ) -> Refund:
        """Return ``amount_minor`` (≤ captured) to the buyer."""
        ...

    def transfer(
        self,
        *,
        destination: str,
        amount_minor: int,
        currency: str,
        group: str,
        idempotency_key: str,
        source_payment: str | None = None,
    ) -> Transfer:
        """Pay ``amount_minor`` out to ``destination`` (a connected account).

        ``source_payment`` names the payment (the authorisation's reference) the
        money came from, where the provider can pay from it before its funds
        are available (Stripe's ``source_transaction``); others ignore it.
        """
        ...


class ProviderEvent(Protocol):
    """A verified webhook event of a provider, reduced to what the exchange uses."""

    @property
    def id(self) -> str:
        """The event's id: the same for every delivery (deduplicate on it)."""
        ...

    @property
    def type(self) -> str:
        """What happened (``payment_intent.succeeded``)."""
        ...

    @property
    def object_id(self) -> str:
        """The object it is about (a PaymentIntent id)."""
        ...

    @property
    def object_type(self) -> str:
        """That object's kind (``payment_intent``)."""
        ...

    @property
    def data(self) -> Mapping[str, Any]:
        """A snapshot of the object; it may be stale: read the state back."""
        ...


@runtime_checkable
class ConnectProvider(PaymentProvider, Protocol):
    """A provider with accounts for payees, webhooks, and authorisations to read."""

    def retrieve_authorization(self, reference: str) -> Authorization:
        """The current state of an authorisation (reconciliation, webhooks)."""
        ...

    def create_connected_account(
        self,
        *,
        organisation_id: uuid.UUID,
        country: str,
        email: str | None,
        idempotency_key: str,
    ) -> str:
        """Open a payee account for an organisation; its id."""
        ...

    def parse_webhook(self, payload: bytes, signature_header: str) -> ProviderEvent:
        """Verify a webhook delivery and return its event (``PaymentError`` if not)."""
        ...

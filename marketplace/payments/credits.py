"""Prepaid credits: the embedded default way of paying.

Credits are money the buyer paid the exchange beforehand (the operator records
each top-up). They live in the exchange's own journal, so every "provider"
movement here is a journal posting made by the trading service in the same
database transaction as the business change; this provider only names the
holds it makes, so the service can treat credits like any other provider.
"""

from __future__ import annotations

import uuid

from marketplace.payments._base import (
    Authorization,
    AuthorizationStatus,
    Capture,
    Refund,
    Transfer,
)

__all__ = ["CreditsProvider"]


class CreditsProvider:
    """Holds and captures of prepaid credits (book-keeping only; see the module)."""

    name = "credits"

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
        """Name the hold; the journal moves the buyer's funds into it."""
        return Authorization(
            provider=self.name,
            reference=f"credits_{order_id.hex}",
            amount_minor=amount_minor,
            currency=currency,
            status=AuthorizationStatus.AUTHORIZED,
        )

    def capture(
        self, authorization: Authorization, amount_minor: int, *, idempotency_key: str
    ) -> Capture:
        """Name the capture; the journal moves the money."""
        return Capture(
            self.name, authorization.reference, amount_minor, authorization.currency
        )

    def cancel(self, authorization: Authorization, *, idempotency_key: str) -> None:
        """Nothing to do outside the journal."""

    def refund(
        self, capture: Capture, amount_minor: int, *, idempotency_key: str
    ) -> Refund:
        """Name the refund; the journal returns the credits."""
        return Refund(self.name, capture.reference, amount_minor, capture.currency)

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
        """Name the payout; the payee's on-chain credit is the record of it."""
        return Transfer(
            self.name, f"credits_{group}", destination, amount_minor, currency, group
        )

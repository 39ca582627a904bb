"""Payment providers behind one interface: ``credits``, ``stripe``, ``onchain``.

:class:`PaymentProvider` is what the trading service needs from a way of
paying; :func:`make_providers` builds the configured ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from marketplace.payments._base import (
    Authorization,
    AuthorizationStatus,
    Capture,
    ConnectProvider,
    PaymentDeclined,
    PaymentError,
    PaymentProvider,
    PaymentUnavailable,
    ProviderEvent,
    Refund,
    Transfer,
)
from marketplace.payments.credits import CreditsProvider

if TYPE_CHECKING:
    from marketplace.chain import LazyChain
    from marketplace.config import Settings

__all__ = [
    "Authorization",
    "AuthorizationStatus",
    "Capture",
    "ConnectProvider",
    "CreditsProvider",
    "PaymentDeclined",
    "PaymentError",
    "PaymentProvider",
    "PaymentUnavailable",
    "ProviderEvent",
    "Refund",
    "Transfer",
    "make_providers",
]


def make_providers(
    settings: Settings, chain: LazyChain | None = None
) -> dict[str, PaymentProvider]:
    """The providers ``settings`` configure.

    ``credits`` always; ``stripe`` with a key; ``onchain`` unless
    ``VEILX_ONCHAIN_PAYMENTS=0``, through ``chain`` (opened on first use; a new
    :class:`~marketplace.chain.LazyChain` when omitted).
    """
    providers: dict[str, PaymentProvider] = {"credits": CreditsProvider()}
    if settings.stripe_api_key is not None:
        from marketplace.payments.stripe_provider import StripeProvider

        secret = settings.stripe_webhook_secret
        providers["stripe"] = StripeProvider(
            settings.stripe_api_key.get_secret_value(),
            webhook_secret=secret.get_secret_value() if secret else "",
            api_base=settings.stripe_api_base,
        )
    if settings.onchain_payments:
        from marketplace.chain import LazyChain
        from marketplace.payments.onchain import OnchainProvider

        lazy = chain if chain is not None else LazyChain(settings)
        providers["onchain"] = OnchainProvider(
            lambda: lazy.get().ledger.escrow,
            currency=settings.onchain_currency,
            hold_days=settings.onchain_hold_days,
        )
    return providers

"""Card payments through Stripe Connect (separate charges and transfers).

The exchange is the Stripe *platform*. A buyer's card is authorised on the
platform's account with a manual-capture PaymentIntent, captured once at the
metered total, and every provider organisation is paid later with a Transfer to
its own Express *connected account*. The exchange fee is never moved: the
platform simply transfers the provider's net and keeps the rest. Charges and
transfers of one order share ``transfer_group = "order_<order id>"``; settlement
payouts use the group the settlement run names.

Every call passes the caller's ``idempotency_key`` to Stripe, so a request
retried (by the SDK after a network failure or a 5xx, or by the exchange after a
crash) moves money at most once and answers what the first call answered.

Currencies are upper-case ISO 4217 codes in the exchange (``"EUR"``) and
lower-case at Stripe (``"eur"``); this module converts both ways.

Errors::

    stripe.CardError                              -> PaymentDeclined
    balance_insufficient (transfer)               -> PaymentDeclined
    APIConnectionError, RateLimitError, 409, 5xx  -> PaymentUnavailable
    any other stripe.StripeError                  -> PaymentError
    a bad webhook (signature, timestamp, JSON)    -> WebhookSignatureInvalid
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

import stripe

from marketplace.payments._base import (
    Authorization,
    AuthorizationStatus,
    Capture,
    PaymentDeclined,
    PaymentError,
    PaymentUnavailable,
    Refund,
    Transfer,
)

if TYPE_CHECKING:
    from stripe.params import PaymentIntentCreateParams

__all__ = ["StripeEvent", "StripeProvider", "WebhookSignatureInvalid"]

_AUTHORIZATION_STATUS: dict[str, AuthorizationStatus] = {
    "requires_capture": AuthorizationStatus.AUTHORIZED,
    "requires_action": AuthorizationStatus.REQUIRES_ACTION,
    # Not settled yet; a later webhook reports the outcome.
    "requires_confirmation": AuthorizationStatus.REQUIRES_ACTION,
    "processing": AuthorizationStatus.REQUIRES_ACTION,
    "succeeded": AuthorizationStatus.CAPTURED,
    "canceled": AuthorizationStatus.CANCELED,
    # The card was declined or failed 3-D Secure: nothing is held, so, as far
    # as the exchange is concerned, the hold is gone.
    "requires_payment_method": AuthorizationStatus.CANCELED,
}

WebhookProblem = Literal["signature", "timestamp", "payload"]


class WebhookSignatureInvalid(PaymentError):
    """A webhook that must not be trusted: it is rejected, not processed.

    ``problem`` says why: ``"signature"`` (missing or malformed
    ``Stripe-Signature`` header, or no signature matches the payload and the
    endpoint's secret), ``"timestamp"`` (signed longer ago than the tolerance, a
    possible replay) or ``"payload"`` (signed, but not a Stripe event in JSON).
    """

    code = "bad_signature"

    def __init__(self, message: str, *, problem: WebhookProblem):
        super().__init__(message, provider=StripeProvider.name)
        self.problem: WebhookProblem = problem


@dataclass(frozen=True)
class StripeEvent:
    """A verified Stripe event, reduced to what the exchange acts on."""

    id: str
    """``evt_...``: the same for every delivery of the event (deduplicate on it)."""
    type: str
    """E.g. ``payment_intent.succeeded``."""
    object_id: str
    """The id of the object the event is about (``pi_...``, ``ch_...``)."""
    object_type: str
    """Its ``object`` field (``payment_intent``, ``charge``, ``transfer``...)."""
    created: int
    """When Stripe created the event (Unix seconds)."""
    data: Mapping[str, Any]
    """The event's ``data.object``: a snapshot of the object as of the event,
    as plain JSON values. It may be stale by the time the event arrives; read
    the current state back (:meth:`StripeProvider.retrieve_authorization`)."""


class StripeProvider:
    """The exchange's Stripe Connect platform account.

    Parameters
    ----------
    api_key
        The platform's secret key (``sk_live_...`` / ``sk_test_...``).
    webhook_secret
        The signing secret of the webhook endpoint (``whsec_...``);
        :meth:`parse_webhook` rejects every event while it is empty.
    api_base
        Another address for the Stripe API (a test server); ``None`` for Stripe.
    max_network_retries
        How often the SDK retries a request that failed on the network, with a
        409 or a 5xx. Retries reuse the idempotency key, so they are safe.
    timeout
        Seconds to wait for Stripe on each attempt.
    """

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        webhook_secret: str,
        api_base: str | None = None,
        max_network_retries: int = 2,
        timeout: float = 20.0,
    ):
        if max_network_retries < 0:
            raise ValueError("max_network_retries must be ≥ 0")
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self._webhook_secret = webhook_secret
        self._http = stripe.RequestsClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base is not None else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )

    def close(self) -> None:
        """Close the HTTP connections this thread opened to Stripe."""
        # RequestsClient.close is untyped in the SDK
        close = cast("Callable[[], None]", self._http.close)
        close()

    # -- buyer side ---------------------------------------------------------------

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
        """Hold ``amount_minor`` on the buyer's card (a manual-capture PaymentIntent).

        The PaymentIntent is confirmed at once with ``payment_method`` (a
        PaymentMethod id the buyer's browser created with Stripe.js). If the bank
        asks for 3-D Secure, the result is ``REQUIRES_ACTION`` with the
        ``client_secret`` the browser needs; a webhook reports the outcome.

        Raises
        ------
        PaymentDeclined
            No payment method was given, or the card was declined (``reference``
            is the failed PaymentIntent's id when Stripe created one).
        PaymentUnavailable
            Stripe could not be reached; retry with the same key.
        PaymentError
            Stripe rejected the request, e.g. the key was already used for a
            different request.
        """
        if not payment_method:
            raise PaymentDeclined(
                "a card payment needs a payment method: create one with Stripe.js "
                "in the buyer's browser and send its id (pm_...)",
                provider=self.name,
            )
        params: PaymentIntentCreateParams = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "capture_method": "manual",
            "confirm": True,
            "payment_method": payment_method,
            "allowed_payment_method_types": ["card"],
            "metadata": {"order_id": str(order_id), "buyer_id": str(buyer_id)},
            "transfer_group": f"order_{order_id}",
            "description": f"veilx order {order_id}",
        }
        try:
            intent = self._client.v1.payment_intents.create(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            self._raise(exc, f"authorising order {order_id}")
        status = _AUTHORIZATION_STATUS.get(intent.status)
        if status not in (
            AuthorizationStatus.AUTHORIZED,
            AuthorizationStatus.REQUIRES_ACTION,
        ):
            raise PaymentDeclined(
                f"Stripe answered PaymentIntent {intent.id} with status "
                f"{intent.status!r}; the card is not authorised",
                provider=self.name,
                reference=intent.id,
            )
        return self._authorization(intent)

    def retrieve_authorization(self, reference: str) -> Authorization:
        """The current state of a PaymentIntent, e.g. after a webhook or a crash.

        ``succeeded`` is ``CAPTURED`` (``amount_minor`` is then the amount
        received), ``canceled`` and ``requires_payment_method`` (declined, or
        3-D Secure failed: nothing is held) are ``CANCELED``, and
        ``requires_action``, ``requires_confirmation`` and ``processing`` (not
        settled yet) are ``REQUIRES_ACTION``.

        Raises
        ------
        PaymentUnavailable
            Stripe could not be reached; retry.
        PaymentError
            There is no such PaymentIntent, or Stripe rejected the request.
        """
        try:
            intent = self._client.v1.payment_intents.retrieve(reference)
        except stripe.StripeError as exc:
            self._raise(exc, f"reading PaymentIntent {reference}", reference)
        return self._authorization(intent)

    def _charge_of(self, reference: str) -> str:
        """The charge of PaymentIntent ``reference`` (``latest_charge``)."""
        if reference.startswith("ch_"):
            return reference
        try:
            intent = self._client.v1.payment_intents.retrieve(reference)
        except stripe.StripeError as exc:
            self._raise(exc, f"reading PaymentIntent {reference}", reference)
        charge = intent.latest_charge
        if charge is None:
            raise PaymentError(
                f"PaymentIntent {reference} has no charge to pay out from",
                provider=self.name,
                reference=reference,
            )
        return charge if isinstance(charge, str) else charge.id

    def capture(
        self, authorization: Authorization, amount_minor: int, *, idempotency_key: str
    ) -> Capture:
        """Take ``amount_minor`` (≤ authorised) and release the rest of the hold.

        Raises
        ------
        ValueError
            ``amount_minor`` is not positive: Stripe cannot capture nothing, so
            :meth:`cancel` the authorisation instead.
        PaymentError
            Stripe refused, e.g. more than the authorised amount
            (``amount_to_capture``) or the PaymentIntent is not ``requires_capture``.
        PaymentUnavailable
            Stripe could not be reached; retry with the same key.
        """
        if amount_minor <= 0:
            raise ValueError(
                f"cannot capture {amount_minor} on {authorization.reference}: Stripe "
                "captures at least 1 minor unit; cancel the authorisation instead "
                "to release the whole hold"
            )
        reference = authorization.reference
        try:
            intent = self._client.v1.payment_intents.capture(
                reference,
                params={"amount_to_capture": amount_minor},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            self._raise(exc, f"capturing {amount_minor} on {reference}", reference)
        return Capture(
            provider=self.name,
            reference=intent.id,
            amount_minor=intent.amount_received,
            currency=intent.currency.upper(),
        )

    def cancel(self, authorization: Authorization, *, idempotency_key: str) -> None:
        """Release the whole hold; nothing is charged.

        Cancelling a PaymentIntent that is already canceled succeeds (a retry
        with a new key after a lost answer).

        Raises
        ------
        PaymentError
            Stripe refused, e.g. the PaymentIntent was already captured.
        PaymentUnavailable
            Stripe could not be reached; retry with the same key.
        """
        reference = authorization.reference
        try:
            self._client.v1.payment_intents.cancel(
                reference, options={"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as exc:
            if exc.code == "payment_intent_unexpected_state":
                current = self.retrieve_authorization(reference)
                if current.status is AuthorizationStatus.CANCELED:
                    return
            self._raise(exc, f"cancelling {reference}", reference)
        except stripe.StripeError as exc:
            self._raise(exc, f"cancelling {reference}", reference)

    def refund(
        self, capture: Capture, amount_minor: int, *, idempotency_key: str
    ) -> Refund:
        """Return ``amount_minor`` (≤ captured minus refunded) to the buyer.

        Raises
        ------
        ValueError
            ``amount_minor`` is not positive.
        PaymentError
            Stripe refused, e.g. more than is left to refund.
        PaymentUnavailable
            Stripe could not be reached; retry with the same key.
        """
        if amount_minor <= 0:
            raise ValueError(f"a refund must be positive, not {amount_minor}")
        reference = capture.reference
        try:
            refund = self._client.v1.refunds.create(
                params={"payment_intent": reference, "amount": amount_minor},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            self._raise(exc, f"refunding {amount_minor} of {reference}", reference)
        return Refund(
            provider=self.name,
            reference=refund.id,
            amount_minor=refund.amount,
            currency=refund.currency.upper(),
        )

    # -- provider side ------------------------------------------------------------

    def create_connected_account(
        self,
        *,
        organisation_id: uuid.UUID,
        country: str,
        email: str | None,
        idempotency_key: str,
    ) -> str:
        """Open an Express connected account for an organisation; its ``acct_...`` id.

        The account asks for the ``transfers`` capability (it receives
        transfers; it never takes card payments itself). The organisation
        finishes onboarding on Stripe (an Account Link), not here.

        Raises
        ------
        PaymentUnavailable
            Stripe could not be reached; retry with the same key.
        PaymentError
            Stripe refused (e.g. an unsupported country).
        """
        try:
            account = self._client.v1.accounts.create(
                params={
                    "type": "express",
                    "country": country.upper(),
                    "capabilities": {"transfers": {"requested": True}},
                    "metadata": {"organisation_id": str(organisation_id)},
                    **({"email": email} if email is not None else {}),
                },
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            self._raise(exc, f"opening an account for {organisation_id}")
        return account.id

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
        """Pay ``amount_minor`` from the platform's balance to a connected account.

        With ``source_payment`` (a PaymentIntent id) the transfer is paid from
        that PaymentIntent's charge (``source_transaction``), so it does not wait
        for the platform's funds to become available; it is at most what the
        charge has left.

        Raises
        ------
        ValueError
            ``amount_minor`` is not positive.
        PaymentDeclined
            The platform's available balance does not cover the transfer
            (``balance_insufficient``); retrying the same key will not help,
            retrying later with a new key may, once captured funds are available.
        PaymentUnavailable
            Stripe could not be reached; retry with the same key.
        PaymentError
            Stripe refused, e.g. there is no such destination account.
        """
        if amount_minor <= 0:
            raise ValueError(f"a transfer must be positive, not {amount_minor}")
        params: dict[str, Any] = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "destination": destination,
            "transfer_group": group,
            "metadata": {"group": group},
        }
        if source_payment is not None:
            # Paid from that charge's funds, even while they are still pending.
            params["source_transaction"] = self._charge_of(source_payment)
        try:
            transfer = self._client.v1.transfers.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            self._raise(exc, f"transferring {amount_minor} {currency} to {destination}")
        return Transfer(
            provider=self.name,
            reference=transfer.id,
            destination=destination,
            amount_minor=transfer.amount,
            currency=transfer.currency.upper(),
            group=group,
        )

    # -- webhooks -----------------------------------------------------------------

    def parse_webhook(
        self, payload: bytes, signature_header: str, *, tolerance: int = 300
    ) -> StripeEvent:
        """Verify a webhook delivery and return its event.

        ``payload`` must be the raw request body, byte for byte: the signature
        covers it. The ``Stripe-Signature`` header is checked with the Stripe
        SDK's own verification against the endpoint's secret; a signature made
        more than ``tolerance`` seconds ago is refused as a possible replay.

        Raises
        ------
        WebhookSignatureInvalid
            The signature does not verify, is too old, or the payload is not a
            Stripe event; ``problem`` says which.
        """
        if not self._webhook_secret:
            raise WebhookSignatureInvalid(
                "webhook signature cannot be verified: no webhook secret is "
                "configured for Stripe",
                problem="signature",
            )
        try:
            # tolerance 0 skips the age check, to tell a bad signature apart
            stripe.WebhookSignature.verify_header(
                payload, signature_header, self._webhook_secret, 0
            )
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureInvalid(
                f"webhook signature invalid: {exc.user_message}", problem="signature"
            ) from None
        except UnicodeDecodeError:
            raise WebhookSignatureInvalid(
                "webhook payload is not UTF-8 text", problem="payload"
            ) from None
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature_header, self._webhook_secret, tolerance
            )
        except stripe.SignatureVerificationError:
            raise WebhookSignatureInvalid(
                f"webhook signature timestamp is older than {tolerance} seconds "
                "(a replayed or long-delayed delivery)",
                problem="timestamp",
            ) from None
        return _event_from_json(payload)

    # -- helpers ------------------------------------------------------------------

    def _authorization(self, intent: stripe.PaymentIntent) -> Authorization:
        status = _AUTHORIZATION_STATUS.get(intent.status)
        if status is None:
            raise PaymentError(
                f"PaymentIntent {intent.id} has a status this exchange does not "
                f"know: {intent.status!r}",
                provider=self.name,
                reference=intent.id,
            )
        captured = status is AuthorizationStatus.CAPTURED
        return Authorization(
            provider=self.name,
            reference=intent.id,
            amount_minor=intent.amount_received if captured else intent.amount,
            currency=intent.currency.upper(),
            status=status,
            client_secret=(
                intent.client_secret
                if status is AuthorizationStatus.REQUIRES_ACTION
                else None
            ),
        )

    def _raise(
        self, exc: stripe.StripeError, action: str, reference: str | None = None
    ) -> NoReturn:
        """Raise the :class:`PaymentError` that ``exc`` means, from ``exc``."""
        detail = exc.user_message or type(exc).__name__
        code = exc.code
        param = getattr(exc, "param", None)
        extra = ", ".join(
            f"{k}={v}" for k, v in (("code", code), ("param", param)) if v
        )
        message = f"Stripe: {action} failed: {detail}" + (
            f" ({extra})" if extra else ""
        )
        if isinstance(exc, stripe.CardError):
            intent = exc.error.payment_intent if exc.error is not None else None
            raise PaymentDeclined(
                message,
                provider=self.name,
                reference=intent.id if intent is not None else reference,
            ) from exc
        status = exc.http_status
        if (
            isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError)
            or status == 409
            or (status is not None and status >= 500)
        ):
            raise PaymentUnavailable(
                f"{message}; retry with the same idempotency key",
                provider=self.name,
                reference=reference,
            ) from exc
        if code == "balance_insufficient":
            raise PaymentDeclined(
                f"{message}: the platform's available Stripe balance does not cover it",
                provider=self.name,
                reference=reference,
            ) from exc
        raise PaymentError(message, provider=self.name, reference=reference) from exc


def _event_from_json(payload: bytes) -> StripeEvent:
    """The :class:`StripeEvent` in a verified payload (or WebhookSignatureInvalid)."""
    try:
        raw: object = json.loads(payload)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise WebhookSignatureInvalid(
            f"webhook payload is not JSON: {exc}", problem="payload"
        ) from None
    if not isinstance(raw, dict) or raw.get("object") != "event":
        raise WebhookSignatureInvalid(
            'webhook payload is not a Stripe event (no "object": "event")',
            problem="payload",
        )
    data = raw.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    event_id, event_type, created = raw.get("id"), raw.get("type"), raw.get("created")
    if not (
        isinstance(event_id, str)
        and isinstance(event_type, str)
        and isinstance(created, int)
        and isinstance(obj, dict)
        and isinstance(obj.get("id"), str)
        and isinstance(obj.get("object"), str)
    ):
        raise WebhookSignatureInvalid(
            "webhook payload is not a Stripe event: it needs a string id and type, "
            "an integer created and a data.object with an id and an object type",
            problem="payload",
        )
    return StripeEvent(
        id=event_id,
        type=event_type,
        object_id=obj["id"],
        object_type=obj["object"],
        created=created,
        data=obj,
    )

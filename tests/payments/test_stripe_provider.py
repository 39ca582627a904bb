"""StripeProvider through the official stripe SDK against tests/stripe_server.py.

Every test gets a fresh in-memory Stripe (``StripeTestServer``) on 127.0.0.1 and
a provider pointed at it; nothing here reaches api.stripe.com.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from marketplace.payments._base import (
    Authorization,
    AuthorizationStatus,
    PaymentDeclined,
    PaymentError,
    PaymentProvider,
    PaymentUnavailable,
)
from marketplace.payments.stripe_provider import (
    StripeEvent,
    StripeProvider,
    WebhookSignatureInvalid,
)
from tests.stripe_server import StripeTestServer, WebhookRecorder

BUYER = uuid.UUID("6f1c2a9e-7d4b-4e0a-9a51-0c8f5d2b3e71")


@pytest.fixture
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as s:
        yield s


def make_provider(server: StripeTestServer, **kwargs: Any) -> StripeProvider:
    return StripeProvider(
        server.api_key,
        webhook_secret=server.webhook_secret,
        api_base=server.url,
        **kwargs,
    )


@pytest.fixture
def provider(server: StripeTestServer) -> Iterator[StripeProvider]:
    p = make_provider(server)
    yield p
    p.close()


@pytest.fixture
def recorder() -> Iterator[WebhookRecorder]:
    with WebhookRecorder() as r:
        yield r


def authorize(
    provider: StripeProvider,
    amount: int = 10_000,
    *,
    method: str | None = "pm_card_visa",
    key: str | None = None,
    order_id: uuid.UUID | None = None,
) -> Authorization:
    return provider.authorize(
        order_id=order_id or uuid.uuid4(),
        buyer_id=BUYER,
        amount_minor=amount,
        currency="EUR",
        idempotency_key=key or f"authorize_{uuid.uuid4()}",
        payment_method=method,
    )


def event_types(server: StripeTestServer) -> list[str]:
    return [e["type"] for e in server.events]


def test_provider_satisfies_the_protocol(provider: StripeProvider) -> None:
    assert isinstance(provider, PaymentProvider)
    assert provider.name == "stripe"


# -- authorise, capture, cancel -------------------------------------------------------


def test_authorize_then_partial_capture(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    order_id, buyer_id = uuid.uuid4(), uuid.uuid4()
    auth = provider.authorize(
        order_id=order_id,
        buyer_id=buyer_id,
        amount_minor=10_000,
        currency="EUR",
        idempotency_key="authorize_1",
        payment_method="pm_card_visa",
    )
    assert auth.provider == "stripe"
    assert auth.reference.startswith("pi_")
    assert (auth.amount_minor, auth.currency) == (10_000, "EUR")
    assert auth.status is AuthorizationStatus.AUTHORIZED
    assert auth.client_secret is None

    intent = server.get(auth.reference)
    assert intent["status"] == "requires_capture"
    assert intent["capture_method"] == "manual"
    assert (intent["amount"], intent["amount_capturable"]) == (10_000, 10_000)
    assert intent["amount_received"] == 0
    assert intent["currency"] == "eur"
    assert intent["metadata"] == {"order_id": str(order_id), "buyer_id": str(buyer_id)}
    assert intent["transfer_group"] == f"order_{order_id}"
    assert intent["livemode"] is False

    capture = provider.capture(auth, 7_250, idempotency_key="capture_1")
    assert (capture.reference, capture.amount_minor, capture.currency) == (
        auth.reference,
        7_250,
        "EUR",
    )
    intent = server.get(auth.reference)
    assert intent["status"] == "succeeded"
    assert (intent["amount_received"], intent["amount_capturable"]) == (7_250, 0)
    charge = server.get(intent["latest_charge"])
    assert (charge["captured"], charge["amount_captured"]) == (True, 7_250)
    assert server.balance("eur") == 7_250

    again = provider.retrieve_authorization(auth.reference)
    assert again.status is AuthorizationStatus.CAPTURED
    assert again.amount_minor == 7_250
    assert event_types(server) == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.amount_capturable_updated",
        "charge.captured",
        "payment_intent.succeeded",
    ]


def test_authorize_then_cancel(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    auth = authorize(provider, 4_000)
    provider.cancel(auth, idempotency_key="cancel_1")
    intent = server.get(auth.reference)
    assert intent["status"] == "canceled"
    assert intent["amount_capturable"] == 0
    assert intent["amount_received"] == 0
    assert "payment_intent.canceled" in event_types(server)
    assert provider.retrieve_authorization(auth.reference).status is (
        AuthorizationStatus.CANCELED
    )
    # a retry under a new key (the first answer was lost) is not an error
    provider.cancel(auth, idempotency_key="cancel_2")
    assert server.balance("eur") == 0


def test_cancel_after_capture_is_refused(provider: StripeProvider) -> None:
    auth = authorize(provider, 4_000)
    provider.capture(auth, 4_000, idempotency_key="capture")
    with pytest.raises(PaymentError) as caught:
        provider.cancel(auth, idempotency_key="cancel")
    assert type(caught.value) is PaymentError
    assert "status of succeeded" in str(caught.value)
    assert caught.value.reference == auth.reference


def test_declined_card(server: StripeTestServer, provider: StripeProvider) -> None:
    with pytest.raises(PaymentDeclined) as caught:
        authorize(provider, method="pm_card_chargeDeclined")
    [intent] = server.objects("payment_intent")
    assert caught.value.reference == intent["id"]
    assert caught.value.provider == "stripe"
    assert "card_declined" in str(caught.value)
    assert intent["status"] == "requires_payment_method"
    failed = [e for e in server.events if e["type"] == "payment_intent.payment_failed"]
    assert [e["data"]["object"]["id"] for e in failed] == [intent["id"]]
    assert provider.retrieve_authorization(intent["id"]).status is (
        AuthorizationStatus.CANCELED
    )


def test_authorize_without_payment_method_never_calls_stripe(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    with pytest.raises(PaymentDeclined, match="payment method"):
        authorize(provider, method=None)
    assert server.requests == []


def test_requires_action_then_completed(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    auth = authorize(provider, 2_500, method="pm_card_authenticationRequired")
    assert auth.status is AuthorizationStatus.REQUIRES_ACTION
    assert auth.client_secret is not None
    assert auth.client_secret.startswith(f"{auth.reference}_secret_")
    assert server.get(auth.reference)["next_action"]["type"] == "use_stripe_sdk"
    assert "payment_intent.requires_action" in event_types(server)

    server.complete_action(auth.reference, succeed=True)
    now = provider.retrieve_authorization(auth.reference)
    assert now.status is AuthorizationStatus.AUTHORIZED
    assert now.amount_minor == 2_500
    assert now.client_secret is None
    assert provider.capture(now, 2_500, idempotency_key="capture").amount_minor == (
        2_500
    )


def test_requires_action_then_failed(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    auth = authorize(provider, 2_500, method="pm_card_authenticationRequired")
    server.complete_action(auth.reference, succeed=False)
    assert provider.retrieve_authorization(auth.reference).status is (
        AuthorizationStatus.CANCELED
    )
    assert event_types(server)[-1] == "payment_intent.payment_failed"


# -- idempotency ----------------------------------------------------------------------


def test_authorize_twice_with_one_key_is_one_payment_intent(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    order_id = uuid.uuid4()
    first = authorize(provider, 3_000, key="order-key", order_id=order_id)
    second = authorize(provider, 3_000, key="order-key", order_id=order_id)
    assert first == second
    assert len(server.objects("payment_intent")) == 1
    assert [r.replayed for r in server.requests] == [False, True]


def test_one_key_with_other_parameters_is_refused(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    order_id = uuid.uuid4()
    authorize(provider, 3_000, key="order-key", order_id=order_id)
    with pytest.raises(PaymentError) as caught:
        authorize(provider, 3_001, key="order-key", order_id=order_id)
    assert type(caught.value) is PaymentError
    assert "same parameters" in str(caught.value)
    assert len(server.objects("payment_intent")) == 1


def test_capture_twice_with_one_key_captures_once(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    auth = authorize(provider, 6_000)
    first = provider.capture(auth, 5_000, idempotency_key="capture_x")
    second = provider.capture(auth, 5_000, idempotency_key="capture_x")
    assert first == second
    assert first.amount_minor == 5_000
    assert len(server.objects("charge")) == 1
    assert event_types(server).count("payment_intent.succeeded") == 1
    assert server.balance("eur") == 5_000


def test_capture_more_than_authorised(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    auth = authorize(provider, 6_000)
    with pytest.raises(PaymentError, match="amount_to_capture") as caught:
        provider.capture(auth, 6_001, idempotency_key="capture")
    assert type(caught.value) is PaymentError
    assert caught.value.reference == auth.reference
    intent = server.get(auth.reference)
    assert (intent["status"], intent["amount_capturable"]) == (
        "requires_capture",
        6_000,
    )


@pytest.mark.parametrize("amount", [0, -5])
def test_capture_nothing_means_cancel(
    server: StripeTestServer, provider: StripeProvider, amount: int
) -> None:
    auth = authorize(provider, 6_000)
    with pytest.raises(ValueError, match="cancel"):
        provider.capture(auth, amount, idempotency_key="capture")
    assert server.get(auth.reference)["status"] == "requires_capture"


# -- refunds and transfers ------------------------------------------------------------


def test_refund_in_parts(server: StripeTestServer, provider: StripeProvider) -> None:
    auth = authorize(provider, 5_000)
    capture = provider.capture(auth, 4_000, idempotency_key="capture")
    refund = provider.refund(capture, 1_500, idempotency_key="refund_1")
    assert refund.reference.startswith("re_")
    assert (refund.amount_minor, refund.currency) == (1_500, "EUR")
    assert server.get(refund.reference)["payment_intent"] == auth.reference
    provider.refund(capture, 2_500, idempotency_key="refund_2")
    with pytest.raises(PaymentError, match="already been refunded"):
        provider.refund(capture, 1, idempotency_key="refund_3")
    charge = server.get(server.get(auth.reference)["latest_charge"])
    assert (charge["amount_refunded"], charge["refunded"]) == (4_000, True)
    assert server.balance("eur") == 0
    assert event_types(server).count("charge.refunded") == 2


def test_refund_more_than_captured(provider: StripeProvider) -> None:
    auth = authorize(provider, 5_000)
    capture = provider.capture(auth, 4_000, idempotency_key="capture")
    with pytest.raises(PaymentError, match="greater than unrefunded amount"):
        provider.refund(capture, 4_001, idempotency_key="refund")


def test_connected_account_and_transfer(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    org = uuid.uuid4()
    account_id = provider.create_connected_account(
        organisation_id=org,
        country="de",
        email="payouts@example.org",
        idempotency_key=f"account_{org}",
    )
    assert account_id.startswith("acct_")
    same = provider.create_connected_account(
        organisation_id=org,
        country="de",
        email="payouts@example.org",
        idempotency_key=f"account_{org}",
    )
    assert same == account_id
    [account] = server.objects("account")
    assert account["type"] == "express"
    assert (account["country"], account["default_currency"]) == ("DE", "eur")
    assert account["metadata"] == {"organisation_id": str(org)}
    assert account["capabilities"] == {"transfers": "inactive"}

    order_id = uuid.uuid4()
    auth = authorize(provider, 10_000, order_id=order_id)
    provider.capture(auth, 10_000, idempotency_key="capture")
    # the exchange keeps its fee by transferring only the provider's net
    transfer = provider.transfer(
        destination=account_id,
        amount_minor=8_500,
        currency="EUR",
        group=f"order_{order_id}",
        idempotency_key="payout_1",
    )
    assert transfer.reference.startswith("tr_")
    assert (transfer.destination, transfer.amount_minor, transfer.currency) == (
        account_id,
        8_500,
        "EUR",
    )
    assert transfer.group == f"order_{order_id}"
    stored = server.get(transfer.reference)
    assert stored["transfer_group"] == server.get(auth.reference)["transfer_group"]
    assert (stored["destination"], stored["amount"]) == (account_id, 8_500)
    assert server.balance("eur") == 1_500
    assert event_types(server)[-1] == "transfer.created"


def test_transfer_beyond_the_balance_is_declined(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    """Decided: ``balance_insufficient`` is a PaymentDeclined (Stripe refused)."""
    account_id = provider.create_connected_account(
        organisation_id=uuid.uuid4(), country="DE", email=None, idempotency_key="a"
    )
    server.fund_balance("eur", 1_000)
    with pytest.raises(PaymentDeclined, match="balance_insufficient") as caught:
        provider.transfer(
            destination=account_id,
            amount_minor=1_001,
            currency="EUR",
            group="settlement_1",
            idempotency_key="payout",
        )
    assert "available Stripe balance does not cover it" in str(caught.value)
    assert server.objects("transfer") == []
    assert server.balance("eur") == 1_000


def test_transfer_to_an_unknown_account(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    server.fund_balance("eur", 1_000)
    with pytest.raises(PaymentError, match="No such destination") as caught:
        provider.transfer(
            destination="acct_missing",
            amount_minor=100,
            currency="EUR",
            group="settlement_1",
            idempotency_key="payout",
        )
    assert type(caught.value) is PaymentError


# -- failures and retries -------------------------------------------------------------


def test_server_error_without_retries_is_unavailable(server: StripeTestServer) -> None:
    provider = make_provider(server, max_network_retries=0)
    try:
        server.fail_next("POST", "/v1/payment_intents", status=500)
        with pytest.raises(PaymentUnavailable, match="retry with the same"):
            authorize(provider, key="order-key")
        assert server.objects("payment_intent") == []
        auth = authorize(provider, key="order-key")  # the caller's retry
        assert auth.status is AuthorizationStatus.AUTHORIZED
    finally:
        provider.close()


def test_server_error_is_retried_by_the_sdk_with_the_same_key(
    server: StripeTestServer,
) -> None:
    provider = make_provider(server, max_network_retries=2)
    try:
        server.fail_next("POST", "/v1/payment_intents", status=503)
        auth = authorize(provider, key="order-key")
        assert auth.status is AuthorizationStatus.AUTHORIZED
        posts = [r for r in server.requests if r.method == "POST"]
        assert [(r.status, r.injected) for r in posts] == [(503, True), (200, False)]
        assert {r.idempotency_key for r in posts} == {"order-key"}
        assert len(server.objects("payment_intent")) == 1
    finally:
        provider.close()


def test_a_lost_answer_is_replayed_not_repeated(server: StripeTestServer) -> None:
    provider = make_provider(server, max_network_retries=1)
    try:
        auth = authorize(provider, 8_000)
        server.fail_next("POST", "/v1/payment_intents/", status=500, after=True)
        capture = provider.capture(auth, 8_000, idempotency_key="capture")
        assert capture.amount_minor == 8_000
        captures = [r for r in server.requests if r.path.endswith("/capture")]
        assert [(r.injected, r.replayed) for r in captures] == [
            (True, False),
            (False, True),
        ]
        assert event_types(server).count("payment_intent.succeeded") == 1
        assert server.balance("eur") == 8_000
    finally:
        provider.close()


def test_rate_limited_is_unavailable(server: StripeTestServer) -> None:
    provider = make_provider(server, max_network_retries=0)
    try:
        server.fail_next("POST", "/v1/transfers", status=429)
        with pytest.raises(PaymentUnavailable):
            provider.transfer(
                destination="acct_x",
                amount_minor=100,
                currency="EUR",
                group="g",
                idempotency_key="payout",
            )
    finally:
        provider.close()


def test_unreachable_stripe_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = StripeProvider(
        "sk_test_x",
        webhook_secret="whsec_x",
        api_base=f"http://127.0.0.1:{port}",
        max_network_retries=0,
    )
    try:
        with pytest.raises(PaymentUnavailable):
            authorize(provider)
    finally:
        provider.close()


def test_a_wrong_api_key_is_an_error_not_a_retry(server: StripeTestServer) -> None:
    provider = StripeProvider(
        "sk_test_wrong", webhook_secret=server.webhook_secret, api_base=server.url
    )
    try:
        with pytest.raises(PaymentError, match="Invalid API Key") as caught:
            authorize(provider)
        assert type(caught.value) is PaymentError
        assert [r.status for r in server.requests] == [401]
    finally:
        provider.close()


def test_retrieve_an_unknown_payment_intent(provider: StripeProvider) -> None:
    with pytest.raises(PaymentError, match="No such payment_intent") as caught:
        provider.retrieve_authorization("pi_missing")
    assert type(caught.value) is PaymentError


# -- webhooks -------------------------------------------------------------------------


def test_webhooks_are_signed_with_stripes_scheme(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    parsed: list[StripeEvent] = []
    seen: list[AuthorizationStatus] = []

    def endpoint(payload: bytes, signature: str | None) -> int:
        # the SDK's own verification, then the provider's
        stripe.Webhook.construct_event(payload, signature, server.webhook_secret)
        event = provider.parse_webhook(payload, signature or "")
        parsed.append(event)
        if event.object_type == "payment_intent":  # read back, as the exchange does
            seen.append(provider.retrieve_authorization(event.object_id).status)
        return 200

    with WebhookRecorder(endpoint) as recorder:
        server.webhook_url = recorder.url
        order_id = uuid.uuid4()
        auth = authorize(provider, 3_000, order_id=order_id)
        provider.capture(auth, 3_000, idempotency_key="capture")
        assert [r.status for r in recorder.received] == [200] * 5
    assert [e.id for e in parsed] == [e["id"] for e in server.events]
    # a read-back sees the state at delivery, not at the event: the snapshot in
    # payment_intent.created says requires_confirmation, Stripe already more
    assert parsed[0].data["status"] == "requires_confirmation"
    assert seen == [
        AuthorizationStatus.AUTHORIZED,  # payment_intent.created
        AuthorizationStatus.AUTHORIZED,  # payment_intent.amount_capturable_updated
        AuthorizationStatus.CAPTURED,  # payment_intent.succeeded
    ]
    assert server.pending_events() == []
    held = next(
        e for e in parsed if e.type == "payment_intent.amount_capturable_updated"
    )
    assert (held.object_type, held.object_id) == ("payment_intent", auth.reference)
    assert held.data["metadata"]["order_id"] == str(order_id)
    assert held.data["amount_capturable"] == 3_000
    assert held.created == server.get(held.id)["created"]
    charge = next(e for e in parsed if e.type == "charge.captured")
    assert charge.object_type == "charge"
    assert charge.data["payment_intent"] == auth.reference


def _one_delivery(
    server: StripeTestServer, provider: StripeProvider
) -> tuple[bytes, str]:
    server.delivery = "manual"
    authorize(provider)
    event = server.pending_events()[0]
    payload = json.dumps(event).encode()
    return payload, server.sign(payload)


def test_parse_webhook_accepts_a_good_signature(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    payload, signature = _one_delivery(server, provider)
    event = provider.parse_webhook(payload, signature)
    assert event.id == server.events[0]["id"]
    assert event.type == "payment_intent.created"


def test_tampered_payload_is_refused(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    payload, signature = _one_delivery(server, provider)
    tampered = payload.replace(b'"amount": 10000', b'"amount": 1')
    assert tampered != payload
    with pytest.raises(WebhookSignatureInvalid, match="signature") as caught:
        provider.parse_webhook(tampered, signature)
    assert caught.value.problem == "signature"
    assert isinstance(caught.value, PaymentError)


def test_wrong_secret_is_refused(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    payload, _ = _one_delivery(server, provider)
    forged = server.sign(payload, secret="whsec_not_the_endpoints")
    with pytest.raises(WebhookSignatureInvalid) as caught:
        provider.parse_webhook(payload, forged)
    assert caught.value.problem == "signature"


def test_old_timestamp_is_refused(
    server: StripeTestServer, provider: StripeProvider
) -> None:
    payload, _ = _one_delivery(server, provider)
    old = server.sign(payload, timestamp=int(time.time()) - 3_600)
    with pytest.raises(WebhookSignatureInvalid, match="older than 300 seconds") as c:
        provider.parse_webhook(payload, old)
    assert c.value.problem == "timestamp"
    # a wider tolerance accepts it
    assert provider.parse_webhook(payload, old, tolerance=7_200).type == (
        "payment_intent.created"
    )


@pytest.mark.parametrize("header", ["", "garbage", "t=123", "v1=abc"])
def test_malformed_signature_header_is_refused(
    server: StripeTestServer, provider: StripeProvider, header: str
) -> None:
    payload, _ = _one_delivery(server, provider)
    with pytest.raises(WebhookSignatureInvalid) as caught:
        provider.parse_webhook(payload, header)
    assert caught.value.problem == "signature"


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'{"object": "event", "id": "evt_1"}', b"\xff\xfe"],
)
def test_signed_but_not_an_event_is_refused(
    server: StripeTestServer, provider: StripeProvider, payload: bytes
) -> None:
    with pytest.raises(WebhookSignatureInvalid) as caught:
        provider.parse_webhook(payload, server.sign(payload))
    assert caught.value.problem == "payload"


def test_no_webhook_secret_refuses_everything(server: StripeTestServer) -> None:
    provider = StripeProvider("sk_test_x", webhook_secret="", api_base=server.url)
    payload = b'{"object": "event"}'
    with pytest.raises(WebhookSignatureInvalid, match="no webhook secret"):
        provider.parse_webhook(payload, server.sign(payload))
    provider.close()


def test_shuffled_duplicated_delivery_delivers_every_event(
    server: StripeTestServer, provider: StripeProvider, recorder: WebhookRecorder
) -> None:
    server.delivery = "manual"
    server.webhook_url = recorder.url
    auth = authorize(provider, 9_000)
    capture = provider.capture(auth, 9_000, idempotency_key="capture")
    provider.refund(capture, 1_000, idempotency_key="refund")
    authorize(provider, method="pm_card_authenticationRequired")
    pending = server.pending_events()
    assert recorder.received == []
    assert [e["id"] for e in pending] == [e["id"] for e in server.events]

    deliveries = server.deliver(shuffle=True, duplicate=True, seed=7)
    assert all(d.ok for d in deliveries)
    assert server.pending_events() == []
    events = [
        provider.parse_webhook(r.payload, r.signature or "") for r in recorder.received
    ]
    counts = Counter(e.id for e in events)
    assert counts == Counter({e["id"]: 2 for e in pending})  # each exactly twice
    assert [e.id for e in events] != [e["id"] for e in pending for _ in range(2)]
    # ids are stable: both copies of an event carry the same bytes
    by_id: dict[str, set[bytes]] = {}
    for r, e in zip(recorder.received, events, strict=True):
        by_id.setdefault(e.id, set()).add(r.payload)
    assert all(len(payloads) == 1 for payloads in by_id.values())
    # the same seed gives the same order
    again = server.deliver(pending, shuffle=True, duplicate=True, seed=7)
    assert [d.event_id for d in again] == [e.id for e in events]


def test_failed_deliveries_are_retried_then_queued(
    server: StripeTestServer, provider: StripeProvider, recorder: WebhookRecorder
) -> None:
    server.delivery = "manual"
    server.webhook_url = recorder.url
    server.max_delivery_attempts = 3
    authorize(provider)
    first = server.pending_events()[0]

    recorder.fail_next(2, status=500)
    [delivery] = server.deliver([first])
    assert (delivery.ok, delivery.attempt) == (True, 3)
    tries = [d for d in server.deliveries if d.event_id == first["id"]]
    assert [(d.attempt, d.status) for d in tries] == [(1, 500), (2, 500), (3, 200)]

    recorder.fail_next(3, status=400)
    [delivery] = server.deliver([first["id"]])
    assert (delivery.ok, delivery.status) == (False, 400)
    assert first["id"] in [e["id"] for e in server.pending_events()]
    server.deliver()
    assert server.pending_events() == []


def test_an_endpoint_with_the_wrong_secret_gets_retries(
    server: StripeTestServer,
) -> None:
    wrong = StripeProvider(
        "sk_test_x", webhook_secret="whsec_other", api_base=server.url
    )

    def endpoint(payload: bytes, signature: str | None) -> int:
        try:
            wrong.parse_webhook(payload, signature or "")
        except WebhookSignatureInvalid:
            return 400
        return 200

    with WebhookRecorder(endpoint) as recorder:
        server.webhook_url = recorder.url
        server.fund_balance("eur", 100)
        provider = make_provider(server)
        try:
            provider.create_connected_account(
                organisation_id=uuid.uuid4(),
                country="FR",
                email=None,
                idempotency_key="acct",
            )
            [account] = server.objects("account")
            server.complete_onboarding(account["id"])
        finally:
            provider.close()
    assert [r.status for r in recorder.received] == [400, 400, 400]
    [queued] = server.pending_events()
    assert queued["type"] == "account.updated"
    assert queued["data"]["previous_attributes"]["payouts_enabled"] is False
    wrong.close()


# -- the test server itself ---------------------------------------------------------


def test_server_refuses_unknown_parameters(server: StripeTestServer) -> None:
    client = stripe.StripeClient(
        server.api_key, base_addresses={"api": server.url}, max_network_retries=0
    )
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(
            params={"amount": 1_000, "currency": "eur", "statement_descriptr": "x"}  # type: ignore[typeddict-unknown-key]
        )
    assert caught.value.param == "statement_descriptr"
    assert caught.value.code == "parameter_unknown"
    assert caught.value.http_status == 400


def test_server_requires_a_return_url_for_automatic_methods(
    server: StripeTestServer,
) -> None:
    client = stripe.StripeClient(
        server.api_key, base_addresses={"api": server.url}, max_network_retries=0
    )
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(
            params={
                "amount": 1_000,
                "currency": "eur",
                "confirm": True,
                "payment_method": "pm_card_visa",
            }
        )
    assert caught.value.param == "return_url"


def test_server_answers_stripes_error_shape(server: StripeTestServer) -> None:
    client = stripe.StripeClient(
        server.api_key, base_addresses={"api": server.url}, max_network_retries=0
    )
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.transfers.retrieve("tr_missing")
    assert caught.value.http_status == 404
    assert caught.value.json_body == {
        "error": {
            "type": "invalid_request_error",
            "message": "No such transfer: 'tr_missing'",
            "code": "resource_missing",
            "doc_url": "https://stripe.com/docs/error-codes/resource_missing",
            "param": "id",
        }
    }


def test_the_provider_is_a_connect_provider() -> None:
    """What the trading service relies on beyond the base interface."""
    from marketplace.payments import ConnectProvider, CreditsProvider, PaymentProvider

    provider = StripeProvider(
        "sk_test_x", webhook_secret="whsec_x", api_base="http://127.0.0.1:9"
    )
    assert isinstance(provider, ConnectProvider)
    assert isinstance(CreditsProvider(), PaymentProvider)
    assert not isinstance(CreditsProvider(), ConnectProvider)

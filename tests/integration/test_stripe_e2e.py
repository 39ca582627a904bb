"""Card payments end to end: the exchange's API server and the official Stripe SDK
against the project's Stripe-compatible test server, on both engines.

The exchange runs under uvicorn on 127.0.0.1 with ``VEILX_STRIPE_*`` pointing at
the test server, which delivers signed webhooks to it. A buyer pays by card
(authorised, manual capture), runs jobs that are charged only when released,
confirms a second card through 3-D Secure (the order completes by webhook, with
events delivered twice and out of order), has a third declined; the entitlement
is closed (one partial capture of the metered amount plus the card surcharge);
the operator opens the provider's connected account and settles the period (a
transfer in the run's transfer group for the provider's net); the journal
balances throughout.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from marketplace.db import Database
from marketplace.demo import DemoServer
from marketplace.models import Role
from pricing import breakdown
from tests.conftest import make_settings
from tests.factories import Party, create_random_org
from tests.job_factories import (
    MONTHLY_SUBSCRIPTION,
    Served,
    aggregate_job,
    create_served_dataset,
    success,
)
from tests.stripe_server import StripeTestServer

pytestmark = pytest.mark.integration

PRICE = 2500
FEE_BPS = 1000


@pytest.fixture
def stripe_server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as server:
        yield server


@contextmanager
def _exchange_for(
    db: Database, tmp_path: Path, stripe_server: StripeTestServer
) -> Iterator[httpx.Client]:
    """The exchange (a served process) paying through ``stripe_server``."""
    settings = make_settings(
        tmp_path,
        database_url=db.engine.url.render_as_string(hide_password=False),
        stripe_api_key=SecretStr(stripe_server.api_key),
        stripe_webhook_secret=SecretStr(stripe_server.webhook_secret),
        stripe_api_base=stripe_server.url,
    )
    with DemoServer(settings) as server:
        stripe_server.webhook_url = f"{server.url}/v1/webhooks/stripe"
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield client


@pytest.fixture
def exchange(
    db: Database, tmp_path: Path, stripe_server: StripeTestServer
) -> Iterator[tuple[httpx.Client, Database]]:
    with _exchange_for(db, tmp_path, stripe_server) as client:
        yield client, db


def _served(client: Any, db: Database) -> Served:
    return create_served_dataset(client, db, funded=False)


def _card_order(
    client: httpx.Client, buyer: Party, dataset_id: str, card: str, queries: int = 3
) -> httpx.Response:
    r = client.post(
        "/v1/quotes",
        json={"dataset_id": dataset_id, "queries": queries, "payment_method": "stripe"},
        headers=buyer.headers,
    )
    assert r.status_code == 201, r.text
    return client.post(
        "/v1/orders",
        json={"quote_id": r.json()["id"], "payment_method_token": card},
        headers={**buyer.headers, "Idempotency-Key": uuid.uuid4().hex},
    )


def _released_job(client: httpx.Client, served: Served) -> dict[str, Any]:
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    assert r.status_code == 201, r.text
    job = r.json()
    h = served.node.headers
    r = client.get(f"/v1/nodes/{served.node.id}/jobs/next", headers=h)
    assert r.json()["job_id"] == job["id"], r.text
    assert client.post(f"/v1/jobs/{job['id']}/start", headers=h).status_code == 200
    r = client.post(
        f"/v1/jobs/{job['id']}/result", json=success(job, served), headers=h
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _pi(stripe_server: StripeTestServer, order_id: str) -> dict[str, Any]:
    (pi,) = [
        p
        for p in stripe_server.objects("payment_intent")
        if p["metadata"].get("order_id") == order_id
    ]
    return pi


def test_card_payments_end_to_end(
    exchange: tuple[httpx.Client, Database], stripe_server: StripeTestServer
) -> None:
    client, db = exchange
    operator = create_random_org(db, Role.OPERATOR)
    start_at = datetime.now(UTC) - timedelta(seconds=1)
    served = _served(client, db)

    # 1. A card authorised at once: the whole quote is held, nothing captured.
    r = _card_order(client, served.buyer, served.dataset_id, "pm_card_visa")
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "active" and order["payment_method"] == "stripe"
    gross = 3 * PRICE
    surcharge = breakdown(
        gross, fee_bps=FEE_BPS, surcharge=_card_surcharge()
    ).surcharge_minor
    assert order["amount_minor"] == gross + surcharge
    pi = _pi(stripe_server, order["id"])
    assert pi["status"] == "requires_capture"
    assert pi["amount_capturable"] == gross + surcharge
    assert pi["capture_method"] == "manual"

    # 2. Two released jobs and one failed: two charged, Stripe untouched so far.
    _released_job(client, served)
    _released_job(client, served)
    ent_id = order["entitlement_id"]
    ent = client.get(f"/v1/entitlements/{ent_id}", headers=served.buyer.headers).json()
    assert ent["amount_captured_minor"] == 2 * PRICE
    assert _pi(stripe_server, order["id"])["status"] == "requires_capture"

    # 3. Closing captures once: the metered amount plus its card surcharge.
    r = client.post(f"/v1/entitlements/{ent_id}/close", headers=served.buyer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["finalized_at"] is not None
    pi = _pi(stripe_server, order["id"])
    due = (
        2 * PRICE
        + breakdown(
            2 * PRICE, fee_bps=FEE_BPS, surcharge=_card_surcharge()
        ).surcharge_minor
    )
    assert pi["status"] == "succeeded" and pi["amount_received"] == due
    assert pi["amount_capturable"] == 0  # the rest of the hold released

    # 4. A declined card: 402, the order failed, nothing held.
    r = _card_order(client, served.buyer, served.dataset_id, "pm_card_chargeDeclined")
    assert r.status_code == 402, r.text
    assert r.json()["code"] == "payment_declined"

    # 5. 3-D Secure: requires_action, then the webhook completes the order —
    #    its events delivered twice each and shuffled.
    stripe_server.delivery = "manual"
    r = _card_order(
        client, served.buyer, served.dataset_id, "pm_card_authenticationRequired"
    )
    assert r.status_code == 201, r.text
    pending = r.json()
    assert pending["status"] == "requires_action" and pending["client_secret"]
    assert pending["entitlement_id"] is None
    stripe_server.complete_action(_pi(stripe_server, pending["id"])["id"], True)
    deliveries = stripe_server.deliver(shuffle=True, duplicate=True, seed=3)
    assert deliveries and all(d.ok for d in deliveries), deliveries
    r = client.get(f"/v1/orders/{pending['id']}", headers=served.buyer.headers)
    assert r.json()["status"] == "active", r.text
    assert r.json()["entitlement_id"]
    stripe_server.delivery = "immediate"

    # A forged webhook is refused; a replayed one changes nothing.
    event = stripe_server.events[-1]
    payload = json.dumps(event).encode()
    r = client.post(
        "/v1/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": stripe_server.sign(payload, secret="whsec_x")},
    )
    assert r.status_code == 422 and r.json()["code"] == "validation_failed", r.text
    r = client.post(
        "/v1/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": stripe_server.sign(payload)},
    )
    assert r.status_code == 200 and r.json() == {"result": "duplicate"}, r.text

    # 6. Settlement: a transfer of the provider's net to its connected account.
    r = client.put(
        f"/v1/organisations/{served.provider.org_id}/payout-account",
        headers=operator.headers,
    )
    assert r.status_code == 200, r.text
    account = r.json()["stripe_account_id"]
    stripe_server.complete_onboarding(account)
    r = client.post(
        "/v1/settlements",
        json={
            "period_start": start_at.isoformat(),
            "period_end": datetime.now(UTC).isoformat(),
        },
        headers=operator.headers,
    )
    assert r.status_code == 201, r.text
    run = r.json()
    (payout,) = run["payouts"]
    net = 2 * (PRICE - PRICE * FEE_BPS // 10_000)
    assert payout["method"] == "stripe" and payout["status"] == "paid", run
    assert payout["amount_minor"] == net
    (transfer,) = stripe_server.objects("transfer")
    assert transfer["id"] == payout["reference"]
    assert transfer["destination"] == account
    assert transfer["amount"] == net
    assert transfer["transfer_group"] == f"settlement_{run['id']}"
    # The platform keeps the fees and surcharge: what was captured less the transfer.
    assert stripe_server.balance("eur") == due - net

    r = client.get("/v1/journal/check", headers=operator.headers)
    assert r.json()["ok"] is True, r.text


def _card_surcharge() -> Any:
    from marketplace.services.trading import TradingConfig

    return TradingConfig().card_surcharge


def test_a_card_subscription_is_captured_up_front_and_refunded_at_its_end(
    exchange: tuple[httpx.Client, Database], stripe_server: StripeTestServer
) -> None:
    client, db = exchange
    operator = create_random_org(db, Role.OPERATOR)
    start_at = datetime.now(UTC) - timedelta(seconds=1)
    served = create_served_dataset(client, db, funded=False, plan=MONTHLY_SUBSCRIPTION)

    # A month with 1 included computation and room for 2 more at the overage price.
    r = _card_order(client, served.buyer, served.dataset_id, "pm_card_visa", 3)
    assert r.status_code == 201, r.text
    order = r.json()
    gross = 10_000 + 2 * 3_000
    surcharge = breakdown(
        gross, fee_bps=FEE_BPS, surcharge=_card_surcharge()
    ).surcharge_minor
    assert order["amount_minor"] == gross + surcharge
    # Captured at once: a card authorisation would lapse long before the month.
    pi = _pi(stripe_server, order["id"])
    assert pi["status"] == "succeeded" and pi["amount_received"] == gross + surcharge
    ent_id = order["entitlement_id"]
    ent = client.get(f"/v1/entitlements/{ent_id}", headers=served.buyer.headers).json()
    expires = datetime.fromisoformat(ent["expires_at"])
    assert expires - datetime.now(UTC) > timedelta(days=29)
    assert ent["amount_captured_minor"] == 10_000  # the period, prepaid

    # Two computations: the included one, then one overage.
    _released_job(client, served)
    _released_job(client, served)
    r = client.post(f"/v1/entitlements/{ent_id}/close", headers=served.buyer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["amount_captured_minor"] == 13_000
    used = (
        13_000
        + breakdown(
            13_000, fee_bps=FEE_BPS, surcharge=_card_surcharge()
        ).surcharge_minor
    )
    refunds = [
        x for x in stripe_server.objects("refund") if x["payment_intent"] == pi["id"]
    ]
    assert [x["amount"] for x in refunds] == [gross + surcharge - used]
    # Closing again, or the sweep, refunds nothing more.
    client.post(f"/v1/entitlements/{ent_id}/close", headers=served.buyer.headers)
    assert (
        len(
            [
                x
                for x in stripe_server.objects("refund")
                if x["payment_intent"] == pi["id"]
            ]
        )
        == 1
    )

    # Settlement pays the provider its share of what the card kept.
    end_at = datetime.now(UTC)
    run = client.post(
        "/v1/settlements",
        json={"period_start": start_at.isoformat(), "period_end": end_at.isoformat()},
        headers=operator.headers,
    ).json()
    assert run["gross_minor"] == 13_000
    check = client.get("/v1/journal/check", headers=operator.headers).json()
    assert check["ok"], check


@pytest.fixture
def pending_exchange(
    db: Database, tmp_path: Path
) -> Iterator[tuple[httpx.Client, Database, StripeTestServer]]:
    """The exchange against a Stripe whose captured funds stay pending (as live)."""
    with (
        StripeTestServer(funds_pending=True) as stripe_server,
        _exchange_for(db, tmp_path, stripe_server) as client,
    ):
        yield client, db, stripe_server


def test_payouts_are_paid_from_their_charges_while_funds_are_pending(
    pending_exchange: tuple[httpx.Client, Database, StripeTestServer],
) -> None:
    client, db, stripe_server = pending_exchange
    operator = create_random_org(db, Role.OPERATOR)
    start_at = datetime.now(UTC) - timedelta(seconds=1)
    served = _served(client, db)
    orders = []
    for _ in range(2):  # two entitlements: two PaymentIntents, two charges
        r = _card_order(client, served.buyer, served.dataset_id, "pm_card_visa", 1)
        assert r.status_code == 201, r.text
        orders.append(r.json())
        _released_job(client, served)
        ent = orders[-1]["entitlement_id"]
        r = client.post(f"/v1/entitlements/{ent}/close", headers=served.buyer.headers)
        assert r.status_code == 200, r.text
    due = (
        PRICE
        + breakdown(PRICE, fee_bps=FEE_BPS, surcharge=_card_surcharge()).surcharge_minor
    )
    assert stripe_server.balance("eur") == 0  # captured, still pending
    assert stripe_server.pending_balance("eur") == 2 * due

    r = client.put(
        f"/v1/organisations/{served.provider.org_id}/payout-account",
        headers=operator.headers,
    )
    account = r.json()["stripe_account_id"]
    stripe_server.complete_onboarding(account)
    period = {
        "period_start": start_at.isoformat(),
        "period_end": datetime.now(UTC).isoformat(),
    }
    run = client.post("/v1/settlements", json=period, headers=operator.headers).json()
    (payout,) = run["payouts"]
    net = PRICE - PRICE * FEE_BPS // 10_000
    assert payout["status"] == "paid" and payout["amount_minor"] == 2 * net, run
    transfers = stripe_server.objects("transfer")
    charges = {_pi(stripe_server, o["id"])["latest_charge"] for o in orders}
    assert {t["source_transaction"] for t in transfers} == charges
    assert [t["amount"] for t in transfers] == [net, net]
    assert all(t["id"] in payout["reference"] for t in transfers)
    assert stripe_server.balance("eur") == 0
    assert stripe_server.pending_balance("eur") == 2 * (due - net)
    # Settling the period again transfers nothing more.
    client.post("/v1/settlements", json=period, headers=operator.headers)
    assert len(stripe_server.objects("transfer")) == 2
    stripe_server.release_pending()
    assert stripe_server.balance("eur") == 2 * (due - net)  # the fees and surcharges
    r = client.get("/v1/journal/check", headers=operator.headers)
    assert r.json()["ok"] is True, r.text


def test_a_payout_interrupted_between_transfers_pays_only_the_rest(
    pending_exchange: tuple[httpx.Client, Database, StripeTestServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from marketplace.payments import PaymentUnavailable
    from marketplace.payments.stripe_provider import StripeProvider

    client, db, stripe_server = pending_exchange
    operator = create_random_org(db, Role.OPERATOR)
    start_at = datetime.now(UTC) - timedelta(seconds=1)
    served = _served(client, db)
    for _ in range(2):
        r = _card_order(client, served.buyer, served.dataset_id, "pm_card_visa", 1)
        _released_job(client, served)
        ent = r.json()["entitlement_id"]
        client.post(f"/v1/entitlements/{ent}/close", headers=served.buyer.headers)
    r = client.put(
        f"/v1/organisations/{served.provider.org_id}/payout-account",
        headers=operator.headers,
    )
    stripe_server.complete_onboarding(r.json()["stripe_account_id"])

    # The first transfer is made, then Stripe becomes unreachable.
    real = StripeProvider.transfer
    calls: list[int] = []

    def flaky(self: StripeProvider, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise PaymentUnavailable("Stripe timed out", provider="stripe")
        return real(self, **kwargs)

    monkeypatch.setattr(StripeProvider, "transfer", flaky)
    period = {
        "period_start": start_at.isoformat(),
        "period_end": datetime.now(UTC).isoformat(),
    }
    run = client.post("/v1/settlements", json=period, headers=operator.headers).json()
    (payout,) = run["payouts"]
    assert payout["status"] == "failed" and run["status"] == "paying", run
    assert len(stripe_server.objects("transfer")) == 1

    # Days later: Stripe no longer remembers the key; the re-run pays only the
    # transfer that was not made, and the journal stays balanced.
    stripe_server.forget_idempotency_keys()
    run = client.post("/v1/settlements", json=period, headers=operator.headers).json()
    (payout,) = run["payouts"]
    assert payout["status"] == "paid" and run["status"] == "completed", run
    transfers = stripe_server.objects("transfer")
    net = PRICE - PRICE * FEE_BPS // 10_000
    assert [t["amount"] for t in transfers] == [net, net]
    assert len({t["source_transaction"] for t in transfers}) == 2
    assert payout["reference"].startswith("2 transfers: ")
    r = client.get("/v1/journal/check", headers=operator.headers)
    assert r.json()["ok"] is True, r.text
    payable = client.get("/v1/balances", headers=served.provider.headers).json()
    assert sum(a["balance_minor"] for a in payable if a["kind"] == "payable") == 0

"""Paying onchain through the API on both engines, against the embedded EVM.

A buyer registers its wallet (proven by the wallet's signature), deposits settlement
tokens into the payment escrow from that wallet, buys an entitlement that holds its
amount on chain, runs computations (a failed one costs nothing), closes it: the
metered total is captured on chain and the rest released. Settlement credits the
provider's wallet in the escrow, the provider withdraws it itself, and the exchange's
fee is what stays captured. Retries never hold, capture or pay twice.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_account import Account
from fastapi.testclient import TestClient
from sqlmodel import select

from ledger import EscrowHold, Ledger, LocalSigner, PaymentEscrow, TransactionSender
from ledger import SettlementToken as Token
from marketplace.db import Database
from marketplace.models import Order, Role
from marketplace.payments.onchain import sign_wallet_proof
from marketplace.services.journal import check_journal
from tests.factories import Party, assert_problem, create_random_org
from tests.job_factories import (
    MONTHLY_SUBSCRIPTION,
    Served,
    aggregate_job,
    claim,
    create_served_dataset,
    post_result,
    start,
    success,
)

PRICE = 2500  # the factory dataset's price per query
FEE = PRICE // 10


def _ledger(client: TestClient) -> Ledger:
    ledger: Ledger = client.app.state.chain.get().ledger  # type: ignore[attr-defined]
    assert ledger.escrow is not None and ledger.payment_token is not None
    return ledger


class Wallet:
    """A wallet the test holds the key of (as a buyer's or provider's software)."""

    def __init__(self, ledger: Ledger) -> None:
        self.key = "0x" + secrets.token_hex(32)
        self.address = Account.from_key(self.key).address
        sender = TransactionSender(ledger.registry.w3, LocalSigner.from_key(self.key))
        assert ledger.escrow is not None and ledger.payment_token is not None
        self.escrow = PaymentEscrow(ledger.registry.w3, ledger.escrow.address, sender)
        self.token = Token(ledger.registry.w3, ledger.payment_token.address, sender)
        assert ledger.sender is not None
        ledger.sender.send_ether(self.address, 10**18)  # gas money

    def register(self, client: TestClient, party: Party) -> Any:
        address, signature = sign_wallet_proof(self.key, party.org_id)
        return client.put(
            f"/v1/organisations/{party.org_id}/wallet",
            json={"address": address, "signature": signature},
            headers=party.headers,
        )

    def deposit(self, ledger: Ledger, amount: int) -> None:
        assert ledger.payment_token is not None and ledger.escrow is not None
        ledger.payment_token.submit_mint(self.address, amount)  # the fiat on-ramp
        self.token.submit_approve(ledger.escrow.address, amount)
        self.escrow.submit_deposit(self.address, amount)


def buy_onchain(
    client: TestClient, served: Served, queries: int, key: str, periods: int = 1
) -> Any:
    """Quote ``queries`` (and ``periods``) paid onchain and order it under ``key``."""
    r = client.post(
        "/v1/quotes",
        json={
            "dataset_id": served.dataset_id,
            "queries": queries,
            "periods": periods,
            "payment_method": "onchain",
        },
        headers=served.buyer.headers,
    )
    assert r.status_code == 201, r.text
    return client.post(
        "/v1/orders",
        json={"quote_id": r.json()["id"]},
        headers={**served.buyer.headers, "Idempotency-Key": key},
    )


def _run_job(client: TestClient, served: Served, ent_id: str, ok: bool = True) -> None:
    r = client.post(
        "/v1/jobs",
        json={**aggregate_job(served.dataset_id), "entitlement_id": ent_id},
        headers=served.buyer.headers,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert claim(client, served.node).json()["job_id"] == created["id"]
    assert start(client, served.node, created["id"]).status_code == 200
    body = (
        success(created, served)
        if ok
        else {"outcome": "failed", "reason_code": "node_error", "reason": "crashed"}
    )
    assert post_result(client, served.node, created["id"], body).status_code == 200


def _hold_of(db: Database, order_id: str, escrow: PaymentEscrow) -> EscrowHold:
    with db.session() as session:
        order = session.get(Order, uuid.UUID(order_id))
        assert order is not None and order.payment_reference is not None
        return escrow.get_hold(bytes.fromhex(order.payment_reference[2:]))


def test_a_wallet_is_registered_only_with_its_own_signature(
    client: TestClient, db: Database
) -> None:
    ledger = _ledger(client)
    buyer = create_random_org(db, Role.BUYER)
    other = create_random_org(db, Role.BUYER)
    wallet = Wallet(ledger)
    # Signed by another key: refused, naming the field.
    address, _ = sign_wallet_proof(wallet.key, buyer.org_id)
    _, forged = sign_wallet_proof("0x" + secrets.token_hex(32), buyer.org_id)
    r = client.put(
        f"/v1/organisations/{buyer.org_id}/wallet",
        json={"address": address, "signature": forged},
        headers=buyer.headers,
    )
    assert assert_problem(r, 422, "validation_failed")["errors"][0]["field"] == (
        "signature"
    )
    # A proof for another organisation does not register it here.
    _, theirs = sign_wallet_proof(wallet.key, other.org_id)
    r = client.put(
        f"/v1/organisations/{buyer.org_id}/wallet",
        json={"address": address, "signature": theirs},
        headers=buyer.headers,
    )
    assert_problem(r, 422, "validation_failed")
    r = client.put(
        f"/v1/organisations/{buyer.org_id}/wallet",
        json={"address": "0x12", "signature": theirs},
        headers=buyer.headers,
    )
    assert assert_problem(r, 422, "validation_failed")["errors"][0]["field"] == (
        "address"
    )
    r = wallet.register(client, buyer)
    assert r.status_code == 200, r.text
    assert r.json()["address"] == wallet.address
    assert r.json()["escrow_balance_minor"] == 0 and r.json()["currency"] == "EUR"
    assert wallet.register(client, buyer).status_code == 200  # again: no change
    # Another organisation cannot take it, nor register one for the buyer.
    address, signature = sign_wallet_proof(wallet.key, other.org_id)
    r = client.put(
        f"/v1/organisations/{other.org_id}/wallet",
        json={"address": address, "signature": signature},
        headers=other.headers,
    )
    assert assert_problem(r, 422, "validation_failed")["errors"][0]["field"] == (
        "address"
    )
    r = client.get(f"/v1/organisations/{buyer.org_id}/wallet", headers=other.headers)
    assert_problem(r, 404, "not_found")


def test_an_order_needs_a_wallet_and_its_deposit(
    client: TestClient, db: Database
) -> None:
    ledger = _ledger(client)
    served = create_served_dataset(client, db, funded=False)
    r = buy_onchain(client, served, 4, secrets.token_hex(8))
    assert assert_problem(r, 422, "validation_failed")["errors"][0]["field"] == (
        "payment_method"
    )
    wallet = Wallet(ledger)
    assert wallet.register(client, served.buyer).status_code == 200
    wallet.deposit(ledger, 3 * PRICE)
    r = buy_onchain(client, served, 4, secrets.token_hex(8))
    body = assert_problem(r, 402, "payment_declined")
    assert (
        f"has {3 * PRICE}" in body["detail"]
        and f"deposit {PRICE} more" in (body["detail"])
    )
    assert ledger.escrow is not None
    assert ledger.escrow.get_balance_of(wallet.address) == 3 * PRICE  # nothing held


def test_onchain_purchase_capture_settlement_and_withdrawal(
    client: TestClient, db: Database
) -> None:
    ledger = _ledger(client)
    escrow = ledger.escrow
    assert escrow is not None
    operator = create_random_org(db, Role.OPERATOR)
    served = create_served_dataset(client, db, funded=False)
    buyer_wallet = Wallet(ledger)
    assert buyer_wallet.register(client, served.buyer).status_code == 200
    deposit = 10 * PRICE
    buyer_wallet.deposit(ledger, deposit)
    held_before = escrow.get_held()
    captured_before = escrow.get_captured()

    key = secrets.token_hex(8)
    r = buy_onchain(client, served, 5, key)
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "active" and order["payment_method"] == "onchain"
    hold = _hold_of(db, order["id"], escrow)
    assert (hold.state, hold.amount, hold.buyer) == (
        EscrowHold.HELD,
        order["amount_minor"],
        buyer_wallet.address,
    )
    assert escrow.get_balance_of(buyer_wallet.address) == deposit - hold.amount
    # The same key again: the same order, no second hold.
    again = client.post(
        "/v1/orders",
        json={"quote_id": order["quote_id"]},
        headers={**served.buyer.headers, "Idempotency-Key": key},
    )
    assert again.status_code in (200, 201) and again.json()["id"] == order["id"]
    assert escrow.get_held() == held_before + hold.amount

    ent_id = order["entitlement_id"]
    _run_job(client, served, ent_id)
    _run_job(client, served, ent_id)
    _run_job(client, served, ent_id, ok=False)  # costs nothing
    r = client.post(f"/v1/entitlements/{ent_id}/close", headers=served.buyer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["amount_captured_minor"] == 2 * PRICE
    assert r.json()["finalized_at"] is not None
    hold = _hold_of(db, order["id"], escrow)
    assert (hold.state, hold.captured) == (EscrowHold.CAPTURED, 2 * PRICE)
    assert escrow.get_balance_of(buyer_wallet.address) == deposit - 2 * PRICE
    assert escrow.get_captured() == captured_before + 2 * PRICE

    # Settlement: blocked until the provider has a wallet, then paid on chain.
    period = {
        "period_start": "2020-01-01T00:00:00Z",
        "period_end": "2030-01-01T00:00:00Z",
    }
    r = client.post("/v1/settlements", json=period, headers=operator.headers)
    assert_problem(r, 422, "validation_failed")  # the period is not over
    period = _past_period()
    run = client.post("/v1/settlements", json=period, headers=operator.headers).json()
    (payout,) = [
        p for p in run["payouts"] if p["payee_id"] == str(served.provider.org_id)
    ]
    assert payout["method"] == "onchain" and payout["status"] == "blocked"
    provider_wallet = Wallet(ledger)
    assert provider_wallet.register(client, served.provider).status_code == 200
    run = client.post("/v1/settlements", json=period, headers=operator.headers).json()
    (payout,) = [
        p for p in run["payouts"] if p["payee_id"] == str(served.provider.org_id)
    ]
    assert payout["status"] == "paid" and run["status"] == "completed"
    assert payout["amount_minor"] == 2 * (PRICE - FEE)
    assert escrow.get_balance_of(provider_wallet.address) == 2 * (PRICE - FEE)
    assert escrow.get_captured() == captured_before + 2 * FEE  # the exchange's fee
    # Settling again pays nothing twice.
    client.post("/v1/settlements", json=period, headers=operator.headers)
    assert escrow.get_balance_of(provider_wallet.address) == 2 * (PRICE - FEE)

    # The provider pulls its money; the buyer pulls what it did not spend.
    provider_wallet.escrow.submit_withdraw()
    assert provider_wallet.token.get_balance_of(provider_wallet.address) == 2 * (
        PRICE - FEE
    )
    buyer_wallet.escrow.submit_withdraw()
    assert buyer_wallet.token.get_balance_of(buyer_wallet.address) == (
        deposit - 2 * PRICE
    )
    r = client.get(
        f"/v1/organisations/{served.buyer.org_id}/wallet", headers=served.buyer.headers
    )
    assert r.json()["escrow_balance_minor"] == 0

    with db.session() as session:
        found = check_journal(session)
        assert found.ok, found
        orders = session.exec(select(Order).where(Order.id == uuid.UUID(order["id"])))
        assert len(list(orders)) == 1


def _past_period() -> dict[str, str]:
    end = datetime.now(UTC)
    return {
        "period_start": (end - timedelta(hours=1)).isoformat(),
        "period_end": end.isoformat(),
    }


def test_an_onchain_subscription_runs_its_periods_and_refunds_what_it_did_not_use(
    client: TestClient, db: Database
) -> None:
    # Three months: longer than an escrow hold lives (VEILX_ONCHAIN_HOLD_DAYS, 30).
    ledger = _ledger(client)
    escrow = ledger.escrow
    assert escrow is not None
    operator = create_random_org(db, Role.OPERATOR)
    start_at = datetime.now(UTC) - timedelta(seconds=1)
    served = create_served_dataset(client, db, funded=False, plan=MONTHLY_SUBSCRIPTION)
    wallet = Wallet(ledger)
    assert wallet.register(client, served.buyer).status_code == 200
    deposit = 100_000
    wallet.deposit(ledger, deposit)
    r = buy_onchain(client, served, 4, secrets.token_hex(8), periods=3)
    assert r.status_code == 201, r.text
    order = r.json()
    gross = 3 * 10_000 + 1 * 3_000  # 3 included computations, 1 overage
    assert order["amount_minor"] == gross  # onchain: no surcharge
    # Captured whole at once from the escrow: the hold would expire in 32 days.
    hold = _hold_of(db, order["id"], escrow)
    assert (hold.state, hold.captured, hold.refunded) == (EscrowHold.CAPTURED, gross, 0)
    ent_id = order["entitlement_id"]
    ent = client.get(f"/v1/entitlements/{ent_id}", headers=served.buyer.headers).json()
    expires = datetime.fromisoformat(ent["expires_at"])
    assert expires - datetime.now(UTC) > timedelta(days=89)
    assert ent["amount_captured_minor"] == 30_000  # the periods, prepaid

    # A failed computation costs nothing; then the three included ones and one
    # overage.
    _run_job(client, served, ent_id, ok=False)
    for _ in range(4):
        _run_job(client, served, ent_id)
    r = client.post(f"/v1/entitlements/{ent_id}/close", headers=served.buyer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["amount_captured_minor"] == 33_000
    hold = _hold_of(db, order["id"], escrow)
    assert hold.refunded == 0  # everything bought was used
    assert escrow.get_balance_of(wallet.address) == deposit - gross

    # A second subscription, closed at once: its periods are kept, the overage
    # room it did not use goes back to the wallet's escrow balance — once.
    r = buy_onchain(client, served, 5, secrets.token_hex(8), periods=2)
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["amount_minor"] == 2 * 10_000 + 3 * 3_000
    before = escrow.get_balance_of(wallet.address)
    close = f"/v1/entitlements/{second['entitlement_id']}/close"
    r = client.post(close, headers=served.buyer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["amount_captured_minor"] == 20_000
    hold = _hold_of(db, second["id"], escrow)
    assert (hold.captured, hold.refunded) == (29_000, 9_000)
    assert escrow.get_balance_of(wallet.address) == before + 9_000
    # Closing again refunds nothing more.
    assert_problem(
        client.post(close, headers=served.buyer.headers), 409, "entitlement_ended"
    )
    assert escrow.get_balance_of(wallet.address) == before + 9_000

    # Settlement pays the provider its share of what the escrow kept.
    run = client.post(
        "/v1/settlements",
        json={
            "period_start": start_at.isoformat(),
            "period_end": datetime.now(UTC).isoformat(),
        },
        headers=operator.headers,
    ).json()
    assert run["gross_minor"] == 33_000 + 20_000
    with db.session() as session:
        found = check_journal(session)
        assert found.ok, found

"""Trading through the API on both engines: quotes, the DP menu, orders paid with
credits, entitlements that jobs reserve against and are charged from only on
release, revocation, closing, settlement with statements, and the journal's
invariants after each step.
"""

from __future__ import annotations

import csv
import io
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from marketplace.db import Database
from marketplace.errors import PaymentRequired
from marketplace.models import (
    Charge,
    Entitlement,
    JournalEntry,
    Order,
    Quote,
    Role,
)
from marketplace.queue import MemoryQueue
from marketplace.services.identity import IdentityService
from marketplace.services.jobs import JobService
from marketplace.services.journal import check_journal
from mpc_engine.protocol import JobCreate
from tests.factories import (
    Party,
    assert_problem,
    buy_entitlement,
    create_random_listed_dataset,
    create_random_org,
    dataset_body,
    top_up,
)
from tests.job_factories import (
    Served,
    aggregate_job,
    attest,
    claim,
    create_random_node,
    create_served_dataset,
    policy_with,
    post_result,
    start,
    success,
)

PRICE = 2500  # the factory dataset's price per query


def _served(client: TestClient, db: Database, **plan: Any) -> Served:
    """A served dataset (optionally with another plan) and a buyer without credits."""
    return create_served_dataset(client, db, funded=False, plan=plan or None)


def _quote(client: TestClient, buyer: Party, dataset_id: str, **body: Any) -> Any:
    return client.post(
        "/v1/quotes", json={"dataset_id": dataset_id, **body}, headers=buyer.headers
    )


def _order(
    client: TestClient, buyer: Party, quote_id: str, key: str | None = None, **body: Any
) -> Any:
    return client.post(
        "/v1/orders",
        json={"quote_id": quote_id, **body},
        headers={**buyer.headers, "Idempotency-Key": key or secrets.token_hex(8)},
    )


def _balance(client: TestClient, party: Party, kind: str) -> int:
    r = client.get("/v1/balances", headers=party.headers)
    assert r.status_code == 200, r.text
    return sum(a["balance_minor"] for a in r.json() if a["kind"] == kind)


def _entitlement(client: TestClient, party: Party, ent_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/entitlements/{ent_id}", headers=party.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _journal_ok(db: Database) -> None:
    with db.session() as session:
        found = check_journal(session)
    assert found.ok, found
    assert found.entries > 0


def _run_job(
    client: TestClient, served: Served, *, outcome: str = "succeeded", **job: Any
) -> dict[str, Any]:
    r = client.post(
        "/v1/jobs",
        json=aggregate_job(served.dataset_id, **job),
        headers=served.buyer.headers,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert claim(client, served.node).json()["job_id"] == created["id"]
    assert start(client, served.node, created["id"]).status_code == 200
    if outcome == "succeeded":
        body = success(created, served)
    else:
        body = {"outcome": outcome, "reason_code": "node_error", "reason": "crashed"}
    r = post_result(client, served.node, created["id"], body)
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- quotes ----------------------------------------------------------------------------


def test_a_quote_prices_the_terms(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    r = _quote(client, served.buyer, served.dataset_id, queries=4)
    assert r.status_code == 201, r.text
    quote = r.json()
    assert quote["plan_kind"] == "fixed_per_query"
    assert quote["currency"] == "EUR"
    assert quote["gross_minor"] == 4 * PRICE
    assert quote["surcharge_minor"] == 0  # credits carry no surcharge
    assert quote["amount_minor"] == 4 * PRICE
    assert quote["exchange_fee_minor"] == 4 * PRICE // 10  # 1,000 bps
    assert datetime.fromisoformat(quote["expires_at"]) > datetime.now(UTC)


def test_quote_errors_name_the_field(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    r = _quote(client, served.buyer, served.dataset_id, queries=0)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "queries"
    r = _quote(client, served.buyer, served.dataset_id, payment_method="stripe")
    body = assert_problem(r, 422, "validation_failed")
    assert body["errors"][0]["field"] == "payment_method"
    r = _quote(client, served.buyer, served.dataset_id, periods=3)
    assert assert_problem(r, 422, "validation_failed")["errors"][0]["field"] == (
        "periods"
    )
    r = _quote(client, served.buyer, str(uuid.uuid4()))
    assert_problem(r, 404, "not_found")
    # Providers do not buy.
    r = _quote(client, served.provider, served.dataset_id)
    assert_problem(r, 403, "role_required")


def test_the_dp_menu_trades_error_for_price(client: TestClient, db: Database) -> None:
    served = _served(
        client,
        db,
        kind="privacy_priced",
        currency="EUR",
        base_price_minor=100,
        price_per_epsilon_minor=1000,
    )
    r = client.post(
        "/v1/quotes/menu",
        json={
            "dataset_id": served.dataset_id,
            "sensitivity": 1.0,
            "epsilons": [2.0, 0.1, 0.5, 1.0],
        },
        headers=served.buyer.headers,
    )
    assert r.status_code == 201, r.text
    menu = r.json()
    eps = [o["epsilon"] for o in menu["options"]]
    assert eps == [0.1, 0.5, 1.0, 2.0]
    prices = [o["quote"]["gross_minor"] for o in menu["options"]]
    errors = [o["expected_abs_error"] for o in menu["options"]]
    assert prices == [100 + 100, 100 + 500, 100 + 1000, 100 + 2000]
    assert errors == sorted(errors, reverse=True)
    assert errors[0] == pytest.approx(1 / 0.1)  # Laplace: E|X| = Δ/ε
    assert menu["options"][0]["ci95_half_width"] == pytest.approx(10 * 2.995732, 1e-5)
    # Each option is a quote the buyer can order.
    quote_id = menu["options"][1]["quote"]["id"]
    top_up(db, served.buyer, 10_000)
    r = _order(client, served.buyer, quote_id)
    assert r.status_code == 201, r.text
    ent = _entitlement(client, served.buyer, r.json()["entitlement_id"])
    assert ent["epsilon_budget"] == 0.5
    r = client.post(
        "/v1/quotes/menu",
        json={"dataset_id": served.dataset_id},
        headers=served.buyer.headers,
    )
    assert assert_problem(r, 422, "validation_failed")["errors"][0]["field"] == (
        "sensitivity"
    )


# -- orders ----------------------------------------------------------------------------


def test_an_order_holds_credits_and_grants_an_entitlement(
    client: TestClient, db: Database
) -> None:
    served = _served(client, db)
    quote = _quote(client, served.buyer, served.dataset_id, queries=3).json()
    assert top_up(db, served.buyer, 10_000) == 10_000
    r = _order(client, served.buyer, quote["id"])
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "active"
    assert order["amount_minor"] == 3 * PRICE
    assert _balance(client, served.buyer, "buyer_funds") == 10_000 - 3 * PRICE
    ent = _entitlement(client, served.buyer, order["entitlement_id"])
    assert ent["status"] == "active"
    assert ent["quota_queries"] == 3
    assert ent["amount_authorized_minor"] == 3 * PRICE
    assert ent["queries_used"] == ent["queries_reserved"] == 0
    # The provider sees the entitlement sold on its dataset; a stranger does not.
    assert _entitlement(client, served.provider, order["entitlement_id"])
    stranger = create_random_org(db, Role.BUYER)
    r = client.get(
        f"/v1/entitlements/{order['entitlement_id']}", headers=stranger.headers
    )
    assert_problem(r, 404, "not_found")
    _journal_ok(db)


def test_not_enough_credits_writes_nothing(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    quote = _quote(client, served.buyer, served.dataset_id, queries=3).json()
    top_up(db, served.buyer, 3 * PRICE - 1)
    r = _order(client, served.buyer, quote["id"])
    body = assert_problem(r, 402, "insufficient_funds")
    assert f"funds:{served.buyer.org_id}:EUR" in body["detail"]
    assert _balance(client, served.buyer, "buyer_funds") == 3 * PRICE - 1
    with db.session() as session:
        assert (
            session.exec(
                select(Order).where(Order.quote_id == uuid.UUID(quote["id"]))
            ).all()
            == []
        )
        assert (
            session.exec(
                select(Entitlement).where(Entitlement.buyer_id == served.buyer.org_id)
            ).all()
            == []
        )
    # Topped up, the same quote can be bought.
    top_up(db, served.buyer, 1)
    assert _order(client, served.buyer, quote["id"]).status_code == 201
    assert _balance(client, served.buyer, "buyer_funds") == 0


def test_an_order_is_idempotent_by_key(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    q1 = _quote(client, served.buyer, served.dataset_id).json()
    q2 = _quote(client, served.buyer, served.dataset_id).json()
    top_up(db, served.buyer, 10 * PRICE)
    first = _order(client, served.buyer, q1["id"], key="buy-1")
    again = _order(client, served.buyer, q1["id"], key="buy-1")
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert _balance(client, served.buyer, "buyer_funds") == 9 * PRICE
    r = _order(client, served.buyer, q2["id"], key="buy-1")
    assert r.status_code in (409, 422), r.text
    # The same quote under another key is a second purchase of one quote: refused.
    r = _order(client, served.buyer, q1["id"], key="buy-2")
    assert_problem(r, 409, "quote_ordered")
    assert _balance(client, served.buyer, "buyer_funds") == 9 * PRICE
    # The service itself (behind the middleware) answers a replay the same way.
    with db.session() as session:
        orders = session.exec(
            select(Order).where(Order.buyer_id == served.buyer.org_id)
        ).all()
    assert len(orders) == 1


def test_an_expired_quote_cannot_be_ordered(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    quote = _quote(client, served.buyer, served.dataset_id).json()
    with db.session() as session:
        session.execute(
            update(Quote)
            .where(col(Quote.id) == uuid.UUID(quote["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()
    top_up(db, served.buyer, PRICE)
    assert_problem(_order(client, served.buyer, quote["id"]), 409, "quote_expired")
    other = create_random_org(db, Role.BUYER)
    assert_problem(_order(client, other, quote["id"]), 404, "not_found")


# -- jobs against entitlements ---------------------------------------------------------


def test_jobs_are_charged_only_when_released(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    order = buy_entitlement(client, db, served.buyer, served.dataset_id, queries=3)
    ent_id = order["entitlement_id"]

    done = _run_job(client, served)
    assert done["state"] == "succeeded"
    ent = _entitlement(client, served.buyer, ent_id)
    assert (ent["queries_used"], ent["queries_reserved"]) == (1, 0)
    assert ent["amount_captured_minor"] == PRICE

    failed = _run_job(client, served, outcome="failed")
    assert failed["state"] == "failed"
    ent = _entitlement(client, served.buyer, ent_id)
    assert (ent["queries_used"], ent["queries_reserved"]) == (1, 0)
    assert ent["amount_captured_minor"] == PRICE  # a failed job costs nothing

    r = client.get(f"/v1/entitlements/{ent_id}/charges", headers=served.buyer.headers)
    charges = {c["job_id"]: c for c in r.json()}
    assert charges[done["id"]]["status"] == "captured"
    assert charges[done["id"]]["amount_minor"] == PRICE
    assert charges[done["id"]]["rows_scanned"] == 1000
    assert charges[failed["id"]]["status"] == "voided"
    assert charges[failed["id"]]["amount_minor"] == 0

    # The provider's payable is the price less the exchange's 10% fee.
    assert _balance(client, served.provider, "payable") == PRICE - PRICE // 10
    _journal_ok(db)


def test_a_job_needs_an_entitlement_with_room(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    body = assert_problem(r, 402, "entitlement_required")
    assert "POST /v1/quotes" in body["detail"]
    order = buy_entitlement(client, db, served.buyer, served.dataset_id, queries=1)
    assert (
        client.post(
            "/v1/jobs",
            json=aggregate_job(served.dataset_id),
            headers=served.buyer.headers,
        ).status_code
        == 201
    )
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    body = assert_problem(r, 402, "entitlement_exhausted")
    assert "quota of 1" in body["detail"]
    # Naming an entitlement that is not yours on this dataset: 404.
    other = _served(client, db)
    r = client.post(
        "/v1/jobs",
        json=aggregate_job(other.dataset_id, entitlement_id=order["entitlement_id"]),
        headers=other.buyer.headers,
    )
    assert_problem(r, 404, "not_found")


def test_the_epsilon_budget_bounds_dp_jobs(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    buy_entitlement(client, db, served.buyer, served.dataset_id, epsilon=0.5)
    dp = {
        "statistics": ["count"],
        "group_by": ["region"],
        "mode": "dp",
        "dp": {"epsilon": 0.3},
    }
    assert (
        client.post(
            "/v1/jobs",
            json=aggregate_job(served.dataset_id, params=dp),
            headers=served.buyer.headers,
        ).status_code
        == 201
    )
    r = client.post(
        "/v1/jobs",
        json=aggregate_job(served.dataset_id, params=dp),
        headers=served.buyer.headers,
    )
    body = assert_problem(r, 402, "entitlement_exhausted")
    assert "ε=0.3" in body["detail"] and "ε=0.2" in body["detail"]


def test_concurrent_jobs_never_overdraw(client: TestClient, db: Database) -> None:
    """Eight of the buyer's requests at once against a quota of three: three win."""
    served = _served(client, db)
    buy_entitlement(client, db, served.buyer, served.dataset_id, queries=3)
    with db.session() as session:
        caller = IdentityService(session).authenticate(served.buyer.key)

    def submit(_: int) -> str:
        with db.session() as session:
            try:
                JobService(session, MemoryQueue()).create(
                    caller, JobCreate.model_validate(aggregate_job(served.dataset_id))
                )
            except PaymentRequired as exc:
                return exc.code
            return "created"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(submit, range(8)))
    assert outcomes.count("created") == 3, outcomes
    assert outcomes.count("entitlement_exhausted") == 5, outcomes
    with db.session() as session:
        ent = session.exec(
            select(Entitlement).where(Entitlement.buyer_id == served.buyer.org_id)
        ).one()
        assert ent.queries_reserved == 3
        assert ent.amount_reserved_minor == 3 * PRICE
        assert (
            len(
                session.exec(
                    select(Charge).where(Charge.entitlement_id == ent.id)
                ).all()
            )
            == 3
        )


# -- the end of an entitlement ---------------------------------------------------------


def test_revocation_needs_the_provider_or_operator(
    client: TestClient, db: Database
) -> None:
    served = _served(client, db)
    order = buy_entitlement(client, db, served.buyer, served.dataset_id, queries=4)
    ent_id = order["entitlement_id"]
    _run_job(client, served)
    url = f"/v1/entitlements/{ent_id}/revoke"
    r = client.post(
        url, json={"reason": "terms breached"}, headers=served.buyer.headers
    )
    assert_problem(r, 403, "role_required")
    other_provider = create_random_org(db, Role.PROVIDER)
    r = client.post(url, json={"reason": "not mine"}, headers=other_provider.headers)
    assert_problem(r, 404, "not_found")
    r = client.post(url, json={"reason": "x"}, headers=served.provider.headers)
    assert r.status_code == 422  # the reason is too short to say anything
    r = client.post(
        url, json={"reason": "terms breached"}, headers=served.provider.headers
    )
    assert r.status_code == 200, r.text
    ent = r.json()
    assert ent["status"] == "revoked" and ent["revoke_reason"] == "terms breached"
    assert ent["finalized_at"] is not None  # nothing running: the hold is released
    # The unused three queries went back to the buyer's credits.
    assert _balance(client, served.buyer, "buyer_funds") == 3 * PRICE
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    assert_problem(r, 402, "entitlement_required")
    r = client.post(
        url, json={"reason": "terms breached"}, headers=served.provider.headers
    )
    assert_problem(r, 409, "entitlement_ended")
    _journal_ok(db)


def test_closing_waits_for_running_jobs(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    order = buy_entitlement(client, db, served.buyer, served.dataset_id, queries=4)
    ent_id = order["entitlement_id"]
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    job = r.json()
    assert claim(client, served.node).json()["job_id"] == job["id"]
    assert start(client, served.node, job["id"]).status_code == 200
    r = client.post(f"/v1/entitlements/{ent_id}/close", headers=served.buyer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "closed"
    assert r.json()["finalized_at"] is None  # a job still holds a reservation
    assert _balance(client, served.buyer, "buyer_funds") == 0
    # The running job finishes and is charged; the sweep then releases the rest.
    assert (
        post_result(client, served.node, job["id"], success(job, served)).status_code
        == 200
    )
    from marketplace.worker import sweep

    report = sweep(db, MemoryQueue())
    assert report.entitlements_finalized == 1
    ent = _entitlement(client, served.buyer, ent_id)
    assert ent["finalized_at"] is not None and ent["amount_captured_minor"] == PRICE
    assert _balance(client, served.buyer, "buyer_funds") == 3 * PRICE
    _journal_ok(db)


def test_the_sweep_voids_timed_out_jobs(client: TestClient, db: Database) -> None:
    served = _served(client, db)
    order = buy_entitlement(client, db, served.buyer, served.dataset_id, queries=2)
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    assert r.status_code == 201
    from marketplace.worker import sweep

    report = sweep(db, MemoryQueue(), now=datetime.now(UTC) + timedelta(days=2))
    assert report.not_picked_up == 1 and report.charges_voided == 1
    ent = _entitlement(client, served.buyer, order["entitlement_id"])
    assert ent["queries_reserved"] == 0 and ent["amount_reserved_minor"] == 0
    assert ent["amount_captured_minor"] == 0


# -- settlement ------------------------------------------------------------------------


def test_settlement_pays_providers_and_issues_statements(
    client: TestClient, db: Database
) -> None:
    operator = create_random_org(db, Role.OPERATOR)
    regulator = create_random_org(db, Role.REGULATOR)
    start_at = datetime.now(UTC) - timedelta(seconds=1)
    served = _served(client, db)
    order = buy_entitlement(client, db, served.buyer, served.dataset_id, queries=5)
    jobs = [_run_job(client, served) for _ in range(3)]
    _run_job(client, served, outcome="failed")
    end_at = datetime.now(UTC)
    period = {"period_start": start_at.isoformat(), "period_end": end_at.isoformat()}

    r = client.post("/v1/settlements", json=period, headers=served.provider.headers)
    assert_problem(r, 403, "role_required")
    r = client.post("/v1/settlements", json=period, headers=operator.headers)
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "completed"
    assert run["charges"] == 3
    assert run["gross_minor"] == 3 * PRICE
    assert run["fee_minor"] == 3 * (PRICE // 10)
    (payout,) = [
        p for p in run["payouts"] if p["payee_id"] == str(served.provider.org_id)
    ]
    assert payout["amount_minor"] == 3 * (PRICE - PRICE // 10)
    assert payout["status"] == "paid" and payout["method"] == "credits"
    assert _balance(client, served.provider, "payable") == 0

    # Running the period again changes nothing.
    again = client.post("/v1/settlements", json=period, headers=operator.headers)
    assert again.json()["id"] == run["id"]
    assert again.json()["payout_minor"] == run["payout_minor"]

    url = f"/v1/settlements/{run['id']}/statements/{served.provider.org_id}"
    statement = client.get(url, headers=served.provider.headers).json()
    assert statement["payout_minor"] == payout["amount_minor"]
    assert sorted(line["job_id"] for line in statement["lines"]) == sorted(
        j["id"] for j in jobs
    )
    assert all(line["share_bps"] == 10_000 for line in statement["lines"])
    r = client.get(url, params={"format": "csv"}, headers=regulator.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][0] == "captured_at" and rows[-1][0] == "total"
    assert int(rows[-1][-1]) == payout["amount_minor"]
    assert len(rows) == 2 + 3
    # Another organisation's statement is not there for a provider.
    r = client.get(url, headers=create_random_org(db, Role.PROVIDER).headers)
    assert_problem(r, 404, "not_found")
    # Future periods cannot be settled.
    r = client.post(
        "/v1/settlements",
        json={
            "period_start": end_at.isoformat(),
            "period_end": (end_at + timedelta(days=1)).isoformat(),
        },
        headers=operator.headers,
    )
    assert assert_problem(r, 422, "validation_failed")["errors"][0]["field"] == (
        "period_end"
    )
    r = client.get("/v1/journal/check", headers=regulator.headers)
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
    with db.session() as session:
        refs = [
            e.reference
            for e in session.exec(select(JournalEntry)).all()
            if e.reference.startswith("payout:")
        ]
    assert len(refs) == len(set(refs)) >= 1
    assert order["entitlement_id"]


def test_top_up_is_for_the_operator_and_exactly_once(
    client: TestClient, db: Database
) -> None:
    operator = create_random_org(db, Role.OPERATOR)
    buyer = create_random_org(db, Role.BUYER)
    url = f"/v1/organisations/{buyer.org_id}/credits"
    body = {"amount_minor": 5000, "currency": "EUR", "reference": "wire-1"}
    assert_problem(
        client.post(url, json=body, headers=buyer.headers), 403, "role_required"
    )
    r = client.post(url, json=body, headers=operator.headers)
    assert r.status_code == 200 and r.json()["balance_minor"] == 5000
    r = client.post(url, json=body, headers=operator.headers)
    assert r.json()["balance_minor"] == 5000  # the same wire is recorded once
    r = client.post(url, json={**body, "amount_minor": 0}, headers=operator.headers)
    assert r.status_code == 422
    assert _balance(client, buyer, "buyer_funds") == 5000


def test_co_owners_are_paid_their_share(client: TestClient, db: Database) -> None:
    operator = create_random_org(db, Role.OPERATOR)
    provider = create_random_org(db, Role.PROVIDER)
    partner = create_random_org(db, Role.PROVIDER)
    start_at = datetime.now(UTC) - timedelta(seconds=1)
    r = client.post(
        "/v1/datasets",
        json=dataset_body(
            co_owners=[{"organisation_id": str(provider.org_id), "bps": 100}]
        ),
        headers=provider.headers,
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "co_owners.0.organisation_id"
    r = client.post(
        "/v1/datasets",
        json=dataset_body(
            co_owners=[{"organisation_id": str(partner.org_id), "bps": 10_000}]
        ),
        headers=provider.headers,
    )
    assert r.status_code == 422, r.text
    dataset = create_random_listed_dataset(
        client,
        provider,
        policy=policy_with(),
        co_owners=[{"organisation_id": str(partner.org_id), "bps": 3_333}],
    )
    assert dataset["revenue_shares"] == [
        {"organisation_id": str(provider.org_id), "bps": 6_667},
        {"organisation_id": str(partner.org_id), "bps": 3_333},
    ]
    node = create_random_node(client, provider)
    assert attest(client, node, dataset).status_code == 201
    served = Served(provider, node, dataset, create_random_org(db, Role.BUYER))
    buy_entitlement(client, db, served.buyer, served.dataset_id, queries=2)
    _run_job(client, served)
    net = PRICE - PRICE // 10  # 2,250
    partner_part = net * 3_333 // 10_000  # 749 (floored, as the contract does)
    assert _balance(client, partner, "payable") == partner_part
    assert _balance(client, provider, "payable") == net - partner_part
    r = client.post(
        "/v1/settlements",
        json={
            "period_start": start_at.isoformat(),
            "period_end": datetime.now(UTC).isoformat(),
        },
        headers=operator.headers,
    )
    assert r.status_code == 201, r.text
    paid = {p["payee_id"]: p["amount_minor"] for p in r.json()["payouts"]}
    assert paid == {
        str(provider.org_id): net - partner_part,
        str(partner.org_id): partner_part,
    }
    url = f"/v1/settlements/{r.json()['id']}/statements/{partner.org_id}"
    statement = client.get(url, headers=partner.headers).json()
    assert [line["share_bps"] for line in statement["lines"]] == [3_333]
    assert statement["payout_minor"] == partner_part
    _journal_ok(db)


def test_a_subscription_is_prepaid_and_charges_overage(
    client: TestClient, db: Database
) -> None:
    served = _served(
        client,
        db,
        kind="subscription",
        currency="EUR",
        price_per_period_minor=10_000,
        period="month",
        queries_per_period=2,
        overage_per_query_minor=900,
    )
    r = _quote(client, served.buyer, served.dataset_id, queries=5, periods=2)
    assert r.status_code == 201, r.text
    quote = r.json()
    assert quote["gross_minor"] == 2 * 10_000 + 900  # one query beyond 2 × 2
    top_up(db, served.buyer, quote["amount_minor"])
    order = _order(client, served.buyer, quote["id"]).json()
    ent_id = order["entitlement_id"]
    ent = _entitlement(client, served.buyer, ent_id)
    assert ent["amount_captured_minor"] == 20_000  # the periods, paid up front
    for _ in range(4):
        _run_job(client, served)
    assert _entitlement(client, served.buyer, ent_id)["amount_captured_minor"] == 20_000
    _run_job(client, served)
    ent = _entitlement(client, served.buyer, ent_id)
    assert ent["amount_captured_minor"] == 20_900 and ent["queries_used"] == 5
    r = client.get(f"/v1/entitlements/{ent_id}/charges", headers=served.buyer.headers)
    kinds = sorted((c["kind"], c["amount_minor"]) for c in r.json())
    assert kinds == [("job", 0)] * 4 + [("job", 900), ("prepaid", 20_000)]
    # A sixth would pass the quota bought: refused before it runs.
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    assert_problem(r, 402, "entitlement_exhausted")
    _journal_ok(db)


def test_concurrent_orders_buy_once(client: TestClient, db: Database) -> None:
    """The same quote ordered eight times at once, under four keys: one purchase."""
    served = _served(client, db)
    quote = _quote(client, served.buyer, served.dataset_id, queries=2).json()
    top_up(db, served.buyer, 10 * PRICE)
    with db.session() as session:
        caller = IdentityService(session).authenticate(served.buyer.key)

    def buy(i: int) -> str:
        from marketplace.errors import Conflict
        from marketplace.models import OrderCreate
        from marketplace.services.trading import TradingConfig, TradingService

        with db.session() as session:
            service = TradingService(session, TradingConfig(), {"credits": _credits()})
            try:
                order = service.order(
                    caller, OrderCreate(quote_id=uuid.UUID(quote["id"])), f"k{i % 4}"
                )
            except Conflict as exc:
                return exc.code
            return str(order.id)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(buy, range(8)))
    ids = {o for o in outcomes if o != "quote_ordered"}
    assert len(ids) == 1, outcomes
    assert _balance(client, served.buyer, "buyer_funds") == 8 * PRICE
    _journal_ok(db)


def _credits() -> Any:
    from marketplace.payments import CreditsProvider

    return CreditsProvider()


def test_a_settlement_period_needs_offsets(client: TestClient, db: Database) -> None:
    operator = create_random_org(db, Role.OPERATOR)
    r = client.post(
        "/v1/settlements",
        json={"period_start": "2026-01-01T00:00:00", "period_end": "2026-01-02T00:00"},
        headers=operator.headers,
    )
    body = assert_problem(r, 422, "validation_failed")
    assert {e["field"] for e in body["errors"]} == {"period_start", "period_end"}

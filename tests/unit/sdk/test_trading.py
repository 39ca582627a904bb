"""The SDK's trading namespaces against the real exchange in-process: quote, menu,
order with credits (replayed by key), entitlements and charges, a job charged to
a named entitlement, settlement and the CSV statement.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from marketplace.api import create_app
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.models import Role
from sdk import Client
from sdk.errors import APIError, InputError
from tests.conftest import make_settings
from tests.factories import create_random_org, top_up
from tests.job_factories import (
    COUNT_BY_REGION,
    Served,
    claim,
    create_served_dataset,
    post_result,
    start,
    success,
)

PRICE = 2500


@pytest.fixture
def app_client(sqlite_only_db: Database, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(
        make_settings(tmp_path), db=sqlite_only_db, kv=MemoryStore(), migrate=False
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _sdk(app_client: TestClient, key: str) -> Client:
    return Client(key, base_url=str(app_client.base_url), http_client=app_client)


def test_buying_and_using_an_entitlement(
    app_client: TestClient, sqlite_only_db: Database
) -> None:
    db = sqlite_only_db
    served: Served = create_served_dataset(app_client, db, funded=False)
    buyer = _sdk(app_client, served.buyer.key)
    start_at = datetime.now(UTC) - timedelta(seconds=1)

    quote = buyer.quotes.create(served.dataset_id, queries=2)
    assert quote.gross_minor == 2 * PRICE and quote.exchange_fee_minor == 500
    with pytest.raises(APIError) as poor:
        buyer.orders.create(quote.id)
    assert poor.value.http_status == 402 and poor.value.code == "insufficient_funds"

    top_up(db, served.buyer, 10 * PRICE)
    order = buyer.orders.create(quote.id, idempotency_key="buy-once")
    again = buyer.orders.create(quote.id, idempotency_key="buy-once")
    assert again.id == order.id and order.status == "active"
    assert order.entitlement_id is not None
    funds = [b for b in buyer.balances.list() if b.kind == "buyer_funds"]
    assert [b.balance_minor for b in funds] == [8 * PRICE]

    job = buyer.jobs.create(
        served.dataset_id,
        kind="aggregate",
        purpose="research",
        params=COUNT_BY_REGION,
        entitlement_id=order.entitlement_id,
    )
    assert claim(app_client, served.node).json()["job_id"] == str(job.id)
    assert start(app_client, served.node, str(job.id)).status_code == 200
    body = success(
        app_client.get(f"/v1/jobs/{job.id}", headers=served.buyer.headers).json(),
        served,
    )
    assert post_result(app_client, served.node, str(job.id), body).status_code == 200

    ent = buyer.entitlements.get(order.entitlement_id)
    assert (ent.queries_used, ent.amount_captured_minor) == (1, PRICE)
    (charge,) = buyer.entitlements.charges(ent.id)
    assert charge.job_id == job.id and charge.status == "captured"
    assert [e.id for e in buyer.entitlements.list(served.dataset_id)] == [ent.id]
    closed = buyer.entitlements.close(ent.id)
    assert closed.status == "closed" and closed.finalized_at is not None

    operator = _sdk(app_client, create_random_org(db, Role.OPERATOR).key)
    with pytest.raises(InputError) as naive:
        operator.settlements.run(datetime(2026, 1, 1), datetime(2026, 1, 2))
    assert naive.value.field == "period_start"
    run = operator.settlements.run(start_at, datetime.now(UTC))
    assert run.charges == 1 and run.payouts[0].amount_minor == PRICE - PRICE // 10
    provider = _sdk(app_client, served.provider.key)
    statement = provider.settlements.statement(run.id, served.provider.org_id)
    assert statement.payout_minor == run.payouts[0].amount_minor
    rows = list(
        csv.reader(
            io.StringIO(
                provider.settlements.statement_csv(run.id, served.provider.org_id)
            )
        )
    )
    assert rows[0][0] == "captured_at" and rows[-1][-1] == str(statement.payout_minor)


def test_the_menu_through_the_sdk(
    app_client: TestClient, sqlite_only_db: Database
) -> None:
    served = create_served_dataset(
        app_client,
        sqlite_only_db,
        funded=False,
        plan={
            "kind": "privacy_priced",
            "currency": "EUR",
            "base_price_minor": 100,
            "price_per_epsilon_minor": 1000,
            "exponent": 0.5,
        },
    )
    buyer = _sdk(app_client, served.buyer.key)
    menu = buyer.quotes.menu(served.dataset_id, sensitivity=2.0, epsilons=[1, 0.25, 4])
    assert [o.epsilon for o in menu.options] == [0.25, 1.0, 4.0]
    assert [o.quote.gross_minor for o in menu.options] == [600, 1100, 2100]
    assert [o.expected_abs_error for o in menu.options] == [8.0, 2.0, 0.5]
    with pytest.raises(InputError) as empty:
        buyer.quotes.menu(served.dataset_id, sensitivity=1.0, epsilons=[])
    assert empty.value.field == "epsilons"

"""A crash between the card capture and its journal entry is reconciled on restart.

A buyer pays by card through the official Stripe SDK against the project's
Stripe-compatible test server, runs a job that is released (and charged), and
closes the entitlement. A separate process then finalises the entitlement and is
killed (``os._exit``, no clean-up) either just before it asks Stripe to capture or
just after Stripe captured but before the journal entry is written. A fresh
sweep must then finish the job exactly once: the PaymentIntent captured once for
the metered amount plus the card surcharge, one ``finalize`` entry in the
journal, the platform's cash equal to what Stripe received, and every journal
invariant intact. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from marketplace.api import create_app
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.models import Entitlement, JournalEntry
from marketplace.payments.stripe_provider import StripeProvider
from marketplace.queue import MemoryQueue
from marketplace.services.journal import Journal, cash_account, check_journal
from marketplace.services.trading import TradingConfig
from marketplace.worker import sweep
from tests.conftest import make_settings
from tests.job_factories import (
    Served,
    aggregate_job,
    claim,
    create_served_dataset,
    post_result,
    start,
    success,
)
from tests.stripe_server import StripeTestServer

pytestmark = pytest.mark.integration

PRICE = 2500

CHILD = textwrap.dedent(
    """
    import os, sys, uuid
    from marketplace.db import Database
    from marketplace.payments.stripe_provider import StripeProvider
    from marketplace.services.trading import Billing, TradingConfig

    point = os.environ["CRASH_AT"]

    def hook(where, ent):
        if where == point:
            sys.stdout.flush()
            os._exit(9)

    db = Database.from_url(os.environ["DB_URL"])
    provider = StripeProvider(
        os.environ["STRIPE_KEY"],
        webhook_secret=os.environ["STRIPE_WHSEC"],
        api_base=os.environ["STRIPE_URL"],
        max_network_retries=0,
    )
    with db.session() as session:
        billing = Billing(
            session, TradingConfig(), {"stripe": provider}, hook=hook
        )
        billing.finalize(uuid.UUID(os.environ["ENTITLEMENT"]))
    print("finished without crashing")
    """
)


@pytest.fixture
def stripe_server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as server:
        yield server


def _provider(server: StripeTestServer) -> StripeProvider:
    return StripeProvider(
        server.api_key,
        webhook_secret=server.webhook_secret,
        api_base=server.url,
        max_network_retries=0,
    )


def _card_entitlement(
    client: TestClient, db: Database, served: Served
) -> tuple[str, str]:
    """Quote and buy 3 computations by card; run one; close; return (ent, PI)."""
    r = client.post(
        "/v1/quotes",
        json={
            "dataset_id": served.dataset_id,
            "queries": 3,
            "payment_method": "stripe",
        },
        headers=served.buyer.headers,
    )
    assert r.status_code == 201, r.text
    quote = r.json()
    assert quote["surcharge_minor"] > 0
    r = client.post(
        "/v1/orders",
        json={"quote_id": quote["id"], "payment_method_token": "pm_card_visa"},
        headers={**served.buyer.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "active", order
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    job = r.json()
    assert claim(client, served.node).json()["job_id"] == job["id"]
    assert start(client, served.node, job["id"]).status_code == 200
    r = post_result(client, served.node, job["id"], success(job, served))
    assert r.status_code == 200, r.text
    # End it without finalising here: the child process finalises.
    with db.session() as session:
        session.execute(
            update(Entitlement)
            .where(col(Entitlement.id) == uuid.UUID(order["entitlement_id"]))
            .values(status="closed")
        )
        session.commit()
    with db.session() as session:
        from marketplace.models import Order

        payment = session.get(Order, uuid.UUID(order["id"]))
        assert payment is not None and payment.payment_reference
        return order["entitlement_id"], payment.payment_reference


@pytest.mark.parametrize("crash_at", ["before_provider", "after_provider"])
def test_a_killed_capture_is_reconciled_once(
    db: Database,
    tmp_path: Path,
    stripe_server: StripeTestServer,
    crash_at: str,
) -> None:
    provider = _provider(stripe_server)
    settings = make_settings(tmp_path)
    app = create_app(
        settings,
        db=db,
        kv=MemoryStore(),
        migrate=False,
        payments={"stripe": provider, **_credits()},
    )
    with TestClient(app) as client:
        served = _served(client, db)
        ent_id, pi_id = _card_entitlement(client, db, served)

    env = {
        **os.environ,
        "CRASH_AT": crash_at,
        "DB_URL": db.engine.url.render_as_string(hide_password=False),
        "STRIPE_KEY": stripe_server.api_key,
        "STRIPE_WHSEC": stripe_server.webhook_secret,
        "STRIPE_URL": stripe_server.url,
        "ENTITLEMENT": ent_id,
    }
    child = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", CHILD],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 9, child.stdout + child.stderr
    captured_by_child = _pi(stripe_server, pi_id)["status"] == "succeeded"
    assert captured_by_child is (crash_at == "after_provider")
    with db.session() as session:
        assert _finalize_entries(session, ent_id) == 0

    # Restart: the sweep finishes the half-done finalisation, once.
    for _ in range(2):
        sweep(db, MemoryQueue(), payments={"stripe": provider}, trading=TradingConfig())
    pi = _pi(stripe_server, pi_id)
    expected = PRICE - (-TradingConfig().card_surcharge.bps * PRICE // 10_000) + 25
    assert pi["status"] == "succeeded"
    assert pi["amount_received"] == _surcharged(PRICE)
    assert expected >= pi["amount_received"] >= PRICE
    charges = [
        c for c in stripe_server.objects("charge") if c["payment_intent"] == pi_id
    ]
    assert len(charges) == 1 and charges[0]["amount_captured"] == _surcharged(PRICE)
    captures = [
        r
        for r in stripe_server.requests
        if r.path.endswith(f"{pi_id}/capture") and not r.replayed
    ]
    assert len(captures) == 1
    with db.session() as session:
        assert _finalize_entries(session, ent_id) == 1
        ent = session.get(Entitlement, uuid.UUID(ent_id))
        assert ent is not None and ent.finalized_at is not None
        cash = Journal(session).balance(cash_account("stripe", "EUR"))
        assert cash >= pi["amount_received"]
        found = check_journal(session)
        assert found.ok, found


def _surcharged(amount: int) -> int:
    from pricing import breakdown

    return (
        amount
        + breakdown(
            amount, fee_bps=1000, surcharge=TradingConfig().card_surcharge
        ).surcharge_minor
    )


def _credits() -> dict[str, Any]:
    from marketplace.payments import CreditsProvider

    return {"credits": CreditsProvider()}


def _served(client: Any, db: Database) -> Served:
    return create_served_dataset(client, db, funded=False)


def _pi(server: StripeTestServer, pi_id: str) -> dict[str, Any]:
    import stripe

    client = stripe.StripeClient(server.api_key, base_addresses={"api": server.url})
    return dict(client.v1.payment_intents.retrieve(pi_id).to_dict())


def _finalize_entries(session: Any, ent_id: str) -> int:
    return len(
        session.exec(
            select(JournalEntry).where(JournalEntry.reference == f"finalize:{ent_id}")
        ).all()
    )

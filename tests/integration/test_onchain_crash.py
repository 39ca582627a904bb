"""A crash between the onchain capture and its journal entry is reconciled on restart.

A buyer pays from its wallet through the embedded chain's payment escrow, runs a
job that is released (and charged), and closes the entitlement. A separate
process then opens the same embedded chain, finalises the entitlement and is
killed (``os._exit``) just before it captures on chain, or just after the capture
was mined but before the journal entry is written. A fresh sweep (with the chain
reopened) must finish exactly once: the hold captured for the metered amount, the
rest back in the buyer's escrow balance, one ``finalize`` entry, the journal's
``cash:onchain`` equal to what the escrow captured. Runs on SQLite and PostgreSQL.

The same for a subscription, captured whole when bought: the crash falls around
the refund of what it did not use, which must reach the wallet exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col, select

from ledger import EscrowHold
from marketplace.api import create_app
from marketplace.chain import LazyChain
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.models import Entitlement, JournalEntry, Order
from marketplace.payments import make_providers
from marketplace.queue import MemoryQueue
from marketplace.services.journal import Journal, cash_account, check_journal
from marketplace.services.trading import TradingConfig
from marketplace.worker import sweep
from tests.api.test_onchain_payments import PRICE, Wallet, buy_onchain
from tests.conftest import make_settings
from tests.job_factories import (
    MONTHLY_SUBSCRIPTION,
    aggregate_job,
    claim,
    create_served_dataset,
    post_result,
    start,
    success,
)

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    """
    import os, sys, uuid
    from pathlib import Path
    from marketplace.chain import LazyChain
    from marketplace.config import Settings
    from marketplace.db import Database
    from marketplace.payments import make_providers
    from marketplace.services.trading import Billing, TradingConfig

    point = os.environ["CRASH_AT"]

    def hook(where, ent):
        if where == point:
            sys.stdout.flush()
            os._exit(9)

    settings = Settings(
        environment="test",
        secret_key=os.environ["SECRET"],
        data_dir=Path(os.environ["DATA_DIR"]),
    )
    db = Database.from_url(os.environ["DB_URL"])
    chain = LazyChain(settings)
    with db.session() as session:
        billing = Billing(
            session, TradingConfig(), make_providers(settings, chain), hook=hook
        )
        billing.finalize(uuid.UUID(os.environ["ENTITLEMENT"]))
    print("finished without crashing")
    """
)


DEPOSIT = 10 * PRICE


@pytest.mark.parametrize("plan", ["per_query", "subscription"])
@pytest.mark.parametrize("crash_at", ["before_provider", "after_provider"])
def test_a_killed_onchain_capture_is_reconciled_once(
    db: Database, tmp_path: Path, crash_at: str, plan: str
) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, db=db, kv=MemoryStore(), migrate=False)
    subscription = plan == "subscription"
    # per query: one released job of PRICE is captured at the end; subscription:
    # 16,000 (the month and 2 overage) captured when bought, one included job
    # used, so 10,000 kept and 6,000 refunded at the end
    kept, refund = (10_000, 6_000) if subscription else (PRICE, 0)
    with TestClient(app) as client:
        ledger = client.app.state.chain.get().ledger  # type: ignore[attr-defined]
        plan_body = MONTHLY_SUBSCRIPTION if subscription else None
        served = create_served_dataset(client, db, funded=False, plan=plan_body)
        wallet = Wallet(ledger)
        assert wallet.register(client, served.buyer).status_code == 200
        wallet.deposit(ledger, DEPOSIT)
        r = buy_onchain(client, served, 3, uuid.uuid4().hex)
        assert r.status_code == 201, r.text
        order = r.json()
        r = client.post(
            "/v1/jobs",
            json={
                **aggregate_job(served.dataset_id),
                "entitlement_id": order["entitlement_id"],
            },
            headers=served.buyer.headers,
        )
        job = r.json()
        assert claim(client, served.node).json()["job_id"] == job["id"]
        assert start(client, served.node, job["id"]).status_code == 200
        r = post_result(client, served.node, job["id"], success(job, served))
        assert r.status_code == 200, r.text
    # The app is stopped (its chain closed); end the entitlement for the child.
    ent_id = order["entitlement_id"]
    with db.session() as session:
        session.execute(
            update(Entitlement)
            .where(col(Entitlement.id) == uuid.UUID(ent_id))
            .values(status="closed")
        )
        session.commit()
        payment = session.get(Order, uuid.UUID(order["id"]))
        assert payment is not None and payment.payment_reference
        hold_id = bytes.fromhex(payment.payment_reference[2:])

    env = {
        **os.environ,
        "CRASH_AT": crash_at,
        "DB_URL": db.engine.url.render_as_string(hide_password=False),
        "DATA_DIR": str(tmp_path),
        "SECRET": str(settings.secret_key),
        "ENTITLEMENT": ent_id,
    }
    child = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", CHILD],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == 9, child.stdout + child.stderr

    chain = LazyChain(settings)
    try:
        escrow = chain.get().ledger.escrow
        assert escrow is not None
        hold = escrow.get_hold(hold_id)
        if subscription:
            assert hold.state == EscrowHold.CAPTURED
            assert hold.refunded == (refund if crash_at == "after_provider" else 0)
        else:
            assert hold.state == (
                EscrowHold.CAPTURED if crash_at == "after_provider" else EscrowHold.HELD
            )
        with db.session() as session:
            assert _finalize_entries(session, ent_id) == 0

        # Restart: the sweep finishes the half-done finalisation, once.
        payments = make_providers(settings, chain)
        for _ in range(2):
            sweep(db, MemoryQueue(), payments=payments, trading=TradingConfig())
        hold = escrow.get_hold(hold_id)
        assert (hold.state, hold.captured - hold.refunded, hold.refunded) == (
            EscrowHold.CAPTURED,
            kept,
            refund,
        )
        assert escrow.get_captured() == kept
        assert escrow.get_balance_of(wallet.address) == DEPOSIT - kept
        with db.session() as session:
            assert _finalize_entries(session, ent_id) == 1
            ent = session.get(Entitlement, uuid.UUID(ent_id))
            assert ent is not None and ent.finalized_at is not None
            assert ent.payment_captured_minor == kept  # net of the refund
            cash = Journal(session).balance(cash_account("onchain", "EUR"))
            assert cash == kept
            found = check_journal(session)
            assert found.ok, found
    finally:
        chain.close()


def _finalize_entries(session: object, ent_id: str) -> int:
    return len(
        session.exec(  # type: ignore[attr-defined]
            select(JournalEntry).where(JournalEntry.reference == f"finalize:{ent_id}")
        ).all()
    )

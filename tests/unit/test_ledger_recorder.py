"""The ledger's database side: hashes, fees and the outbox events of changes."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlmodel import col, select

from marketplace.db import Database
from marketplace.models import LedgerAsset, LedgerEvent, Role, Trade
from marketplace.services.ledger import (
    org_address,
    trade_hash,
    trade_record,
)
from pricing import fee_bps
from tests.factories import create_random_listed_dataset, create_random_org
from tests.job_factories import (
    claim,
    create_job,
    create_served_dataset,
    post_result,
    start,
    success,
)


def test_org_address_is_deterministic_checksummed_and_distinct() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert org_address(a) == org_address(a)
    assert org_address(a) != org_address(b)
    assert org_address(a).startswith("0x") and len(org_address(a)) == 42
    assert org_address(a) != org_address(a).lower()  # EIP-55 mixed case


def _events(db: Database, kind: str) -> list[LedgerEvent]:
    with db.session() as s:
        return list(
            s.exec(
                select(LedgerEvent)
                .where(LedgerEvent.kind == kind)
                .order_by(col(LedgerEvent.id))
            ).all()
        )


def test_listing_registers_once_and_changes_update_with_versions(
    client: TestClient, db: Database
) -> None:
    owner = create_random_org(db, Role.PROVIDER)
    ds = create_random_listed_dataset(client, owner)
    registered = _events(db, "asset.register")
    assert [e.subject for e in registered] == [ds["id"]]
    payload = registered[0].payload
    assert payload["owner"] == org_address(owner.org_id)
    assert payload["policy_hash"] == ds["policy_hash"]
    assert payload["shares"] == [{"payee": payload["owner"], "bps": 10_000}]

    r = client.patch(
        f"/v1/datasets/{ds['id']}", json={"title": "A new title"}, headers=owner.headers
    )
    assert r.status_code == 200, r.text
    same = client.patch(
        f"/v1/datasets/{ds['id']}", json={"title": "A new title"}, headers=owner.headers
    )
    assert same.status_code == 200
    updates = _events(db, "asset.update")
    assert len(updates) == 1  # an unchanged hash owes the chain nothing
    assert updates[0].payload["expected_version"] == 1
    assert updates[0].payload["version"] == 2
    with db.session() as s:
        asset = s.get(LedgerAsset, uuid.UUID(ds["id"]))
        assert asset is not None and asset.version == 2
        assert asset.metadata_hash == updates[0].payload["metadata_hash"]
        assert asset.metadata_hash != payload["metadata_hash"]


def test_a_draft_owes_the_chain_nothing(client: TestClient, db: Database) -> None:
    owner = create_random_org(db, Role.PROVIDER)
    from tests.factories import dataset_body

    r = client.post("/v1/datasets", json=dataset_body(), headers=owner.headers)
    assert r.status_code == 201, r.text
    assert _events(db, "asset.register") == []


def test_a_released_job_records_its_trade_and_receipt_in_its_transaction(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = create_job(client, served)
    claim(client, served.node)
    assert start(client, served.node, job["id"]).status_code == 200
    body = success(job, served)  # one receipt: its issued_at is to the second
    r = post_result(client, served.node, job["id"], body)
    assert r.status_code == 200, r.text
    with db.session() as s:
        trades = s.exec(select(Trade)).all()
    assert len(trades) == 1
    trade = trades[0]
    assert str(trade.job_id) == job["id"]
    assert trade.amount_minor == served.dataset["reference_price_minor"]
    assert trade.fee_minor == fee_bps(trade.amount_minor, 1_000)
    assert trade.trade_hash == trade_hash(trade_record(trade))
    (event,) = _events(db, "trade.record")
    assert event.payload["trade_hash"] == trade.trade_hash
    assert event.payload["trade"] == trade_record(trade)
    (leaf,) = _events(db, "receipt.record")
    assert leaf.subject == job["id"] and len(leaf.payload["leaf"]) == 64

    # The same result posted again is the same result: nothing recorded twice.
    again = post_result(client, served.node, job["id"], body)
    assert again.status_code == 200, again.text
    assert len(_events(db, "trade.record")) == 1


def test_a_failed_job_records_nothing(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = create_job(client, served)
    claim(client, served.node)
    body = {"outcome": "failed", "reason_code": "invalid_params", "reason": "bad"}
    r = post_result(client, served.node, job["id"], body)
    assert r.status_code == 200, r.text
    assert _events(db, "trade.record") == []
    assert _events(db, "receipt.record") == []

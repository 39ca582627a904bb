"""The ledger end to end: outbox → relay → chain → proofs → the regulator's verify.

Runs on the embedded chain (persistent, in-process) and, in the integration tier,
on a real Hardhat JSON-RPC node. Tamper tests change the database behind the
exchange's back and check that verification fails on exactly that record.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update
from sqlmodel import col, select

from marketplace.api import create_app
from marketplace.chain import LazyChain
from marketplace.config import Settings
from marketplace.db import Database
from marketplace.errors import ChainUnavailable
from marketplace.kv import MemoryStore
from marketplace.models import (
    Dataset,
    Job,
    LedgerEvent,
    Trade,
    VerifyReport,
)
from marketplace.services.relay import Relay, make_relay
from marketplace.services.verify import verify_ledger
from sdk import Client, ConflictError, ReceiptVerificationError
from tests.conftest import make_settings
from tests.job_factories import (
    Served,
    claim,
    create_job,
    create_served_dataset,
    post_result,
    start,
    success,
)
from tests.ledger._hardhat import HARDHAT_KEY, deploy_fresh


@dataclass
class Exchange:
    """An app on a chain, and what the tests drive it with."""

    client: TestClient
    db: Database
    chain: LazyChain
    settings: Settings
    served: Served

    def relay(self) -> Relay:
        return make_relay(self.db, self.chain.get().ledger, self.settings)

    def verify(self) -> VerifyReport:
        with self.db.session() as s:
            return verify_ledger(s, self.chain.get().ledger)

    def release(self, n: int) -> list[str]:
        """Run ``n`` jobs to success; return their ids."""
        ids = []
        for _ in range(n):
            job = create_job(self.client, self.served)
            claim(self.client, self.served.node)
            assert start(self.client, self.served.node, job["id"]).status_code == 200
            r = post_result(
                self.client, self.served.node, job["id"], success(job, self.served)
            )
            assert r.status_code == 200, r.text
            ids.append(job["id"])
        return ids


def _hardhat_settings(tmp_path: Path, url: str) -> Settings:
    deploy_fresh(url, "hardhat-test", tmp_path / "deployments")
    return make_settings(
        tmp_path,
        chain_url=url,
        chain_network="hardhat-test",
        chain_key=HARDHAT_KEY,
    )


@pytest.fixture(
    params=["embedded", pytest.param("hardhat", marks=pytest.mark.integration)]
)
def exchange(
    request: pytest.FixtureRequest,
    sqlite_only_db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Exchange]:
    """The exchange app, its chain (embedded or Hardhat) and a served dataset."""
    if request.param == "hardhat":
        url = request.getfixturevalue("hardhat_url")
        monkeypatch.setenv("VEILX_DEPLOYMENTS_DIR", str(tmp_path / "deployments"))
        settings = _hardhat_settings(tmp_path, url)
    else:
        settings = make_settings(tmp_path)
    chain = LazyChain(settings)
    app = create_app(
        settings, db=sqlite_only_db, kv=MemoryStore(), migrate=False, chain=chain
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        served = create_served_dataset(client, sqlite_only_db)
        yield Exchange(client, sqlite_only_db, chain, settings, served)
    chain.close()


def _sdk(x: Exchange, key: str, key_dir: Path) -> Client:
    return Client(
        key, base_url=str(x.client.base_url), http_client=x.client, key_dir=key_dir
    )


def test_relay_records_everything_and_verify_matches(exchange: Exchange) -> None:
    jobs = exchange.release(3)
    before = exchange.verify()
    assert before.ok and before.pending_events > 0 and before.trades == 0

    done = exchange.relay().flush()
    assert done.failed == 0 and done.batches_formed == 2  # one of trades, one receipts
    report = exchange.verify()
    assert report.ok, report.mismatches
    assert (report.assets, report.trades, report.receipts) == (1, 3, 3)
    assert report.pending_events == 0
    assert report.summary == "all 1 assets, 3 trades, 3 receipts match the chain"

    # Every record is on chain exactly once.
    ledger = exchange.chain.get().ledger
    batches = ledger.settlement.get_trade_batches(ledger.deployment.block_number)
    assert len(batches) == 1 and len(batches[0].trade_hashes) == 3
    with exchange.db.session() as s:
        trades = s.exec(select(Trade)).all()
    assert {t.trade_hash for t in trades} == {h.hex() for h in batches[0].trade_hashes}
    assert {str(t.job_id) for t in trades} == set(jobs)
    price = exchange.served.dataset["reference_price_minor"]
    assert batches[0].amount == 3 * price
    owner = ledger.registry.get_asset(
        int.from_bytes(uuid.UUID(exchange.served.dataset_id).bytes, "big")
    )
    assert owner is not None and owner.version == 1
    net = 3 * price - batches[0].fee
    assert ledger.settlement.get_credit_of(owner.owner) == net

    # A second flush owes nothing and sends nothing.
    again = exchange.relay().flush()
    assert (again.sent, again.batches_formed) == (0, 0)


def test_receipt_proof_verified_by_the_sdk_against_the_chain(
    exchange: Exchange, tmp_path: Path
) -> None:
    (job_id,) = exchange.release(1)
    buyer = exchange.served.buyer
    r = exchange.client.get(f"/v1/receipts/{job_id}/proof", headers=buyer.headers)
    assert r.status_code == 409 and r.json()["code"] == "receipt_not_anchored"

    exchange.relay().flush()
    with _sdk(exchange, buyer.key, tmp_path) as sdk:
        proved = sdk.receipts.verify_inclusion(job_id)
        assert proved.chain_root == proved.proof.root
        assert proved.proof.count == 1 and proved.proof.proof == []

        # A stranger sees no proof of a job that is not theirs.
        other = exchange.client.get(
            f"/v1/receipts/{job_id}/proof",
            headers=exchange.served.provider.headers,
        )
        assert other.status_code == 200  # the provider of the dataset may
    nobody = exchange.client.get(
        f"/v1/receipts/{uuid.uuid4()}/proof", headers=buyer.headers
    )
    assert nobody.status_code == 404


def test_a_proof_that_does_not_match_the_chain_is_refused(
    exchange: Exchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange.release(2)
    exchange.relay().flush()
    with exchange.db.session() as s:
        job = s.exec(select(Job).where(Job.state == "succeeded")).first()
        assert job is not None
    buyer = exchange.served.buyer
    with _sdk(exchange, buyer.key, tmp_path) as sdk:
        real = sdk.receipts.proof(job.id)
        forged = real.model_copy(
            update={"root": "0x" + "11" * 32, "proof": ["0x" + "22" * 32]}
        )
        monkeypatch.setattr(type(sdk.receipts), "proof", lambda self, _: forged)
        with pytest.raises(ReceiptVerificationError) as info:
            sdk.receipts.verify_inclusion(job.id)
        assert info.value.field == "proof"


def test_embedded_chain_survives_a_restart(exchange: Exchange) -> None:
    exchange.release(2)
    exchange.relay().flush()
    exchange.chain.close()  # the embedded chain's files are closed and unlocked
    reopened = LazyChain(exchange.settings)
    try:
        with exchange.db.session() as s:
            report = verify_ledger(s, reopened.get().ledger)
        assert report.ok and report.trades == 2 and report.receipts == 2
        # and it keeps going from the old head
        exchange.release(1)
        make_relay(exchange.db, reopened.get().ledger, exchange.settings).flush()
        with exchange.db.session() as s:
            assert verify_ledger(s, reopened.get().ledger).trades == 3
    finally:
        reopened.close()


def test_an_embedded_chain_from_older_contracts_is_refused_by_name(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    chain = LazyChain(settings)
    assert chain.get().ledger.escrow is not None
    chain.close()
    path = settings.data_dir / "chain" / "deployment.json"
    body = json.loads(path.read_text())
    assert set(body["bytecode_sha256"]) >= {"PaymentEscrow", "Settlement"}
    good = path.read_text()
    body["bytecode_sha256"]["PaymentEscrow"] = "00" * 32  # deployed by an old veilx
    path.write_text(json.dumps(body))
    again = LazyChain(settings)
    try:
        with pytest.raises(ChainUnavailable, match="other builds of PaymentEscrow "):
            again.get()
    finally:
        again.close()
    # The refused chain was closed: once its deployment matches, it opens again.
    path.write_text(good)
    reopened = LazyChain(settings)
    try:
        assert reopened.get().ledger.escrow is not None
    finally:
        reopened.close()


def test_api_verify_and_status_for_the_regulator(exchange: Exchange) -> None:
    from marketplace.models import Role
    from tests.factories import create_random_org

    exchange.release(1)
    exchange.relay().flush()
    regulator = create_random_org(exchange.db, Role.REGULATOR)
    r = exchange.client.get("/v1/ledger/verify", headers=regulator.headers)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True and r.json()["trades"] == 1
    status = exchange.client.get("/v1/ledger", headers=regulator.headers).json()
    assert status["pending"] == {}
    assert status["confirmed"]["trades.batch"] == 1
    denied = exchange.client.get(
        "/v1/ledger/verify", headers=exchange.served.buyer.headers
    )
    assert denied.status_code == 403
    rpc = exchange.client.post(
        "/v1/ledger/rpc",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_sendRawTransaction",
            "params": ["0x00"],
        },
        headers=exchange.served.buyer.headers,
    )
    assert rpc.status_code == 422 and "read method" in rpc.json()["detail"]


# -- tampering: verification fails on exactly the altered record ---------------------


def _settled(exchange: Exchange, n: int = 3) -> list[Trade]:
    exchange.release(n)
    exchange.relay().flush()
    assert exchange.verify().ok
    with exchange.db.session() as s:
        return list(s.exec(select(Trade).order_by(col(Trade.created_at))).all())


def _only(report: VerifyReport) -> list[tuple[str, str, str | None]]:
    return [(m.kind, m.id, m.field) for m in report.mismatches]


def test_a_changed_amount_fails_on_that_trade(exchange: Exchange) -> None:
    trades = _settled(exchange)
    target = trades[1]
    with exchange.db.session() as s:
        s.execute(
            update(Trade)
            .where(col(Trade.id) == target.id)
            .values(amount_minor=target.amount_minor + 1)
        )
        s.commit()
    report = exchange.verify()
    assert not report.ok
    assert _only(report) == [("trade", str(target.id), "amount_minor")]
    (m,) = report.mismatches
    assert m.database == str(target.amount_minor + 1)
    assert m.chain == str(target.amount_minor)


def test_a_deleted_trade_fails_on_that_trade(exchange: Exchange) -> None:
    trades = _settled(exchange)
    target = trades[0]
    with exchange.db.session() as s:
        s.execute(delete(Trade).where(col(Trade.id) == target.id))
        s.commit()
    report = exchange.verify()
    assert _only(report) == [("trade", str(target.id), None)]
    assert "missing from the database" in report.mismatches[0].detail


def test_an_altered_receipt_fails_on_that_receipt(exchange: Exchange) -> None:
    trades = _settled(exchange)
    target = trades[2].job_id
    with exchange.db.session() as s:
        job = s.get(Job, target)
        assert job is not None and job.receipt is not None
        receipt: dict[str, Any] = dict(job.receipt)
        inner = dict(receipt["receipt"])
        inner["output_hash"] = "0" * 64
        receipt["receipt"] = inner
        s.execute(update(Job).where(col(Job.id) == target).values(receipt=receipt))
        s.commit()
    report = exchange.verify()
    assert _only(report) == [("receipt", str(target), "receipt")]


def test_a_dataset_changed_without_a_record_fails_on_that_asset(
    exchange: Exchange,
) -> None:
    _settled(exchange, 1)
    ds_id = uuid.UUID(exchange.served.dataset_id)
    with exchange.db.session() as s:
        s.execute(
            update(Dataset).where(col(Dataset.id) == ds_id).values(title="Forged")
        )
        s.commit()
    report = exchange.verify()
    assert _only(report) == [("asset", str(ds_id), "metadata_hash")]


def test_a_forged_outbox_row_does_not_hide_a_tampered_trade(exchange: Exchange) -> None:
    trades = _settled(exchange)
    target = trades[0]
    with exchange.db.session() as s:
        s.execute(update(Trade).where(col(Trade.id) == target.id).values(fee_minor=0))
        event = s.exec(
            select(LedgerEvent).where(LedgerEvent.subject == str(target.id))
        ).one()
        payload = dict(event.payload)
        payload["trade"] = dict(payload["trade"], fee_minor=0)
        s.execute(
            update(LedgerEvent)
            .where(col(LedgerEvent.id) == event.id)
            .values(payload=payload)
        )
        s.commit()
    report = exchange.verify()
    assert ("trade", str(target.id), "trade_hash") in _only(report)
    assert not report.ok


def test_proof_before_any_receipt_is_404_or_409(exchange: Exchange) -> None:
    job = create_job(exchange.client, exchange.served)
    r = exchange.client.get(
        f"/v1/receipts/{job['id']}/proof", headers=exchange.served.buyer.headers
    )
    assert r.status_code == 404 and r.json()["code"] == "no_receipt"


def test_sdk_proof_raises_conflict_until_anchored(
    exchange: Exchange, tmp_path: Path
) -> None:
    (job_id,) = exchange.release(1)
    with _sdk(exchange, exchange.served.buyer.key, tmp_path) as sdk:
        with pytest.raises(ConflictError):
            sdk.receipts.proof(job_id)


def test_a_malformed_rpc_call_is_a_json_rpc_error_not_a_crash(
    exchange: Exchange,
) -> None:
    r = exchange.client.post(
        "/v1/ledger/rpc",
        json={"jsonrpc": "2.0", "id": 7, "method": "eth_call", "params": [{"to": 5}]},
        headers=exchange.served.buyer.headers,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == 7 and ("error" in body or "result" in body)
    chain_id = exchange.client.post(
        "/v1/ledger/rpc",
        json={"jsonrpc": "2.0", "id": 8, "method": "eth_chainId", "params": []},
        headers=exchange.served.buyer.headers,
    ).json()
    assert int(chain_id["result"], 16) == exchange.chain.get().chain.chain_id


def test_settlement_payouts_are_anchored_and_verified(exchange: Exchange) -> None:
    """A run's payouts are on chain as a root; a changed payout fails on its run."""
    from datetime import UTC, datetime, timedelta

    from marketplace.models import Payout, Role
    from tests.factories import create_random_org

    start_at = datetime.now(UTC) - timedelta(minutes=5)
    exchange.release(2)
    operator = create_random_org(exchange.db, Role.OPERATOR)
    r = exchange.client.post(
        "/v1/settlements",
        json={
            "period_start": start_at.isoformat(),
            "period_end": datetime.now(UTC).isoformat(),
        },
        headers=operator.headers,
    )
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["charges"] == 2 and run["status"] == "completed"
    exchange.relay().flush()
    report = exchange.verify()
    assert report.ok, report.mismatches
    assert report.settlements == 1
    assert "1 settlement match" in report.summary
    with exchange.db.session() as s:
        payout = s.exec(select(Payout)).one()
        s.execute(
            update(Payout)
            .where(col(Payout.id) == payout.id)
            .values(amount_minor=payout.amount_minor + 100)
        )
        s.commit()
    report = exchange.verify()
    assert _only(report) == [("settlement", run["id"], "payouts")]

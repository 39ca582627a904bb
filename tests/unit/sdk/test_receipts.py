"""Receipt verification: the SDK checks the node's signature and every hash."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mpc_engine.protocol import output_hash, verify_signature
from sdk import Client, ReceiptVerificationError
from tests.unit.sdk._fake import FakeExchange

PARAMS = {
    "statistics": ["count", "mean"],
    "columns": ["income"],
    "group_by": ["region"],
}


def _finished_job(client: Client, exchange: FakeExchange) -> uuid.UUID:
    job = client.jobs.create(
        exchange.dataset_id, kind="aggregate", purpose="research", params=PARAMS
    )
    client.jobs.wait(job.id, poll_interval=0)
    return job.id


def test_an_honest_receipt_verifies(client: Client, exchange: FakeExchange) -> None:
    job_id = _finished_job(client, exchange)
    verified = client.receipts.verify(job_id)
    assert verified.node_id == exchange.node_id
    assert verified.node_public_key == exchange.node_key.public_key_hex
    assert verified.receipt.job_id == job_id
    assert verified.receipt.dataset_version_hash == exchange.content_hash
    job = client.jobs.get(job_id)
    assert verified.receipt.output_hash == output_hash(job.output, job.output_blobs)
    info = client.receipts.get(job_id)
    assert info.verified and info.receipt.signature == verified.signature
    assert verify_signature(
        exchange.node_key.public_key_hex,
        info.receipt.receipt.signed_bytes(),
        info.receipt.signature,
    )
    # The key came from the node registry, not the receipt endpoint.
    assert any(r.path == f"/v1/nodes/{exchange.node_id}" for r in exchange.requests)


@pytest.mark.parametrize(
    ("tamper", "field"),
    [
        ("signature", "signature"),
        ("foreign_key", "signature"),
        ("output", "output_hash"),
        ("params", "params_hash"),
    ],
)
def test_tampering_is_caught_and_named(tmp_path: Path, tamper: str, field: str) -> None:
    exchange = FakeExchange(tamper=tamper)
    with exchange.client(tmp_path) as client:
        job_id = _finished_job(client, exchange)
        with pytest.raises(ReceiptVerificationError) as caught:
            client.receipts.verify(job_id)
    assert caught.value.field == field
    assert caught.value.job_id == job_id
    assert str(caught.value).startswith(f"receipt of job {job_id}: {field}: ")


def test_a_receipt_for_another_job_or_node_is_refused(
    client: Client, exchange: FakeExchange
) -> None:
    first = _finished_job(client, exchange)
    second = _finished_job(client, exchange)
    # The exchange serves the first job's (validly signed) receipt for the second.
    exchange.jobs[second]["receipt"] = exchange.jobs[first]["receipt"]
    with pytest.raises(ReceiptVerificationError) as caught:
        client.receipts.verify(second)
    assert caught.value.field == "job_id"
    exchange.jobs[second]["node_id"] = str(uuid.uuid4())
    exchange.jobs[first]["node_id"] = str(uuid.uuid4())
    with pytest.raises(ReceiptVerificationError) as caught:
        client.receipts.verify(first)
    assert caught.value.field == "node_id"


def test_a_wrong_dataset_version_or_privacy_loss_is_refused(
    client: Client, exchange: FakeExchange
) -> None:
    job_id = _finished_job(client, exchange)
    exchange.jobs[job_id]["privacy_loss"] = {"epsilon": 0.5, "delta": 0.0}
    with pytest.raises(ReceiptVerificationError) as caught:
        client.receipts.verify(job_id)
    assert caught.value.field == "privacy_loss"
    exchange.jobs[job_id]["privacy_loss"] = None
    client.receipts.verify(job_id)
    exchange.content_hash = "f" * 64
    with pytest.raises(ReceiptVerificationError) as caught:
        client.receipts.verify(job_id)
    assert caught.value.field == "dataset_version_hash"


def test_only_succeeded_jobs_have_receipts(
    client: Client, exchange: FakeExchange
) -> None:
    job = client.jobs.create(
        exchange.dataset_id, kind="aggregate", purpose="research", params=PARAMS
    )
    with pytest.raises(ReceiptVerificationError) as caught:
        client.receipts.verify(job)
    assert caught.value.field == "state"
    assert "queued" in caught.value.reason

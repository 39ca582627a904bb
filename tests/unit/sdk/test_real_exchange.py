"""The SDK against the real exchange app (in-process, SQLite): the HTTP contract.

The fake exchange of the other tests follows ``docs/protocol.md``; this checks the
SDK parses and sends what the real routes do. The node's side is played with the
job factories (claim, start, post a signed result), as ``tests/api`` does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from marketplace.api import create_app
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.models import Role
from mpc_engine.protocol import JobState
from sdk import (
    AggregateResult,
    Client,
    ConflictError,
    InputError,
    InvalidRequestError,
    Keys,
    NotFoundError,
    PermissionDeniedError,
    ReceiptVerificationError,
)
from tests.conftest import make_settings
from tests.factories import create_random_listed_dataset, create_random_org
from tests.job_factories import (
    Served,
    claim,
    create_served_dataset,
    post_result,
    start,
    success,
)


@pytest.fixture
def app_client(sqlite_only_db: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The exchange app on SQLite, in-process."""
    app = create_app(
        make_settings(tmp_path), db=sqlite_only_db, kv=MemoryStore(), migrate=False
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def served(app_client: TestClient, sqlite_only_db: Database) -> Served:
    """A listed dataset served by a node, and a buyer."""
    return create_served_dataset(app_client, sqlite_only_db)


def _sdk(app_client: TestClient, key: str, key_dir: Path) -> Client:
    return Client(
        key, base_url=str(app_client.base_url), http_client=app_client, key_dir=key_dir
    )


def _run_node(app_client: TestClient, served: Served) -> None:
    """The node claims, starts and finishes the next job with a signed receipt."""
    spec = claim(app_client, served.node).json()
    job = app_client.get(
        f"/v1/jobs/{spec['job_id']}", headers=served.buyer.headers
    ).json()
    assert start(app_client, served.node, job["id"]).status_code == 200
    r = post_result(app_client, served.node, job["id"], success(job, served))
    assert r.status_code == 200, r.text


def test_a_job_from_submission_to_verified_result(
    app_client: TestClient, served: Served, tmp_path: Path
) -> None:
    with _sdk(app_client, served.buyer.key, tmp_path) as buyer:
        dataset = buyer.datasets.get(served.dataset_id)
        assert dataset.policy_hash == served.dataset["policy_hash"]
        live = dataset.live_version
        assert live is not None and live.attestation is not None
        assert live.attestation.node_id == served.node.id
        job = buyer.compute.aggregate(
            served.dataset_id,
            statistics=["count"],
            group_by=["region"],
            purpose="research",
            wait=False,
        )
        assert job.state is JobState.QUEUED and job.node_id == served.node.id
        _run_node(app_client, served)
        result = buyer.compute.result(job.id, poll_interval=0)
        assert isinstance(result, AggregateResult)
        assert [(g.key, g.count) for g in result.groups] == [
            (("BY",), 412),
            (("HE",), 388),
        ]
        assert result.receipt.node_public_key == served.node.key.public_key_hex
        assert buyer.receipts.get(job.id).verified
        page = buyer.jobs.list(state="succeeded", limit=1)
        assert [j.id for j in page] == [job.id]
        budget = buyer.datasets.budget(served.dataset_id)
        assert [b.buyer_id for b in budget.buyers] == [served.buyer.org_id]
        assert budget.buyers[0].epsilon_spent == 0.25
        node = buyer.nodes.get(served.node.id)
        assert node.public_key == served.node.key.public_key_hex
    # Every POST carried an idempotency key the real middleware accepted.


def test_a_job_naming_another_node_does_not_verify(
    app_client: TestClient, served: Served, tmp_path: Path, sqlite_only_db: Database
) -> None:
    with _sdk(app_client, served.buyer.key, tmp_path) as buyer:
        job = buyer.jobs.create(
            served.dataset_id,
            kind="aggregate",
            purpose="research",
            params={"statistics": ["count"], "group_by": ["region"]},
        )
        _run_node(app_client, served)
        buyer.receipts.verify(job.id)
        # A job that names another registered node than the receipt's signer.
        other = create_served_dataset(app_client, sqlite_only_db)
        done = buyer.jobs.get(job.id)
        forged = done.model_copy(update={"node_id": other.node.id})
        with pytest.raises(ReceiptVerificationError) as caught:
            buyer.receipts.verify(forged)
        assert caught.value.field == "node_id"


def test_errors_of_the_real_api(
    app_client: TestClient, served: Served, tmp_path: Path, sqlite_only_db: Database
) -> None:
    with _sdk(app_client, served.buyer.key, tmp_path) as buyer:
        with pytest.raises(NotFoundError) as caught:
            buyer.jobs.get(uuid.uuid4())
        assert caught.value.request_id  # the real X-Request-Id
        with pytest.raises(InvalidRequestError) as invalid:
            buyer.jobs.create(
                served.dataset_id,
                kind="encrypted_inference",
                purpose="research",
                params={"model": "risk-v1", "n_rows": 3},
                inputs={"columns": "a" * 64},
                context_id="b" * 64,
            )
        assert invalid.value.code == "kind_not_permitted"
        assert invalid.value.fields == ["kind"]
        with pytest.raises(InputError):
            buyer.jobs.create(
                served.dataset_id,
                kind="aggregate",
                purpose="research",
                params={"statistics": []},
            )
        job = buyer.jobs.create(
            served.dataset_id,
            kind="aggregate",
            purpose="research",
            params={"statistics": ["count"]},
        )
        with pytest.raises(PermissionDeniedError):
            buyer.jobs.approve(job.id)
    with _sdk(app_client, served.provider.key, tmp_path) as provider:
        with pytest.raises(ConflictError) as conflict:
            provider.jobs.approve(job.id)
        assert conflict.value.http_status == 409
    unnoded = create_random_listed_dataset(app_client, served.provider)
    with _sdk(app_client, served.buyer.key, tmp_path) as buyer:
        with pytest.raises(ConflictError) as caught:
            buyer.compute.aggregate(
                unnoded["id"], statistics=["count"], purpose="research", wait=False
            )
        assert caught.value.code == "no_node"
    stranger = create_random_org(sqlite_only_db, Role.PROVIDER)
    with _sdk(app_client, stranger.key, tmp_path) as other:
        with pytest.raises(PermissionDeniedError):
            other.keys.upload_context(Keys(tmp_path).ensure())


def test_blobs_and_contexts_upload_to_the_real_exchange(
    app_client: TestClient, served: Served, tmp_path: Path
) -> None:
    with _sdk(app_client, served.buyer.key, tmp_path) as buyer:
        ref = buyer.blobs.upload(b"\x01" * 3_000_000)  # above the middleware buffer
        assert buyer.blobs.download(ref.sha256) == b"\x01" * 3_000_000
        key = buyer.keys.ensure()
        assert buyer.keys.upload_context() == key.context_id
        assert buyer.keys.upload_context(force=True) == key.context_id

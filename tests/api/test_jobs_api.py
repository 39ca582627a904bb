"""Jobs through the API on both engines: submission, approval, dispatch, results
with real Ed25519 receipts, budgets, and the races that must not double-dispatch.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from marketplace.api import create_app
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.models import Job, Role
from marketplace.queue import JobQueue, MemoryQueue, RedisQueue
from marketplace.services.identity import IdentityService
from marketplace.services.jobs import JobService
from mpc_engine.protocol import JobSpec, SignedReceipt
from tests.conftest import make_settings
from tests.factories import (
    Party,
    assert_problem,
    buy_entitlement,
    create_random_listed_dataset,
    create_random_org,
)
from tests.job_factories import (
    AGGREGATE_OUTPUT,
    Served,
    aggregate_job,
    attest,
    budget_rows,
    claim,
    create_job,
    create_random_node,
    create_served_dataset,
    post_result,
    receipt_for,
    start,
    success,
)


def _error(body: dict[str, Any]) -> tuple[str, str]:
    (err,) = body["errors"]
    return err["field"], err["code"]


def _job(client: TestClient, party: Party, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}", headers=party.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _running(client: TestClient, served: Served) -> dict[str, Any]:
    """A job claimed and started by the node."""
    job = create_job(client, served)
    assert claim(client, served.node).json()["job_id"] == job["id"]
    r = start(client, served.node, job["id"])
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "running"
    return job


# -- the whole life --------------------------------------------------------------------


def test_full_lifecycle(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert set(job) == {
        "id",
        "dataset_id",
        "dataset_version_id",
        "content_hash",
        "policy_hash",
        "buyer_id",
        "node_id",
        "kind",
        "purpose",
        "params",
        "inputs",
        "context_id",
        "state",
        "reason_code",
        "reason",
        "approved_by",
        "created_at",
        "updated_at",
        "deadline",
        "output",
        "output_blobs",
        "privacy_loss",
        "receipt",
    }
    assert job["state"] == "queued"
    assert job["node_id"] == str(served.node.id)
    assert job["buyer_id"] == str(served.buyer.org_id)
    assert job["dataset_version_id"] == served.dataset["live_version"]["id"]
    assert job["content_hash"] == served.dataset["live_version"]["content_hash"]
    assert job["policy_hash"] == served.dataset["policy_hash"]
    assert job["receipt"] is None and job["output"] is None

    # Who sees it.
    for role in (Role.OPERATOR, Role.REGULATOR):
        _job(client, create_random_org(db, role), job["id"])
    _job(client, served.provider, job["id"])
    stranger = create_random_org(db, Role.BUYER, Role.PROVIDER)
    assert_problem(
        client.get(f"/v1/jobs/{job['id']}", headers=stranger.headers), 404, "not_found"
    )

    # The node claims it: the spec binds the version, the policy and the buyer.
    r = claim(client, served.node)
    assert r.status_code == 200, r.text
    spec = JobSpec.model_validate(r.json())
    assert str(spec.job_id) == job["id"]
    assert spec.content_hash == served.dataset["live_version"]["content_hash"]
    assert spec.policy_hash == served.dataset["policy_hash"]
    assert spec.buyer_region == "DE"
    assert spec.state.value == "dispatched"
    assert spec.params == job["params"]
    # Nothing else to claim; the dispatched job is listed for a restarted node.
    assert claim(client, served.node).status_code == 204
    r = client.get(f"/v1/nodes/{served.node.id}/jobs", headers=served.node.headers)
    assert [(j["job_id"], j["state"]) for j in r.json()] == [(job["id"], "dispatched")]
    assert_problem(
        client.get(f"/v1/jobs/{job['id']}/receipt", headers=served.buyer.headers),
        404,
        "no_receipt",
    )

    r = start(client, served.node, job["id"])
    assert r.json()["state"] == "running"
    r = client.get(
        f"/v1/nodes/{served.node.id}/jobs",
        params={"state": "running"},
        headers=served.node.headers,
    )
    assert [j["state"] for j in r.json()] == ["running"]

    body = success(job, served)
    r = post_result(client, served.node, job["id"], body)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["state"] == "succeeded"
    assert done["output"] == AGGREGATE_OUTPUT
    assert done["privacy_loss"] == {"epsilon": 0.25, "delta": 0.0}
    assert done["receipt"] == body["receipt"]
    assert _job(client, served.buyer, job["id"]) == done

    # The buyer checks the receipt against the node's published key.
    r = client.get(f"/v1/jobs/{job['id']}/receipt", headers=served.buyer.headers)
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert receipt["verified"] is True
    assert receipt["node_id"] == str(served.node.id)
    assert receipt["node_public_key"] == served.node.key.public_key_hex
    SignedReceipt.model_validate(receipt["receipt"]).verify(receipt["node_public_key"])
    assert (
        client.get(
            f"/v1/nodes/{served.node.id}/jobs", headers=served.node.headers
        ).json()
        == []
    )


def test_reposting_the_same_result_is_idempotent(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    body = success(job, served)
    first = post_result(client, served.node, job["id"], body)
    assert first.status_code == 200, first.text
    again = post_result(client, served.node, job["id"], body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    # A different result for the finished job is a conflict.
    other = success(job, served, output={"groups": [], "privacy_loss": None})
    r = post_result(client, served.node, job["id"], other)
    assert _error(assert_problem(r, 409, "result_conflict")) == (
        "outcome",
        "result_conflict",
    )
    refusal = {"outcome": "failed", "reason_code": "node_error", "reason": "oops"}
    assert_problem(
        post_result(client, served.node, job["id"], refusal), 409, "result_conflict"
    )
    assert _job(client, served.buyer, job["id"])["output"] == AGGREGATE_OUTPUT


def test_a_node_may_refuse_or_fail_a_dispatched_job(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = create_job(client, served)
    assert claim(client, served.node).status_code == 200
    # Success needs the job started first.
    r = post_result(client, served.node, job["id"], success(job, served))
    assert_problem(r, 409, "invalid_transition")
    refusal = {
        "outcome": "rejected",
        "reason_code": "budget_exhausted",
        "reason": "the buyer's ε budget is spent",
        "budget": [b.model_dump(mode="json") for b in budget_rows(served, 4)],
    }
    r = post_result(client, served.node, job["id"], refusal)
    assert r.status_code == 200, r.text
    done = r.json()
    assert (done["state"], done["reason_code"]) == ("rejected", "budget_exhausted")
    assert done["reason"] == "the buyer's ε budget is spent"
    assert done["receipt"] is None and done["privacy_loss"] is None
    # The refusal's budget report still counts.
    budget = client.get(
        f"/v1/datasets/{served.dataset_id}/budget", headers=served.provider.headers
    ).json()
    assert budget["total"]["queries"] == 4
    assert_problem(start(client, served.node, job["id"]), 409, "invalid_transition")


def test_a_refusal_releases_nothing(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    body = {
        "outcome": "failed",
        "reason_code": "node_error",
        "reason": "disk full",
        "output": {"groups": []},
    }
    r = post_result(client, served.node, job["id"], body)
    assert [
        e["field"] for e in assert_problem(r, 422, "validation_failed")["errors"]
    ] == ["output"]
    assert _job(client, served.buyer, job["id"])["state"] == "running"
    # A succeeded result carries no reason.
    body = success(job, served)
    body["reason"] = "all good"
    r = post_result(client, served.node, job["id"], body)
    assert [
        e["field"] for e in assert_problem(r, 422, "validation_failed")["errors"]
    ] == ["reason"]


def test_start_twice_and_unknown_jobs(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    assert_problem(start(client, served.node, job["id"]), 409, "invalid_transition")
    missing = str(uuid.uuid4())
    assert_problem(start(client, served.node, missing), 404, "not_found")
    assert_problem(
        post_result(client, served.node, missing, success(job, served)),
        404,
        "not_found",
    )


# -- approval --------------------------------------------------------------------------


def test_approval_queues_the_job(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db, human_approval=True)
    job = create_job(client, served)
    assert job["state"] == "awaiting_approval"
    assert claim(client, served.node).status_code == 204

    other_provider = create_random_org(db, Role.PROVIDER)
    assert_problem(
        client.post(f"/v1/jobs/{job['id']}/approve", headers=other_provider.headers),
        404,
        "not_found",
    )
    # The buyer sees the job but is not its dataset's provider.
    both = create_random_org(db, Role.BUYER, Role.PROVIDER)
    buy_entitlement(client, db, both, served.dataset_id)
    own = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=both.headers
    )
    assert own.status_code == 201, own.text
    assert_problem(
        client.post(f"/v1/jobs/{own.json()['id']}/approve", headers=both.headers),
        403,
        "not_dataset_provider",
    )

    r = client.post(
        f"/v1/jobs/{job['id']}/approve",
        json={"note": "fine for research"},
        headers=served.provider.headers,
    )
    assert r.status_code == 200, r.text
    approved = r.json()
    assert approved["state"] == "queued"
    assert approved["approved_by"].startswith("api_key:")
    assert_problem(
        client.post(f"/v1/jobs/{job['id']}/approve", headers=served.provider.headers),
        409,
        "invalid_transition",
    )
    r = claim(client, served.node)
    assert r.status_code == 200, r.text
    assert r.json()["job_id"] == job["id"]
    assert r.json()["approved_by"] == approved["approved_by"]


def test_deny_rejects_with_the_reason(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db, human_approval=True)
    job = create_job(client, served)
    r = client.post(
        f"/v1/jobs/{job['id']}/deny",
        json={"reason": ""},
        headers=served.provider.headers,
    )
    assert [
        e["field"] for e in assert_problem(r, 422, "validation_failed")["errors"]
    ] == ["reason"]
    r = client.post(
        f"/v1/jobs/{job['id']}/deny",
        json={"reason": "purpose unclear"},
        headers=served.provider.headers,
    )
    assert r.status_code == 200, r.text
    denied = r.json()
    assert (denied["state"], denied["reason_code"], denied["reason"]) == (
        "rejected",
        "denied",
        "purpose unclear",
    )
    assert_problem(
        client.post(f"/v1/jobs/{job['id']}/approve", headers=served.provider.headers),
        409,
        "invalid_transition",
    )
    assert claim(client, served.node).status_code == 204


def test_a_queued_job_cannot_be_approved_or_denied(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = create_job(client, served)
    for action, body in (("approve", None), ("deny", {"reason": "no"})):
        r = client.post(
            f"/v1/jobs/{job['id']}/{action}", json=body, headers=served.provider.headers
        )
        assert_problem(r, 409, "invalid_transition")


# -- submission checks -----------------------------------------------------------------


def test_a_dataset_without_a_node(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, provider)
    buyer = create_random_org(db, Role.BUYER)
    r = client.post(
        "/v1/jobs", json=aggregate_job(dataset["id"]), headers=buyer.headers
    )
    assert _error(assert_problem(r, 409, "no_node")) == ("dataset_id", "no_node")


def test_kind_not_permitted(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    body = {
        "dataset_id": served.dataset_id,
        "kind": "encrypted_model_eval",
        "purpose": "research",
        "params": {"model_kind": "linear", "features": ["age"], "label": "cost"},
        "inputs": {"linear": "a" * 64, "outer": "b" * 64},
        "context_id": "c" * 64,
    }
    r = client.post("/v1/jobs", json=body, headers=served.buyer.headers)
    assert _error(assert_problem(r, 422, "kind_not_permitted")) == (
        "kind",
        "kind_not_permitted",
    )


def test_inputs_and_context_must_be_the_buyers(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(
        client,
        db,
        permitted_kinds=["aggregate", "encrypted_model_eval", "psi"],
    )
    someone = create_random_org(db, Role.BUYER)
    theirs = client.post(
        "/v1/blobs",
        content=b"someone else's ciphertext",
        headers={**someone.headers, "Content-Type": "application/octet-stream"},
    ).json()["sha256"]
    mine = client.post(
        "/v1/blobs",
        content=b"my ciphertext",
        headers={**served.buyer.headers, "Content-Type": "application/octet-stream"},
    ).json()["sha256"]
    body = {
        "dataset_id": served.dataset_id,
        "kind": "encrypted_model_eval",
        "purpose": "research",
        "params": {"model_kind": "linear", "features": ["age"], "label": "cost"},
        "inputs": {"linear": mine, "outer": theirs},
        "context_id": "c" * 64,
    }
    r = client.post("/v1/jobs", json=body, headers=served.buyer.headers)
    assert _error(assert_problem(r, 422, "unknown_blob")) == (
        "inputs.outer",
        "unknown_blob",
    )
    body["inputs"] = {"linear": mine, "outer": mine}
    r = client.post("/v1/jobs", json=body, headers=served.buyer.headers)
    assert _error(assert_problem(r, 422, "unknown_context")) == (
        "context_id",
        "unknown_context",
    )
    with db.session() as session:
        assert session.exec(select(Job)).all() == []


def test_malformed_job_bodies_name_the_field(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    cases = [
        (
            aggregate_job(served.dataset_id, params={"statistics": []}),
            "params.statistics",
        ),
        (
            aggregate_job(served.dataset_id, params={"statistics": ["count"], "x": 1}),
            "params.x",
        ),
        (aggregate_job(served.dataset_id, purpose="Not A Token"), "purpose"),
        (aggregate_job(served.dataset_id, timeout_seconds=5), "timeout_seconds"),
        (aggregate_job(served.dataset_id, context_id="c" * 64), "context_id"),
        (aggregate_job(served.dataset_id, inputs={"values": "a" * 64}), "inputs"),
        (aggregate_job(served.dataset_id, kind="psi"), "kind"),
    ]
    for body, field in cases:
        r = client.post("/v1/jobs", json=body, headers=served.buyer.headers)
        errors = assert_problem(r, 422, "validation_failed")["errors"]
        assert [e["field"] for e in errors] == [field], errors
    body = {
        "dataset_id": served.dataset_id,
        "kind": "encrypted_model_eval",
        "purpose": "research",
        "params": {"model_kind": "linear", "features": ["age"], "label": "cost"},
    }
    r = client.post("/v1/jobs", json=body, headers=served.buyer.headers)
    errors = assert_problem(r, 422, "validation_failed")["errors"]
    assert [e["field"] for e in errors] == ["inputs", "context_id"]
    assert "missing linear, outer" in errors[0]["message"]


def test_unlisted_datasets_take_no_jobs(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    operator = create_random_org(db, Role.OPERATOR)
    r = client.post(
        f"/v1/datasets/{served.dataset_id}/transitions",
        json={"to": "suspended", "reason": "audit"},
        headers=operator.headers,
    )
    assert r.status_code == 200, r.text
    # Hidden from the buyer now; its provider (also a buyer) is told why.
    r = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=served.buyer.headers
    )
    assert_problem(r, 404, "not_found")
    both = create_random_org(db, Role.PROVIDER, Role.BUYER)
    ds = create_random_listed_dataset(client, both)
    node = create_random_node(client, both)
    assert attest(client, node, ds).status_code == 201
    r = client.post(
        f"/v1/datasets/{ds['id']}/transitions",
        json={"to": "delisted"},
        headers=both.headers,
    )
    assert r.status_code == 200, r.text
    r = client.post("/v1/jobs", json=aggregate_job(ds["id"]), headers=both.headers)
    assert_problem(r, 409, "dataset_not_listed")


# -- receipts --------------------------------------------------------------------------


def test_a_flipped_signature_byte_is_a_bad_receipt(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    body = success(job, served)
    sig = bytearray(bytes.fromhex(body["receipt"]["signature"]))
    sig[0] ^= 0x80
    body["receipt"]["signature"] = sig.hex()
    r = post_result(client, served.node, job["id"], body)
    assert _error(assert_problem(r, 422, "bad_receipt")) == (
        "receipt.signature",
        "bad_receipt",
    )
    assert _job(client, served.buyer, job["id"])["state"] == "running"


def test_a_receipt_field_changed_after_signing(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    for path, value in (
        (("privacy_loss", "epsilon"), 0.0),
        (("replayed",), True),
        (("issued_at",), "2020-01-01T00:00:00Z"),
    ):
        body = success(job, served)
        target = body["receipt"]["receipt"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        r = post_result(client, served.node, job["id"], body)
        assert _error(assert_problem(r, 422, "bad_receipt"))[0] == "receipt.signature"
    assert _job(client, served.buyer, job["id"])["state"] == "running"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("params_hash", "0" * 64),
        ("inputs_hash", "1" * 64),
        ("policy_hash", "2" * 64),
        ("dataset_version_hash", "3" * 64),
        ("job_id", uuid.UUID(int=7)),
        ("node_id", uuid.UUID(int=8)),
        ("dataset_id", uuid.UUID(int=9)),
        ("kind", "encrypted_inference"),
    ],
)
def test_a_signed_receipt_must_bind_this_job(
    client: TestClient, db: Database, field: str, value: Any
) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    receipt = receipt_for(job, served, **{field: value})
    r = post_result(
        client, served.node, job["id"], success(job, served, receipt=receipt)
    )
    assert _error(assert_problem(r, 422, "bad_receipt")) == (
        f"receipt.receipt.{field}",
        "bad_receipt",
    )
    assert _job(client, served.buyer, job["id"])["state"] == "running"
    # The honest receipt still goes through.
    r = post_result(client, served.node, job["id"], success(job, served))
    assert r.json()["state"] == "succeeded"


def test_a_receipt_signed_by_another_key(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    other = create_random_node(client, served.provider, "other")
    receipt = receipt_for(job, served, key=other.key)
    r = post_result(
        client, served.node, job["id"], success(job, served, receipt=receipt)
    )
    assert _error(assert_problem(r, 422, "bad_receipt"))[0] == "receipt.signature"


def test_output_hash_must_match_the_output(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    body = success(job, served)
    body["output"] = {"groups": [], "privacy_loss": None}
    r = post_result(client, served.node, job["id"], body)
    assert_problem(r, 422, "validation_failed")
    assert _job(client, served.buyer, job["id"])["state"] == "running"


def test_results_only_from_the_assigned_nodes_organisation(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    mallory = create_random_org(db, Role.PROVIDER)
    create_random_node(client, mallory)
    body = success(job, served)
    assert_problem(
        client.post(f"/v1/jobs/{job['id']}/result", json=body, headers=mallory.headers),
        404,
        "not_found",
    )
    # An organisation that sees the job (its buyer, here also a provider) but does
    # not run its node is refused outright.
    both = create_random_org(db, Role.BUYER, Role.PROVIDER)
    buy_entitlement(client, db, both, served.dataset_id)
    own = client.post(
        "/v1/jobs", json=aggregate_job(served.dataset_id), headers=both.headers
    ).json()
    assert_problem(
        client.post(f"/v1/jobs/{own['id']}/start", headers=both.headers),
        403,
        "not_assigned_node",
    )
    assert_problem(
        client.post(f"/v1/jobs/{job['id']}/start", headers=mallory.headers),
        404,
        "not_found",
    )
    assert _job(client, served.buyer, job["id"])["state"] == "running"


def test_output_blobs_must_come_from_the_node(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    octet = {"Content-Type": "application/octet-stream"}
    foreign = client.post(
        "/v1/blobs", content=b"buyer bytes", headers={**served.buyer.headers, **octet}
    ).json()["sha256"]
    output = {"encrypted": True, "groups": []}
    blobs = {"values": foreign}
    body = success(job, served, output=output, output_blobs=blobs)
    r = post_result(client, served.node, job["id"], body)
    assert _error(assert_problem(r, 422, "unknown_blob")) == (
        "output_blobs.values",
        "unknown_blob",
    )
    result_bytes = b"ciphertext of the result"
    sha = client.post(
        "/v1/blobs", content=result_bytes, headers={**served.node.headers, **octet}
    ).json()["sha256"]
    body = success(job, served, output=output, output_blobs={"values": sha})
    r = post_result(client, served.node, job["id"], body)
    assert r.status_code == 200, r.text
    assert r.json()["output_blobs"] == {"values": sha}
    # The buyer may now read the result blob; another buyer may not.
    r = client.get(f"/v1/blobs/{sha}", headers=served.buyer.headers)
    assert r.status_code == 200 and r.content == result_bytes
    other = create_random_org(db, Role.BUYER)
    assert_problem(
        client.get(f"/v1/blobs/{sha}", headers=other.headers), 404, "not_found"
    )


# -- budgets ---------------------------------------------------------------------------


def test_budget_visibility_per_role(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    r = post_result(client, served.node, job["id"], success(job, served))
    assert r.status_code == 200, r.text
    url = f"/v1/datasets/{served.dataset_id}/budget"
    operator = create_random_org(db, Role.OPERATOR)
    regulator = create_random_org(db, Role.REGULATOR)
    for party in (served.provider, operator, regulator):
        report = client.get(url, headers=party.headers).json()
        assert report["dataset_id"] == served.dataset_id
        assert report["budget_per_buyer"] == {"epsilon": 1.0, "delta": 1e-6}
        assert report["budget_per_dataset"] == {"epsilon": 10.0, "delta": 1e-5}
        assert report["total"]["buyer_id"] is None
        assert report["total"]["epsilon_spent"] == 0.25
        assert [b["buyer_id"] for b in report["buyers"]] == [str(served.buyer.org_id)]
    mine = client.get(url, headers=served.buyer.headers).json()
    assert mine["total"] is None
    assert [b["buyer_id"] for b in mine["buyers"]] == [str(served.buyer.org_id)]
    assert mine["buyers"][0]["queries"] == 1
    other = create_random_org(db, Role.BUYER)
    theirs = client.get(url, headers=other.headers).json()
    assert (theirs["total"], theirs["buyers"]) == (None, [])
    assert_problem(
        client.get(f"/v1/datasets/{uuid.uuid4()}/budget", headers=other.headers),
        404,
        "not_found",
    )


def test_an_older_budget_snapshot_does_not_overwrite(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    newer = _running(client, served)
    older = _running(client, served)
    r = post_result(
        client,
        served.node,
        newer["id"],
        success(newer, served, budget=budget_rows(served, 5)),
    )
    assert r.status_code == 200, r.text
    r = post_result(
        client,
        served.node,
        older["id"],
        success(older, served, budget=budget_rows(served, 3)),
    )
    assert r.status_code == 200, r.text
    report = client.get(
        f"/v1/datasets/{served.dataset_id}/budget", headers=served.provider.headers
    ).json()
    assert report["total"]["queries"] == 5
    assert report["buyers"][0]["epsilon_spent"] == 1.25


def test_budget_rows_must_be_about_the_job(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    job = _running(client, served)
    rows = [b.model_dump(mode="json") for b in budget_rows(served)]
    cases = [
        (0, "dataset_id", str(uuid.uuid4()), "budget.0.dataset_id"),
        (0, "buyer_id", str(uuid.uuid4()), "budget.0.buyer_id"),
        (0, "buyer_id", None, "budget.1"),
    ]
    for index, key, value, field in cases:
        body = success(job, served)
        body["budget"] = [dict(r) for r in rows]
        body["budget"][index][key] = value
        r = post_result(client, served.node, job["id"], body)
        assert _error(assert_problem(r, 422, "validation_failed"))[0] == field
    assert _job(client, served.buyer, job["id"])["state"] == "running"


# -- listing ---------------------------------------------------------------------------


def test_list_jobs_pages_and_filters(client: TestClient, db: Database) -> None:
    served = create_served_dataset(client, db)
    created = [create_job(client, served)["id"] for _ in range(5)]
    assert claim(client, served.node).json()["job_id"] == created[0]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = client.get("/v1/jobs", params=params, headers=served.buyer.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1]
    r = client.get(
        "/v1/jobs", params={"state": "dispatched"}, headers=served.provider.headers
    )
    assert [j["id"] for j in r.json()["items"]] == [created[0]]
    r = client.get(
        "/v1/jobs",
        params={"state": ["queued", "dispatched"], "dataset_id": served.dataset_id},
        headers=create_random_org(db, Role.REGULATOR).headers,
    )
    assert len(r.json()["items"]) == 5
    stranger = create_random_org(db, Role.BUYER, Role.PROVIDER)
    assert client.get("/v1/jobs", headers=stranger.headers).json()["items"] == []
    r = client.get("/v1/jobs", params={"cursor": "nonsense"}, headers=stranger.headers)
    assert _error(assert_problem(r, 422, "validation_failed"))[0] == "cursor"


def test_node_job_listing_takes_only_live_states(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    r = client.get(
        f"/v1/nodes/{served.node.id}/jobs",
        params={"state": "succeeded"},
        headers=served.node.headers,
    )
    assert _error(assert_problem(r, 422, "validation_failed"))[0] == "query.state"


# -- dispatch --------------------------------------------------------------------------


def _service_claim(db: Database, node_org: Party, node_id: uuid.UUID) -> JobSpec | None:
    with db.session() as session:
        caller = IdentityService(session).authenticate(node_org.key)
        return JobService(session, MemoryQueue()).next_for_node(caller, node_id, 0)


def test_two_concurrent_claims_hand_a_job_out_once(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    for _ in range(5):
        job = create_job(client, served)
        barrier = threading.Barrier(2)

        def contender(barrier: threading.Barrier = barrier) -> JobSpec | None:
            barrier.wait()
            return _service_claim(db, served.provider, served.node.id)

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: contender(), range(2)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert str(winners[0].job_id) == job["id"]
        assert _job(client, served.buyer, job["id"])["state"] == "dispatched"


def test_many_claimants_take_each_job_exactly_once(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    created = {create_job(client, served)["id"] for _ in range(8)}

    def drain() -> list[str]:
        got = []
        while (spec := _service_claim(db, served.provider, served.node.id)) is not None:
            got.append(str(spec.job_id))
        return got

    with ThreadPoolExecutor(4) as pool:
        claimed = [j for batch in pool.map(lambda _: drain(), range(4)) for j in batch]
    assert sorted(claimed) == sorted(created)


def test_jobs_move_with_the_dataset_to_a_new_node(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    job = create_job(client, served)
    second = create_random_node(client, served.provider, "second")
    assert attest(client, second, served.dataset).status_code == 201
    assert claim(client, served.node).status_code == 204
    r = claim(client, second)
    assert r.status_code == 200, r.text
    assert r.json()["job_id"] == job["id"]
    assert _job(client, served.buyer, job["id"])["node_id"] == str(second.id)


@pytest.fixture(params=["memory", "redis"])
def queue(request: pytest.FixtureRequest) -> Iterator[JobQueue]:
    """Each wake-up queue in turn."""
    if request.param == "memory":
        q: JobQueue = MemoryQueue()
    else:
        url = request.getfixturevalue("redis_url")
        q = RedisQueue(url, namespace=f"veilx-test-{uuid.uuid4().hex[:10]}")
    yield q
    q.close()


@pytest.fixture
def polling_client(
    db: Database, tmp_path: Path, queue: JobQueue
) -> Iterator[TestClient]:
    """An API client whose app uses ``queue``."""
    app = create_app(
        make_settings(tmp_path), db=db, kv=MemoryStore(), queue=queue, migrate=False
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_a_long_poll_is_woken_by_a_new_job(
    polling_client: TestClient, db: Database
) -> None:
    client = polling_client
    served = create_served_dataset(client, db)
    answer: list[httpx.Response] = []
    started = time.monotonic()
    waiter = threading.Thread(
        target=lambda: answer.append(claim(client, served.node, 20))
    )
    waiter.start()
    time.sleep(0.5)
    job = create_job(client, served)
    waiter.join(30)
    elapsed = time.monotonic() - started
    (r,) = answer
    assert r.status_code == 200, r.text
    assert r.json()["job_id"] == job["id"]
    assert elapsed < 10, elapsed


def test_a_long_poll_times_out_with_204(
    polling_client: TestClient, db: Database
) -> None:
    served = create_served_dataset(polling_client, db)
    started = time.monotonic()
    r = claim(polling_client, served.node, 0.6)
    elapsed = time.monotonic() - started
    assert r.status_code == 204 and r.content == b""
    assert 0.5 <= elapsed < 5, elapsed
    node = polling_client.get(
        f"/v1/nodes/{served.node.id}", headers=served.provider.headers
    ).json()
    assert node["last_seen_at"] is not None
    r = polling_client.get(
        f"/v1/nodes/{served.node.id}/jobs/next",
        params={"wait": 31},
        headers=served.node.headers,
    )
    assert _error(assert_problem(r, 422, "validation_failed"))[0] == "query.wait"


def test_a_long_poll_does_not_block_other_requests(
    polling_client: TestClient, db: Database
) -> None:
    client = polling_client
    served = create_served_dataset(client, db)
    waiters = [
        threading.Thread(target=lambda: claim(client, served.node, 12))
        for _ in range(3)
    ]
    for w in waiters:
        w.start()
    time.sleep(0.3)
    started = time.monotonic()
    r = client.get(f"/v1/datasets/{served.dataset_id}", headers=served.buyer.headers)
    assert r.status_code == 200
    # Answered while the polls still wait (they wait 12 s), not after them.
    assert time.monotonic() - started < 9
    for w in waiters:
        w.join(30)

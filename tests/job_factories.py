"""Factories for the jobs protocol: nodes with real Ed25519 keys, attestations,
served datasets, job bodies and signed results.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

from fastapi.testclient import TestClient

from marketplace.db import Database
from marketplace.models import Role
from mpc_engine.he import SecretContext
from mpc_engine.protocol import (
    Attestation,
    BudgetUsage,
    ColumnQuality,
    JobResult,
    Loss,
    NodeKey,
    Receipt,
    SignedAttestation,
    SignedReceipt,
    inputs_hash,
    iso_utc,
    output_hash,
    params_hash,
    utc_now,
)
from tests.factories import (
    Party,
    buy_entitlement,
    create_random_listed_dataset,
    create_random_org,
    dataset_body,
)

COUNT_BY_REGION: dict[str, Any] = {"statistics": ["count"], "group_by": ["region"]}
AGGREGATE_OUTPUT: dict[str, Any] = {
    "groups": [{"key": ["BY"], "count": 412}, {"key": ["HE"], "count": 388}],
    "privacy_loss": {"epsilon": 0.0, "delta": 0.0},
}


@cache
def buyer_he_keys() -> SecretContext:
    """A real CKKS key pair (default preset, no Galois keys), made once."""
    return SecretContext.generate(n_threads=1)


@dataclass(frozen=True)
class NodeHandle:
    """A registered node: its id, its signing key and its organisation."""

    id: uuid.UUID
    key: NodeKey
    org: Party

    @property
    def headers(self) -> dict[str, str]:
        """The node authenticates with its organisation's API key."""
        return self.org.headers


def create_random_node(
    client: TestClient, org: Party, name: str = "node"
) -> NodeHandle:
    """Register a node with a fresh Ed25519 key for ``org``."""
    key = NodeKey.generate()
    r = client.post(
        "/v1/nodes",
        json={"name": name, "public_key": key.public_key_hex},
        headers=org.headers,
    )
    assert r.status_code == 201, r.text
    return NodeHandle(uuid.UUID(r.json()["id"]), key, org)


def attestation(
    node: NodeHandle, dataset_id: str | uuid.UUID, content_hash: str, **changes: Any
) -> SignedAttestation:
    """A quality attestation of a dataset version, signed by ``node``."""
    now = iso_utc(utc_now())
    fields: dict[str, Any] = {
        "dataset_id": uuid.UUID(str(dataset_id)),
        "node_id": node.id,
        "content_hash": content_hash,
        "row_count": 1000,
        "columns": [
            ColumnQuality(name="patient_id", type="string", null_rate=0.0),
            ColumnQuality(
                name="region", type="categorical", null_rate=0.0, distinct_count=16
            ),
        ],
        "source_modified_at": now,
        "computed_at": now,
    }
    fields.update(changes)
    return SignedAttestation.sign(Attestation(**fields), node.key)


def attest(
    client: TestClient, node: NodeHandle, dataset: dict[str, Any], **changes: Any
) -> Any:
    """Post an attestation of ``dataset``'s live version by ``node``."""
    signed = attestation(
        node, dataset["id"], dataset["live_version"]["content_hash"], **changes
    )
    return client.post(
        f"/v1/nodes/{node.id}/attestations",
        json=signed.model_dump(mode="json"),
        headers=node.headers,
    )


@dataclass(frozen=True)
class Served:
    """A listed dataset, its provider and the node that serves it, and a buyer."""

    provider: Party
    node: NodeHandle
    dataset: dict[str, Any]
    buyer: Party

    @property
    def dataset_id(self) -> str:
        """The dataset's id."""
        return str(self.dataset["id"])


MONTHLY_SUBSCRIPTION: dict[str, Any] = {
    "kind": "subscription",
    "currency": "EUR",
    "price_per_period_minor": 10_000,
    "period": "month",
    "queries_per_period": 1,
    "overage_per_query_minor": 3_000,
}
"""A pricing plan: 100.00 a month with one computation, 30.00 for each more."""


def policy_with(**changes: Any) -> dict[str, Any]:
    """The factory dataset's policy with ``changes``."""
    policy = copy.deepcopy(dataset_body()["policy"])
    policy.update(changes)
    return policy


def create_served_dataset(
    client: TestClient,
    db: Database,
    *,
    funded: bool = True,
    plan: dict[str, Any] | None = None,
    **policy_changes: Any,
) -> Served:
    """A provider with a node that serves one of its listed datasets; a buyer.

    The buyer holds an entitlement on the dataset (bought with credits) unless
    ``funded`` is false; ``plan`` replaces the factory's pricing plan.
    """
    provider = create_random_org(db, Role.PROVIDER)
    overrides: dict[str, Any] = {"policy": policy_with(**policy_changes)}
    if plan is not None:
        overrides["pricing_plan"] = plan
    dataset = create_random_listed_dataset(client, provider, **overrides)
    node = create_random_node(client, provider)
    r = attest(client, node, dataset)
    assert r.status_code == 201, r.text
    buyer = create_random_org(db, Role.BUYER)
    if funded:
        buy_entitlement(client, db, buyer, str(dataset["id"]))
    return Served(provider, node, dataset, buyer)


def aggregate_job(dataset_id: str, **changes: Any) -> dict[str, Any]:
    """A JobCreate body: count rows per region."""
    body: dict[str, Any] = {
        "dataset_id": dataset_id,
        "kind": "aggregate",
        "purpose": "research",
        "params": COUNT_BY_REGION,
    }
    body.update(changes)
    return body


def create_job(client: TestClient, served: Served, **changes: Any) -> dict[str, Any]:
    """Submit the aggregate job as the buyer."""
    r = client.post(
        "/v1/jobs",
        json=aggregate_job(served.dataset_id, **changes),
        headers=served.buyer.headers,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def claim(client: TestClient, node: NodeHandle, wait: float = 0) -> Any:
    """The node's long poll."""
    return client.get(
        f"/v1/nodes/{node.id}/jobs/next",
        params={"wait": wait},
        headers=node.headers,
    )


def start(client: TestClient, node: NodeHandle, job_id: str) -> Any:
    """The node starts a job."""
    return client.post(f"/v1/jobs/{job_id}/start", headers=node.headers)


def receipt_for(
    job: dict[str, Any],
    served: Served,
    *,
    output: dict[str, Any] | None = None,
    output_blobs: dict[str, str] | None = None,
    key: NodeKey | None = None,
    **changes: Any,
) -> SignedReceipt:
    """A receipt binding ``job`` as the exchange knows it, signed by the node."""
    output = AGGREGATE_OUTPUT if output is None else output
    fields: dict[str, Any] = {
        "job_id": uuid.UUID(job["id"]),
        "node_id": served.node.id,
        "dataset_id": uuid.UUID(job["dataset_id"]),
        "dataset_version_hash": served.dataset["live_version"]["content_hash"],
        "policy_hash": served.dataset["policy_hash"],
        "kind": job["kind"],
        "params_hash": params_hash(job["params"]),
        "inputs_hash": inputs_hash(job["inputs"], job["context_id"]),
        "privacy_loss": Loss(epsilon=0.25, delta=0.0),
        "replayed": False,
        "output_hash": output_hash(output, output_blobs or {}),
        "issued_at": iso_utc(utc_now()),
    }
    fields.update(changes)
    return SignedReceipt.sign(Receipt(**fields), key or served.node.key)


def budget_rows(served: Served, queries: int = 1) -> list[BudgetUsage]:
    """The node's budget ledger for the job's buyer and the dataset total."""
    ds = uuid.UUID(served.dataset_id)
    return [
        BudgetUsage(
            dataset_id=ds,
            buyer_id=served.buyer.org_id,
            epsilon_spent=0.25 * queries,
            delta_spent=0.0,
            epsilon_budget=1.0,
            delta_budget=1e-6,
            queries=queries,
            inference_rows=0,
        ),
        BudgetUsage(
            dataset_id=ds,
            buyer_id=None,
            epsilon_spent=0.25 * queries,
            delta_spent=0.0,
            epsilon_budget=10.0,
            delta_budget=1e-5,
            queries=queries,
            inference_rows=0,
        ),
    ]


def success(
    job: dict[str, Any],
    served: Served,
    *,
    output: dict[str, Any] | None = None,
    output_blobs: dict[str, str] | None = None,
    budget: list[BudgetUsage] | None = None,
    receipt: SignedReceipt | None = None,
) -> dict[str, Any]:
    """A succeeded JobResult body with a valid receipt."""
    output = AGGREGATE_OUTPUT if output is None else output
    result = JobResult(
        outcome="succeeded",  # type: ignore[arg-type]
        output=output,
        output_blobs=output_blobs or {},
        receipt=receipt
        or receipt_for(job, served, output=output, output_blobs=output_blobs),
        budget=budget if budget is not None else budget_rows(served),
    )
    return result.model_dump(mode="json")


def post_result(
    client: TestClient, node: NodeHandle, job_id: str, body: dict[str, Any]
) -> Any:
    """The node posts a result."""
    return client.post(f"/v1/jobs/{job_id}/result", json=body, headers=node.headers)

"""Data nodes through the API, on both engines: registration, reads, attestations
(real Ed25519 signatures) and the dataset binding they create.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import select

from marketplace.db import Database
from marketplace.models import NodeAttestation, Role
from mpc_engine.protocol import NodeKey, SignedAttestation
from tests.factories import (
    assert_problem,
    create_random_listed_dataset,
    create_random_org,
    dataset_body,
    version_body,
)
from tests.job_factories import (
    attest,
    attestation,
    create_random_node,
    create_served_dataset,
)


def _error(body: dict[str, Any]) -> tuple[str, str]:
    (err,) = body["errors"]
    return err["field"], err["code"]


def _attestation_rows(db: Database) -> int:
    with db.session() as session:
        return len(session.exec(select(NodeAttestation)).all())


# -- registration and reads ------------------------------------------------------------


def test_register_node_returns_the_public_record(
    client: TestClient, db: Database
) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    key = NodeKey.generate()
    r = client.post(
        "/v1/nodes",
        json={"name": "site-a", "public_key": key.public_key_hex},
        headers=provider.headers,
    )
    assert r.status_code == 201, r.text
    node = r.json()
    assert set(node) == {
        "id",
        "organisation_id",
        "name",
        "public_key",
        "created_at",
        "last_seen_at",
        "datasets",
    }
    assert node["organisation_id"] == str(provider.org_id)
    assert (node["name"], node["public_key"]) == ("site-a", key.public_key_hex)
    assert node["last_seen_at"] is None
    assert node["datasets"] == []


def test_a_public_key_is_registered_once(client: TestClient, db: Database) -> None:
    first = create_random_org(db, Role.PROVIDER)
    second = create_random_org(db, Role.PROVIDER)
    key = NodeKey.generate().public_key_hex
    body = {"name": "node", "public_key": key}
    assert client.post("/v1/nodes", json=body, headers=first.headers).status_code == 201
    for party in (first, second):
        r = client.post("/v1/nodes", json=body, headers=party.headers)
        problem = assert_problem(r, 409, "public_key_taken")
        assert _error(problem) == ("public_key", "public_key_taken")
    r = client.get("/v1/nodes", headers=second.headers)
    assert r.json() == []


def test_malformed_public_keys_are_refused(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    key = NodeKey.generate().public_key_hex
    for bad in ("abc", key.upper(), key[:-2], key + "00", "g" * 64):
        r = client.post(
            "/v1/nodes",
            json={"name": "node", "public_key": bad},
            headers=provider.headers,
        )
        body = assert_problem(r, 422, "validation_failed")
        assert [e["field"] for e in body["errors"]] == ["public_key"], bad


def test_nodes_are_listed_to_their_owner_operator_and_regulator(
    client: TestClient, db: Database
) -> None:
    alice = create_random_org(db, Role.PROVIDER)
    bob = create_random_org(db, Role.PROVIDER)
    a = create_random_node(client, alice, "alice-1")
    b = create_random_node(client, bob, "bob-1")
    mine = client.get("/v1/nodes", headers=alice.headers).json()
    assert [n["id"] for n in mine] == [str(a.id)]
    for role in (Role.OPERATOR, Role.REGULATOR):
        party = create_random_org(db, role)
        ids = {n["id"] for n in client.get("/v1/nodes", headers=party.headers).json()}
        assert ids == {str(a.id), str(b.id)}
    # Any admitted organisation reads one node (to verify its receipts).
    buyer = create_random_org(db, Role.BUYER)
    r = client.get(f"/v1/nodes/{b.id}", headers=buyer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["public_key"] == b.key.public_key_hex
    assert_problem(
        client.get(f"/v1/nodes/{uuid.uuid4()}", headers=buyer.headers),
        404,
        "not_found",
    )


# -- attestations ----------------------------------------------------------------------


def test_attestation_binds_the_dataset_and_shows_on_the_listing(
    client: TestClient, db: Database
) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, provider)
    node = create_random_node(client, provider)
    signed = attestation(node, dataset["id"], dataset["live_version"]["content_hash"])
    r = client.post(
        f"/v1/nodes/{node.id}/attestations",
        json=signed.model_dump(mode="json"),
        headers=provider.headers,
    )
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored["verified"] is True
    assert stored["dataset_id"] == dataset["id"]
    assert stored["dataset_version_id"] == dataset["live_version"]["id"]
    assert stored["node_id"] == str(node.id)
    assert stored["signature"] == signed.signature
    assert stored["attestation"] == signed.attestation.model_dump(mode="json")

    buyer = create_random_org(db, Role.BUYER)
    shown = client.get(f"/v1/datasets/{dataset['id']}", headers=buyer.headers).json()
    att = shown["live_version"]["attestation"]
    assert att is not None
    assert set(att) == {
        "node_id",
        "signature",
        "attestation",
        "verified",
        "received_at",
    }
    # What the listing shows verifies under the key the node record publishes.
    node_record = client.get(f"/v1/nodes/{att['node_id']}", headers=buyer.headers)
    SignedAttestation.model_validate(
        {"attestation": att["attestation"], "signature": att["signature"]}
    ).verify(node_record.json()["public_key"])
    # The version endpoint shows the same.
    url = (
        f"/v1/datasets/{dataset['id']}/versions/{dataset['live_version']['id']}"
        "/attestation"
    )
    assert client.get(url, headers=buyer.headers).json() == att
    versions = client.get(
        f"/v1/datasets/{dataset['id']}/versions", headers=buyer.headers
    ).json()
    assert versions[0]["attestation"] == att
    # The node now serves the dataset, and has been seen.
    record = node_record.json()
    assert record["datasets"] == [dataset["id"]]
    assert record["last_seen_at"] is not None


def test_the_latest_attestation_of_a_version_is_shown(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    r = attest(client, served.node, served.dataset, row_count=2024)
    assert r.status_code == 201, r.text
    shown = client.get(
        f"/v1/datasets/{served.dataset_id}", headers=served.buyer.headers
    ).json()
    assert shown["live_version"]["attestation"]["attestation"]["row_count"] == 2024


def test_a_version_without_attestation(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, provider)
    assert dataset["live_version"]["attestation"] is None
    url = (
        f"/v1/datasets/{dataset['id']}/versions/{dataset['live_version']['id']}"
        "/attestation"
    )
    assert_problem(client.get(url, headers=provider.headers), 404, "no_attestation")
    other = f"/v1/datasets/{dataset['id']}/versions/{uuid.uuid4()}/attestation"
    assert_problem(client.get(other, headers=provider.headers), 404, "not_found")


def test_a_flipped_signature_byte_is_refused(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, provider)
    node = create_random_node(client, provider)
    signed = attestation(node, dataset["id"], dataset["live_version"]["content_hash"])
    body = signed.model_dump(mode="json")
    sig = bytearray(bytes.fromhex(body["signature"]))
    sig[7] ^= 0x01
    body["signature"] = sig.hex()
    r = client.post(
        f"/v1/nodes/{node.id}/attestations", json=body, headers=provider.headers
    )
    assert _error(assert_problem(r, 422, "bad_signature")) == (
        "signature",
        "bad_signature",
    )
    assert _attestation_rows(db) == 0
    record = client.get(f"/v1/nodes/{node.id}", headers=provider.headers).json()
    assert record["datasets"] == []


def test_a_field_changed_after_signing_is_refused(
    client: TestClient, db: Database
) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, provider)
    node = create_random_node(client, provider)
    body = attestation(
        node, dataset["id"], dataset["live_version"]["content_hash"]
    ).model_dump(mode="json")
    body["attestation"]["row_count"] = 999_999
    r = client.post(
        f"/v1/nodes/{node.id}/attestations", json=body, headers=provider.headers
    )
    assert_problem(r, 422, "bad_signature")
    # Signed by another node's key: the same.
    impostor = create_random_node(client, provider, "impostor")
    forged = attestation(
        node, dataset["id"], dataset["live_version"]["content_hash"]
    ).attestation
    body = SignedAttestation.sign(forged, impostor.key).model_dump(mode="json")
    r = client.post(
        f"/v1/nodes/{node.id}/attestations", json=body, headers=provider.headers
    )
    assert_problem(r, 422, "bad_signature")
    assert _attestation_rows(db) == 0


def test_attestation_for_another_node_id(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, provider)
    node = create_random_node(client, provider)
    other = create_random_node(client, provider, "other")
    signed = attestation(other, dataset["id"], dataset["live_version"]["content_hash"])
    r = client.post(
        f"/v1/nodes/{node.id}/attestations",
        json=signed.model_dump(mode="json"),
        headers=provider.headers,
    )
    body = assert_problem(r, 422, "validation_failed")
    assert _error(body) == ("attestation.node_id", "node_mismatch")


def test_unknown_content_hash_is_409(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, provider)
    node = create_random_node(client, provider)
    signed = attestation(node, dataset["id"], version_body()["content_hash"])
    r = client.post(
        f"/v1/nodes/{node.id}/attestations",
        json=signed.model_dump(mode="json"),
        headers=provider.headers,
    )
    body = assert_problem(r, 409, "unknown_version")
    assert _error(body) == ("attestation.content_hash", "unknown_version")
    assert _attestation_rows(db) == 0


def test_an_older_version_may_be_attested(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, provider)
    old = dataset["live_version"]
    r = client.post(
        f"/v1/datasets/{dataset['id']}/versions",
        json=version_body(),
        headers=provider.headers,
    )
    assert r.status_code == 201, r.text
    node = create_random_node(client, provider)
    signed = attestation(node, dataset["id"], old["content_hash"])
    r = client.post(
        f"/v1/nodes/{node.id}/attestations",
        json=signed.model_dump(mode="json"),
        headers=provider.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["dataset_version_id"] == old["id"]
    shown = client.get(f"/v1/datasets/{dataset['id']}", headers=provider.headers)
    assert shown.json()["live_version"]["attestation"] is None


def test_another_providers_dataset_is_not_found(
    client: TestClient, db: Database
) -> None:
    owner = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, owner)
    mallory = create_random_org(db, Role.PROVIDER)
    node = create_random_node(client, mallory)
    signed = attestation(node, dataset["id"], dataset["live_version"]["content_hash"])
    r = client.post(
        f"/v1/nodes/{node.id}/attestations",
        json=signed.model_dump(mode="json"),
        headers=mallory.headers,
    )
    assert_problem(r, 404, "not_found")
    assert _attestation_rows(db) == 0


def test_only_the_nodes_organisation_acts_as_it(
    client: TestClient, db: Database
) -> None:
    owner = create_random_org(db, Role.PROVIDER)
    dataset = create_random_listed_dataset(client, owner)
    node = create_random_node(client, owner)
    mallory = create_random_org(db, Role.PROVIDER)
    signed = attestation(node, dataset["id"], dataset["live_version"]["content_hash"])
    for r in (
        client.post(
            f"/v1/nodes/{node.id}/attestations",
            json=signed.model_dump(mode="json"),
            headers=mallory.headers,
        ),
        client.get(f"/v1/nodes/{node.id}/jobs/next", headers=mallory.headers),
        client.get(f"/v1/nodes/{node.id}/jobs", headers=mallory.headers),
    ):
        assert_problem(r, 403, "not_node_owner")
    for r in (
        client.get(f"/v1/nodes/{uuid.uuid4()}/jobs/next", headers=owner.headers),
        client.get(f"/v1/nodes/{uuid.uuid4()}/jobs", headers=owner.headers),
    ):
        assert_problem(r, 404, "not_found")


def test_drafts_served_by_a_node_are_shown_only_to_insiders(
    client: TestClient, db: Database
) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    r = client.post("/v1/datasets", json=dataset_body(), headers=provider.headers)
    draft = r.json()
    r = client.post(
        f"/v1/datasets/{draft['id']}/versions",
        json=version_body(),
        headers=provider.headers,
    )
    content_hash = r.json()["content_hash"]
    node = create_random_node(client, provider)
    signed = attestation(node, draft["id"], content_hash)
    r = client.post(
        f"/v1/nodes/{node.id}/attestations",
        json=signed.model_dump(mode="json"),
        headers=provider.headers,
    )
    assert r.status_code == 201, r.text
    url = f"/v1/nodes/{node.id}"
    assert client.get(url, headers=provider.headers).json()["datasets"] == [draft["id"]]
    operator = create_random_org(db, Role.OPERATOR)
    assert client.get(url, headers=operator.headers).json()["datasets"] == [draft["id"]]
    buyer = create_random_org(db, Role.BUYER)
    assert client.get(url, headers=buyer.headers).json()["datasets"] == []


def test_a_dataset_moves_to_the_node_that_attests_it_last(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(client, db)
    second = create_random_node(client, served.provider, "second")
    r = attest(client, second, served.dataset)
    assert r.status_code == 201, r.text
    first = client.get(f"/v1/nodes/{served.node.id}", headers=served.provider.headers)
    now = client.get(f"/v1/nodes/{second.id}", headers=served.provider.headers)
    assert first.json()["datasets"] == []
    assert now.json()["datasets"] == [served.dataset_id]

"""Blobs and HE contexts through the API, on both engines: uploads (streamed, size
limited), content addressing, the secret-key refusal with a real CKKS context,
and who may read what.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tenseal as ts
from fastapi.testclient import TestClient
from sqlmodel import select

from marketplace.api import create_app
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.models import Blob, HEContext, HEContextOwner, Role
from tests.conftest import make_settings
from tests.factories import Party, assert_problem, create_random_org
from tests.job_factories import (
    buyer_he_keys,
    claim,
    create_served_dataset,
    post_result,
    receipt_for,
    start,
)

OCTET = {"Content-Type": "application/octet-stream"}


def _upload(
    client: TestClient, party: Party, data: bytes, path: str = "/v1/blobs"
) -> Any:
    return client.post(path, content=data, headers={**party.headers, **OCTET})


def _error_fields(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["field"], e["code"]) for e in body["errors"]]


# -- blobs -----------------------------------------------------------------------------


def test_upload_is_content_addressed(client: TestClient, db: Database) -> None:
    buyer = create_random_org(db, Role.BUYER)
    data = secrets.token_bytes(5000)
    sha = hashlib.sha256(data).hexdigest()
    r = _upload(client, buyer, data)
    assert r.status_code == 201, r.text
    assert r.json() == {"sha256": sha, "size": 5000}
    again = _upload(client, buyer, data)
    assert again.status_code == 200, again.text
    assert again.json() == r.json()
    r = client.get(f"/v1/blobs/{sha}", headers=buyer.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content == data
    # Another organisation uploading the same bytes owns them too (201 for it:
    # it learns nothing about other uploaders), and they are stored once.
    provider = create_random_org(db, Role.PROVIDER)
    assert _upload(client, provider, data).status_code == 201
    assert client.get(f"/v1/blobs/{sha}", headers=provider.headers).content == data
    with db.session() as session:
        assert len(session.exec(select(Blob)).all()) == 1


def test_only_uploaders_read_a_blob(client: TestClient, db: Database) -> None:
    owner = create_random_org(db, Role.BUYER)
    data = b"a ciphertext"
    sha = _upload(client, owner, data).json()["sha256"]
    for role in (Role.BUYER, Role.PROVIDER, Role.OPERATOR, Role.REGULATOR):
        other = create_random_org(db, role)
        assert_problem(
            client.get(f"/v1/blobs/{sha}", headers=other.headers), 404, "not_found"
        )
    assert_problem(
        client.get(f"/v1/blobs/{'0' * 64}", headers=owner.headers), 404, "not_found"
    )
    r = client.get("/v1/blobs/not-a-hash", headers=owner.headers)
    fields = [e["field"] for e in assert_problem(r, 422, "validation_failed")["errors"]]
    assert fields == ["path.sha256"]


def test_uploads_must_be_octet_stream_and_not_empty(
    client: TestClient, db: Database
) -> None:
    buyer = create_random_org(db, Role.BUYER)
    for path in ("/v1/blobs", "/v1/he-contexts"):
        r = client.post(path, json={"data": "x"}, headers=buyer.headers)
        assert_problem(r, 415, "unsupported_media_type")
    r = _upload(client, buyer, b"")
    assert _error_fields(assert_problem(r, 422, "validation_failed")) == [
        ("body", "invalid")
    ]
    r = _upload(client, buyer, b"", "/v1/he-contexts")
    assert _error_fields(assert_problem(r, 422, "malformed_context")) == [
        ("body", "malformed_context")
    ]


@pytest.fixture
def small_limit_client(db: Database, tmp_path: Path) -> Iterator[TestClient]:
    """An API whose uploads are limited to 1 KiB."""
    app = create_app(
        make_settings(tmp_path, max_upload_bytes=1024),
        db=db,
        kv=MemoryStore(),
        migrate=False,
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_uploads_over_the_limit_are_413(
    small_limit_client: TestClient, db: Database
) -> None:
    client = small_limit_client
    buyer = create_random_org(db, Role.BUYER)
    assert _upload(client, buyer, b"x" * 1024).status_code == 201
    for path in ("/v1/blobs", "/v1/he-contexts"):
        assert_problem(
            _upload(client, buyer, b"y" * 1025, path), 413, "payload_too_large"
        )

    # Without a Content-Length (chunked), the stream is cut at the limit.
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"z" * 200

    r = client.post("/v1/blobs", content=chunks(), headers={**buyer.headers, **OCTET})
    assert_problem(r, 413, "payload_too_large")
    with db.session() as session:
        assert [b.size for b in session.exec(select(Blob))] == [1024]


def test_large_uploads_with_an_idempotency_key(
    client: TestClient, db: Database
) -> None:
    """Uploads bypass the idempotency buffer (2 MiB): they are idempotent anyway."""
    buyer = create_random_org(db, Role.BUYER)
    data = secrets.token_bytes(3 * 1024 * 1024)
    headers = {**buyer.headers, **OCTET, "Idempotency-Key": "upload-1"}
    first = client.post("/v1/blobs", content=data, headers=headers)
    assert first.status_code == 201, first.text
    second = client.post("/v1/blobs", content=data, headers=headers)
    assert second.status_code == 200, second.text
    assert second.json() == first.json()


# -- HE contexts -----------------------------------------------------------------------


def _secret_context_bytes() -> bytes:
    """A full TenSEAL CKKS context, secret key included (what must never leave)."""
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=8192,
        coeff_mod_bit_sizes=[60, 40, 40, 60],
        n_threads=1,
    )
    ctx.global_scale = 2.0**40
    return bytes(ctx.serialize(save_secret_key=True))


def test_a_public_context_is_checked_and_stored(
    client: TestClient, db: Database
) -> None:
    buyer = create_random_org(db, Role.BUYER)
    keys = buyer_he_keys()
    data = keys.public_bytes()
    r = _upload(client, buyer, data, "/v1/he-contexts")
    assert r.status_code == 201, r.text
    assert r.json() == {
        "context_id": keys.context_id,
        "size": len(data),
        "has_galois_keys": False,
        "params": {
            "poly_modulus_degree": 8192,
            "coeff_mod_bit_sizes": [60, 40, 40, 60],
            "scale_bits": 40,
        },
    }
    again = _upload(client, buyer, data, "/v1/he-contexts")
    assert again.status_code == 200, again.text
    assert again.json() == r.json()
    got = client.get(f"/v1/he-contexts/{keys.context_id}", headers=buyer.headers)
    assert got.status_code == 200 and got.content == data
    stranger = create_random_org(db, Role.BUYER, Role.PROVIDER)
    assert_problem(
        client.get(f"/v1/he-contexts/{keys.context_id}", headers=stranger.headers),
        404,
        "not_found",
    )


def test_a_context_with_a_secret_key_is_refused_and_not_stored(
    client: TestClient, db: Database
) -> None:
    buyer = create_random_org(db, Role.BUYER)
    data = _secret_context_bytes()
    r = _upload(client, buyer, data, "/v1/he-contexts")
    body = assert_problem(r, 422, "secret_key_present")
    assert _error_fields(body) == [("body", "secret_key_present")]
    context_id = hashlib.sha256(data).hexdigest()
    assert_problem(
        client.get(f"/v1/he-contexts/{context_id}", headers=buyer.headers),
        404,
        "not_found",
    )
    with db.session() as session:
        assert session.exec(select(HEContext)).all() == []
        assert session.exec(select(HEContextOwner)).all() == []


def test_bytes_that_are_no_context_are_refused(
    client: TestClient, db: Database
) -> None:
    buyer = create_random_org(db, Role.BUYER)
    for data in (b"not a context", secrets.token_bytes(4096), b"\x0a\x05hello"):
        r = _upload(client, buyer, data, "/v1/he-contexts")
        assert _error_fields(assert_problem(r, 422, "malformed_context")) == [
            ("body", "malformed_context")
        ]
    with db.session() as session:
        assert session.exec(select(HEContext)).all() == []


# -- reading through jobs --------------------------------------------------------------


def test_the_node_reads_a_jobs_inputs_while_it_runs_the_job(
    client: TestClient, db: Database
) -> None:
    served = create_served_dataset(
        client, db, permitted_kinds=["aggregate", "encrypted_model_eval", "psi"]
    )
    keys = buyer_he_keys()
    context = _upload(client, served.buyer, keys.public_bytes(), "/v1/he-contexts")
    assert context.status_code in (200, 201), context.text
    linear = _upload(client, served.buyer, b"linear weights ciphertext").json()
    outer = _upload(client, served.buyer, b"outer weights ciphertext").json()
    r = client.post(
        "/v1/jobs",
        json={
            "dataset_id": served.dataset_id,
            "kind": "encrypted_model_eval",
            "purpose": "research",
            "params": {"model_kind": "linear", "features": ["age"], "label": "cost"},
            "inputs": {"linear": linear["sha256"], "outer": outer["sha256"]},
            "context_id": keys.context_id,
        },
        headers=served.buyer.headers,
    )
    assert r.status_code == 201, r.text
    job = r.json()
    node = served.node
    urls = [
        f"/v1/blobs/{linear['sha256']}",
        f"/v1/blobs/{outer['sha256']}",
        f"/v1/he-contexts/{keys.context_id}",
    ]
    # Queued: not yet the node's business.
    for url in urls:
        assert_problem(client.get(url, headers=node.headers), 404, "not_found")
    assert claim(client, node).json()["job_id"] == job["id"]
    for url in urls:
        assert client.get(url, headers=node.headers).status_code == 200
    assert start(client, node, job["id"]).status_code == 200
    assert client.get(urls[2], headers=node.headers).content == keys.public_bytes()
    # Another provider's node never reads them.
    mallory = create_random_org(db, Role.PROVIDER)
    for url in urls:
        assert_problem(client.get(url, headers=mallory.headers), 404, "not_found")
    # Once the job ended, the node's access ends with it.
    output = {"model_kind": "linear"}
    loss = _upload(client, node.org, b"loss ciphertext").json()["sha256"]
    body = {
        "outcome": "succeeded",
        "output": output,
        "output_blobs": {"loss": loss},
        "receipt": receipt_for(
            job, served, output=output, output_blobs={"loss": loss}
        ).model_dump(mode="json"),
    }
    assert post_result(client, node, job["id"], body).status_code == 200
    for url in urls:
        assert_problem(client.get(url, headers=node.headers), 404, "not_found")
    assert (
        client.get(f"/v1/blobs/{loss}", headers=served.buyer.headers).status_code == 200
    )

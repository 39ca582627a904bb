"""Request ids, rate limits and idempotent POSTs, through the whole app, per store."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marketplace.api import create_app
from marketplace.db import Database
from marketplace.kv import KeyValueStore
from marketplace.models import Role
from tests.conftest import make_settings
from tests.factories import Party, assert_problem, create_random_org

PEER_HEADER = b"x-test-peer"

ClientFactory = Callable[..., TestClient]


def _with_peer(app: Any) -> Any:
    """Wrap ``app`` so a test can choose the client address with ``X-Test-Peer``."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == PEER_HEADER:
                    scope = {**scope, "client": (value.decode("latin-1"), 40000)}
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
def make_client(
    kv: KeyValueStore, sqlite_only_db: Database, tmp_path: Path
) -> Iterator[ClientFactory]:
    """Start the app (once per test) with settings overrides, on each store."""
    clients: list[TestClient] = []

    def factory(**overrides: object) -> TestClient:
        assert not clients, "one app per test: the app closes the store on shutdown"
        app = create_app(
            make_settings(tmp_path, **overrides),
            db=sqlite_only_db,
            kv=kv,
            migrate=False,
        )
        client = TestClient(_with_peer(app), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def member(sqlite_only_db: Database) -> Party:
    """An admitted buyer with an API key."""
    return create_random_org(sqlite_only_db, Role.BUYER)


@pytest.fixture
def other(sqlite_only_db: Database) -> Party:
    """Another admitted buyer with an API key."""
    return create_random_org(sqlite_only_db, Role.BUYER)


# -- rate limits -----------------------------------------------------------------


def test_rate_limit_per_api_key(make_client: ClientFactory, member: Party) -> None:
    client = make_client(rate_limit_per_minute=1, rate_limit_burst=3)
    for _ in range(3):
        assert client.get("/v1/me", headers=member.headers).status_code == 200
    r = client.get("/v1/me", headers=member.headers)
    body = assert_problem(r, 429, "rate_limited")
    assert body["title"] == "Too many requests"
    assert body["instance"] == "/v1/me"
    retry_after = int(r.headers["retry-after"])
    assert retry_after >= 1
    assert body["retry_after"] == retry_after
    assert "x-request-id" in r.headers
    # Any path counts against the same key, and refusals continue.
    r = client.get("/v1/api-keys", headers=member.headers)
    assert_problem(r, 429, "rate_limited")


def test_two_keys_have_independent_buckets(
    make_client: ClientFactory, member: Party, other: Party
) -> None:
    client = make_client(rate_limit_per_minute=1, rate_limit_burst=2)
    for _ in range(2):
        assert client.get("/v1/me", headers=member.headers).status_code == 200
    assert_problem(client.get("/v1/me", headers=member.headers), 429, "rate_limited")
    for _ in range(2):
        assert client.get("/v1/me", headers=other.headers).status_code == 200
    assert_problem(client.get("/v1/me", headers=other.headers), 429, "rate_limited")


def test_a_second_key_of_the_same_org_has_its_own_bucket(
    make_client: ClientFactory, member: Party
) -> None:
    client = make_client(rate_limit_per_minute=1, rate_limit_burst=2)
    r = client.post("/v1/api-keys", json={"name": "second"}, headers=member.headers)
    assert r.status_code == 201, r.text
    second = {"Authorization": f"Bearer {r.json()['secret']}"}
    assert client.get("/v1/me", headers=member.headers).status_code == 200
    assert_problem(client.get("/v1/me", headers=member.headers), 429, "rate_limited")
    assert client.get("/v1/me", headers=second).status_code == 200


def test_unauthenticated_requests_are_limited_per_client_address(
    make_client: ClientFactory, member: Party
) -> None:
    client = make_client(rate_limit_per_minute=1, rate_limit_burst=2)
    a = {"X-Test-Peer": "203.0.113.1"}
    b = {"X-Test-Peer": "203.0.113.2"}
    for _ in range(2):
        assert_problem(client.get("/v1/me", headers=a), 401, "authentication_required")
    r = client.get("/v1/me", headers=a)
    assert_problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    # Unknown paths count as well.
    assert_problem(client.get("/nowhere", headers=a), 429, "rate_limited")
    # Another address is not affected, nor is an API key from the limited address.
    assert_problem(client.get("/v1/me", headers=b), 401, "authentication_required")
    assert client.get("/v1/me", headers={**a, **member.headers}).status_code == 200


def test_health_is_not_limited(make_client: ClientFactory) -> None:
    client = make_client(rate_limit_per_minute=1, rate_limit_burst=1)
    for _ in range(5):
        r = client.get("/health")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ok"
    # The bucket of this address is untouched by the health checks.
    assert_problem(client.get("/v1/me"), 401, "authentication_required")
    assert_problem(client.get("/v1/me"), 429, "rate_limited")
    assert client.get("/health").status_code == 200


# -- idempotency -------------------------------------------------------------------


def _key_names(client: TestClient, party: Party) -> list[str]:
    r = client.get("/v1/api-keys", headers=party.headers)
    assert r.status_code == 200, r.text
    return [k["name"] for k in r.json()]


def test_same_idempotency_key_replays_the_first_response(
    make_client: ClientFactory, member: Party
) -> None:
    client = make_client()
    headers = {**member.headers, "Idempotency-Key": "create-ci-key-1"}
    first = client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    second = client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert second.status_code == 201, second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert second.json()["secret"] == first.json()["secret"]
    assert second.headers["content-type"] == first.headers["content-type"]
    # Each response has its own request id.
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert _key_names(client, member).count("ci") == 1


def test_same_idempotency_key_with_a_different_body_is_refused(
    make_client: ClientFactory, member: Party
) -> None:
    client = make_client()
    headers = {**member.headers, "Idempotency-Key": "reuse-me"}
    assert (
        client.post("/v1/api-keys", json={"name": "one"}, headers=headers).status_code
        == 201
    )
    r = client.post("/v1/api-keys", json={"name": "two"}, headers=headers)
    body = assert_problem(r, 409, "idempotency_key_reused")
    assert "Idempotency-Key" in body["detail"]
    # A different path with the same key is a different request, too.
    r = client.post("/v1/auth/logout", headers=headers)
    assert_problem(r, 409, "idempotency_key_reused")
    names = _key_names(client, member)
    assert "one" in names and "two" not in names


def test_idempotency_keys_are_scoped_per_credential(
    make_client: ClientFactory, member: Party, other: Party
) -> None:
    client = make_client()
    key = {"Idempotency-Key": "shared-key"}
    a = client.post(
        "/v1/api-keys", json={"name": "ci"}, headers={**member.headers, **key}
    )
    b = client.post(
        "/v1/api-keys", json={"name": "ci"}, headers={**other.headers, **key}
    )
    assert a.status_code == 201 and b.status_code == 201, (a.text, b.text)
    assert "idempotent-replayed" not in b.headers
    assert a.json()["secret"] != b.json()["secret"]
    assert a.json()["organisation_id"] == str(member.org_id)
    assert b.json()["organisation_id"] == str(other.org_id)
    assert _key_names(client, member).count("ci") == 1
    assert _key_names(client, other).count("ci") == 1


@pytest.mark.parametrize(
    "bad_key",
    ["x" * 300, "has space", "tab\tinside", ""],
    ids=["long", "space", "tab", "empty"],
)
def test_invalid_idempotency_key_is_422(
    make_client: ClientFactory, member: Party, bad_key: str
) -> None:
    client = make_client()
    r = client.post(
        "/v1/api-keys",
        json={"name": "ci"},
        headers={**member.headers, "Idempotency-Key": bad_key},
    )
    body = assert_problem(r, 422, "validation_failed")
    assert [e["field"] for e in body["errors"]] == ["header.Idempotency-Key"]
    assert "header.Idempotency-Key" in body["detail"]
    assert "ci" not in _key_names(client, member)


def test_a_255_character_key_is_accepted(
    make_client: ClientFactory, member: Party
) -> None:
    client = make_client()
    headers = {**member.headers, "Idempotency-Key": "k" * 255}
    assert (
        client.post("/v1/api-keys", json={"name": "ci"}, headers=headers).status_code
        == 201
    )
    again = client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"


def test_a_4xx_response_is_replayed(make_client: ClientFactory, member: Party) -> None:
    client = make_client()
    made = client.post("/v1/api-keys", json={"name": "dup"}, headers=member.headers)
    assert made.status_code == 201
    headers = {**member.headers, "Idempotency-Key": "dup-attempt"}
    first = client.post("/v1/api-keys", json={"name": "dup"}, headers=headers)
    assert_problem(first, 409, "duplicate_name")
    # Once the obstacle is gone the request would succeed, but the key replays.
    r = client.delete(f"/v1/api-keys/{made.json()['id']}", headers=member.headers)
    assert r.status_code == 200, r.text
    second = client.post("/v1/api-keys", json={"name": "dup"}, headers=headers)
    assert_problem(second, 409, "duplicate_name")
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    # Validation failures are replayed as well.
    headers = {**member.headers, "Idempotency-Key": "bad-name"}
    first = client.post("/v1/api-keys", json={"name": ""}, headers=headers)
    assert_problem(first, 422, "validation_failed")
    second = client.post("/v1/api-keys", json={"name": ""}, headers=headers)
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content


def test_requests_without_a_key_or_other_methods_are_not_replayed(
    make_client: ClientFactory, member: Party
) -> None:
    client = make_client()
    a = client.post("/v1/api-keys", json={"name": "a"}, headers=member.headers)
    assert a.status_code == 201
    b = client.post("/v1/api-keys", json={"name": "a"}, headers=member.headers)
    assert_problem(b, 409, "duplicate_name")
    # GET ignores the header.
    headers = {**member.headers, "Idempotency-Key": "get-key"}
    for _ in range(2):
        r = client.get("/v1/me", headers=headers)
        assert r.status_code == 200
        assert "idempotent-replayed" not in r.headers


# -- request ids --------------------------------------------------------------------


def test_request_id_is_returned(make_client: ClientFactory) -> None:
    client = make_client()
    r = client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    r2 = client.get("/nowhere")
    assert r2.status_code == 404
    assert re.fullmatch(r"[0-9a-f]{32}", r2.headers["x-request-id"])
    assert r2.headers["x-request-id"] != r.headers["x-request-id"]


def test_well_formed_client_request_id_is_echoed(make_client: ClientFactory) -> None:
    client = make_client()
    for given in ("req-12345678", "a.b_c-D.e.f", "x" * 64):
        r = client.get("/health", headers={"X-Request-Id": given})
        assert r.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["short", "x" * 65, "has space here", "semi;colon1"])
def test_malformed_client_request_id_is_replaced(
    make_client: ClientFactory, given: str
) -> None:
    client = make_client()
    r = client.get("/health", headers={"X-Request-Id": given})
    assert r.headers["x-request-id"] != given
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert r.headers.get_list("x-request-id") == [r.headers["x-request-id"]]


def test_a_server_error_releases_the_key(
    make_client: ClientFactory, member: Party, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marketplace.services.identity import IdentityService

    client = make_client()
    real = IdentityService.create_api_key
    calls: list[str] = []

    def flaky(self: IdentityService, *args: Any, **kwargs: Any) -> Any:
        calls.append("call")
        if len(calls) == 1:
            raise RuntimeError("database hiccup")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(IdentityService, "create_api_key", flaky)
    headers = {**member.headers, "Idempotency-Key": "retry-after-500"}
    first = client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert_problem(first, 500, "internal_error")
    second = client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert second.status_code == 201, second.text
    assert "idempotent-replayed" not in second.headers
    third = client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert third.headers["idempotent-replayed"] == "true"
    assert third.content == second.content
    assert len(calls) == 2


def test_a_key_still_in_flight_is_refused(
    make_client: ClientFactory, member: Party, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marketplace.services.identity import IdentityService

    client = make_client()
    entered, release = threading.Event(), threading.Event()
    real = IdentityService.create_api_key

    def slow(self: IdentityService, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(10)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(IdentityService, "create_api_key", slow)
    headers = {**member.headers, "Idempotency-Key": "in-flight"}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            client.post, "/v1/api-keys", json={"name": "ci"}, headers=headers
        )
        assert entered.wait(10)
        second = client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
        release.set()
        done = first.result(timeout=10)
    assert_problem(second, 409, "idempotency_key_in_use")
    assert second.headers["retry-after"] == "1"
    assert done.status_code == 201, done.text
    third = client.post("/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert third.headers["idempotent-replayed"] == "true"
    assert third.content == done.content

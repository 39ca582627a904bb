"""Every error is RFC 9457 problem JSON with a stable code."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from marketplace.db import Database
from marketplace.models import Role
from marketplace.services.identity import IdentityService
from tests.factories import (
    PROBLEM_KEYS,
    Party,
    assert_problem,
    create_random_org,
    dataset_body,
)


@pytest.fixture
def provider(db: Database) -> Party:
    """An admitted provider."""
    return create_random_org(db, Role.PROVIDER)


def test_unknown_route_is_404(client: TestClient) -> None:
    for method in ("GET", "POST", "DELETE"):
        r = client.request(method, "/v1/no-such-thing")
        body = assert_problem(r, 404, "not_found")
        assert body["detail"] == "no endpoint at /v1/no-such-thing"
        assert body["instance"] == "/v1/no-such-thing"


def test_wrong_method_is_405(client: TestClient, provider: Party) -> None:
    r = client.delete("/v1/me", headers=provider.headers)
    body = assert_problem(r, 405, "method_not_allowed")
    assert body["detail"] == "DELETE is not allowed on /v1/me"
    assert "GET" in r.headers["allow"]
    r = client.put("/health")
    assert_problem(r, 405, "method_not_allowed")


def test_missing_credentials_is_401_with_challenge(client: TestClient) -> None:
    r = client.get("/v1/me")
    assert_problem(r, 401, "authentication_required")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.get("/v1/me", headers={"Authorization": "Bearer vx_nope_nope"})
    assert_problem(r, 401, "invalid_credentials")


def test_wrong_role_is_403(client: TestClient, provider: Party) -> None:
    r = client.get("/v1/catalog/search", headers=provider.headers)
    body = assert_problem(r, 403, "role_required")
    assert "buyer" in body["detail"]


@pytest.mark.parametrize(
    "content",
    [b'{"name": ', b"{'name': 'x'}", b'{"name": "x"', b"\xff\xfe", b"nul\x00l"],
    ids=["truncated", "single-quotes", "unclosed", "not-utf8", "garbage"],
)
def test_malformed_json_body_is_422(
    client: TestClient, provider: Party, content: bytes
) -> None:
    r = client.post(
        "/v1/api-keys",
        content=content,
        headers={**provider.headers, "Content-Type": "application/json"},
    )
    body = assert_problem(r, 422, "validation_failed")
    assert isinstance(body["errors"], list) and body["errors"]
    for error in body["errors"]:
        assert set(error) == {"field", "message", "code"}
        assert error["field"] == "body"
    assert body["errors"][0]["code"] == "json_invalid"


def test_missing_body_is_422(client: TestClient, provider: Party) -> None:
    r = client.post("/v1/api-keys", headers=provider.headers)
    body = assert_problem(r, 422, "validation_failed")
    assert body["errors"] == [
        {"field": "body", "message": "Field required", "code": "missing"}
    ]


def _fields(body: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["code"] for e in body["errors"]}


def test_validation_errors_name_each_field(client: TestClient, provider: Party) -> None:
    ds = dataset_body()
    ds["policy"]["budget_per_buyer"]["epsilon"] = -1
    ds["policy"]["min_group_size"] = 1
    ds["pricing_plan"]["currency"] = "euro"
    r = client.post("/v1/datasets", json=ds, headers=provider.headers)
    body = assert_problem(r, 422, "validation_failed")
    fields = _fields(body)
    assert fields["policy.budget_per_buyer.epsilon"] == "greater_than"
    assert fields["policy.min_group_size"] == "greater_than_equal"
    assert any(
        f.startswith("pricing_plan.") and f.endswith(".currency") for f in fields
    )
    for error in body["errors"]:
        assert set(error) == {"field", "message", "code"}
        assert not error["field"].startswith("body")
        assert error["message"]
    assert "policy.budget_per_buyer.epsilon: " in body["detail"]


def test_policy_contradictions_are_reported_per_field(
    client: TestClient, provider: Party
) -> None:
    ds = dataset_body()
    ds["policy"]["budget_per_buyer"] = {"epsilon": 50.0, "delta": 1e-4}
    ds["policy"]["purposes"] = ["research", "marketing"]
    r = client.post("/v1/datasets", json=ds, headers=provider.headers)
    body = assert_problem(r, 422, "validation_failed")
    assert _fields(body) == {
        "policy.budget_per_buyer.epsilon": "contradiction",
        "policy.budget_per_buyer.delta": "contradiction",
        "policy.prohibitions": "contradiction",
    }
    by_field = {e["field"]: e["message"] for e in body["errors"]}
    assert "exceeds the dataset's total" in by_field["policy.budget_per_buyer.epsilon"]
    assert "marketing" in by_field["policy.prohibitions"]


def test_query_and_path_errors_are_prefixed(
    client: TestClient, db: Database, provider: Party
) -> None:
    buyer = create_random_org(db, Role.BUYER)
    r = client.get("/v1/catalog/search", params={"limit": 0}, headers=buyer.headers)
    body = assert_problem(r, 422, "validation_failed")
    assert _fields(body) == {"query.limit": "greater_than_equal"}
    r = client.get("/v1/datasets/not-a-uuid", headers=provider.headers)
    body = assert_problem(r, 422, "validation_failed")
    assert _fields(body) == {"path.dataset_id": "uuid_parsing"}


def test_many_validation_errors_are_summarised(client: TestClient) -> None:
    r = client.post("/v1/auth/signup", json={})
    body = assert_problem(r, 422, "validation_failed")
    assert len(body["errors"]) == 6
    assert body["detail"].endswith("; and 1 more")
    assert {e["code"] for e in body["errors"]} == {"missing"}


def test_domain_conflict_is_409(client: TestClient, provider: Party) -> None:
    assert (
        client.post(
            "/v1/api-keys", json={"name": "k"}, headers=provider.headers
        ).status_code
        == 201
    )
    r = client.post("/v1/api-keys", json={"name": "k"}, headers=provider.headers)
    assert_problem(r, 409, "duplicate_name")


def test_unexpected_exception_is_500_without_its_text(
    client: TestClient, provider: Party, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "connection to 10.0.0.7 failed: password=hunter2"

    def boom(self: IdentityService, *args: object, **kwargs: object) -> None:
        raise RuntimeError(secret)

    monkeypatch.setattr(IdentityService, "list_api_keys", boom)
    r = client.get(
        "/v1/api-keys", headers={**provider.headers, "X-Request-Id": "trace-500-abc"}
    )
    body = assert_problem(r, 500, "internal_error")
    assert body["title"] == "Internal error"
    assert body["instance"] == "/v1/api-keys"
    assert set(body) == PROBLEM_KEYS | {"instance"}
    assert secret not in r.text
    assert "hunter2" not in r.text and "RuntimeError" not in r.text
    # The request id lets an operator find the logged traceback.
    assert r.headers["x-request-id"] == "trace-500-abc"
    # The app keeps serving.
    monkeypatch.undo()
    assert client.get("/v1/api-keys", headers=provider.headers).status_code == 200


def _sign_up(client: TestClient, name: str, email: str, **changes: Any) -> Any:
    body = {
        "organisation_name": name,
        "country": "DE",
        "roles": ["buyer"],
        "email": email,
        "display_name": "Ada",
        "password": "correct horse battery",
        **changes,
    }
    return client.post("/v1/auth/signup", json=body)


def test_taken_organisation_name_at_sign_up_is_409(client: TestClient) -> None:
    assert _sign_up(client, "Acme", "a@example.org").status_code == 201
    body = assert_problem(
        _sign_up(client, "Acme", "b@example.org"), 409, "duplicate_name"
    )
    assert "Acme" in body["detail"]
    assert_problem(_sign_up(client, "Acme 2", "a@example.org"), 409, "duplicate_email")
    # Nothing half-created: the second e-mail address is still free.
    assert _sign_up(client, "Beta", "b@example.org").status_code == 201


def test_string_patterns_are_enforced(client: TestClient, provider: Party) -> None:
    r = client.post("/v1/api-keys", json={"name": "bad$name"}, headers=provider.headers)
    body = assert_problem(r, 422, "validation_failed")
    assert _fields(body) == {"name": "string_pattern_mismatch"}
    body = assert_problem(
        _sign_up(client, "Gamma", "g@example.org", country="Germany"),
        422,
        "validation_failed",
    )
    assert _fields(body) == {"country": "string_pattern_mismatch"}
    ds = dataset_body(languages=["english"], spatial_coverage=["de"])
    ds["columns"][0]["name"] = "Patient ID"
    r = client.post("/v1/datasets", json=ds, headers=provider.headers)
    fields = _fields(assert_problem(r, 422, "validation_failed"))
    assert fields == {
        "languages.0": "string_pattern_mismatch",
        "spatial_coverage.0": "string_pattern_mismatch",
        "columns.0.name": "string_pattern_mismatch",
    }

"""Sign-up, password login, sessions and API keys through the API."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import select

from marketplace.db import Database
from marketplace.models import ApiKey, Role, User, UserSession
from marketplace.services.identity import IdentityService
from tests.factories import create_random_org

PASSWORD = "a long enough password"


def _body(**overrides: object) -> dict[str, object]:
    """A valid sign-up body; keys overridden by ``overrides``."""
    body: dict[str, object] = {
        "organisation_name": "Acme Analytics",
        "country": "FR",
        "roles": ["buyer"],
        "email": "ana@acme.example",
        "display_name": "Ana",
        "password": PASSWORD,
    }
    return body | overrides


def _signup(client: TestClient, **overrides: object) -> dict:
    r = client.post("/v1/auth/signup", json=_body(**overrides))
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_signup_creates_pending_org_and_hashes_password(
    client: TestClient, db: Database
) -> None:
    out = _signup(client)
    assert out["organisation"]["status"] == "pending"
    assert out["user"]["email"] == "ana@acme.example"
    assert "password" not in str(out)
    with db.session() as s:
        user = s.exec(select(User)).one()
    assert PASSWORD not in user.password_hash
    assert user.password_hash.startswith("$argon2id$")


def test_signup_rejects_operator_role_and_duplicates(client: TestClient) -> None:
    r = client.post(
        "/v1/auth/signup",
        json=_body(
            organisation_name="Sneaky", roles=["operator"], email="x@sneaky.example"
        ),
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "roles"
    _signup(client)
    r = client.post(
        "/v1/auth/signup",
        json=_body(organisation_name="Other", email="ANA@acme.example"),
    )
    assert r.status_code == 409
    assert r.json()["code"] == "duplicate_email"


def test_signup_short_password_names_field(client: TestClient) -> None:
    r = client.post(
        "/v1/auth/signup",
        json=_body(
            organisation_name="Short", email="s@short.example", password="short"
        ),
    )
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["password"]


def test_login_session_cookie_and_logout(client: TestClient, db: Database) -> None:
    _signup(client)
    r = client.post(
        "/v1/auth/login",
        json={"email": "ana@acme.example", "password": "wrong password!"},
    )
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_credentials"
    r = client.post(
        "/v1/auth/login", json={"email": "Ana@Acme.example", "password": PASSWORD}
    )
    assert r.status_code == 200
    token = r.json()["token"]
    assert token.startswith("vxs_")
    assert "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    with db.session() as s:
        stored = s.exec(select(UserSession)).one()
    assert token not in stored.token_hash
    # The cookie authenticates (TestClient keeps it) and so does the bearer token.
    me = client.get("/v1/me")
    assert me.status_code == 200 and me.json()["credential"] == "session"
    client.cookies.clear()
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    # A pending organisation may create keys but not search.
    r = client.post(
        "/v1/api-keys",
        json={"name": "laptop"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201
    key = r.json()["secret"]
    r = client.get("/v1/catalog/search", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["code"] == "organisation_not_admitted"
    r = client.post("/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 204
    r = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["code"] == "credential_revoked"


def test_expired_session_is_refused(client: TestClient, db: Database) -> None:
    _signup(client)
    with db.session() as s:
        token, _ = IdentityService(s).login(
            "ana@acme.example", PASSWORD, timedelta(seconds=-1)
        )
    r = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["code"] == "credential_expired"


def test_api_key_shown_once_hashed_named_and_last_used(
    client: TestClient, db: Database
) -> None:
    party = create_random_org(db, Role.BUYER)
    r = client.post("/v1/api-keys", json={"name": "ci"}, headers=party.headers)
    assert r.status_code == 201
    created = r.json()
    secret = created["secret"]
    r = client.post("/v1/api-keys", json={"name": "ci"}, headers=party.headers)
    assert r.status_code == 409 and r.json()["code"] == "duplicate_name"
    listing = client.get("/v1/api-keys", headers=party.headers).json()
    assert {k["name"] for k in listing} == {"test", "ci"}
    assert secret not in str(listing)
    with db.session() as s:
        stored = s.exec(select(ApiKey).where(ApiKey.name == "ci")).one()
    assert secret not in stored.key_hash and stored.last_used_at is None
    assert (
        client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code
        == 200
    )
    with db.session() as s:
        stored = s.exec(select(ApiKey).where(ApiKey.name == "ci")).one()
    assert stored.last_used_at is not None
    r = client.delete(f"/v1/api-keys/{created['id']}", headers=party.headers)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 401 and r.json()["code"] == "credential_revoked"
    # The name is free again once the key is revoked.
    assert (
        client.post(
            "/v1/api-keys", json={"name": "ci"}, headers=party.headers
        ).status_code
        == 201
    )


def test_operator_admits_and_suspends(client: TestClient, db: Database) -> None:
    operator = create_random_org(db, Role.OPERATOR)
    org = _signup(client)["organisation"]
    r = client.post(
        f"/v1/organisations/{org['id']}/suspend",
        json={"reason": "x"},
        headers=operator.headers,
    )
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    r = client.post(f"/v1/organisations/{org['id']}/admit", headers=operator.headers)
    assert r.status_code == 200 and r.json()["status"] == "admitted"
    r = client.post(
        f"/v1/organisations/{org['id']}/suspend", json={}, headers=operator.headers
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
    r = client.post(
        f"/v1/organisations/{org['id']}/suspend",
        json={"reason": "fraud review"},
        headers=operator.headers,
    )
    assert r.status_code == 200
    assert (
        r.json()["status"] == "suspended"
        and r.json()["status_reason"] == "fraud review"
    )
    r = client.get(
        "/v1/organisations", params={"status": "suspended"}, headers=operator.headers
    )
    assert [o["id"] for o in r.json()] == [org["id"]]

"""The whole role × endpoint access matrix, against an explicit table (ADR 0004).

``EXPECTED`` is the access policy of the API. A change of any endpoint's
``allow(...)`` declaration, or a new endpoint, fails :func:`test_table_is_complete`
or :func:`test_declarations_match_table` until this table is updated too, so a
change of access is always a visible change here.

Every non-public endpoint is then called with a realistic request by every kind
of caller: anonymous, with bogus and revoked credentials, with each role, and
from pending and suspended organisations. Each test covers one endpoint and one
aspect (credentials, roles, organisation status); each caller is a subtest.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from marketplace.api import create_app
from marketplace.api.deps import AccessRule, access_rule
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.models import OrganisationStatus, Role
from marketplace.services.identity import IdentityService
from mpc_engine.protocol import (
    Attestation,
    NodeKey,
    SignedAttestation,
    iso_utc,
    utc_now,
)
from tests.conftest import make_settings
from tests.factories import (
    PROBLEM_KEYS,
    Party,
    assert_problem,
    create_random_listed_dataset,
    create_random_org,
    dataset_body,
    version_body,
)

PRO, BUY, OPS, REG = Role.PROVIDER, Role.BUYER, Role.OPERATOR, Role.REGULATOR
ALL_ROLES = (PRO, BUY, OPS, REG)

Roles = frozenset[Role] | Literal["any"]
OrgRule = Literal["admitted", "not_suspended", "any"]
Rule = tuple[Roles, OrgRule] | Literal["public"]

EXPECTED: dict[str, Rule] = {
    # health and auth
    "health": "public",
    "sign_up": "public",
    "log_in": "public",
    "log_out": ("any", "any"),
    "get_me": ("any", "any"),
    # organisations and API keys
    "list_organisations": (frozenset({OPS, REG}), "admitted"),
    "create_organisation": (frozenset({OPS}), "admitted"),
    "get_organisation": ("any", "any"),
    "admit_organisation": (frozenset({OPS}), "admitted"),
    "suspend_organisation": (frozenset({OPS}), "admitted"),
    "list_api_keys": ("any", "not_suspended"),
    "create_api_key": ("any", "not_suspended"),
    "revoke_api_key": ("any", "not_suspended"),
    # datasets
    "create_dataset": (frozenset({PRO}), "not_suspended"),
    "list_my_datasets": (frozenset({PRO}), "not_suspended"),
    "get_dataset": ("any", "not_suspended"),
    "update_dataset": (frozenset({PRO}), "not_suspended"),
    "list_dataset_versions": ("any", "not_suspended"),
    "create_dataset_version": (frozenset({PRO}), "not_suspended"),
    "set_live_version": (frozenset({PRO}), "not_suspended"),
    "transition_dataset": (frozenset({PRO, OPS}), "not_suspended"),
    "get_version_attestation": ("any", "not_suspended"),
    "get_dataset_budget": ("any", "admitted"),
    # catalog
    "search_catalog": (frozenset({BUY, OPS, REG}), "admitted"),
    # blobs and HE contexts
    "upload_blob": ("any", "admitted"),
    "get_blob": ("any", "admitted"),
    "upload_he_context": (frozenset({BUY}), "admitted"),
    "get_he_context": (frozenset({BUY, PRO}), "admitted"),
    # data nodes
    "register_node": (frozenset({PRO}), "admitted"),
    "list_nodes": (frozenset({PRO, OPS, REG}), "admitted"),
    "get_node": ("any", "admitted"),
    "submit_attestation": (frozenset({PRO}), "admitted"),
    "next_job": (frozenset({PRO}), "admitted"),
    "list_node_jobs": (frozenset({PRO}), "admitted"),
    # jobs
    "create_job": (frozenset({BUY}), "admitted"),
    "list_jobs": ("any", "admitted"),
    "get_job": ("any", "admitted"),
    "approve_job": (frozenset({PRO}), "admitted"),
    "deny_job": (frozenset({PRO}), "admitted"),
    "start_job": (frozenset({PRO}), "admitted"),
    "submit_job_result": (frozenset({PRO}), "admitted"),
    "get_job_receipt": ("any", "admitted"),
    # ledger
    "get_receipt_proof": ("any", "admitted"),
    "get_ledger_status": (frozenset({OPS, REG}), "admitted"),
    "verify_ledger": (frozenset({OPS, REG}), "admitted"),
    "ledger_rpc": ("any", "admitted"),
    # trading
    "create_quote": (frozenset({BUY}), "admitted"),
    "create_quote_menu": (frozenset({BUY}), "admitted"),
    "create_order": (frozenset({BUY}), "admitted"),
    "get_order": ("any", "admitted"),
    "list_entitlements": ("any", "admitted"),
    "get_entitlement": ("any", "admitted"),
    "list_entitlement_charges": ("any", "admitted"),
    "revoke_entitlement": (frozenset({PRO, OPS}), "admitted"),
    "close_entitlement": (frozenset({BUY}), "admitted"),
    "top_up_credits": (frozenset({OPS}), "admitted"),
    "list_balances": ("any", "admitted"),
    "set_payout_account": (frozenset({OPS}), "admitted"),
    "register_wallet": ("any", "admitted"),
    "get_wallet": ("any", "admitted"),
    "stripe_webhook": "public",
    "run_settlement": (frozenset({OPS}), "admitted"),
    "list_settlements": (frozenset({OPS, REG}), "admitted"),
    "get_settlement": (frozenset({OPS, REG}), "admitted"),
    "get_statement": ("any", "admitted"),
    "check_journal": (frozenset({OPS, REG}), "admitted"),
}

PROTECTED = sorted(op for op, rule in EXPECTED.items() if rule != "public")


# -- realistic requests ------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """What a request may refer to: the caller and another provider's listing."""

    caller: Party
    listed_id: str


def _random(_: Ctx) -> str:
    return str(uuid.uuid4())


def _listed(ctx: Ctx) -> str:
    return ctx.listed_id


def _own_org(ctx: Ctx) -> str:
    return str(ctx.caller.org_id)


def _sha(_: Ctx) -> str:
    return secrets.token_hex(32)


def _attestation() -> Any:
    """A well-signed attestation from a node nobody registered."""
    key = NodeKey.generate()
    now = iso_utc(utc_now())
    att = Attestation(
        dataset_id=uuid.uuid4(),
        node_id=uuid.uuid4(),
        content_hash=secrets.token_hex(32),
        row_count=10,
        columns=[],
        source_modified_at=now,
        computed_at=now,
    )
    return SignedAttestation.sign(att, key).model_dump(mode="json")


def _job_for(ctx: Ctx) -> Any:
    """A job on the listed dataset, which no node serves (409 ``no_node``)."""
    return {
        "dataset_id": ctx.listed_id,
        "kind": "aggregate",
        "purpose": "research",
        "params": {"statistics": ["count"], "group_by": ["region"]},
    }


@dataclass(frozen=True)
class Call:
    """How to call one endpoint: path parameter values and a JSON or raw body."""

    params: dict[str, Callable[[Ctx], str]]
    body: Callable[[], Any] | None = None
    content: Callable[[], bytes] | None = None
    body_for: Callable[[Ctx], Any] | None = None


CALLS: dict[str, Call] = {
    "log_out": Call({}),
    "get_me": Call({}),
    "list_organisations": Call({}),
    "create_organisation": Call(
        {},
        lambda: {
            "name": f"New org {secrets.token_hex(4)}",
            "country": "FR",
            "roles": ["buyer"],
        },
    ),
    "get_organisation": Call({"org_id": _own_org}),
    # Admitting oneself (already admitted) is a 409, not a 403.
    "admit_organisation": Call({"org_id": _own_org}),
    # Suspending oneself is a 403 ``self_suspension``; an unknown org is a 404.
    "suspend_organisation": Call({"org_id": _random}, lambda: {"reason": "audit"}),
    "list_api_keys": Call({}),
    "create_api_key": Call({}, lambda: {"name": f"key {secrets.token_hex(4)}"}),
    "revoke_api_key": Call({"key_id": _random}),
    "create_dataset": Call({}, dataset_body),
    "list_my_datasets": Call({}),
    "get_dataset": Call({"dataset_id": _listed}),
    # Changes to another provider's listing are 403 by object rules: use unknown ids.
    "update_dataset": Call({"dataset_id": _random}, lambda: {"title": "New title"}),
    "list_dataset_versions": Call({"dataset_id": _listed}),
    "create_dataset_version": Call({"dataset_id": _random}, version_body),
    "set_live_version": Call(
        {"dataset_id": _random}, lambda: {"version_id": str(uuid.uuid4())}
    ),
    "transition_dataset": Call({"dataset_id": _random}, lambda: {"to": "delisted"}),
    "search_catalog": Call({}),
    "get_version_attestation": Call({"dataset_id": _listed, "version_id": _random}),
    "get_dataset_budget": Call({"dataset_id": _listed}),
    "upload_blob": Call({}, content=lambda: secrets.token_bytes(64)),
    "get_blob": Call({"sha256": _sha}),
    # Not a context: 422 ``malformed_context`` once access is granted.
    "upload_he_context": Call({}, content=lambda: b"not a context"),
    "get_he_context": Call({"context_id": _sha}),
    "register_node": Call(
        {},
        lambda: {"name": "node", "public_key": NodeKey.generate().public_key_hex},
    ),
    "list_nodes": Call({}),
    "get_node": Call({"node_id": _random}),
    "submit_attestation": Call({"node_id": _random}, _attestation),
    "next_job": Call({"node_id": _random}),
    "list_node_jobs": Call({"node_id": _random}),
    "create_job": Call({}, body_for=_job_for),
    "list_jobs": Call({}),
    "get_job": Call({"job_id": _random}),
    "approve_job": Call({"job_id": _random}, lambda: {"note": "ok"}),
    "deny_job": Call({"job_id": _random}, lambda: {"reason": "no"}),
    "start_job": Call({"job_id": _random}),
    "submit_job_result": Call(
        {"job_id": _random},
        lambda: {"outcome": "failed", "reason_code": "node_error", "reason": "x"},
    ),
    "get_job_receipt": Call({"job_id": _random}),
    "get_receipt_proof": Call({"job_id": _random}),
    "get_ledger_status": Call({}),
    "verify_ledger": Call({}),
    "ledger_rpc": Call(
        {}, lambda: {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    ),
    "create_quote": Call({}, body_for=lambda ctx: {"dataset_id": ctx.listed_id}),
    "create_quote_menu": Call(
        {}, body_for=lambda ctx: {"dataset_id": ctx.listed_id, "sensitivity": 1.0}
    ),
    # An unknown quote: 404 once access is granted.
    "create_order": Call({}, lambda: {"quote_id": str(uuid.uuid4())}),
    "get_order": Call({"order_id": _random}),
    "list_entitlements": Call({}),
    "get_entitlement": Call({"entitlement_id": _random}),
    "list_entitlement_charges": Call({"entitlement_id": _random}),
    "revoke_entitlement": Call(
        {"entitlement_id": _random}, lambda: {"reason": "terms breached"}
    ),
    "close_entitlement": Call({"entitlement_id": _random}),
    "top_up_credits": Call(
        {"organisation_id": _own_org},
        lambda: {"amount_minor": 100, "reference": secrets.token_hex(8)},
    ),
    "list_balances": Call({}),
    # Stripe is not configured in these tests: 422 once access is granted.
    "set_payout_account": Call({"organisation_id": _own_org}),
    # A malformed signature: 422 once access is granted.
    "register_wallet": Call(
        {"organisation_id": _own_org},
        lambda: {"address": "0x" + "11" * 20, "signature": "0x" + "ab" * 65},
    ),
    # No wallet registered: 404 once access is granted.
    "get_wallet": Call({"organisation_id": _own_org}),
    "run_settlement": Call(
        {},
        lambda: {
            "period_start": f"2001-01-01T00:00:{secrets.randbelow(60):02d}Z",
            "period_end": f"2001-01-02T00:{secrets.randbelow(60):02d}:00Z",
        },
    ),
    "list_settlements": Call({}),
    "get_settlement": Call({"settlement_id": _random}),
    "get_statement": Call({"settlement_id": _random, "payee_id": _random}),
    "check_journal": Call({}),
}


def _app(db: Database, tmp: Path) -> FastAPI:
    return create_app(make_settings(tmp), db=db, kv=MemoryStore(), migrate=False)


@dataclass(frozen=True)
class Endpoint:
    """An API route with its effective method and path."""

    route: APIRoute
    method: str
    path: str


def _routes(app: FastAPI) -> dict[str | None, Endpoint]:
    """Every API route of ``app`` by operation id (included routers flattened)."""
    out: dict[str | None, Endpoint] = {}
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        if isinstance(route, APIRoute):
            assert route.operation_id not in out, f"{route.operation_id} twice"
            (method,) = ctx.methods or route.methods
            out[route.operation_id] = Endpoint(route, method, ctx.path or route.path)
    return out


# -- the table itself ----------------------------------------------------------------


def test_table_is_complete(sqlite_db: Database, tmp_path: Path) -> None:
    routes = _routes(_app(sqlite_db, tmp_path))
    assert None not in routes, "every route needs an explicit operation_id"
    assert set(routes) == set(EXPECTED), (
        f"routes missing from EXPECTED: {sorted(set(routes) - set(EXPECTED))}; "
        f"stale entries: {sorted(set(EXPECTED) - set(routes))}"
    )
    assert set(CALLS) == set(PROTECTED)


@pytest.mark.parametrize("operation_id", sorted(EXPECTED))
def test_declarations_match_table(
    sqlite_db: Database, tmp_path: Path, operation_id: str
) -> None:
    route = _routes(_app(sqlite_db, tmp_path))[operation_id].route
    expected = EXPECTED[operation_id]
    rule = access_rule(route)
    if expected == "public":
        assert rule is None, f"{operation_id} is declared {rule}, expected public"
        return
    roles, org = expected
    assert rule == AccessRule(frozenset() if roles == "any" else roles, org)


def test_openapi_shows_the_rules(sqlite_db: Database, tmp_path: Path) -> None:
    """The declared rule is visible as security scopes in the OpenAPI document."""
    app = _app(sqlite_db, tmp_path)
    ops = {
        op["operationId"]: op
        for path in app.openapi()["paths"].values()
        for op in path.values()
    }
    for operation_id, expected in EXPECTED.items():
        security = ops[operation_id].get("security")
        if expected == "public":
            assert not security, operation_id
            continue
        roles, org = expected
        scopes = {s for entry in security for scheme in entry.values() for s in scheme}
        wanted = {f"org:{org}"} | {
            f"role:{r.value}" for r in (() if roles == "any" else roles)
        }
        assert wanted <= scopes, (operation_id, scopes)


# -- calling every endpoint as every caller ------------------------------------------


def assert_problem_shape(r: httpx.Response) -> None:
    """``r`` (an error) is RFC 9457 problem JSON."""
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert PROBLEM_KEYS <= body.keys(), body
    assert body["status"] == r.status_code
    assert body["type"].endswith(body["code"].replace("_", "-"))


def assert_permitted(r: httpx.Response) -> None:
    """Access was granted (the request may still fail for other reasons)."""
    assert r.status_code not in (401, 403), r.text
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.status_code in (404, 409, 422), r.text
        assert_problem_shape(r)


def _code(r: httpx.Response) -> str | None:
    try:
        return r.json().get("code")  # type: ignore[no-any-return]
    except ValueError:
        return None


def call(
    client: TestClient,
    operation_id: str,
    ctx: Ctx,
    headers: dict[str, str] | None,
) -> httpx.Response:
    """Make the realistic request for ``operation_id`` as ``ctx.caller``."""
    endpoint = _routes(client.app)[operation_id]  # type: ignore[arg-type]
    spec = CALLS[operation_id]
    path = endpoint.path.format(**{k: f(ctx) for k, f in spec.params.items()})
    if spec.content is not None:
        raw = {**(headers or {}), "Content-Type": "application/octet-stream"}
        return client.request(
            endpoint.method, path, content=spec.content(), headers=raw
        )
    body = spec.body_for(ctx) if spec.body_for else spec.body() if spec.body else None
    return client.request(endpoint.method, path, json=body, headers=headers)


@pytest.fixture
def listed_id(client: TestClient, db: Database) -> str:
    """A listed dataset of a provider none of the callers belongs to."""
    owner = create_random_org(db, Role.PROVIDER)
    return str(create_random_listed_dataset(client, owner)["id"])


def _allowed_roles(operation_id: str) -> tuple[Role, ...]:
    roles, _ = EXPECTED[operation_id]  # type: ignore[misc]
    return ALL_ROLES if roles == "any" else tuple(r for r in ALL_ROLES if r in roles)


@pytest.mark.parametrize("operation_id", PROTECTED)
def test_credentials(
    client: TestClient,
    db: Database,
    listed_id: str,
    operation_id: str,
    subtests: pytest.Subtests,
) -> None:
    """Without valid credentials every protected endpoint is 401."""
    party = create_random_org(db, *ALL_ROLES)
    ctx = Ctx(party, listed_id)
    with db.session() as session:
        identity = IdentityService(session)
        revoked = identity.create_api_key(party.org_id, "revoked").secret
        key_id = identity.find_api_key(revoked.split("_")[1]).id
        identity.revoke_api_key(party.org_id, key_id)
    unknown_key = f"vx_{'a' * 12}_{secrets.token_urlsafe(32)}"
    cases: list[tuple[str, dict[str, str] | None, str]] = [
        ("no credentials", None, "authentication_required"),
        ("empty bearer", {"Authorization": "Bearer "}, "authentication_required"),
        ("bogus token", {"Authorization": "Bearer nonsense"}, "invalid_credentials"),
        (
            "unknown key",
            {"Authorization": f"Bearer {unknown_key}"},
            "invalid_credentials",
        ),
        (
            "wrong secret",
            {"Authorization": f"Bearer {party.key[:-4]}AAAA"},
            "invalid_credentials",
        ),
        (
            "unknown session",
            {"Authorization": "Bearer vxs_" + "x" * 43},
            "invalid_credentials",
        ),
        (
            "unknown session cookie",
            {"Cookie": "veilx_session=vxs_nothing"},
            "invalid_credentials",
        ),
        ("revoked key", {"Authorization": f"Bearer {revoked}"}, "credential_revoked"),
    ]
    for label, headers, code in cases:
        with subtests.test(msg=f"{operation_id} / {label}"):
            r = call(client, operation_id, ctx, headers)
            assert_problem(r, 401, code)
            assert r.headers["www-authenticate"].startswith("Bearer")
    with subtests.test(msg=f"{operation_id} / valid key of an all-role org"):
        assert_permitted(call(client, operation_id, ctx, party.headers))


@pytest.mark.parametrize("operation_id", PROTECTED)
def test_roles(
    client: TestClient,
    db: Database,
    listed_id: str,
    operation_id: str,
    subtests: pytest.Subtests,
) -> None:
    """Each role, in an admitted organisation, is let in exactly when the table says."""
    allowed = _allowed_roles(operation_id)
    for role in ALL_ROLES:
        party = create_random_org(db, role)
        with subtests.test(msg=f"{operation_id} as {role.value}"):
            r = call(client, operation_id, Ctx(party, listed_id), party.headers)
            if role in allowed:
                assert_permitted(r)
            else:
                assert_problem(r, 403, "role_required")


@pytest.mark.parametrize("operation_id", PROTECTED)
def test_organisation_status(
    client: TestClient,
    db: Database,
    listed_id: str,
    operation_id: str,
    subtests: pytest.Subtests,
) -> None:
    """Pending and suspended organisations, with an allowed role."""
    _, org_rule = EXPECTED[operation_id]  # type: ignore[misc]
    refused = {
        OrganisationStatus.PENDING: org_rule == "admitted",
        OrganisationStatus.SUSPENDED: org_rule != "any",
    }
    for role in _allowed_roles(operation_id):
        for status, is_refused in refused.items():
            party = create_random_org(db, role, status=status)
            with subtests.test(msg=f"{operation_id} as {status.value} {role.value}"):
                r = call(client, operation_id, Ctx(party, listed_id), party.headers)
                if is_refused:
                    assert_problem(r, 403, "organisation_not_admitted")
                else:
                    assert_permitted(r)


def test_role_is_checked_before_organisation_status(
    client: TestClient, db: Database
) -> None:
    """A pending org without the role hears about the role, not its admission."""
    buyer = create_random_org(db, Role.BUYER, status=OrganisationStatus.PENDING)
    assert_problem(
        client.get("/v1/datasets", headers=buyer.headers), 403, "role_required"
    )
    suspended = create_random_org(
        db, Role.PROVIDER, status=OrganisationStatus.SUSPENDED
    )
    assert_problem(
        client.get("/v1/catalog/search", headers=suspended.headers),
        403,
        "role_required",
    )


def test_public_endpoints_need_no_credentials(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    r = client.post(
        "/v1/auth/login",
        json={"email": "nobody@example.org", "password": "wrong password"},
    )
    assert_problem(r, 401, "invalid_credentials")


# -- object-level rules ------------------------------------------------------------


def _draft(client: TestClient, provider: Party) -> dict[str, Any]:
    r = client.post("/v1/datasets", json=dataset_body(), headers=provider.headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_another_providers_draft_is_not_found(client: TestClient, db: Database) -> None:
    owner = create_random_org(db, Role.PROVIDER)
    other = create_random_org(db, Role.PROVIDER)
    buyer = create_random_org(db, Role.BUYER)
    draft = _draft(client, owner)
    url = f"/v1/datasets/{draft['id']}"
    version = client.post(f"{url}/versions", json=version_body(), headers=owner.headers)
    assert version.status_code == 201, version.text
    for party in (other, buyer):
        assert_problem(client.get(url, headers=party.headers), 404, "not_found")
        assert_problem(
            client.get(f"{url}/versions", headers=party.headers), 404, "not_found"
        )
    for r in (
        client.patch(url, json={"title": "Taken over"}, headers=other.headers),
        client.post(f"{url}/versions", json=version_body(), headers=other.headers),
        client.put(
            f"{url}/live-version",
            json={"version_id": version.json()["id"]},
            headers=other.headers,
        ),
        client.post(
            f"{url}/transitions", json={"to": "delisted"}, headers=other.headers
        ),
    ):
        assert_problem(r, 404, "not_found")
    # The 404 for a hidden dataset is the same as for one that does not exist.
    hidden = client.get(url, headers=other.headers).json()
    absent = client.get(f"/v1/datasets/{uuid.uuid4()}", headers=other.headers).json()
    assert (hidden["status"], hidden["code"], hidden["title"]) == (
        absent["status"],
        absent["code"],
        absent["title"],
    )
    # Nothing changed.
    r = client.get(url, headers=owner.headers)
    assert r.json()["title"] == draft["title"]
    assert r.json()["status"] == "draft"


def test_operator_and_regulator_see_drafts(client: TestClient, db: Database) -> None:
    owner = create_random_org(db, Role.PROVIDER)
    draft = _draft(client, owner)
    for role in (Role.OPERATOR, Role.REGULATOR):
        party = create_random_org(db, role)
        r = client.get(f"/v1/datasets/{draft['id']}", headers=party.headers)
        assert r.status_code == 200, r.text


def test_another_providers_listing_cannot_be_changed(
    client: TestClient, db: Database
) -> None:
    owner = create_random_org(db, Role.PROVIDER)
    other = create_random_org(db, Role.PROVIDER)
    listed = create_random_listed_dataset(client, owner)
    url = f"/v1/datasets/{listed['id']}"
    assert client.get(url, headers=other.headers).status_code == 200
    assert_problem(
        client.patch(url, json={"title": "Taken over"}, headers=other.headers),
        403,
        "not_owner",
    )
    assert_problem(
        client.post(f"{url}/versions", json=version_body(), headers=other.headers),
        403,
        "not_owner",
    )
    assert_problem(
        client.put(
            f"{url}/live-version",
            json={"version_id": listed["live_version"]["id"]},
            headers=other.headers,
        ),
        403,
        "not_owner",
    )
    for to in ("delisted", "suspended"):
        assert_problem(
            client.post(
                f"{url}/transitions",
                json={"to": to, "reason": "mine now"},
                headers=other.headers,
            ),
            403,
            "transition_not_allowed",
        )
    r = client.get(url, headers=owner.headers)
    assert (r.json()["title"], r.json()["status"]) == (listed["title"], "listed")
    assert len(client.get(f"{url}/versions", headers=owner.headers).json()) == 1


def test_revoking_another_organisations_key_is_not_found(
    client: TestClient, db: Database
) -> None:
    alice = create_random_org(db, Role.BUYER)
    mallory = create_random_org(db, Role.BUYER, Role.OPERATOR)
    (key,) = client.get("/v1/api-keys", headers=alice.headers).json()
    assert_problem(
        client.delete(f"/v1/api-keys/{key['id']}", headers=mallory.headers),
        404,
        "not_found",
    )
    assert client.get("/v1/me", headers=alice.headers).status_code == 200
    (key,) = client.get("/v1/api-keys", headers=alice.headers).json()
    assert key["revoked_at"] is None
    # Revoking one's own key works, and takes effect at once.
    r = client.delete(f"/v1/api-keys/{key['id']}", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert_problem(
        client.get("/v1/me", headers=alice.headers), 401, "credential_revoked"
    )


def test_organisation_records(client: TestClient, db: Database) -> None:
    target = create_random_org(db, Role.PROVIDER)
    url = f"/v1/organisations/{target.org_id}"
    for roles in ((Role.BUYER,), (Role.PROVIDER,), (Role.BUYER, Role.PROVIDER)):
        party = create_random_org(db, *roles)
        assert_problem(
            client.get(url, headers=party.headers), 403, "not_your_organisation"
        )
    for role in (Role.OPERATOR, Role.REGULATOR):
        party = create_random_org(db, role)
        r = client.get(url, headers=party.headers)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == str(target.org_id)
    pending = create_random_org(db, Role.BUYER, status=OrganisationStatus.PENDING)
    r = client.get(f"/v1/organisations/{pending.org_id}", headers=pending.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending"


def test_operator_cannot_suspend_itself(client: TestClient, db: Database) -> None:
    operator = create_random_org(db, Role.OPERATOR)
    r = client.post(
        f"/v1/organisations/{operator.org_id}/suspend",
        json={"reason": "oops"},
        headers=operator.headers,
    )
    assert_problem(r, 403, "self_suspension")


def test_suspension_takes_effect_at_once(client: TestClient, db: Database) -> None:
    operator = create_random_org(db, Role.OPERATOR)
    buyer = create_random_org(db, Role.BUYER)
    assert client.get("/v1/catalog/search", headers=buyer.headers).status_code == 200
    r = client.post(
        f"/v1/organisations/{buyer.org_id}/suspend",
        json={"reason": "unpaid"},
        headers=operator.headers,
    )
    assert r.status_code == 200, r.text
    assert_problem(
        client.get("/v1/catalog/search", headers=buyer.headers),
        403,
        "organisation_not_admitted",
    )
    r = client.post(f"/v1/organisations/{buyer.org_id}/admit", headers=operator.headers)
    assert r.status_code == 200, r.text
    assert client.get("/v1/catalog/search", headers=buyer.headers).status_code == 200


def test_pending_buyer_reads_listings_by_id_but_cannot_search(
    client: TestClient, db: Database
) -> None:
    """The actual rule: ``get_dataset`` is ``not_suspended`` and a listed dataset
    is visible to every such caller, so a pending organisation can read a listing
    whose id it knows (not drafts), while discovery (search) needs admission.
    """
    owner = create_random_org(db, Role.PROVIDER)
    pending = create_random_org(db, Role.BUYER, status=OrganisationStatus.PENDING)
    listed = create_random_listed_dataset(client, owner)
    draft = _draft(client, owner)
    r = client.get(f"/v1/datasets/{listed['id']}", headers=pending.headers)
    assert r.status_code == 200, r.text
    assert_problem(
        client.get(f"/v1/datasets/{draft['id']}", headers=pending.headers),
        404,
        "not_found",
    )
    assert_problem(
        client.get("/v1/catalog/search", headers=pending.headers),
        403,
        "organisation_not_admitted",
    )
    suspended = create_random_org(db, Role.BUYER, status=OrganisationStatus.SUSPENDED)
    assert_problem(
        client.get(f"/v1/datasets/{listed['id']}", headers=suspended.headers),
        403,
        "organisation_not_admitted",
    )

"""Factories for test data: ``create_random_x(...)`` returning what tests need."""

from __future__ import annotations

import copy
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from marketplace.db import Database
from marketplace.models import OrganisationCreate, OrganisationStatus, Role
from marketplace.services.identity import IdentityService


@dataclass(frozen=True)
class Party:
    """An organisation with an API key."""

    org_id: uuid.UUID
    name: str
    key: str
    roles: tuple[Role, ...]

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header for this party."""
        return {"Authorization": f"Bearer {self.key}"}


def create_random_org(
    db: Database,
    *roles: Role,
    status: OrganisationStatus = OrganisationStatus.ADMITTED,
    name: str | None = None,
) -> Party:
    """Create an organisation with ``roles`` in ``status`` and issue it a key."""
    name = name or f"Org {secrets.token_hex(4)}"
    with db.session() as session:
        identity = IdentityService(session)
        org = identity.create_organisation(
            OrganisationCreate(
                name=name, country="DE", roles=list(roles or (Role.BUYER,))
            ),
            status=status,
        )
        key = identity.create_api_key(org.id, "test").secret
    return Party(org.id, name, key, tuple(roles))


_BASE_DATASET: dict[str, Any] = {
    "title": "Hospital admissions 2024",
    "description": "Anonymised inpatient admissions with length of stay and cost.",
    "keywords": ["hospital", "admissions", "cost"],
    "themes": ["health"],
    "publisher": "Meridian Health",
    "license": "proprietary",
    "temporal_start": "2024-01-01",
    "temporal_end": "2024-12-31",
    "spatial_coverage": ["DE"],
    "update_frequency": "monthly",
    "languages": ["en", "de"],
    "columns": [
        {
            "name": "patient_id",
            "type": "string",
            "sensitivity": "identifier",
            "description": "Pseudonymous patient id",
        },
        {
            "name": "age",
            "type": "integer",
            "sensitivity": "quasi_identifier",
            "unit": "years",
            "description": "Age at admission",
        },
        {
            "name": "region",
            "type": "categorical",
            "sensitivity": "public",
            "description": "Federal state",
        },
        {
            "name": "cost",
            "type": "float",
            "sensitivity": "sensitive",
            "unit": "EUR",
            "description": "Treatment cost",
        },
    ],
    "policy": {
        "permitted_kinds": ["aggregate", "psi"],
        "permitted_columns": ["age", "region", "cost"],
        "join_keys": ["patient_id"],
        "purposes": ["research"],
        "prohibitions": ["marketing", "reidentification"],
        "regions": ["DE", "FR"],
        "min_group_size": 10,
        "budget_per_buyer": {"epsilon": 1.0, "delta": 1e-6},
        "budget_per_dataset": {"epsilon": 10.0, "delta": 1e-5},
        "column_bounds": {
            "age": {"lower": 0, "upper": 110},
            "cost": {"lower": 0, "upper": 100000},
        },
    },
    "pricing_plan": {
        "kind": "fixed_per_query",
        "currency": "EUR",
        "price_per_query_minor": 2500,
    },
}


def dataset_body(**overrides: Any) -> dict[str, Any]:
    """A valid DatasetCreate body; top-level keys overridden by ``overrides``."""
    body = copy.deepcopy(_BASE_DATASET)
    body["policy"]["expires_at"] = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    body.update(overrides)
    return body


def version_body(seed: str | None = None) -> dict[str, Any]:
    """A valid DatasetVersionCreate body with a random content hash."""
    content = (seed or secrets.token_hex(8)).encode()
    return {
        "content_hash": hashlib.sha256(content).hexdigest(),
        "row_count": 1000,
        "byte_size": 52_000,
    }


def create_random_listed_dataset(
    client: Any, provider: Party, **overrides: Any
) -> dict[str, Any]:
    """Create, version and list a dataset through the API; return its JSON."""
    r = client.post(
        "/v1/datasets", json=dataset_body(**overrides), headers=provider.headers
    )
    assert r.status_code == 201, r.text
    ds = r.json()
    r = client.post(
        f"/v1/datasets/{ds['id']}/versions",
        json=version_body(),
        headers=provider.headers,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/v1/datasets/{ds['id']}/transitions",
        json={"to": "listed"},
        headers=provider.headers,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check that ``response`` is RFC 9457 problem JSON with ``status``/``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert PROBLEM_KEYS <= body.keys(), body
    assert (body["status"], body["code"]) == (status, code), body
    assert body["type"] == "https://veilx.dev/problems/" + code.replace("_", "-")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def top_up(db: Database, org: Party, amount_minor: int, currency: str = "EUR") -> int:
    """Record prepaid credits for ``org`` (what the operator's endpoint does)."""
    from marketplace.models import CreditTopUp
    from marketplace.services.trading import TradingConfig, TradingService

    with db.session() as session:
        return TradingService(session, TradingConfig(), {}).top_up(
            org.org_id,
            CreditTopUp(
                amount_minor=amount_minor,
                currency=currency,
                reference=f"test-{secrets.token_hex(8)}",
            ),
        )


def buy_entitlement(
    client: Any,
    db: Database,
    buyer: Party,
    dataset_id: str,
    *,
    queries: int = 50,
    epsilon: float = 50.0,
    credits_minor: int | None = None,
) -> dict[str, Any]:
    """Top the buyer up, quote ``queries`` computations and order them with credits.

    Returns the order's JSON (its ``entitlement_id`` is what jobs are charged to).
    """
    r = client.post(
        "/v1/quotes",
        json={"dataset_id": dataset_id, "queries": queries, "epsilon": epsilon},
        headers=buyer.headers,
    )
    assert r.status_code == 201, r.text
    quote = r.json()
    top_up(db, buyer, credits_minor or quote["amount_minor"], quote["currency"])
    r = client.post(
        "/v1/orders",
        json={"quote_id": quote["id"]},
        headers={**buyer.headers, "Idempotency-Key": secrets.token_hex(8)},
    )
    assert r.status_code == 201, r.text
    order = dict(r.json())
    assert order["status"] == "active", order
    return order

"""Datasets and catalog search through the API, on both engines.

Covers creating drafts (policy hash, validation), the listing lifecycle, content
versions, idempotent creation, and search: full text with stemming, facet filters
and conjunctive counts, every sort order and keyset pagination.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from marketplace.db import Database
from marketplace.models import OrganisationStatus, Role
from marketplace.services.catalog import price_bucket
from mpc_engine.policy import RightsPolicy
from tests.factories import (
    Party,
    assert_problem,
    create_random_listed_dataset,
    create_random_org,
    dataset_body,
    version_body,
)

SEARCH = "/v1/catalog/search"


def error_fields(r: httpx.Response, code: str = "validation_failed") -> set[str]:
    """The ``field`` of every error in a 422 problem."""
    body = assert_problem(r, 422, code)
    return {e["field"] for e in body.get("errors", [])}


def _policy(**changes: Any) -> dict[str, Any]:
    policy: dict[str, Any] = dataset_body()["policy"]
    policy.update(changes)
    return policy


def _create(client: TestClient, party: Party, **overrides: Any) -> httpx.Response:
    return client.post(
        "/v1/datasets", json=dataset_body(**overrides), headers=party.headers
    )


def _my_datasets(client: TestClient, party: Party) -> list[dict[str, Any]]:
    r = client.get("/v1/datasets", headers=party.headers)
    assert r.status_code == 200, r.text
    return list(r.json())


def _search(client: TestClient, party: Party, **params: Any) -> dict[str, Any]:
    r = client.get(SEARCH, params=params, headers=party.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _search_ids(client: TestClient, party: Party, **params: Any) -> list[str]:
    return [i["id"] for i in _search(client, party, limit=100, **params)["items"]]


# -- creating drafts -----------------------------------------------------------------


def test_create_draft_echoes_fields_and_hashes_the_policy(
    client: TestClient, db: Database
) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    body = dataset_body(keywords=["Hospital", "admissions"])
    r = client.post("/v1/datasets", json=body, headers=provider.headers)
    assert r.status_code == 201, r.text
    ds = r.json()
    for name in (
        "title",
        "description",
        "themes",
        "publisher",
        "license",
        "temporal_start",
        "temporal_end",
        "spatial_coverage",
        "update_frequency",
        "languages",
        "pricing_plan",
    ):
        assert ds[name] == body[name], name
    assert ds["keywords"] == ["hospital", "admissions"]  # normalised to lower case
    assert [c["name"] for c in ds["columns"]] == [c["name"] for c in body["columns"]]
    assert ds["status"] == "draft"
    assert ds["live_version"] is None
    assert ds["listed_at"] is None
    assert ds["provider"] == {"id": str(provider.org_id), "name": provider.name}
    assert (ds["reference_price_minor"], ds["currency"]) == (2500, "EUR")
    policy = RightsPolicy.model_validate(body["policy"])
    canonical = policy.canonical_json()
    assert canonical == json.dumps(
        json.loads(canonical), sort_keys=True, separators=(",", ":")
    )
    assert ds["policy_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert ds["policy_hash"] == policy.policy_hash()
    # What is shown is the canonical policy, and it hashes to the same value.
    assert RightsPolicy.model_validate(ds["policy"]).policy_hash() == ds["policy_hash"]
    # Read back and listed among the provider's datasets.
    r = client.get(f"/v1/datasets/{ds['id']}", headers=provider.headers)
    assert r.json() == ds
    assert [d["id"] for d in _my_datasets(client, provider)] == [ds["id"]]


def test_same_policy_in_another_order_has_the_same_hash(
    client: TestClient, db: Database
) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=200)
    first = _policy(expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
    second = copy.deepcopy(first)
    for name in ("permitted_kinds", "permitted_columns", "prohibitions", "regions"):
        second[name] = list(reversed(second[name]))
    second["column_bounds"] = dict(reversed(list(second["column_bounds"].items())))
    # The same instant in another time zone, and keys in another order.
    second["expires_at"] = expires.astimezone(timezone(timedelta(hours=2))).isoformat()
    second = dict(reversed(list(second.items())))
    a = _create(client, provider, policy=first)
    b = _create(client, provider, policy=second)
    assert a.status_code == b.status_code == 201, (a.text, b.text)
    assert a.json()["policy_hash"] == b.json()["policy_hash"]
    assert a.json()["policy"] == b.json()["policy"]
    # A real change changes the hash.
    c = _create(client, provider, policy=_policy(min_group_size=11))
    assert c.status_code == 201, c.text
    assert c.json()["policy_hash"] != a.json()["policy_hash"]


BAD_POLICIES: list[tuple[str, dict[str, Any], str, set[str]]] = [
    ("unknown field", {"colour": "red"}, "validation_failed", {"policy.colour"}),
    (
        "contradictions",
        {
            "budget_per_buyer": {"epsilon": 20.0, "delta": 1e-6},
            "permitted_kinds": ["aggregate"],
            "join_keys": [],
            "reveal_intersection": True,
            "prohibitions": ["research", "marketing"],
        },
        "validation_failed",
        {
            "policy.budget_per_buyer.epsilon",
            "policy.reveal_intersection",
            "policy.prohibitions",
        },
    ),
    (
        "column not in schema",
        {"permitted_columns": ["age", "region", "cost", "weight"]},
        "policy_invalid",
        {"policy.permitted_columns.weight"},
    ),
    (
        "identifier column permitted",
        {
            "permitted_kinds": ["aggregate"],
            "join_keys": [],
            "permitted_columns": ["age", "cost", "patient_id"],
        },
        "policy_invalid",
        {"policy.permitted_columns.patient_id"},
    ),
    (
        "numeric aggregate column without bounds",
        {"column_bounds": {"age": {"lower": 0, "upper": 110}}},
        "policy_invalid",
        {"policy.column_bounds.cost"},
    ),
    (
        "expired",
        {"expires_at": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
        "policy_invalid",
        {"policy.expires_at"},
    ),
]

BAD_PLANS: list[tuple[str, dict[str, Any]]] = [
    ("unknown kind", {"kind": "barter", "currency": "EUR"}),
    (
        "rising volume tiers",
        {
            "kind": "volume_tiered",
            "currency": "EUR",
            "tiers": [
                {"up_to_queries": 100, "price_per_query_minor": 1000},
                {"up_to_queries": None, "price_per_query_minor": 1500},
            ],
        },
    ),
    (
        "privacy exponent above 1",
        {
            "kind": "privacy_priced",
            "currency": "EUR",
            "base_price_minor": 100,
            "price_per_epsilon_minor": 100,
            "exponent": 1.5,
        },
    ),
    (
        "unknown parameter",
        {
            "kind": "fixed_per_query",
            "currency": "EUR",
            "price_per_query_minor": 1,
            "discount": 5,
        },
    ),
    (
        "lower-case currency",
        {"kind": "fixed_per_query", "currency": "eur", "price_per_query_minor": 1},
    ),
]


def test_invalid_datasets_are_rejected_and_nothing_is_written(
    client: TestClient, db: Database, subtests: pytest.Subtests
) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    for label, changes, code, fields in BAD_POLICIES:
        with subtests.test(msg=f"policy: {label}"):
            r = _create(client, provider, policy=_policy(**changes))
            got = error_fields(r, code)
            assert fields <= got, (fields, got)
    for label, plan in BAD_PLANS:
        with subtests.test(msg=f"pricing plan: {label}"):
            r = _create(client, provider, pricing_plan=plan)
            got = error_fields(r)
            assert got, r.text
            assert all(f.startswith("pricing_plan") for f in got), got
    with subtests.test(msg="temporal order"):
        r = _create(
            client, provider, temporal_start="2025-01-01", temporal_end="2024-01-01"
        )
        assert_problem(r, 422, "validation_failed")
    assert _my_datasets(client, provider) == []


def test_invalid_update_changes_nothing(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    ds = _create(client, provider).json()
    url = f"/v1/datasets/{ds['id']}"
    bad = _policy(permitted_columns=["age", "region", "cost", "weight"])
    patches: list[tuple[dict[str, Any], str, set[str]]] = [
        (
            {"policy": bad, "title": "Changed"},
            "policy_invalid",
            {"policy.permitted_columns.weight"},
        ),
        ({"title": None}, "validation_failed", {"title"}),
        ({"keywords": None}, "validation_failed", {"keywords"}),
        ({"languages": None}, "validation_failed", {"languages"}),
        # After temporal_end: the merged dataset is checked as a whole.
        ({"temporal_start": "2030-01-01"}, "validation_failed", {"body"}),
        ({"colour": "red"}, "validation_failed", {"colour"}),
    ]
    for patch, code, fields in patches:
        r = client.patch(url, json=patch, headers=provider.headers)
        assert error_fields(r, code) == fields, (patch, r.text)
    assert client.get(url, headers=provider.headers).json() == ds


# -- lifecycle -----------------------------------------------------------------------


def _move(
    client: TestClient, party: Party, ds_id: str, to: str, reason: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"to": to}
    if reason is not None:
        body["reason"] = reason
    return client.post(
        f"/v1/datasets/{ds_id}/transitions", json=body, headers=party.headers
    )


def test_listing_needs_a_version_and_an_admitted_provider(
    client: TestClient, db: Database
) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    ds = _create(client, provider).json()
    body = assert_problem(
        _move(client, provider, ds["id"], "listed"), 422, "not_listable"
    )
    assert {e["field"] for e in body["errors"]} == {"live_version"}

    pending = create_random_org(db, Role.PROVIDER, status=OrganisationStatus.PENDING)
    draft = _create(client, pending)
    assert draft.status_code == 201, draft.text  # drafts are fine while pending
    url = f"/v1/datasets/{draft.json()['id']}"
    assert (
        client.post(
            f"{url}/versions", json=version_body(), headers=pending.headers
        ).status_code
        == 201
    )
    assert_problem(
        _move(client, pending, draft.json()["id"], "listed"),
        403,
        "organisation_not_admitted",
    )
    assert client.get(url, headers=pending.headers).json()["status"] == "draft"


def test_lifecycle(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    operator = create_random_org(db, Role.OPERATOR)
    buyer = create_random_org(db, Role.BUYER)
    ds = _create(client, provider, title="Seismograph readings").json()
    url = f"/v1/datasets/{ds['id']}"

    def searchable() -> bool:
        hits = _search_ids(client, buyer, q="seismograph")
        unfiltered = _search_ids(client, buyer)
        assert (ds["id"] in hits) == (ds["id"] in unfiltered)
        return ds["id"] in hits

    assert not searchable()
    assert (
        client.post(
            f"{url}/versions", json=version_body(), headers=provider.headers
        ).status_code
        == 201
    )
    # The operator governs but does not list on a provider's behalf.
    assert_problem(
        _move(client, operator, ds["id"], "listed"), 403, "transition_not_allowed"
    )
    r = _move(client, provider, ds["id"], "listed")
    assert r.status_code == 200, r.text
    listed = r.json()
    assert listed["status"] == "listed"
    assert listed["listed_at"] is not None
    assert searchable()

    # Suspension: operator only, with a reason.
    assert_problem(
        _move(client, provider, ds["id"], "suspended", "why not"),
        403,
        "transition_not_allowed",
    )
    body = assert_problem(
        _move(client, operator, ds["id"], "suspended"), 422, "validation_failed"
    )
    assert {e["field"] for e in body["errors"]} == {"reason"}
    assert searchable()
    r = _move(client, operator, ds["id"], "suspended", "complaint under review")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["status_reason"]) == (
        "suspended",
        "complaint under review",
    )
    assert not searchable()
    assert client.get(url, headers=buyer.headers).status_code == 404
    assert client.get(url, headers=provider.headers).json()["status"] == "suspended"

    # Re-listing a suspended dataset is the operator's call.
    assert_problem(
        _move(client, provider, ds["id"], "listed"), 403, "transition_not_allowed"
    )
    r = _move(client, operator, ds["id"], "listed")
    assert r.status_code == 200, r.text
    assert r.json()["listed_at"] == listed["listed_at"]
    assert searchable()
    assert client.get(url, headers=buyer.headers).status_code == 200

    # A listed dataset's schema is frozen; its metadata is not.
    columns = [
        *ds["columns"],
        {
            "name": "ward",
            "type": "string",
            "sensitivity": "public",
            "description": "Ward",
        },
    ]
    assert_problem(
        client.patch(url, json={"columns": columns}, headers=provider.headers),
        409,
        "schema_frozen",
    )

    # Delisting is final.
    assert_problem(
        _move(client, operator, ds["id"], "delisted"), 422, "validation_failed"
    )
    r = _move(client, provider, ds["id"], "delisted")
    assert r.status_code == 200, r.text
    assert not searchable()
    for party in (provider, operator):
        assert_problem(
            _move(client, party, ds["id"], "listed"), 409, "invalid_transition"
        )
    assert_problem(
        _move(client, provider, ds["id"], "delisted"), 409, "invalid_transition"
    )
    assert_problem(
        client.patch(url, json={"title": "Revived"}, headers=provider.headers),
        409,
        "invalid_transition",
    )
    assert not searchable()


def test_draft_schema_can_change(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    ds = _create(client, provider).json()
    columns = [
        *ds["columns"],
        {
            "name": "ward",
            "type": "string",
            "sensitivity": "public",
            "description": "Ward",
        },
    ]
    r = client.patch(
        f"/v1/datasets/{ds['id']}", json={"columns": columns}, headers=provider.headers
    )
    assert r.status_code == 200, r.text
    assert [c["name"] for c in r.json()["columns"]][-1] == "ward"
    # Dropping a column the policy uses is refused.
    r = client.patch(
        f"/v1/datasets/{ds['id']}",
        json={"columns": columns[:3]},
        headers=provider.headers,
    )
    assert "policy.permitted_columns.cost" in error_fields(r, "policy_invalid")


def test_metadata_changes_of_a_listing_reach_search(
    client: TestClient, db: Database
) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    buyer = create_random_org(db, Role.BUYER)
    ds = create_random_listed_dataset(client, provider, title="Seismograph readings")
    r = client.patch(
        f"/v1/datasets/{ds['id']}",
        json={
            "title": "Tidal gauge readings",
            "keywords": ["tides", "coast"],
            "themes": ["environment"],
            "license": "CC-BY-4.0",
            "pricing_plan": {
                "kind": "fixed_per_query",
                "currency": "USD",
                "price_per_query_minor": 123456,
            },
        },
        headers=provider.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "listed"
    assert _search_ids(client, buyer, q="seismograph") == []
    assert _search_ids(client, buyer, q="tidal") == [ds["id"]]
    assert _search_ids(client, buyer, q="tides") == [ds["id"]]
    res = _search(client, buyer, q="gauge")
    (hit,) = res["items"]
    assert hit["title"] == "Tidal gauge readings"
    assert hit["keywords"] == ["tides", "coast"]
    assert (hit["reference_price_minor"], hit["currency"]) == (123456, "USD")
    facets = {
        f: {v["value"]: v["count"] for v in vs} for f, vs in res["facets"].items()
    }
    assert facets["theme"] == {"environment": 1}
    assert facets["license"] == {"CC-BY-4.0": 1}
    assert facets["price"] == {"100000+": 1}
    assert facets["currency"] == {"USD": 1}
    assert _search(client, buyer, theme="health")["total"] == 0


# -- versions ------------------------------------------------------------------------


def test_versions(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    buyer = create_random_org(db, Role.BUYER)
    ds = create_random_listed_dataset(client, provider, title="Seismograph readings")
    url = f"/v1/datasets/{ds['id']}"
    first = ds["live_version"]
    assert first["is_live"]

    dup = client.post(
        f"{url}/versions",
        json={**version_body(), "content_hash": first["content_hash"]},
        headers=provider.headers,
    )
    assert error_fields(dup, "duplicate_version") == {"content_hash"}

    r = client.post(
        f"{url}/versions",
        json={**version_body(), "make_live": False, "note": "staged"},
        headers=provider.headers,
    )
    assert r.status_code == 201, r.text
    second = r.json()
    assert not second["is_live"]
    assert second["schema_hash"] == first["schema_hash"]
    assert (
        client.get(url, headers=buyer.headers).json()["live_version"]["id"]
        == (first["id"])
    )
    versions = client.get(f"{url}/versions", headers=buyer.headers).json()
    assert [(v["id"], v["is_live"]) for v in versions] == [
        (second["id"], False),
        (first["id"], True),
    ]

    r = client.put(
        f"{url}/live-version",
        json={"version_id": second["id"]},
        headers=provider.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["live_version"]["id"] == second["id"]
    versions = client.get(f"{url}/versions", headers=provider.headers).json()
    assert [(v["id"], v["is_live"]) for v in versions] == [
        (second["id"], True),
        (first["id"], False),
    ]
    (hit,) = _search(client, buyer, q="seismograph")["items"]
    assert hit["live_content_hash"] == second["content_hash"]

    r = client.post(f"{url}/versions", json=version_body(), headers=provider.headers)
    assert r.status_code == 201, r.text
    third = r.json()
    assert third["is_live"]
    versions = client.get(f"{url}/versions", headers=provider.headers).json()
    assert [v["id"] for v in versions] == [third["id"], second["id"], first["id"]]
    assert [v["is_live"] for v in versions] == [True, False, False]

    # A version of another dataset, or none at all, cannot be made live here.
    other = create_random_listed_dataset(client, provider)
    for version_id in (other["live_version"]["id"], str(uuid.uuid4())):
        assert_problem(
            client.put(
                f"{url}/live-version",
                json={"version_id": version_id},
                headers=provider.headers,
            ),
            404,
            "not_found",
        )


# -- idempotency ---------------------------------------------------------------------


def test_idempotent_create(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    body = dataset_body()
    key = {"Idempotency-Key": f"create-{secrets.token_hex(8)}"}
    headers = provider.headers | key
    first = client.post("/v1/datasets", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = client.post("/v1/datasets", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["content-type"] == first.headers["content-type"]
    assert [d["id"] for d in _my_datasets(client, provider)] == [first.json()["id"]]

    changed = client.post(
        "/v1/datasets", json=dataset_body(title="Other title"), headers=headers
    )
    assert_problem(changed, 409, "idempotency_key_reused")
    # The key is the caller's: another provider using it gets its own dataset.
    other = create_random_org(db, Role.PROVIDER)
    r = client.post("/v1/datasets", json=body, headers=other.headers | key)
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    assert r.json()["id"] != first.json()["id"]
    assert len(_my_datasets(client, provider)) == 1
    # Without a key, the same body makes another dataset.
    assert (
        client.post("/v1/datasets", json=body, headers=provider.headers).status_code
        == 201
    )
    assert len(_my_datasets(client, provider)) == 2


# -- search --------------------------------------------------------------------------

TITLES = [
    "Hospital admissions Berlin",  # 0: 'admissions' and 'hospital' in the title
    "Glacier melt measurements",  # 1: 'glacier' only in the title
    "Orchard yields",  # 2: 'volcanic' only in the description
    "Wind farm output",  # 3: 'turbines' only in the keywords
    "Bakery sales",
    "Clinic waiting times",  # 5: 'hospital' only in the keywords
    "Tram ridership",
    "Salmon catches",
    "Pharmacy stock levels",
    "Quarry permits",
    "Emergency admissions Hamburg",  # 10: 'admissions' in the title
    "Ferry timetables",
    "Vineyard harvests",
    "Library loans",
    "Solar panel installations",
    "Dairy herd sizes",
    "Kindergarten enrolment",
    "Noise complaints",
    "Urban heat islands",
    "Mortgage approvals",
    "Ambulance dispatches",  # 20: 'admissions' only in the description
    "Bicycle counts",
    "Jobseeker registrations",
    "Timber exports",
    "Ozone readings",
    "Nursing home capacity",  # 25: 'admissions' only in the keywords
    "Exhibition visitors",
    "Yacht registrations",
    "Zoo attendance",
    "Zoo attendance",  # the same title twice: ties are broken consistently
]
DESCRIPTION = "Quarterly regional figures, anonymised and aggregated."
DESCRIPTIONS = {
    2: "Quarterly regional figures from volcanic soils, anonymised.",
    20: "Quarterly regional figures including admissions, anonymised.",
}
KEYWORDS = {
    3: ["wind", "turbines"],
    5: ["clinic", "hospital"],
    25: ["nursing", "admissions"],
}
THEMES = ["health", "economy", "transport", "environment", "energy"]
LICENSES = ["proprietary", "CC-BY-4.0", "ODbL-1.0"]
KINDS = [["aggregate", "psi"], ["aggregate"], ["aggregate", "secure_aggregate"]]
# (plan, its reference price in minor units)
PLANS: list[tuple[dict[str, Any], int]] = [
    ({"kind": "fixed_per_query", "currency": "EUR", "price_per_query_minor": 0}, 0),
    ({"kind": "fixed_per_query", "currency": "EUR", "price_per_query_minor": 500}, 500),
    (
        {"kind": "fixed_per_query", "currency": "EUR", "price_per_query_minor": 2500},
        2500,
    ),
    (
        {"kind": "fixed_per_query", "currency": "EUR", "price_per_query_minor": 9999},
        9999,
    ),
    (
        {"kind": "fixed_per_query", "currency": "EUR", "price_per_query_minor": 10000},
        10000,
    ),
    (
        {"kind": "fixed_per_query", "currency": "EUR", "price_per_query_minor": 150000},
        150000,
    ),
    ({"kind": "fixed_per_query", "currency": "USD", "price_per_query_minor": 750}, 750),
    (
        {"kind": "fixed_per_query", "currency": "USD", "price_per_query_minor": 20000},
        20000,
    ),
    (
        {
            "kind": "subscription",
            "currency": "EUR",
            "price_per_period_minor": 100000,
            "period": "month",
            "queries_per_period": 40,
        },
        2500,
    ),
    (
        {
            "kind": "privacy_priced",
            "currency": "EUR",
            "base_price_minor": 1000,
            "price_per_epsilon_minor": 500,
            "exponent": 0.5,
            "reference_epsilon": 4.0,
        },
        2000,
    ),
    (
        {
            "kind": "volume_tiered",
            "currency": "GBP",
            "tiers": [
                {"up_to_queries": 100, "price_per_query_minor": 3000},
                {"up_to_queries": None, "price_per_query_minor": 2000},
            ],
        },
        3000,
    ),
    (
        {
            "kind": "metered",
            "currency": "USD",
            "price_per_million_rows_minor": 400,
            "price_per_compute_unit_minor": 100,
        },
        500,
    ),
]
# Expected hits of text queries (indexes into TITLES).
TEXT_HITS: dict[str, set[int]] = {
    "admission": {0, 10, 20, 25},
    "admissions": {0, 10, 20, 25},
    "hospitals": {0, 5},
    "Hospital admissions": {0},
    "glaciers": {1},
    "volcanic": {2},
    "turbine": {3},
    "quarterly": set(range(len(TITLES))),
    "registration": {22, 27},
    "submarine": set(),
}


@dataclass
class Doc:
    """A listed dataset as the test knows it."""

    index: int
    id: str
    title: str
    provider: str
    price: int
    facets: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class Corpus:
    """The listed datasets of a search test, in listing order, and a buyer."""

    docs: list[Doc]
    buyer: Party
    providers: list[Party]

    def select(self, params: dict[str, Any]) -> list[Doc]:
        """The docs a search with ``params`` must find, computed here."""
        out = []
        for d in self.docs:
            if "q" in params and d.index not in TEXT_HITS[params["q"]]:
                continue
            if any(
                name in params and not d.facets[name] & set(_as_list(params[name]))
                for name in d.facets
            ):
                continue
            if "price_min" in params and d.price < params["price_min"]:
                continue
            if "price_max" in params and d.price > params["price_max"]:
                continue
            out.append(d)
        return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def build_corpus(client: TestClient, db: Database) -> Corpus:
    """List ``len(TITLES)`` datasets by three providers with varied attributes."""
    providers = [
        create_random_org(
            db, Role.PROVIDER, name=f"Provider {n} {secrets.token_hex(3)}"
        )
        for n in "ABC"
    ]
    buyer = create_random_org(db, Role.BUYER)
    docs = []
    for i, title in enumerate(TITLES):
        themes = [THEMES[i % 5]] + (["science"] if i % 4 == 0 else [])
        kinds = KINDS[(i // 3) % 3]
        policy = _policy(permitted_kinds=kinds)
        if "psi" not in kinds:
            policy["join_keys"] = []
        plan, price = PLANS[i % len(PLANS)]
        provider = providers[(i // 2) % 3]
        ds = create_random_listed_dataset(
            client,
            provider,
            title=title,
            description=DESCRIPTIONS.get(i, DESCRIPTION),
            keywords=KEYWORDS.get(i, [title.split()[0].lower(), "statistics"]),
            themes=themes,
            license=LICENSES[i % 3],
            policy=policy,
            pricing_plan=plan,
        )
        assert ds["reference_price_minor"] == price, (plan, ds["reference_price_minor"])
        docs.append(
            Doc(
                i,
                ds["id"],
                title,
                str(provider.org_id),
                price,
                {
                    "theme": set(themes),
                    "license": {LICENSES[i % 3]},
                    "kind": set(kinds),
                    "provider": {str(provider.org_id)},
                    "price": {price_bucket(price)},
                    "currency": {plan["currency"]},
                },
            )
        )
    return Corpus(docs, buyer, providers)


@pytest.fixture
def corpus(client: TestClient, db: Database) -> Corpus:
    """A catalog of listed datasets (one per entry of ``TITLES``)."""
    return build_corpus(client, db)


def _facet_counts(docs: list[Doc]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for d in docs:
        for name, values in d.facets.items():
            counts.setdefault(name, Counter()).update(values)
    return {name: dict(c) for name, c in counts.items()}


def test_price_buckets() -> None:
    assert [price_bucket(p) for p in (0, 1, 999, 1000, 9999, 10000, 99999, 100000)] == [
        "0",
        "1-999",
        "1-999",
        "1000-9999",
        "1000-9999",
        "10000-99999",
        "10000-99999",
        "100000+",
    ]


def test_full_text(
    client: TestClient, corpus: Corpus, subtests: pytest.Subtests
) -> None:
    by_index = {d.index: d.id for d in corpus.docs}
    for q, hits in TEXT_HITS.items():
        with subtests.test(msg=f"q={q!r}"):
            res = _search(client, corpus.buyer, q=q, limit=100)
            assert {i["id"] for i in res["items"]} == {by_index[i] for i in hits}
            assert res["total"] == len(hits)
            assert res["sort"] == "relevance"
    with subtests.test(msg="title before keywords before description"):
        ids = _search_ids(client, corpus.buyer, q="admission")
        assert set(ids[:2]) == {by_index[0], by_index[10]}
        assert ids[2:] == [by_index[25], by_index[20]]
    with subtests.test(msg="query syntax is not interpreted"):
        for q in (
            '"hospital',
            "hospital OR glacier",
            "hospital -admissions",
            "hospital*",
            "title:glacier",
            "NEAR(hospital admissions)",
        ):
            r = client.get(SEARCH, params={"q": q}, headers=corpus.buyer.headers)
            assert r.status_code == 200, (q, r.text)


FILTERS: list[dict[str, Any]] = [
    {},
    {"theme": "health"},
    {"theme": ["health", "energy"]},
    {"theme": "science"},
    {"theme": ["health", "science"]},
    {"license": "CC-BY-4.0"},
    {"theme": "health", "license": "CC-BY-4.0"},
    {"kind": "secure_aggregate"},
    {"kind": ["psi", "secure_aggregate"], "license": ["proprietary", "ODbL-1.0"]},
    {"provider": "A"},
    {"provider": ["A", "C"], "theme": "transport"},
    {"price": "1000-9999"},
    {"price": ["0", "100000+"]},
    {"currency": "USD"},
    {"currency": ["USD", "GBP"], "kind": "psi"},
    {"price_min": 1000, "price_max": 10000},
    {"price_min": 2500},
    {"price_max": 0},
    {"price_min": 2500, "price_max": 2500, "currency": "EUR"},
    {"theme": ["economy", "transport"], "currency": "EUR", "price_max": 5000},
    {"q": "admission", "license": "proprietary"},
    {"q": "quarterly", "theme": "health", "price_min": 1},
    {"theme": "agriculture"},
    {"license": "no-such-licence"},
]


def test_facet_filters_and_counts(
    client: TestClient, corpus: Corpus, subtests: pytest.Subtests
) -> None:
    names = {str(p.org_id): p.name for p in corpus.providers}
    letters = dict(zip("ABC", (str(p.org_id) for p in corpus.providers), strict=True))
    for spec in FILTERS:
        params = dict(spec)
        if "provider" in params:
            params["provider"] = [letters[x] for x in _as_list(params["provider"])]
        with subtests.test(msg=f"filters {spec}"):
            expected = corpus.select(params)
            res = _search(client, corpus.buyer, limit=100, **params)
            assert {i["id"] for i in res["items"]} == {d.id for d in expected}
            assert res["total"] == len(expected)
            got = {
                f: {v["value"]: v["count"] for v in vs}
                for f, vs in res["facets"].items()
            }
            assert got == _facet_counts(expected)
            for name, values in res["facets"].items():
                # Most frequent first, then by value.
                keys = [(-v["count"], v["value"]) for v in values]
                assert keys == sorted(keys), name
                for v in values:
                    assert v["label"] == (
                        names[v["value"]] if name == "provider" else v["value"]
                    )
    with subtests.test(msg="facets=false"):
        res = _search(client, corpus.buyer, theme="health", facets="false")
        assert res["facets"] == {}
        assert res["total"] == len(corpus.select({"theme": "health"}))


def _sort_key(sort: str, d: Doc) -> Any:
    return {
        "newest": (-d.index,),
        "price_asc": (d.price, d.index),
        "price_desc": (-d.price, -d.index),
        "title": (d.title.lower(), d.index),
    }[sort]


SORTS: list[dict[str, Any]] = [
    {"sort": "newest"},
    {},  # newest by default without q
    {"sort": "price_asc"},
    {"sort": "price_desc"},
    {"sort": "title"},
    {"sort": "price_asc", "currency": "EUR"},
    {"sort": "title", "q": "quarterly"},
    {"sort": "newest", "q": "admission"},
    {"sort": "relevance", "q": "quarterly"},
    {"q": "admission"},  # relevance by default with q
]


def test_sorting_and_pagination(
    client: TestClient, corpus: Corpus, subtests: pytest.Subtests
) -> None:
    for params in SORTS:
        sort = params.get("sort", "relevance" if "q" in params else "newest")
        with subtests.test(msg=f"{params}"):
            one = _search(client, corpus.buyer, limit=100, **params)
            assert one["sort"] == sort
            assert one["next_cursor"] is None
            ids = [i["id"] for i in one["items"]]
            expected = corpus.select(params)
            assert len(ids) == one["total"] == len(expected)
            if sort != "relevance":
                in_order = sorted(expected, key=lambda d: _sort_key(sort, d))
                assert ids == [d.id for d in in_order]
                # The summaries agree with the order too.
                if sort.startswith("price"):
                    prices = [i["reference_price_minor"] for i in one["items"]]
                    assert prices == sorted(prices, reverse=sort == "price_desc")
                if sort == "newest":
                    listed = [i["listed_at"] for i in one["items"]]
                    assert listed == sorted(listed, reverse=True)
            # Walk the pages.
            walked: list[str] = []
            cursor = None
            pages = 0
            while True:
                extra = {"cursor": cursor} if cursor else {}
                page = _search(client, corpus.buyer, limit=7, **params, **extra)
                assert page["total"] == one["total"]
                assert page["facets"] == one["facets"]
                assert len(page["items"]) <= 7
                walked += [i["id"] for i in page["items"]]
                pages += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    break
                assert len(page["items"]) == 7
                assert pages < 10
            assert walked == ids
            assert len(set(walked)) == len(walked)


def test_cursor_survives_new_listings(client: TestClient, corpus: Corpus) -> None:
    """A keyset cursor neither repeats nor skips hits when datasets are added."""
    first = _search(client, corpus.buyer, sort="price_asc", limit=10)
    # A new cheapest dataset sorts before the cursor, so it does not show up later.
    create_random_listed_dataset(
        client,
        corpus.providers[0],
        title="Lighthouse logs",
        pricing_plan={
            "kind": "fixed_per_query",
            "currency": "EUR",
            "price_per_query_minor": 0,
        },
    )
    rest: list[str] = []
    cursor = first["next_cursor"]
    while cursor:
        page = _search(client, corpus.buyer, sort="price_asc", limit=10, cursor=cursor)
        rest += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
    expected = sorted(corpus.docs, key=lambda d: _sort_key("price_asc", d))
    assert [i["id"] for i in first["items"]] + rest == [d.id for d in expected]


def _forge(cursor: str, key: list[Any]) -> str:
    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw["k"] = key
    data = json.dumps(raw).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_search_parameter_errors(
    client: TestClient, corpus: Corpus, subtests: pytest.Subtests
) -> None:
    buyer = corpus.buyer
    newest = _search(client, buyer, limit=5)["next_cursor"]
    by_price = _search(client, buyer, limit=5, sort="price_asc")["next_cursor"]
    by_title = _search(client, buyer, limit=5, sort="title")["next_cursor"]
    by_rank = _search(client, buyer, limit=5, q="quarterly")["next_cursor"]
    assert newest and by_price and by_title and by_rank
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("cursor of another filter", {"cursor": newest, "theme": "health"}, "cursor"),
        ("cursor of another sort", {"cursor": newest, "sort": "title"}, "cursor"),
        (
            "cursor of another q",
            {"cursor": newest, "q": "quarterly", "sort": "newest"},
            "cursor",
        ),
        ("garbage cursor", {"cursor": "not-a-cursor"}, "cursor"),
        (
            "base64 garbage",
            {"cursor": base64.urlsafe_b64encode(b"[1,2]").decode()},
            "cursor",
        ),
        ("cursor key of the wrong shape", {"cursor": _forge(newest, [1])}, "cursor"),
        (
            "cursor date not a date",
            {"cursor": _forge(newest, ["yesterday", 3])},
            "cursor",
        ),
        ("cursor date a number", {"cursor": _forge(newest, [5, 3])}, "cursor"),
        (
            "cursor date without a time zone",
            {"cursor": _forge(newest, ["2026-01-01T00:00:00", 3])},
            "cursor",
        ),
        (
            "cursor rank a string",
            {"cursor": _forge(by_rank, ["high", 3]), "q": "quarterly"},
            "cursor",
        ),
        (
            "cursor document id out of range",
            {"cursor": _forge(by_price, [0, 2**70]), "sort": "price_asc"},
            "cursor",
        ),
        (
            "cursor price a string",
            {"cursor": _forge(by_price, ["cheap", 3]), "sort": "price_asc"},
            "cursor",
        ),
        (
            "cursor title a number",
            {"cursor": _forge(by_title, [7, 3]), "sort": "title"},
            "cursor",
        ),
        ("relevance without q", {"sort": "relevance"}, "sort"),
        ("q without words", {"q": "!!!"}, "q"),
        ("q only spaces", {"q": "   "}, "q"),
        ("provider not a uuid", {"provider": "acme"}, "provider"),
        ("price_min above price_max", {"price_min": 10, "price_max": 9}, "price_min"),
        ("unknown sort", {"sort": "random"}, "query.sort"),
        ("limit too large", {"limit": 101}, "query.limit"),
        ("limit zero", {"limit": 0}, "query.limit"),
        ("negative price", {"price_min": -1}, "query.price_min"),
    ]
    for label, params, name in cases:
        with subtests.test(msg=label):
            r = client.get(SEARCH, params=params, headers=buyer.headers)
            assert name in error_fields(r), r.text
    with subtests.test(msg="provider-only organisation"):
        provider = corpus.providers[0]
        assert_problem(
            client.get(SEARCH, headers=provider.headers), 403, "role_required"
        )

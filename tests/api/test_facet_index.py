"""The in-memory facet index gives exactly the SQL counts, and keeps up by replay."""

from __future__ import annotations

import itertools
import random

from fastapi.testclient import TestClient

from marketplace.db import Database
from marketplace.models import Role
from marketplace.services.facets import FacetIndex
from marketplace.services.search import FACETS, SearchQuery, SearchService, SortOrder
from tests.factories import create_random_listed_dataset, create_random_org

THEMES = ["health", "economy", "energy", "transport", "science"]
WORDS = ["hospital", "admissions", "energy", "cost", "mobility", "nothing"]


def _query(**kw: object) -> SearchQuery:
    base: dict[str, object] = {
        "q": None,
        "theme": [],
        "license": [],
        "kind": [],
        "provider": [],
        "price": [],
        "currency": [],
        "price_min": None,
        "price_max": None,
        "sort": None,
        "limit": 20,
        "cursor": None,
        "facets": True,
    }
    base.update(kw)
    return SearchService.parse(**base)  # type: ignore[arg-type]


def _queries(providers: list[str]) -> list[SearchQuery]:
    rng = random.Random(5)
    out = [_query(), _query(sort=SortOrder.PRICE_ASC)]
    for _ in range(40):
        kw: dict[str, object] = {}
        if rng.random() < 0.6:
            kw["q"] = " ".join(rng.sample(WORDS, rng.choice([1, 2])))
        if rng.random() < 0.5:
            kw["theme"] = rng.sample(THEMES, rng.choice([1, 2]))
        if rng.random() < 0.3:
            kw["license"] = [rng.choice(["proprietary", "CC-BY-4.0"])]
        if rng.random() < 0.3:
            kw["kind"] = [rng.choice(["aggregate", "psi", "federated_train"])]
        if rng.random() < 0.3:
            kw["provider"] = [rng.choice(providers)]
        if rng.random() < 0.3:
            kw["price_min"], kw["price_max"] = sorted(
                rng.sample(range(0, 20000, 500), 2)
            )
        out.append(_query(**kw))
    return out


def _same_counts(db: Database, index: FacetIndex, queries: list[SearchQuery]) -> None:
    with db.session() as s:
        memory = SearchService(s, None, index)
        sql = SearchService(s, None, None)
        for query in queries:
            assert memory._counts(query) == sql._counts(query), query


def test_in_memory_counts_equal_sql_and_follow_changes(
    client: TestClient, db: Database
) -> None:
    providers = [create_random_org(db, Role.PROVIDER) for _ in range(3)]
    rng = random.Random(1)
    listed = []
    for i, (provider, themes) in enumerate(
        zip(itertools.cycle(providers), itertools.cycle(THEMES), strict=False)
    ):
        if i == 24:
            break
        plan = {
            "kind": "fixed_per_query",
            "currency": rng.choice(["EUR", "USD"]),
            "price_per_query_minor": rng.randrange(0, 20000, 250),
        }
        listed.append(
            create_random_listed_dataset(
                client,
                provider,
                title=f"{rng.choice(WORDS)} study {i}",
                keywords=rng.sample(WORDS[:-1], 2),
                themes=[themes, *rng.sample([t for t in THEMES if t != themes], i % 2)],
                license=rng.choice(["proprietary", "CC-BY-4.0"]),
                pricing_plan=plan,
            )
        )
    queries = _queries([str(p.org_id) for p in providers])
    index = FacetIndex()
    _same_counts(db, index, queries)  # first use: full load

    # Changes made elsewhere (another process): delist, re-price, list new ones.
    operator = create_random_org(db, Role.OPERATOR)
    for ds in listed[:5]:
        r = client.post(
            f"/v1/datasets/{ds['id']}/transitions",
            json={"to": "delisted", "reason": "test"},
            headers=operator.headers,
        )
        assert r.status_code == 200
    for ds in listed[5:9]:
        owner = next(p for p in providers if str(p.org_id) == ds["provider"]["id"])
        r = client.patch(
            f"/v1/datasets/{ds['id']}",
            headers=owner.headers,
            json={"themes": ["justice"], "license": "ODbL-1.0"},
        )
        assert r.status_code == 200
    for i in range(3):
        create_random_listed_dataset(client, providers[0], title=f"late hospital {i}")
    _same_counts(
        db, index, [*queries, _query(theme=["justice"]), _query(license=["ODbL-1.0"])]
    )
    assert set(FACETS) >= {"theme", "license"}

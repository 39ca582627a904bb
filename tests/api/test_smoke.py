from fastapi.testclient import TestClient

from marketplace.db import Database
from marketplace.models import Role
from tests.factories import create_random_listed_dataset, create_random_org


def test_list_and_search(client: TestClient, db: Database) -> None:
    provider = create_random_org(db, Role.PROVIDER)
    buyer = create_random_org(db, Role.BUYER)
    ds = create_random_listed_dataset(client, provider)
    assert ds["status"] == "listed"
    r = client.get(
        "/v1/catalog/search", params={"q": "hospital"}, headers=buyer.headers
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 1
    assert body["items"][0]["id"] == ds["id"]
    assert {f["value"] for f in body["facets"]["theme"]} == {"health"}
    r = client.get(
        "/v1/catalog/search", params={"q": "nothingmatches"}, headers=buyer.headers
    )
    assert r.json()["total"] == 0

"""Property-based run over the OpenAPI schema, in-process through the ASGI app.

Every generated request must get a non-5xx answer, and every 4xx answer must be
RFC 9457 problem JSON. Requests carry the API key of an organisation with the buyer,
provider and operator roles, so the authorised code paths are explored as well.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error

from marketplace.api import create_app
from marketplace.db import Database
from marketplace.kv import MemoryStore
from marketplace.models import OrganisationStatus, Role
from marketplace.services.identity import _CallerCache
from marketplace.services.search import SearchCache
from tests.conftest import make_settings
from tests.factories import (
    PROBLEM_KEYS,
    Party,
    create_random_listed_dataset,
    create_random_org,
)

PROBLEM_TYPE = "application/problem+json"


# The schema is read at collection time (schemathesis' lazy ``from_fixture`` loader
# does not work with this pytest), so the app is built here with a placeholder
# database that is never connected to; ``world`` swaps in the test database.
# Its own data directory (the embedded chain, keys, blobs), removed at exit: never
# a shared one such as the temp root, where another run's chain would be found.
DATA_DIR = Path(tempfile.mkdtemp(prefix="veilx-schemathesis-"))
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)
APP = create_app(
    make_settings(DATA_DIR),
    db=Database.from_url("sqlite://"),
    kv=MemoryStore(),
    migrate=False,
)
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20240601,
        "suppress-health-check": ["all"],
        "warnings": False,
        "generation": {"max-examples": 25, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    }
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@dataclass(frozen=True)
class World:
    """The caller, and real ids that generated UUID path parameters are swapped for."""

    party: Party
    ids: dict[str, str]


@pytest.fixture
def world(sqlite_only_db: Database) -> Iterator[World]:
    """An admitted buyer, provider and operator with a listed dataset, a spare API
    key and a pending organisation to act on; the app runs on the test database.
    """
    import_time_db = APP.state.db
    APP.state.db = sqlite_only_db
    APP.state.caller_cache = _CallerCache()
    APP.state.search_cache = SearchCache()
    try:
        party = create_random_org(
            sqlite_only_db, Role.BUYER, Role.PROVIDER, Role.OPERATOR
        )
        other = create_random_org(
            sqlite_only_db, Role.BUYER, status=OrganisationStatus.PENDING
        )
        client = TestClient(APP)
        dataset = create_random_listed_dataset(client, party)
        spare = client.post(
            "/v1/api-keys", json={"name": "spare"}, headers=party.headers
        )
        assert spare.status_code == 201, spare.text
        yield World(
            party,
            {
                "dataset_id": dataset["id"],
                "org_id": str(other.org_id),
                "key_id": spare.json()["id"],
            },
        )
    finally:
        APP.state.db = import_time_db


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def problem_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answer is problem JSON with the standard members and a matching status."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    assert content_type.split(";")[0].strip() == PROBLEM_TYPE, (
        f"{response.status_code} answered with content-type {content_type!r}"
    )
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    missing = PROBLEM_KEYS - body.keys()
    assert not missing, f"problem body lacks {sorted(missing)}: {body}"
    assert body["status"] == response.status_code, body
    assert isinstance(body["code"], str) and body["code"], body
    return True


@schema.parametrize()
def test_api_answers_without_server_errors(case: Any, world: World) -> None:
    # Well-formed ids would almost never exist; point them at real objects so the
    # code behind the 404s is explored too. Malformed ids are sent as generated.
    for name, real in world.ids.items():
        if name in case.path_parameters and _is_uuid(case.path_parameters[name]):
            case.path_parameters[name] = real
    case.call_and_validate(
        headers=world.party.headers, checks=[not_a_server_error, problem_json]
    )

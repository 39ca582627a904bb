"""Shared fixtures: both database engines, both key-value stores, an API client.

PostgreSQL (127.0.0.1:5432, database ``test``) and Redis (127.0.0.1:6379) are used
when they answer. When they do not, tests that need them skip with the reason,
unless ``VEILX_REQUIRE_SERVICES=1`` (set by ``.ci/run``), where they fail.

Isolation: each test session (each xdist worker) gets its own PostgreSQL schema
and its own Redis key namespace, removed at the end; tables are emptied between
tests.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import SQLModel

from marketplace.api import create_app
from marketplace.config import Settings
from marketplace.db import Database
from marketplace.kv import KeyValueStore, MemoryStore, RedisStore

PG_URL = os.environ.get(
    "VEILX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("VEILX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE = os.environ.get("VEILX_REQUIRE_SERVICES") == "1"
TEST_SECRET = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def service_unavailable(what: str, why: object) -> None:
    """Skip (or fail, when services are required) because ``what`` is down."""
    message = (
        f"{what} is not reachable ({why}); start it or unset VEILX_REQUIRE_SERVICES"
    )
    if REQUIRE:
        pytest.fail(f"VEILX_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(f"{what} not reachable here ({why})")


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema for this session."""
    try:
        conn = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_unavailable("PostgreSQL at " + PG_URL, exc)
    schema = f"veilx_t_{uuid.uuid4().hex[:10]}"
    conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


@pytest.fixture(scope="session")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A migrated SQLite database for this session."""
    path = tmp_path_factory.mktemp("db") / "veilx.db"
    db = Database.from_url(f"sqlite:///{path}")
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def postgresql_db(pg_schema_url: str) -> Iterator[Database]:
    """A migrated PostgreSQL database (own schema) for this session."""
    db = Database.from_url(pg_schema_url)
    db.upgrade()
    yield db
    db.dispose()


def _empty(db: Database) -> None:
    # search_meta keeps its row; bumping the generation voids any cached search.
    tables = [
        t.name
        for t in reversed(SQLModel.metadata.sorted_tables)
        if t.name != "search_meta"
    ]
    with db.engine.begin() as conn:
        if db.dialect == "sqlite":
            conn.execute(text("DELETE FROM search_fts"))
            for t in tables:
                conn.execute(text(f'DELETE FROM "{t}"'))  # noqa: S608 - model table names
        else:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)))
        conn.execute(text("UPDATE search_meta SET value = value + 1"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty, migrated database: each test runs once per engine."""
    database: Database = request.getfixturevalue(f"{request.param}_db")
    _empty(database)
    yield database
    _empty(database)


@pytest.fixture
def sqlite_only_db(sqlite_db: Database) -> Iterator[Database]:
    """An empty SQLite database, for tests whose logic does not touch SQL."""
    _empty(sqlite_db)
    yield sqlite_db
    _empty(sqlite_db)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL, after checking Redis answers."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        service_unavailable("Redis at " + REDIS_URL, exc)
    return REDIS_URL


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[RedisStore]:
    """A Redis store with a namespace of its own, cleaned up afterwards."""
    namespace = f"veilx-test-{uuid.uuid4().hex[:10]}"
    store = RedisStore(redis_url, namespace=namespace)
    yield store
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def kv(request: pytest.FixtureRequest) -> Iterator[KeyValueStore]:
    """Each key-value store in turn."""
    if request.param == "memory":
        yield MemoryStore()
    else:
        yield request.getfixturevalue("redis_store")


def make_settings(tmp: Path, **overrides: object) -> Settings:
    """Settings for tests: test environment, a real-looking secret, a temp dir."""
    values: dict[str, object] = {
        "environment": "test",
        "secret_key": TEST_SECRET,
        "data_dir": tmp,
        "rate_limit_per_minute": 100_000,
        "rate_limit_burst": 10_000,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def client(db: Database, tmp_path: Path) -> Iterator[TestClient]:
    """An API client on each engine, with the in-process store."""
    app = create_app(make_settings(tmp_path), db=db, kv=MemoryStore(), migrate=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def run(coro: object) -> object:
    """Run a coroutine to completion (for store tests)."""
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def hardhat_url() -> Iterator[str]:
    """The URL of a Hardhat JSON-RPC node running for this session (xdist worker).

    Skips when ``contracts/node_modules`` is not installed (``cd contracts && npm
    ci``), or fails under ``VEILX_REQUIRE_SERVICES=1``.
    """
    from tests.ledger._hardhat import hardhat_missing, hardhat_node

    missing = hardhat_missing()
    if missing is not None:
        service_unavailable("Hardhat", missing)
    with hardhat_node() as url:
        yield url

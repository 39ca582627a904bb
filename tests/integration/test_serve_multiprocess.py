"""`veilx serve` as real processes: two API workers sharing PostgreSQL and Redis.

The rate limit and idempotency records must hold across worker processes, which
only a shared store makes true.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from marketplace.db import Database
from marketplace.models import Role
from tests.conftest import TEST_SECRET
from tests.factories import Party, create_random_org

pytestmark = pytest.mark.integration

BURST = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(
    pg_schema_url: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[str, Database]]:
    """Run `veilx serve --workers 2` on PostgreSQL + Redis; stop it by pid."""
    port = _free_port()
    namespace = f"veilx-it-{uuid.uuid4().hex[:10]}"
    namespace_db = Database.from_url(pg_schema_url)
    namespace_db.upgrade()
    env = {
        **os.environ,
        "VEILX_ENVIRONMENT": "production",
        "VEILX_SECRET_KEY": TEST_SECRET,
        "VEILX_DATA_DIR": str(tmp_path),
        "VEILX_DATABASE_URL": pg_schema_url,
        "VEILX_REDIS_URL": redis_url,
        "VEILX_REDIS_NAMESPACE": namespace,
        "VEILX_RATE_LIMIT_PER_MINUTE": "6",
        "VEILX_RATE_LIMIT_BURST": str(BURST),
        "VEILX_LOG_LEVEL": "warning",
    }
    veilx = Path(sys.executable).parent / "veilx"
    proc = subprocess.Popen(  # noqa: S603 - our own console script
        [
            str(veilx),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"veilx serve did not start: {err[-2000:]}")
            time.sleep(0.2)
        yield base, namespace_db
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        namespace_db.dispose()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def _fresh_connection_client(party: Party) -> httpx.Client:
    # No keep-alive: each request opens a new connection, so the kernel spreads
    # them over both worker processes.
    return httpx.Client(
        headers=party.headers,
        timeout=10,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def test_health_reports_postgres_and_redis(served: tuple[str, Database]) -> None:
    base, _ = served
    body = httpx.get(base + "/health").json()
    assert body == {"status": "ok", "database": "postgresql", "kv": "redis"}


def test_rate_limit_is_shared_by_workers(served: tuple[str, Database]) -> None:
    base, db = served
    party = create_random_org(db, Role.BUYER)
    with _fresh_connection_client(party) as c:
        codes = [c.get(base + "/v1/me").status_code for _ in range(3 * BURST)]
    assert set(codes) <= {200, 429}
    # One bucket for both processes: at most the burst (plus the slow refill of
    # 0.1 token/s) gets through, not twice the burst.
    assert BURST <= codes.count(200) <= BURST + 2
    with _fresh_connection_client(party) as c:
        r = c.get(base + "/v1/me")
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1


def test_idempotent_post_replays_across_workers(served: tuple[str, Database]) -> None:
    base, db = served
    party = create_random_org(db, Role.PROVIDER)
    key = uuid.uuid4().hex
    with _fresh_connection_client(party) as c:
        responses = [
            c.post(
                base + "/v1/api-keys",
                json={"name": "deploy"},
                headers={"Idempotency-Key": key},
            )
            for _ in range(5)
        ]
        listing = c.get(base + "/v1/api-keys").json()
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["secret"] for r in responses}) == 1
    assert [r.headers.get("idempotent-replayed") for r in responses[1:]] == ["true"] * 4
    assert sorted(k["name"] for k in listing) == ["deploy", "test"]

"""The HTTP layer: error mapping, retries, idempotency keys, client lifecycle."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from sdk import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    Client,
    ConflictError,
    InputError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    VeilxError,
)
from sdk._http import HTTP
from tests.unit.sdk._fake import FakeExchange, problem


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the backoff pauses instead of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr(HTTP, "_sleep", staticmethod(recorded.append))
    return recorded


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", InvalidRequestError),
        (401, "authentication_required", AuthenticationError),
        (403, "permission_denied", PermissionDeniedError),
        (404, "not_found", NotFoundError),
        (409, "invalid_transition", ConflictError),
        (422, "kind_not_permitted", InvalidRequestError),
        (429, "rate_limited", RateLimitError),
        (500, "internal_error", ServerError),
        (503, "unavailable", ServerError),
        (418, "teapot", APIError),
    ],
)
def test_every_status_maps_to_its_error_with_the_request_id(
    exchange: FakeExchange,
    tmp_path: Path,
    status: int,
    code: str,
    cls: type[APIError],
) -> None:
    exchange.faults.append(problem(status, code, f"it went wrong ({status})"))
    with exchange.client(tmp_path) as client, pytest.raises(cls) as caught:
        client.datasets.get(exchange.dataset_id)
    err = caught.value
    assert type(err) is cls
    assert (err.http_status, err.code) == (status, code)
    assert err.detail == f"it went wrong ({status})"
    assert err.request_id == "req-000001"
    assert err.body["status"] == status
    assert str(err) == (
        f"it went wrong ({status}) (HTTP {status}, {code}, request req-000001)"
    )
    assert isinstance(err, VeilxError)


def test_validation_errors_list_each_field(
    exchange: FakeExchange, tmp_path: Path
) -> None:
    exchange.faults.append(
        problem(
            422,
            "validation_failed",
            "params.features: too short; purpose: bad",
            errors=[
                {"field": "params.features", "message": "too short", "code": "short"},
                {"field": "purpose", "reason": "not permitted"},
            ],
        )
    )
    with exchange.client(tmp_path) as client, pytest.raises(InvalidRequestError) as e:
        client.jobs.get(uuid.uuid4())
    assert e.value.fields == ["params.features", "purpose"]
    assert [(x.field, x.reason, x.code) for x in e.value.errors] == [
        ("params.features", "too short", "short"),
        ("purpose", "not permitted", "invalid"),
    ]


def test_a_wrong_api_key_is_an_authentication_error(
    exchange: FakeExchange, tmp_path: Path
) -> None:
    http = httpx.Client(transport=httpx.MockTransport(exchange.handle))
    client = Client("vx_wrong", base_url=exchange.base_url, http_client=http)
    with pytest.raises(AuthenticationError) as caught:
        client.datasets.get(exchange.dataset_id)
    assert caught.value.code == "authentication_required"
    assert exchange.requests[0].headers["Authorization"] == "Bearer vx_wrong"


def test_non_json_error_bodies_still_map(
    exchange: FakeExchange, tmp_path: Path
) -> None:
    exchange.faults.append(httpx.Response(502, text="upstream gone"))
    with exchange.client(tmp_path) as client, pytest.raises(ServerError) as caught:
        client.nodes.get(exchange.node_id)
    assert caught.value.code == "http_502"
    assert caught.value.detail == "upstream gone"


def test_retries_are_off_by_default(
    exchange: FakeExchange, tmp_path: Path, sleeps: list[float]
) -> None:
    exchange.faults.append(problem(503, "unavailable", "try later"))
    with exchange.client(tmp_path) as client, pytest.raises(ServerError):
        client.datasets.get(exchange.dataset_id)
    assert len(exchange.requests) == 1
    assert sleeps == []


def test_post_retries_reuse_one_idempotency_key(
    exchange: FakeExchange, tmp_path: Path, sleeps: list[float]
) -> None:
    exchange.faults.extend(
        [
            httpx.ConnectError("connection refused"),
            problem(503, "unavailable", "try later"),
            problem(409, "idempotency_key_in_use", "still running"),
        ]
    )
    with exchange.client(tmp_path, max_network_retries=3) as client:
        ref = client.blobs.upload(b"ciphertext bytes")
    assert ref.size == len(b"ciphertext bytes")
    posts = [r for r in exchange.requests if r.method == "POST"]
    assert len(posts) == 4
    keys = {r.headers["Idempotency-Key"] for r in posts}
    assert len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4
    assert all(r.content == b"ciphertext bytes" for r in posts)
    assert len(sleeps) == 3


def test_separate_posts_get_separate_idempotency_keys(
    exchange: FakeExchange, tmp_path: Path
) -> None:
    with exchange.client(tmp_path) as client:
        client.blobs.upload(b"one")
        client.blobs.upload(b"two")
        client.datasets.get(exchange.dataset_id)
    posts = [
        r.headers["Idempotency-Key"] for r in exchange.requests if r.method == "POST"
    ]
    assert len(set(posts)) == 2
    gets = [r for r in exchange.requests if r.method == "GET"]
    assert all("Idempotency-Key" not in r.headers for r in gets)


def test_backoff_is_exponential_capped_and_jittered(
    exchange: FakeExchange, tmp_path: Path, sleeps: list[float]
) -> None:
    exchange.faults.extend(problem(500, "internal_error", "boom") for _ in range(6))
    with exchange.client(tmp_path, max_network_retries=6) as client:
        dataset = client.datasets.get(exchange.dataset_id)  # the 7th attempt
    assert dataset.id == exchange.dataset_id
    assert len(sleeps) == 6
    for attempt, pause in enumerate(sleeps):
        nominal = min(HTTP.MAX_RETRY_DELAY, HTTP.INITIAL_RETRY_DELAY * 2**attempt)
        assert 0.5 * nominal <= pause <= nominal
    assert max(sleeps) <= HTTP.MAX_RETRY_DELAY


def test_rate_limit_honours_retry_after(
    exchange: FakeExchange, tmp_path: Path, sleeps: list[float]
) -> None:
    exchange.faults.append(
        problem(429, "rate_limited", "slow down", headers={"Retry-After": "7"})
    )
    with exchange.client(tmp_path, max_network_retries=1) as client:
        client.datasets.get(exchange.dataset_id)
    assert sleeps == [7.0]


def test_a_long_retry_after_is_not_waited_for(
    exchange: FakeExchange, tmp_path: Path, sleeps: list[float]
) -> None:
    exchange.faults.append(
        problem(429, "rate_limited", "slow down", headers={"Retry-After": "3600"})
    )
    with exchange.client(tmp_path, max_network_retries=3) as client:
        with pytest.raises(RateLimitError) as caught:
            client.datasets.get(exchange.dataset_id)
    assert caught.value.retry_after == 3600.0
    assert sleeps == []
    assert len(exchange.requests) == 1


def test_client_errors_are_not_retried(
    exchange: FakeExchange, tmp_path: Path, sleeps: list[float]
) -> None:
    exchange.faults.append(problem(409, "public_key_taken", "taken"))
    with exchange.client(tmp_path, max_network_retries=3) as client:
        with pytest.raises(ConflictError):
            client.blobs.upload(b"x")
    assert len(exchange.requests) == 1
    assert sleeps == []


def test_exhausted_retries_raise_connection_and_timeout_errors(
    exchange: FakeExchange, tmp_path: Path, sleeps: list[float]
) -> None:
    exchange.faults.extend([httpx.ConnectError("refused")] * 3)
    with exchange.client(tmp_path, max_network_retries=2) as client:
        with pytest.raises(APIConnectionError) as caught:
            client.datasets.get(exchange.dataset_id)
    assert not isinstance(caught.value, APITimeoutError)
    assert "after 2 retries" in str(caught.value)
    assert caught.value.url.endswith(f"/v1/datasets/{exchange.dataset_id}")

    exchange.faults.append(httpx.ReadTimeout("too slow"))
    with exchange.client(tmp_path) as client, pytest.raises(APITimeoutError):
        client.datasets.get(exchange.dataset_id)


def test_requests_carry_credentials_and_user_agent(
    exchange: FakeExchange, tmp_path: Path
) -> None:
    with exchange.client(tmp_path) as client:
        client.datasets.get(exchange.dataset_id)
    sent = exchange.requests[0]
    assert sent.headers["User-Agent"].startswith("veilx-python/")
    assert sent.path == f"/v1/datasets/{exchange.dataset_id}"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"api_key": " "}, "api_key"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"timeout": 0}, "timeout"),
        ({"max_network_retries": -1}, "max_network_retries"),
    ],
)
def test_bad_client_options_name_the_field(options: dict, field: str) -> None:
    kwargs = {"api_key": "vx_key", **options}
    with pytest.raises(InputError) as caught:
        Client(**kwargs)
    assert caught.value.field == field


def test_close_leaves_a_passed_in_http_client_open(tmp_path: Path) -> None:
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with Client("vx_key", http_client=http, key_dir=tmp_path):
        pass
    assert not http.is_closed
    owned = Client("vx_key", key_dir=tmp_path)
    owned.close()
    assert owned._http._client.is_closed


def test_timeout_applies_to_a_passed_in_client_only_when_given(tmp_path: Path) -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=[])

    http = httpx.Client(transport=httpx.MockTransport(handler), timeout=11.0)
    Client("vx_key", http_client=http, key_dir=tmp_path).nodes.list()
    Client("vx_key", http_client=http, key_dir=tmp_path, timeout=3.0).nodes.list()
    assert [t["read"] for t in seen] == [11.0, 3.0]
    assert Client("vx_key", key_dir=tmp_path)._http._client.timeout.read == 30.0

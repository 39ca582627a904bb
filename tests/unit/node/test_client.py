"""The exchange client: retries, problem errors, idempotency keys, long polls."""

from __future__ import annotations

import hashlib
import json
import uuid

import httpx
import pytest

from mpc_engine.node import ExchangeClient, ExchangeError, ExchangeUnavailable
from mpc_engine.protocol import JobOutcome, JobResult, ReasonCode

NODE = uuid.uuid4()


def _client(
    handler: httpx.MockTransport, sleeps: list[float] | None = None, **kw: object
) -> ExchangeClient:
    waits = sleeps if sleeps is not None else []
    return ExchangeClient(
        "http://exchange.test/",
        "vx_key",
        transport=handler,
        sleep=waits.append,
        **kw,  # type: ignore[arg-type]
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_connection_errors_and_5xx_are_retried_with_backoff() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(seen) == 2:
            return httpx.Response(503, headers={"Retry-After": "3"})
        return httpx.Response(201, json={"sha256": _sha(b"abc"), "size": 3})

    sleeps: list[float] = []
    client = _client(httpx.MockTransport(handler), sleeps)
    assert client.upload_blob(b"abc") == _sha(b"abc")
    assert len(seen) == 3
    assert 0.25 <= sleeps[0] <= 0.5 and sleeps[1] == 3.0  # jitter; Retry-After
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert keys == {f"blob-{_sha(b'abc')}"}  # the same key on every attempt
    assert all(r.headers["Authorization"] == "Bearer vx_key" for r in seen)
    assert seen[0].url.path == "/v1/blobs"
    assert seen[0].headers["Content-Type"] == "application/octet-stream"


def test_retries_run_out() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(502, json={"code": "bad_gateway", "detail": "upstream"})

    client = _client(httpx.MockTransport(handler), max_retries=2)
    with pytest.raises(ExchangeUnavailable) as err:
        client.get_blob("a" * 64)
    assert len(calls) == 3
    assert err.value.status == 502 and err.value.code == "bad_gateway"

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ExchangeUnavailable, match="cannot reach the exchange"):
        _client(httpx.MockTransport(down), max_retries=1).get_blob("a" * 64)


def test_client_errors_raise_at_once_with_the_problem() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            422,
            json={
                "type": "about:blank",
                "title": "Unprocessable",
                "status": 422,
                "detail": "the receipt does not match the job",
                "code": "bad_receipt",
                "errors": [{"field": "receipt.params_hash", "reason": "differs"}],
            },
        )

    result = JobResult(
        outcome=JobOutcome.REJECTED, reason_code=ReasonCode.DENIED, reason="no"
    )
    with pytest.raises(ExchangeError) as err:
        _client(httpx.MockTransport(handler)).post_result(NODE, result)
    assert len(calls) == 1
    assert err.value.status == 422 and err.value.code == "bad_receipt"
    assert "receipt.params_hash: differs" in err.value.detail
    assert str(err.value).startswith(f"POST /jobs/{NODE}/result: 422 (bad_receipt)")


def test_an_idempotency_key_in_use_is_waited_for() -> None:
    answers = [
        httpx.Response(409, json={"code": "idempotency_key_in_use"}),
        httpx.Response(200, json={"id": "x", "state": "running"}),
    ]
    client = _client(httpx.MockTransport(lambda r: answers.pop(0)))
    client.start_job(NODE)
    assert answers == []


def test_long_poll_and_result_keys() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/jobs/next"):
            return httpx.Response(204)
        return httpx.Response(200, json={"ok": True})

    client = _client(httpx.MockTransport(handler), timeout=5.0)
    assert client.next_job(NODE, 25) is None
    assert seen[0].url.params["wait"] == "25"
    assert seen[0].extensions["timeout"]["read"] == 30.0  # wait + timeout
    assert client.next_job(NODE, 99) is None
    assert seen[1].url.params["wait"] == "30"  # the protocol's maximum
    one = JobResult(
        outcome=JobOutcome.FAILED, reason_code=ReasonCode.TIMEOUT, reason="a"
    )
    two = JobResult(
        outcome=JobOutcome.FAILED, reason_code=ReasonCode.TIMEOUT, reason="b"
    )
    client.post_result(NODE, one)
    client.post_result(NODE, one)
    client.post_result(NODE, two)
    keys = [r.headers["Idempotency-Key"] for r in seen[2:]]
    assert keys[0] == keys[1] != keys[2]  # same result, same key
    assert json.loads(seen[2].content)["reason"] == "a"


def test_unexpected_answers_are_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/blobs":
            return httpx.Response(201, json={"sha256": "f" * 64, "size": 1})
        return httpx.Response(200, json={"job_id": "not a job"})

    client = _client(httpx.MockTransport(handler))
    with pytest.raises(ExchangeError, match="under another hash"):
        client.upload_blob(b"x")
    with pytest.raises(ExchangeError) as err:
        client.next_job(NODE, 0)
    assert err.value.code == "unexpected_response"

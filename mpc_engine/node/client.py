"""A small HTTP client for the exchange endpoints the node uses (``docs/protocol.md``).

* Every POST carries an ``Idempotency-Key`` derived from what it does (the job,
  the content hash, the body's hash), so a retry after a lost response — or after
  a node restart — is recognised by the exchange instead of repeated.
* Connection errors, 5xx and 429 answers are retried with capped, jittered
  exponential backoff (``Retry-After`` is honoured); other errors raise
  :class:`~mpc_engine.node.errors.ExchangeError` with the problem's ``code`` and
  ``detail`` at once.
* The transport is injectable (``httpx.MockTransport`` in tests).
* Nothing is logged but methods, paths and statuses.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
from pydantic import ValidationError

from mpc_engine.node.errors import ExchangeError, ExchangeUnavailable
from mpc_engine.node.listing import DatasetListing, NodeInfo, VersionInfo
from mpc_engine.protocol import (
    JobResult,
    JobSpec,
    SignedAttestation,
    canonical_json,
    sha256_hex,
)

__all__ = ["ExchangeClient"]

logger = logging.getLogger("veilx.node.client")

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_USER_AGENT = "veilx-node/0.1"


def _body_key(prefix: str, body: Any) -> str:
    return f"{prefix}-{hashlib.sha256(canonical_json(body)).hexdigest()[:40]}"


class ExchangeClient:
    """The node's view of the exchange API.

    Parameters
    ----------
    base_url
        The exchange's URL (``/v1`` is added to every path).
    api_key
        An API key of the provider organisation.
    transport
        An httpx transport (default: real network).
    timeout
        Seconds per request (long polls add their wait).
    max_retries
        Retries after the first attempt on connection errors, 5xx and 429.
    backoff, max_backoff
        The first retry waits about ``backoff`` seconds, doubling up to
        ``max_backoff`` (each wait jittered to 50-100 %).
    sleep
        How to wait (tests pass a no-op).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/v1",
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": _USER_AGENT,
            },
            transport=transport,
            timeout=timeout,
        )
        self._timeout = timeout
        self._max_retries = max(0, max_retries)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._sleep = sleep

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ExchangeClient(base_url={str(self._http.base_url)!r})"

    # -- transport ---------------------------------------------------------------------

    def _wait(self, attempt: int, response: httpx.Response | None) -> None:
        delay = min(self._max_backoff, self._backoff * 2**attempt)
        delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not a secret
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                delay = min(self._max_backoff, float(retry_after))
        self._sleep(delay)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Iterable[tuple[str, str]] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent_headers = dict(headers or {})
        if idempotency_key is not None:
            sent_headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(
                    method,
                    path,
                    json=json,
                    content=content,
                    params=list(params) if params is not None else None,
                    headers=sent_headers,
                    timeout=timeout if timeout is not None else self._timeout,
                )
            except httpx.TransportError as exc:
                logger.debug("%s %s: %s", method, path, type(exc).__name__)
                if attempt >= self._max_retries:
                    raise ExchangeUnavailable(
                        method=method,
                        path=path,
                        status=None,
                        code=None,
                        detail=f"cannot reach the exchange ({type(exc).__name__})",
                    ) from None
            else:
                logger.debug("%s %s → %d", method, path, response.status_code)
                if not self._retryable(response):
                    if response.status_code >= 400:
                        raise self._error(method, path, response, ExchangeError)
                    return response
                if attempt >= self._max_retries:
                    raise self._error(method, path, response, ExchangeUnavailable)
            self._wait(attempt, response)
            attempt += 1

    @staticmethod
    def _retryable(response: httpx.Response) -> bool:
        if response.status_code in _RETRY_STATUSES:
            return True
        # The first request with this Idempotency-Key is still running there.
        if response.status_code == 409:
            try:
                body = response.json()
            except ValueError:
                return False
            return (
                isinstance(body, dict) and body.get("code") == "idempotency_key_in_use"
            )
        return False

    @staticmethod
    def _error(
        method: str, path: str, response: httpx.Response, kind: type[ExchangeError]
    ) -> ExchangeError:
        code: str | None = None
        detail = response.reason_phrase or "error"
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = body.get("code") if isinstance(body.get("code"), str) else None
            text = body.get("detail") or body.get("title")
            if isinstance(text, str) and text:
                detail = text
            errors = body.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                first = errors[0]
                field = first.get("field")
                reason = first.get("reason") or first.get("message")
                if field and reason and str(field) not in detail:
                    detail = f"{detail} ({field}: {reason})"
        return kind(
            method=method,
            path=path,
            status=response.status_code,
            code=code,
            detail=detail,
        )

    @staticmethod
    def _parse(method: str, path: str, model: Any, data: Any) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(body)"
            raise ExchangeError(
                method=method,
                path=path,
                status=None,
                code="unexpected_response",
                detail=f"the exchange's answer does not fit the protocol "
                f"({where}: {first['msg']})",
            ) from None

    # -- nodes -------------------------------------------------------------------------

    def register_node(self, name: str, public_key: str) -> NodeInfo:
        """``POST /nodes`` (raises ``ExchangeError`` 409 if the key is taken)."""
        path = "/nodes"
        response = self._request(
            "POST",
            path,
            json={"name": name, "public_key": public_key},
            idempotency_key=f"node-register-{public_key}",
        )
        info: NodeInfo = self._parse("POST", path, NodeInfo, response.json())
        return info

    def list_nodes(self) -> list[NodeInfo]:
        """``GET /nodes`` (the provider's own nodes)."""
        response = self._request("GET", "/nodes")
        data = response.json()
        if not isinstance(data, list):
            data = [data]
        return [self._parse("GET", "/nodes", NodeInfo, item) for item in data]

    def get_node(self, node_id: uuid.UUID) -> NodeInfo:
        """``GET /nodes/{id}``."""
        path = f"/nodes/{node_id}"
        info: NodeInfo = self._parse(
            "GET", path, NodeInfo, self._request("GET", path).json()
        )
        return info

    def post_attestation(self, node_id: uuid.UUID, signed: SignedAttestation) -> None:
        """``POST /nodes/{id}/attestations``."""
        body = signed.model_dump(mode="json")
        self._request(
            "POST",
            f"/nodes/{node_id}/attestations",
            json=body,
            idempotency_key=_body_key("attestation", body),
        )

    def next_job(self, node_id: uuid.UUID, wait: float) -> JobSpec | None:
        """``GET /nodes/{id}/jobs/next?wait=`` — a dispatched job, or ``None``."""
        seconds = max(0, min(30, round(wait)))
        path = f"/nodes/{node_id}/jobs/next"
        response = self._request(
            "GET",
            path,
            params=[("wait", str(seconds))],
            timeout=self._timeout + seconds,
        )
        if response.status_code == 204 or not response.content:
            return None
        spec: JobSpec = self._parse("GET", path, JobSpec, response.json())
        return spec

    def list_jobs(self, node_id: uuid.UUID, states: Iterable[str]) -> list[JobSpec]:
        """``GET /nodes/{id}/jobs?state=…`` — the node's jobs in those states."""
        path = f"/nodes/{node_id}/jobs"
        response = self._request("GET", path, params=[("state", s) for s in states])
        data = response.json()
        if not isinstance(data, list):
            raise ExchangeError(
                method="GET",
                path=path,
                status=response.status_code,
                code="unexpected_response",
                detail="expected a list of jobs",
            )
        return [self._parse("GET", path, JobSpec, item) for item in data]

    # -- datasets ----------------------------------------------------------------------

    def get_dataset(self, dataset_id: uuid.UUID) -> DatasetListing:
        """``GET /datasets/{id}``."""
        path = f"/datasets/{dataset_id}"
        listing: DatasetListing = self._parse(
            "GET", path, DatasetListing, self._request("GET", path).json()
        )
        return listing

    def list_versions(self, dataset_id: uuid.UUID) -> list[VersionInfo]:
        """``GET /datasets/{id}/versions``."""
        path = f"/datasets/{dataset_id}/versions"
        data = self._request("GET", path).json()
        if not isinstance(data, list):
            raise ExchangeError(
                method="GET",
                path=path,
                status=None,
                code="unexpected_response",
                detail="expected a list of versions",
            )
        return [self._parse("GET", path, VersionInfo, item) for item in data]

    def create_version(
        self,
        dataset_id: uuid.UUID,
        *,
        content_hash: str,
        row_count: int,
        byte_size: int,
        note: str | None,
        make_live: bool = True,
    ) -> VersionInfo:
        """``POST /datasets/{id}/versions``."""
        path = f"/datasets/{dataset_id}/versions"
        response = self._request(
            "POST",
            path,
            json={
                "content_hash": content_hash,
                "row_count": row_count,
                "byte_size": byte_size,
                "note": note,
                "make_live": make_live,
            },
            idempotency_key=f"version-{dataset_id}-{content_hash}",
        )
        version: VersionInfo = self._parse("POST", path, VersionInfo, response.json())
        return version

    def set_live_version(self, dataset_id: uuid.UUID, version_id: uuid.UUID) -> None:
        """``PUT /datasets/{id}/live-version``."""
        self._request(
            "PUT",
            f"/datasets/{dataset_id}/live-version",
            json={"version_id": str(version_id)},
        )

    # -- jobs --------------------------------------------------------------------------

    def start_job(self, job_id: uuid.UUID) -> None:
        """``POST /jobs/{id}/start`` (dispatched → running)."""
        self._request(
            "POST", f"/jobs/{job_id}/start", idempotency_key=f"job-start-{job_id}"
        )

    def post_result(self, job_id: uuid.UUID, result: JobResult) -> None:
        """``POST /jobs/{id}/result``."""
        body = result.model_dump(mode="json")
        self._request(
            "POST",
            f"/jobs/{job_id}/result",
            json=body,
            idempotency_key=_body_key(f"job-result-{job_id}", body),
        )

    # -- blobs and contexts ------------------------------------------------------------

    def upload_blob(self, data: bytes) -> str:
        """``POST /blobs``; returns the SHA-256 (checked against the local one)."""
        sha = sha256_hex(data)
        response = self._request(
            "POST",
            "/blobs",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
            idempotency_key=f"blob-{sha}",
        )
        try:
            answered = response.json().get("sha256")
        except (ValueError, AttributeError):
            answered = None
        if answered != sha:
            raise ExchangeError(
                method="POST",
                path="/blobs",
                status=response.status_code,
                code="unexpected_response",
                detail="the exchange stored the blob under another hash",
            )
        return sha

    def get_blob(self, sha256: str) -> bytes:
        """``GET /blobs/{sha256}``."""
        return self._request("GET", f"/blobs/{sha256}").content

    def get_context(self, context_id: str) -> bytes:
        """``GET /he-contexts/{id}``."""
        return self._request("GET", f"/he-contexts/{context_id}").content

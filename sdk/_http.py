"""The SDK's one HTTP path: authentication, idempotency keys, retries, errors.

Every request goes through :meth:`HTTP.request`:

* ``Authorization: Bearer <api key>`` and a ``User-Agent``;
* every POST carries an ``Idempotency-Key`` (a uuid4, or the caller's own
  passed in ``headers``) made once per call and reused by every retry of it, so
  a retried POST never acts twice;
* retries are opt-in (``max_network_retries``): connection errors and timeouts,
  429 (waiting ``Retry-After`` when the exchange says, up to
  :attr:`HTTP.MAX_RETRY_AFTER`), 409 ``idempotency_key_in_use`` (the first
  attempt is still running) and 5xx, with capped, jittered exponential backoff;
* an error status becomes the :mod:`sdk.errors` class for it, carrying the
  problem document's fields and the ``X-Request-Id``.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from sdk.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    FieldError,
    InputError,
    InvalidRequestError,
    NotFoundError,
    PaymentRequiredError,
    PaymentUnavailableError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)

__all__ = ["HTTP", "USER_AGENT"]

USER_AGENT: Final = "veilx-python/0.1.0"
DEFAULT_TIMEOUT: Final = 30.0
REQUEST_ID_HEADER: Final = "X-Request-Id"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"

QueryValue = str | int | float | bool | None
Query = Mapping[str, QueryValue | list[str]]


class HTTP:
    """Sends requests to one exchange (internal; use :class:`sdk.Client`).

    Parameters
    ----------
    api_key
        The bearer credential.
    base_url
        The exchange's root URL (paths are under ``/v1``).
    timeout
        Seconds per request (connect, read, write, pool); ``None``: 30 s, or
        the passed-in client's own timeout.
    max_network_retries
        Retries after the first attempt (0: none).
    http_client
        A caller-owned ``httpx.Client`` (its transport is used as is and it is
        not closed by :meth:`close`).
    """

    INITIAL_RETRY_DELAY: float = 0.5
    """Seconds before the first retry (before jitter)."""
    MAX_RETRY_DELAY: float = 8.0
    """Cap on the exponential backoff."""
    MAX_RETRY_AFTER: float = 60.0
    """A ``Retry-After`` longer than this is not waited for: the error is raised."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str,
        timeout: float | None,
        max_network_retries: int,
        http_client: httpx.Client | None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise InputError(
                "api_key", "is empty; pass the API key issued by the exchange"
            )
        if isinstance(max_network_retries, bool) or not isinstance(
            max_network_retries, int
        ):
            raise InputError("max_network_retries", "must be an integer")
        if not 0 <= max_network_retries <= 10:
            raise InputError("max_network_retries", "must be 0 to 10")
        if timeout is not None and not (
            isinstance(timeout, int | float)
            and not isinstance(timeout, bool)
            and timeout > 0
        ):
            raise InputError("timeout", "must be a positive number of seconds")
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise InputError(
                "base_url", f"{base_url!r} is not an http(s) URL with a host"
            )
        self.base_url = str(base_url).rstrip("/")
        # Applied per request only when asked for; else the client's own setting.
        self._request_timeout = None if timeout is None else float(timeout)
        self.max_network_retries = max_network_retries
        self._api_key = api_key.strip()
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(
            timeout=DEFAULT_TIMEOUT if timeout is None else float(timeout)
        )
        self._random = random.SystemRandom()

    def close(self) -> None:
        """Close the connection pool if the SDK made it."""
        if self._owns_client:
            self._client.close()

    def url(self, path: str) -> str:
        """The absolute URL of an API path (``/jobs`` → ``…/v1/jobs``)."""
        return f"{self.base_url}/v1{path}"

    # -- requests ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Query | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request, retrying as configured; raise the error of a failure.

        Returns
        -------
        httpx.Response
            A 2xx response (its body read).
        """
        method = method.upper()
        send_headers = {
            "Authorization": f"Bearer {self._api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        if content is not None:
            send_headers["Content-Type"] = "application/octet-stream"
        if method == "POST":
            send_headers[IDEMPOTENCY_HEADER] = str(uuid.uuid4())
        send_headers.update(headers or {})
        query = _clean_query(params)
        url = self.url(path)
        attempt = 0
        while True:
            try:
                response = self._client.request(
                    method,
                    url,
                    params=query,
                    json=json,
                    content=content,
                    headers=send_headers,
                    timeout=self._timeout_option(),
                )
            except httpx.TransportError as exc:
                if attempt < self.max_network_retries:
                    self._sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                raise _connection_error(exc, url, attempt) from exc
            if response.is_success:
                return response
            error = _api_error(response)
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            delay = self._retry_delay(error, attempt, retry_after)
            if delay is None:
                raise error
            self._sleep(delay)
            attempt += 1

    def json(
        self,
        method: str,
        path: str,
        *,
        params: Query | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request and decode its JSON body.

        ``headers`` are added to (or replace) the SDK's own, e.g. a caller-chosen
        ``Idempotency-Key`` that every retry then reuses.
        """
        response = self.request(
            method, path, params=params, json=json, content=content, headers=headers
        )
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"the exchange answered {method} {path} with a body that is not JSON",
                http_status=response.status_code,
                code="invalid_response",
                request_id=response.headers.get(REQUEST_ID_HEADER),
            ) from None

    def _timeout_option(self) -> float | httpx._client.UseClientDefault:
        """The timeout asked for, on a passed-in client; else the client's own."""
        if self._request_timeout is None or self._owns_client:
            return httpx.USE_CLIENT_DEFAULT
        return self._request_timeout

    # -- retries ------------------------------------------------------------------

    def _retry_delay(
        self, error: APIError, attempt: int, retry_after: float | None
    ) -> float | None:
        """Seconds to wait before retrying ``error``, or ``None`` not to retry."""
        if attempt >= self.max_network_retries:
            return None
        retryable = (
            isinstance(error, ServerError)
            or isinstance(error, RateLimitError)
            or (
                isinstance(error, ConflictError)
                and error.code == "idempotency_key_in_use"
            )
        )
        if not retryable:
            return None
        backoff = self._backoff(attempt)
        if retry_after is None:
            return backoff
        if retry_after > self.MAX_RETRY_AFTER:
            return None
        return max(retry_after, backoff)

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter: 50-100 % of min(cap, d·2^n)."""
        base = min(self.MAX_RETRY_DELAY, self.INITIAL_RETRY_DELAY * (2.0**attempt))
        return base * (0.5 + 0.5 * self._random.random())

    @staticmethod
    def _sleep(seconds: float) -> None:
        time.sleep(seconds)


def _clean_query(params: Query | None) -> dict[str, Any] | None:
    if not params:
        return None
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or (isinstance(value, list) and not value):
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = value
    return out


def _connection_error(
    exc: httpx.TransportError, url: str, retries: int
) -> APIConnectionError:
    tried = (
        f" (after {retries} retr{'y' if retries == 1 else 'ies'})" if retries else ""
    )
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"request to {url} timed out{tried}: {reason}", url=url)
    return APIConnectionError(f"could not reach {url}{tried}: {reason}", url=url)


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


_BY_STATUS: Final[dict[int, type[APIError]]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def _field_errors(raw: Any) -> list[FieldError]:
    out: list[FieldError] = []
    if not isinstance(raw, list):
        return out
    for item in raw:
        if not isinstance(item, dict):
            continue
        field = str(item.get("field") or "body")
        reason = item.get("reason", item.get("message", "invalid"))
        out.append(FieldError(field, str(reason), str(item.get("code") or "invalid")))
    return out


def _api_error(response: httpx.Response) -> APIError:
    """The :mod:`sdk.errors` error for a non-2xx response."""
    status = response.status_code
    request_id = response.headers.get(REQUEST_ID_HEADER)
    body: dict[str, Any] = {}
    try:
        response.read()
        decoded = response.json()
        if isinstance(decoded, dict):
            body = decoded
    except ValueError:
        body = {}
    code = str(body.get("code") or f"http_{status}")
    title = str(body.get("title") or response.reason_phrase or "")
    detail = body.get("detail")
    if not isinstance(detail, str) or not detail:
        text = "" if body else response.text.strip()[:200]
        detail = text or title or f"HTTP {status}"
    common: dict[str, Any] = {
        "http_status": status,
        "code": code,
        "title": title,
        "request_id": request_id,
        "body": body,
    }
    if status == 503 and code == "payment_unavailable":
        return PaymentUnavailableError(detail, **common)
    if status >= 500:
        return ServerError(detail, **common)
    cls = _BY_STATUS.get(status, APIError)
    if cls is InvalidRequestError:
        return InvalidRequestError(
            detail, errors=_field_errors(body.get("errors")), **common
        )
    if cls is RateLimitError:
        retry_after = _parse_retry_after(response.headers.get("Retry-After"))
        return RateLimitError(detail, retry_after=retry_after, **common)
    return cls(detail, **common)

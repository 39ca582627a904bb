"""ASGI middleware: request ids, per-credential rate limits, idempotent POSTs.

Written as plain ASGI callables (not ``BaseHTTPMiddleware``) to stay cheap on the
hot path.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from marketplace import security
from marketplace.api.problems import problem_body
from marketplace.kv import KeyValueStore, StoredResponse

__all__ = ["IdempotencyMiddleware", "RateLimitMiddleware", "RequestIdMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("veilx.api")
_IDEM_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
MAX_BODY = 2 * 1024 * 1024


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


def credential_key(scope: Scope) -> str:
    """Who a request counts against: its API key, its session, or its address."""
    auth = _header(scope, b"authorization")
    if auth and auth.lower().startswith("bearer "):
        token = auth[7:].strip()
        prefix = security.parse_api_key(token)
        if prefix is not None:
            return f"key:{prefix}"
        return "tok:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    cookie = _header(scope, b"cookie")
    if cookie and "veilx_session=" in cookie:
        value = cookie.split("veilx_session=", 1)[1].split(";", 1)[0]
        return "tok:" + hashlib.sha256(value.encode()).hexdigest()[:32]
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


async def _send_problem(
    send: Send,
    status: int,
    code: str,
    title: str,
    detail: str,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    body = orjson.dumps(
        problem_body(status, code, title, detail, instance=path, extra=extra)
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Adds ``X-Request-Id`` (the client's, if well-formed, or a new one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Tag the request and its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        rid = (
            given
            if given and re.fullmatch(r"[\w.-]{8,64}", given)
            else uuid.uuid4().hex
        )
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", rid.encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_id)


class RateLimitMiddleware:
    """A token bucket per API key (or session, or client address)."""

    def __init__(
        self, app: ASGIApp, store: KeyValueStore, per_minute: int, burst: int
    ) -> None:
        self.app = app
        self.store = store
        self.rate = per_minute / 60.0
        self.burst = burst

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse with 429 when the caller's bucket is empty."""
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        allowed, wait = await self.store.take_token(
            credential_key(scope), self.rate, self.burst
        )
        if not allowed:
            retry = max(1, int(wait + 0.999))
            await _send_problem(
                send,
                429,
                "rate_limited",
                "Too many requests",
                f"rate limit of {int(self.rate * 60)} requests per minute exceeded; "
                f"retry in {retry} s",
                scope["path"],
                [(b"retry-after", str(retry).encode())],
                {"retry_after": retry},
            )
            return
        await self.app(scope, receive, send)


class IdempotencyMiddleware:
    """Replays the first response to a POST carrying the same ``Idempotency-Key``.

    The key is scoped to the credential. The same key with a different request
    (method, path, query or body) is refused with 409; a key whose first request is
    still running is refused with 409 ``idempotency_key_in_use``. Server errors are
    not stored, so the request may be retried with the same key.

    POSTs to ``exempt`` paths pass through untouched: content-addressed uploads,
    idempotent by construction (the same bytes give the same object) and too
    large to buffer here.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: KeyValueStore,
        ttl: int,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.store = store
        self.ttl = ttl
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Claim, run and record; or replay."""
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] in self.exempt
        ):
            await self.app(scope, receive, send)
            return
        key = _header(scope, b"idempotency-key")
        if key is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not _IDEM_KEY.fullmatch(key):
            await _send_problem(
                send,
                422,
                "validation_failed",
                "Validation failed",
                "header.Idempotency-Key: must be 1-255 printable ASCII characters",
                path,
                extra={
                    "errors": [
                        {
                            "field": "header.Idempotency-Key",
                            "message": "must be 1-255 printable ASCII characters",
                            "code": "invalid",
                        }
                    ]
                },
            )
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                await _send_problem(
                    send,
                    413,
                    "payload_too_large",
                    "Payload too large",
                    f"request bodies are limited to {MAX_BODY} bytes",
                    path,
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        fingerprint = hashlib.sha256(
            b"\x1f".join([b"POST", path.encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        record = hashlib.sha256(f"{credential_key(scope)}|{key}".encode()).hexdigest()
        begin = await self.store.idempotency_begin(record, fingerprint, self.ttl)
        if begin.state == "mismatch":
            await _send_problem(
                send,
                409,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different request",
                path,
            )
            return
        if begin.state == "pending":
            await _send_problem(
                send,
                409,
                "idempotency_key_in_use",
                "Idempotency key in use",
                "a request with this Idempotency-Key is still being processed; retry "
                "shortly",
                path,
                [(b"retry-after", b"1")],
            )
            return
        if begin.state == "done" and begin.response is not None:
            stored = begin.response
            await send(
                {
                    "type": "http.response.start",
                    "status": stored.status,
                    "headers": [
                        *(
                            (k.encode("latin-1"), v.encode("latin-1"))
                            for k, v in stored.headers
                        ),
                        (b"idempotent-replayed", b"true"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": stored.body})
            return

        sent_body = False

        async def replay_receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status = 500
        headers: list[tuple[str, str]] = []
        out: list[bytes] = []

        messages: list[Message] = []

        async def capture(message: Message) -> None:
            # Held back until the record is stored: a client that retries the
            # moment it has the response must find it, not a pending claim.
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"x-request-id", b"set-cookie")
                ]
            elif message["type"] == "http.response.body":
                out.append(message.get("body", b""))
            messages.append(message)

        try:
            await self.app(scope, replay_receive, capture)
        except BaseException:
            await self.store.idempotency_release(record)
            raise
        if status >= 500:
            await self.store.idempotency_release(record)
        else:
            await self.store.idempotency_finish(
                record,
                fingerprint,
                StoredResponse(status, headers, b"".join(out)),
                self.ttl,
            )
        for message in messages:
            await send(message)

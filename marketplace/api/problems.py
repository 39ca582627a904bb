"""RFC 9457 problem details: the one place errors become HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from marketplace.errors import FieldError, RateLimited, VeilxError

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "Problem",
    "install_problem_handlers",
    "problem_response",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "https://veilx.dev/problems/"
log = logging.getLogger("veilx.api")

_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("authentication_required", "Authentication required"),
    403: ("permission_denied", "Permission denied"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_failed", "Validation failed"),
    429: ("rate_limited", "Too many requests"),
}


class Problem(dict[str, Any]):
    """A problem body (``type``, ``title``, ``status``, ``detail``, ``code``, …)."""


def problem_body(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a problem document."""
    body: dict[str, Any] = {
        "type": _TYPE_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return body


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Return a problem response."""
    return Response(
        orjson.dumps(
            problem_body(status, code, title, detail, instance=instance, extra=extra)
        ),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        where, rest = parts[0], parts[1:]
        return ".".join(rest) if rest and where == "body" else ".".join([where, *rest])
    return ".".join(parts)


def validation_errors(errors: Sequence[Any]) -> list[FieldError]:
    """Flatten pydantic errors into field errors, expanding policy contradictions."""
    out: list[FieldError] = []
    for err in errors:
        loc = list(err.get("loc", ()))
        # A JSON syntax error is located by character offset, not by field.
        base = "body" if err.get("type") == "json_invalid" else _field_name(loc)
        ctx_error = (err.get("ctx") or {}).get("error")
        issues = getattr(ctx_error, "issues", None)
        if issues:
            prefix = base + "." if base and base != "body" else ""
            out.extend(FieldError(prefix + f, m, "contradiction") for f, m in issues)
            continue
        # A discriminated union keeps its tag in the location: pricing_plan.metered.x
        message = str(err.get("msg", "invalid"))
        out.append(FieldError(base or "body", message, str(err.get("type", "invalid"))))
    return out


def install_problem_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and HTTP errors to problem JSON."""

    @app.exception_handler(VeilxError)
    async def _domain(request: Request, exc: VeilxError) -> Response:
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        elif exc.status == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="veilx"'}
        return problem_response(
            exc.status,
            exc.code,
            exc.title,
            exc.detail,
            instance=request.url.path,
            extra=exc.extra(),
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        fields = validation_errors(exc.errors())
        detail = "; ".join(f"{f.field}: {f.message}" for f in fields[:5])
        if len(fields) > 5:
            detail += f"; and {len(fields) - 5} more"
        return problem_response(
            422,
            "validation_failed",
            "Validation failed",
            detail or "the request is invalid",
            instance=request.url.path,
            extra={"errors": [f.as_dict() for f in fields]},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no endpoint at {request.url.path}"
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return problem_response(
            exc.status_code,
            code,
            title,
            detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Sent outside the request-id middleware, so tag the response here.
        rid = getattr(request.state, "request_id", None)
        log.exception(
            "unhandled error on %s %s (request %s)",
            request.method,
            request.url.path,
            rid,
        )
        return problem_response(
            500,
            "internal_error",
            "Internal error",
            "the server failed to handle this request; it has been logged",
            instance=request.url.path,
            headers={"X-Request-Id": rid} if rid else None,
        )

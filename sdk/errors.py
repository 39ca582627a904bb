"""Errors raised by the veilx SDK.

Every error the SDK raises is a :class:`VeilxError`. Errors from the exchange's
HTTP API carry the problem document's fields (``http_status``, ``code``,
``detail``) and the ``X-Request-Id`` of the response (quote it when reporting a
problem). Nothing in a message is key material, a ciphertext or a row.

Tree::

    VeilxError
    ├── APIConnectionError         the exchange could not be reached
    │   └── APITimeoutError        the request timed out
    ├── APIError                   the exchange answered with an error status;
    │   │                          ``http_status``, ``code``, ``detail``,
    │   │                          ``request_id``
    │   ├── AuthenticationError    401: missing, unknown or revoked credential
    │   ├── PermissionDeniedError  403: the credential may not do this
    │   ├── NotFoundError          404
    │   ├── ConflictError          409: state conflict, key reuse, duplicates
    │   ├── InvalidRequestError    400 / 422: ``errors`` lists ``FieldError``
    │   ├── PaymentRequiredError   402: money or an entitlement is missing;
    │   │                          ``code``: ``insufficient_funds``,
    │   │                          ``entitlement_required``,
    │   │                          ``entitlement_exhausted``, ``payment_declined``
    │   ├── RateLimitError         429: ``retry_after`` seconds, when given
    │   └── ServerError            5xx
    │       └── PaymentUnavailableError  503 ``payment_unavailable``: the payment
    │                                    provider is unreachable; retry the same
    │                                    request (same idempotency key)
    ├── InputError                 (also ValueError) the SDK refused an argument
    │                              before sending anything; ``field``, ``reason``
    ├── JobFailedError             a job ended failed, rejected or expired;
    │                              ``job``, ``state``, ``reason_code``, ``reason``
    ├── WaitTimeoutError           (also TimeoutError) a job did not finish within
    │                              the wait; ``job_id``, ``state``, ``elapsed``
    ├── ReceiptVerificationError   a job's receipt does not prove its result;
    │                              ``field``, ``reason``, ``job_id``
    ├── ResultError                a result cannot be used: a downloaded blob does
    │                              not match its hash, or the output does not fit
    │                              the request; ``field``, ``reason``
    └── KeyStoreError              (also OSError) a local key cannot be created,
                                   read or used as asked; ``name``, ``reason``
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdk.types import Job

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "ConflictError",
    "FieldError",
    "InputError",
    "InvalidRequestError",
    "JobFailedError",
    "KeyStoreError",
    "NotFoundError",
    "PaymentRequiredError",
    "PaymentUnavailableError",
    "PermissionDeniedError",
    "RateLimitError",
    "ReceiptVerificationError",
    "ResultError",
    "ServerError",
    "VeilxError",
    "WaitTimeoutError",
]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class VeilxError(Exception):
    """Base of every error raised by the SDK."""

    def __init__(self, message: str) -> None:
        self.message = _one_line(message)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class APIConnectionError(VeilxError):
    """The exchange could not be reached (DNS, refused connection, reset, …).

    Parameters
    ----------
    message
        What failed.
    url
        The URL that was requested.
    """

    def __init__(self, message: str, *, url: str) -> None:
        self.url = url
        super().__init__(message)


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, read, write or pool timeout)."""


@dataclass(frozen=True)
class FieldError:
    """One invalid field of a request, as the exchange reported it.

    Attributes
    ----------
    field
        The dotted location, e.g. ``params.features`` or ``query.limit``.
    reason
        Why it is invalid.
    code
        A machine-readable code (``invalid`` when the exchange gives none).
    """

    field: str
    reason: str
    code: str = "invalid"

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class APIError(VeilxError):
    """The exchange answered with an error status and a problem document.

    Attributes
    ----------
    http_status
        The HTTP status code.
    code
        The problem's machine-readable ``code`` (e.g. ``no_node``).
    detail
        The problem's human-readable ``detail``.
    title
        The problem's ``title``.
    request_id
        The response's ``X-Request-Id``, if any.
    body
        The whole problem document (empty when the body was not JSON).
    """

    def __init__(
        self,
        detail: str,
        *,
        http_status: int,
        code: str,
        title: str = "",
        request_id: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.http_status = http_status
        self.code = code
        self.detail = _one_line(detail)
        self.title = title
        self.request_id = request_id
        self.body: dict[str, Any] = dict(body or {})
        rid = f", request {request_id}" if request_id else ""
        super().__init__(f"{self.detail} (HTTP {http_status}, {code}{rid})")


class AuthenticationError(APIError):
    """401: the API key is missing, unknown or revoked."""


class PermissionDeniedError(APIError):
    """403: the credential is valid but may not do this."""


class NotFoundError(APIError):
    """404: no such resource, or it is not visible to the caller."""


class ConflictError(APIError):
    """409: the request conflicts with the current state."""


class PaymentRequiredError(APIError):
    """402: the request needs money or an entitlement the buyer does not have.

    ``code`` says which: ``insufficient_funds`` (top up credits, then order
    again), ``payment_declined`` (the card was refused; nothing is held),
    ``entitlement_required`` (buy an entitlement on the dataset first) or
    ``entitlement_exhausted`` (its quota, ε budget or money is used up).
    """


class InvalidRequestError(APIError):
    """400 or 422: the request is malformed or a field is invalid.

    Attributes
    ----------
    errors
        One :class:`FieldError` per invalid field (may be empty).
    """

    def __init__(
        self,
        detail: str,
        *,
        http_status: int,
        code: str,
        title: str = "",
        request_id: str | None = None,
        body: Mapping[str, Any] | None = None,
        errors: Sequence[FieldError] = (),
    ) -> None:
        self.errors: builtins.list[FieldError] = list(errors)
        super().__init__(
            detail,
            http_status=http_status,
            code=code,
            title=title,
            request_id=request_id,
            body=body,
        )

    @property
    def fields(self) -> builtins.list[str]:
        """The names of the invalid fields."""
        return [e.field for e in self.errors]


class RateLimitError(APIError):
    """429: too many requests.

    Attributes
    ----------
    retry_after
        Seconds the exchange asked to wait (``Retry-After``), if it said.
    """

    def __init__(
        self,
        detail: str,
        *,
        http_status: int,
        code: str,
        title: str = "",
        request_id: str | None = None,
        body: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(
            detail,
            http_status=http_status,
            code=code,
            title=title,
            request_id=request_id,
            body=body,
        )


class ServerError(APIError):
    """5xx: the exchange failed to handle the request."""


class PaymentUnavailableError(ServerError):
    """503 ``payment_unavailable``: the payment provider cannot be reached.

    Nothing was bought; the same request may be retried (the SDK does, with
    ``max_network_retries``, reusing the order's idempotency key).
    """


class InputError(VeilxError, ValueError):
    """The SDK refused an argument before sending anything.

    Attributes
    ----------
    field
        The argument (or dotted path inside it) that is wrong.
    reason
        Why.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = _one_line(reason)
        super().__init__(f"{field}: {self.reason}")


class JobFailedError(VeilxError):
    """A job ended without a result: ``failed``, ``rejected`` or ``expired``.

    Attributes
    ----------
    job
        The job in its final state.
    job_id, state, reason_code, reason
        Shortcuts into ``job``.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.job_id: uuid.UUID = job.id
        self.state = job.state
        self.reason_code = job.reason_code
        self.reason = job.reason
        why = job.reason or "no reason given"
        code = f" ({job.reason_code})" if job.reason_code else ""
        super().__init__(f"job {job.id} {job.state.value}{code}: {why}")


class WaitTimeoutError(VeilxError, TimeoutError):
    """A job did not reach a final state within the wait.

    The job itself goes on; wait again or look it up later.

    Attributes
    ----------
    job_id
        The job.
    state
        Its last observed state.
    elapsed
        Seconds waited.
    """

    def __init__(self, job_id: uuid.UUID, state: str, elapsed: float) -> None:
        self.job_id = job_id
        self.state = state
        self.elapsed = elapsed
        super().__init__(
            f"job {job_id} is still {state} after {elapsed:.1f} s; it keeps "
            "running: wait again or look it up later"
        )


class ReceiptVerificationError(VeilxError):
    """A job's receipt does not prove the result the exchange returned.

    Attributes
    ----------
    field
        The receipt field that failed (``signature``, ``output_hash``, …).
    reason
        Why.
    job_id
        The job whose receipt was checked.
    """

    def __init__(self, field: str, reason: str, *, job_id: uuid.UUID) -> None:
        self.field = field
        self.reason = _one_line(reason)
        self.job_id = job_id
        super().__init__(f"receipt of job {job_id}: {field}: {self.reason}")


class ResultError(VeilxError):
    """A job's result cannot be used as returned.

    Attributes
    ----------
    field
        What is wrong (``output_blobs.loss``, ``output.label_bounds``, …).
    reason
        Why.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = _one_line(reason)
        super().__init__(f"{field}: {self.reason}")


class KeyStoreError(VeilxError, OSError):
    """A local HE key cannot be created, read or used as asked.

    Attributes
    ----------
    name
        The key's name (or its path).
    reason
        Why.
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = _one_line(reason)
        super().__init__(f"key {name!r}: {self.reason}")

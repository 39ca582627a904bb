"""The exchange's domain errors.

Services raise these; one handler (``marketplace.api.problems``) maps them to RFC
9457 problem JSON. Each error carries a stable machine ``code`` and, for
validation errors, per-field details.

Tree::

    VeilxError
    ├── ValidationFailed          422  invalid input; ``errors`` lists each field
    ├── AuthenticationRequired    401  no or bad credentials
    ├── PermissionDenied          403  authenticated, but not allowed
    │   └── OrganisationNotAdmitted  403  pending or suspended organisation
    ├── NotFound                  404  absent, or hidden from this caller
    ├── Conflict                  409  state or uniqueness conflict
    │   ├── InvalidTransition     409  lifecycle move not allowed from this state
    │   └── IdempotencyKeyReused  409  same key, different request
    └── RateLimited               429  too many requests; ``retry_after`` seconds
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthenticationRequired",
    "Conflict",
    "FieldError",
    "IdempotencyKeyReused",
    "InvalidTransition",
    "NotFound",
    "OrganisationNotAdmitted",
    "PermissionDenied",
    "RateLimited",
    "ValidationFailed",
    "VeilxError",
]


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its location (dotted path), the reason and a code."""

    field: str
    message: str
    code: str = "invalid"

    def as_dict(self) -> dict[str, str]:
        """Return the JSON form used in problem bodies."""
        return {"field": self.field, "message": self.message, "code": self.code}


class VeilxError(Exception):
    """Base of every domain error raised by the exchange."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def extra(self) -> dict[str, Any]:
        """Extra members of the problem body beyond the standard ones."""
        return {}


class ValidationFailed(VeilxError):
    """Input failed validation; ``errors`` names each field and its reason."""

    status = 422
    code = "validation_failed"
    title = "Validation failed"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(detail, code=code)
        self.errors: list[FieldError] = list(errors or [])

    @classmethod
    def for_field(
        cls, field_name: str, message: str, code: str = "invalid"
    ) -> ValidationFailed:
        """Build the error for a single invalid field."""
        return cls(
            f"{field_name}: {message}", errors=[FieldError(field_name, message, code)]
        )

    def extra(self) -> dict[str, Any]:
        """Per-field errors."""
        return {"errors": [e.as_dict() for e in self.errors]}


class AuthenticationRequired(VeilxError):
    """No credentials, or credentials that are unknown, revoked or expired."""

    status = 401
    code = "authentication_required"
    title = "Authentication required"


class PermissionDenied(VeilxError):
    """The caller is authenticated but may not perform this operation."""

    status = 403
    code = "permission_denied"
    title = "Permission denied"


class OrganisationNotAdmitted(PermissionDenied):
    """The caller's organisation is pending or suspended."""

    code = "organisation_not_admitted"
    title = "Organisation not admitted"


class NotFound(VeilxError):
    """The object does not exist, or its existence is hidden from the caller."""

    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(VeilxError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"
    title = "Conflict"


class InvalidTransition(Conflict):
    """A lifecycle move that is not allowed from the current state."""

    code = "invalid_transition"
    title = "Invalid state transition"


class IdempotencyKeyReused(Conflict):
    """An idempotency key was replayed with a different request."""

    code = "idempotency_key_reused"
    title = "Idempotency key reused"


class RateLimited(VeilxError):
    """Too many requests for this API key (or client address)."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)

    def extra(self) -> dict[str, Any]:
        """The number of seconds to wait."""
        return {"retry_after": self.retry_after}

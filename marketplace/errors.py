"""The exchange's domain errors.

Services raise these; one handler (``marketplace.api.problems``) maps them to RFC
9457 problem JSON. Each error carries a stable machine ``code`` and, for
validation errors, per-field details.

Tree::

    VeilxError
    ├── ValidationFailed          422  invalid input; ``errors`` lists each field
    │   └── FieldRejected         422  one named field is refused (``field``)
    │       ├── KindNotPermitted  422  ``kind_not_permitted``: the policy forbids it
    │       ├── UnknownBlob       422  ``unknown_blob``: not uploaded by the caller
    │       ├── UnknownContext    422  ``unknown_context``: not uploaded by the caller
    │       ├── BadReceipt        422  ``bad_receipt``: signature or bound field
    │       ├── BadSignature      422  ``bad_signature``: an attestation's signature
    │       ├── SecretKeyPresent  422  ``secret_key_present``: HE context with a key
    │       └── MalformedContext  422  ``malformed_context``: not an HE context
    ├── AuthenticationRequired    401  no or bad credentials
    ├── PaymentRequired           402  money or an entitlement is missing; ``code``:
    │                                  ``insufficient_funds``, ``entitlement_required``,
    │                                  ``entitlement_exhausted``, ``payment_declined``
    ├── PermissionDenied          403  authenticated, but not allowed
    │   └── OrganisationNotAdmitted  403  pending or suspended organisation
    ├── NotFound                  404  absent, or hidden from this caller
    ├── Conflict                  409  state or uniqueness conflict
    │   ├── InvalidTransition     409  lifecycle move not allowed from this state
    │   ├── IdempotencyKeyReused  409  same key, different request
    │   └── FieldConflict         409  one named field conflicts (``field``)
    │       ├── NoNode            409  ``no_node``: no data node serves the dataset
    │       ├── UnknownVersion    409  ``unknown_version``: no such content version
    │       ├── PublicKeyTaken    409  ``public_key_taken``: a node has this key
    │       └── ResultConflict    409  ``result_conflict``: a different result exists
    ├── PayloadTooLarge           413  the request body exceeds the upload limit
    ├── UnsupportedMediaType      415  the body is not of the required media type
    ├── RateLimited               429  too many requests; ``retry_after`` seconds
    ├── ChainUnavailable          503  ``chain_unavailable``: the ledger's chain
    │                                  cannot be reached or opened
    └── PaymentUnavailable        503  ``payment_unavailable``: the payment provider
                                       cannot be reached; retry with the same key
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthenticationRequired",
    "BadReceipt",
    "BadSignature",
    "ChainUnavailable",
    "Conflict",
    "FieldConflict",
    "FieldError",
    "FieldRejected",
    "IdempotencyKeyReused",
    "InvalidTransition",
    "KindNotPermitted",
    "MalformedContext",
    "NoNode",
    "NotFound",
    "OrganisationNotAdmitted",
    "PayloadTooLarge",
    "PaymentRequired",
    "PaymentUnavailable",
    "PermissionDenied",
    "PublicKeyTaken",
    "RateLimited",
    "ResultConflict",
    "SecretKeyPresent",
    "UnknownBlob",
    "UnknownContext",
    "UnknownVersion",
    "UnsupportedMediaType",
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


class FieldRejected(ValidationFailed):
    """One named field is refused; ``code`` says why (set by each subclass)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field}: {message}", errors=[FieldError(field, message, self.code)]
        )
        self.field = field


class KindNotPermitted(FieldRejected):
    """The dataset's rights policy does not permit this computation kind."""

    code = "kind_not_permitted"
    title = "Computation kind not permitted"


class UnknownBlob(FieldRejected):
    """A blob named by a request was not uploaded by the organisation it must be."""

    code = "unknown_blob"
    title = "Unknown blob"


class UnknownContext(FieldRejected):
    """An HE context named by a request was not uploaded by the caller."""

    code = "unknown_context"
    title = "Unknown HE context"


class BadReceipt(FieldRejected):
    """A job receipt does not verify, or a field it binds does not match the job."""

    code = "bad_receipt"
    title = "Bad receipt"


class BadSignature(FieldRejected):
    """A signed document (a quality attestation) does not verify."""

    code = "bad_signature"
    title = "Bad signature"


class SecretKeyPresent(FieldRejected):
    """An uploaded HE context carries a secret key; it is refused, never stored."""

    code = "secret_key_present"
    title = "Secret key present"


class MalformedContext(FieldRejected):
    """Uploaded bytes are not a usable public CKKS context."""

    code = "malformed_context"
    title = "Malformed HE context"


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


class FieldConflict(Conflict):
    """A conflict about one named field; ``code`` says which (set by subclasses)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def extra(self) -> dict[str, Any]:
        """The field, in the same shape as validation errors."""
        return {"errors": [FieldError(self.field, self.message, self.code).as_dict()]}


class NoNode(FieldConflict):
    """No data node serves the dataset (none has attested one of its versions)."""

    code = "no_node"
    title = "No data node"


class UnknownVersion(FieldConflict):
    """An attested content hash is not a version of the dataset."""

    code = "unknown_version"
    title = "Unknown dataset version"


class PublicKeyTaken(FieldConflict):
    """A node with this public key is registered already."""

    code = "public_key_taken"
    title = "Public key taken"


class ResultConflict(FieldConflict):
    """A finished job was posted a result different from the one it ended with."""

    code = "result_conflict"
    title = "Result conflict"


class PayloadTooLarge(VeilxError):
    """The request body is larger than the upload limit."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(VeilxError):
    """The request body is not of the media type the endpoint takes."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


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


class ChainUnavailable(VeilxError):
    """The ledger's chain cannot be reached (JSON-RPC) or opened (embedded)."""

    status = 503
    code = "chain_unavailable"
    title = "Chain unavailable"


class PaymentRequired(VeilxError):
    """The request needs money or an entitlement the buyer does not have."""

    status = 402
    code = "payment_required"
    title = "Payment required"


class PaymentUnavailable(VeilxError):
    """The payment provider cannot be reached; the same request may be retried."""

    status = 503
    code = "payment_unavailable"
    title = "Payment provider unavailable"

"""Content-addressed blobs and buyers' public HE contexts.

Uploads are stored once per SHA-256 with an ownership row per uploading
organisation; "created" (201) means new *for the caller*, so the answer never
reveals whether another organisation uploaded the same bytes. Reads are allowed
to:

* blobs — the uploaders; the node organisation of a dispatched or running job
  that names the blob as an input; the buyer and the node organisation of a
  succeeded job that names it as an output;
* HE contexts — the uploaders; the node organisation of a dispatched or running
  job that uses the context.

Anyone else is told the object does not exist. An HE context is checked with
:meth:`mpc_engine.he.PublicContext.from_bytes` before it is stored: bytes that
carry a secret key are refused and never written anywhere (DESIGN §9).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import exists
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from marketplace.errors import (
    Conflict,
    FieldError,
    MalformedContext,
    NotFound,
    SecretKeyPresent,
    ValidationFailed,
)
from marketplace.models import (
    Blob,
    BlobOwner,
    BlobPublic,
    CKKSParamsPublic,
    HEContext,
    HEContextOwner,
    HEContextPublic,
    Job,
    JobBlob,
    Node,
)
from marketplace.services.identity import Caller
from mpc_engine.he import PublicContext
from mpc_engine.he import errors as he_errors
from mpc_engine.protocol import JobState

__all__ = ["BlobService"]

_NODE_READS = (JobState.DISPATCHED.value, JobState.RUNNING.value)
"""Job states in which the node may read the job's inputs and context."""


class BlobService:
    """Uploads and access-checked downloads of blobs and HE contexts."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- blobs -------------------------------------------------------------------

    def upload_blob(self, caller: Caller, data: bytes) -> tuple[BlobPublic, bool]:
        """Store ``data`` for the caller; return it and whether it is new to them."""
        if not data:
            raise ValidationFailed.for_field("body", "is empty; upload at least 1 byte")
        sha = hashlib.sha256(data).hexdigest()
        org = caller.organisation_id

        def add() -> None:
            if not self._exists(col(Blob.sha256) == sha):
                self.session.add(Blob(sha256=sha, size=len(data), data=data))
            self.session.add(BlobOwner(sha256=sha, organisation_id=org))

        created = self._store(lambda: self.owns_blob(org, sha), add)
        return BlobPublic(sha256=sha, size=len(data)), created

    def owns_blob(self, org_id: uuid.UUID, sha: str) -> bool:
        """Whether ``org_id`` uploaded the blob ``sha``."""
        return self._exists(
            col(BlobOwner.sha256) == sha,
            col(BlobOwner.organisation_id) == org_id,
        )

    def get_blob(self, caller: Caller, sha: str) -> bytes:
        """Return a blob's bytes if the caller may read them, else 404."""
        org = caller.organisation_id
        allowed = self.owns_blob(org, sha) or self._exists(
            col(JobBlob.sha256) == sha,
            col(JobBlob.job_id) == Job.id,
            col(Job.node_id) == Node.id,
            (
                (col(JobBlob.role) == "input")
                & (col(Node.organisation_id) == org)
                & col(Job.state).in_(_NODE_READS)
            )
            | (
                (col(JobBlob.role) == "output")
                & (col(Job.state) == JobState.SUCCEEDED.value)
                & ((col(Job.buyer_id) == org) | (col(Node.organisation_id) == org))
            ),
        )
        blob = self.session.get(Blob, sha) if allowed else None
        if blob is None:
            raise NotFound(f"blob {sha} not found")
        return blob.data

    # -- HE contexts -------------------------------------------------------------

    def upload_context(
        self, caller: Caller, data: bytes
    ) -> tuple[HEContextPublic, bool]:
        """Check and store a public HE context; return it and whether it is new.

        Bytes stored already were checked when first uploaded and are not parsed
        again (the context id is their hash).

        Raises
        ------
        SecretKeyPresent
            The bytes carry a secret key (nothing is stored).
        MalformedContext, ValidationFailed
            The bytes are not a usable public CKKS context.
        """
        if not data:
            raise MalformedContext("body", "is empty; upload public_bytes()")
        context_id = hashlib.sha256(data).hexdigest()
        org = caller.organisation_id
        stored = self._context_meta(context_id)
        if stored is None:
            ctx = _check_public_context(data)
            params = CKKSParamsPublic(
                poly_modulus_degree=ctx.params.poly_modulus_degree,
                coeff_mod_bit_sizes=list(ctx.params.coeff_mod_bit_sizes),
                scale_bits=ctx.params.scale_bits,
            )
            stored = HEContext(
                context_id=context_id,
                size=len(data),
                has_galois_keys=ctx.has_galois_keys,
                params=params.model_dump(mode="json"),
                data=data,
            )
        public = HEContextPublic(
            context_id=stored.context_id,
            size=stored.size,
            has_galois_keys=stored.has_galois_keys,
            params=CKKSParamsPublic.model_validate(stored.params),
        )

        def add() -> None:
            if self._context_meta(context_id) is None:
                self.session.add(stored)
            self.session.add(HEContextOwner(context_id=context_id, organisation_id=org))

        return public, self._store(lambda: self.owns_context(org, context_id), add)

    def _context_meta(self, context_id: str) -> HEContext | None:
        """The stored context without its bytes, if any."""
        return self.session.exec(
            select(HEContext)
            .options(defer(HEContext.data))  # type: ignore[arg-type]
            .where(col(HEContext.context_id) == context_id)
        ).first()

    def owns_context(self, org_id: uuid.UUID, context_id: str) -> bool:
        """Whether ``org_id`` uploaded the HE context ``context_id``."""
        return self._exists(
            col(HEContextOwner.context_id) == context_id,
            col(HEContextOwner.organisation_id) == org_id,
        )

    def get_context(self, caller: Caller, context_id: str) -> bytes:
        """Return a context's bytes if the caller may read them, else 404."""
        org = caller.organisation_id
        allowed = self.owns_context(org, context_id) or self._exists(
            col(Job.context_id) == context_id,
            col(Job.node_id) == Node.id,
            col(Node.organisation_id) == org,
            col(Job.state).in_(_NODE_READS),
        )
        ctx = self.session.get(HEContext, context_id) if allowed else None
        if ctx is None:
            raise NotFound(f"HE context {context_id} not found")
        return ctx.data

    # -- helpers -------------------------------------------------------------------

    def _exists(self, *where: Any) -> bool:
        return bool(self.session.exec(select(exists().where(*where))).one())

    def _store(self, owned: Callable[[], bool], add: Callable[[], None]) -> bool:
        """Record the caller's upload unless it is recorded; whether it was new.

        A concurrent upload of the same bytes may insert the same rows first; the
        unique keys refuse the second insert, and the next attempt finds them.
        """
        for _ in range(3):
            if owned():
                self.session.rollback()
                return False
            add()
            try:
                self.session.commit()
            except IntegrityError:
                self.session.rollback()
                continue
            return True
        if owned():
            return False
        raise Conflict("the upload kept conflicting with concurrent uploads; retry")


def _check_public_context(data: bytes) -> PublicContext:
    """Load ``data`` as a node would; map the HE errors to field errors."""
    try:
        return PublicContext.from_bytes(data, n_threads=1)
    except he_errors.SecretKeyPresent as exc:
        raise SecretKeyPresent(
            "body",
            "the context carries a secret key; upload SecretContext.public_bytes() "
            "(public key and Galois keys only). Nothing was stored.",
        ) from exc
    except he_errors.WeakParameters as exc:
        field = f"params.{exc.field}"
        raise ValidationFailed(
            f"{field}: {exc.rule}",
            errors=[FieldError(field, exc.rule, "weak_parameters")],
            code="weak_parameters",
        ) from exc
    except he_errors.InvalidParameters as exc:
        raise MalformedContext(f"params.{exc.field}", exc.rule) from exc
    except he_errors.HEError as exc:
        raise MalformedContext("body", str(exc)) from exc

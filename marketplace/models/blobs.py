"""Content-addressed uploads: ciphertext blobs and buyers' public HE contexts.

Bytes are stored once per content (the SHA-256 is the key); who uploaded them is a
separate row per organisation, so the same bytes uploaded by two organisations
belong to both, and neither learns whether the other had uploaded them. Reading
them back is allowed to the uploaders and, through jobs, to the node of a job
that uses them and the buyer of a job that produced them (``services.blobs``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, LargeBinary, String
from sqlmodel import Field, SQLModel

from marketplace.models._types import JSONType, UTCDateTime, utcnow

__all__ = [
    "Blob",
    "BlobOwner",
    "BlobPublic",
    "CKKSParamsPublic",
    "HEContext",
    "HEContextOwner",
    "HEContextPublic",
]


class BlobBase(SQLModel):
    """What identifies a blob: its hash and size."""

    sha256: str = Field(
        schema_extra={"pattern": r"^[0-9a-f]{64}$"},
        description="SHA-256 of the bytes, hex.",
    )
    size: int = Field(ge=0, description="Bytes.")


class Blob(SQLModel, table=True):
    """The bytes of a blob, stored once per content."""

    sha256: str = Field(sa_column=Column(String(64), primary_key=True))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class BlobOwner(SQLModel, table=True):
    """An organisation that uploaded a blob."""

    __tablename__ = "blob_owner"

    sha256: str = Field(
        sa_column=Column(
            String(64), ForeignKey("blob.sha256"), primary_key=True, nullable=False
        )
    )
    organisation_id: uuid.UUID = Field(foreign_key="organisation.id", primary_key=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class BlobPublic(BlobBase):
    """An uploaded blob as the API shows it."""


class CKKSParamsPublic(SQLModel):
    """The CKKS parameters of an uploaded context."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: list[int]
    scale_bits: int


class HEContext(SQLModel, table=True):
    """A buyer's public CKKS context (checked to carry no secret key)."""

    __tablename__ = "he_context"

    context_id: str = Field(sa_column=Column(String(64), primary_key=True))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    has_galois_keys: bool
    params: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class HEContextOwner(SQLModel, table=True):
    """An organisation that uploaded an HE context."""

    __tablename__ = "he_context_owner"

    context_id: str = Field(
        sa_column=Column(
            String(64),
            ForeignKey("he_context.context_id"),
            primary_key=True,
            nullable=False,
        )
    )
    organisation_id: uuid.UUID = Field(foreign_key="organisation.id", primary_key=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class HEContextPublic(SQLModel):
    """An uploaded HE context as the API shows it (never its bytes)."""

    context_id: str = Field(description="SHA-256 of the uploaded bytes, hex.")
    size: int
    has_galois_keys: bool
    params: CKKSParamsPublic

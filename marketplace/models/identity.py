"""Organisations, users, API keys and login sessions."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import EmailStr
from sqlalchemy import Column, Index, String
from sqlmodel import Field, SQLModel

from marketplace.models._types import JSONType, UTCDateTime, new_id, utcnow

__all__ = [
    "ApiKey",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyPublic",
    "Organisation",
    "OrganisationCreate",
    "OrganisationPublic",
    "OrganisationStatus",
    "OrganisationStatusChange",
    "Role",
    "SignUp",
    "User",
    "UserPublic",
    "UserSession",
]


class Role(StrEnum):
    """What an organisation may do on the exchange; one may hold several."""

    PROVIDER = "provider"
    BUYER = "buyer"
    OPERATOR = "operator"
    REGULATOR = "regulator"


class OrganisationStatus(StrEnum):
    """Admission state: only admitted organisations trade."""

    PENDING = "pending"
    ADMITTED = "admitted"
    SUSPENDED = "suspended"


class OrganisationBase(SQLModel):
    """Fields an organisation states about itself."""

    name: str = Field(min_length=2, max_length=120)
    country: str = Field(
        schema_extra={"pattern": r"^[A-Z]{2}$"},
        description="ISO 3166-1 alpha-2 code of the seat.",
    )
    website: str | None = Field(default=None, max_length=300)


class OrganisationCreate(OrganisationBase):
    """An organisation created by the operator."""

    roles: list[Role] = Field(min_length=1)


class Organisation(OrganisationBase, table=True):
    """An organisation (provider, buyer, operator, regulator or several)."""

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    name: str = Field(sa_column=Column(String(120), unique=True, nullable=False))
    roles: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    status: OrganisationStatus = Field(
        default=OrganisationStatus.PENDING, sa_column=Column(String(16), nullable=False)
    )
    status_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    status_changed_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class OrganisationPublic(OrganisationBase):
    """An organisation as the API shows it."""

    id: uuid.UUID
    roles: list[Role]
    status: OrganisationStatus
    status_reason: str | None
    created_at: datetime
    status_changed_at: datetime


class OrganisationStatusChange(SQLModel):
    """A reason for admitting or suspending an organisation."""

    reason: str | None = Field(default=None, max_length=500)


class SignUp(SQLModel):
    """Self-service sign-up: a new organisation (pending) and its first user."""

    organisation_name: str = Field(min_length=2, max_length=120)
    country: str = Field(schema_extra={"pattern": r"^[A-Z]{2}$"})
    roles: list[Role] = Field(min_length=1)
    email: EmailStr
    display_name: str = Field(min_length=1, max_length=120)
    password: str = Field(min_length=12, max_length=256)


class User(SQLModel, table=True):
    """A person who logs in to the console; belongs to one organisation."""

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    organisation_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    email: str = Field(sa_column=Column(String(320), unique=True, nullable=False))
    display_name: str = Field(max_length=120)
    password_hash: str = Field(max_length=200)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_login_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class UserPublic(SQLModel):
    """A user as the API shows it (never the password hash)."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    email: str
    display_name: str
    created_at: datetime
    last_login_at: datetime | None


class UserSession(SQLModel, table=True):
    """A console login session; only the token's hash is stored."""

    __tablename__ = "user_session"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="user.id", index=True)
    token_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class ApiKeyCreate(SQLModel):
    """A request for a new API key."""

    name: str = Field(
        min_length=1, max_length=80, schema_extra={"pattern": r"^[\w .:/-]+$"}
    )


class ApiKey(SQLModel, table=True):
    """An organisation's API key. The secret is shown once; only its hash is kept."""

    __tablename__ = "api_key"
    __table_args__ = (Index("ix_api_key_org_name", "organisation_id", "name"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    organisation_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    created_by_user_id: uuid.UUID | None = Field(default=None, foreign_key="user.id")
    name: str = Field(max_length=80)
    prefix: str = Field(sa_column=Column(String(24), unique=True, nullable=False))
    key_hash: str = Field(max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_used_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class ApiKeyPublic(SQLModel):
    """An API key as listed (never the secret)."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    """A newly created API key, with its secret, shown this once."""

    secret: str = Field(
        description="The full key. It is not stored and not shown again."
    )

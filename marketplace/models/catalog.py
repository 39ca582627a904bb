"""Datasets (DCAT-style metadata, schema, rights policy, pricing plan) and versions."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import field_validator, model_validator
from sqlalchemy import BigInteger, Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig

from marketplace.models._types import JSONType, UTCDateTime, new_id, utcnow
from marketplace.models.nodes import VersionAttestationPublic
from mpc_engine.policy import RightsPolicy, Sensitivity
from pricing import PricingPlan

__all__ = [
    "ColumnSpec",
    "ColumnType",
    "Dataset",
    "DatasetCreate",
    "DatasetMetadata",
    "DatasetPublic",
    "DatasetStatus",
    "DatasetSummary",
    "DatasetTransition",
    "DatasetUpdate",
    "DatasetVersion",
    "DatasetVersionCreate",
    "DatasetVersionPublic",
    "ProviderRef",
    "RevenueShare",
    "RevenueSharePublic",
    "Theme",
    "UpdateFrequency",
]


class Theme(StrEnum):
    """Data themes (the EU data-theme vocabulary used by DCAT-AP)."""

    AGRICULTURE = "agriculture"
    ECONOMY = "economy"
    EDUCATION = "education"
    ENERGY = "energy"
    ENVIRONMENT = "environment"
    GOVERNMENT = "government"
    HEALTH = "health"
    INTERNATIONAL = "international"
    JUSTICE = "justice"
    REGIONS = "regions"
    SCIENCE = "science"
    SOCIETY = "society"
    TECHNOLOGY = "technology"
    TRANSPORT = "transport"


class UpdateFrequency(StrEnum):
    """How often a dataset is refreshed (DCAT accrualPeriodicity, simplified)."""

    CONTINUOUS = "continuous"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    ANNUAL = "annual"
    IRREGULAR = "irregular"
    NEVER = "never"


class DatasetStatus(StrEnum):
    """Listing lifecycle: draft → listed → suspended → delisted."""

    DRAFT = "draft"
    LISTED = "listed"
    SUSPENDED = "suspended"
    DELISTED = "delisted"


class ColumnType(StrEnum):
    """Logical column types."""

    INTEGER = "integer"
    FLOAT = "float"
    STRING = "string"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    CATEGORICAL = "categorical"

    @property
    def numeric(self) -> bool:
        """Whether values are numbers (clampable, summable)."""
        return self in (ColumnType.INTEGER, ColumnType.FLOAT)


class ColumnSpec(SQLModel):
    """One column of a dataset's schema."""

    model_config = SQLModelConfig(extra="forbid")

    name: str = Field(schema_extra={"pattern": r"^[a-z][a-z0-9_]{0,62}$"})
    type: ColumnType
    sensitivity: Sensitivity
    unit: str | None = Field(default=None, max_length=40)
    description: str = Field(min_length=1, max_length=500)
    nullable: bool = False


# SQLModel's ``regex=`` is silently ignored under pydantic 2; pass ``pattern``.
Keyword = Annotated[
    str,
    Field(min_length=2, max_length=40, schema_extra={"pattern": r"^[\w][\w \-]*$"}),
]
Country = Annotated[str, Field(schema_extra={"pattern": r"^[A-Z]{2}$"})]
Language = Annotated[str, Field(schema_extra={"pattern": r"^[a-z]{2}$"})]
License = Annotated[str, Field(schema_extra={"pattern": r"^[A-Za-z0-9.+-]{2,40}$"})]


class DatasetMetadata(SQLModel):
    """DCAT-style descriptive metadata."""

    model_config = SQLModelConfig(extra="forbid")

    title: str = Field(min_length=3, max_length=200)
    description: str = Field(min_length=10, max_length=5000)
    keywords: list[Keyword] = Field(min_length=1, max_length=20)
    themes: list[Theme] = Field(min_length=1, max_length=5)
    publisher: str = Field(min_length=2, max_length=200)
    license: License = Field(description="An SPDX identifier or 'proprietary'.")
    temporal_start: date | None = None
    temporal_end: date | None = None
    spatial_coverage: list[Country] = Field(
        default_factory=list, max_length=250, description="ISO 3166-1 alpha-2 codes."
    )
    update_frequency: UpdateFrequency
    languages: list[Language] = Field(
        default_factory=list, max_length=20, description="ISO 639-1 codes."
    )

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        lowered = [v.strip().lower() for v in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError("duplicate keywords")
        return lowered

    @field_validator("themes", "spatial_coverage", "languages")
    @classmethod
    def _distinct(cls, value: list[Any]) -> list[Any]:
        if len(set(value)) != len(value):
            raise ValueError("duplicate entries")
        return value

    @model_validator(mode="after")
    def _temporal(self) -> DatasetMetadata:
        if (
            self.temporal_start is not None
            and self.temporal_end is not None
            and self.temporal_start > self.temporal_end
        ):
            raise ValueError("temporal_start must not be after temporal_end")
        return self


class RevenueShare(SQLModel):
    """A co-owner's share of a dataset's revenue, in basis points."""

    model_config = SQLModelConfig(extra="forbid")

    organisation_id: uuid.UUID
    bps: int = Field(ge=1, le=9_999)


class RevenueSharePublic(SQLModel):
    """A payee's share of a dataset's revenue, in basis points."""

    organisation_id: uuid.UUID
    bps: int


class DatasetCreate(DatasetMetadata):
    """A new dataset (created as a draft)."""

    columns: list[ColumnSpec] = Field(min_length=1, max_length=500)
    policy: RightsPolicy
    pricing_plan: PricingPlan
    co_owners: list[RevenueShare] = Field(
        default_factory=list,
        max_length=19,
        description="Other organisations paid a share of each trade; the provider "
        "keeps the rest (and any rounding remainder). Fixed once created.",
    )

    @field_validator("co_owners")
    @classmethod
    def _shares_fit(cls, value: list[RevenueShare]) -> list[RevenueShare]:
        ids = [s.organisation_id for s in value]
        if len(set(ids)) != len(ids):
            raise ValueError("an organisation is named twice")
        if sum(s.bps for s in value) >= 10_000:
            raise ValueError("the co-owners' bps must leave the provider a share")
        return value

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, value: list[ColumnSpec]) -> list[ColumnSpec]:
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column names: {', '.join(dupes)}")
        return value


class DatasetUpdate(SQLModel):
    """A partial update. ``columns`` may change only while the dataset is a draft."""

    model_config = SQLModelConfig(extra="forbid")

    title: str | None = Field(default=None, min_length=3, max_length=200)
    description: str | None = Field(default=None, min_length=10, max_length=5000)
    keywords: list[Keyword] | None = Field(default=None, min_length=1, max_length=20)
    themes: list[Theme] | None = Field(default=None, min_length=1, max_length=5)
    publisher: str | None = Field(default=None, min_length=2, max_length=200)
    license: License | None = None
    temporal_start: date | None = None
    temporal_end: date | None = None
    spatial_coverage: list[Country] | None = None
    update_frequency: UpdateFrequency | None = None
    languages: list[Language] | None = None
    columns: list[ColumnSpec] | None = Field(default=None, min_length=1, max_length=500)
    policy: RightsPolicy | None = None
    pricing_plan: PricingPlan | None = None


class Dataset(SQLModel, table=True):
    """A provider's dataset listing."""

    __table_args__ = (Index("ix_dataset_org_status", "organisation_id", "status"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    organisation_id: uuid.UUID = Field(foreign_key="organisation.id")
    title: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    keywords: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    themes: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    publisher: str = Field(max_length=200)
    license: str = Field(max_length=40)
    temporal_start: date | None = None
    temporal_end: date | None = None
    spatial_coverage: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    update_frequency: str = Field(max_length=16)
    languages: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    columns: list[dict[str, Any]] = Field(sa_column=Column(JSONType, nullable=False))
    schema_hash: str = Field(max_length=64)
    policy: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    policy_hash: str = Field(max_length=64)
    pricing_plan: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    reference_price_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    revenue_shares: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSONType, nullable=False, server_default="[]"),
        description="Co-owners (organisation_id, bps); the provider has the rest.",
    )
    status: str = Field(
        default=DatasetStatus.DRAFT.value, sa_column=Column(String(16), nullable=False)
    )
    status_reason: str | None = Field(default=None, max_length=500)
    live_version_id: uuid.UUID | None = Field(default=None)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    listed_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class DatasetVersionCreate(SQLModel):
    """A new version of a dataset's content, identified by its content hash."""

    model_config = SQLModelConfig(extra="forbid")

    content_hash: str = Field(
        schema_extra={"pattern": r"^[0-9a-f]{64}$"},
        description="SHA-256 of the content, hex.",
    )
    row_count: int = Field(ge=0, le=10**13)
    byte_size: int = Field(ge=0, le=10**16)
    note: str | None = Field(default=None, max_length=500)
    make_live: bool = True


class DatasetVersion(SQLModel, table=True):
    """A version of a dataset's content."""

    __tablename__ = "dataset_version"
    __table_args__ = (UniqueConstraint("dataset_id", "content_hash"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id", index=True)
    content_hash: str = Field(max_length=64)
    schema_hash: str = Field(max_length=64)
    row_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    byte_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    note: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class DatasetVersionPublic(SQLModel):
    """A dataset version as the API shows it."""

    id: uuid.UUID
    content_hash: str
    schema_hash: str
    row_count: int
    byte_size: int
    note: str | None
    created_at: datetime
    is_live: bool
    attestation: VersionAttestationPublic | None = Field(
        default=None,
        description="The latest verified quality attestation of this version by "
        "the data node, if any.",
    )


class ProviderRef(SQLModel):
    """The provider organisation of a listing."""

    id: uuid.UUID
    name: str


class DatasetPublic(DatasetMetadata):
    """A dataset as the API shows it."""

    model_config = SQLModelConfig(extra="ignore")

    id: uuid.UUID
    provider: ProviderRef
    columns: list[ColumnSpec]
    policy: RightsPolicy
    policy_hash: str
    pricing_plan: PricingPlan
    reference_price_minor: int
    currency: str
    revenue_shares: list[RevenueSharePublic] = Field(
        default_factory=list,
        description="Who is paid what of each trade: the provider first (with the "
        "rounding remainder), then its co-owners.",
    )
    status: DatasetStatus
    status_reason: str | None
    live_version: DatasetVersionPublic | None
    created_at: datetime
    updated_at: datetime
    listed_at: datetime | None


class DatasetSummary(SQLModel):
    """A search hit."""

    id: uuid.UUID
    title: str
    description: str
    keywords: list[str]
    themes: list[str]
    license: str
    provider: ProviderRef
    computation_kinds: list[str]
    pricing_kind: str
    reference_price_minor: int
    currency: str
    listed_at: datetime
    live_content_hash: str | None


class DatasetTransition(SQLModel):
    """A lifecycle move."""

    model_config = SQLModelConfig(extra="forbid")

    to: DatasetStatus
    reason: str | None = Field(default=None, max_length=500)

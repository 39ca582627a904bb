"""What the node reads from the exchange's API (the fields it uses, others ignored).

The exchange's models live in ``marketplace``, which the node never imports; these
mirror the documented JSON of ``GET /v1/datasets/{id}``, ``GET
/v1/datasets/{id}/versions`` and ``POST /v1/nodes``.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from mpc_engine.policy import RightsPolicy, Sensitivity

__all__ = [
    "DatasetListing",
    "ListingColumn",
    "ListingColumnType",
    "NodeInfo",
    "VersionInfo",
]


class ListingColumnType(StrEnum):
    """The logical column types of a listing's schema."""

    INTEGER = "integer"
    FLOAT = "float"
    STRING = "string"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    CATEGORICAL = "categorical"

    @property
    def numeric(self) -> bool:
        """Integer or float."""
        return self in (ListingColumnType.INTEGER, ListingColumnType.FLOAT)

    @property
    def temporal(self) -> bool:
        """Date or datetime."""
        return self in (ListingColumnType.DATE, ListingColumnType.DATETIME)


class ListingColumn(BaseModel):
    """One column of a listing's schema."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    type: ListingColumnType
    sensitivity: Sensitivity
    nullable: bool = False


class VersionInfo(BaseModel):
    """A dataset version (``DatasetVersionPublic``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: uuid.UUID
    content_hash: str
    row_count: int
    byte_size: int
    is_live: bool = False


class DatasetListing(BaseModel):
    """A dataset as ``GET /v1/datasets/{id}`` shows it (``DatasetPublic``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: uuid.UUID
    title: str = ""
    columns: list[ListingColumn] = Field(min_length=1)
    policy: RightsPolicy
    policy_hash: str
    status: str = "listed"
    live_version: VersionInfo | None = None


class NodeInfo(BaseModel):
    """A registered node (``NodePublic``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: uuid.UUID
    name: str = ""
    public_key: str

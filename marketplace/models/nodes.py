"""Data nodes, their dataset bindings and their signed quality attestations.

A node is a provider's service next to its data; it is known to the exchange by
its Ed25519 public key. A node serves a dataset once it has attested a version of
it (``node_dataset``: one node per dataset, the latest to attest); jobs on the
dataset are routed to that node.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String
from sqlmodel import Field, SQLModel

from marketplace.models._types import JSONType, UTCDateTime, new_id, utcnow
from mpc_engine.protocol import Attestation

__all__ = [
    "AttestationPublic",
    "Node",
    "NodeAttestation",
    "NodeCreate",
    "NodeDataset",
    "NodePublic",
    "VersionAttestationPublic",
]


class NodeBase(SQLModel):
    """What a provider states about its node."""

    name: str = Field(
        min_length=2, max_length=120, schema_extra={"pattern": r"^[\w .:/()-]+$"}
    )


class NodeCreate(NodeBase):
    """A node to register: a name and its Ed25519 public key."""

    public_key: str = Field(
        schema_extra={"pattern": r"^[0-9a-f]{64}$"},
        description="The node's Ed25519 public key, 64 lower-case hex characters.",
    )


class Node(NodeBase, table=True):
    """A provider's data node."""

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    organisation_id: uuid.UUID = Field(foreign_key="organisation.id", index=True)
    name: str = Field(max_length=120)
    public_key: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    last_seen_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class NodePublic(NodeBase):
    """A node as the API shows it; its public key verifies its receipts."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    public_key: str
    created_at: datetime
    last_seen_at: datetime | None
    datasets: list[uuid.UUID] = Field(description="Datasets this node serves.")


class NodeDataset(SQLModel, table=True):
    """Which node serves a dataset: the latest to attest one of its versions."""

    __tablename__ = "node_dataset"

    dataset_id: uuid.UUID = Field(foreign_key="dataset.id", primary_key=True)
    node_id: uuid.UUID = Field(foreign_key="node.id", index=True)
    bound_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class NodeAttestation(SQLModel, table=True):
    """A received quality attestation; stored only once its signature verified."""

    __tablename__ = "attestation"
    __table_args__ = (
        Index("ix_attestation_version_received", "dataset_version_id", "received_at"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id", index=True)
    dataset_version_id: uuid.UUID = Field(foreign_key="dataset_version.id")
    node_id: uuid.UUID = Field(foreign_key="node.id", index=True)
    payload: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    signature: str = Field(sa_column=Column(String(128), nullable=False))
    verified: bool
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class VersionAttestationPublic(SQLModel):
    """The latest verified attestation of a dataset version."""

    node_id: uuid.UUID
    signature: str
    attestation: Attestation
    verified: bool
    received_at: datetime


class AttestationPublic(VersionAttestationPublic):
    """A stored attestation with the dataset version it is about."""

    dataset_id: uuid.UUID
    dataset_version_id: uuid.UUID

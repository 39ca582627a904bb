"""The ledger side of the database: trades, the transactional outbox, chain assets.

Every chain write starts as a row of :class:`LedgerEvent` (the outbox), written in
the same transaction as the business change it records:

- ``asset.register`` / ``asset.update`` — a dataset listed for the first time, or a
  listed dataset whose metadata or policy hash changed (one transaction each);
- ``trade.record`` — a trade (one per released computation), later gathered into a
  ``trades.batch`` event by the relay;
- ``receipt.record`` — a job receipt's Merkle leaf, later gathered into a
  ``receipts.batch`` event whose root the receipt anchor stores;
- ``settlement.anchor`` — a settlement run's payouts: the Merkle root of its payout
  records, anchored under the event's id (one transaction each).

The relay sends the sendable events (``asset.*`` and ``*.batch``) in id order; a
``*.record`` event is ``batched`` once a batch event names it and ``confirmed`` with
its batch. Batch ids on chain are the batch event's id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from marketplace.models._types import JSONType, UTCDateTime, new_id, utcnow

__all__ = [
    "AnchorRef",
    "LedgerAsset",
    "LedgerEvent",
    "LedgerEventKind",
    "LedgerEventStatus",
    "LedgerStatus",
    "Mismatch",
    "ReceiptProof",
    "Trade",
    "VerifyReport",
]

_ID = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit autoincrement key (SQLite only autoincrements ``INTEGER``)."""


class LedgerEventKind(StrEnum):
    """What an outbox event records on chain."""

    ASSET_REGISTER = "asset.register"
    ASSET_UPDATE = "asset.update"
    TRADE_RECORD = "trade.record"
    TRADES_BATCH = "trades.batch"
    RECEIPT_RECORD = "receipt.record"
    RECEIPTS_BATCH = "receipts.batch"
    SETTLEMENT_ANCHOR = "settlement.anchor"

    @property
    def sendable(self) -> bool:
        """Whether the relay sends this event as a transaction of its own."""
        return self not in (
            LedgerEventKind.TRADE_RECORD,
            LedgerEventKind.RECEIPT_RECORD,
        )


class LedgerEventStatus(StrEnum):
    """Where an outbox event is on its way to the chain."""

    PENDING = "pending"
    BATCHED = "batched"
    SIGNED = "signed"
    CONFIRMED = "confirmed"


class LedgerEvent(SQLModel, table=True):
    """One outbox row: a chain write owed by the database."""

    __tablename__ = "ledger_event"
    __table_args__ = (
        Index("ix_ledger_event_status_id", "status", "id"),
        Index("ix_ledger_event_kind_status", "kind", "status"),
        Index("ix_ledger_event_batch", "batch_id"),
        Index("ix_ledger_event_subject", "subject"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(_ID, primary_key=True, autoincrement=True)
    )
    kind: str = Field(sa_column=Column(String(20), nullable=False))
    subject: str = Field(
        sa_column=Column(String(64), nullable=False),
        description="The dataset, trade or job id the event is about; the batch id.",
    )
    payload: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    status: str = Field(
        default=LedgerEventStatus.PENDING.value,
        sa_column=Column(String(12), nullable=False),
    )
    batch_id: int | None = Field(
        default=None,
        sa_column=Column(_ID, ForeignKey("ledger_event.id"), nullable=True),
    )
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    raw_tx: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    tx_hash: str | None = Field(
        default=None, sa_column=Column(String(66), nullable=True)
    )
    block_number: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    confirmed_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class LedgerAsset(SQLModel, table=True):
    """The hashes, owner and version last recorded for a dataset's token."""

    __tablename__ = "ledger_asset"

    dataset_id: uuid.UUID = Field(foreign_key="dataset.id", primary_key=True)
    owner_id: uuid.UUID = Field(foreign_key="organisation.id")
    owner_address: str = Field(sa_column=Column(String(42), nullable=False))
    metadata_hash: str = Field(sa_column=Column(String(64), nullable=False))
    policy_hash: str = Field(sa_column=Column(String(64), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    shares: list[dict[str, Any]] = Field(sa_column=Column(JSONType, nullable=False))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class Trade(SQLModel, table=True):
    """A purchase recorded on chain: a released computation, or prepaid periods.

    Amounts are integer minor units; the fee is the exchange's part of ``amount``.
    ``trade_hash`` is the keccak-256 of the trade's canonical record
    (:func:`marketplace.services.ledger.trade_hash`), the value the settlement
    contract's batch event carries.
    """

    __table_args__ = (Index("ix_trade_dataset_created", "dataset_id", "created_at"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    job_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(ForeignKey("job.id"), unique=True, nullable=True),
        description="The released job; none for a subscription's prepaid periods.",
    )
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id")
    buyer_id: uuid.UUID = Field(foreign_key="organisation.id")
    buyer_address: str = Field(sa_column=Column(String(42), nullable=False))
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    fee_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    trade_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class AnchorRef(SQLModel):
    """Where a batch sits on chain."""

    network: str
    chain_id: int
    contract: str = Field(description="The contract's address.")
    batch_id: int
    tx_hash: str
    block_number: int


class ReceiptProof(SQLModel):
    """A job receipt's inclusion proof in its anchored batch.

    ``leaf`` is ``keccak256(keccak256(sha256(canonical JSON of the signed
    receipt)))``; the proof folds with sorted-pair keccak-256 up to ``root``
    (OpenZeppelin ``MerkleProof``), and ``ReceiptAnchor.rootOf(batch_id)`` returns
    ``root`` when the batch is anchored.
    """

    job_id: uuid.UUID
    receipt_digest: str = Field(description="sha256 of the signed receipt, hex.")
    leaf: str = Field(description="0x-prefixed 32-byte leaf.")
    leaf_index: int
    count: int = Field(description="Receipts in the batch.")
    root: str
    proof: list[str]
    anchor: AnchorRef


class Mismatch(SQLModel):
    """One record that the database and the chain disagree on."""

    kind: str = Field(
        description="asset, trade, trade_batch, receipt or receipt_batch."
    )
    id: str = Field(description="The record's id (dataset, trade, job or batch).")
    field: str | None = Field(default=None, description="The field that differs.")
    database: str | None = Field(default=None, description="The database's value.")
    chain: str | None = Field(default=None, description="The chain's value.")
    detail: str


class VerifyReport(SQLModel):
    """The verifier's answer: counts checked, records pending, every mismatch."""

    ok: bool
    network: str
    chain_id: int
    head_block: int
    assets: int = Field(description="Assets checked against the chain.")
    trades: int
    trade_batches: int
    receipts: int
    receipt_batches: int
    settlements: int = Field(
        default=0, description="Settlement runs whose payout roots were checked."
    )
    pending_events: int = Field(
        description="Outbox events not yet confirmed (not checked, not mismatches)."
    )
    mismatches: list[Mismatch]
    summary: str


class LedgerStatus(SQLModel):
    """The ledger's deployment and the outbox backlog."""

    network: str
    chain_id: int
    head_block: int
    registry: str
    settlement: str
    anchor: str
    pending: dict[str, int] = Field(description="Unconfirmed outbox events by kind.")
    confirmed: dict[str, int] = Field(description="Confirmed outbox events by kind.")

"""Trading: quotes, orders, entitlements, per-job charges, the money journal, payouts.

The path of a purchase::

    Quote ──order (idempotency key)──▶ Order ──payment authorised──▶ Entitlement
                                                                       │
    job created ─▶ Charge reserved ──output released──▶ captured ──────┤
                         └──failed / rejected / expired──▶ voided     │
                                                   settlement ◀────────┘

Every movement of money is a balanced :class:`JournalEntry` of
:class:`JournalLine` rows (debits positive, credits negative, summing to zero per
currency). :class:`Account` keeps each account's balance as a projection of its
lines, guarded by a conditional update so a balance that must not go negative
never does, whichever process posts (``marketplace.services.journal``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from marketplace.models._types import JSONType, UTCDateTime, new_id, utcnow

__all__ = [
    "Account",
    "AccountPublic",
    "Charge",
    "ChargePublic",
    "ChargeStatus",
    "CreditTopUp",
    "Entitlement",
    "EntitlementPublic",
    "EntitlementRevocation",
    "EntitlementStatus",
    "JournalEntry",
    "JournalLine",
    "MenuOptionPublic",
    "Order",
    "OrderCreate",
    "OrderPublic",
    "OrderStatus",
    "PaymentMethod",
    "Payout",
    "PayoutAccount",
    "PayoutAccountPublic",
    "PayoutPublic",
    "Quote",
    "QuoteMenuPublic",
    "QuotePublic",
    "QuoteRequestBody",
    "SettlementCreate",
    "SettlementRun",
    "SettlementRunPublic",
    "StatementLine",
    "StatementPublic",
    "WebhookEvent",
]

_ID = BigInteger().with_variant(Integer(), "sqlite")
PaymentMethod = Literal["credits", "stripe", "onchain"]


# -- quotes ------------------------------------------------------------------------


class QuoteRequestBody(SQLModel):
    """What a buyer asks a price for: a dataset and the entitlement's terms."""

    dataset_id: uuid.UUID
    queries: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="Computations the entitlement allows.",
    )
    epsilon: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Total ε the entitlement may spend (0 for exact or HE jobs).",
    )
    delta: float = Field(default=0.0, ge=0, lt=1e-3)
    periods: int = Field(
        default=1, ge=1, le=36, description="Subscription periods bought (others: 1)."
    )
    compute_units_per_query: int = Field(
        default=1,
        ge=1,
        le=1_000_000,
        description="Compute units each job may use (metered plans): an aggregate "
        "1, a model evaluation 1 + features, an inference 1 per 100 rows.",
    )
    payment_method: PaymentMethod = "credits"
    sensitivity: float | None = Field(
        default=None,
        gt=0,
        le=1e12,
        description="The query's sensitivity, to state the expected DP error.",
    )
    mechanism: Literal["laplace", "gaussian"] = "laplace"


class Quote(SQLModel, table=True):
    """A price offered to a buyer, fixed until it expires."""

    __table_args__ = (Index("ix_quote_buyer_created", "buyer_id", "created_at"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    buyer_id: uuid.UUID = Field(foreign_key="organisation.id")
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id")
    provider_id: uuid.UUID = Field(foreign_key="organisation.id")
    plan: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    terms: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    currency: str = Field(max_length=3)
    payment_method: str = Field(max_length=16)
    gross_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    surcharge_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    fee_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    fee_bps: int = Field(sa_column=Column(Integer, nullable=False))
    epsilon_micro: int = Field(sa_column=Column(BigInteger, nullable=False))
    delta: float = 0.0
    expected_abs_error: float | None = None
    ci95_half_width: float | None = None
    compute_units_estimate: int = Field(sa_column=Column(BigInteger, nullable=False))
    rows_estimate: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class QuotePublic(SQLModel):
    """A quote as the API shows it."""

    id: uuid.UUID
    dataset_id: uuid.UUID
    plan_kind: str
    currency: str
    payment_method: str
    queries: int
    periods: int
    epsilon: float
    delta: float
    gross_minor: int = Field(description="The provider's price for these terms.")
    surcharge_minor: int = Field(description="What the payment method adds.")
    amount_minor: int = Field(description="What the payment holds: gross + surcharge.")
    exchange_fee_minor: int = Field(description="The exchange's fee inside the gross.")
    expected_abs_error: float | None
    ci95_half_width: float | None
    compute_units_estimate: int
    rows_estimate: int
    expires_at: datetime


class MenuOptionPublic(SQLModel):
    """One choice of a DP quote menu: privacy loss, accuracy and price."""

    epsilon: float
    delta: float
    expected_abs_error: float
    ci95_half_width: float
    quote: QuotePublic


class QuoteMenuPublic(SQLModel):
    """Several (ε, expected error, price) choices for one DP question."""

    dataset_id: uuid.UUID
    mechanism: str
    sensitivity: float
    options: list[MenuOptionPublic]


# -- orders ------------------------------------------------------------------------


class OrderStatus(StrEnum):
    """Where an order stands."""

    PENDING = "pending"
    """Created; the payment provider has not answered yet."""
    REQUIRES_ACTION = "requires_action"
    """The buyer must confirm the payment (3-D Secure); a webhook finishes it."""
    ACTIVE = "active"
    """Paid (authorised); its entitlement exists."""
    FAILED = "failed"
    """The payment was declined or abandoned."""


class OrderCreate(SQLModel):
    """Buy a quote."""

    quote_id: uuid.UUID
    payment_method_token: str | None = Field(
        default=None,
        max_length=255,
        description="The card's payment method (Stripe pm_...); for onchain, the "
        "buyer's registered wallet (optional); not for credits.",
    )


class Order(SQLModel, table=True):
    """A buyer's purchase of a quote."""

    __tablename__ = "purchase_order"
    __table_args__ = (
        UniqueConstraint("buyer_id", "idempotency_key"),
        UniqueConstraint("quote_id"),
        Index("ix_purchase_order_payment_ref", "payment_reference"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    buyer_id: uuid.UUID = Field(foreign_key="organisation.id")
    quote_id: uuid.UUID = Field(foreign_key="quote.id")
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id")
    idempotency_key: str = Field(max_length=255)
    status: str = Field(max_length=20)
    payment_method: str = Field(max_length=16)
    payment_reference: str | None = Field(default=None, max_length=255)
    client_secret: str | None = Field(default=None, max_length=255)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    failure_reason: str | None = Field(
        default=None, sa_column=Column(Text, nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class OrderPublic(SQLModel):
    """An order as the API shows it."""

    id: uuid.UUID
    quote_id: uuid.UUID
    dataset_id: uuid.UUID
    status: str
    payment_method: str
    amount_minor: int
    currency: str
    client_secret: str | None = Field(
        description="Stripe: what the buyer's browser confirms a card with."
    )
    failure_reason: str | None
    entitlement_id: uuid.UUID | None
    created_at: datetime


# -- entitlements ------------------------------------------------------------------


class EntitlementStatus(StrEnum):
    """Whether an entitlement can take new jobs."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    CLOSED = "closed"
    """Closed by the buyer or used up; its unused hold was released."""


class Entitlement(SQLModel, table=True):
    """The right to run computations on a dataset: quota, ε budget, money, expiry.

    Counters move only by conditional ``UPDATE``s, so concurrent jobs can never
    reserve past the quota, the ε budget or the authorised amount.
    """

    __table_args__ = (
        Index("ix_entitlement_buyer_dataset", "buyer_id", "dataset_id", "status"),
        Index("ix_entitlement_status_expires", "status", "expires_at"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    order_id: uuid.UUID = Field(foreign_key="purchase_order.id", unique=True)
    buyer_id: uuid.UUID = Field(foreign_key="organisation.id")
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id")
    provider_id: uuid.UUID = Field(foreign_key="organisation.id")
    plan: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    currency: str = Field(max_length=3)
    payment_method: str = Field(max_length=16)
    fee_bps: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(max_length=12)
    quota_queries: int = Field(sa_column=Column(BigInteger, nullable=False))
    queries_used: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    queries_reserved: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False)
    )
    epsilon_budget_micro: int = Field(sa_column=Column(BigInteger, nullable=False))
    epsilon_used_micro: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False)
    )
    epsilon_reserved_micro: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False)
    )
    amount_authorized_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount_reserved_minor: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False)
    )
    amount_captured_minor: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False)
    )
    prepaid_minor: int = Field(
        default=0,
        sa_column=Column(BigInteger, nullable=False),
        description="Charged when bought, whatever is used (subscription periods).",
    )
    finalized_at: datetime | None = Field(
        default=None,
        sa_column=Column(UTCDateTime, nullable=True),
        description="When the payment was settled with the provider: the captured "
        "amount collected and the rest of the hold released.",
    )
    payment_captured_minor: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )
    revoked_by: uuid.UUID | None = Field(default=None, foreign_key="organisation.id")
    revoke_reason: str | None = Field(
        default=None, sa_column=Column(Text, nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class EntitlementPublic(SQLModel):
    """An entitlement as the API shows it."""

    id: uuid.UUID
    order_id: uuid.UUID
    dataset_id: uuid.UUID
    buyer_id: uuid.UUID
    status: str
    currency: str
    payment_method: str
    plan_kind: str
    quota_queries: int
    queries_used: int
    queries_reserved: int
    epsilon_budget: float
    epsilon_used: float
    epsilon_reserved: float
    amount_authorized_minor: int
    amount_reserved_minor: int
    amount_captured_minor: int
    expires_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None
    finalized_at: datetime | None


class EntitlementRevocation(SQLModel):
    """Why an entitlement is revoked (the provider or the operator)."""

    reason: str = Field(min_length=3, max_length=1000)


# -- charges -----------------------------------------------------------------------


class ChargeStatus(StrEnum):
    """Where a job's charge stands."""

    RESERVED = "reserved"
    CAPTURED = "captured"
    VOIDED = "voided"


class Charge(SQLModel, table=True):
    """What one job reserves against an entitlement, and what it is charged."""

    __table_args__ = (
        Index("ix_charge_entitlement", "entitlement_id"),
        Index("ix_charge_status_captured", "status", "captured_at"),
        Index("ix_charge_settlement", "settlement_id"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    kind: str = Field(
        default="job",
        max_length=10,
        description="'job': one computation; 'prepaid': a subscription's periods.",
    )
    job_id: uuid.UUID | None = Field(default=None, foreign_key="job.id", unique=True)
    entitlement_id: uuid.UUID = Field(foreign_key="entitlement.id")
    dataset_id: uuid.UUID = Field(foreign_key="dataset.id")
    provider_id: uuid.UUID = Field(foreign_key="organisation.id")
    buyer_id: uuid.UUID = Field(foreign_key="organisation.id")
    currency: str = Field(max_length=3)
    status: str = Field(max_length=10)
    reserved_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    reserved_epsilon_micro: int = Field(sa_column=Column(BigInteger, nullable=False))
    rows_scanned: int = Field(sa_column=Column(BigInteger, nullable=False))
    compute_units: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    fee_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    epsilon_micro: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    void_reason: str | None = Field(default=None, max_length=40)
    shares: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSONType, nullable=False),
        description="The provider's net split among payees: payee, bps, amount.",
    )
    payment_method: str = Field(max_length=16)
    settlement_id: uuid.UUID | None = Field(
        default=None, foreign_key="settlement_run.id"
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    captured_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )
    voided_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class ChargePublic(SQLModel):
    """A job's charge as the API shows it."""

    kind: str
    job_id: uuid.UUID | None
    entitlement_id: uuid.UUID
    status: str
    currency: str
    reserved_minor: int
    amount_minor: int
    epsilon: float
    rows_scanned: int
    compute_units: int
    void_reason: str | None


# -- journal -----------------------------------------------------------------------


class Account(SQLModel, table=True):
    """A journal account and its balance (a projection of its lines).

    ``balance_minor`` is on the account's normal side: a debit-normal account
    (money the exchange holds at a payment provider) grows with debits, a
    credit-normal one (what the exchange owes: buyer funds, holds, payables,
    fees earned) with credits.
    """

    code: str = Field(primary_key=True, max_length=120)
    kind: str = Field(max_length=20)
    currency: str = Field(max_length=3)
    organisation_id: uuid.UUID | None = Field(
        default=None, foreign_key="organisation.id"
    )
    debit_normal: bool = Field(sa_column=Column(Boolean, nullable=False))
    allow_negative: bool = Field(sa_column=Column(Boolean, nullable=False))
    balance_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class AccountPublic(SQLModel):
    """An account's balance."""

    code: str
    kind: str
    currency: str
    balance_minor: int


class JournalEntry(SQLModel, table=True):
    """One balanced movement of money; ``reference`` makes posting exactly-once."""

    __tablename__ = "journal_entry"

    id: int | None = Field(
        default=None, sa_column=Column(_ID, primary_key=True, autoincrement=True)
    )
    reference: str = Field(
        sa_column=Column(String(160), nullable=False, unique=True),
        description="What the entry is for, unique: 'capture:<charge id>'.",
    )
    kind: str = Field(max_length=20)
    memo: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class JournalLine(SQLModel, table=True):
    """A debit (positive) or credit (negative) of one account in an entry."""

    __tablename__ = "journal_line"
    __table_args__ = (Index("ix_journal_line_account", "account", "entry_id"),)

    id: int | None = Field(
        default=None, sa_column=Column(_ID, primary_key=True, autoincrement=True)
    )
    entry_id: int = Field(
        sa_column=Column(_ID, ForeignKey("journal_entry.id"), nullable=False)
    )
    account: str = Field(
        sa_column=Column(String(120), ForeignKey("account.code"), nullable=False)
    )
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))


class CreditTopUp(SQLModel):
    """Prepaid credits the operator adds to a buyer's balance."""

    amount_minor: int = Field(gt=0, le=10**12)
    currency: str = Field(default="EUR", schema_extra={"pattern": r"^[A-Z]{3}$"})
    reference: str = Field(
        min_length=1,
        max_length=100,
        description="The payment this top-up records (bank transfer id); unique.",
    )


# -- payment webhooks --------------------------------------------------------------


class WebhookEvent(SQLModel, table=True):
    """A provider's webhook event, processed exactly once."""

    __tablename__ = "webhook_event"

    id: str = Field(primary_key=True, max_length=255)
    provider: str = Field(max_length=16)
    type: str = Field(max_length=80)
    object_id: str = Field(max_length=255)
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


# -- settlement --------------------------------------------------------------------


class SettlementCreate(SQLModel):
    """Settle the charges captured in ``[period_start, period_end)``."""

    period_start: AwareDatetime = Field(description="With a UTC offset.")
    period_end: AwareDatetime = Field(description="With a UTC offset; in the past.")
    currency: str = Field(default="EUR", schema_extra={"pattern": r"^[A-Z]{3}$"})


class SettlementRun(SQLModel, table=True):
    """The operator's settlement of one period and currency."""

    __tablename__ = "settlement_run"
    __table_args__ = (UniqueConstraint("currency", "period_start", "period_end"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    currency: str = Field(max_length=3)
    period_start: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    period_end: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    status: str = Field(max_length=12)
    charges: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    gross_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    fee_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    payout_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_by: uuid.UUID = Field(foreign_key="organisation.id")
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    completed_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class Payout(SQLModel, table=True):
    """What one payee receives from one settlement run."""

    __table_args__ = (UniqueConstraint("settlement_id", "payee_id", "method"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    settlement_id: uuid.UUID = Field(foreign_key="settlement_run.id")
    payee_id: uuid.UUID = Field(foreign_key="organisation.id")
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    method: str = Field(max_length=16)
    status: str = Field(max_length=12)
    reference: str | None = Field(default=None, max_length=255)
    lines: list[dict[str, Any]] = Field(sa_column=Column(JSONType, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    paid_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime, nullable=True)
    )


class PayoutAccount(SQLModel, table=True):
    """Where a provider organisation is paid by card money: its connected account."""

    __tablename__ = "payout_account"

    organisation_id: uuid.UUID = Field(foreign_key="organisation.id", primary_key=True)
    stripe_account_id: str = Field(max_length=255, unique=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class PayoutAccountPublic(SQLModel):
    """A provider's payout account."""

    organisation_id: uuid.UUID
    stripe_account_id: str


WALLET_PROOF = (
    "veilx: organisation {organisation_id} pays and is paid from wallet {address}"
)
"""The message (EIP-191 ``personal_sign``) a wallet signs to be an organisation's."""


class OrgWallet(SQLModel, table=True):
    """An organisation's wallet: the ``onchain`` way of paying and being paid.

    Registered with a signature of :data:`WALLET_PROOF` by the wallet's key, so no one
    can name a wallet they do not control.
    """

    __tablename__ = "org_wallet"

    organisation_id: uuid.UUID = Field(foreign_key="organisation.id", primary_key=True)
    address: str = Field(max_length=42, unique=True)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


class WalletRegistration(SQLModel):
    """Register a wallet: its address and its signature of :data:`WALLET_PROOF`."""

    address: str = Field(
        schema_extra={"pattern": r"^0x[0-9a-fA-F]{40}$"},
        description="The wallet's address.",
    )
    signature: str = Field(
        schema_extra={"pattern": r"^0x[0-9a-fA-F]{130}$"},
        description="The wallet's EIP-191 signature of the proof message.",
    )


class WalletPublic(SQLModel):
    """An organisation's wallet and its balance in the payment escrow."""

    organisation_id: uuid.UUID
    address: str
    escrow_balance_minor: int | None = Field(
        default=None,
        description="What the wallet may withdraw from (or hold in) the escrow.",
    )
    currency: str | None = None


class PayoutPublic(SQLModel):
    """A payout as the API shows it."""

    payee_id: uuid.UUID
    amount_minor: int
    currency: str
    method: str
    status: str
    reference: str | None


class SettlementRunPublic(SQLModel):
    """A settlement run and its payouts."""

    id: uuid.UUID
    currency: str
    period_start: datetime
    period_end: datetime
    status: str
    charges: int
    gross_minor: int
    fee_minor: int
    payout_minor: int
    payouts: list[PayoutPublic]
    completed_at: datetime | None


class StatementLine(SQLModel):
    """One charge in a provider's statement."""

    captured_at: datetime
    dataset_id: uuid.UUID
    job_id: uuid.UUID | None = Field(description="None for a subscription's periods.")
    gross_minor: int
    fee_minor: int
    share_bps: int
    payee_minor: int


class StatementPublic(SQLModel):
    """A payee's statement for one settlement run."""

    settlement_id: uuid.UUID
    payee_id: uuid.UUID
    currency: str
    period_start: datetime
    period_end: datetime
    gross_minor: int
    fee_minor: int
    payout_minor: int
    lines: list[StatementLine]

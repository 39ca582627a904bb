"""Typed responses of the exchange and the typed results of computations.

Response models ignore fields they do not know, so a newer exchange does not
break an older SDK. The protocol's own messages (:class:`SignedReceipt`,
:class:`BudgetUsage`, :class:`Attestation`, …) are reused as they are: the SDK
checks what the node signed, not a copy of it.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from mpc_engine.he import ModelKind
from mpc_engine.policy import RightsPolicy
from mpc_engine.protocol import (
    Attestation,
    BudgetUsage,
    JobKind,
    JobState,
    Loss,
    ModelInfo,
    Receipt,
    SignedReceipt,
)

__all__ = [
    "AggregateGroup",
    "AggregateResult",
    "AnchorRef",
    "Balance",
    "BlobRef",
    "Budget",
    "BudgetUsage",
    "Charge",
    "Column",
    "ContextInfo",
    "Dataset",
    "DatasetVersion",
    "Entitlement",
    "FacetCount",
    "InferenceResult",
    "Job",
    "JobProgress",
    "JournalCheck",
    "KeyInfo",
    "MenuOption",
    "ModelEvalResult",
    "Node",
    "Order",
    "Page",
    "Payout",
    "PrivacyBudget",
    "ProviderRef",
    "Quote",
    "QuoteMenu",
    "ReceiptInfo",
    "ReceiptProof",
    "SearchHit",
    "SettlementRun",
    "Statement",
    "StatementLine",
    "VerifiedInclusion",
    "VerifiedReceipt",
    "VersionAttestation",
]

T = TypeVar("T")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- catalog -------------------------------------------------------------------------


class ProviderRef(_Response):
    """The provider organisation of a listing."""

    id: uuid.UUID
    name: str


class Column(_Response):
    """One column of a dataset's schema (never its values)."""

    name: str
    type: str = Field(description="integer, float, string, boolean, date, …")
    sensitivity: str
    unit: str | None = None
    description: str = ""
    nullable: bool = False


class VersionAttestation(_Response):
    """The latest verified quality attestation of a dataset version."""

    node_id: uuid.UUID
    signature: str
    attestation: Attestation
    verified: bool
    received_at: datetime


class DatasetVersion(_Response):
    """A content version of a dataset."""

    id: uuid.UUID
    content_hash: str
    row_count: int
    byte_size: int
    note: str | None = None
    created_at: datetime
    is_live: bool = False
    attestation: VersionAttestation | None = None


class Dataset(_Response):
    """A dataset listing: metadata, schema, rights policy, live version.

    Attributes
    ----------
    policy
        The machine-readable rights policy the node enforces.
    live_version
        The version computations run on, with the node's attestation once the
        node has attested it.
    """

    id: uuid.UUID
    title: str
    description: str
    keywords: builtins.list[str] = Field(default_factory=list)
    themes: builtins.list[str] = Field(default_factory=list)
    license: str = ""
    provider: ProviderRef
    columns: builtins.list[Column]
    policy: RightsPolicy
    policy_hash: str
    reference_price_minor: int | None = None
    currency: str | None = None
    status: str
    live_version: DatasetVersion | None = None
    created_at: datetime
    updated_at: datetime
    listed_at: datetime | None = None

    def column_types(self) -> dict[str, str]:
        """Column name → logical type, as ``model_eval_bounds`` wants it."""
        return {c.name: c.type for c in self.columns}

    @property
    def models(self) -> builtins.list[ModelInfo]:
        """The provider models the node attested for the live version."""
        live = self.live_version
        if live is None or live.attestation is None:
            return []
        return list(live.attestation.attestation.models)


class SearchHit(_Response):
    """A catalog search hit."""

    id: uuid.UUID
    title: str
    description: str
    keywords: builtins.list[str] = Field(default_factory=list)
    themes: builtins.list[str] = Field(default_factory=list)
    license: str
    provider: ProviderRef
    computation_kinds: builtins.list[str] = Field(default_factory=list)
    pricing_kind: str
    reference_price_minor: int
    currency: str
    listed_at: datetime
    live_content_hash: str | None = None


class FacetCount(_Response):
    """How many hits carry one facet value."""

    value: str
    label: str
    count: int


class Page(Generic[T]):
    """One page of a list, and the way to the next.

    Iterating a page yields its own items; :meth:`auto_paging_iter` follows
    ``next_cursor`` through every later page.

    Attributes
    ----------
    items
        This page's items.
    next_cursor
        Pass as ``cursor`` for the next page; ``None`` on the last page.
    total
        Hits in the whole result set, when the endpoint says (search).
    facets
        Facet counts, when the endpoint returns them (search, first page).
    """

    def __init__(
        self,
        items: builtins.list[T],
        next_cursor: str | None,
        fetch: Callable[[str], Page[T]] | None = None,
        *,
        total: int | None = None,
        facets: dict[str, builtins.list[FacetCount]] | None = None,
    ) -> None:
        self.items = items
        self.next_cursor = next_cursor
        self.total = total
        self.facets = facets or {}
        self._fetch = fetch

    @property
    def has_more(self) -> bool:
        """Whether a next page exists."""
        return self.next_cursor is not None

    def next_page(self) -> Page[T] | None:
        """Fetch the next page (``None`` on the last page)."""
        if self.next_cursor is None or self._fetch is None:
            return None
        return self._fetch(self.next_cursor)

    def auto_paging_iter(self) -> Iterator[T]:
        """Yield every item of this page and of all later pages, fetching lazily."""
        page: Page[T] | None = self
        while page is not None:
            yield from page.items
            page = page.next_page()

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]

    def __repr__(self) -> str:
        more = f", next_cursor={self.next_cursor!r}" if self.next_cursor else ""
        return f"Page(items={len(self.items)}{more})"


# -- nodes, blobs, contexts, budgets ---------------------------------------------------


class Node(_Response):
    """A provider's data node: its signing key verifies receipts."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    name: str
    public_key: str = Field(description="Ed25519 public key, 64 hex characters.")
    created_at: datetime
    last_seen_at: datetime | None = None
    datasets: builtins.list[uuid.UUID] = Field(default_factory=list)


class BlobRef(_Response):
    """An uploaded blob: its SHA-256 (its name) and size."""

    sha256: str
    size: int


class ContextInfo(_Response):
    """An HE public context as the exchange stored it."""

    context_id: str
    size: int
    has_galois_keys: bool
    params: Any = None


class PrivacyBudget(_Response):
    """A privacy budget (ε, δ)."""

    epsilon: float
    delta: float


class Budget(_Response):
    """A dataset's privacy-budget use, as the node last reported it.

    Attributes
    ----------
    total
        The dataset-wide total (``None`` when the caller may see only its own
        row, or nothing was spent yet).
    buyers
        One row per buyer the caller may see (a buyer sees its own).
    """

    dataset_id: uuid.UUID
    budget_per_buyer: PrivacyBudget
    budget_per_dataset: PrivacyBudget
    total: BudgetUsage | None = None
    buyers: builtins.list[BudgetUsage] = Field(default_factory=list)


# -- jobs and receipts -----------------------------------------------------------------


class Job(_Response):
    """A computation job as the exchange shows it (``JobPublic``)."""

    id: uuid.UUID
    dataset_id: uuid.UUID
    dataset_version_id: uuid.UUID | None = None
    content_hash: str | None = None
    policy_hash: str | None = None
    buyer_id: uuid.UUID
    node_id: uuid.UUID | None = None
    kind: JobKind
    purpose: str
    params: dict[str, Any]
    inputs: dict[str, str] = Field(default_factory=dict)
    context_id: str | None = None
    state: JobState
    reason_code: str | None = None
    reason: str | None = None
    approved_by: str | None = None
    created_at: datetime
    updated_at: datetime
    deadline: datetime | None = None
    output: Any = None
    output_blobs: dict[str, str] = Field(default_factory=dict)
    privacy_loss: Loss | None = None
    receipt: SignedReceipt | None = None

    @property
    def terminal(self) -> bool:
        """Whether the job can change state no more."""
        return self.state.terminal

    @property
    def succeeded(self) -> bool:
        """Whether the job produced a result."""
        return self.state is JobState.SUCCEEDED


class ReceiptInfo(_Response):
    """``GET /jobs/{id}/receipt``: the node's signed receipt as the exchange holds it.

    ``verified`` is the exchange's own claim; :meth:`sdk.Client.receipts.verify`
    checks the receipt independently.
    """

    receipt: SignedReceipt
    node_id: uuid.UUID
    node_public_key: str
    verified: bool


class VerifiedReceipt(_Response):
    """A receipt the SDK has checked itself against the job and the node registry.

    Attributes
    ----------
    receipt
        The signed statement: dataset version, policy, kind, hashes, privacy loss.
    signature
        The node's Ed25519 signature over ``receipt.signed_bytes()``.
    node_id, node_public_key
        The node that signed, and its key as the node registry shows it.
    """

    receipt: Receipt
    signature: str
    node_id: uuid.UUID
    node_public_key: str

    @property
    def privacy_loss(self) -> Loss:
        """The privacy loss the node recorded for the job."""
        return self.receipt.privacy_loss


class AnchorRef(_Response):
    """Where a batch sits on chain: network, contract, batch id, transaction."""

    network: str
    chain_id: int
    contract: str
    batch_id: int
    tx_hash: str
    block_number: int


class ReceiptProof(_Response):
    """``GET /receipts/{id}/proof``: a receipt's Merkle inclusion proof.

    ``leaf`` is ``keccak256(keccak256(sha256(canonical signed receipt)))``; the
    ``proof`` folds with sorted-pair keccak-256 into ``root``, the value
    ``ReceiptAnchor.rootOf(anchor.batch_id)`` returns on chain.
    """

    job_id: uuid.UUID
    receipt_digest: str
    leaf: str
    leaf_index: int
    count: int
    root: str
    proof: list[str]
    anchor: AnchorRef


class VerifiedInclusion(_Response):
    """A receipt the SDK proved is in a batch whose root is anchored on chain.

    Attributes
    ----------
    proof
        The exchange's proof, every part of which the SDK re-checked.
    chain_root
        The root the anchor contract returned for the batch (equals ``proof.root``).
    """

    proof: ReceiptProof
    chain_root: str


@dataclass(frozen=True)
class JobProgress:
    """What :meth:`sdk.Client.jobs.wait` reports to its ``progress`` callback.

    Attributes
    ----------
    job
        The job as last fetched.
    previous_state
        The state at the previous poll (``None`` on the first).
    elapsed
        Seconds since the wait began.
    changed
        Whether the state differs from the previous poll (always true first).
    """

    job: Job
    previous_state: JobState | None
    elapsed: float
    changed: bool

    @property
    def state(self) -> JobState:
        """The job's current state."""
        return self.job.state


# -- local keys --------------------------------------------------------------------


class KeyInfo(_Response):
    """A local HE key (the secret never leaves ``path``)."""

    name: str
    path: Path
    context_id: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    galois: bool
    created_at: datetime
    uploaded_to: builtins.list[str] = Field(
        default_factory=list, description="Exchanges the public context was sent to."
    )


# -- results ----------------------------------------------------------------------


GroupKeyValue = str | float | bool | None


class AggregateGroup(_Response):
    """The released statistics of one group.

    Per-column statistics are keyed by column; ``None`` marks a value withheld
    below the minimum group size (exact mode) or undefined (a DP mean whose noisy
    count is below 1).
    """

    key: tuple[GroupKeyValue, ...]
    count: int | None = None
    sum: dict[str, float | None] = Field(default_factory=dict)
    mean: dict[str, float | None] = Field(default_factory=dict)
    variance: dict[str, float | None] = Field(default_factory=dict)
    histogram: dict[str, builtins.list[int | None]] = Field(default_factory=dict)
    quantiles: dict[str, builtins.list[float | None]] = Field(default_factory=dict)


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    job: Job
    receipt: VerifiedReceipt


class AggregateResult(_Result):
    """An ``aggregate`` result, decrypted when it was returned encrypted.

    Attributes
    ----------
    group_by
        The group-by columns; each group's ``key`` follows this order.
    groups
        The released groups.
    dp_applied
        Whether DP noise was added.
    privacy_loss
        The (ε, δ) spent.
    mechanism
        ``laplace`` or ``gaussian`` under DP, else ``None``.
    suppressed
        Exact mode: whether anything was withheld below the minimum group size.
    histogram_edges, quantile_levels
        Bin edges per histogram column; the quantile levels.
    encrypted
        Whether the values travelled encrypted under the buyer's key.
    job, receipt
        The job and its verified receipt.
    """

    group_by: builtins.list[str]
    groups: builtins.list[AggregateGroup]
    dp_applied: bool
    privacy_loss: Loss
    mechanism: str | None = None
    suppressed: bool = False
    histogram_edges: dict[str, builtins.list[float]] = Field(default_factory=dict)
    quantile_levels: builtins.list[float] = Field(default_factory=list)
    encrypted: bool = False


class ModelEvalResult(_Result):
    """An ``encrypted_model_eval`` result, decrypted with the buyer's key.

    Attributes
    ----------
    kind
        ``linear`` or ``logistic``.
    mse
        Mean squared error (linear models), in the label's units squared.
    log_loss
        The degree-2 Taylor approximation of the log-loss (logistic models).
    mean_score
        Mean prediction (linear) or mean logit (logistic).
    loss_noise_std, mean_score_noise_std
        The std of the flooding noise on each metric, in the same units.
    n_features, label_bounds
        As the node evaluated them.
    gram_privacy_loss
        The DP loss of the Gram-matrix release the node evaluated on.
    """

    kind: ModelKind
    mse: float | None
    log_loss: float | None
    mean_score: float
    loss_noise_std: float
    mean_score_noise_std: float
    n_features: int
    label_bounds: tuple[float, float]
    gram_privacy_loss: Loss | None = None


class InferenceResult(_Result):
    """An ``encrypted_inference`` result: the provider model's scores of your rows.

    Attributes
    ----------
    model
        The provider model that scored the rows.
    scores
        One score per row, in row order (``float64`` array).
    noise_std
        The std of the noise on each score (flooding, plus any DP noise).
    n_rows
        Rows scored.
    """

    model: str
    scores: npt.NDArray[np.float64]
    noise_std: float
    n_rows: int


# -- trading -------------------------------------------------------------------------


class Quote(_Response):
    """A price for an entitlement, held until ``expires_at`` (``POST /v1/quotes``).

    Amounts are integers in minor units (cents) of ``currency``.

    Attributes
    ----------
    plan_kind
        The dataset's pricing plan (``per_query``, ``privacy_priced``, …).
    queries, periods, epsilon, delta
        The terms priced: computations, subscription periods, total (ε, δ).
    gross_minor
        The provider's price for these terms (``exchange_fee_minor`` inside it).
    surcharge_minor
        What the payment method adds (0 for credits).
    amount_minor
        What ordering holds: ``gross_minor + surcharge_minor``.
    expected_abs_error, ci95_half_width
        With a ``sensitivity``: the DP answer's expected absolute error and 95 %
        confidence half-width at the quoted ε.
    compute_units_estimate, rows_estimate
        What metered plans priced.
    """

    id: uuid.UUID
    dataset_id: uuid.UUID
    plan_kind: str
    currency: str
    payment_method: str
    queries: int
    periods: int
    epsilon: float
    delta: float
    gross_minor: int
    surcharge_minor: int
    amount_minor: int
    exchange_fee_minor: int
    expected_abs_error: float | None = None
    ci95_half_width: float | None = None
    compute_units_estimate: int = 0
    rows_estimate: int = 0
    expires_at: datetime


class MenuOption(_Response):
    """One (ε, expected error, price) choice of a DP quote menu.

    ``quote`` is an ordinary quote: pass ``quote.id`` to ``client.orders.create``.
    """

    epsilon: float
    delta: float
    expected_abs_error: float
    ci95_half_width: float
    quote: Quote


class QuoteMenu(_Response):
    """Several priced ε choices for one DP question (``POST /v1/quotes/menu``).

    ``options`` are in increasing ε; prices never fall as ε grows.
    """

    dataset_id: uuid.UUID
    mechanism: str
    sensitivity: float
    options: builtins.list[MenuOption]


class Order(_Response):
    """A purchase of a quote (``POST /v1/orders``).

    Attributes
    ----------
    status
        ``active`` (paid; ``entitlement_id`` set), ``pending``,
        ``requires_action`` (confirm the card with ``client_secret``) or
        ``failed`` (``failure_reason``).
    amount_minor, currency
        What the payment holds.
    entitlement_id
        The entitlement the order granted, once paid.
    """

    id: uuid.UUID
    quote_id: uuid.UUID
    dataset_id: uuid.UUID
    status: str
    payment_method: str
    amount_minor: int
    currency: str
    client_secret: str | None = None
    failure_reason: str | None = None
    entitlement_id: uuid.UUID | None = None
    created_at: datetime


class Entitlement(_Response):
    """The right to run computations on a dataset: quota, ε budget, money, expiry.

    Each counter has a ``…_used`` (or ``…_captured``) part, spent by finished
    jobs, and a ``…_reserved`` part, held by running ones.

    Attributes
    ----------
    status
        ``active``, ``revoked``, ``expired`` or ``closed``.
    quota_queries, queries_used, queries_reserved
        Computations bought, spent and held.
    epsilon_budget, epsilon_used, epsilon_reserved
        The ε bought, spent and held.
    amount_authorized_minor, amount_reserved_minor, amount_captured_minor
        The money held when bought, held by running jobs and charged.
    finalized_at
        When the payment was settled with the provider (closed, expired or used
        up): the captured amount collected and the rest released.
    """

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
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    finalized_at: datetime | None = None


class Charge(_Response):
    """What a job reserved against an entitlement and was charged.

    ``kind`` is ``job`` (one computation) or ``prepaid`` (a subscription's
    periods, ``job_id`` None); ``status`` is ``reserved``, ``captured`` or
    ``voided`` (``void_reason``: the job failed, was rejected or expired).
    """

    kind: str
    job_id: uuid.UUID | None = None
    entitlement_id: uuid.UUID
    status: str
    currency: str
    reserved_minor: int
    amount_minor: int
    epsilon: float
    rows_scanned: int
    compute_units: int
    void_reason: str | None = None


class Balance(_Response):
    """One of an organisation's accounts (``GET /v1/balances``).

    ``kind`` is ``buyer_funds`` (prepaid credits) or ``payable`` (what the
    exchange owes a provider); ``balance_minor`` is in minor units of
    ``currency``.
    """

    code: str
    kind: str
    currency: str
    balance_minor: int


class Wallet(_Response):
    """An organisation's wallet (``GET /v1/organisations/{id}/wallet``).

    ``escrow_balance_minor`` is what the wallet may withdraw from the chain's
    payment escrow (``None`` when the chain did not answer), in minor units of
    ``currency``.
    """

    organisation_id: uuid.UUID
    address: str
    escrow_balance_minor: int | None = None
    currency: str | None = None


class Payout(_Response):
    """What one payee receives from a settlement run."""

    payee_id: uuid.UUID
    amount_minor: int
    currency: str
    method: str
    status: str
    reference: str | None = None


class SettlementRun(_Response):
    """A settlement of the charges captured in ``[period_start, period_end)``.

    ``gross_minor`` is what buyers paid, ``fee_minor`` the exchange's part,
    ``payout_minor`` what ``payouts`` pay the payees.
    """

    id: uuid.UUID
    currency: str
    period_start: datetime
    period_end: datetime
    status: str
    charges: int
    gross_minor: int
    fee_minor: int
    payout_minor: int
    payouts: builtins.list[Payout]
    completed_at: datetime | None = None


class StatementLine(_Response):
    """One charge in a payee's statement."""

    captured_at: datetime
    dataset_id: uuid.UUID
    job_id: uuid.UUID | None = None
    gross_minor: int
    fee_minor: int
    share_bps: int
    payee_minor: int


class Statement(_Response):
    """A payee's statement for one settlement run, one line per charge."""

    settlement_id: uuid.UUID
    payee_id: uuid.UUID
    currency: str
    period_start: datetime
    period_end: datetime
    gross_minor: int
    fee_minor: int
    payout_minor: int
    lines: builtins.list[StatementLine]


class JournalCheck(_Response):
    """The money journal's invariants, recomputed from its lines (``ok`` if all hold).

    Attributes
    ----------
    ok
        Every entry balances and every account's balance matches its lines.
    entries
        Journal entries checked.
    unbalanced_entries
        Ids of entries whose lines do not sum to zero per currency.
    drifted_accounts
        Accounts whose stored balance differs from the sum of their lines.
    negative_accounts
        Accounts below zero that must never be.
    """

    ok: bool
    entries: int
    unbalanced_entries: builtins.list[int]
    drifted_accounts: builtins.list[str]
    negative_accounts: builtins.list[str]

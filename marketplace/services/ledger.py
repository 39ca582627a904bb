"""The ledger's database side: what is owed to the chain, and the hashes it carries.

:class:`LedgerRecorder` writes outbox events (:class:`~marketplace.models.LedgerEvent`)
into the caller's session, so they commit — or roll back — with the business change
they record: a dataset listed or changed, a computation released (its trade and its
receipt). It never talks to the chain; the relay (:mod:`marketplace.services.relay`)
does, and the verifier (:mod:`marketplace.services.verify`) checks both sides.

Hashes (documented in ``docs/ledger.md``):

- an organisation's address: the last 20 bytes of
  ``keccak256("veilx.org.v1:" ‖ uuid bytes)`` — a custodial record address, no key;
- a dataset's metadata hash: ``sha256`` of the canonical JSON of its descriptive
  metadata, schema hash, live content hash and price (:func:`metadata_hash`);
  its policy hash is the catalog's (``sha256`` of the canonical policy);
- a trade's hash: ``keccak256`` of the canonical JSON of :func:`trade_record`;
- a receipt's leaf: :func:`ledger.receipt_leaf` of the signed receipt.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eth_utils.address import to_checksum_address
from sqlalchemy import func
from sqlmodel import Session, select
from web3 import Web3

import pricing
from ledger import (
    DataAssetRegistry,
    Ledger,
    MerkleTree,
    keccak256,
    receipt_digest,
    receipt_leaf,
)
from marketplace.chain import LazyChain
from marketplace.errors import Conflict, NotFound, ValidationFailed
from marketplace.models import (
    AnchorRef,
    Dataset,
    DatasetStatus,
    DatasetVersion,
    Job,
    LedgerAsset,
    LedgerEvent,
    LedgerEventKind,
    LedgerEventStatus,
    LedgerStatus,
    Payout,
    ReceiptProof,
    Trade,
    VerifyReport,
    utcnow,
)
from mpc_engine.protocol import SignedReceipt, canonical_json

__all__ = [
    "ORG_ADDRESS_DOMAIN",
    "LedgerQueries",
    "LedgerRecorder",
    "ReceiptInclusion",
    "asset_shares",
    "dataset_shares",
    "metadata_hash",
    "org_address",
    "payout_leaf",
    "payout_record",
    "payouts_root",
    "receipt_inclusion",
    "token_id_of",
    "trade_hash",
    "trade_record",
]

ORG_ADDRESS_DOMAIN = b"veilx.org.v1:"
token_id_of = DataAssetRegistry.token_id_of
"""A dataset's token id: its UUID's 16 bytes as an integer (``tokenIdOf``)."""


def org_address(org_id: uuid.UUID) -> str:
    """The custodial chain address that stands for an organisation (no key)."""
    return str(to_checksum_address(keccak256(ORG_ADDRESS_DOMAIN + org_id.bytes)[12:]))


def metadata_hash(ds: Dataset, version: DatasetVersion | None) -> str:
    """``sha256`` (hex) of what a buyer relies on when it buys from ``ds``."""
    record = {
        "v": 1,
        "dataset_id": str(ds.id),
        "title": ds.title,
        "description": ds.description,
        "keywords": list(ds.keywords),
        "themes": list(ds.themes),
        "publisher": ds.publisher,
        "license": ds.license,
        "temporal": [
            ds.temporal_start.isoformat() if ds.temporal_start else None,
            ds.temporal_end.isoformat() if ds.temporal_end else None,
        ],
        "spatial_coverage": list(ds.spatial_coverage),
        "languages": list(ds.languages),
        "schema_hash": ds.schema_hash,
        "content_hash": version.content_hash if version else None,
        "pricing_plan": ds.pricing_plan,
        "reference_price_minor": ds.reference_price_minor,
        "currency": ds.currency,
    }
    return hashlib.sha256(canonical_json(record)).hexdigest()


def dataset_shares(ds: Dataset) -> list[tuple[uuid.UUID, int]]:
    """Who earns a dataset's revenue, in basis points, provider first.

    The provider has the rest of 10,000 and, as the Settlement contract pays the
    first payee, any rounding remainder; its co-owners follow.
    """
    co = [
        (uuid.UUID(str(s["organisation_id"])), int(s["bps"])) for s in ds.revenue_shares
    ]
    return [(ds.organisation_id, pricing.TOTAL_BPS - sum(b for _, b in co)), *co]


def asset_shares(ds: Dataset) -> list[dict[str, Any]]:
    """The revenue shares of a dataset's token: payee record addresses and bps."""
    return [{"payee": org_address(org), "bps": bps} for org, bps in dataset_shares(ds)]


def trade_record(trade: Trade) -> dict[str, Any]:
    """The canonical record a trade hash commits to."""
    return {
        "v": 1,
        "trade_id": str(trade.id),
        "job_id": str(trade.job_id) if trade.job_id else None,
        "dataset_id": str(trade.dataset_id),
        "token_id": str(token_id_of(trade.dataset_id)),
        "buyer_id": str(trade.buyer_id),
        "buyer_address": trade.buyer_address,
        "amount_minor": trade.amount_minor,
        "fee_minor": trade.fee_minor,
        "currency": trade.currency,
        "created_at": _iso(trade.created_at),
    }


def payout_record(payout: Payout) -> dict[str, Any]:
    """The canonical record a payout leaf commits to (no row data, only money)."""
    return {
        "v": 1,
        "settlement_id": str(payout.settlement_id),
        "payee": org_address(payout.payee_id),
        "method": payout.method,
        "currency": payout.currency,
        "amount": payout.amount_minor,
    }


def payout_leaf(payout: Payout) -> bytes:
    """``keccak256`` of a payout's canonical record: a leaf of its run's root."""
    return keccak256(canonical_json(payout_record(payout)))


def payouts_root(payouts: Sequence[Payout]) -> MerkleTree:
    """The Merkle tree of a run's payouts, in payee and method order."""
    ordered = sorted(payouts, key=lambda p: (str(p.payee_id), p.method))
    return MerkleTree.build(payout_leaf(p) for p in ordered)


def trade_hash(record: dict[str, Any]) -> str:
    """``keccak256`` (hex, no prefix) of a canonical trade record."""
    return keccak256(canonical_json(record)).hex()


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


class LedgerRecorder:
    """Writes the outbox events of business changes into the caller's session.

    Nothing is committed here: the caller commits the change and its events in
    one transaction.
    """

    def __init__(self, session: Session) -> None:
        self.session = session

    def sync_asset(self, ds: Dataset) -> LedgerEvent | None:
        """Owe the chain ``ds``'s registration or update, if anything changed.

        A dataset is registered when first listed; afterwards every change of its
        metadata or policy hash is an update with the next version (also while
        delisted: the token stays, its record follows the dataset).
        """
        asset = self.session.get(LedgerAsset, ds.id)
        if asset is None and ds.status != DatasetStatus.LISTED.value:
            return None
        version = (
            self.session.get(DatasetVersion, ds.live_version_id)
            if ds.live_version_id
            else None
        )
        meta = metadata_hash(ds, version)
        now = utcnow()
        if asset is None:
            owner = org_address(ds.organisation_id)
            asset = LedgerAsset(
                dataset_id=ds.id,
                owner_id=ds.organisation_id,
                owner_address=owner,
                metadata_hash=meta,
                policy_hash=ds.policy_hash,
                version=1,
                shares=asset_shares(ds),
                updated_at=now,
            )
            self.session.add(asset)
            return self._event(
                LedgerEventKind.ASSET_REGISTER,
                str(ds.id),
                {
                    "dataset_id": str(ds.id),
                    "owner": owner,
                    "metadata_hash": meta,
                    "policy_hash": ds.policy_hash,
                    "shares": asset.shares,
                },
            )
        if (asset.metadata_hash, asset.policy_hash) == (meta, ds.policy_hash):
            return None
        expected = asset.version
        asset.metadata_hash = meta
        asset.policy_hash = ds.policy_hash
        asset.version = expected + 1
        asset.updated_at = now
        self.session.add(asset)
        return self._event(
            LedgerEventKind.ASSET_UPDATE,
            str(ds.id),
            {
                "dataset_id": str(ds.id),
                "metadata_hash": meta,
                "policy_hash": ds.policy_hash,
                "expected_version": expected,
                "version": expected + 1,
            },
        )

    def record_release(
        self,
        job: Job,
        ds: Dataset,
        signed: SignedReceipt,
        *,
        amount_minor: int,
        fee_minor: int,
    ) -> Trade:
        """Owe the chain a released computation: its trade and its receipt leaf.

        The trade is what the job was charged (its capture), with the exchange's
        fee inside it; a free job is a trade of zero.
        """
        trade = self._trade(
            job.id, job.buyer_id, ds.id, amount_minor, fee_minor, ds.currency
        )
        self._event(
            LedgerEventKind.RECEIPT_RECORD,
            str(job.id),
            {
                "job_id": str(job.id),
                "receipt_digest": receipt_digest(signed).hex(),
                "leaf": receipt_leaf(signed).hex(),
            },
        )
        return trade

    def record_prepaid(
        self,
        buyer_id: uuid.UUID,
        ds: Dataset,
        *,
        amount_minor: int,
        fee_minor: int,
        currency: str,
    ) -> Trade:
        """Owe the chain a trade with no job: a subscription's prepaid periods."""
        return self._trade(None, buyer_id, ds.id, amount_minor, fee_minor, currency)

    def _trade(
        self,
        job_id: uuid.UUID | None,
        buyer_id: uuid.UUID,
        dataset_id: uuid.UUID,
        amount_minor: int,
        fee_minor: int,
        currency: str,
    ) -> Trade:
        trade = Trade(
            job_id=job_id,
            dataset_id=dataset_id,
            buyer_id=buyer_id,
            buyer_address=org_address(buyer_id),
            amount_minor=amount_minor,
            fee_minor=fee_minor,
            currency=currency,
            trade_hash="",
            created_at=utcnow(),
        )
        record = trade_record(trade)
        trade.trade_hash = trade_hash(record)
        self.session.add(trade)
        self._event(
            LedgerEventKind.TRADE_RECORD,
            str(trade.id),
            {"trade": record, "trade_hash": trade.trade_hash},
        )
        return trade

    def record_settlement(
        self, run_id: uuid.UUID, payouts: Sequence[Payout]
    ) -> LedgerEvent | None:
        """Owe the chain a settlement run: the root of its payout records."""
        if not payouts:
            return None
        tree = payouts_root(payouts)
        return self._event(
            LedgerEventKind.SETTLEMENT_ANCHOR,
            str(run_id),
            {
                "settlement_id": str(run_id),
                "root": tree.root.hex(),
                "count": len(payouts),
            },
        )

    def _event(
        self, kind: LedgerEventKind, subject: str, payload: dict[str, Any]
    ) -> LedgerEvent:
        now = utcnow()
        event = LedgerEvent(
            kind=kind.value,
            subject=subject,
            payload=payload,
            status=LedgerEventStatus.PENDING.value,
            created_at=now,
            updated_at=now,
        )
        self.session.add(event)
        return event


class ReceiptInclusion:
    """A receipt's place in its confirmed batch: the batch event, index, tree."""

    def __init__(
        self,
        job_id: uuid.UUID,
        record: LedgerEvent,
        batch: LedgerEvent,
        index: int,
        tree: MerkleTree,
    ) -> None:
        self.job_id = job_id
        self.record = record
        self.batch = batch
        self.index = index
        self.tree = tree


def receipt_inclusion(session: Session, job_id: uuid.UUID) -> ReceiptInclusion:
    """Locate ``job_id``'s receipt in its anchored batch and rebuild that tree.

    Raises
    ------
    NotFound
        The job has no recorded receipt.
    Conflict
        The receipt is recorded but its batch is not anchored yet.
    """
    record = session.exec(
        select(LedgerEvent).where(
            LedgerEvent.kind == LedgerEventKind.RECEIPT_RECORD.value,
            LedgerEvent.subject == str(job_id),
        )
    ).first()
    if record is None:
        raise NotFound(f"job {job_id} has no recorded receipt", code="no_receipt")
    batch = session.get(LedgerEvent, record.batch_id) if record.batch_id else None
    if batch is None or batch.status != LedgerEventStatus.CONFIRMED.value:
        raise Conflict(
            f"the receipt of job {job_id} is not anchored yet; the relay anchors "
            "receipts in batches — retry shortly",
            code="receipt_not_anchored",
        )
    members = session.exec(
        select(LedgerEvent)
        .where(LedgerEvent.batch_id == batch.id)
        .order_by(LedgerEvent.id)  # type: ignore[arg-type]
    ).all()
    leaves = [bytes.fromhex(m.payload["leaf"]) for m in members]
    index = next(i for i, m in enumerate(members) if m.id == record.id)
    return ReceiptInclusion(job_id, record, batch, index, MerkleTree.build(leaves))


_RPC_READ_METHODS = frozenset(
    {
        "eth_chainId",
        "net_version",
        "eth_blockNumber",
        "eth_call",
        "eth_getCode",
        "eth_getLogs",
        "eth_getBlockByNumber",
        "eth_getTransactionReceipt",
    }
)


class LedgerQueries:
    """Read-only ledger answers for the API: proofs, status, verification, RPC."""

    def __init__(self, session: Session, chain: LazyChain) -> None:
        self.session = session
        self.chain = chain

    def _ledger(self) -> Ledger:
        return self.chain.get().ledger

    def anchor_ref(self, batch: LedgerEvent) -> AnchorRef:
        """Where ``batch`` sits on chain (it must be confirmed)."""
        ledger = self._ledger()
        if batch.id is None or not batch.tx_hash or batch.block_number is None:
            raise Conflict(f"ledger batch {batch.id} is not confirmed on chain yet")
        contract = (
            ledger.deployment.anchor
            if batch.kind == LedgerEventKind.RECEIPTS_BATCH.value
            else ledger.deployment.settlement
        )
        return AnchorRef(
            network=ledger.deployment.network,
            chain_id=ledger.deployment.chain_id,
            contract=str(contract),
            batch_id=batch.id,
            tx_hash=batch.tx_hash,
            block_number=batch.block_number,
        )

    def proof(self, job_id: uuid.UUID) -> ReceiptProof:
        """``job_id``'s receipt inclusion proof (the caller may see the job)."""
        inclusion = receipt_inclusion(self.session, job_id)
        leaf = inclusion.tree.leaf(inclusion.index)
        return ReceiptProof(
            job_id=job_id,
            receipt_digest=inclusion.record.payload["receipt_digest"],
            leaf="0x" + leaf.hex(),
            leaf_index=inclusion.index,
            count=len(inclusion.tree),
            root="0x" + inclusion.tree.root.hex(),
            proof=["0x" + p.hex() for p in inclusion.tree.proof(inclusion.index)],
            anchor=self.anchor_ref(inclusion.batch),
        )

    def status(self) -> LedgerStatus:
        """The deployment and the outbox backlog."""
        ledger = self._ledger()
        rows = self.session.exec(
            select(LedgerEvent.kind, LedgerEvent.status, func.count()).group_by(
                LedgerEvent.kind, LedgerEvent.status
            )
        ).all()
        pending: dict[str, int] = {}
        confirmed: dict[str, int] = {}
        for kind, status, n in rows:
            target = (
                confirmed if status == LedgerEventStatus.CONFIRMED.value else pending
            )
            target[kind] = target.get(kind, 0) + int(n)
        d = ledger.deployment
        return LedgerStatus(
            network=d.network,
            chain_id=d.chain_id,
            head_block=int(ledger.registry.w3.eth.block_number),
            registry=str(d.registry),
            settlement=str(d.settlement),
            anchor=str(d.anchor),
            pending=pending,
            confirmed=confirmed,
        )

    def verify(self) -> VerifyReport:
        """Match the database against the chain (:func:`verify_ledger`)."""
        from marketplace.services.verify import verify_ledger

        return verify_ledger(self.session, self._ledger())

    def rpc(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one read-only JSON-RPC request against the exchange's chain."""
        method = request.get("method")
        rid = request.get("id")
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            raise ValidationFailed.for_field("method", "not a JSON-RPC 2.0 request")
        if method not in _RPC_READ_METHODS:
            raise ValidationFailed.for_field(
                "method",
                f"{method!r} is not a read method; allowed: "
                + ", ".join(sorted(_RPC_READ_METHODS)),
            )
        params = request.get("params", [])
        if not isinstance(params, list):
            raise ValidationFailed.for_field("params", "must be a list")
        w3 = self._ledger().registry.w3
        try:
            response = w3.provider.make_request(method, params)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - answered as JSON-RPC errors are
            message = f"{type(exc).__name__}: {exc}"[:500]
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": -32602, "message": message},
            }
        answer: dict[str, Any] = dict(response)
        result = answer.get("result")
        if isinstance(result, int):  # quantities as a node sends them
            answer["result"] = hex(result)
        answer["id"] = rid
        answer.setdefault("jsonrpc", "2.0")
        return json.loads(Web3.to_json(answer))  # type: ignore[no-any-return]

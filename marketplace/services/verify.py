"""The regulator's verifier: the database recomputed and matched to the chain.

Every asset, trade and receipt is recomputed from the database and matched against
the chain's own records.

What is checked (records whose outbox event is not confirmed yet are counted as
pending, not compared):

- **assets** — each dataset's metadata and policy hashes are recomputed from the
  dataset row and must equal what the ledger recorded, and the token on chain must
  have the recorded owner, hashes, version and shares; a token on chain unknown to
  the database is a mismatch too;
- **trades** — each trade's hash is recomputed from its row and must be in its
  batch's ``TradesRecorded`` event; when it is not, the fields that differ from the
  record that was sent are named; a hash on chain without a trade row, or a trade
  row the ledger never recorded, is reported;
- **receipts** — each batch's Merkle root is rebuilt from the recorded leaves and
  must equal the anchored root and count; each job's stored receipt must hash to
  its leaf and verify under its node's key.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlmodel import Session, col, select

from ledger import Ledger, MerkleTree, receipt_leaf
from marketplace.models import (
    Dataset,
    DatasetVersion,
    Job,
    LedgerAsset,
    LedgerEvent,
    LedgerEventKind,
    LedgerEventStatus,
    Mismatch,
    Node,
    Payout,
    Trade,
    VerifyReport,
)
from marketplace.services.ledger import (
    metadata_hash,
    payouts_root,
    token_id_of,
    trade_hash,
    trade_record,
)
from mpc_engine.policy import RightsPolicy
from mpc_engine.protocol import SignedReceipt
from mpc_engine.protocol.errors import ProtocolError

__all__ = ["verify_ledger"]

K = LedgerEventKind
CONFIRMED = LedgerEventStatus.CONFIRMED.value


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


class _Verifier:
    def __init__(self, session: Session, ledger: Ledger) -> None:
        self.session = session
        self.ledger = ledger
        self.from_block = ledger.deployment.block_number
        self.mismatches: list[Mismatch] = []
        events = session.exec(select(LedgerEvent).order_by(col(LedgerEvent.id))).all()
        self.events = list(events)
        self.by_batch: dict[int, list[LedgerEvent]] = defaultdict(list)
        for e in self.events:
            if e.batch_id is not None:
                self.by_batch[e.batch_id].append(e)

    def miss(self, kind: str, id_: object, detail: str, **fields: Any) -> None:
        self.mismatches.append(
            Mismatch(
                kind=kind,
                id=str(id_),
                field=fields.get("field"),
                database=_str(fields.get("database")),
                chain=_str(fields.get("chain")),
                detail=detail,
            )
        )

    # -- assets ------------------------------------------------------------------------

    def assets(self) -> int:
        pending = {
            e.subject
            for e in self.events
            if e.kind in (K.ASSET_REGISTER, K.ASSET_UPDATE) and e.status != CONFIRMED
        }
        registry = self.ledger.registry
        on_chain = {e.token_id: e for e in registry.get_registered(self.from_block)}
        checked = 0
        known: set[int] = set()
        for asset in self.session.exec(select(LedgerAsset)).all():
            token = token_id_of(asset.dataset_id)
            known.add(token)
            if str(asset.dataset_id) in pending:
                continue
            checked += 1
            ds = self.session.get(Dataset, asset.dataset_id)
            if ds is None:
                self.miss("asset", asset.dataset_id, "the dataset row is missing")
                continue
            version = (
                self.session.get(DatasetVersion, ds.live_version_id)
                if ds.live_version_id
                else None
            )
            meta = metadata_hash(ds, version)
            policy = RightsPolicy.model_validate(ds.policy).policy_hash()
            for name, now, recorded in (
                ("metadata_hash", meta, asset.metadata_hash),
                ("policy_hash", policy, asset.policy_hash),
            ):
                if now != recorded:
                    self.miss(
                        "asset",
                        ds.id,
                        f"the dataset's {name} recomputed from the database differs "
                        "from the one recorded on chain (changed without a record)",
                        field=name,
                        database=now,
                        chain=recorded,
                    )
            chain = registry.get_asset(token)
            if chain is None:
                self.miss("asset", ds.id, "recorded in the database, not on chain")
                continue
            expected = {
                "owner": asset.owner_address,
                "metadata_hash": "0x" + asset.metadata_hash,
                "policy_hash": "0x" + asset.policy_hash,
                "version": str(asset.version),
                "shares": str([(s["payee"], s["bps"]) for s in asset.shares]),
            }
            actual = {
                "owner": str(chain.owner),
                "metadata_hash": _hex(chain.metadata_hash),
                "policy_hash": _hex(chain.policy_hash),
                "version": str(chain.version),
                "shares": str([(str(s.payee), s.bps) for s in chain.shares]),
            }
            for name, want in expected.items():
                if actual[name] != want:
                    self.miss(
                        "asset",
                        ds.id,
                        f"the token's {name} on chain differs from the database",
                        field=name,
                        database=want,
                        chain=actual[name],
                    )
        for token, event in on_chain.items():
            if token not in known:
                self.miss(
                    "asset",
                    event.dataset_id,
                    f"token {token} is registered on chain (tx {event.tx_hash}) but "
                    "unknown to the database",
                )
        return checked

    # -- trades ------------------------------------------------------------------------

    def trades(self) -> tuple[int, int]:
        settlement = self.ledger.settlement
        chain_batches = {
            e.batch_id: e for e in settlement.get_trade_batches(self.from_block)
        }
        trades = {str(t.id): t for t in self.session.exec(select(Trade)).all()}
        recorded: set[str] = set()
        checked = batches = 0
        db_batches: set[int] = set()
        for batch in self.events:
            if batch.kind != K.TRADES_BATCH or batch.id is None:
                continue
            db_batches.add(batch.id)
            members = self.by_batch[batch.id]
            recorded.update(m.subject for m in members)
            if batch.status != CONFIRMED:
                continue
            batches += 1
            event = chain_batches.get(batch.id)
            if event is None:
                self.miss(
                    "trade_batch",
                    batch.id,
                    "confirmed in the database but not recorded on chain",
                )
                continue
            on_chain = {h.hex() for h in event.trade_hashes}
            sent = {m.payload["trade_hash"] for m in members}
            before = len(self.mismatches)
            amount = fee = 0
            for m in members:
                trade = trades.get(m.subject)
                if trade is None:
                    self.miss(
                        "trade",
                        m.subject,
                        f"recorded on chain in batch {batch.id} (tx {event.tx_hash}) "
                        "but missing from the database",
                    )
                    continue
                checked += 1
                amount += trade.amount_minor
                fee += trade.fee_minor
                record = trade_record(trade)
                if trade_hash(record) in on_chain:
                    continue
                original = m.payload["trade"]
                diffs = [k for k in record if record[k] != original.get(k)]
                if not diffs:
                    self.miss(
                        "trade",
                        trade.id,
                        f"its hash is not in batch {batch.id} on chain",
                        field="trade_hash",
                        database="0x" + trade_hash(record),
                    )
                for name in diffs:
                    self.miss(
                        "trade",
                        trade.id,
                        f"{name} differs from the value recorded on chain in batch "
                        f"{batch.id} (tx {event.tx_hash})",
                        field=name,
                        database=record[name],
                        chain=original.get(name),
                    )
            for extra in sorted(on_chain - sent):
                self.miss(
                    "trade_batch",
                    batch.id,
                    f"trade hash 0x{extra} is on chain but no trade in the database "
                    "was recorded with it",
                    chain="0x" + extra,
                )
            if len(self.mismatches) == before and (amount, fee) != (
                event.amount,
                event.fee,
            ):
                self.miss(
                    "trade_batch",
                    batch.id,
                    "the batch's totals differ from the chain's",
                    field="amount/fee",
                    database=f"{amount}/{fee}",
                    chain=f"{event.amount}/{event.fee}",
                )
        pending = {
            e.subject
            for e in self.events
            if e.kind == K.TRADE_RECORD and e.batch_id is None
        }
        for trade_id, trade in trades.items():
            if trade_id not in recorded and trade_id not in pending:
                self.miss(
                    "trade",
                    trade.id,
                    "in the database but never recorded for the chain",
                )
        for batch_id, event in chain_batches.items():
            if batch_id not in db_batches:
                self.miss(
                    "trade_batch",
                    batch_id,
                    f"recorded on chain (tx {event.tx_hash}) but unknown to the "
                    "database",
                )
        return checked, batches

    # -- receipts ----------------------------------------------------------------------

    def receipts(self) -> tuple[int, int]:
        anchor = self.ledger.anchor
        anchored = {e.batch_id: e for e in anchor.get_anchored(self.from_block)}
        checked = batches = 0
        db_batches: set[int] = set()
        for batch in self.events:
            if batch.kind != K.RECEIPTS_BATCH or batch.id is None:
                continue
            db_batches.add(batch.id)
            if batch.status != CONFIRMED:
                continue
            batches += 1
            members = self.by_batch[batch.id]
            event = anchored.get(batch.id)
            if event is None:
                self.miss(
                    "receipt_batch", batch.id, "confirmed in the database, not anchored"
                )
                continue
            root = MerkleTree.build(bytes.fromhex(m.payload["leaf"]) for m in members)
            if root.root != event.root or len(members) != event.count:
                self.miss(
                    "receipt_batch",
                    batch.id,
                    "the Merkle root rebuilt from the database's leaves differs from "
                    "the anchored root",
                    field="root",
                    database=f"{_hex(root.root)} ({len(members)} leaves)",
                    chain=f"{_hex(event.root)} ({event.count} leaves)",
                )
            for m in members:
                checked += 1
                self._receipt(m, batch.id)
        db_batches |= {
            e.id
            for e in self.events
            if e.kind == K.SETTLEMENT_ANCHOR and e.id is not None
        }
        for batch_id, event in anchored.items():
            if batch_id not in db_batches:
                self.miss(
                    "receipt_batch",
                    batch_id,
                    f"anchored on chain (tx {event.tx_hash}) but unknown to the "
                    "database",
                )
        return checked, batches

    def _receipt(self, member: LedgerEvent, batch_id: int) -> None:
        job = self.session.get(Job, uuid.UUID(member.subject))
        if job is None or job.receipt is None:
            self.miss(
                "receipt",
                member.subject,
                f"anchored in batch {batch_id} but missing from the database",
            )
            return
        signed = SignedReceipt.model_validate(job.receipt)
        leaf = receipt_leaf(signed).hex()
        if leaf != member.payload["leaf"]:
            self.miss(
                "receipt",
                job.id,
                f"the stored receipt differs from the one anchored in batch {batch_id}",
                field="receipt",
                database="0x" + leaf,
                chain="0x" + member.payload["leaf"],
            )
            return
        node = self.session.get(Node, job.node_id)
        try:
            if node is None:
                raise ProtocolError("its node is unknown")
            signed.verify(node.public_key)
        except ProtocolError as exc:
            self.miss(
                "receipt",
                job.id,
                f"the receipt's signature does not verify: {exc}",
                field="signature",
            )

    def settlements(self) -> int:
        """Rebuild each anchored settlement run's payout root from the database."""
        anchored = {
            e.batch_id: e for e in self.ledger.anchor.get_anchored(self.from_block)
        }
        checked = 0
        for record in self.events:
            if (
                record.kind != K.SETTLEMENT_ANCHOR
                or record.status != CONFIRMED
                or record.id is None
            ):
                continue
            checked += 1
            run_id = record.payload["settlement_id"]
            event = anchored.get(record.id)
            if event is None:
                self.miss(
                    "settlement", run_id, "confirmed in the database, not anchored"
                )
                continue
            payouts = self.session.exec(
                select(Payout).where(Payout.settlement_id == uuid.UUID(run_id))
            ).all()
            tree = payouts_root(payouts) if payouts else None
            root = tree.root if tree else b""
            if root != event.root or len(payouts) != event.count:
                self.miss(
                    "settlement",
                    run_id,
                    "the payouts' Merkle root rebuilt from the database differs "
                    "from the anchored root",
                    field="payouts",
                    database=f"{_hex(root)} ({len(payouts)} payouts)",
                    chain=f"{_hex(event.root)} ({event.count} payouts)",
                )
        return checked


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def verify_ledger(session: Session, ledger: Ledger) -> VerifyReport:
    """Match every asset, trade and receipt in the database against the chain."""
    v = _Verifier(session, ledger)
    assets = v.assets()
    trades, trade_batches = v.trades()
    receipts, receipt_batches = v.receipts()
    settlements = v.settlements()
    pending = sum(
        1
        for e in v.events
        if e.status != CONFIRMED
        and (LedgerEventKind(e.kind).sendable or e.batch_id is None)
    )
    ok = not v.mismatches
    if ok:
        summary = (
            f"all {assets} assets, {trades} trades, {receipts} receipts"
            + (
                f", {settlements} settlement{'s' if settlements != 1 else ''}"
                if settlements
                else ""
            )
            + " match the chain"
        )
    else:
        summary = (
            f"{len(v.mismatches)} mismatches: "
            + "; ".join(f"{m.kind} {m.id}: {m.detail}" for m in v.mismatches[:5])
            + (" …" if len(v.mismatches) > 5 else "")
        )
    if pending:
        summary += f" ({pending} records pending in the outbox)"
    w3 = ledger.registry.w3
    return VerifyReport(
        ok=ok,
        network=ledger.deployment.network,
        chain_id=ledger.deployment.chain_id,
        head_block=int(w3.eth.block_number),
        assets=assets,
        trades=trades,
        trade_batches=trade_batches,
        receipts=receipts,
        receipt_batches=receipt_batches,
        settlements=settlements,
        pending_events=pending,
        mismatches=v.mismatches,
        summary=summary,
    )

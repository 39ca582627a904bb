"""The outbox relay: batches trades and receipts, sends each chain write once.

One pass (:meth:`Relay.run_once`):

1. **Batch.** Pending ``trade.record`` events (one currency at a time) become one
   ``trades.batch`` event of up to ``trades_per_batch`` trade hashes with per-asset
   totals; pending ``receipt.record`` events become one ``receipts.batch`` event
   whose payload is the Merkle root of up to ``receipts_per_batch`` leaves, in event
   id order. A batch is formed when it is full or its oldest record has waited
   ``max_batch_age`` (or always, with ``force``). Forming a batch and marking its
   records ``batched`` is one database transaction.
2. **Send.** Each sendable event (``asset.*``, ``*.batch``), in id order:

   a. if it was signed before (``status = signed``), its transaction is looked up;
   b. if the chain already holds its effect (asset registered at that version, batch
      recorded, root anchored), the event is confirmed from the chain's own log —
      this is what makes a crash after sending harmless;
   c. otherwise the transaction is signed and **stored with its hash before it is
      broadcast** (a crash here re-broadcasts the same bytes), broadcast, waited
      for, and the event (and its batch's records) confirmed in one transaction.

Every write is idempotent on chain as well: batch ids (the batch event's id) are
recorded at most once, registrations at most once, updates carry the version they
expect. So killing the relay at any point and running it again neither loses an
event nor records one twice (``tests/integration/test_relay_crash.py``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from sqlalchemy import update
from sqlmodel import col, select

from ledger import (
    AssetRegistered,
    AssetUpdated,
    BatchAnchored,
    Ledger,
    LedgerError,
    MerkleTree,
    SignedTx,
    TradesRecorded,
    TransactionRevertedError,
    TxReceipt,
)
from marketplace.config import Settings
from marketplace.db import Database
from marketplace.errors import ChainUnavailable
from marketplace.models import (
    LedgerEvent,
    LedgerEventKind,
    LedgerEventStatus,
    utcnow,
)
from marketplace.services.ledger import token_id_of

__all__ = ["Relay", "RelayReport", "RelayThread", "make_relay"]

log = logging.getLogger("veilx.relay")

K = LedgerEventKind
St = LedgerEventStatus

_SENDABLE = [k.value for k in K if k.sendable]


@dataclass(frozen=True, slots=True)
class RelayReport:
    """What one relay pass did."""

    batches_formed: int = 0
    sent: int = 0
    confirmed: int = 0
    already_on_chain: int = 0
    failed: int = 0

    def __add__(self, other: RelayReport) -> RelayReport:
        """Field-wise sum."""
        return RelayReport(
            *(a + b for a, b in zip(_fields(self), _fields(other), strict=True))
        )

    def __str__(self) -> str:
        """One line for logs."""
        return (
            f"{self.batches_formed} batched, {self.sent} sent, {self.confirmed} "
            f"confirmed ({self.already_on_chain} found on chain), {self.failed} failed"
        )


def _fields(r: RelayReport) -> tuple[int, ...]:
    return (r.batches_formed, r.sent, r.confirmed, r.already_on_chain, r.failed)


@dataclass(frozen=True, slots=True)
class _Landed:
    tx_hash: str
    block_number: int


class Relay:
    """Sends the outbox to the chain; safe to kill at any point and run again.

    Run one relay per database: passes are sequential, and each event's
    transaction is waited for before the next is signed, so the operator key's
    nonces stay in order across restarts.
    """

    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        *,
        trades_per_batch: int = 500,
        receipts_per_batch: int = 1_000,
        max_batch_age: timedelta = timedelta(seconds=5),
    ) -> None:
        if ledger.sender is None:
            raise ValueError("the relay needs a ledger with a signer")
        self.db = db
        self.ledger = ledger
        self.trades_per_batch = trades_per_batch
        self.receipts_per_batch = receipts_per_batch
        self.max_batch_age = max_batch_age
        self._lock = threading.Lock()

    # -- one pass --------------------------------------------------------------------

    def run_once(self, *, force: bool = False) -> RelayReport:
        """Form due batches, then send every owed event in id order."""
        with self._lock:
            formed = self.form_batches(force=force)
            report = self.send_pending()
            return RelayReport(batches_formed=formed) + report

    def flush(self) -> RelayReport:
        """Batch everything now and send it all (the demo, tests, shutdown)."""
        total = RelayReport()
        while True:
            report = self.run_once(force=True)
            total = total + report
            if report.batches_formed == 0 and report.sent == 0:
                return total

    # -- batching ----------------------------------------------------------------------

    def form_batches(self, *, force: bool = False) -> int:
        """Gather pending records into batch events; return how many were formed."""
        formed = 0
        while self._form_one(K.TRADE_RECORD, self.trades_per_batch, force):
            formed += 1
        while self._form_one(K.RECEIPT_RECORD, self.receipts_per_batch, force):
            formed += 1
        return formed

    def _form_one(self, kind: LedgerEventKind, limit: int, force: bool) -> bool:
        with self.db.session() as session:
            # Only what a batch needs, as plain rows (500 ORM entities a batch cost
            # more than the SQL); the first row is the oldest pending record.
            query = (
                select(LedgerEvent.id, LedgerEvent.payload, LedgerEvent.created_at)
                .where(LedgerEvent.kind == kind.value)
                .where(LedgerEvent.status == St.PENDING.value)
                .order_by(col(LedgerEvent.id))
                .limit(limit)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows: list[tuple[int | None, Mapping[str, Any], datetime]] = list(
                session.exec(query).all()
            )
            if not rows:
                return False
            _, first, first_at = rows[0]
            if kind is K.TRADE_RECORD:  # one currency a batch: the oldest's
                currency = first["trade"]["currency"]
                rows = [r for r in rows if r[1]["trade"]["currency"] == currency]
            due = (
                force or len(rows) >= limit or utcnow() - first_at >= self.max_batch_age
            )
            if not due:
                return False
            ids = [i for i, _, _ in rows]
            payloads = [p for _, p, _ in rows]
            if kind is K.TRADE_RECORD:
                batch_kind, payload = K.TRADES_BATCH, _trades_payload(payloads)
            else:
                batch_kind, payload = K.RECEIPTS_BATCH, _receipts_payload(payloads)
            now = utcnow()
            batch = LedgerEvent(
                kind=batch_kind.value,
                subject="",
                payload=payload,
                created_at=now,
                updated_at=now,
            )
            session.add(batch)
            session.flush()
            batch.subject = str(batch.id)  # the flush assigned it
            session.add(batch)
            session.execute(
                update(LedgerEvent)
                .where(col(LedgerEvent.id).in_(ids))
                .values(status=St.BATCHED.value, batch_id=batch.id, updated_at=now)
                # the records are not in this session: nothing to synchronise
                .execution_options(synchronize_session=False)
            )
            session.commit()
            log.info("formed %s %d of %d records", batch_kind, batch.id, len(ids))
            return True

    # -- sending ---------------------------------------------------------------------

    def send_pending(self) -> RelayReport:
        """Send (or confirm from the chain) every sendable event, in id order."""
        total = RelayReport()
        while True:
            with self.db.session() as session:
                event = session.exec(
                    select(LedgerEvent)
                    .where(col(LedgerEvent.kind).in_(_SENDABLE))
                    .where(
                        col(LedgerEvent.status).in_([St.PENDING.value, St.SIGNED.value])
                    )
                    .where(col(LedgerEvent.attempts) < 50)
                    .order_by(col(LedgerEvent.id))
                    .limit(1)
                ).first()
            if event is None:
                return total
            report = self._deliver(event)
            total = total + report
            if report.failed:
                return total  # retried on the next pass, in order

    def _deliver(self, event: LedgerEvent) -> RelayReport:
        if event.id is None:
            raise ValueError("an unsaved ledger event cannot be delivered")
        try:
            if event.status == St.SIGNED.value and event.tx_hash:
                landed = self._mined(event.tx_hash)
                if landed is not None:
                    self._confirm(event.id, landed)
                    return RelayReport(confirmed=1)
            landed = self._on_chain(event)
            if landed is not None:
                self._confirm(event.id, landed)
                return RelayReport(confirmed=1, already_on_chain=1)
            receipt = self._send(event)
        except TransactionRevertedError as exc:
            landed = self._on_chain(event)
            if landed is not None:  # lost a race with our own earlier send
                self._confirm(event.id, landed)
                return RelayReport(confirmed=1, already_on_chain=1)
            self._fail(event.id, str(exc))
            log.error("ledger event %d (%s) reverted: %s", event.id, event.kind, exc)
            return RelayReport(failed=1)
        except LedgerError as exc:
            self._fail(event.id, str(exc))
            log.warning("ledger event %d (%s) not sent: %s", event.id, event.kind, exc)
            return RelayReport(failed=1)
        self._confirm(event.id, _Landed(receipt.tx_hash, receipt.block_number))
        return RelayReport(sent=1, confirmed=1)

    def _send(self, event: LedgerEvent) -> TxReceipt:
        """Sign, store, broadcast and wait for ``event``'s transaction."""
        sender = self.ledger.sender
        if sender is None:
            raise ValueError("the relay needs a ledger with a signer")
        if event.status == St.SIGNED.value and event.raw_tx and event.tx_hash:
            try:  # the same bytes again: a crash between storing and broadcasting
                sender.broadcast(_stored(event))
                return sender.wait(event.tx_hash)
            except TransactionRevertedError:
                raise
            except LedgerError as exc:  # nonce taken or dropped: sign afresh
                log.info("re-signing ledger event %d: %s", event.id, exc)
        signed = sender.sign(self._call(event))
        with self.db.session() as session:
            session.execute(
                update(LedgerEvent)
                .where(col(LedgerEvent.id) == event.id)
                .values(
                    status=St.SIGNED.value,
                    raw_tx=signed.raw.hex(),
                    tx_hash=signed.tx_hash,
                    attempts=LedgerEvent.attempts + 1,
                    updated_at=utcnow(),
                )
            )
            session.commit()
        sender.broadcast(signed)
        return sender.wait(signed.tx_hash)

    def _call(self, event: LedgerEvent) -> Any:
        """The contract call that records ``event``."""
        p = event.payload
        kind = LedgerEventKind(event.kind)
        registry = self.ledger.registry._contract
        if kind is K.ASSET_REGISTER:
            return registry.functions.register(
                uuid.UUID(p["dataset_id"]).bytes,
                p["owner"],
                bytes.fromhex(p["metadata_hash"]),
                bytes.fromhex(p["policy_hash"]),
                [(s["payee"], s["bps"]) for s in p["shares"]],
            )
        if kind is K.ASSET_UPDATE:
            return registry.functions.updateAsset(
                token_id_of(uuid.UUID(p["dataset_id"])),
                bytes.fromhex(p["metadata_hash"]),
                bytes.fromhex(p["policy_hash"]),
                p["expected_version"],
            )
        if kind is K.TRADES_BATCH:
            return self.ledger.settlement._contract.functions.recordTrades(
                int(event.subject),
                [bytes.fromhex(h) for h in p["trade_hashes"]],
                [(int(t["token_id"]), t["amount"], t["fee"]) for t in p["totals"]],
            )
        if kind is K.RECEIPTS_BATCH:
            return self.ledger.anchor._contract.functions.anchor(
                bytes.fromhex(p["root"]), int(event.subject), p["count"]
            )
        if kind is K.SETTLEMENT_ANCHOR and event.id is not None:
            return self.ledger.anchor._contract.functions.anchor(
                bytes.fromhex(p["root"]), event.id, p["count"]
            )
        raise ValueError(f"ledger event kind {kind} is not sendable")

    def _mined(self, tx_hash: str) -> _Landed | None:
        """The block of ``tx_hash`` if it was mined successfully, else None."""
        w3 = self.ledger.registry.w3
        try:
            receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - not found (any backend's way of saying it)
            return None
        if receipt is None or receipt["status"] != 1:
            return None
        return _Landed(tx_hash, int(receipt["blockNumber"]))

    def _on_chain(self, event: LedgerEvent) -> _Landed | None:
        """Where the chain already records ``event``'s effect, if it does."""
        p = event.payload
        kind = LedgerEventKind(event.kind)
        found: Sequence[AssetRegistered | AssetUpdated | TradesRecorded | BatchAnchored]
        if kind is K.ASSET_REGISTER:
            token = token_id_of(uuid.UUID(p["dataset_id"]))
            if self.ledger.registry.get_asset(token) is None:
                return None
            found = [
                e
                for e in self.ledger.registry.get_registered(
                    from_block=self.ledger.deployment.block_number
                )
                if e.token_id == token
            ]
        elif kind is K.ASSET_UPDATE:
            token = token_id_of(uuid.UUID(p["dataset_id"]))
            asset = self.ledger.registry.get_asset(token)
            if asset is None or asset.version < p["version"]:
                return None
            found = [
                e
                for e in self.ledger.registry.get_updates(
                    from_block=self.ledger.deployment.block_number
                )
                if e.token_id == token and e.version == p["version"]
            ]
        elif kind is K.TRADES_BATCH:
            batch = int(event.subject)
            if not self.ledger.settlement.get_is_batch_recorded(batch):
                return None
            found = list(
                self.ledger.settlement.get_trade_batches(
                    from_block=self.ledger.deployment.block_number, batch_id=batch
                )
            )
        elif kind in (K.RECEIPTS_BATCH, K.SETTLEMENT_ANCHOR):
            batch = (
                int(event.subject) if kind is K.RECEIPTS_BATCH else int(event.id or 0)
            )
            if self.ledger.anchor.get_root_of(batch) is None:
                return None
            found = list(
                self.ledger.anchor.get_anchored(
                    from_block=self.ledger.deployment.block_number, batch_id=batch
                )
            )
        else:
            raise ValueError(f"ledger event kind {kind} is not sendable")
        if not found:
            raise LedgerError(
                f"the chain holds ledger event {event.id}'s effect but no log of it"
            )
        return _Landed(found[0].tx_hash, found[0].block_number)

    # -- bookkeeping -------------------------------------------------------------------

    def _confirm(self, event_id: int, landed: _Landed) -> None:
        now = utcnow()
        with self.db.session() as session:
            values: dict[str, Any] = {
                "status": St.CONFIRMED.value,
                "tx_hash": landed.tx_hash,
                "block_number": landed.block_number,
                "confirmed_at": now,
                "updated_at": now,
                "last_error": None,
            }
            session.execute(
                update(LedgerEvent)
                .where(col(LedgerEvent.id) == event_id)
                .values(**values)
            )
            session.execute(
                update(LedgerEvent)
                .where(col(LedgerEvent.batch_id) == event_id)
                .values(**values)
            )
            session.commit()

    def _fail(self, event_id: int, error: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(LedgerEvent)
                .where(col(LedgerEvent.id) == event_id)
                .values(
                    last_error=error[:2000],
                    attempts=LedgerEvent.attempts + 1,
                    updated_at=utcnow(),
                )
            )
            session.commit()


def _trades_payload(payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    hashes = []
    for p in payloads:
        trade = p["trade"]
        hashes.append(p["trade_hash"])
        total = totals[int(trade["token_id"])]
        total[0] += int(trade["amount_minor"])
        total[1] += int(trade["fee_minor"])
    return {
        "currency": payloads[0]["trade"]["currency"],
        "count": len(payloads),
        "trade_hashes": hashes,
        "totals": [
            {"token_id": str(t), "amount": a, "fee": f}
            for t, (a, f) in sorted(totals.items())
        ],
        "amount": sum(a for a, _ in totals.values()),
        "fee": sum(f for _, f in totals.values()),
    }


def _receipts_payload(payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    tree = MerkleTree.build(bytes.fromhex(p["leaf"]) for p in payloads)
    return {"root": tree.root.hex(), "count": len(payloads)}


def _stored(event: LedgerEvent) -> SignedTx:
    if event.raw_tx is None or event.tx_hash is None:
        raise ValueError(f"ledger event {event.id} has no stored transaction")
    raw = bytes.fromhex(event.raw_tx)
    nonce = int(TypedTransaction.from_bytes(HexBytes(raw)).as_dict()["nonce"])
    return SignedTx(raw=raw, tx_hash=event.tx_hash, nonce=nonce)


class RelayThread:
    """Runs :meth:`Relay.run_once` every ``interval`` seconds in a daemon thread."""

    def __init__(
        self,
        relay_factory: Callable[[], Relay],
        interval: float = 1.0,
        *,
        unavailable_interval: float = 10.0,
    ) -> None:
        self._factory = relay_factory
        self._interval = interval
        self._unavailable_interval = unavailable_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="veilx-relay", daemon=True
        )

    def start(self) -> None:
        """Start relaying."""
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current pass."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        relay: Relay | None = None
        unavailable: str | None = None
        while not self._stop.is_set():
            wait = self._interval
            try:
                relay = relay or self._factory()
                report = relay.run_once()
                unavailable = None
                if report.batches_formed or report.sent or report.failed:
                    log.info("relay: %s", report)
            except ChainUnavailable as exc:
                # Another process holds the embedded chain (several API workers
                # without VEILX_CHAIN_URL), or the node is down: say so once.
                if exc.detail != unavailable:
                    log.warning("ledger relay waiting for the chain: %s", exc.detail)
                unavailable = exc.detail
                wait = max(self._interval, self._unavailable_interval)
            except Exception:  # logged; the next pass retries
                log.exception("ledger relay pass failed; retrying")
            self._stop.wait(wait)


def make_relay(db: Database, ledger: Ledger, settings: Settings) -> Relay:
    """A relay with the batch sizes and age of ``settings``."""
    return Relay(
        db,
        ledger,
        trades_per_batch=settings.ledger_trades_per_batch,
        receipts_per_batch=settings.ledger_receipts_per_batch,
        max_batch_age=timedelta(seconds=settings.ledger_batch_max_age_seconds),
    )

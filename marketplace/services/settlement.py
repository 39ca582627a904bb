"""Settlement: the operator pays providers for a period, with statements.

A run settles every captured charge of one currency whose capture falls in
``[period_start, period_end)`` and whose money was collected (credits always;
a card once its entitlement was finalised — a charge still waiting for its card
capture is left to a later run). Each charge's net was split among the
dataset's payees when it was captured; a run adds those parts per payee and
funding method into :class:`~marketplace.models.Payout` rows, marks the charges
(a charge is settled once, whatever runs overlap), and pays each payout:

- card money — a Stripe transfer to the payee's connected account in the
  run's transfer group (the exchange's fee simply stays on the platform);
- credits — the payee's on-chain credit, recorded by the ledger's trades.

The run's payouts are anchored on chain (the Merkle root of their records, through
the ledger outbox), so the regulator's ``veilx verify`` rebuilds each run's root
from the database and names a run whose payouts were changed.

Each payment posts ``Dr payable:<payee>  Cr cash:<method>``, so payouts can
never exceed payables (a payable cannot go negative). Payments are idempotent
(the key names the payout) and running the same period again resumes the
payouts left unpaid, so a crash mid-run is finished by running it again.
"""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from marketplace.errors import Conflict, NotFound, ValidationFailed
from marketplace.models import (
    Charge,
    ChargeStatus,
    Entitlement,
    JournalEntry,
    Order,
    Organisation,
    OrgWallet,
    Payout,
    PayoutAccount,
    PayoutPublic,
    Role,
    SettlementCreate,
    SettlementRun,
    SettlementRunPublic,
    StatementLine,
    StatementPublic,
    utcnow,
)
from marketplace.payments import PaymentError, PaymentProvider
from marketplace.services.identity import Caller
from marketplace.services.journal import (
    Journal,
    cash_account,
    dialect_insert,
    payable_account,
)
from marketplace.services.ledger import LedgerRecorder, org_address
from marketplace.services.trading import Billing, TradingConfig

__all__ = ["STATEMENT_CSV_COLUMNS", "SettlementService"]

log = logging.getLogger("veilx.settlement")

STATEMENT_CSV_COLUMNS = (
    "captured_at",
    "dataset_id",
    "job_id",
    "gross_minor",
    "fee_minor",
    "share_bps",
    "payee_minor",
)


class SettlementService:
    """Settlement runs, payouts and statements."""

    def __init__(
        self,
        session: Session,
        config: TradingConfig,
        providers: Mapping[str, PaymentProvider],
    ) -> None:
        self.session = session
        self.config = config
        self.providers = providers

    def run(self, caller: Caller, body: SettlementCreate) -> SettlementRunPublic:
        """Settle a period (idempotent: the same period again resumes or answers).

        Raises
        ------
        ValidationFailed
            The period is empty or not over yet.
        """
        if body.period_end <= body.period_start:
            raise ValidationFailed.for_field("period_end", "must be after period_start")
        if body.period_end > utcnow():
            raise ValidationFailed.for_field(
                "period_end", "the period is not over yet; settle past periods only"
            )
        billing = Billing(self.session, self.config, self.providers)
        billing.void_ended_jobs()
        billing.expire()
        billing.finalize_due()
        run = self.session.exec(
            select(SettlementRun).where(
                SettlementRun.currency == body.currency,
                SettlementRun.period_start == body.period_start,
                SettlementRun.period_end == body.period_end,
            )
        ).first()
        if run is None:
            run = self._create(caller, body)
        self._pay(run)
        return self._public(run)

    def _create(self, caller: Caller, body: SettlementCreate) -> SettlementRun:
        table = SettlementRun.__table__  # type: ignore[attr-defined]
        run_id = uuid.uuid4()
        created = self.session.execute(
            dialect_insert(self.session)(table)
            .values(
                id=run_id,
                currency=body.currency,
                period_start=body.period_start,
                period_end=body.period_end,
                status="paying",
                charges=0,
                gross_minor=0,
                fee_minor=0,
                payout_minor=0,
                created_by=caller.organisation_id,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(
                index_elements=["currency", "period_start", "period_end"]
            )
            .returning(table.c.id)
        ).first()
        if created is None:
            raise Conflict(
                "this period is being settled by another request; run it again",
                code="settlement_contended",
            )
        run = self.session.get(SettlementRun, run_id)
        if run is None:  # just inserted
            raise NotFound(f"settlement run {run_id} not found")
        charges = list(
            self.session.exec(
                select(Charge)
                .join(Entitlement, col(Entitlement.id) == col(Charge.entitlement_id))
                .where(
                    Charge.status == ChargeStatus.CAPTURED.value,
                    col(Charge.settlement_id).is_(None),
                    Charge.currency == body.currency,
                    col(Charge.captured_at) >= body.period_start,
                    col(Charge.captured_at) < body.period_end,
                    (col(Charge.payment_method) == "credits")
                    | col(Entitlement.finalized_at).is_not(None)
                    # captured up front (card subscriptions): the money is in
                    | (col(Entitlement.payment_captured_minor) > 0),
                )
                .order_by(col(Charge.captured_at), col(Charge.id))
            )
        )
        parts: dict[tuple[uuid.UUID, str], list[dict[str, Any]]] = defaultdict(list)
        for charge in charges:
            for share in charge.shares:
                parts[(uuid.UUID(share["payee"]), charge.payment_method)].append(
                    {
                        "captured_at": charge.captured_at.isoformat()
                        if charge.captured_at
                        else None,
                        "dataset_id": str(charge.dataset_id),
                        "entitlement_id": str(charge.entitlement_id),
                        "job_id": str(charge.job_id) if charge.job_id else None,
                        "gross_minor": charge.amount_minor,
                        "fee_minor": charge.fee_minor,
                        "share_bps": int(share["bps"]),
                        "payee_minor": int(share["amount_minor"]),
                    }
                )
        if charges:
            marked = self.session.execute(
                update(Charge)
                .where(
                    col(Charge.id).in_([c.id for c in charges]),
                    col(Charge.settlement_id).is_(None),
                )
                .values(settlement_id=run.id)
                .execution_options(synchronize_session=False)
            )
            if marked.rowcount != len(charges):  # type: ignore[attr-defined]
                self.session.rollback()
                raise Conflict(
                    "another settlement run took some of these charges; run again",
                    code="settlement_contended",
                )
        for (payee, method), lines in sorted(parts.items(), key=lambda kv: str(kv[0])):
            self.session.add(
                Payout(
                    settlement_id=run.id,
                    payee_id=payee,
                    currency=run.currency,
                    amount_minor=sum(line["payee_minor"] for line in lines),
                    method=method,
                    status="pending",
                    lines=lines,
                )
            )
        self.session.flush()
        LedgerRecorder(self.session).record_settlement(
            run.id,
            self.session.exec(
                select(Payout).where(Payout.settlement_id == run.id)
            ).all(),
        )
        run.charges = len(charges)
        run.gross_minor = sum(c.amount_minor for c in charges)
        run.fee_minor = sum(c.fee_minor for c in charges)
        run.payout_minor = sum(
            line["payee_minor"] for lines in parts.values() for line in lines
        )
        self.session.add(run)
        self.session.commit()
        return run

    def _pay(self, run: SettlementRun) -> None:
        pending = list(
            self.session.exec(
                select(Payout)
                .where(Payout.settlement_id == run.id, Payout.status != "paid")
                .order_by(col(Payout.id))
            )
        )
        for payout in pending:
            try:
                self._pay_one(run, payout)
            except PaymentError as exc:
                self.session.rollback()
                payout.status = "failed"
                payout.reference = str(exc)[:255]
                self.session.add(payout)
                self.session.commit()
                log.warning("payout %s failed: %s", payout.id, exc)
        left = self.session.exec(
            select(Payout.id).where(
                Payout.settlement_id == run.id, Payout.status != "paid"
            )
        ).first()
        run.status = "paying" if left else "completed"
        run.completed_at = None if left else utcnow()
        self.session.add(run)
        self.session.commit()

    def _pay_one(self, run: SettlementRun, payout: Payout) -> None:
        if payout.amount_minor == 0:
            reference = "nothing to pay"
        elif payout.method == "stripe":
            account = self.session.get(PayoutAccount, payout.payee_id)
            if account is None:
                payout.status = "blocked"
                payout.reference = "no Stripe connected account for this payee"
                self.session.add(payout)
                self.session.commit()
                return
            single = self._stripe_transfers(run, payout, account.stripe_account_id)
            if single is None:  # one journal entry per transfer, posted
                payout.status = "paid"
                payout.reference = self._transfer_refs(payout)
                payout.paid_at = utcnow()
                self.session.add(payout)
                self.session.commit()
                return
            reference = single
        elif payout.method == "onchain":
            wallet = self.session.get(OrgWallet, payout.payee_id)
            onchain = self.providers.get("onchain")
            if wallet is None or onchain is None:
                payout.status = "blocked"
                payout.reference = (
                    "no wallet registered for this payee"
                    if wallet is None
                    else "onchain payments are not configured"
                )
                self.session.add(payout)
                self.session.commit()
                return
            transfer = onchain.transfer(
                destination=wallet.address,
                amount_minor=payout.amount_minor,
                currency=payout.currency,
                group=f"settlement_{run.id}",
                idempotency_key=f"payout_{payout.id}",
            )
            reference = f"escrow payout {transfer.reference} to {wallet.address}"
        else:
            reference = f"on-chain credit to {org_address(payout.payee_id)}"
        Journal(self.session).post(
            f"payout:{payout.id}",
            "payout",
            [
                (
                    payable_account(payout.payee_id, payout.currency),
                    payout.amount_minor,
                ),
                (cash_account(payout.method, payout.currency), -payout.amount_minor),
            ],
            memo=reference,
        )
        payout.status = "paid"
        payout.reference = reference
        payout.paid_at = utcnow()
        self.session.add(payout)
        self.session.commit()

    def _stripe_transfers(
        self, run: SettlementRun, payout: Payout, destination: str
    ) -> str | None:
        """Pay a card payout as one transfer per entitlement's PaymentIntent.

        Each transfer names its PaymentIntent's charge as ``source_transaction``,
        so it is paid from that charge's funds even while they are still pending
        (days, at Stripe). Each is journaled (``payout:<payout>:<entitlement>``)
        and committed as soon as Stripe made it, so a re-run — even after Stripe
        forgot the idempotency key (24 h) — pays only the transfers not made yet;
        returns ``None`` then. Payouts recorded before lines named their
        entitlement are paid as one transfer from the balance (its reference is
        returned for the caller to journal).
        """
        provider = self.providers["stripe"]
        group = f"settlement_{run.id}"
        by_ent: dict[str, int] = defaultdict(int)
        for line in payout.lines:
            by_ent[str(line.get("entitlement_id") or "")] += int(line["payee_minor"])
        if "" in by_ent:
            return provider.transfer(
                destination=destination,
                amount_minor=payout.amount_minor,
                currency=payout.currency,
                group=group,
                idempotency_key=f"payout_{payout.id}",
            ).reference
        sources = {
            str(ent_id): ref
            for ent_id, ref in self.session.exec(
                select(Entitlement.id, Order.payment_reference)
                .join(Order, col(Order.id) == col(Entitlement.order_id))
                .where(col(Entitlement.id).in_([uuid.UUID(e) for e in by_ent]))
            )
        }
        journal = Journal(self.session)
        for ent_id, amount in sorted(by_ent.items()):
            entry = f"payout:{payout.id}:{ent_id}"
            if amount <= 0 or self._posted(entry):
                continue
            transfer = provider.transfer(
                destination=destination,
                amount_minor=amount,
                currency=payout.currency,
                group=group,
                idempotency_key=f"payout_{payout.id}_{ent_id}",
                source_payment=sources.get(ent_id),
            )
            journal.post(
                entry,
                "payout",
                [
                    (payable_account(payout.payee_id, payout.currency), amount),
                    (cash_account(payout.method, payout.currency), -amount),
                ],
                memo=transfer.reference,
            )
            self.session.commit()
        return None

    def _posted(self, reference: str) -> bool:
        return (
            self.session.exec(
                select(JournalEntry.id).where(JournalEntry.reference == reference)
            ).first()
            is not None
        )

    def _transfer_refs(self, payout: Payout) -> str:
        """The payout's Stripe transfers, as its journal entries name them."""
        memos = list(
            self.session.exec(
                select(JournalEntry.memo)
                .where(col(JournalEntry.reference).startswith(f"payout:{payout.id}:"))
                .order_by(col(JournalEntry.reference))
            )
        )
        if len(memos) == 1:
            return str(memos[0])
        return f"{len(memos)} transfers: {', '.join(map(str, memos))}"[:255]

    # -- reading ----------------------------------------------------------------------

    def runs(self, caller: Caller) -> list[SettlementRunPublic]:
        """Every run (operator, regulator), newest period first."""
        rows = self.session.exec(
            select(SettlementRun).order_by(col(SettlementRun.period_end).desc())
        )
        return [self._public(run) for run in rows]

    def get(self, caller: Caller, run_id: uuid.UUID) -> SettlementRunPublic:
        """One run."""
        return self._public(self._load(run_id))

    def statement(
        self, caller: Caller, run_id: uuid.UUID, payee_id: uuid.UUID
    ) -> StatementPublic:
        """A payee's statement for a run: to the payee, the operator, the regulator."""
        overseer = caller.has_any({Role.OPERATOR, Role.REGULATOR})
        if not overseer and caller.organisation_id != payee_id:
            raise NotFound(f"no statement of {payee_id} in run {run_id}")
        run = self._load(run_id)
        payouts = list(
            self.session.exec(
                select(Payout).where(
                    Payout.settlement_id == run.id, Payout.payee_id == payee_id
                )
            )
        )
        if not payouts and self.session.get(Organisation, payee_id) is None:
            raise NotFound(f"no statement of {payee_id} in run {run_id}")
        lines = sorted(
            (
                StatementLine(
                    captured_at=datetime.fromisoformat(line["captured_at"]),
                    dataset_id=uuid.UUID(line["dataset_id"]),
                    job_id=uuid.UUID(line["job_id"]) if line["job_id"] else None,
                    gross_minor=line["gross_minor"],
                    fee_minor=line["fee_minor"],
                    share_bps=line["share_bps"],
                    payee_minor=line["payee_minor"],
                )
                for payout in payouts
                for line in payout.lines
            ),
            key=lambda line: (line.captured_at, str(line.job_id)),
        )
        return StatementPublic(
            settlement_id=run.id,
            payee_id=payee_id,
            currency=run.currency,
            period_start=run.period_start,
            period_end=run.period_end,
            gross_minor=sum(line.gross_minor for line in lines),
            fee_minor=sum(line.fee_minor for line in lines),
            payout_minor=sum(line.payee_minor for line in lines),
            lines=lines,
        )

    @staticmethod
    def statement_csv(statement: StatementPublic) -> str:
        """A statement as CSV: one row per charge, then a total row."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(STATEMENT_CSV_COLUMNS)
        for line in statement.lines:
            writer.writerow(
                [
                    line.captured_at.isoformat(),
                    line.dataset_id,
                    line.job_id or "",
                    line.gross_minor,
                    line.fee_minor,
                    line.share_bps,
                    line.payee_minor,
                ]
            )
        writer.writerow(
            [
                "total",
                "",
                "",
                statement.gross_minor,
                statement.fee_minor,
                "",
                statement.payout_minor,
            ]
        )
        return out.getvalue()

    def _load(self, run_id: uuid.UUID) -> SettlementRun:
        run = self.session.get(SettlementRun, run_id)
        if run is None:
            raise NotFound(f"settlement run {run_id} not found")
        return run

    def _public(self, run: SettlementRun) -> SettlementRunPublic:
        payouts = self.session.exec(
            select(Payout)
            .where(Payout.settlement_id == run.id)
            .order_by(col(Payout.payee_id), col(Payout.method))
        )
        return SettlementRunPublic(
            id=run.id,
            currency=run.currency,
            period_start=run.period_start,
            period_end=run.period_end,
            status=run.status,
            charges=run.charges,
            gross_minor=run.gross_minor,
            fee_minor=run.fee_minor,
            payout_minor=run.payout_minor,
            payouts=[
                PayoutPublic(
                    payee_id=p.payee_id,
                    amount_minor=p.amount_minor,
                    currency=p.currency,
                    method=p.method,
                    status=p.status,
                    reference=p.reference,
                )
                for p in payouts
            ],
            completed_at=run.completed_at,
        )

"""The money journal: double entry, exactly-once, balances that cannot go negative.

Every movement is one :class:`~marketplace.models.JournalEntry` whose lines sum to
zero per currency (debits positive, credits negative). An entry's ``reference``
is unique, so posting the same movement twice — a retried request, a webhook
delivered again, a reconciliation after a crash — records it once.

Accounts (``code`` — normal side — what it is)::

    cash:<method>:<CUR>    debit   money the exchange holds through a provider
    auth:<entitlement>     debit   a card authorisation not yet captured
    funds:<org>:<CUR>      credit  a buyer's prepaid credits
    hold:<entitlement>     credit  money held for an entitlement (escrow)
    payable:<org>:<CUR>    credit  what the exchange owes a provider (or co-owner)
    fees:<CUR>             credit  the exchange's fees earned
    surcharges:<CUR>       credit  payment-method surcharges collected

No account may go negative: each line updates the account's balance with one
conditional ``UPDATE … WHERE balance + delta >= 0``, so two processes spending
the same credits cannot both succeed; the loser gets
:class:`InsufficientFunds` and its whole transaction is rolled back by the
caller. ``balance_minor`` is a projection of the lines; :func:`check_journal`
recomputes it from them.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from marketplace.errors import PaymentRequired
from marketplace.models import Account, JournalEntry, JournalLine, utcnow

__all__ = [
    "AccountRef",
    "InsufficientFunds",
    "Journal",
    "JournalCheck",
    "auth_account",
    "cash_account",
    "check_journal",
    "dialect_insert",
    "fees_account",
    "funds_account",
    "hold_account",
    "payable_account",
    "surcharges_account",
]


class InsufficientFunds(PaymentRequired):
    """A line would take an account below zero."""

    code = "insufficient_funds"

    def __init__(self, account: str, balance: int, needed: int) -> None:
        super().__init__(
            f"account {account} holds {balance} minor units; this needs {needed}"
        )
        self.account = account
        self.balance = balance
        self.needed = needed


@dataclass(frozen=True)
class AccountRef:
    """An account to post to, created on first use."""

    code: str
    kind: str
    currency: str
    debit_normal: bool
    organisation_id: uuid.UUID | None = None


def cash_account(method: str, currency: str) -> AccountRef:
    """Money the exchange holds through a payment ``method``."""
    return AccountRef(f"cash:{method}:{currency}", "cash", currency, True)


def auth_account(entitlement_id: uuid.UUID, currency: str) -> AccountRef:
    """A card authorisation for an entitlement, not yet captured."""
    return AccountRef(f"auth:{entitlement_id}", "authorization", currency, True)


def funds_account(org_id: uuid.UUID, currency: str) -> AccountRef:
    """A buyer's prepaid credits."""
    return AccountRef(
        f"funds:{org_id}:{currency}", "buyer_funds", currency, False, org_id
    )


def hold_account(entitlement_id: uuid.UUID, currency: str) -> AccountRef:
    """Money held in escrow for an entitlement."""
    return AccountRef(f"hold:{entitlement_id}", "hold", currency, False)


def payable_account(org_id: uuid.UUID, currency: str) -> AccountRef:
    """What the exchange owes a provider organisation."""
    return AccountRef(
        f"payable:{org_id}:{currency}", "payable", currency, False, org_id
    )


def fees_account(currency: str) -> AccountRef:
    """The exchange's fees earned."""
    return AccountRef(f"fees:{currency}", "fees", currency, False)


def surcharges_account(currency: str) -> AccountRef:
    """Payment-method surcharges collected."""
    return AccountRef(f"surcharges:{currency}", "surcharges", currency, False)


def dialect_insert(session: Session) -> Any:
    """The dialect's ``INSERT`` (with ``ON CONFLICT``) for the session's engine."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert
    return sqlite_insert


class Journal:
    """Posts balanced entries inside the caller's transaction (never commits)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def post(
        self,
        reference: str,
        kind: str,
        lines: Sequence[tuple[AccountRef, int]],
        *,
        memo: str = "",
    ) -> JournalEntry | None:
        """Post one entry; ``None`` if ``reference`` was posted before.

        ``lines`` are (account, amount): debits positive, credits negative; zero
        amounts are dropped.

        Raises
        ------
        ValueError
            The lines do not balance per currency, or mix an account's currency.
        InsufficientFunds
            A line would take an account below zero (nothing is posted; the
            caller must roll back its transaction).
        """
        kept = [(ref, amount) for ref, amount in lines if amount != 0]
        totals: dict[str, int] = defaultdict(int)
        for ref, amount in kept:
            totals[ref.currency] += amount
        unbalanced = {c: t for c, t in totals.items() if t != 0}
        if unbalanced:
            raise ValueError(f"entry {reference} does not balance: {unbalanced}")
        # Insert-or-nothing on the unique reference: a concurrent post of the same
        # movement loses here, without a savepoint (SQLite's are not reliable
        # under pysqlite's transaction handling).
        self.session.flush()
        table = JournalEntry.__table__  # type: ignore[attr-defined]
        created = self.session.execute(
            dialect_insert(self.session)(table)
            .values(reference=reference, kind=kind, memo=memo, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["reference"])
            .returning(table.c.id)
        ).first()
        if created is None:
            return None  # posted before, or by a concurrent request just now
        entry_id = int(created[0])
        ordered = sorted(kept, key=lambda line: line[0].code)  # one lock order
        for ref, amount in ordered:
            self._apply(ref, amount)
        if ordered:
            lines_table = JournalLine.__table__  # type: ignore[attr-defined]
            self.session.execute(
                lines_table.insert().values(
                    [
                        {
                            "entry_id": entry_id,
                            "account": ref.code,
                            "currency": ref.currency,
                            "amount_minor": amount,
                        }
                        for ref, amount in ordered
                    ]
                )
            )
        return JournalEntry(id=entry_id, reference=reference, kind=kind, memo=memo)

    def balance(self, ref: AccountRef) -> int:
        """An account's balance on its normal side (0 if never used)."""
        value = self.session.exec(
            select(Account.balance_minor).where(Account.code == ref.code)
        ).first()
        return int(value or 0)

    def _apply(self, ref: AccountRef, amount: int) -> None:
        """Move one account's balance in one statement; create it on first use.

        A credit to the balance is an upsert (insert the account with the amount,
        or add to it); a debit is a conditional ``UPDATE`` that refuses to go
        below zero, and an account that does not exist has nothing to debit.
        """
        delta = amount if ref.debit_normal else -amount
        table = Account.__table__  # type: ignore[attr-defined]
        if delta >= 0:
            insert = dialect_insert(self.session)(table).values(
                code=ref.code,
                kind=ref.kind,
                currency=ref.currency,
                organisation_id=ref.organisation_id,
                debit_normal=ref.debit_normal,
                allow_negative=False,
                balance_minor=delta,
            )
            moved = self.session.execute(
                insert.on_conflict_do_update(
                    index_elements=["code"],
                    set_={"balance_minor": table.c.balance_minor + delta},
                    where=table.c.currency == ref.currency,
                ).returning(table.c.code)
            ).first()
            if moved is not None:
                return
        else:
            result = self.session.execute(
                update(Account)
                .where(
                    col(Account.code) == ref.code,
                    col(Account.currency) == ref.currency,
                    col(Account.allow_negative)
                    | (col(Account.balance_minor) + delta >= 0),
                )
                .values(balance_minor=col(Account.balance_minor) + delta)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return
        found = self.session.exec(
            select(Account.balance_minor, Account.currency).where(
                Account.code == ref.code
            )
        ).first()
        if found is not None and found[1] != ref.currency:
            raise ValueError(f"account {ref.code} is in {found[1]}, not {ref.currency}")
        raise InsufficientFunds(ref.code, int(found[0]) if found else 0, -delta)


@dataclass(frozen=True)
class JournalCheck:
    """What :func:`check_journal` found; ``ok`` when every list is empty."""

    entries: int
    unbalanced_entries: list[int]
    drifted_accounts: list[str]
    negative_accounts: list[str]
    checked_at: str

    @property
    def ok(self) -> bool:
        """Whether the journal is consistent."""
        return not (
            self.unbalanced_entries or self.drifted_accounts or self.negative_accounts
        )


def check_journal(session: Session) -> JournalCheck:
    """Recompute every invariant of the journal from its lines.

    Each entry balances per currency; each account's stored balance equals the
    sum of its lines on its normal side; no account is negative.
    """
    unbalanced = [
        int(entry_id)
        for entry_id, _currency, total in session.exec(
            select(
                JournalLine.entry_id,
                JournalLine.currency,
                func.sum(JournalLine.amount_minor),
            ).group_by(col(JournalLine.entry_id), col(JournalLine.currency))
        )
        if int(total) != 0
    ]
    sums = {
        code: int(total)
        for code, total in session.exec(
            select(JournalLine.account, func.sum(JournalLine.amount_minor)).group_by(
                col(JournalLine.account)
            )
        )
    }
    drifted: list[str] = []
    negative: list[str] = []
    for account in session.exec(select(Account)):
        raw = sums.get(account.code, 0)
        derived = raw if account.debit_normal else -raw
        if derived != account.balance_minor:
            drifted.append(account.code)
        if derived < 0 and not account.allow_negative:
            negative.append(account.code)
    entries = int(session.exec(select(func.count()).select_from(JournalEntry)).one())
    return JournalCheck(
        entries=entries,
        unbalanced_entries=sorted(unbalanced),
        drifted_accounts=sorted(drifted),
        negative_accounts=sorted(negative),
        checked_at=utcnow().isoformat(),
    )

"""The money journal on both engines: balanced entries, exactly-once references,
balances that never go negative (also under concurrent spending), and invariants
recomputed from the lines after random sequences of movements.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlmodel import col, select

from marketplace.db import Database
from marketplace.models import Account, JournalEntry, JournalLine, Role
from marketplace.services.journal import (
    InsufficientFunds,
    Journal,
    cash_account,
    check_journal,
    fees_account,
    funds_account,
    hold_account,
    payable_account,
)
from tests.factories import create_random_org


def _org(db: Database) -> uuid.UUID:
    return create_random_org(db, Role.BUYER).org_id


def _top_up(journal: Journal, org: uuid.UUID, amount: int, ref: str) -> None:
    journal.post(
        ref,
        "top_up",
        [
            (cash_account("credits", "EUR"), amount),
            (funds_account(org, "EUR"), -amount),
        ],
    )


def test_an_entry_must_balance_per_currency(db: Database) -> None:
    org = _org(db)
    with db.session() as session:
        journal = Journal(session)
        with pytest.raises(ValueError, match="does not balance"):
            journal.post(
                "x",
                "top_up",
                [
                    (cash_account("credits", "EUR"), 100),
                    (funds_account(org, "EUR"), -99),
                ],
            )
        with pytest.raises(ValueError, match="does not balance"):
            journal.post(
                "y",
                "top_up",
                [
                    (cash_account("credits", "EUR"), 100),
                    (funds_account(org, "USD"), -100),
                ],
            )
        session.rollback()
        assert session.exec(select(JournalEntry)).all() == []


def test_a_reference_is_posted_once(db: Database) -> None:
    org = _org(db)
    with db.session() as session:
        journal = Journal(session)
        _top_up(journal, org, 500, "wire-1")
        assert (
            journal.post(
                "wire-1",
                "top_up",
                [
                    (cash_account("credits", "EUR"), 500),
                    (funds_account(org, "EUR"), -500),
                ],
            )
            is None
        )
        session.commit()
        assert journal.balance(funds_account(org, "EUR")) == 500
        assert journal.balance(cash_account("credits", "EUR")) >= 500
        lines = session.exec(
            select(JournalLine).where(
                JournalLine.account == funds_account(org, "EUR").code
            )
        ).all()
        assert [line.amount_minor for line in lines] == [-500]


def test_no_account_goes_negative(db: Database) -> None:
    org = _org(db)
    ent = uuid.uuid4()
    with db.session() as session:
        journal = Journal(session)
        _top_up(journal, org, 300, f"t-{ent}")
        session.commit()
        with pytest.raises(InsufficientFunds) as caught:
            journal.post(
                f"hold-{ent}",
                "authorize",
                [(funds_account(org, "EUR"), 301), (hold_account(ent, "EUR"), -301)],
            )
        assert caught.value.account == funds_account(org, "EUR").code
        assert caught.value.balance == 300 and caught.value.needed == 301
        session.rollback()
        assert journal.balance(funds_account(org, "EUR")) == 300
        assert (
            session.exec(
                select(JournalEntry).where(JournalEntry.reference == f"hold-{ent}")
            ).all()
            == []
        )


def test_concurrent_spending_never_overdraws(db: Database) -> None:
    """Ten holds of 100 from a balance of 500, at once: five succeed."""
    org = _org(db)
    with db.session() as session:
        _top_up(Journal(session), org, 500, f"t-{org}")
        session.commit()

    def hold(i: int) -> bool:
        with db.session() as session:
            try:
                Journal(session).post(
                    f"hold-{org}-{i}",
                    "authorize",
                    [
                        (funds_account(org, "EUR"), 100),
                        (hold_account(uuid.uuid4(), "EUR"), -100),
                    ],
                )
                session.commit()
            except InsufficientFunds:
                session.rollback()
                return False
            return True

    with ThreadPoolExecutor(10) as pool:
        won = sum(pool.map(hold, range(10)))
    assert won == 5
    with db.session() as session:
        assert Journal(session).balance(funds_account(org, "EUR")) == 0
        assert check_journal(session).ok


def test_the_check_finds_a_drifted_balance(db: Database) -> None:
    org = _org(db)
    with db.session() as session:
        _top_up(Journal(session), org, 700, f"t-{org}")
        session.commit()
        assert check_journal(session).ok
        code = funds_account(org, "EUR").code
        session.execute(
            update(Account).where(col(Account.code) == code).values(balance_minor=701)
        )
        session.commit()
        found = check_journal(session)
        assert not found.ok and found.drifted_accounts == [code]
        session.execute(
            update(Account).where(col(Account.code) == code).values(balance_minor=700)
        )
        session.commit()


_MOVES = st.lists(
    st.tuples(
        st.sampled_from(["top_up", "hold", "capture", "release", "payout"]),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=1, max_value=5_000),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(moves=_MOVES)
def test_random_movements_keep_every_invariant(
    sqlite_db: Database, moves: list[tuple[str, int, int]]
) -> None:
    """Whatever sequence is attempted: entries balance, balances match their lines,
    nothing is negative, and payouts never exceed what was payable.
    """
    org = _org(sqlite_db)
    provider = _org(sqlite_db)
    ents = [uuid.uuid4() for _ in range(3)]
    paid_out = 0
    payable_in = 0
    with sqlite_db.session() as session:
        journal = Journal(session)
        for step, (kind, which, amount) in enumerate(moves):
            ent = ents[which]
            ref = f"{org}-{step}"
            fee = amount // 10
            lines = {
                "top_up": [
                    (cash_account("credits", "EUR"), amount),
                    (funds_account(org, "EUR"), -amount),
                ],
                "hold": [
                    (funds_account(org, "EUR"), amount),
                    (hold_account(ent, "EUR"), -amount),
                ],
                "capture": [
                    (hold_account(ent, "EUR"), amount),
                    (payable_account(provider, "EUR"), -(amount - fee)),
                    (fees_account("EUR"), -fee),
                ],
                "release": [
                    (hold_account(ent, "EUR"), amount),
                    (funds_account(org, "EUR"), -amount),
                ],
                "payout": [
                    (payable_account(provider, "EUR"), amount),
                    (cash_account("credits", "EUR"), -amount),
                ],
            }[kind]
            try:
                journal.post(ref, kind, lines)
                session.commit()
            except InsufficientFunds:
                session.rollback()
                continue
            if kind == "payout":
                paid_out += amount
            if kind == "capture":
                payable_in += amount - fee
        found = check_journal(session)
        assert found.ok, found
        assert paid_out <= payable_in
        assert (
            journal.balance(payable_account(provider, "EUR")) == payable_in - paid_out
        )

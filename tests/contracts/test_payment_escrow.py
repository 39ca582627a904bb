"""PaymentEscrow: deposits, holds, captures, cancels, refunds, payouts, withdrawals.

Also fees, and the SettlementToken it is paid in on the embedded chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.contract import Contract

from .conftest import deploy, new_chain, reverts_with, role, send

ZERO = "0x" + "00" * 20
HELD, CAPTURED, CANCELED = 1, 2, 3
FUNDS = 1_000_000


@dataclass
class Env:
    w3: Web3
    token: Contract
    esc: Contract
    admin: str
    op: str
    buyer: str
    payee: str
    stranger: str


def _id(text: str) -> bytes:
    return keccak(text=text)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    w3 = new_chain()
    admin, op, buyer, payee, stranger = w3.eth.accounts[:5]
    token = deploy(w3, "SettlementToken", "Veilx Euro", "vEUR", 2, admin)
    esc = deploy(w3, "PaymentEscrow", token.address, admin)
    send(esc.functions.grantRole(role(esc, "OPERATOR_ROLE"), op), admin)
    for who in (buyer, stranger):
        send(token.functions.mint(who, FUNDS * 10), admin)
        send(token.functions.approve(esc.address, 2**256 - 1), who)
    send(esc.functions.deposit(buyer, FUNDS), buyer)
    yield Env(w3, token, esc, admin, op, buyer, payee, stranger)


def _accounted(e: Env, accounts: list[str]) -> int:
    f = e.esc.functions
    balances = sum(f.balanceOf(a).call() for a in accounts)
    return int(balances + f.held().call() + f.captured().call())


def test_the_token_counts_minor_units_and_only_the_minter_mints(env: Env) -> None:
    assert env.token.functions.decimals().call() == 2
    assert env.token.functions.symbol().call() == "vEUR"
    minter = role(env.token, "MINTER_ROLE")
    reverts_with(
        env.token.functions.mint(env.stranger, 1),
        env.stranger,
        "AccessControlUnauthorizedAccount",
        env.stranger.lower(),
        minter,
    )


def test_a_hold_captures_part_and_releases_the_rest(env: Env) -> None:
    f = env.esc.functions
    hid = _id("order-1")
    before = f.balanceOf(env.buyer).call()
    send(f.hold(hid, env.buyer, 5_000, 2**40), env.op)
    assert f.balanceOf(env.buyer).call() == before - 5_000
    assert f.holdOf(hid).call() == (env.buyer, 2**40, HELD, 5_000, 0, 0)
    reverts_with(f.hold(hid, env.buyer, 1, 2**40), env.op, "HoldExists", hid)
    reverts_with(f.capture(hid, 5_001), env.op, "CaptureExceedsHold", hid, 5_000, 5_001)
    captured_before = f.captured().call()
    send(f.capture(hid, 1_234), env.op)
    assert f.holdOf(hid).call() == (env.buyer, 2**40, CAPTURED, 5_000, 1_234, 0)
    assert f.balanceOf(env.buyer).call() == before - 1_234
    assert f.captured().call() == captured_before + 1_234
    reverts_with(f.capture(hid, 1), env.op, "HoldNotOpen", hid, CAPTURED)
    reverts_with(f.cancel(hid), env.op, "HoldNotOpen", hid, CAPTURED)


def test_holds_need_the_balance_and_the_operator(env: Env) -> None:
    f = env.esc.functions
    have = f.balanceOf(env.buyer).call()
    hid = _id("order-too-big")
    reverts_with(
        f.hold(hid, env.buyer, have + 1, 2**40),
        env.op,
        "InsufficientBalance",
        env.buyer.lower(),
        have,
        have + 1,
    )
    op_role = role(env.esc, "OPERATOR_ROLE")
    reverts_with(
        f.hold(hid, env.buyer, 1, 2**40),
        env.buyer,
        "AccessControlUnauthorizedAccount",
        env.buyer.lower(),
        op_role,
    )
    reverts_with(f.hold(hid, ZERO, 1, 2**40), env.op, "InvalidArgument", "buyer")
    reverts_with(f.hold(hid, env.buyer, 0, 2**40), env.op, "InvalidArgument", "amount")


def test_a_buyer_may_cancel_its_own_hold_only_after_expiry(env: Env) -> None:
    f = env.esc.functions
    now = env.w3.eth.get_block("latest")["timestamp"]
    hid = _id("order-expiring")
    before = f.balanceOf(env.buyer).call()
    send(f.hold(hid, env.buyer, 700, now + 3_600), env.op)
    reverts_with(f.cancel(hid), env.buyer, "HoldNotExpired", hid, now + 3_600)
    op_role = role(env.esc, "OPERATOR_ROLE")
    reverts_with(
        f.cancel(hid),
        env.stranger,
        "AccessControlUnauthorizedAccount",
        env.stranger.lower(),
        op_role,
    )
    env.w3.provider.ethereum_tester.time_travel(now + 3_601)  # type: ignore[attr-defined]
    send(f.cancel(hid), env.buyer)
    assert f.holdOf(hid).call()[2] == CANCELED
    assert f.balanceOf(env.buyer).call() == before


def test_the_operator_cancels_any_open_hold(env: Env) -> None:
    f = env.esc.functions
    hid = _id("order-canceled")
    before = f.balanceOf(env.buyer).call()
    send(f.hold(hid, env.buyer, 300, 2**40), env.op)
    send(f.cancel(hid), env.op)
    assert f.balanceOf(env.buyer).call() == before
    unknown = _id("never-held")
    reverts_with(f.cancel(unknown), env.op, "HoldNotOpen", unknown, 0)


def test_a_captured_hold_refunds_its_buyer_once(env: Env) -> None:
    f = env.esc.functions
    hid = _id("subscription-1")
    before = f.balanceOf(env.buyer).call()
    reverts_with(f.refund(hid, 1), env.op, "RefundNotAllowed", hid, 0, 0)
    send(f.hold(hid, env.buyer, 3_000, 2**40), env.op)
    reverts_with(f.refund(hid, 1), env.op, "RefundNotAllowed", hid, HELD, 0)
    send(f.capture(hid, 3_000), env.op)  # a subscription: captured whole
    pool = f.captured().call()
    operator = role(env.esc, "OPERATOR_ROLE")
    reverts_with(
        f.refund(hid, 1),
        env.buyer,
        "AccessControlUnauthorizedAccount",
        env.buyer.lower(),
        operator,
    )
    reverts_with(
        f.refund(hid, 3_001), env.op, "RefundExceedsCapture", hid, 3_000, 3_001
    )
    reverts_with(f.refund(hid, 0), env.op, "InvalidArgument", "amount")
    send(f.refund(hid, 1_800), env.op)  # what it did not use
    assert f.holdOf(hid).call() == (env.buyer, 2**40, CAPTURED, 3_000, 3_000, 1_800)
    assert f.balanceOf(env.buyer).call() == before - 1_200
    assert f.captured().call() == pool - 1_800
    reverts_with(f.refund(hid, 1_800), env.op, "RefundNotAllowed", hid, CAPTURED, 1_800)


def test_a_refund_never_takes_money_already_paid_out(env: Env) -> None:
    f = env.esc.functions
    pool = f.captured().call()
    if pool:  # start from an empty pool: earlier tests leave fees in it
        send(f.collect(env.admin, pool), env.admin)
    hid = _id("subscription-paid-out")
    send(f.hold(hid, env.buyer, 2_000, 2**40), env.op)
    send(f.capture(hid, 2_000), env.op)
    other_payee = env.w3.eth.accounts[5]
    send(f.payout(_id("payout-before-refund"), other_payee, 1_500), env.op)
    reverts_with(f.refund(hid, 600), env.op, "InsufficientCaptured", 500, 600)
    send(f.refund(hid, 500), env.op)
    assert f.captured().call() == 0
    send(f.withdraw(), other_payee)


def test_payouts_come_from_captured_money_once_and_are_withdrawn(env: Env) -> None:
    f = env.esc.functions
    hid = _id("order-paid-out")
    send(f.hold(hid, env.buyer, 10_000, 2**40), env.op)
    send(f.capture(hid, 10_000), env.op)
    pid = _id("payout-1")
    pool = f.captured().call()
    reverts_with(
        f.payout(pid, env.payee, pool + 1),
        env.op,
        "InsufficientCaptured",
        pool,
        pool + 1,
    )
    send(f.payout(pid, env.payee, 9_000), env.op)
    reverts_with(f.payout(pid, env.payee, 1), env.op, "PayoutExists", pid)
    assert f.isPaidOut(pid).call()
    assert f.balanceOf(env.payee).call() == 9_000
    send(f.withdraw(), env.payee)
    assert env.token.functions.balanceOf(env.payee).call() == 9_000
    reverts_with(f.withdraw(), env.payee, "NothingToWithdraw", env.payee.lower())


def test_fees_are_collected_by_the_admin_only(env: Env) -> None:
    f = env.esc.functions
    pool = f.captured().call()
    assert pool > 0
    admin_role = role(env.esc, "DEFAULT_ADMIN_ROLE")
    reverts_with(
        f.collect(env.op, pool),
        env.op,
        "AccessControlUnauthorizedAccount",
        env.op.lower(),
        admin_role,
    )
    reverts_with(
        f.collect(env.admin, pool + 1),
        env.admin,
        "InsufficientCaptured",
        pool,
        pool + 1,
    )
    before = env.token.functions.balanceOf(env.stranger).call()
    send(f.collect(env.stranger, pool), env.admin)
    assert env.token.functions.balanceOf(env.stranger).call() == before + pool
    assert f.captured().call() == 0


def test_deposits_for_another_account_are_credited_to_it(env: Env) -> None:
    f = env.esc.functions
    before = f.balanceOf(env.payee).call()
    send(f.deposit(env.payee, 42), env.stranger)
    assert f.balanceOf(env.payee).call() == before + 42
    reverts_with(f.deposit(ZERO, 1), env.stranger, "InvalidArgument", "account")
    reverts_with(f.deposit(env.payee, 0), env.stranger, "InvalidArgument", "amount")


ops = st.lists(
    st.tuples(
        st.sampled_from(["hold", "capture", "cancel", "refund", "payout", "withdraw"]),
        st.integers(0, 4),
        st.integers(1, 5_000),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=ops)
def test_every_token_in_the_escrow_is_accounted_for(
    env: Env, steps: list[tuple[str, int, int]]
) -> None:
    f = env.esc.functions
    accounts = [env.buyer, env.payee, env.stranger]
    salt = env.w3.eth.block_number
    for n, (op, slot, amount) in enumerate(steps):
        hid = _id(f"prop-{salt}-{slot}")
        state = f.holdOf(hid).call()[2]
        if op == "hold" and state == 0 and f.balanceOf(env.buyer).call() >= amount:
            send(f.hold(hid, env.buyer, amount, 2**40), env.op)
        elif op == "capture" and state == HELD:
            held = f.holdOf(hid).call()[3]
            send(f.capture(hid, min(amount, held)), env.op)
        elif op == "cancel" and state == HELD:
            send(f.cancel(hid), env.op)
        elif op == "refund" and state == CAPTURED:
            _, _, _, _, captured, refunded = f.holdOf(hid).call()
            if refunded == 0 and 0 < min(amount, captured, f.captured().call()):
                send(f.refund(hid, min(amount, captured, f.captured().call())), env.op)
        elif op == "payout" and f.captured().call() >= amount:
            send(f.payout(_id(f"prop-payout-{salt}-{n}"), env.payee, amount), env.op)
        elif op == "withdraw" and f.balanceOf(env.payee).call() > 0:
            send(f.withdraw(), env.payee)
        assert env.token.functions.balanceOf(env.esc.address).call() == _accounted(
            env, accounts
        )

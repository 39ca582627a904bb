"""OnchainProvider against the embedded EVM's payment escrow.

Every movement is read back before it is written, so a retried call (after a
crash or a lost answer) finds it done and moves nothing twice; reverts are
declines, an unreachable chain is retryable, and the wallet proof binds a wallet
to one organisation.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

from ledger import Ledger
from marketplace.chain import LazyChain
from marketplace.errors import ChainUnavailable
from marketplace.payments import PaymentProvider
from marketplace.payments._base import (
    Authorization,
    AuthorizationStatus,
    Capture,
    PaymentDeclined,
    PaymentError,
    PaymentUnavailable,
)
from marketplace.payments.onchain import (
    OnchainProvider,
    sign_wallet_proof,
    verify_wallet_proof,
)
from tests.api.test_onchain_payments import Wallet
from tests.conftest import make_settings

BUYER = uuid.UUID("6f1c2a9e-7d4b-4e0a-9a51-0c8f5d2b3e71")


@dataclass
class Env:
    ledger: Ledger
    provider: OnchainProvider
    wallet: Wallet


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    chain = LazyChain(make_settings(tmp_path_factory.mktemp("onchain")))
    ledger = chain.get().ledger
    provider = OnchainProvider(
        lambda: chain.get().ledger.escrow, currency="EUR", hold_days=30
    )
    wallet = Wallet(ledger)
    wallet.deposit(ledger, 1_000_000)
    yield Env(ledger, provider, wallet)
    chain.close()


def _authorize(env: Env, key: str, amount: int = 1_000, **kw: str) -> Authorization:
    return env.provider.authorize(
        order_id=uuid.uuid4(),
        buyer_id=BUYER,
        amount_minor=amount,
        currency=kw.get("currency", "EUR"),
        idempotency_key=key,
        payment_method=kw.get("wallet", env.wallet.address),
    )


def test_it_is_a_payment_provider(env: Env) -> None:
    assert isinstance(env.provider, PaymentProvider)


def test_a_retried_authorisation_holds_once(env: Env) -> None:
    assert env.ledger.escrow is not None
    held = env.ledger.escrow.get_held()
    key = secrets.token_hex(8)
    first = _authorize(env, key)
    again = _authorize(env, key)
    assert first == again
    assert env.ledger.escrow.get_held() == held + 1_000
    with pytest.raises(PaymentDeclined, match="another wallet or amount"):
        _authorize(env, key, amount=999)
    state = env.provider.retrieve_authorization(first.reference)
    assert state.status is AuthorizationStatus.AUTHORIZED


def test_declines_name_the_reason(env: Env) -> None:
    with pytest.raises(PaymentDeclined, match="counts EUR, not USD"):
        _authorize(env, secrets.token_hex(8), currency="USD")
    with pytest.raises(PaymentDeclined, match="no wallet"):
        _authorize(env, secrets.token_hex(8), wallet="not-an-address")
    stranger = Account.create().address
    with pytest.raises(PaymentDeclined, match=r"has 0 EUR .* deposit 1000 more"):
        _authorize(env, secrets.token_hex(8), wallet=stranger)
    with pytest.raises(PaymentError, match="no hold"):
        env.provider.retrieve_authorization("0x" + "ab" * 32)
    with pytest.raises(PaymentError, match="not an escrow hold"):
        env.provider.retrieve_authorization("pi_123")


def test_capture_and_cancel_are_idempotent(env: Env) -> None:
    assert env.ledger.escrow is not None
    escrow = env.ledger.escrow
    auth = _authorize(env, secrets.token_hex(8), amount=2_000)
    before = escrow.get_balance_of(env.wallet.address)
    captured = escrow.get_captured()
    for _ in range(2):  # the second is the retry after a crash
        env.provider.capture(auth, 1_500, idempotency_key="k")
    assert escrow.get_captured() == captured + 1_500
    assert escrow.get_balance_of(env.wallet.address) == before + 500
    with pytest.raises(PaymentDeclined, match="cannot capture 1400"):
        env.provider.capture(auth, 1_400, idempotency_key="k")
    with pytest.raises(PaymentDeclined, match="cannot be released"):
        env.provider.cancel(auth, idempotency_key="k")
    with pytest.raises(PaymentDeclined, match="cannot refund 1: it is authorized"):
        env.provider.refund(
            Capture(
                "onchain", _authorize(env, secrets.token_hex(8)).reference, 1, "EUR"
            ),
            1,
            idempotency_key="k",
        )

    other = _authorize(env, secrets.token_hex(8), amount=700)
    before = escrow.get_balance_of(env.wallet.address)
    for _ in range(2):
        env.provider.cancel(other, idempotency_key="k")
    assert escrow.get_balance_of(env.wallet.address) == before + 700


def test_a_refund_of_a_captured_hold_is_made_once(env: Env) -> None:
    assert env.ledger.escrow is not None
    escrow = env.ledger.escrow
    auth = _authorize(env, secrets.token_hex(8), amount=3_000)
    env.provider.capture(auth, 3_000, idempotency_key="k")
    capture = Capture("onchain", auth.reference, 3_000, "EUR")
    before = escrow.get_balance_of(env.wallet.address)
    captured = escrow.get_captured()
    for _ in range(2):  # the second is the retry after a crash
        done = env.provider.refund(capture, 1_800, idempotency_key="k")
    assert (done.reference, done.amount_minor, done.currency) == (
        auth.reference,
        1_800,
        "EUR",
    )
    assert escrow.get_balance_of(env.wallet.address) == before + 1_800
    assert escrow.get_captured() == captured - 1_800
    assert escrow.get_hold(bytes.fromhex(auth.reference[2:])).refunded == 1_800
    with pytest.raises(PaymentDeclined, match="refunded 1800"):
        env.provider.refund(capture, 1_000, idempotency_key="k")
    with pytest.raises(ValueError, match="positive"):
        env.provider.refund(capture, 0, idempotency_key="k")


def test_a_payout_is_credited_once(env: Env) -> None:
    assert env.ledger.escrow is not None
    escrow = env.ledger.escrow
    auth = _authorize(env, secrets.token_hex(8), amount=900)
    env.provider.capture(auth, 900, idempotency_key="k")
    payee = Account.create().address
    key = secrets.token_hex(8)
    for _ in range(2):
        done = env.provider.transfer(
            destination=payee,
            amount_minor=600,
            currency="EUR",
            group="settlement_x",
            idempotency_key=key,
        )
    assert done.destination == payee and done.amount_minor == 600
    assert escrow.get_balance_of(payee) == 600
    with pytest.raises(PaymentDeclined, match="not a wallet address"):
        env.provider.transfer(
            destination="acct_123",
            amount_minor=1,
            currency="EUR",
            group="g",
            idempotency_key=secrets.token_hex(8),
        )


def test_an_unreachable_chain_is_retryable_and_a_missing_escrow_is_not() -> None:
    def down() -> None:
        raise ChainUnavailable("the node at http://127.0.0.1:1 does not answer")

    provider = OnchainProvider(down, currency="EUR", hold_days=30)
    with pytest.raises(PaymentUnavailable, match="does not answer"):
        provider.retrieve_authorization("0x" + "ab" * 32)
    missing = OnchainProvider(lambda: None, currency="EUR", hold_days=30)
    with pytest.raises(PaymentDeclined, match="deploy it with"):
        missing.balance_of(Account.create().address)


def test_a_wallet_proof_binds_one_wallet_to_one_organisation(tmp_path: Path) -> None:
    key = "0x" + secrets.token_hex(32)
    address, signature = sign_wallet_proof(key, BUYER)
    assert verify_wallet_proof(BUYER, address.lower(), signature) == address
    with pytest.raises(ValueError, match="not by the wallet"):
        verify_wallet_proof(uuid.uuid4(), address, signature)
    with pytest.raises(ValueError, match="not a valid signature"):
        verify_wallet_proof(BUYER, address, "0x" + "00" * 65)

"""Paying from a wallet through the chain's ERC-20 payment escrow (``onchain``).

The buyer's wallet deposits settlement tokens into :class:`ledger.PaymentEscrow`
(the token's units are the currency's minor units). An order holds its amount of
that deposit under a hold id derived from the order's idempotency key; when the
entitlement ends the metered total is captured and the rest released; settlement
credits each payee's share of the captured money to the payee's registered wallet,
and every wallet withdraws its own balance (pull payments). What stays captured is
the exchange's fee. A subscription's hold is captured whole when it is bought
(it runs longer than a hold should), and the part it did not use is refunded to
the buyer's escrow balance when it ends — once per hold.

Every movement is keyed on chain (hold ids, payout ids, one refund per hold), and
each call here reads the chain's state before it writes, so a retry after a crash,
a timeout or a lost answer finds the movement done and answers the same result:
nothing moves twice.

A wallet becomes an organisation's by signing
:data:`~marketplace.models.WALLET_PROOF` (see :func:`verify_wallet_proof`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.exceptions import BadSignature
from web3 import Web3

from ledger import (
    ChainConnectionError,
    EscrowHold,
    LedgerError,
    PaymentEscrow,
    TransactionRevertedError,
    TransactionTimeoutError,
)
from marketplace.errors import ChainUnavailable
from marketplace.models import WALLET_PROOF
from marketplace.payments._base import (
    Authorization,
    AuthorizationStatus,
    Capture,
    PaymentDeclined,
    PaymentError,
    PaymentUnavailable,
    Refund,
    Transfer,
)

__all__ = [
    "HOLD_GRACE_DAYS",
    "OnchainProvider",
    "sign_wallet_proof",
    "verify_wallet_proof",
]

HOLD_GRACE_DAYS = 2
"""Days a hold outlives the longest entitlement it pays for, so the exchange can
finalize before the buyer may cancel it."""

T = TypeVar("T")

_DAY_S = 86_400
_STATUS = {
    EscrowHold.HELD: AuthorizationStatus.AUTHORIZED,
    EscrowHold.CAPTURED: AuthorizationStatus.CAPTURED,
    EscrowHold.CANCELED: AuthorizationStatus.CANCELED,
}


def verify_wallet_proof(
    organisation_id: uuid.UUID, address: str, signature: str
) -> str:
    """The checksummed ``address`` if ``signature`` is its key's proof for the org.

    Raises
    ------
    ValueError
        The signature is malformed or was made by another key.
    """
    wanted = Web3.to_checksum_address(address)
    message = encode_defunct(
        text=WALLET_PROOF.format(organisation_id=organisation_id, address=wanted)
    )
    try:
        signer = Account.recover_message(message, signature=signature)
    except (BadSignature, ValueError, TypeError) as exc:
        raise ValueError(f"not a valid signature ({exc})") from None
    if Web3.to_checksum_address(signer) != wanted:
        raise ValueError(f"signed by {signer}, not by the wallet {wanted}")
    return wanted


def sign_wallet_proof(private_key: str, organisation_id: uuid.UUID) -> tuple[str, str]:
    """The wallet's side: its address and its signature of the proof for the org.

    This runs where the key lives (the buyer's or provider's wallet software),
    never on the exchange.
    """
    account = Account.from_key(private_key)
    address = Web3.to_checksum_address(account.address)
    message = encode_defunct(
        text=WALLET_PROOF.format(organisation_id=organisation_id, address=address)
    )
    signed = account.sign_message(message)
    return address, "0x" + bytes(signed.signature).hex()


def _hold_ref(hold_id: bytes) -> str:
    return "0x" + hold_id.hex()


def _hold_id(reference: str) -> bytes:
    try:
        raw = bytes.fromhex(reference.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise PaymentError(f"{reference!r} is not an escrow hold", provider="onchain")
    return raw


class OnchainProvider:
    """Holds, captures and payouts in the chain's payment escrow.

    Parameters
    ----------
    escrow
        Opens (lazily) the escrow bound to the operator's sender; raises
        :class:`~marketplace.errors.ChainUnavailable` or returns ``None`` when the
        deployment has no escrow.
    currency
        The currency the escrow's token counts (minor units).
    hold_days
        The longest entitlement paid this way; holds expire
        :data:`HOLD_GRACE_DAYS` later.
    clock
        Unix seconds (tests move it).
    """

    name = "onchain"

    def __init__(
        self,
        escrow: Callable[[], PaymentEscrow | None],
        *,
        currency: str,
        hold_days: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._escrow = escrow
        self.currency = currency
        self.hold_days = hold_days
        self._clock = clock

    def _open(self) -> PaymentEscrow:
        try:
            escrow = self._escrow()
        except ChainUnavailable as exc:
            raise PaymentUnavailable(str(exc), provider=self.name) from None
        if escrow is None:
            raise PaymentDeclined(
                "this exchange's chain has no payment escrow (deploy it with "
                "`veilx chain deploy --escrow`)",
                provider=self.name,
            )
        return escrow

    def _check_currency(self, currency: str) -> None:
        if currency != self.currency:
            raise PaymentDeclined(
                f"the escrow's token counts {self.currency}, not {currency}",
                provider=self.name,
            )

    def _call(self, action: Callable[[], T], what: str) -> T:
        """Run a chain call; transport failures are retryable, reverts are not."""
        try:
            return action()
        except LedgerError as exc:
            raise self._error(exc, what) from None

    def _error(self, exc: LedgerError, what: str) -> PaymentError:
        """The payment error for a chain failure while doing ``what``."""
        if isinstance(exc, ChainConnectionError | TransactionTimeoutError):
            return PaymentUnavailable(f"{what}: {exc}", provider=self.name)
        if isinstance(exc, TransactionRevertedError):
            return PaymentDeclined(f"{what}: {exc}", provider=self.name)
        return PaymentError(f"{what}: {exc}", provider=self.name)

    def _auth(self, hold_id: bytes, hold: EscrowHold, currency: str) -> Authorization:
        return Authorization(
            provider=self.name,
            reference=_hold_ref(hold_id),
            amount_minor=hold.amount,
            currency=currency,
            status=_STATUS[hold.state],
        )

    def authorize(
        self,
        *,
        order_id: uuid.UUID,
        buyer_id: uuid.UUID,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        payment_method: str | None = None,
    ) -> Authorization:
        """Hold ``amount_minor`` of the wallet ``payment_method``'s escrow balance.

        Raises
        ------
        PaymentDeclined
            No wallet, another currency, or too small a balance (the message says
            how much the wallet has and needs).
        PaymentUnavailable
            The chain could not be reached; retry with the same key.
        """
        self._check_currency(currency)
        if not payment_method or not Web3.is_address(payment_method):
            raise PaymentDeclined("no wallet to pay from", provider=self.name)
        wallet = Web3.to_checksum_address(payment_method)
        escrow = self._open()
        hold_id = PaymentEscrow.hold_id(idempotency_key)
        found = self._call(lambda: escrow.get_hold(hold_id), "reading the hold")
        if found.state == EscrowHold.NONE:
            expires = int(self._clock()) + (self.hold_days + HOLD_GRACE_DAYS) * _DAY_S
            try:
                escrow.submit_hold(hold_id, wallet, amount_minor, expires)
            except TransactionRevertedError as exc:
                if exc.error != "InsufficientBalance":
                    raise self._error(exc, "holding the payment") from None
                # The contract checked the balance; its revert names both sums.
                balance = int(str(exc.args.get("balance", 0)))
                raise PaymentDeclined(
                    f"wallet {wallet} has {balance} {currency} minor units in the "
                    f"escrow and the order needs {amount_minor}; deposit "
                    f"{amount_minor - balance} more",
                    provider=self.name,
                ) from None
            except LedgerError as exc:
                raise self._error(exc, "holding the payment") from None
            found = EscrowHold(wallet, expires, EscrowHold.HELD, amount_minor, 0)
        if found.buyer != wallet or found.amount != amount_minor:
            raise PaymentDeclined(
                f"hold {_hold_ref(hold_id)} exists for another wallet or amount",
                provider=self.name,
                reference=_hold_ref(hold_id),
            )
        return self._auth(hold_id, found, currency)

    def retrieve_authorization(self, reference: str) -> Authorization:
        """The hold's state on chain."""
        hold_id = _hold_id(reference)
        escrow = self._open()
        found = self._call(lambda: escrow.get_hold(hold_id), "reading the hold")
        if found.state == EscrowHold.NONE:
            raise PaymentError(f"no hold {reference}", provider=self.name)
        return self._auth(hold_id, found, self.currency)

    def capture(
        self, authorization: Authorization, amount_minor: int, *, idempotency_key: str
    ) -> Capture:
        """Capture ``amount_minor`` of the hold and release the rest to the wallet."""
        hold_id = _hold_id(authorization.reference)
        escrow = self._open()
        found = self._call(lambda: escrow.get_hold(hold_id), "reading the hold")
        if found.state == EscrowHold.HELD:
            self._call(
                lambda: escrow.submit_capture(hold_id, amount_minor), "capturing"
            )
        elif not (
            found.state == EscrowHold.CAPTURED and found.captured == amount_minor
        ):
            raise PaymentDeclined(
                f"hold {authorization.reference} cannot capture {amount_minor}: it "
                f"is {_STATUS.get(found.state, 'unknown')} (captured "
                f"{found.captured})",
                provider=self.name,
                reference=authorization.reference,
            )
        return Capture(
            self.name, authorization.reference, amount_minor, authorization.currency
        )

    def cancel(self, authorization: Authorization, *, idempotency_key: str) -> None:
        """Release the whole hold to the wallet."""
        hold_id = _hold_id(authorization.reference)
        escrow = self._open()
        found = self._call(lambda: escrow.get_hold(hold_id), "reading the hold")
        if found.state == EscrowHold.HELD:
            self._call(lambda: escrow.submit_cancel(hold_id), "releasing the hold")
        elif found.state != EscrowHold.CANCELED:
            raise PaymentDeclined(
                f"hold {authorization.reference} cannot be released: it is "
                f"{_STATUS.get(found.state, 'unknown')}",
                provider=self.name,
                reference=authorization.reference,
            )

    def refund(
        self, capture: Capture, amount_minor: int, *, idempotency_key: str
    ) -> Refund:
        """Return ``amount_minor`` of a captured hold to the buyer's escrow balance.

        One refund per hold (the unused part of a subscription captured up
        front): a retry finds it on chain and answers the same refund.

        Raises
        ------
        ValueError
            ``amount_minor`` is not positive.
        PaymentDeclined
            The hold is not captured, was refunded another amount, or captured
            less than ``amount_minor``.
        PaymentUnavailable
            The chain could not be reached; retry.
        """
        if amount_minor <= 0:
            raise ValueError(f"a refund must be positive, not {amount_minor}")
        hold_id = _hold_id(capture.reference)
        escrow = self._open()
        found = self._call(lambda: escrow.get_hold(hold_id), "reading the hold")
        captured = found.state == EscrowHold.CAPTURED
        if captured and found.refunded == 0:
            self._call(lambda: escrow.submit_refund(hold_id, amount_minor), "refunding")
        elif not (captured and found.refunded == amount_minor):
            raise PaymentDeclined(
                f"hold {capture.reference} cannot refund {amount_minor}: it is "
                f"{_STATUS.get(found.state, 'unknown')} (captured {found.captured}, "
                f"refunded {found.refunded})",
                provider=self.name,
                reference=capture.reference,
            )
        return Refund(self.name, capture.reference, amount_minor, self.currency)

    def transfer(
        self,
        *,
        destination: str,
        amount_minor: int,
        currency: str,
        group: str,
        idempotency_key: str,
        source_payment: str | None = None,
    ) -> Transfer:
        """Credit ``amount_minor`` of the captured money to wallet ``destination``.

        Once per ``idempotency_key``; the payee withdraws it from the escrow.
        """
        self._check_currency(currency)
        if not Web3.is_address(destination):
            raise PaymentDeclined(
                f"{destination!r} is not a wallet address", provider=self.name
            )
        wallet = Web3.to_checksum_address(destination)
        escrow = self._open()
        payout_id = PaymentEscrow.payout_id(idempotency_key)
        done = self._call(lambda: escrow.get_is_paid_out(payout_id), "reading payout")
        if not done:
            self._call(
                lambda: escrow.submit_payout(payout_id, wallet, amount_minor),
                "paying out",
            )
        return Transfer(
            self.name,
            "0x" + payout_id.hex(),
            wallet,
            amount_minor,
            currency,
            group,
        )

    def balance_of(self, wallet: str) -> int:
        """What ``wallet`` may withdraw from (or have held in) the escrow."""
        escrow = self._open()
        return self._call(
            lambda: escrow.get_balance_of(Web3.to_checksum_address(wallet)),
            "reading the balance",
        )

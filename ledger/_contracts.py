"""One typed wrapper per contract: reads are ``get_*``, writes are ``submit_*``.

A ``submit_*`` method sends its transaction through the wrapper's
:class:`~ledger._sender.TransactionSender` and returns a :class:`Submitted` with the
receipt and the events of interest decoded from it (only logs emitted by this
contract's address count). A wrapper built without a sender is read-only.

Event queries (``get_registered``, ``get_trade_batches``, …) page through the block
range at most 5,000 blocks per ``eth_getLogs``, so they work against real nodes;
``from_block`` defaults to the wrapper's ``start_block`` (the deployment block when
built by :class:`~ledger._deployments.Ledger`).

Events and values are frozen dataclasses; hashes and ids are ``bytes``, addresses
checksummed strings, amounts integer minor units. Every event records where it was
emitted: ``tx_hash``, ``block_number`` and ``log_index``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import BlockIdentifier, EventData

from ledger._artifacts import load_artifact
from ledger._sender import TransactionSender, TxReceipt, _Rpc
from ledger.errors import LedgerError, TransactionRevertedError

__all__ = [
    "AssetRegistered",
    "AssetTotal",
    "AssetUpdated",
    "BatchAnchored",
    "CreditsWithdrawn",
    "DataAssetRegistry",
    "EscrowHold",
    "FeesWithdrawn",
    "OnChainAsset",
    "PaymentEscrow",
    "ReceiptAnchor",
    "Settlement",
    "SettlementToken",
    "Share",
    "SharesChanged",
    "Submitted",
    "TradeRecorded",
    "TradesRecorded",
]

E = TypeVar("E")

DEFAULT_ADMIN_ROLE = b"\x00" * 32
REGISTRAR_ROLE = keccak(text="REGISTRAR_ROLE")
OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")
PAUSER_ROLE = keccak(text="PAUSER_ROLE")


# --- values ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    """One co-owner's part of an asset's revenue, in basis points (1/10,000)."""

    payee: ChecksumAddress
    bps: int


@dataclass(frozen=True, slots=True)
class AssetTotal:
    """One asset's summed amount and fee within a batch of trades (minor units)."""

    token_id: int
    amount: int
    fee: int


@dataclass(frozen=True, slots=True)
class OnChainAsset:
    """A registered data asset as the registry holds it."""

    token_id: int
    owner: ChecksumAddress
    metadata_hash: bytes
    policy_hash: bytes
    version: int
    shares: tuple[Share, ...]


# --- events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssetRegistered:
    """``DataAssetRegistry.AssetRegistered``: a dataset was minted as ``token_id``."""

    token_id: int
    dataset_id: uuid.UUID
    owner: ChecksumAddress
    metadata_hash: bytes
    policy_hash: bytes
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True, slots=True)
class AssetUpdated:
    """``DataAssetRegistry.AssetUpdated``: new hashes; ``version`` is the new one."""

    token_id: int
    metadata_hash: bytes
    policy_hash: bytes
    version: int
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True, slots=True)
class SharesChanged:
    """``DataAssetRegistry.SharesChanged``: the shares of ``token_id`` were set."""

    token_id: int
    shares: tuple[Share, ...]
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True, slots=True)
class TradeRecorded:
    """``Settlement.TradeRecorded``: one trade was recorded and credited."""

    trade_id: bytes
    token_id: int
    buyer: ChecksumAddress
    amount: int
    fee: int
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True, slots=True)
class TradesRecorded:
    """``Settlement.TradesRecorded``: a batch of trades was recorded and credited."""

    batch_id: int
    trade_hashes: tuple[bytes, ...]
    amount: int
    fee: int
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True, slots=True)
class CreditsWithdrawn:
    """``Settlement.CreditsWithdrawn``: ``payee`` withdrew ``amount``."""

    payee: ChecksumAddress
    amount: int
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True, slots=True)
class FeesWithdrawn:
    """``Settlement.FeesWithdrawn``: accrued fees were sent to ``recipient``."""

    recipient: ChecksumAddress
    amount: int
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True, slots=True)
class BatchAnchored:
    """``ReceiptAnchor.BatchAnchored``: batch ``batch_id`` was anchored."""

    batch_id: int
    root: bytes
    count: int
    tx_hash: str
    block_number: int
    log_index: int


@dataclass(frozen=True)
class Submitted(Generic[E]):
    """A mined transaction and the events of one kind it emitted from the contract.

    Attributes
    ----------
    receipt
        The transaction's receipt.
    events
        The events of the submitting method's type decoded from ``receipt``, in
        log order, emitted by the wrapper's contract address only.
    """

    receipt: TxReceipt
    events: tuple[E, ...]


# --- shared machinery --------------------------------------------------------------


def _where(event: EventData) -> dict[str, Any]:
    return {
        "tx_hash": "0x" + bytes(event["transactionHash"]).hex(),
        "block_number": int(event["blockNumber"]),
        "log_index": int(event["logIndex"]),
    }


def _bytes32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes")
    return bytes(value)


def _topic(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def _shares(raw: Sequence[Any]) -> tuple[Share, ...]:
    return tuple(
        Share(
            payee=Web3.to_checksum_address(s["payee"] if _is_map(s) else s[0]),
            bps=int(s["bps"] if _is_map(s) else s[1]),
        )
        for s in raw
    )


def _is_map(value: Any) -> bool:
    return hasattr(value, "keys")


def _share_args(shares: Sequence[Share]) -> list[tuple[ChecksumAddress, int]]:
    return [(Web3.to_checksum_address(s.payee), int(s.bps)) for s in shares]


class _Wrapper:
    """A contract bound to an address, with an optional sender for writes."""

    _artifact: ClassVar[str]

    def __init__(
        self,
        w3: Web3,
        address: str,
        sender: TransactionSender | None,
        *,
        start_block: int = 0,
    ) -> None:
        self.address: ChecksumAddress = Web3.to_checksum_address(address)
        self.start_block = start_block
        self._w3 = w3
        self._sender = sender
        # The sender's retry and revert-decoding settings apply to reads too.
        self._rpc = sender._rpc if sender is not None else _Rpc(w3)
        self._contract: Contract = w3.eth.contract(
            address=self.address, abi=load_artifact(self._artifact).abi
        )

    @property
    def w3(self) -> Web3:
        """The chain the wrapper reads from."""
        return self._w3

    @property
    def contract(self) -> Contract:
        """The underlying web3 contract, for calls this wrapper does not cover."""
        return self._contract

    @property
    def sender(self) -> TransactionSender | None:
        """The sender of ``submit_*`` transactions; ``None`` when read-only."""
        return self._sender

    def __repr__(self) -> str:
        mode = "read-only" if self._sender is None else f"as {self._sender.address}"
        return f"{type(self).__name__}({self.address}, {mode})"

    def _fn(self, name: str, *args: Any) -> ContractFunction:
        fn: ContractFunction = self._contract.functions[name](*args)
        return fn

    def _read(self, name: str, *args: Any, block: BlockIdentifier = "latest") -> Any:
        return self._rpc.read(self._fn(name, *args), self._artifact, block)

    def _submit(self, name: str, *args: Any) -> TxReceipt:
        if self._sender is None:
            raise LedgerError(
                f"{self._artifact} at {self.address} is read-only: "
                f"connect with a signer to call {name}"
            )
        return self._sender.send(self._fn(name, *args))

    def _submitted(
        self,
        receipt: TxReceipt,
        event: str,
        parse: Callable[[EventData], E],
    ) -> Submitted[E]:
        decoder = self._contract.events[event]()
        topic = bytes.fromhex(decoder.topic[2:])
        events = tuple(
            parse(decoder.process_log(log))
            for log in receipt.logs
            if Web3.to_checksum_address(log["address"]) == self.address
            and log["topics"]
            and bytes(log["topics"][0]) == topic
        )
        return Submitted(receipt=receipt, events=events)

    def _query(
        self,
        event: str,
        parse: Callable[[EventData], E],
        from_block: int | None,
        to_block: int | None,
        *indexed: str | None,
    ) -> list[E]:
        decoder = self._contract.events[event]()
        start = self.start_block if from_block is None else from_block
        topics: list[str | None] = [decoder.topic, *indexed]
        while topics and topics[-1] is None:
            topics.pop()
        logs = self._rpc.get_logs(self.address, topics, start, to_block)
        return [parse(decoder.process_log(log)) for log in logs]

    def _grant(self, role: bytes, account: str) -> TxReceipt:
        return self._submit("grantRole", role, Web3.to_checksum_address(account))


# --- DataAssetRegistry ---------------------------------------------------------------


def _asset_registered(e: EventData) -> AssetRegistered:
    a = e["args"]
    return AssetRegistered(
        token_id=int(a["tokenId"]),
        dataset_id=uuid.UUID(bytes=bytes(a["datasetId"])),
        owner=Web3.to_checksum_address(a["owner"]),
        metadata_hash=bytes(a["metadataHash"]),
        policy_hash=bytes(a["policyHash"]),
        **_where(e),
    )


def _asset_updated(e: EventData) -> AssetUpdated:
    a = e["args"]
    return AssetUpdated(
        token_id=int(a["tokenId"]),
        metadata_hash=bytes(a["metadataHash"]),
        policy_hash=bytes(a["policyHash"]),
        version=int(a["version"]),
        **_where(e),
    )


def _shares_changed(e: EventData) -> SharesChanged:
    a = e["args"]
    return SharesChanged(
        token_id=int(a["tokenId"]), shares=_shares(a["shares"]), **_where(e)
    )


class DataAssetRegistry(_Wrapper):
    """The data-asset registry: one ERC-721 token per dataset, hashes and shares.

    Parameters
    ----------
    w3
        The chain.
    address
        The registry's address.
    sender
        Sends ``submit_*`` transactions; ``None`` makes the wrapper read-only.
    start_block
        Where event queries start by default (the deployment block).
    """

    _artifact = "DataAssetRegistry"

    @staticmethod
    def token_id_of(dataset_id: uuid.UUID) -> int:
        """The token id of a dataset: its 16 UUID bytes as an unsigned integer."""
        return int.from_bytes(dataset_id.bytes, "big")

    def get_asset(self, token_id: int) -> OnChainAsset | None:
        """The asset ``token_id``, read at one block; ``None`` when not minted."""
        block = int(self._rpc.retry(lambda: self._w3.eth.block_number))
        try:
            owner = self._read("ownerOf", token_id, block=block)
        except TransactionRevertedError as exc:
            if exc.error == "ERC721NonexistentToken":
                return None
            raise
        metadata_hash, policy_hash, version = self._read(
            "assetOf", token_id, block=block
        )
        shares = self._read("sharesOf", token_id, block=block)
        return OnChainAsset(
            token_id=token_id,
            owner=Web3.to_checksum_address(owner),
            metadata_hash=bytes(metadata_hash),
            policy_hash=bytes(policy_hash),
            version=int(version),
            shares=_shares(shares),
        )

    def get_registered(
        self, from_block: int | None = None, to_block: int | None = None
    ) -> list[AssetRegistered]:
        """Every ``AssetRegistered`` event in the block range, in chain order."""
        return self._query("AssetRegistered", _asset_registered, from_block, to_block)

    def get_updates(
        self, from_block: int | None = None, to_block: int | None = None
    ) -> list[AssetUpdated]:
        """Every ``AssetUpdated`` event in the block range, in chain order."""
        return self._query("AssetUpdated", _asset_updated, from_block, to_block)

    def get_shares_changes(
        self, from_block: int | None = None, to_block: int | None = None
    ) -> list[SharesChanged]:
        """Every ``SharesChanged`` event in the block range, in chain order."""
        return self._query("SharesChanged", _shares_changed, from_block, to_block)

    def submit_register(
        self,
        dataset_id: uuid.UUID,
        owner: str,
        metadata_hash: bytes,
        policy_hash: bytes,
        shares: Sequence[Share],
    ) -> Submitted[AssetRegistered]:
        """Mint ``dataset_id`` to ``owner`` with its hashes and revenue shares."""
        receipt = self._submit(
            "register",
            dataset_id.bytes,
            Web3.to_checksum_address(owner),
            _bytes32(metadata_hash, "metadata_hash"),
            _bytes32(policy_hash, "policy_hash"),
            _share_args(shares),
        )
        return self._submitted(receipt, "AssetRegistered", _asset_registered)

    def submit_update_asset(
        self,
        token_id: int,
        metadata_hash: bytes,
        policy_hash: bytes,
        expected_version: int,
    ) -> Submitted[AssetUpdated]:
        """Replace the hashes of ``token_id`` if its version is ``expected_version``.

        Raises
        ------
        TransactionRevertedError
            ``StaleVersion`` when the asset's version is not ``expected_version``.
        """
        receipt = self._submit(
            "updateAsset",
            token_id,
            _bytes32(metadata_hash, "metadata_hash"),
            _bytes32(policy_hash, "policy_hash"),
            expected_version,
        )
        return self._submitted(receipt, "AssetUpdated", _asset_updated)

    def submit_set_shares(
        self, token_id: int, shares: Sequence[Share]
    ) -> Submitted[SharesChanged]:
        """Replace the revenue shares of ``token_id``."""
        receipt = self._submit("setShares", token_id, _share_args(shares))
        return self._submitted(receipt, "SharesChanged", _shares_changed)

    def submit_grant_registrar(self, account: str) -> TxReceipt:
        """Grant ``REGISTRAR_ROLE`` to ``account`` (needs the admin role)."""
        return self._grant(REGISTRAR_ROLE, account)


# --- Settlement ----------------------------------------------------------------------


def _trade_recorded(e: EventData) -> TradeRecorded:
    a = e["args"]
    return TradeRecorded(
        trade_id=bytes(a["tradeId"]),
        token_id=int(a["tokenId"]),
        buyer=Web3.to_checksum_address(a["buyer"]),
        amount=int(a["amount"]),
        fee=int(a["fee"]),
        **_where(e),
    )


def _trades_recorded(e: EventData) -> TradesRecorded:
    a = e["args"]
    return TradesRecorded(
        batch_id=int(a["batchId"]),
        trade_hashes=tuple(bytes(h) for h in a["tradeHashes"]),
        amount=int(a["amount"]),
        fee=int(a["fee"]),
        **_where(e),
    )


def _credits_withdrawn(e: EventData) -> CreditsWithdrawn:
    a = e["args"]
    return CreditsWithdrawn(
        payee=Web3.to_checksum_address(a["payee"]), amount=int(a["amount"]), **_where(e)
    )


def _fees_withdrawn(e: EventData) -> FeesWithdrawn:
    a = e["args"]
    return FeesWithdrawn(
        recipient=Web3.to_checksum_address(a["recipient"]),
        amount=int(a["amount"]),
        **_where(e),
    )


class Settlement(_Wrapper):
    """The settlement contract: recorded trades, revenue-share credits, escrow.

    Parameters are those of :class:`DataAssetRegistry`.
    """

    _artifact = "Settlement"

    def get_is_batch_recorded(self, batch_id: int) -> bool:
        """Whether batch ``batch_id`` was recorded by ``recordTrades``."""
        return bool(self._read("isBatchRecorded", batch_id))

    def get_is_trade_recorded(self, trade_id: bytes) -> bool:
        """Whether trade ``trade_id`` was recorded by ``recordTrade``."""
        return bool(self._read("isTradeRecorded", _bytes32(trade_id, "trade_id")))

    def get_credit_of(self, account: str) -> int:
        """The credits ``account`` may withdraw (or is owed off-chain)."""
        return int(self._read("creditOf", Web3.to_checksum_address(account)))

    def get_total_credited(self) -> int:
        """Sum of all credits ever granted, withdrawn or not."""
        return int(self._read("totalCredited"))

    def get_accrued_fees(self) -> int:
        """Fees accrued and not yet withdrawn."""
        return int(self._read("accruedFees"))

    def get_paused(self) -> bool:
        """Whether recording and withdrawals are paused."""
        return bool(self._read("paused"))

    def get_trade_batches(
        self,
        from_block: int | None = None,
        to_block: int | None = None,
        *,
        batch_id: int | None = None,
    ) -> list[TradesRecorded]:
        """Every ``TradesRecorded`` event in the range, or only batch ``batch_id``'s."""
        indexed = None if batch_id is None else _topic(batch_id)
        return self._query(
            "TradesRecorded", _trades_recorded, from_block, to_block, indexed
        )

    def get_trades(
        self, from_block: int | None = None, to_block: int | None = None
    ) -> list[TradeRecorded]:
        """Every ``TradeRecorded`` event (single trades) in the block range."""
        return self._query("TradeRecorded", _trade_recorded, from_block, to_block)

    def submit_record_trade(
        self, trade_id: bytes, token_id: int, buyer: str, amount: int, fee: int
    ) -> Submitted[TradeRecorded]:
        """Record one trade and credit its net amount to the asset's co-owners."""
        receipt = self._submit(
            "recordTrade",
            _bytes32(trade_id, "trade_id"),
            token_id,
            Web3.to_checksum_address(buyer),
            amount,
            fee,
        )
        return self._submitted(receipt, "TradeRecorded", _trade_recorded)

    def submit_record_trades(
        self,
        batch_id: int,
        trade_hashes: Sequence[bytes],
        totals: Sequence[AssetTotal],
    ) -> Submitted[TradesRecorded]:
        """Record a batch of trades by hash and credit the per-asset totals."""
        receipt = self._submit(
            "recordTrades",
            batch_id,
            [_bytes32(h, "trade hash") for h in trade_hashes],
            [(t.token_id, t.amount, t.fee) for t in totals],
        )
        return self._submitted(receipt, "TradesRecorded", _trades_recorded)

    def submit_withdraw(self) -> Submitted[CreditsWithdrawn]:
        """Withdraw all the sender's credits in the settlement token."""
        receipt = self._submit("withdraw")
        return self._submitted(receipt, "CreditsWithdrawn", _credits_withdrawn)

    def submit_withdraw_fees(self, recipient: str) -> Submitted[FeesWithdrawn]:
        """Send all accrued fees to ``recipient`` (needs the admin role)."""
        receipt = self._submit("withdrawFees", Web3.to_checksum_address(recipient))
        return self._submitted(receipt, "FeesWithdrawn", _fees_withdrawn)

    def submit_pause(self) -> TxReceipt:
        """Stop recording and withdrawals (needs ``PAUSER_ROLE``)."""
        return self._submit("pause")

    def submit_unpause(self) -> TxReceipt:
        """Resume recording and withdrawals (needs ``PAUSER_ROLE``)."""
        return self._submit("unpause")

    def submit_grant_operator(self, account: str) -> TxReceipt:
        """Grant ``OPERATOR_ROLE`` (recording trades) to ``account``."""
        return self._grant(OPERATOR_ROLE, account)

    def submit_grant_pauser(self, account: str) -> TxReceipt:
        """Grant ``PAUSER_ROLE`` to ``account``."""
        return self._grant(PAUSER_ROLE, account)


# --- ReceiptAnchor -------------------------------------------------------------------


def _batch_anchored(e: EventData) -> BatchAnchored:
    a = e["args"]
    return BatchAnchored(
        batch_id=int(a["batchId"]),
        root=bytes(a["root"]),
        count=int(a["count"]),
        **_where(e),
    )


class ReceiptAnchor(_Wrapper):
    """The receipt anchor: one Merkle root per batch of access receipts.

    Parameters are those of :class:`DataAssetRegistry`.
    """

    _artifact = "ReceiptAnchor"

    def get_root_of(self, batch_id: int) -> bytes | None:
        """The Merkle root anchored for ``batch_id``, or ``None`` when none is."""
        root = bytes(self._read("rootOf", batch_id))
        return None if root == bytes(32) else root

    def get_anchored(
        self,
        from_block: int | None = None,
        to_block: int | None = None,
        *,
        batch_id: int | None = None,
    ) -> list[BatchAnchored]:
        """Every ``BatchAnchored`` event in the range, or only batch ``batch_id``'s."""
        indexed = None if batch_id is None else _topic(batch_id)
        return self._query(
            "BatchAnchored", _batch_anchored, from_block, to_block, indexed
        )

    def submit_anchor(
        self, root: bytes, batch_id: int, count: int
    ) -> Submitted[BatchAnchored]:
        """Anchor Merkle ``root`` of batch ``batch_id`` holding ``count`` receipts."""
        receipt = self._submit("anchor", _bytes32(root, "root"), batch_id, count)
        return self._submitted(receipt, "BatchAnchored", _batch_anchored)

    def submit_grant_operator(self, account: str) -> TxReceipt:
        """Grant ``OPERATOR_ROLE`` (anchoring) to ``account``."""
        return self._grant(OPERATOR_ROLE, account)


# --- SettlementToken and PaymentEscrow ---------------------------------------------

MINTER_ROLE = keccak(text="MINTER_ROLE")


class SettlementToken(_Wrapper):
    """The ERC-20 settlement token (minor units; the embedded chain mints its own).

    Parameters are those of :class:`DataAssetRegistry`.
    """

    _artifact = "SettlementToken"

    def get_balance_of(self, account: str) -> int:
        """``account``'s token balance."""
        return int(self._read("balanceOf", Web3.to_checksum_address(account)))

    def get_decimals(self) -> int:
        """The token's decimals: its currency's minor-unit exponent."""
        return int(self._read("decimals"))

    def get_symbol(self) -> str:
        """The token's symbol."""
        return str(self._read("symbol"))

    def submit_mint(self, to: str, amount: int) -> TxReceipt:
        """Create ``amount`` for ``to`` (needs ``MINTER_ROLE``)."""
        return self._submit("mint", Web3.to_checksum_address(to), amount)

    def submit_transfer(self, to: str, amount: int) -> TxReceipt:
        """Send ``amount`` of the sender's tokens to ``to``."""
        return self._submit("transfer", Web3.to_checksum_address(to), amount)

    def submit_approve(self, spender: str, amount: int) -> TxReceipt:
        """Allow ``spender`` to pull up to ``amount`` of the sender's tokens."""
        return self._submit("approve", Web3.to_checksum_address(spender), amount)


@dataclass(frozen=True, slots=True)
class EscrowHold:
    """A hold of :class:`PaymentEscrow`.

    ``state`` is :attr:`NONE` (unknown), :attr:`HELD`, :attr:`CAPTURED` or
    :attr:`CANCELED`.
    """

    NONE: ClassVar[int] = 0
    HELD: ClassVar[int] = 1
    CAPTURED: ClassVar[int] = 2
    CANCELED: ClassVar[int] = 3

    buyer: ChecksumAddress
    expires_at: int
    state: int
    amount: int
    captured: int
    refunded: int = 0


class PaymentEscrow(_Wrapper):
    """Buyers' deposits, order holds, captures, payouts and pull withdrawals.

    Parameters are those of :class:`DataAssetRegistry`.
    """

    _artifact = "PaymentEscrow"

    @staticmethod
    def hold_id(key: str) -> bytes:
        """The hold id of an order key: ``keccak256("veilx.hold.v1:" ‖ key)``."""
        return keccak(text=f"veilx.hold.v1:{key}")

    @staticmethod
    def payout_id(key: str) -> bytes:
        """The payout id of a payout key: ``keccak256("veilx.payout.v1:" ‖ key)``."""
        return keccak(text=f"veilx.payout.v1:{key}")

    def get_balance_of(self, account: str) -> int:
        """What ``account`` may withdraw."""
        return int(self._read("balanceOf", Web3.to_checksum_address(account)))

    def get_hold(self, hold_id: bytes) -> EscrowHold:
        """Hold ``hold_id`` (state ``NONE`` when unknown)."""
        raw = self._read("holdOf", _bytes32(hold_id, "hold_id"))
        keys = ("buyer", "expiresAt", "state", "amount", "captured", "refunded")
        values: list[Any] = (
            [raw[k] for k in keys] if _is_map(raw) else [raw[i] for i in range(6)]
        )
        return EscrowHold(
            buyer=Web3.to_checksum_address(values[0]),
            expires_at=int(values[1]),
            state=int(values[2]),
            amount=int(values[3]),
            captured=int(values[4]),
            refunded=int(values[5]),
        )

    def get_is_paid_out(self, payout_id: bytes) -> bool:
        """Whether payout ``payout_id`` was credited."""
        return bool(self._read("isPaidOut", _bytes32(payout_id, "payout_id")))

    def get_held(self) -> int:
        """The money in open holds."""
        return int(self._read("held"))

    def get_captured(self) -> int:
        """Captured money not yet paid out or collected (the exchange's fees)."""
        return int(self._read("captured"))

    def get_token(self) -> ChecksumAddress:
        """The settlement token's address."""
        return Web3.to_checksum_address(self._read("token"))

    def submit_deposit(self, account: str, amount: int) -> TxReceipt:
        """Pull ``amount`` of the sender's (approved) tokens into ``account``."""
        return self._submit("deposit", Web3.to_checksum_address(account), amount)

    def submit_hold(
        self, hold_id: bytes, buyer: str, amount: int, expires_at: int
    ) -> TxReceipt:
        """Hold ``amount`` of ``buyer``'s balance (needs ``OPERATOR_ROLE``)."""
        return self._submit(
            "hold",
            _bytes32(hold_id, "hold_id"),
            Web3.to_checksum_address(buyer),
            amount,
            expires_at,
        )

    def submit_capture(self, hold_id: bytes, amount: int) -> TxReceipt:
        """Capture ``amount`` of a hold and release the rest."""
        return self._submit("capture", _bytes32(hold_id, "hold_id"), amount)

    def submit_cancel(self, hold_id: bytes) -> TxReceipt:
        """Release a hold whole (the operator; the buyer once it expired)."""
        return self._submit("cancel", _bytes32(hold_id, "hold_id"))

    def submit_refund(self, hold_id: bytes, amount: int) -> TxReceipt:
        """Return ``amount`` of a captured hold to its buyer (once per hold)."""
        return self._submit("refund", _bytes32(hold_id, "hold_id"), amount)

    def submit_payout(self, payout_id: bytes, payee: str, amount: int) -> TxReceipt:
        """Credit ``amount`` of the captured money to ``payee``."""
        return self._submit(
            "payout",
            _bytes32(payout_id, "payout_id"),
            Web3.to_checksum_address(payee),
            amount,
        )

    def submit_withdraw(self) -> TxReceipt:
        """Send the sender its whole balance."""
        return self._submit("withdraw")

    def submit_collect(self, recipient: str, amount: int) -> TxReceipt:
        """Send ``amount`` of the fees to ``recipient`` (needs the admin role)."""
        return self._submit("collect", Web3.to_checksum_address(recipient), amount)

    def submit_grant_operator(self, account: str) -> TxReceipt:
        """Grant ``OPERATOR_ROLE`` (holds, captures, payouts) to ``account``."""
        return self._grant(OPERATOR_ROLE, account)

"""Sending transactions: nonces, gas, fees, receipts, confirmations, retries, reverts.

One :class:`TransactionSender` per signing account. :meth:`TransactionSender.send`
is :meth:`~TransactionSender.sign` (simulate, estimate, price, take a nonce, sign),
:meth:`~TransactionSender.broadcast` and :meth:`~TransactionSender.wait`.

Nonces
    A local counter, guarded by a lock, starts from the node's ``pending``
    transaction count. ``send`` signs and broadcasts under that lock, so
    concurrent threads broadcast in nonce order and never leave a gap. When the
    node says a nonce is taken (another process used the key) the counter is
    re-read from the node and the transaction signed again.

Retries
    Only transient transport failures are retried, with capped exponential backoff
    and jitter: refused or reset connections, timeouts, HTTP 5xx and 429, JSON-RPC
    ``-32005`` and "header not found"-style answers. A revert, an invalid parameter
    or a refused transaction is never retried. When retries run out the error is
    :class:`~ledger.errors.ChainConnectionError`.

Reverts
    Every transaction is executed before it is signed — by ``eth_estimateGas``
    (a revert there is decoded by repeating the call with ``eth_call``), or by
    ``eth_call`` when the gas limit is given — so a revert surfaces as
    :class:`~ledger.errors.TransactionRevertedError` without spending gas. A
    transaction mined with status 0 is replayed as a call on the state it ran on
    to recover its reason. Revert data is decoded against the
    errors of every compiled artifact plus ``Error(string)`` and ``Panic(uint256)``.
    The data is read from web3's ``ContractLogicError.data`` (JSON-RPC nodes, the
    embedded chain) or, for web3's plain eth-tester provider, which re-raises a
    revert as a message, by repeating the call on eth-tester itself.
"""

from __future__ import annotations

import ast
import itertools
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, TypeVar, cast

import requests
from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_tester.exceptions import TransactionFailed  # type: ignore[import-untyped]
from eth_typing import ChecksumAddress
from eth_utils.abi import collapse_if_tuple
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError as EthValidationError
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import BlockIdentifier, FilterParams, RPCEndpoint, TxParams

from ledger._artifacts import artifact_names, load_artifact
from ledger._signer import Signer
from ledger.errors import (
    ChainConnectionError,
    LedgerError,
    TransactionRevertedError,
    TransactionTimeoutError,
)

__all__ = ["SignedTx", "TransactionSender", "TxReceipt"]

T = TypeVar("T")

_BACKOFF_CAP_S = 8.0
_LOG_SPAN = 5_000
_NONCE_ATTEMPTS = 3

_TRANSIENT_CODES = frozenset({-32005})  # "limit exceeded": rate limited
_TRANSIENT_HTTP = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_MESSAGES = (
    "header not found",
    "timeout",
    "timed out",
    "try again",
    "temporarily unavailable",
    "service unavailable",
    "bad gateway",
    "rate limit",
    "too many requests",
    "connection refused",
    "connection reset",
)
_TOO_LARGE_MESSAGES = (
    "query returned more than",
    "log response size exceeded",
    "block range",
    "range too large",
    "too many results",
    "exceed maximum block range",
)
_KNOWN_TX_MESSAGES = ("already known", "known transaction", "already imported")
_NONCE_MESSAGES = (
    "nonce too low",
    "nonce too high",
    "invalid transaction nonce",
    "nonce has already been used",
    "replacement transaction underpriced",
)

_ERROR_STRING = keccak(text="Error(string)")[:4]
_PANIC = keccak(text="Panic(uint256)")[:4]


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """A mined transaction's receipt.

    Attributes
    ----------
    tx_hash, block_hash
        ``0x``-prefixed hex.
    block_number, gas_used
        As mined.
    status
        1 for success (a :class:`TransactionSender` raises on 0).
    contract_address
        The created contract's address, for a deployment; else ``None``.
    logs
        The raw logs, as web3 returns them.
    """

    tx_hash: str
    block_number: int
    block_hash: str
    gas_used: int
    status: int
    contract_address: str | None
    logs: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A signed transaction, ready to broadcast.

    Attributes
    ----------
    raw
        The raw signed transaction bytes.
    tx_hash
        Its hash, ``0x``-prefixed hex (keccak of ``raw``).
    nonce
        The nonce it was signed with.
    """

    raw: bytes
    tx_hash: str
    nonce: int


class _StaleNonceError(LedgerError):
    """The node refused a transaction because its nonce was already used."""

    def __init__(self, tx_hash: str, nonce: int, detail: str) -> None:
        super().__init__(
            f"transaction {tx_hash}: nonce {nonce} was already used by another "
            f"transaction ({detail}); sign it again"
        )
        self.tx_hash = tx_hash
        self.nonce = nonce


class TransactionSender:
    """Signs, sends and waits for the transactions of one account.

    Parameters
    ----------
    w3
        A connected synchronous web3 (embedded chain, eth-tester or JSON-RPC).
    signer
        The account that signs and pays.
    confirmations
        Blocks to wait for on top of the one that mined a transaction.
    timeout
        Seconds :meth:`wait` waits for a transaction to be mined and confirmed.
    poll_interval
        Seconds between receipt polls.
    max_retries
        Retries of a request that failed for a transient transport reason.
    gas_margin
        Multiplier applied to the node's gas estimate.
    errors_abi
        Further ABI error entries to decode reverts with, on top of every
        compiled artifact's errors.
    backoff
        Seconds before the first retry; doubled on each retry, capped at 8 s,
        with jitter.
    """

    def __init__(
        self,
        w3: Web3,
        signer: Signer,
        *,
        confirmations: int = 0,
        timeout: float = 120.0,
        poll_interval: float = 0.05,
        max_retries: int = 5,
        gas_margin: float = 1.2,
        errors_abi: Sequence[Mapping[str, Any]] | None = None,
        backoff: float = 0.25,
    ) -> None:
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        if timeout <= 0 or poll_interval <= 0:
            raise ValueError("timeout and poll_interval must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if gas_margin < 1.0:
            raise ValueError("gas_margin must be >= 1.0")
        self.address: ChecksumAddress = signer.address
        self.confirmations = confirmations
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.gas_margin = gas_margin
        self._w3 = w3
        self._signer = signer
        self._rpc = _Rpc(w3, max_retries=max_retries, backoff=backoff, extra=errors_abi)
        self._lock = threading.RLock()
        self._next_nonce: int | None = None
        self._chain_id: int | None = None
        self._names: dict[str, str] = {}

    @property
    def w3(self) -> Web3:
        """The web3 instance transactions go through."""
        return self._w3

    def __repr__(self) -> str:
        return (
            f"TransactionSender(address={self.address}, "
            f"confirmations={self.confirmations})"
        )

    # --- sign ----------------------------------------------------------------------

    def sign(
        self,
        fn: ContractFunction | ContractConstructor,
        *,
        gas: int | None = None,
        value: int = 0,
    ) -> SignedTx:
        """Simulate ``fn``, price it, take the next nonce and sign it.

        Parameters
        ----------
        fn
            A bound contract call (``contract.functions.f(...)``) or a constructor
            (``factory.constructor(...)``).
        gas
            The gas limit; estimated (times ``gas_margin``) when ``None``.
        value
            Wei sent along.

        Raises
        ------
        TransactionRevertedError
            When the simulation reverts; nothing is signed and no nonce is used.
        ChainConnectionError
            When the node stays unreachable.
        """
        call, name = self._call_params(fn, value)
        if gas is not None:
            # No estimate to run the call: simulate it, so a revert costs no gas.
            call["gas"] = gas
            self._rpc.simulate(call, name)
        block = self._rpc.retry(lambda: self._w3.eth.get_block("latest"))
        if gas is None:
            # The estimate executes the call: a revert there is decoded by
            # simulating it once more (_estimate), so the happy path runs it once.
            gas = self._estimate(call, name, int(block["gasLimit"]))
        fees = self._fees(block)
        chain_id = self._get_chain_id()
        return self._sign_with_nonce({**call, "gas": gas, "chainId": chain_id, **fees})

    def _sign_with_nonce(self, tx: dict[str, Any]) -> SignedTx:
        """Take the next nonce and sign ``tx`` with it (under the lock)."""
        with self._lock:
            nonce = self._take_nonce()
            try:
                raw = bytes(self._signer.sign_transaction({**tx, "nonce": nonce}))
            except BaseException:
                self._next_nonce = None  # do not leave a gap: re-read next time
                raise
        return SignedTx(raw=raw, tx_hash="0x" + keccak(raw).hex(), nonce=nonce)

    def _call_params(
        self, fn: ContractFunction | ContractConstructor, value: int
    ) -> tuple[dict[str, Any], str]:
        call: dict[str, Any] = {"from": self.address, "value": value}
        if isinstance(fn, ContractConstructor):
            call["data"] = fn.data_in_transaction
            name = _artifact_name(fn.abi, fn.bytecode) or "contract creation"
        else:
            call["to"] = fn.address
            # web3 has no public "calldata of this bound call" accessor.
            call["data"] = fn._encode_transaction_data()
            name = _artifact_name(fn.contract_abi, None) or str(fn.address)
            self._names[str(fn.address)] = name
        return call, name

    def _estimate(self, call: dict[str, Any], name: str, gas_limit: int) -> int:
        try:
            estimate = self._rpc.retry(
                partial(self._w3.eth.estimate_gas, cast(TxParams, call))
            )
        except Exception as exc:
            if _is_refusal(exc):
                raise LedgerError(
                    f"the node refused to estimate gas for {name}: {_message(exc)}"
                ) from exc
            if not _is_revert(exc):
                raise
            # The state moved between the simulation and the estimate: decode anew.
            self._rpc.simulate(call, name)
            raise
        return min(int(estimate * self.gas_margin) + 1, gas_limit)

    def _fees(self, block: Mapping[str, Any]) -> dict[str, int]:
        base_fee = block.get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": int(self._rpc.retry(lambda: self._w3.eth.gas_price))}
        tip = self._priority_fee()
        return {
            "type": 2,
            "maxFeePerGas": 2 * int(base_fee) + tip,
            "maxPriorityFeePerGas": tip,
        }

    def _priority_fee(self) -> int:
        manager = self._w3.manager
        try:
            raw = self._rpc.retry(
                lambda: manager.request_blocking(
                    RPCEndpoint("eth_maxPriorityFeePerGas"), []
                )
            )
            return int(raw, 16) if isinstance(raw, str) else int(raw)
        except Web3RPCError:
            # Not every node has eth_maxPriorityFeePerGas: median tip of recent blocks.
            history = self._rpc.retry(
                lambda: self._w3.eth.fee_history(10, "latest", [50.0])
            )
            tips = sorted(int(r[0]) for r in history.get("reward", []) if r)
            return max(tips[len(tips) // 2] if tips else 0, 1)

    def _get_chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._rpc.retry(lambda: self._w3.eth.chain_id))
        return self._chain_id

    def _take_nonce(self) -> int:
        with self._lock:
            if self._next_nonce is None:
                self._next_nonce = int(
                    self._rpc.retry(
                        lambda: self._w3.eth.get_transaction_count(
                            self.address, "pending"
                        )
                    )
                )
            nonce = self._next_nonce
            self._next_nonce += 1
            return nonce

    # --- broadcast -----------------------------------------------------------------

    def broadcast(self, tx: SignedTx) -> str:
        """Send ``tx`` to the node; return its hash. Idempotent.

        Sending a transaction the node already has (pending or mined, even mined
        and reverted) is not an error; :meth:`wait` reports a revert. A nonce that
        another transaction already used makes the local counter re-read from the
        node, and raises :class:`~ledger.errors.LedgerError`: sign again
        (:meth:`send` does).

        Raises
        ------
        LedgerError
            When the node refuses the transaction (nonce, funds, fee).
        ChainConnectionError
            When the node stays unreachable.
        """
        try:
            self._rpc.retry(lambda: self._w3.eth.send_raw_transaction(tx.raw))
        except ChainConnectionError:
            with self._lock:
                self._next_nonce = None  # it may or may not have arrived
            raise
        except Exception as exc:
            message = _message(exc)
            lowered = message.lower()
            if any(m in lowered for m in _KNOWN_TX_MESSAGES):
                return tx.tx_hash
            if self._is_known(tx.tx_hash):
                # Sent before (the node then complains about its nonce), or mined
                # and reverted: Hardhat's automine answers that with an error too.
                return tx.tx_hash
            with self._lock:
                self._next_nonce = None
            if any(m in lowered for m in _NONCE_MESSAGES):
                raise _StaleNonceError(tx.tx_hash, tx.nonce, message) from exc
            if _is_refusal(exc) or isinstance(exc, ValueError):
                raise LedgerError(
                    f"the node refused transaction {tx.tx_hash}: {message}"
                ) from exc
            raise
        return tx.tx_hash

    def _is_known(self, tx_hash: str) -> bool:
        try:
            self._rpc.retry(lambda: self._w3.eth.get_transaction(HexBytes(tx_hash)))
        except TransactionNotFound:
            return False
        return True

    # --- wait ----------------------------------------------------------------------

    def wait(self, tx_hash: str) -> TxReceipt:
        """Wait until ``tx_hash`` is mined and ``confirmations`` blocks deep.

        Raises
        ------
        TransactionTimeoutError
            When that takes longer than ``timeout``.
        TransactionRevertedError
            When it was mined with status 0; the reason is recovered by replaying it
            on the state it ran on, when possible.
        ChainConnectionError
            When the node stays unreachable.
        """
        start = time.monotonic()
        key = HexBytes(tx_hash)
        while True:
            receipt = self._receipt_or_none(key)
            if receipt is not None:
                if self.confirmations == 0:
                    break
                head = int(self._rpc.retry(lambda: self._w3.eth.block_number))
                if head >= int(receipt["blockNumber"]) + self.confirmations:
                    again = self._receipt_or_none(key)  # still there after a reorg?
                    if again is not None and again["blockHash"] == receipt["blockHash"]:
                        receipt = again
                        break
            waited = time.monotonic() - start
            if waited >= self.timeout:
                raise TransactionTimeoutError(tx_hash, waited)
            time.sleep(min(self.poll_interval, max(self.timeout - waited, 0.0)))
        result = _to_receipt(receipt)
        if result.status != 1:
            raise self._mined_revert(result)
        return result

    def _receipt_or_none(self, key: HexBytes) -> Mapping[str, Any] | None:
        try:
            receipt: Mapping[str, Any] = self._rpc.retry(
                lambda: self._w3.eth.get_transaction_receipt(key)
            )
        except TransactionNotFound:
            return None
        if receipt is None or receipt.get("blockNumber") is None:
            return None  # some nodes answer a pending transaction with a stub
        return receipt

    def _mined_revert(self, receipt: TxReceipt) -> TransactionRevertedError:
        tx = self._rpc.retry(
            lambda: self._w3.eth.get_transaction(HexBytes(receipt.tx_hash))
        )
        call: dict[str, Any] = {
            "from": tx["from"],
            "data": "0x" + bytes(tx["input"]).hex(),
            "value": int(tx["value"]),
            "gas": int(tx["gas"]),
        }
        to = tx.get("to")
        if to:
            call["to"] = to
            name = self._names.get(str(to), str(to))
        else:
            name = "contract creation"
        # The parent block's state is what the transaction ran on when it was first
        # in its block; the block's own state is the next best guess.
        for block in (receipt.block_number - 1, receipt.block_number):
            data = self._rpc.revert_data(call, max(block, 0))
            if data is not None:
                return self._rpc.decode(name, data, receipt.tx_hash)
        return self._rpc.decode(name, b"", receipt.tx_hash)

    # --- send ----------------------------------------------------------------------

    def send(
        self,
        fn: ContractFunction | ContractConstructor,
        *,
        gas: int | None = None,
        value: int = 0,
    ) -> TxReceipt:
        """Sign, broadcast and wait for ``fn``; safe to call from several threads.

        Raises
        ------
        TransactionRevertedError
            When the simulation reverts, or the transaction is mined with status 0.
        TransactionTimeoutError
            When it is not mined and confirmed within ``timeout``.
        ChainConnectionError
            When the node stays unreachable.
        LedgerError
            When the node refuses the transaction.
        """
        return self._sign_and_send(partial(self.sign, fn, gas=gas, value=value))

    def _sign_and_send(self, sign: Callable[[], SignedTx]) -> TxReceipt:
        """Sign and broadcast under the lock, re-sign on a stale nonce, then wait."""
        for attempt in itertools.count(1):
            with self._lock:  # broadcast in nonce order: no gaps between threads
                signed = sign()
                try:
                    self.broadcast(signed)
                except _StaleNonceError:
                    if attempt >= _NONCE_ATTEMPTS:
                        raise
                    continue
            return self.wait(signed.tx_hash)
        raise AssertionError("unreachable")  # pragma: no cover

    def send_ether(self, to: str, wei: int) -> TxReceipt:
        """Send ``wei`` to ``to`` (gas money for a wallet); thread-safe like send.

        Raises
        ------
        TransactionTimeoutError, ChainConnectionError, LedgerError
            As :meth:`send` does.
        """
        target = Web3.to_checksum_address(to)

        def sign() -> SignedTx:
            block = self._rpc.retry(lambda: self._w3.eth.get_block("latest"))
            return self._sign_with_nonce(
                {
                    "from": self.address,
                    "to": target,
                    "value": wei,
                    "data": b"",
                    "gas": 21_000,
                    "chainId": self._get_chain_id(),
                    **self._fees(block),
                }
            )

        return self._sign_and_send(sign)


# --- RPC access shared with the contract wrappers -----------------------------------


class _Rpc:
    """Retries, revert decoding and paged log queries over one web3 instance."""

    def __init__(
        self,
        w3: Web3,
        *,
        max_retries: int = 5,
        backoff: float = 0.25,
        extra: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.w3 = w3
        self.max_retries = max_retries
        self.backoff = backoff
        self.errors = dict(_artifact_errors())
        if extra:
            self.errors.update(_error_table(extra))
        self.url = str(getattr(w3.provider, "endpoint_uri", None) or w3.provider)

    def retry(self, request: Callable[[], T]) -> T:
        """Run ``request``, retrying transient transport failures with backoff."""
        for attempt in itertools.count():
            try:
                return request()
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                if attempt >= self.max_retries:
                    raise ChainConnectionError(
                        self.url,
                        f"{type(exc).__name__}: {_message(exc)} "
                        f"(after {attempt + 1} attempts)",
                    ) from exc
                delay = min(self.backoff * 2**attempt, _BACKOFF_CAP_S)
                # Jitter spreads out clients that failed together; not security.
                time.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311
        raise AssertionError("unreachable")  # pragma: no cover

    def simulate(self, call: dict[str, Any], name: str) -> None:
        """Run ``call`` with ``eth_call``; raise the decoded revert if it reverts."""
        try:
            data = self.revert_data(call, "latest")
        except Exception as exc:
            if not _is_refusal(exc):
                raise
            raise LedgerError(
                f"the node refused to simulate a call to {name}: {_message(exc)}"
            ) from exc
        if data is not None:
            raise self.decode(name, data, None)

    def read(
        self, fn: ContractFunction, name: str, block: BlockIdentifier = "latest"
    ) -> Any:
        """``fn.call()`` with retries; a revert raises the decoded error."""
        try:
            return self.retry(lambda: fn.call(block_identifier=block))
        except Exception as exc:
            if not _is_revert(exc):
                raise
            call = {
                "from": _ZERO_ADDRESS,
                "to": fn.address,
                "data": fn._encode_transaction_data(),
            }
            data = _data_of(exc)
            if data is None:
                data = self.revert_data(call, block) or b""
            raise self.decode(name, data, None) from None

    def revert_data(self, call: dict[str, Any], block: BlockIdentifier) -> bytes | None:
        """The revert data of ``call`` on ``block``'s state; ``None`` if it succeeds."""
        try:
            self.retry(partial(self.w3.eth.call, cast(TxParams, call), block))
        except Exception as exc:
            if not _is_revert(exc):
                raise
            data = _data_of(exc)
            if data is None and isinstance(exc, TransactionFailed):
                # Only web3's plain eth-tester provider lets TransactionFailed out.
                data = self._tester_revert_data(call, block)
            return data if data is not None else b""
        return None

    def _tester_revert_data(
        self, call: dict[str, Any], block: BlockIdentifier
    ) -> bytes | None:
        """Ask eth-tester itself: web3's tester provider flattens reverts to text."""
        tester = getattr(self.w3.provider, "ethereum_tester", None)
        if tester is None:
            return None
        tx = {k: v for k, v in call.items() if v is not None}
        try:
            tester.call(tx, block)
        except TransactionFailed as exc:
            return _data_of(exc)
        return None

    def decode(
        self, contract: str, data: bytes, tx_hash: str | None
    ) -> TransactionRevertedError:
        """The :class:`TransactionRevertedError` that revert ``data`` stands for."""
        selector, body = data[:4], data[4:]
        entry = self.errors.get(selector)
        if entry is not None:
            name, names, types, inputs = entry
            try:
                values = abi_decode(list(types), body)
            except (DecodingError, ValueError, OverflowError):
                pass
            else:
                args = {
                    n: _normalize(i, v)
                    for n, i, v in zip(names, inputs, values, strict=True)
                }
                return TransactionRevertedError(contract, name, args, tx_hash, data)
        return TransactionRevertedError(contract, "unknown", {}, tx_hash, data)

    def get_logs(
        self,
        address: str,
        topics: Sequence[str | None],
        from_block: int,
        to_block: int | None,
    ) -> list[Any]:
        """Every log of ``address`` matching ``topics``, paged ≤ 5,000 blocks a query.

        A node that refuses a range as too large gets it halved.
        """
        if to_block is None:
            to_block = int(self.retry(lambda: self.w3.eth.block_number))
        logs: list[Any] = []
        span = _LOG_SPAN
        start = max(from_block, 0)
        while start <= to_block:
            end = min(start + span - 1, to_block)
            params: dict[str, Any] = {
                "address": address,
                "fromBlock": start,
                "toBlock": end,
                "topics": list(topics),
            }
            try:
                page = self.retry(
                    partial(self.w3.eth.get_logs, cast(FilterParams, params))
                )
            except Exception as exc:
                if span > 1 and _is_too_large(exc):
                    span = max(span // 2, 1)
                    continue
                raise
            logs.extend(page)
            start = end + 1
        return logs


# --- revert data and error tables ----------------------------------------------------

_ZERO_ADDRESS = "0x" + "00" * 20

# name, argument names, argument types, and the inputs' ABI (for normalising).
ErrorEntry = tuple[str, tuple[str, ...], tuple[str, ...], tuple[Mapping[str, Any], ...]]


def _error_table(abi: Sequence[Mapping[str, Any]]) -> dict[bytes, ErrorEntry]:
    table: dict[bytes, ErrorEntry] = {}
    for item in abi:
        if item.get("type") != "error":
            continue
        inputs = item.get("inputs", [])
        types = tuple(collapse_if_tuple(dict(i)) for i in inputs)
        names = tuple(i.get("name") or f"arg{n}" for n, i in enumerate(inputs))
        selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
        table[selector] = (str(item["name"]), names, types, tuple(inputs))
    return table


@cache
def _artifact_errors() -> dict[bytes, ErrorEntry]:
    table: dict[bytes, ErrorEntry] = {
        _ERROR_STRING: ("Error", ("reason",), ("string",), ({"type": "string"},)),
        _PANIC: ("Panic", ("code",), ("uint256",), ({"type": "uint256"},)),
    }
    for name in artifact_names():
        table.update(_error_table(load_artifact(name).abi))
    return table


def _normalize(abi: Mapping[str, Any], value: Any) -> Any:
    """A decoded ABI value with addresses checksummed, inside arrays and tuples too."""
    kind = str(abi.get("type", ""))
    if kind.endswith("]"):
        element = {**abi, "type": kind[: kind.rindex("[")]}
        return tuple(_normalize(element, v) for v in value)
    if kind == "tuple":
        parts = abi.get("components", [])
        return tuple(_normalize(c, v) for c, v in zip(parts, value, strict=True))
    if kind == "address":
        return Web3.to_checksum_address(value)
    return value


def _artifact_name(abi: Any, bytecode: Any) -> str | None:
    """The artifact whose ABI (and creation code, if given) is ``abi``."""
    for name in artifact_names():
        art = load_artifact(name)
        if art.abi != abi:
            continue
        if bytecode is None or _hex(bytecode) == _hex(art.bytecode):
            return name
    return None


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    text = str(value).lower()
    return text[2:] if text.startswith("0x") else text


def _is_refusal(exc: BaseException) -> bool:
    """Whether the node answered with a (non-revert, non-transient) refusal."""
    return isinstance(exc, Web3RPCError | EthValidationError) and not (
        _is_transient(exc) or _is_revert(exc)
    )


def _is_revert(exc: BaseException) -> bool:
    return isinstance(exc, ContractLogicError | TransactionFailed)


def _data_of(exc: BaseException) -> bytes | None:
    """The raw revert data carried by ``exc``, when it carries it intact."""
    data: Any = getattr(exc, "data", None)
    if isinstance(data, dict):  # Hardhat 2 and some nodes nest it: {"data": "0x…"}
        data = data.get("data")
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):
        text = data.removeprefix("Reverted ").strip()
        if re.fullmatch(r"0x(?:[0-9a-fA-F]{2})*", text):
            return bytes.fromhex(text[2:])
    if isinstance(exc, TransactionFailed) and exc.args:
        first = exc.args[0]
        if isinstance(first, bytes | bytearray):
            return bytes(first)
        if isinstance(first, str):
            # eth-tester passes the bytes' repr, web3 may prefix it with a phrase.
            text = first.removeprefix("execution reverted: ")
            if text.startswith(("b'", 'b"')):
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    return None
                if isinstance(value, bytes):
                    return value
    return None


def _rpc_error(exc: BaseException) -> tuple[int | None, str]:
    """The JSON-RPC error code and message in ``exc``, when it has them."""
    if isinstance(exc, Web3RPCError):
        response = exc.rpc_response or {}
        error = response.get("error")
        if isinstance(error, Mapping):
            code = error.get("code")
            return (code if isinstance(code, int) else None, str(error.get("message")))
        return None, exc.message
    return None, str(exc)


def _message(exc: BaseException) -> str:
    if isinstance(exc, Web3RPCError):
        return _rpc_error(exc)[1]
    return str(exc) or type(exc).__name__


def _is_too_large(exc: BaseException) -> bool:
    _, message = _rpc_error(exc)
    lowered = message.lower()
    return any(m in lowered for m in _TOO_LARGE_MESSAGES)


def _is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a transport hiccup worth retrying (never a revert)."""
    if _is_revert(exc) or _is_too_large(exc):
        return False
    if isinstance(exc, requests.HTTPError):
        response = exc.response
        return response is not None and response.status_code in _TRANSIENT_HTTP
    if isinstance(
        exc,
        ConnectionError
        | TimeoutError
        | requests.ConnectionError
        | requests.Timeout
        | ProviderConnectionError
        | RequestTimedOut
        | TooManyRequests,
    ):
        return True
    if isinstance(exc, Web3RPCError):
        code, message = _rpc_error(exc)
        if code in _TRANSIENT_CODES or code == 429:
            return True
        lowered = message.lower()
        return any(m in lowered for m in _TRANSIENT_MESSAGES)
    return False


def _to_receipt(receipt: Mapping[str, Any]) -> TxReceipt:
    created = receipt.get("contractAddress")
    return TxReceipt(
        tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
        block_number=int(receipt["blockNumber"]),
        block_hash="0x" + bytes(receipt["blockHash"]).hex(),
        gas_used=int(receipt["gasUsed"]),
        status=int(receipt["status"]),
        contract_address=str(created) if created else None,
        logs=tuple(receipt["logs"]),
    )

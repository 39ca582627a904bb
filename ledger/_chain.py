"""Chain backends: an embedded, persistent in-process EVM, or a JSON-RPC node.

:func:`open_embedded` runs py-evm (through eth-tester, Prague rules) inside this
process, on a directory that keeps the whole chain: state, blocks, transactions,
receipts and so event logs. Closing and reopening the directory, in this process or
another, continues from the old head without replaying anything.
:func:`connect_rpc` talks to a node over HTTP JSON-RPC (Hardhat, Anvil, Geth, a
provider). Both give a :class:`Chain` whose :attr:`Chain.w3` is a synchronous
:class:`~web3.Web3`; ledger code signs transactions locally and sends them with
``eth_sendRawTransaction`` either way.

How the embedded chain persists
-------------------------------
py-evm keeps everything (state-trie nodes, headers, block bodies, receipt tries, the
canonical-chain index, the transaction-hash index) in one key-value database. Here
that database is a SQLite table (``chain.sqlite3``, WAL journal, ``synchronous=FULL``).
Writes made while serving one JSON-RPC request are buffered in memory and committed
in a single SQLite transaction when the request ends, so a crash leaves the chain at
the head of the last completed request, never with a half-written block. Reopening
reads the canonical head and builds the pending block on it: constant time, whatever
the history. Receipts and logs live in py-evm's receipt tries, so they persist with
everything else; eth-tester's filters (``eth_newFilter``) and ``evm_snapshot`` ids
are per-process, as a node's are across a restart. Transaction and receipt lookups
use py-evm's transaction-hash index (eth-tester walks back over every block), and
``eth_getLogs`` skips blocks by their header bloom and reads logs straight from the
receipt tries; it also takes ``blockHash``.

One process holds a chain directory at a time (an exclusive ``flock`` on
``chain.lock``, which records the holder's pid). Do not fork while holding it: a
forked child shares the lock and the SQLite connection.

The embedded chain answers errors the way a JSON-RPC node does: a reverted
``eth_call`` / ``eth_estimateGas`` is an error with code 3 and the revert data as hex
(so web3 raises the same ``ContractLogicError`` family as against Geth), and a
transaction the chain refuses (nonce, balance, chain id, gas) is an error with code
-32000 and the reason (web3 raises ``Web3RPCError``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self, cast

import requests
from eth.abc import (
    AtomicWriteBatchAPI,
    BlockAPI,
    BlockHeaderAPI,
    SignedTransactionAPI,
    TransactionBuilderAPI,
    VirtualMachineAPI,
)
from eth.chains.base import MiningChain
from eth.db.atomic import AtomicDBWriteBatch
from eth.db.backends.base import BaseAtomicDB
from eth.exceptions import HeaderNotFound, Revert
from eth.exceptions import TransactionNotFound as EVMTransactionNotFound
from eth.vm.forks.prague import PragueVM
from eth.vm.spoof import SpoofTransaction
from eth_bloom.bloom import BloomFilter
from eth_tester import EthereumTester  # type: ignore[import-untyped]
from eth_tester.backends.pyevm.main import (  # type: ignore[import-untyped]
    PyEVMBackend,
    _get_block_by_number,
)
from eth_tester.backends.pyevm.serializers import (  # type: ignore[import-untyped]
    serialize_transaction,
    serialize_transaction_receipt,
)
from eth_tester.exceptions import (  # type: ignore[import-untyped]
    TransactionFailed,
    TransactionNotFound,
)
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_tester.utils.filters import check_if_log_matches  # type: ignore[import-untyped]
from eth_typing import Address, BlockNumber, Hash32
from eth_utils.address import is_checksum_address, to_canonical_address
from eth_utils.encoding import int_to_big_endian
from eth_utils.exceptions import ValidationError as EVMValidationError
from eth_utils.hexadecimal import decode_hex, encode_hex
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.exceptions import Web3Exception
from web3.providers.eth_tester.defaults import API_ENDPOINTS, static_return
from web3.types import RPCEndpoint, RPCResponse

from ledger.errors import ChainConnectionError, LedgerError

__all__ = [
    "EMBEDDED_CHAIN_ID",
    "EMBEDDED_NETWORK",
    "Chain",
    "ChainConnectionError",
    "ChainLockedError",
    "connect_rpc",
    "open_embedded",
]

# eth-tester's chain id; web3's tester provider answers eth_chainId with it too.
EMBEDDED_CHAIN_ID = 131277322940537
EMBEDDED_NETWORK = "embedded"

_DB_FILE = "chain.sqlite3"
_LOCK_FILE = "chain.lock"
_FORMAT = "veilx-embedded-chain/1"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL)"
    " WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_NO_BALANCES: Mapping[str, int] = MappingProxyType({})

# JSON-RPC error codes, as Geth uses them.
_REVERTED = 3
_REFUSED = -32000
_NO_METHOD = -32601

_DEFAULT_FROM = frozenset({"eth_call", "eth_estimateGas", "eth_createAccessList"})
_ZERO_ADDRESS = "0x" + "00" * 20
_BLOB_TX_TYPE = 3  # eth-tester strips the blob sidecar itself
_FEE_FIELDS = ("gas_price", "max_fee_per_gas", "max_priority_fee_per_gas")


class ChainLockedError(LedgerError):
    """Another process (or another :class:`Chain` here) holds the embedded chain.

    Attributes
    ----------
    path
        The lock file.
    pid
        The holder's process id, or ``None`` when it has not written it yet.
    """

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"embedded chain {path.parent} is held by {holder} ({path})")
        self.path = path
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.pid))


class Chain:
    """A connected chain: a web3 instance plus what kind it is.

    Use it as a context manager, or call :meth:`close` when done.

    Attributes
    ----------
    w3
        The synchronous web3 instance. For the embedded chain it is safe to use from
        several threads at once (requests are serialised).
    kind
        ``"embedded"`` (in-process, persistent) or ``"rpc"`` (a JSON-RPC node).
    network
        ``"embedded"`` for the embedded chain, else the name given to
        :func:`connect_rpc`.
    chain_id
        The chain id, as the chain reports it.
    """

    def __init__(
        self,
        w3: Web3,
        *,
        kind: Literal["embedded", "rpc"],
        network: str,
        chain_id: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.w3 = w3
        self.kind: Literal["embedded", "rpc"] = kind
        self.network = network
        self.chain_id = chain_id
        self._on_close = on_close
        self._close_lock = threading.Lock()

    def close(self) -> None:
        """Release the chain: flush and unlock the embedded one. Idempotent."""
        with self._close_lock:
            on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Chain(kind={self.kind!r}, network={self.network!r}, "
            f"chain_id={self.chain_id})"
        )


# --- the embedded chain ------------------------------------------------------------


class _SQLiteStore(BaseAtomicDB):
    """py-evm's key-value database in SQLite; writes wait in memory until commit.

    Reads see uncommitted writes. :meth:`commit` writes them all in one SQLite
    transaction. Not thread-safe by itself: the provider's lock serialises use.
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
        except BaseException:
            self._conn.close()
            raise
        self._pending: dict[bytes, bytes | None] = {}

    def __getitem__(self, key: bytes) -> bytes:
        if key in self._pending:
            value = self._pending[key]
            if value is None:
                raise KeyError(key)
            return value
        row = self._conn.execute(
            "SELECT value FROM kv WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            raise KeyError(key)
        return bytes(row[0])

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._pending[bytes(key)] = bytes(value)

    def __delitem__(self, key: bytes) -> None:
        if not self._exists(key):
            raise KeyError(key)
        self._pending[bytes(key)] = None

    def _exists(self, key: bytes) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    @contextlib.contextmanager
    def atomic_batch(self) -> Iterator[AtomicWriteBatchAPI]:
        """Writes inside the block land in the buffer together, or not at all."""
        with AtomicDBWriteBatch._commit_unless_raises(self) as batch:
            yield batch

    def meta(self) -> dict[str, str]:
        """The committed metadata (empty for a chain never initialised)."""
        rows = self._conn.execute("SELECT name, value FROM meta").fetchall()
        return {str(name): str(value) for name, value in rows}

    def commit(self, meta: Mapping[str, str] = MappingProxyType({})) -> None:
        """Write the buffered changes (and ``meta``) in one SQLite transaction.

        On failure nothing is written and the buffer is kept, to be retried.
        """
        if not self._pending and not meta:
            return
        upserts = [(k, v) for k, v in self._pending.items() if v is not None]
        deletes = [(k,) for k, v in self._pending.items() if v is None]
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT INTO kv (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                upserts,
            )
            self._conn.executemany("DELETE FROM kv WHERE key = ?", deletes)
            self._conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                list(meta.items()),
            )
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:  # SQLite may have rolled back already
                self._conn.execute("ROLLBACK")
            raise
        self._pending.clear()

    def close(self, *, commit: bool = True) -> None:
        """Commit (unless told not to), fold the WAL into the database, close."""
        try:
            if commit:
                self.commit()
            self._pending.clear()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()


class _EmbeddedEVM(MiningChain):
    """eth-tester's tester chain (Prague from genesis, constant gas limit)."""

    chain_id = EMBEDDED_CHAIN_ID
    vm_configuration = ((BlockNumber(0), PragueVM),)

    def create_header_from_parent(
        self, parent_header: BlockHeaderAPI, **header_params: Any
    ) -> BlockHeaderAPI:
        """The next header, keeping the parent's gas limit (as eth-tester does)."""
        header_params["gas_limit"] = parent_header.gas_limit
        return super().create_header_from_parent(parent_header, **header_params)

    def get_transaction_builder(self) -> type[TransactionBuilderAPI]:
        """The transaction builder of the current VM (eth-tester calls this)."""
        return self.get_vm().get_transaction_builder()


class _Reverted(TransactionFailed):  # type: ignore[misc]
    """An ``eth_call`` / ``eth_estimateGas`` failed; ``data`` is the revert data.

    ``data`` is empty for a failure other than ``REVERT`` (invalid opcode, out of
    gas), whose cause is in ``message``.
    """

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


def _failure(error: BaseException | None) -> _Reverted:
    if isinstance(error, Revert):
        data = error.args[0] if error.args and isinstance(error.args[0], bytes) else b""
        return _Reverted("execution reverted", bytes(data))
    return _Reverted(str(error) or type(error).__name__, b"")


class _Backend(PyEVMBackend):  # type: ignore[misc]
    """eth-tester's py-evm backend over an existing (persistent) chain.

    Transactions and receipts are found through py-evm's transaction-hash index
    instead of eth-tester's walk back over every block, and failed calls keep their
    revert data.
    """

    def __init__(self, chain: _EmbeddedEVM) -> None:
        # PyEVMBackend.__init__ would build a fresh in-memory chain; this adopts one.
        self.account_keys: tuple[Any, ...] = ()
        self.chain = chain

    def reset_to_genesis(self, *args: Any, **kwargs: Any) -> None:
        """Refuse: the embedded chain's history is permanent."""
        raise TesterValidationError(
            "the embedded chain is persistent and cannot be reset to genesis"
        )

    def _locate(self, transaction_hash: bytes) -> tuple[BlockAPI, Any, int]:
        pending = self.chain.get_block()
        for index, tx in enumerate(pending.transactions):
            if tx.hash == transaction_hash:
                return pending, tx, index
        try:
            number, index = self.chain.chaindb.get_transaction_index(
                Hash32(transaction_hash)
            )
        except EVMTransactionNotFound:
            raise TransactionNotFound(
                f"No transaction found for hash {encode_hex(transaction_hash)}"
            ) from None
        block = self.chain.get_canonical_block_by_number(number)
        transaction: SignedTransactionAPI = block.transactions[index]
        return block, transaction, index

    def get_transaction_by_hash(self, transaction_hash: bytes) -> Any:
        """The transaction ``transaction_hash``, serialised for eth-tester."""
        block, transaction, index = self._locate(transaction_hash)
        is_pending = block.number == self.chain.get_block().number
        return serialize_transaction(block, transaction, index, is_pending)

    def get_transaction_receipt(self, transaction_hash: bytes) -> Any:
        """The receipt of ``transaction_hash``, serialised for eth-tester."""
        block, transaction, index = self._locate(transaction_hash)
        is_pending = block.number == self.chain.get_block().number
        receipts = block.get_receipts(self.chain.chaindb)
        vm: VirtualMachineAPI = self.chain.get_vm()
        return serialize_transaction_receipt(
            block, receipts, transaction, index, is_pending, vm
        )

    def send_raw_transaction(self, raw_transaction: bytes) -> bytes:
        """Check the chain id (py-evm does not), then apply the transaction."""
        if raw_transaction[:1] != bytes([_BLOB_TX_TYPE]):
            builder = self.chain.get_vm().get_transaction_builder()
            chain_id = builder.decode(raw_transaction).chain_id
            if chain_id is not None and chain_id != self.chain.chain_id:
                raise TesterValidationError(
                    f"invalid chain id {chain_id}: this chain is {self.chain.chain_id}"
                )
        self._refresh_timestamp()
        return bytes(super().send_raw_transaction(raw_transaction))

    def _refresh_timestamp(self) -> None:
        """Date the pending block now, not when the previous block was mined.

        py-evm builds the next header as soon as a block is mined (or the chain is
        opened), so an idle chain would stamp its next block with a stale time.
        A later time set by ``time_travel`` is kept.
        """
        header = self.chain.header
        if not self.chain.get_block().transactions and header.timestamp < _now():
            self.chain.set_header_timestamp(_now())

    def call(self, transaction: dict[str, Any], block_number: Any = "latest") -> bytes:
        """Run ``transaction`` on ``block_number``'s state and throw the result away.

        Without fee fields it runs at zero gas price and zero base fee, as a node's
        ``eth_call`` does, so the sender needs no balance for gas. A failure raises
        ``_Reverted`` carrying the revert data.
        """
        defaulted, free = _without_fees(transaction)
        if "gas" not in defaulted:
            defaulted["gas"] = self._max_available_gas()
        unsigned = self._get_normalized_and_unsigned_evm_transaction(
            defaulted, block_number
        )
        spoofed = SpoofTransaction(unsigned, from_=transaction["from"])
        header: BlockHeaderAPI = _get_block_by_number(self.chain, block_number).header
        if free:
            header = header.copy(base_fee_per_gas=0)
        state = self.chain.get_vm(at_header=header).state
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(cast(SignedTransactionAPI, spoofed))
        finally:
            state.revert(snapshot)
        if computation.is_error:
            raise _failure(computation.error)
        return bytes(computation.output)

    def estimate_gas(
        self, transaction: dict[str, Any], block_number: Any = "latest"
    ) -> int:
        """Estimate gas; a reverting transaction raises ``_Reverted`` with its data.

        Fee fields default to zero as in :meth:`call`; ``"pending"`` is the latest
        state (every transaction is mined at once).
        """
        defaulted, _ = _without_fees(transaction)
        if block_number == "pending":
            block_number = "latest"
        try:
            return int(super().estimate_gas(defaulted, block_number))
        except TransactionFailed as exc:
            raise _failure(exc.__cause__ or exc) from exc


def _now() -> int:
    return int(time.time())


def _without_fees(transaction: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """``transaction`` with zero fees when it names none; and whether it did not."""
    if any(field in transaction for field in _FEE_FIELDS):
        return dict(transaction), False
    return {
        **transaction,
        "max_fee_per_gas": 0,
        "max_priority_fee_per_gas": 0,
    }, True


class _Tester(EthereumTester):  # type: ignore[misc]
    """eth-tester with an ``eth_getLogs`` that scales with the blocks that match.

    eth-tester rebuilds every receipt in the range (recovering each sender's
    signature); this checks each header's bloom filter first and reads the logs of
    candidate blocks straight from their receipt tries.
    """

    backend: _Backend

    def get_logs(
        self,
        from_block: Any = None,
        to_block: Any = None,
        address: Any = None,
        topics: Any = None,
        **extra: Any,
    ) -> tuple[Any, ...]:
        """The logs matching the filter, as eth-tester's ``get_logs`` returns them.

        Also takes ``blockHash`` (one block, canonical or not), which eth-tester
        does not.
        """
        block_hash = extra.pop("blockHash", None)
        if extra:
            raise TesterValidationError(f"unknown log filter fields {sorted(extra)}")
        headers: Iterator[BlockHeaderAPI]
        if block_hash is not None:
            if from_block is not None or to_block is not None:
                raise TesterValidationError(
                    "a log filter takes blockHash or fromBlock/toBlock, not both"
                )
            header = self._header_by_hash(block_hash)
            from_block = to_block = int(header.block_number)
            headers = iter((header,))
        else:
            headers = self._headers_between(from_block, to_block)
        self.validator.validate_inbound_filter_params(
            from_block=from_block, to_block=to_block, address=address, topics=topics
        )
        raw_from, raw_to, raw_address, raw_topics = (
            self.normalizer.normalize_inbound_filter_params(
                from_block=from_block,
                to_block=to_block,
                address=address,
                topics=topics,
            )
        )
        matches = functools.partial(
            check_if_log_matches,
            from_block=raw_from,
            to_block=raw_to,
            addresses=raw_address,
            topics=raw_topics,
        )
        wanted = _bloom_terms(raw_address, raw_topics)
        found: list[Any] = []
        for header in headers:
            bloom = BloomFilter(header.bloom)
            if all(any(term in bloom for term in group) for group in wanted):
                found.extend(self._block_logs(header, matches))
        return tuple(found)

    def _header_by_hash(self, block_hash: Any) -> BlockHeaderAPI:
        try:
            raw = decode_hex(block_hash) if isinstance(block_hash, str) else block_hash
            return self.backend.chain.chaindb.get_block_header_by_hash(Hash32(raw))
        except (HeaderNotFound, ValueError, TypeError):
            raise TesterValidationError(f"unknown block {block_hash!r}") from None

    def _headers_between(
        self, from_block: Any, to_block: Any
    ) -> Iterator[BlockHeaderAPI]:
        chain = self.backend.chain
        head = int(chain.get_canonical_head().block_number)
        lower = max(self._block_bound(from_block, head), 0)
        upper = min(self._block_bound(to_block, head), head)
        for number in range(lower, upper + 1):
            yield chain.chaindb.get_canonical_block_header_by_number(
                BlockNumber(number)
            )

    def _block_bound(self, bound: Any, head: int) -> int:
        if bound is None or bound in ("latest", "safe", "finalized", "pending"):
            return head
        if bound == "earliest":
            return 0
        return int(bound)

    def _block_logs(
        self, header: BlockHeaderAPI, matches: Callable[..., bool]
    ) -> Iterator[Any]:
        chain = self.backend.chain
        block_class = chain.get_vm_class_for_block_number(
            header.block_number
        ).get_block_class()
        receipts = chain.chaindb.get_receipts(header, block_class.get_receipt_builder())
        hashes = chain.chaindb.get_block_transaction_hashes(header)
        log_index = 0
        for tx_index, (tx_hash, receipt) in enumerate(
            zip(hashes, receipts, strict=True)
        ):
            for log in receipt.logs:
                raw = {
                    "type": "mined",
                    "log_index": log_index,
                    "transaction_index": tx_index,
                    "transaction_hash": tx_hash,
                    "block_hash": header.hash,
                    "block_number": header.block_number,
                    "address": log.address,
                    "data": log.data,
                    "topics": [
                        int_to_big_endian(t).rjust(32, b"\0") for t in log.topics
                    ],
                }
                log_index += 1
                # The same round trip eth-tester's get_logs makes, so entries compare
                # and print exactly as eth-tester's own.
                entry = self.normalizer.normalize_inbound_log_entry(
                    self.normalizer.normalize_outbound_log_entry(raw)
                )
                if matches(entry):
                    yield self.normalizer.normalize_outbound_log_entry(entry)


def _bloom_terms(addresses: Any, topics: Any) -> list[tuple[bytes, ...]]:
    """Groups of values a matching block's bloom must hold (one of each group)."""
    groups: list[tuple[bytes, ...]] = []
    if isinstance(addresses, bytes):
        groups.append((addresses,))
    elif isinstance(addresses, tuple | list) and addresses:
        groups.append(tuple(addresses))
    for topic in topics or ():
        if isinstance(topic, bytes):
            groups.append((topic,))
        elif isinstance(topic, tuple | list) and topic and None not in topic:
            groups.append(tuple(topic))
    return groups


def _error(request_id: int, code: int, message: str, data: str | None) -> RPCResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "error": error})


class _EmbeddedProvider(EthereumTesterProvider):
    """eth-tester behind a lock, committing the store after every request."""

    def __init__(self, tester: Any, store: _SQLiteStore, url: str) -> None:
        endpoints = {name: dict(methods) for name, methods in API_ENDPOINTS.items()}
        endpoints["eth"]["chainId"] = static_return(EMBEDDED_CHAIN_ID)
        endpoints["net"]["version"] = static_return(str(EMBEDDED_CHAIN_ID))
        super().__init__(ethereum_tester=tester, api_endpoints=endpoints)
        self._store: _SQLiteStore | None = store
        self._url = url
        self._lock = threading.RLock()
        self._next_id = 0

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        """Serve one request, then commit what it wrote."""
        with self._lock:
            store = self._store
            if store is None:
                raise ChainConnectionError(self._url, "the embedded chain is closed")
            self._next_id += 1
            try:
                return self._dispatch(self._next_id, method, params)
            finally:
                store.commit()

    def _dispatch(self, request_id: int, method: str, params: Any) -> RPCResponse:
        if (
            method in _DEFAULT_FROM
            and params
            and isinstance(params[0], dict)
            and not params[0].get("from")
        ):
            # Nodes run calls without a sender from the zero address; eth-tester
            # insists on one.
            params = [{**params[0], "from": _ZERO_ADDRESS}, *params[1:]]
        namespace, _, endpoint = method.partition("_")
        delegator = (self.api_endpoints or {}).get(namespace, {}).get(endpoint)
        if delegator is None:
            return _error(request_id, _NO_METHOD, f"method {method} not found", None)
        try:
            result = delegator(self.ethereum_tester, params)
        except _Reverted as exc:
            return _error(request_id, _REVERTED, exc.message, encode_hex(exc.data))
        except (TransactionFailed, TesterValidationError, EVMValidationError) as exc:
            return _error(request_id, _REFUSED, str(exc), None)
        except NotImplementedError:
            return _error(
                request_id, _NO_METHOD, f"method {method} not supported", None
            )
        return cast(RPCResponse, {"jsonrpc": "2.0", "id": request_id, "result": result})

    def is_connected(self, show_traceback: bool = False) -> bool:  # type: ignore[override]
        """Whether the chain is still open."""
        return self._store is not None

    def shut(self) -> None:
        """Refuse further requests and close the store (after any running one)."""
        with self._lock:
            store, self._store = self._store, None
            if store is not None:
                store.close()


def _lock_directory(directory: Path) -> int:
    """Take the directory's exclusive lock; return the lock file's descriptor."""
    path = directory / _LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        raise ChainLockedError(path, int(raw) if raw.isdigit() else None) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _genesis_state(balances: Mapping[str, int]) -> dict[Address, Any]:
    state: dict[Address, Any] = {}
    for address, wei in balances.items():
        if not is_checksum_address(address):
            raise ValueError(f"genesis address {address!r} is not checksummed")
        if isinstance(wei, bool) or not isinstance(wei, int) or wei < 0:
            raise ValueError(f"genesis balance of {address} must be wei >= 0")
        state[to_canonical_address(address)] = {
            "balance": wei,
            "nonce": 0,
            "code": b"",
            "storage": {},
        }
    return state


def _load_chain(
    store: _SQLiteStore, genesis_balances: Mapping[str, int]
) -> _EmbeddedEVM:
    meta = store.meta()
    if meta:
        if meta.get("format") != _FORMAT:
            raise ValueError(f"unknown embedded chain format {meta.get('format')!r}")
        if int(meta["chain_id"]) != EMBEDDED_CHAIN_ID:
            raise ValueError(f"embedded chain has chain id {meta['chain_id']}")
        return _EmbeddedEVM(store)
    # A fresh directory (or one whose creation never committed): build genesis and
    # commit it together with the metadata that marks the chain as initialised.
    params = PyEVMBackend.generate_genesis_params()
    chain = cast(
        _EmbeddedEVM,
        _EmbeddedEVM.from_genesis(store, params, _genesis_state(genesis_balances)),
    )
    store.commit({"format": _FORMAT, "chain_id": str(EMBEDDED_CHAIN_ID)})
    return chain


def open_embedded(
    directory: Path, *, genesis_balances: Mapping[str, int] = _NO_BALANCES
) -> Chain:
    """Open (creating if absent) the embedded chain kept in ``directory``.

    Parameters
    ----------
    directory
        Where the chain lives; created with mode 0700 when missing.
    genesis_balances
        Checksum address → balance in wei, funded in the genesis block. Used only
        when the chain is created; ignored when an existing chain is reopened.

    Raises
    ------
    ChainLockedError
        When another process, or another open :class:`Chain` in this one, holds
        ``directory``.
    """
    directory = Path(directory)
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass  # an existing chain (or a directory the caller made) keeps its mode
    else:
        directory.chmod(0o700)  # mkdir's mode is subject to the umask
    lock_fd = _lock_directory(directory)
    try:
        store = _SQLiteStore(directory / _DB_FILE)
        try:
            evm = _load_chain(store, genesis_balances)
            tester = _Tester(backend=_Backend(evm), auto_mine_transactions=True)
            provider = _EmbeddedProvider(tester, store, f"embedded:{directory}")
        except BaseException:
            store.close(commit=False)  # a half-built genesis is not kept
            raise
    except BaseException:
        os.close(lock_fd)
        raise

    def release() -> None:
        try:
            provider.shut()
        finally:
            os.close(lock_fd)  # closing the descriptor drops the flock

    return Chain(
        Web3(provider),
        kind="embedded",
        network=EMBEDDED_NETWORK,
        chain_id=EMBEDDED_CHAIN_ID,
        on_close=release,
    )


# --- a JSON-RPC node ---------------------------------------------------------------


def connect_rpc(url: str, *, network: str = "local", timeout: float = 10.0) -> Chain:
    """Connect to the JSON-RPC node at ``url`` (HTTP) and check it answers.

    Parameters
    ----------
    url
        The node's HTTP(S) JSON-RPC endpoint.
    network
        A name for the network (``"local"``, ``"sepolia"``, …), kept on the chain.
    timeout
        Seconds to wait for each request.

    Raises
    ------
    ChainConnectionError
        When the node is unreachable or does not answer ``eth_chainId``.

    Notes
    -----
    web3's own retries are off: a failing request fails at once, and the caller
    (the outbox relay) decides when to try again.
    """
    session = requests.Session()
    provider = HTTPProvider(
        url,
        request_kwargs={"timeout": timeout},
        session=session,
        exception_retry_configuration=None,
    )
    w3 = Web3(provider)
    try:
        chain_id = int(w3.eth.chain_id)
    except (requests.RequestException, Web3Exception, OSError, ValueError) as exc:
        session.close()
        raise ChainConnectionError(url, f"{type(exc).__name__}: {exc}") from exc
    return Chain(
        w3, kind="rpc", network=network, chain_id=chain_id, on_close=session.close
    )

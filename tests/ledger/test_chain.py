"""Chain backends: the persistent embedded chain, and a Hardhat node over JSON-RPC.

Every transaction here is signed locally (eth-account) and sent with
``eth_sendRawTransaction``, as the ledger does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_tester import EthereumTester  # type: ignore[import-untyped]
from eth_tester.exceptions import (  # type: ignore[import-untyped]
    ValidationError as EthTesterValidationError,
)
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.types import RPCEndpoint, TxReceipt

import ledger._chain as chain_module
from ledger._artifacts import load_artifact
from ledger._chain import (
    EMBEDDED_CHAIN_ID,
    Chain,
    ChainConnectionError,
    ChainLockedError,
    connect_rpc,
    open_embedded,
)
from tests.ledger._hardhat import (
    HARDHAT_CHAIN_ID,
    TEST_ADDRESSES,
    TEST_BALANCE,
    TEST_KEYS,
    FundedChain,
)

REPO = Path(__file__).resolve().parents[2]
ROOT = keccak(text="veilx batch root")
BATCH_ANCHORED = keccak(text="BatchAnchored(uint64,bytes32,uint32)")
TIP = 10**9
CHILD_TIMEOUT = 120  # seconds before a stuck child process fails the test


# --- helpers (also used by the child processes below) ------------------------------


def send(w3: Web3, key: str, tx: dict[str, Any]) -> TxReceipt:
    """Sign ``tx`` with ``key``, send it raw, and return its receipt."""
    sender = Account.from_key(key).address
    tx = dict(tx)
    tx.setdefault("nonce", w3.eth.get_transaction_count(sender, "pending"))
    tx.setdefault("chainId", w3.eth.chain_id)
    base_fee = w3.eth.get_block("latest").get("baseFeePerGas", 0)
    tx.setdefault("maxPriorityFeePerGas", TIP)
    tx.setdefault("maxFeePerGas", 2 * base_fee + TIP)
    tx.setdefault("value", 0)
    if "gas" not in tx:
        estimate = {k: v for k, v in tx.items() if k != "nonce"} | {"from": sender}
        tx["gas"] = w3.eth.estimate_gas(estimate)  # type: ignore[arg-type]
    signed = Account.sign_transaction(tx, key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash)


def deploy(w3: Web3, key: str, name: str, *args: Any) -> Contract:
    """Deploy artifact ``name`` with a signed transaction; return the contract."""
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    sender = Account.from_key(key).address
    receipt = send(
        w3, key, factory.constructor(*args).build_transaction({"from": sender})
    )
    assert receipt["status"] == 1
    contract = w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)
    assert isinstance(contract, Contract)
    return contract


def call_tx(fn: Any, key: str) -> dict[str, Any]:
    """The transaction dict of contract call ``fn`` from ``key``'s account."""
    built: dict[str, Any] = fn.build_transaction(
        {"from": Account.from_key(key).address}
    )
    return {k: built[k] for k in ("to", "data")}


def anchor_batch(w3: Web3, key: str, batch_id: int) -> dict[str, str]:
    """Deploy a ReceiptAnchor, make ``key`` its operator, anchor ``batch_id``."""
    admin = Account.from_key(key).address
    anchor = deploy(w3, key, "ReceiptAnchor", admin)
    operator = anchor.functions.OPERATOR_ROLE().call()
    assert send(w3, key, call_tx(anchor.functions.grantRole(operator, admin), key))[
        "status"
    ]
    receipt = send(w3, key, call_tx(anchor.functions.anchor(ROOT, batch_id, 3), key))
    assert receipt["status"] == 1
    return {"anchor": anchor.address, "tx": receipt["transactionHash"].to_0x_hex()}


def anchor_contract(w3: Web3, address: str) -> Contract:
    """The ReceiptAnchor at ``address``."""
    return w3.eth.contract(
        address=Web3.to_checksum_address(address),
        abi=load_artifact("ReceiptAnchor").abi,
    )


def check_anchored(w3: Web3, key: str, written: dict[str, str], batch_id: int) -> None:
    """Read back everything :func:`anchor_batch` wrote, then anchor one more batch."""
    anchor = anchor_contract(w3, written["anchor"])
    assert anchor.functions.rootOf(batch_id).call() == ROOT  # eth_call
    topic = "0x" + batch_id.to_bytes(32, "big").hex()
    logs = w3.eth.get_logs(
        {
            "fromBlock": 0,
            "toBlock": "latest",
            "address": anchor.address,
            "topics": ["0x" + BATCH_ANCHORED.hex(), topic],
        }
    )
    assert len(logs) == 1
    event = anchor.events.BatchAnchored().process_log(logs[0])
    assert event["args"] == {"batchId": batch_id, "root": ROOT, "count": 3}
    receipt = w3.eth.get_transaction_receipt(written["tx"])  # type: ignore[arg-type]
    assert receipt["status"] == 1
    assert receipt["transactionHash"] == logs[0]["transactionHash"]
    block = w3.eth.get_block(receipt["blockNumber"])
    assert receipt["transactionHash"] in block["transactions"]

    sender = Account.from_key(key).address
    nonce = w3.eth.get_transaction_count(sender)
    assert w3.eth.get_transaction_count(sender, "pending") == nonce
    head = w3.eth.block_number
    fn = anchor.functions.anchor(ROOT, batch_id + 1, 5)
    assert fn.estimate_gas({"from": sender}) > 21_000
    again = send(w3, key, call_tx(fn, key))
    assert again["status"] == 1
    assert again["blockNumber"] == head + 1
    assert w3.eth.get_transaction_count(sender) == nonce + 1
    assert anchor.functions.rootOf(batch_id + 1).call() == ROOT


def revert_data(exc: ContractLogicError) -> str:
    """The hex revert data of ``exc`` (Hardhat nests it one level deeper)."""
    data = exc.data
    if isinstance(data, dict):
        data = data["data"]
    assert isinstance(data, str)
    return data


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python process (repository root as cwd)."""
    return subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )


# --- both backends -----------------------------------------------------------------


def test_round_trip(chain: FundedChain) -> None:
    c, key = chain
    w3 = c.w3
    assert c.chain_id == w3.eth.chain_id
    written = anchor_batch(w3, key, 7)
    check_anchored(w3, key, written, 7)

    anchor = anchor_contract(w3, written["anchor"])
    with pytest.raises(ContractLogicError) as info:
        anchor.functions.anchor(ROOT, 7, 3).call(
            {"from": Account.from_key(key).address}
        )
    selector = "0x" + keccak(text="BatchAlreadyAnchored(uint64,bytes32)")[:4].hex()
    assert revert_data(info.value).startswith(selector)
    with pytest.raises(ContractLogicError) as info:
        anchor.functions.anchor(ROOT, 7, 3).estimate_gas(
            {"from": Account.from_key(key).address}
        )
    assert revert_data(info.value).startswith(selector)

    # A transaction the chain refuses (a used nonce) is a JSON-RPC error.
    stale = {"to": TEST_ADDRESSES[1], "value": 1, "gas": 21_000, "nonce": 0}
    with pytest.raises(Web3RPCError):
        send(w3, key, stale)


def test_transient_storage_runs(chain: FundedChain) -> None:
    # Settlement's nonReentrant uses TSTORE/TLOAD (Cancun+); the artifacts are
    # compiled for Prague. The guard runs before the custom error is raised.
    c, key = chain
    admin = Account.from_key(key).address
    registry = deploy(c.w3, key, "DataAssetRegistry", admin)
    # Any non-zero token address: withdraw() stops at NothingToWithdraw before it.
    token = registry.address
    settlement = deploy(c.w3, key, "Settlement", registry.address, token, admin)
    with pytest.raises(ContractLogicError) as info:
        settlement.functions.withdraw().call({"from": admin})
    selector = keccak(text="NothingToWithdraw(address)")[:4]
    expected = "0x" + (selector + bytes(12) + bytes.fromhex(admin[2:])).hex()
    assert revert_data(info.value).lower() == expected.lower()


# --- the embedded chain ------------------------------------------------------------


def test_embedded_chain_identity(embedded_chain: Chain) -> None:
    assert embedded_chain.kind == "embedded"
    assert embedded_chain.network == "embedded"
    assert (
        embedded_chain.chain_id == EMBEDDED_CHAIN_ID == embedded_chain.w3.eth.chain_id
    )
    assert embedded_chain.w3.eth.block_number == 0
    assert embedded_chain.w3.eth.get_balance(TEST_ADDRESSES[0]) == TEST_BALANCE


def test_embedded_errors_are_json_rpc_errors(embedded_chain: Chain) -> None:
    w3, key = embedded_chain.w3, TEST_KEYS[0]

    def contract_with_runtime(runtime: bytes) -> str:
        # init code: copy ``runtime`` (≤ 32 bytes) into memory and return it
        size = len(runtime)
        init = (
            bytes([0x7F])
            + runtime.rjust(32, b"\0")  # PUSH32 runtime
            + bytes([0x60, 0x00, 0x52])  # PUSH1 0, MSTORE
            + bytes([0x60, size, 0x60, 32 - size, 0xF3])  # PUSH1 size, offset; RETURN
        )
        receipt = send(w3, key, {"data": "0x" + init.hex(), "gas": 100_000})
        assert receipt["status"] == 1
        return str(receipt["contractAddress"])

    invalid = contract_with_runtime(bytes([0xFE]))  # INVALID
    empty_revert = contract_with_runtime(bytes([0x60, 0, 0x60, 0, 0xFD]))  # REVERT(0,0)
    for address in (invalid, empty_revert):
        with pytest.raises(ContractLogicError) as info:
            w3.eth.call({"to": address})  # type: ignore[typeddict-item]
        assert info.value.data == "0x"
    # A mined failure is a receipt with status 0, not an error.
    failed = send(w3, key, {"to": empty_revert, "gas": 50_000})
    assert failed["status"] == 0

    unknown = w3.provider.make_request(RPCEndpoint("eth_noSuchMethod"), [])
    assert unknown["error"]["code"] == -32601
    wrong_chain = Account.sign_transaction(
        {
            "to": TEST_ADDRESSES[1],
            "value": 1,
            "gas": 21_000,
            "nonce": w3.eth.get_transaction_count(TEST_ADDRESSES[0]),
            "chainId": HARDHAT_CHAIN_ID,
            "maxFeePerGas": 10 * TIP,
            "maxPriorityFeePerGas": TIP,
        },
        key,
    )
    refused = w3.provider.make_request(
        RPCEndpoint("eth_sendRawTransaction"), [wrong_chain.raw_transaction.to_0x_hex()]
    )
    assert refused["error"]["code"] == -32000
    # History is permanent: eth-tester's reset is refused.
    with pytest.raises(EthTesterValidationError, match="persistent"):
        w3.provider.ethereum_tester.reset_to_genesis()  # type: ignore[attr-defined]
    assert w3.eth.block_number == 3


def test_blocks_are_dated_when_mined(
    embedded_chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    w3 = embedded_chain.w3
    later = int(w3.eth.get_block("latest")["timestamp"]) + 86_400  # a day idle
    monkeypatch.setattr(chain_module, "_now", lambda: later)
    receipt = send(w3, TEST_KEYS[0], {"to": TEST_ADDRESSES[1], "value": 1})
    assert w3.eth.get_block(receipt["blockNumber"])["timestamp"] == later


def test_persists_across_reopen(tmp_path: Path) -> None:
    directory = tmp_path / "chain"
    key = TEST_KEYS[0]
    with open_embedded(
        directory, genesis_balances={TEST_ADDRESSES[0]: TEST_BALANCE}
    ) as c:
        written = anchor_batch(c.w3, key, 11)
        head = c.w3.eth.block_number
        balance = c.w3.eth.get_balance(TEST_ADDRESSES[0])
    with open_embedded(directory) as c:
        assert c.w3.eth.block_number == head
        assert c.w3.eth.get_balance(TEST_ADDRESSES[0]) == balance
        assert c.w3.eth.get_transaction_count(TEST_ADDRESSES[0]) == 3
        check_anchored(c.w3, key, written, 11)
    with open_embedded(directory) as c:
        assert c.w3.eth.block_number == head + 1


_CHILD_WRITE = """
import json, sys
from pathlib import Path
from eth_account import Account
from ledger._chain import open_embedded
from tests.ledger.test_chain import anchor_batch
directory, key = Path(sys.argv[1]), sys.argv[2]
funded = {Account.from_key(key).address: 10**24}
with open_embedded(directory, genesis_balances=funded) as chain:
    print(json.dumps(anchor_batch(chain.w3, key, 21)))
"""


def test_persists_across_processes(tmp_path: Path) -> None:
    directory = tmp_path / "chain"
    key = TEST_KEYS[1]
    child = run_child(_CHILD_WRITE, str(directory), key)
    assert child.returncode == 0, child.stderr
    written = json.loads(child.stdout)
    with open_embedded(directory) as c:
        assert c.w3.eth.block_number == 3  # deploy, grantRole, anchor
        check_anchored(c.w3, key, written, 21)


def test_genesis_balances_only_at_creation(tmp_path: Path) -> None:
    directory = tmp_path / "chain"
    first, second = TEST_ADDRESSES[0], TEST_ADDRESSES[1]
    with open_embedded(directory, genesis_balances={first: 5}) as c:
        assert c.w3.eth.get_balance(first) == 5
    with open_embedded(directory, genesis_balances={second: 7}) as c:
        assert c.w3.eth.get_balance(first) == 5
        assert c.w3.eth.get_balance(second) == 0


def test_rejects_bad_genesis_balances(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checksum"):
        open_embedded(tmp_path / "a", genesis_balances={TEST_ADDRESSES[0].lower(): 1})
    with pytest.raises(ValueError, match="wei"):
        open_embedded(tmp_path / "b", genesis_balances={TEST_ADDRESSES[0]: -1})
    # The failed opens released their locks.
    open_embedded(tmp_path / "a").close()


def test_directory_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "chain"
    open_embedded(directory).close()
    assert directory.stat().st_mode & 0o777 == 0o700


def test_reopen_does_not_replay_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reopening reads the same number of keys whatever the chain's length."""
    key, address = TEST_KEYS[0], TEST_ADDRESSES[0]

    def reads_to_reopen(directory: Path, blocks: int) -> int:
        with open_embedded(directory, genesis_balances={address: TEST_BALANCE}) as c:
            for _ in range(blocks):
                send(c.w3, key, {"to": TEST_ADDRESSES[1], "value": 1, "gas": 21_000})
        reads = 0
        original = chain_module._SQLiteStore.__getitem__

        def counting(self: Any, k: bytes) -> bytes:
            nonlocal reads
            reads += 1
            return original(self, k)

        with monkeypatch.context() as m:
            m.setattr(chain_module._SQLiteStore, "__getitem__", counting)
            with open_embedded(directory) as c:
                assert c.w3.eth.block_number == blocks
        return reads

    assert reads_to_reopen(tmp_path / "short", 2) == reads_to_reopen(
        tmp_path / "long", 12
    )


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    c = open_embedded(tmp_path / "chain")
    assert c.w3.is_connected()
    c.close()
    c.close()
    assert not c.w3.is_connected()
    with pytest.raises(ChainConnectionError, match="closed"):
        c.w3.eth.get_block("latest")


def test_lock_in_process(tmp_path: Path) -> None:
    directory = tmp_path / "chain"
    with open_embedded(directory):
        with pytest.raises(ChainLockedError) as info:
            open_embedded(directory)
        assert info.value.pid == os.getpid()
        assert info.value.path == directory / "chain.lock"
        assert str(directory) in str(info.value)
    open_embedded(directory).close()  # released on close


_CHILD_TRY = """
import json, sys
from pathlib import Path
from ledger._chain import ChainLockedError, open_embedded
try:
    open_embedded(Path(sys.argv[1])).close()
except ChainLockedError as exc:
    print(json.dumps({"pid": exc.pid, "path": str(exc.path)}))
else:
    print("{}")
"""

_CHILD_HOLD = """
import sys
from pathlib import Path
from ledger._chain import open_embedded
with open_embedded(Path(sys.argv[1])):
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_lock_across_processes(tmp_path: Path) -> None:
    directory = tmp_path / "chain"
    # This process holds it: a child cannot open it, and is told our pid.
    with open_embedded(directory):
        child = run_child(_CHILD_TRY, str(directory))
        assert child.returncode == 0, child.stderr
        assert json.loads(child.stdout) == {
            "pid": os.getpid(),
            "path": str(directory / "chain.lock"),
        }
    # A child holds it: we cannot open it, and are told the child's pid.
    holder = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", _CHILD_HOLD, str(directory)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(ChainLockedError) as info:
            open_embedded(directory)
        assert info.value.pid == holder.pid
        holder.stdin.close()  # the child closes the chain and exits
        assert holder.wait(timeout=CHILD_TIMEOUT) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    open_embedded(directory).close()


_CHILD_LOOP = """
import sys
from pathlib import Path
from eth_account import Account
from ledger._chain import open_embedded
from tests.ledger.test_chain import send
key = sys.argv[2]
chain = open_embedded(Path(sys.argv[1]), genesis_balances={
    Account.from_key(key).address: 10**24})
while True:
    send(chain.w3, key, {"to": "0x" + "42" * 20, "value": 1, "gas": 21000})
    print("sent", flush=True)
"""


def test_killed_writer_leaves_a_consistent_chain(tmp_path: Path) -> None:
    directory = tmp_path / "chain"
    key = TEST_KEYS[2]
    writer = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", _CHILD_LOOP, str(directory), key],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        for _ in range(5):
            assert writer.stdout.readline().strip() == "sent"
        os.kill(writer.pid, signal.SIGKILL)  # mid-way through some later transaction
        writer.wait()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()

    with open_embedded(directory) as c:
        w3 = c.w3
        head = w3.eth.block_number
        assert head >= 5
        sender = Account.from_key(key).address
        assert int(w3.eth.get_transaction_count(sender)) == head  # one per block
        for number in range(1, head + 1):
            (tx_hash,) = w3.eth.get_block(number)["transactions"]
            assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 1  # type: ignore[arg-type]
        receipt = send(w3, key, {"to": TEST_ADDRESSES[0], "value": 1, "gas": 21_000})
        assert receipt["blockNumber"] == head + 1


def test_threads_share_the_chain(embedded_chain: Chain) -> None:
    w3 = embedded_chain.w3
    keys = TEST_KEYS[:4]
    per_thread = 5
    errors: list[BaseException] = []
    receipts: list[TxReceipt] = []
    lock = threading.Lock()
    start = threading.Barrier(len(keys) + 1)

    def run(work: Callable[[], None]) -> None:
        try:
            start.wait()
            work()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            with lock:
                errors.append(exc)

    def sender(key: str) -> None:
        for i in range(per_thread):
            receipt = send(w3, key, {"to": TEST_ADDRESSES[5], "value": i + 1})
            with lock:
                receipts.append(receipt)

    def reader() -> None:
        for _ in range(per_thread * 2):
            w3.eth.get_block("latest")
            w3.eth.get_balance(TEST_ADDRESSES[5])
            w3.eth.call({"to": TEST_ADDRESSES[5]})

    threads = [
        threading.Thread(target=run, args=(lambda k=k: sender(k),)) for k in keys
    ]
    threads.append(threading.Thread(target=run, args=(reader,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(receipts) == len(keys) * per_thread
    assert all(r["status"] == 1 for r in receipts)
    assert len({r["blockNumber"] for r in receipts}) == len(receipts)  # automine
    assert w3.eth.block_number == len(receipts)
    for address in TEST_ADDRESSES[:4]:
        assert w3.eth.get_transaction_count(address) == per_thread
    expected = TEST_BALANCE + len(keys) * sum(range(1, per_thread + 1))
    assert w3.eth.get_balance(TEST_ADDRESSES[5]) == expected


def test_get_logs_agrees_with_eth_tester(embedded_chain: Chain) -> None:
    w3 = embedded_chain.w3
    key = TEST_KEYS[0]
    first = anchor_contract(w3, anchor_batch(w3, key, 1)["anchor"])
    second = anchor_contract(w3, anchor_batch(w3, key, 2)["anchor"])
    send(w3, key, call_tx(first.functions.anchor(ROOT, 3, 1), key))
    send(w3, key, {"to": TEST_ADDRESSES[1], "value": 1, "gas": 21_000})
    tester = w3.provider.ethereum_tester  # type: ignore[attr-defined]
    head = w3.eth.block_number

    def topic(n: int) -> str:
        return "0x" + n.to_bytes(32, "big").hex()

    sig = "0x" + BATCH_ANCHORED.hex()
    filters: list[dict[str, Any]] = [
        {"from_block": 0},
        {"from_block": 0, "to_block": "latest"},
        {"from_block": 2, "to_block": head - 2},
        {"from_block": head},
        {},
        {"from_block": 0, "address": first.address},
        {"from_block": 0, "address": [first.address, second.address]},
        {"from_block": 0, "topics": [sig]},
        {"from_block": 0, "topics": [None, topic(3)]},
        {"from_block": 0, "topics": [sig, [topic(1), topic(2)]]},
        {"from_block": 0, "address": second.address, "topics": [sig, topic(1)]},
        {"from_block": 0, "address": "0x" + "99" * 20},
    ]
    for params in filters:
        ours = tester.get_logs(**params)
        theirs = EthereumTester.get_logs(tester, **params)
        assert ours == theirs, params
    assert len(tester.get_logs(from_block=0, topics=[sig])) == 3

    # eth_getLogs by blockHash, which eth-tester itself lacks.
    receipt = send(w3, key, call_tx(second.functions.anchor(ROOT, 4, 1), key))
    (log,) = w3.eth.get_logs({"blockHash": receipt["blockHash"]})
    assert log["transactionHash"] == receipt["transactionHash"]
    assert (
        w3.eth.get_logs({"blockHash": receipt["blockHash"], "address": first.address})
        == []
    )


# --- JSON-RPC ----------------------------------------------------------------------


def test_connect_rpc_dead_port() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ChainConnectionError) as info:
        connect_rpc(url, timeout=2)
    assert info.value.url == url
    assert info.value.reason
    assert url in str(info.value)


@pytest.mark.integration
def test_connect_rpc_hardhat(hardhat_url: str) -> None:
    with connect_rpc(hardhat_url, network="hardhat") as c:
        assert (c.kind, c.network, c.chain_id) == ("rpc", "hardhat", HARDHAT_CHAIN_ID)
        assert c.w3.eth.block_number >= 0
        c.close()
    c.close()

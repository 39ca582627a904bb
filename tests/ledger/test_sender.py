"""TransactionSender: signing, nonces, fees, receipts, waiting, retries, reverts."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import Web3RPCError

from ledger._artifacts import load_artifact
from ledger._sender import SignedTx, TransactionSender, TxReceipt, _Rpc
from ledger._signer import LocalSigner
from ledger.errors import (
    ChainConnectionError,
    LedgerError,
    TransactionRevertedError,
    TransactionTimeoutError,
)

from ._wrappers_helpers import (
    ScriptedTester,
    fail_first,
    funded_signer,
    mine,
    new_chain,
    rpc_error,
)

OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")
ROOT = bytes.fromhex("ab" * 32)


@dataclass
class Rig:
    w3: Web3
    provider: ScriptedTester
    signer: LocalSigner
    sender: TransactionSender
    anchor: Contract


def make_rig(**sender_options: Any) -> Rig:
    """A fresh chain with a ReceiptAnchor the sender's account may anchor on."""
    w3, provider = new_chain()
    signer = funded_signer(w3)
    sender_options.setdefault("backoff", 0.001)
    sender = TransactionSender(w3, signer, **sender_options)
    art = load_artifact("ReceiptAnchor")
    created = sender.send(
        w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(signer.address)
    )
    assert created.contract_address is not None
    anchor = w3.eth.contract(
        address=Web3.to_checksum_address(created.contract_address), abi=art.abi
    )
    sender.send(anchor.functions.grantRole(OPERATOR_ROLE, signer.address))
    return Rig(w3, provider, signer, sender, anchor)


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def anchor_fn(rig: Rig, batch: int, root: bytes = ROOT, count: int = 1) -> Any:
    return rig.anchor.functions.anchor(root, batch, count)


def nonce_of(w3: Web3, tx_hash: str) -> int:
    return int(w3.eth.get_transaction(tx_hash)["nonce"])  # type: ignore[arg-type]


# --- happy path ------------------------------------------------------------------


def test_send_returns_a_typed_receipt_of_an_eip1559_transaction(rig: Rig) -> None:
    receipt = rig.sender.send(anchor_fn(rig, 1))
    assert isinstance(receipt, TxReceipt)
    assert receipt.status == 1
    assert receipt.block_number == rig.w3.eth.block_number
    assert receipt.tx_hash.startswith("0x") and len(receipt.tx_hash) == 66
    block = rig.w3.eth.get_block(receipt.block_number)
    assert receipt.block_hash == "0x" + bytes(block["hash"]).hex()
    assert receipt.contract_address is None
    assert len(receipt.logs) == 1 and receipt.logs[0]["address"] == rig.anchor.address
    tx = rig.w3.eth.get_transaction(receipt.tx_hash)  # type: ignore[arg-type]
    assert tx["type"] == 2
    assert tx["from"] == rig.signer.address
    assert tx["maxPriorityFeePerGas"] > 0
    assert tx["maxFeePerGas"] >= 2 * int(block["baseFeePerGas"])
    # estimate × 1.2 margin: the limit covers what was used, with room to spare
    assert receipt.gas_used < tx["gas"] <= int(receipt.gas_used * 1.2) + 1 + 5_000


def test_explicit_gas_is_used_as_is(rig: Rig) -> None:
    receipt = rig.sender.send(anchor_fn(rig, 2), gas=300_000)
    assert rig.w3.eth.get_transaction(receipt.tx_hash)["gas"] == 300_000  # type: ignore[arg-type]


def test_deployment_receipt_has_the_contract_address(rig: Rig) -> None:
    art = load_artifact("ReceiptAnchor")
    factory = rig.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    receipt = rig.sender.send(factory.constructor(rig.signer.address))
    assert receipt.contract_address is not None
    assert Web3.is_checksum_address(receipt.contract_address)
    assert rig.w3.eth.get_code(receipt.contract_address) != b""  # type: ignore[arg-type]


def test_legacy_gas_price_when_the_chain_has_no_base_fee(rig: Rig) -> None:
    def strip_base_fee(response: Any) -> Any:
        result = dict(response["result"])
        for key in ("baseFeePerGas", "base_fee_per_gas"):  # eth-tester: snake case
            result.pop(key, None)
        return {**response, "result": result}

    rig.provider.transforms["eth_getBlockByNumber"] = strip_base_fee
    receipt = rig.sender.send(anchor_fn(rig, 3))
    tx = rig.w3.eth.get_transaction(receipt.tx_hash)  # type: ignore[arg-type]
    assert tx["type"] == 0
    assert tx["gasPrice"] == rig.w3.eth.gas_price


# --- reverts ---------------------------------------------------------------------


def test_a_simulated_revert_is_decoded_and_uses_no_nonce(rig: Rig) -> None:
    before = rig.w3.eth.get_transaction_count(rig.signer.address)
    sent = rig.provider.calls["eth_sendRawTransaction"]
    with pytest.raises(TransactionRevertedError) as info:
        rig.sender.send(anchor_fn(rig, 5, root=bytes(32)))
    error = info.value
    assert (error.contract, error.error, error.args) == (
        "ReceiptAnchor",
        "EmptyRoot",
        {"batchId": 5},
    )
    assert error.tx_hash is None
    assert error.data == keccak(text="EmptyRoot(uint64)")[:4] + encode(["uint64"], [5])
    assert str(error) == "ReceiptAnchor reverted with EmptyRoot(batchId=5)"
    assert rig.provider.calls["eth_sendRawTransaction"] == sent
    receipt = rig.sender.send(anchor_fn(rig, 5))
    assert nonce_of(rig.w3, receipt.tx_hash) == before


def test_a_revert_is_not_retried(rig: Rig) -> None:
    rig.provider.calls.clear()
    with pytest.raises(TransactionRevertedError):
        rig.sender.sign(anchor_fn(rig, 6, count=0))
    # The estimate runs the call and reverts; one eth_call decodes the reason.
    assert rig.provider.calls["eth_estimateGas"] == 1
    assert rig.provider.calls["eth_call"] == 1
    assert rig.provider.calls["eth_sendRawTransaction"] == 0


def test_the_happy_path_executes_the_call_once(rig: Rig) -> None:
    rig.provider.calls.clear()
    rig.sender.sign(anchor_fn(rig, 8))
    assert rig.provider.calls["eth_estimateGas"] == 1
    assert rig.provider.calls["eth_call"] == 0  # no separate simulation
    rig.provider.calls.clear()
    with pytest.raises(TransactionRevertedError):
        rig.sender.sign(anchor_fn(rig, 9, count=0), gas=200_000)
    assert rig.provider.calls["eth_call"] == 1  # a given gas limit: simulated
    assert rig.provider.calls["eth_estimateGas"] == 0


def test_access_control_error_names_account_and_role(rig: Rig) -> None:
    stranger = TransactionSender(rig.w3, funded_signer(rig.w3))
    with pytest.raises(TransactionRevertedError) as info:
        stranger.send(anchor_fn(rig, 7))
    assert info.value.error == "AccessControlUnauthorizedAccount"
    assert info.value.args == {
        "account": stranger.address,
        "neededRole": OPERATOR_ROLE,
    }


def test_a_transaction_mined_with_status_0_is_decoded(rig: Rig) -> None:
    # Both simulate fine before either is mined; the second then reverts on chain.
    first = rig.sender.sign(anchor_fn(rig, 8))
    second = rig.sender.sign(anchor_fn(rig, 8, root=b"\x01" * 32), gas=200_000)
    rig.sender.broadcast(first)
    rig.sender.broadcast(second)
    assert rig.sender.wait(first.tx_hash).status == 1
    assert rig.w3.eth.get_transaction_receipt(second.tx_hash)["status"] == 0  # type: ignore[arg-type]
    with pytest.raises(TransactionRevertedError) as info:
        rig.sender.wait(second.tx_hash)
    error = info.value
    assert (error.contract, error.error) == ("ReceiptAnchor", "BatchAlreadyAnchored")
    assert error.args == {"batchId": 8, "root": ROOT}
    assert error.tx_hash == second.tx_hash
    assert str(error) == (
        f"ReceiptAnchor reverted with BatchAlreadyAnchored(batchId=8, "
        f"root=0x{ROOT.hex()}) in transaction {second.tx_hash}"
    )


def error_data(signature: str, types: list[str], values: list[Any]) -> bytes:
    return keccak(text=signature)[:4] + encode(types, values)


def test_decode_builtin_and_unknown_errors() -> None:
    w3, _ = new_chain()
    rpc = _Rpc(w3)
    reason = rpc.decode("X", error_data("Error(string)", ["string"], ["boom"]), None)
    assert (reason.error, reason.args) == ("Error", {"reason": "boom"})
    assert str(reason) == "X reverted with Error(reason='boom')"
    panic = rpc.decode("X", error_data("Panic(uint256)", ["uint256"], [0x11]), "0x1")
    assert (panic.error, panic.args, panic.tx_hash) == ("Panic", {"code": 17}, "0x1")
    unknown = rpc.decode("X", b"\xde\xad\xbe\xef", None)
    assert (unknown.error, unknown.args, unknown.data) == (
        "unknown",
        {},
        b"\xde\xad\xbe\xef",
    )
    assert str(unknown) == "X reverted with an unknown error (data 0xdeadbeef)"
    empty = rpc.decode("X", b"", None)
    assert (empty.error, str(empty)) == ("unknown", "X reverted with no reason")
    # A known selector with undecodable arguments is unknown, not a crash.
    truncated = keccak(text="BatchAlreadyRecorded(uint64)")[:4] + b"\x00" * 5
    assert rpc.decode("X", truncated, None).error == "unknown"


def test_errors_of_every_artifact_and_extra_abi_are_decoded() -> None:
    w3, _ = new_chain()
    extra = [
        {
            "type": "error",
            "name": "Teapot",
            "inputs": [
                {"name": "", "type": "uint8"},
                {"name": "who", "type": "address"},
            ],
        }
    ]
    rpc = _Rpc(w3, extra=extra)
    # An error of another artifact than the one called (bubbled up).
    nonexistent = error_data("ERC721NonexistentToken(uint256)", ["uint256"], [9])
    assert rpc.decode("Settlement", nonexistent, None).args == {"tokenId": 9}
    who = "0x" + "11" * 20
    teapot = rpc.decode(
        "X", error_data("Teapot(uint8,address)", ["uint8", "address"], [4, who]), None
    )
    assert teapot.error == "Teapot"
    assert teapot.args == {"arg0": 4, "who": Web3.to_checksum_address(who)}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # Geth, Anvil, the embedded chain: code 3 and the data as hex.
        (
            lambda data: rpc_error(3, "execution reverted", "0x" + data.hex()),
            ("EmptyRoot", {"batchId": 5}),
        ),
        # Hardhat 2: -32603 and the data nested in an object.
        (
            lambda data: rpc_error(
                -32603,
                "Error: VM Exception while processing transaction: "
                "reverted with custom error 'EmptyRoot(5)'",
                {"message": "reverted with custom error", "data": "0x" + data.hex()},
            ),
            ("EmptyRoot", {"batchId": 5}),
        ),
    ],
)
def test_json_rpc_revert_shapes_are_decoded(
    rig: Rig, error: Callable[[bytes], Any], expected: tuple[str, dict[str, Any]]
) -> None:
    data = error_data("EmptyRoot(uint64)", ["uint64"], [5])
    # A reverting call reverts the same way in the estimate and in eth_call.
    rig.provider.hooks["eth_estimateGas"] = lambda params, seen: error(data)
    rig.provider.hooks["eth_call"] = lambda params, seen: error(data)
    rig.provider.calls.clear()
    with pytest.raises(TransactionRevertedError) as info:
        rig.sender.sign(anchor_fn(rig, 9))
    assert (info.value.error, info.value.args) == expected
    assert info.value.data == data
    assert rig.provider.calls["eth_estimateGas"] == 1
    assert rig.provider.calls["eth_call"] == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            error_data("Error(string)", ["string"], ["no way"]),
            ("Error", {"reason": "no way"}),
        ),
        (error_data("Panic(uint256)", ["uint256"], [0x12]), ("Panic", {"code": 0x12})),
        (b"", ("unknown", {})),
    ],
)
def test_json_rpc_reason_and_panic_reverts(
    rig: Rig, data: bytes, expected: tuple[str, dict[str, Any]]
) -> None:
    def revert(params: Any, seen: Any) -> Any:
        return rpc_error(3, "execution reverted", "0x" + data.hex())

    rig.provider.hooks["eth_estimateGas"] = revert
    rig.provider.hooks["eth_call"] = revert
    with pytest.raises(TransactionRevertedError) as info:
        rig.sender.sign(anchor_fn(rig, 9))
    assert (info.value.error, info.value.args) == expected


# --- nonces ------------------------------------------------------------------------


def test_concurrent_sends_through_one_sender_all_land_with_contiguous_nonces(
    rig: Rig,
) -> None:
    start = rig.w3.eth.get_transaction_count(rig.signer.address)
    threads, per_thread = 6, 4

    def work(worker: int) -> list[TxReceipt]:
        return [
            rig.sender.send(anchor_fn(rig, 1_000 + worker * per_thread + i))
            for i in range(per_thread)
        ]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        receipts = [r for batch in pool.map(work, range(threads)) for r in batch]
    assert len(receipts) == threads * per_thread
    assert all(r.status == 1 for r in receipts)
    nonces = sorted(nonce_of(rig.w3, r.tx_hash) for r in receipts)
    assert nonces == list(range(start, start + threads * per_thread))
    anchored = rig.anchor.events.BatchAnchored().get_logs(from_block=0)
    assert {e["args"]["batchId"] for e in anchored} >= set(
        range(1_000, 1_000 + threads * per_thread)
    )


def external_transaction(rig: Rig) -> str:
    """A transaction from the sender's key that the sender does not know about."""
    w3 = rig.w3
    nonce = w3.eth.get_transaction_count(rig.signer.address, "pending")
    raw = rig.signer.sign_transaction(
        {
            "to": rig.signer.address,
            "value": 0,
            "gas": 21_000,
            "gasPrice": 10 * w3.eth.gas_price,
            "nonce": nonce,
            "chainId": w3.eth.chain_id,
        }
    )
    return "0x" + bytes(w3.eth.send_raw_transaction(raw)).hex()


def test_nonce_resyncs_after_an_external_transaction_from_the_same_key(
    rig: Rig,
) -> None:
    rig.sender.send(anchor_fn(rig, 20))  # the counter is now initialised
    external = external_transaction(rig)
    sent = rig.provider.calls["eth_sendRawTransaction"]
    receipt = rig.sender.send(anchor_fn(rig, 21))
    assert nonce_of(rig.w3, receipt.tx_hash) == nonce_of(rig.w3, external) + 1
    # one refused broadcast (nonce taken), then the re-signed one
    assert rig.provider.calls["eth_sendRawTransaction"] == sent + 2
    assert rig.sender.send(anchor_fn(rig, 22)).status == 1


def test_broadcast_of_a_stale_nonce_raises_and_resyncs(rig: Rig) -> None:
    rig.sender.send(anchor_fn(rig, 23))
    signed = rig.sender.sign(anchor_fn(rig, 24))
    external_transaction(rig)  # takes the nonce `signed` was given
    with pytest.raises(LedgerError, match=f"nonce {signed.nonce} was already used"):
        rig.sender.broadcast(signed)
    again = rig.sender.sign(anchor_fn(rig, 24))
    assert again.nonce == signed.nonce + 1
    assert rig.sender.wait(rig.sender.broadcast(again)).status == 1


def test_broadcast_is_idempotent(rig: Rig) -> None:
    signed = rig.sender.sign(anchor_fn(rig, 25))
    assert isinstance(signed, SignedTx)
    assert signed.tx_hash == "0x" + keccak(signed.raw).hex()
    assert rig.sender.broadcast(signed) == signed.tx_hash
    assert rig.sender.broadcast(signed) == signed.tx_hash  # mined already: fine
    assert rig.sender.wait(signed.tx_hash).status == 1
    rig.provider.hooks["eth_sendRawTransaction"] = lambda params, seen: rpc_error(
        -32000, "already known"
    )
    assert rig.sender.broadcast(signed) == signed.tx_hash


def test_a_refused_transaction_is_a_ledger_error(rig: Rig) -> None:
    poor = TransactionSender(rig.w3, LocalSigner.from_key(os.urandom(32)))
    with pytest.raises(LedgerError, match=r"the node refused .*cannot afford"):
        poor.send(rig.anchor.functions.renounceRole(OPERATOR_ROLE, poor.address))


# --- retries ------------------------------------------------------------------------


def test_transient_connection_errors_are_retried(rig: Rig) -> None:
    rig.provider.hooks["eth_sendRawTransaction"] = fail_first(
        3, lambda: ConnectionRefusedError("connection refused")
    )
    rig.provider.hooks["eth_getTransactionReceipt"] = fail_first(
        2, lambda: requests.ConnectionError("connection reset by peer")
    )
    rig.provider.calls.clear()
    receipt = rig.sender.send(anchor_fn(rig, 30))
    assert receipt.status == 1
    assert rig.provider.calls["eth_sendRawTransaction"] == 4
    assert rig.provider.calls["eth_getTransactionReceipt"] == 3
    assert rig.anchor.functions.rootOf(30).call() == ROOT


def test_exhausted_retries_raise_chain_connection_error() -> None:
    rig = make_rig(max_retries=2)
    rig.provider.hooks["eth_getBlockByNumber"] = fail_first(
        100, lambda: requests.Timeout("read timed out")
    )
    rig.provider.calls.clear()
    with pytest.raises(ChainConnectionError) as info:
        rig.sender.send(anchor_fn(rig, 31))
    assert "Timeout: read timed out (after 3 attempts)" in info.value.reason
    assert rig.provider.calls["eth_getBlockByNumber"] == 3


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} error", response=response)


@pytest.mark.parametrize(
    "failure",
    [
        lambda: http_error(503),
        lambda: http_error(429),
        lambda: TimeoutError("timed out"),
    ],
)
def test_http_5xx_429_and_timeouts_are_retried(
    rig: Rig, failure: Callable[[], BaseException]
) -> None:
    rig.provider.hooks["eth_estimateGas"] = fail_first(2, failure)
    rig.provider.calls.clear()
    assert rig.sender.send(anchor_fn(rig, 32)).status == 1
    assert rig.provider.calls["eth_estimateGas"] == 3


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (-32005, "limit exceeded"),
        (-32000, "header not found"),
        (-32603, "request timed out"),
    ],
)
def test_transient_json_rpc_errors_are_retried(
    rig: Rig, code: int, message: str
) -> None:
    def flaky(params: Any, seen: int) -> Any:
        return rpc_error(code, message) if seen < 2 else None

    rig.provider.hooks["eth_blockNumber"] = flaky
    rig.provider.calls.clear()
    assert isinstance(rig.sender._rpc.retry(lambda: rig.w3.eth.block_number), int)
    assert rig.provider.calls["eth_blockNumber"] == 3


@pytest.mark.parametrize(
    "failure",
    [
        lambda params, seen: rpc_error(-32602, "invalid argument 0: hex string"),
        lambda params, seen: (_ for _ in ()).throw(http_error(400)),
    ],
)
def test_invalid_requests_are_not_retried(rig: Rig, failure: Any) -> None:
    rig.provider.hooks["eth_estimateGas"] = failure
    rig.provider.calls.clear()
    with pytest.raises((LedgerError, requests.HTTPError)) as info:
        rig.sender.send(anchor_fn(rig, 33))
    if isinstance(info.value, LedgerError):
        assert isinstance(info.value.__cause__, Web3RPCError)
        assert "invalid argument 0" in str(info.value)
    assert rig.provider.calls["eth_estimateGas"] == 1
    assert rig.provider.calls["eth_sendRawTransaction"] == 0


# --- waiting -------------------------------------------------------------------------


def test_wait_times_out_while_the_transaction_is_pending() -> None:
    rig = make_rig(timeout=0.2, poll_interval=0.01)
    tester = rig.provider.ethereum_tester
    assert tester is not None
    tester.disable_auto_mine_transactions()
    try:
        signed = rig.sender.sign(anchor_fn(rig, 40))
        rig.sender.broadcast(signed)
        with pytest.raises(TransactionTimeoutError) as info:
            rig.sender.wait(signed.tx_hash)
        assert info.value.tx_hash == signed.tx_hash
        assert str(info.value).startswith(f"transaction {signed.tx_hash} not mined")
        assert rig.w3.eth.get_transaction(signed.tx_hash)["blockNumber"] is None  # type: ignore[arg-type]
        mine(rig.w3, 1)
        assert rig.sender.wait(signed.tx_hash).status == 1
    finally:
        tester.enable_auto_mine_transactions()


def test_wait_for_confirmations(rig: Rig) -> None:
    sender = TransactionSender(
        rig.w3, rig.signer, confirmations=2, timeout=0.2, poll_interval=0.01
    )
    signed = sender.sign(anchor_fn(rig, 41))
    sender.broadcast(signed)
    mined_in = rig.w3.eth.get_transaction_receipt(signed.tx_hash)["blockNumber"]  # type: ignore[arg-type]
    with pytest.raises(TransactionTimeoutError):
        sender.wait(signed.tx_hash)  # mined, 0 blocks on top
    mine(rig.w3, 1)
    with pytest.raises(TransactionTimeoutError):
        sender.wait(signed.tx_hash)  # 1 block on top
    mine(rig.w3, 1)
    receipt = sender.wait(signed.tx_hash)
    assert receipt.block_number == mined_in
    assert rig.w3.eth.block_number == mined_in + 2


# --- other chains ---------------------------------------------------------------------


def test_sender_works_on_the_embedded_chain(tmp_path: Path) -> None:
    chain_module = pytest.importorskip("ledger._chain")
    signer = LocalSigner.from_key(os.urandom(32))
    chain = chain_module.open_embedded(
        tmp_path / "chain", genesis_balances={signer.address: 10**20}
    )
    try:
        w3 = chain.w3
        sender = TransactionSender(w3, signer)
        art = load_artifact("ReceiptAnchor")
        created = sender.send(
            w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(
                signer.address
            )
        )
        assert created.contract_address is not None
        anchor = w3.eth.contract(address=created.contract_address, abi=art.abi)
        sender.send(anchor.functions.grantRole(OPERATOR_ROLE, signer.address))
        sender.send(anchor.functions.anchor(ROOT, 1, 2))
        with pytest.raises(TransactionRevertedError) as info:
            sender.send(anchor.functions.anchor(ROOT, 1, 2))
        assert (info.value.error, info.value.args) == (
            "BatchAlreadyAnchored",
            {"batchId": 1, "root": ROOT},
        )
        first = sender.sign(anchor.functions.anchor(ROOT, 2, 1))
        second = sender.sign(anchor.functions.anchor(ROOT, 2, 1), gas=200_000)
        sender.broadcast(first)
        sender.broadcast(second)
        with pytest.raises(TransactionRevertedError) as mined:
            sender.wait(second.tx_hash)
        assert (mined.value.error, mined.value.tx_hash) == (
            "BatchAlreadyAnchored",
            second.tx_hash,
        )
    finally:
        chain.close()


def test_reads_interleave_with_sends_from_another_thread(rig: Rig) -> None:
    # Reads through the sender's retrying RPC while another thread sends.
    stop = threading.Event()
    heads: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            heads.append(rig.sender._rpc.retry(lambda: rig.w3.eth.block_number))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        receipts = [rig.sender.send(anchor_fn(rig, 50 + i)) for i in range(5)]
    finally:
        stop.set()
        thread.join()
    assert [r.status for r in receipts] == [1] * 5
    assert heads == sorted(heads)

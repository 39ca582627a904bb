"""In-process EVM (eth-tester, py-evm, Prague) and helpers for the contract tests.

Deployments are module-scoped: each test module gets its own chain. Reverts are
checked with ``eth_call`` and the revert data decoded against the ABI's custom errors.
"""

from __future__ import annotations

import ast
from typing import Any

import pytest
from eth_abi import decode
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract

from ledger._artifacts import artifact_names, load_artifact

GAS = 8_000_000


def new_chain() -> Web3:
    """A fresh in-process chain with ten funded accounts."""
    return Web3(EthereumTesterProvider())


def deploy(w3: Web3, name: str, *args: Any, sender: str | None = None) -> Contract:
    """Deploy the artifact ``name`` and return the bound contract."""
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = factory.constructor(*args).transact({"from": sender or w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    assert receipt["status"] == 1
    return w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)


def send(fn: Any, sender: str) -> Any:
    """Send ``fn`` from ``sender`` with explicit gas; return the successful receipt."""
    tx = fn.transact({"from": sender, "gas": GAS})
    receipt = fn.w3.eth.wait_for_transaction_receipt(tx)
    assert receipt["status"] == 1, "transaction reverted"
    return receipt


def _error_table(abi: list[dict[str, Any]]) -> dict[bytes, tuple[str, list[str]]]:
    table = {}
    for item in abi:
        if item["type"] == "error":
            types = [_abi_type(i) for i in item["inputs"]]
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            table[selector] = (item["name"], types)
    return table


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][5:]}"
    return str(item["type"])


_ALL_ERRORS = {
    selector: entry
    for name in artifact_names()
    for selector, entry in _error_table(load_artifact(name).abi).items()
}


def reverts_with(fn: Any, sender: str, error: str, *args: Any) -> None:
    """Assert that ``fn`` from ``sender`` reverts with custom ``error(*args)``."""
    # Ask eth-tester directly: web3's tester provider re-raises reverts as a message
    # and mangles revert data that happens to decode as a string.
    tx = fn.build_transaction({"from": sender, "gas": GAS})
    call = {k: tx[k] for k in ("from", "to", "data", "gas")}
    with pytest.raises(TransactionFailed) as info:
        fn.w3.provider.ethereum_tester.call(call)
    data = info.value.args[0]
    if isinstance(data, str) and data.startswith(("b'", 'b"')):
        data = ast.literal_eval(data)  # eth-tester passes the bytes' repr
    assert isinstance(data, bytes), f"not custom-error revert data: {data!r}"
    table = _ALL_ERRORS  # errors may bubble up from a called contract
    assert data[:4] in table, f"unknown error selector {data[:4].hex()}"
    name, types = table[data[:4]]
    decoded = decode(types, data[4:])
    assert (name, tuple(decoded)) == (error, args)


def role(contract: Contract, name: str) -> bytes:
    """The role id ``name`` of ``contract`` (``DEFAULT_ADMIN_ROLE`` is zero)."""
    value: bytes = getattr(contract.functions, name)().call()
    return value

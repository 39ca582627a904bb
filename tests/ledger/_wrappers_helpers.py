"""Shared helpers for the ledger wrapper tests: chains, funded keys, fake transports.

``ScriptedTester`` is web3's eth-tester provider with three additions: requests are
serialised by a lock (py-evm is not thread-safe; the embedded chain of
``ledger._chain`` serialises the same way), every request is counted per method,
and a test can script a method's answers (raise a transport error, return a
JSON-RPC error, fake a result) before falling through to the real chain, or
rewrite the real chain's answers.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from web3 import EthereumTesterProvider, Web3
from web3.types import RPCEndpoint, RPCResponse, Wei

from ledger._contracts import Share
from ledger._deployments import Deployment, Ledger, deploy_contracts
from ledger._sender import TransactionSender
from ledger._signer import LocalSigner

ETH = 10**18

# A hook gets the request's params and how many times the method was called
# before (0 on the first call); it returns a response, raises, or returns None to
# let the real chain answer.
Hook = Callable[[Any, int], RPCResponse | None]


class ScriptedTester(EthereumTesterProvider):
    """eth-tester behind a lock, with per-method call counts and scripted answers."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.hooks: dict[str, Hook] = {}
        self.transforms: dict[str, Callable[[RPCResponse], RPCResponse]] = {}
        self.params: dict[str, list[Any]] = {}
        self._lock = threading.RLock()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            seen = self.calls[method]
            self.calls[method] += 1
            self.params.setdefault(method, []).append(params)
            hook = self.hooks.get(method)
            if hook is not None:
                scripted = hook(params, seen)
                if scripted is not None:
                    return scripted
            response = super().make_request(method, params)
            transform = self.transforms.get(method)
            return response if transform is None else transform(response)


def fail_first(n: int, exc: Callable[[], BaseException]) -> Hook:
    """A hook raising ``exc()`` on the first ``n`` calls, then passing through."""

    def hook(params: Any, seen: int) -> RPCResponse | None:
        if seen < n:
            raise exc()
        return None

    return hook


def rpc_error(code: int, message: str, data: Any = None) -> RPCResponse:
    """A JSON-RPC error response as a node sends it."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": 1, "error": error}  # type: ignore[typeddict-item]


def new_chain() -> tuple[Web3, ScriptedTester]:
    """A fresh in-process chain and its provider."""
    provider = ScriptedTester()
    return Web3(provider), provider


def funded_signer(w3: Web3, eth: int = 100) -> LocalSigner:
    """A new random key, funded with ``eth`` ether from eth-tester's first account."""
    signer = LocalSigner.from_key(os.urandom(32))
    tx = w3.eth.send_transaction(
        {"from": w3.eth.accounts[0], "to": signer.address, "value": Wei(eth * ETH)}
    )
    w3.eth.wait_for_transaction_receipt(tx)
    return signer


def mine(w3: Web3, blocks: int) -> None:
    """Mine ``blocks`` empty blocks on eth-tester."""
    provider = w3.provider
    assert isinstance(provider, EthereumTesterProvider)
    assert provider.ethereum_tester is not None
    provider.ethereum_tester.mine_blocks(blocks)


@dataclass
class Env:
    """A deployed ledger on a fresh chain; ``admin`` deployed it and operates it."""

    w3: Web3
    provider: ScriptedTester
    admin: LocalSigner
    sender: TransactionSender
    deployment: Deployment
    ledger: Ledger
    token: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def deploy_env(*, token: bool = False, confirmations: int = 0) -> Env:
    """Deploy the three contracts (and optionally a test ERC-20 to settle in)."""
    w3, provider = new_chain()
    admin = funded_signer(w3)
    sender = TransactionSender(w3, admin, confirmations=confirmations)
    token_contract = None
    if token:
        from ledger._artifacts import load_artifact

        art = load_artifact("test/HostileToken")
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        created = sender.send(factory.constructor())
        assert created.contract_address is not None
        token_contract = w3.eth.contract(
            address=Web3.to_checksum_address(created.contract_address), abi=art.abi
        )
    deployment = deploy_contracts(
        w3,
        sender,
        network="test",
        settlement_token=None if token_contract is None else token_contract.address,
    )
    ledger = Ledger.connect(w3, deployment, admin, confirmations=confirmations)
    assert ledger.sender is not None  # the ledger's own sender from here on
    return Env(w3, provider, admin, ledger.sender, deployment, ledger, token_contract)


def whole(payee: str) -> list[Share]:
    """All of an asset's revenue to ``payee``."""
    return [Share(Web3.to_checksum_address(payee), 10_000)]

"""Chains for the ledger tests: the embedded chain, a Hardhat node, or each in turn.

``embedded_chain`` is a fresh persistent chain under ``tmp_path`` whose genesis funds
:data:`~tests.ledger._hardhat.TEST_KEYS`. ``hardhat_url`` runs one Hardhat node per
session (per xdist worker); it skips when ``contracts/node_modules`` is not installed,
or fails under ``VEILX_REQUIRE_SERVICES=1``. ``chain`` runs a test on both, the
Hardhat case marked ``integration`` and isolated with ``evm_snapshot`` /
``evm_revert``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web3.types import RPCEndpoint

from ledger._chain import Chain, connect_rpc, open_embedded
from tests.ledger._hardhat import (
    HARDHAT_KEY,
    TEST_ADDRESSES,
    TEST_BALANCE,
    TEST_KEYS,
    FundedChain,
)


@pytest.fixture
def embedded_chain(tmp_path: Path) -> Iterator[Chain]:
    """A fresh embedded chain in ``tmp_path / "chain"``; TEST_KEYS are funded."""
    chain = open_embedded(
        tmp_path / "chain",
        genesis_balances=dict.fromkeys(TEST_ADDRESSES, TEST_BALANCE),
    )
    yield chain
    chain.close()


@pytest.fixture(
    params=["embedded", pytest.param("hardhat", marks=pytest.mark.integration)]
)
def chain(request: pytest.FixtureRequest) -> Iterator[FundedChain]:
    """Each backend in turn, with a funded private key."""
    if request.param == "embedded":
        embedded: Chain = request.getfixturevalue("embedded_chain")
        yield FundedChain(embedded, TEST_KEYS[0])
        return
    url: str = request.getfixturevalue("hardhat_url")
    with connect_rpc(url, network="hardhat") as rpc:
        provider = rpc.w3.provider
        snapshot = provider.make_request(RPCEndpoint("evm_snapshot"), [])["result"]
        try:
            yield FundedChain(rpc, HARDHAT_KEY)
        finally:
            provider.make_request(RPCEndpoint("evm_revert"), [snapshot])

"""ReceiptAnchor: operator-only, one root per batch, rootOf."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from .conftest import deploy, new_chain, reverts_with, role, send

ROOT = bytes.fromhex("ab" * 32)


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Web3, Contract]]:
    w3 = new_chain()
    admin, operator = w3.eth.accounts[:2]
    anchor = deploy(w3, "ReceiptAnchor", admin)
    send(anchor.functions.grantRole(role(anchor, "OPERATOR_ROLE"), operator), admin)
    yield w3, anchor


def test_anchor_stores_root_and_emits(chain: tuple[Web3, Contract]) -> None:
    w3, anchor = chain
    operator = w3.eth.accounts[1]
    receipt = send(anchor.functions.anchor(ROOT, 7, 128), operator)
    (event,) = anchor.events.BatchAnchored().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"batchId": 7, "root": ROOT, "count": 128}
    assert anchor.functions.rootOf(7).call() == ROOT
    assert anchor.functions.rootOf(8).call() == b"\x00" * 32
    print(f"\ngas: anchor per batch {receipt['gasUsed']}")
    assert receipt["gasUsed"] < 60_000


def test_duplicate_batch_refused(chain: tuple[Web3, Contract]) -> None:
    w3, anchor = chain
    operator = w3.eth.accounts[1]
    send(anchor.functions.anchor(ROOT, 9, 1), operator)
    other = bytes.fromhex("cd" * 32)
    reverts_with(
        anchor.functions.anchor(other, 9, 1), operator, "BatchAlreadyAnchored", 9, ROOT
    )


def test_empty_root_and_count_refused(chain: tuple[Web3, Contract]) -> None:
    w3, anchor = chain
    operator = w3.eth.accounts[1]
    reverts_with(
        anchor.functions.anchor(b"\x00" * 32, 10, 1), operator, "EmptyRoot", 10
    )
    reverts_with(anchor.functions.anchor(ROOT, 10, 0), operator, "EmptyBatch", 10)


def test_only_operator_anchors(chain: tuple[Web3, Contract]) -> None:
    w3, anchor = chain
    admin, stranger = w3.eth.accounts[0], w3.eth.accounts[5]
    op_role = role(anchor, "OPERATOR_ROLE")
    for who in (admin, stranger):
        reverts_with(
            anchor.functions.anchor(ROOT, 11, 1),
            who,
            "AccessControlUnauthorizedAccount",
            who.lower(),
            op_role,
        )

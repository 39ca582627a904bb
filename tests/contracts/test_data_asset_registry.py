"""DataAssetRegistry: register, update, shares summing to 10,000, roles."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from .conftest import GAS, deploy, new_chain, reverts_with, role, send

META = bytes.fromhex("11" * 32)
POLICY = bytes.fromhex("22" * 32)


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Web3, Contract]]:
    w3 = new_chain()
    admin, registrar = w3.eth.accounts[:2]
    reg = deploy(w3, "DataAssetRegistry", admin)
    send(reg.functions.grantRole(role(reg, "REGISTRAR_ROLE"), registrar), admin)
    yield w3, reg


def test_register_mints_token_with_uuid_id(chain: tuple[Web3, Contract]) -> None:
    w3, reg = chain
    registrar, owner, co = w3.eth.accounts[1:4]
    ds = uuid.uuid4()
    shares = [(owner, 7_000), (co, 3_000)]
    receipt = send(
        reg.functions.register(ds.bytes, owner, META, POLICY, shares), registrar
    )
    token = ds.int
    assert reg.functions.tokenIdOf(ds.bytes).call() == token
    assert reg.functions.ownerOf(token).call() == owner
    assert reg.functions.assetOf(token).call() == (META, POLICY, 1)
    assert reg.functions.sharesOf(token).call() == shares
    (ev,) = reg.events.AssetRegistered().process_receipt(receipt, errors=DISCARD)
    assert ev["args"]["tokenId"] == token and ev["args"]["owner"] == owner
    assert len(reg.events.SharesChanged().process_receipt(receipt, errors=DISCARD)) == 1
    print(f"\ngas: ERC-721 register (mint, 2 payees) {receipt['gasUsed']}")
    reverts_with(
        reg.functions.register(ds.bytes, owner, META, POLICY, shares),
        registrar,
        "AssetAlreadyRegistered",
        ds.bytes,
        token,
    )


def test_update_bumps_version_and_set_shares(chain: tuple[Web3, Contract]) -> None:
    w3, reg = chain
    registrar, owner, co = w3.eth.accounts[1:4]
    ds = uuid.uuid4()
    send(
        reg.functions.register(ds.bytes, owner, META, POLICY, [(owner, 10_000)]),
        registrar,
    )
    new_meta = bytes.fromhex("33" * 32)
    receipt = send(reg.functions.updateAsset(ds.int, new_meta, POLICY, 1), registrar)
    (ev,) = reg.events.AssetUpdated().process_receipt(receipt, errors=DISCARD)
    assert ev["args"]["version"] == 2
    assert reg.functions.assetOf(ds.int).call() == (new_meta, POLICY, 2)
    send(reg.functions.setShares(ds.int, [(co, 1), (owner, 9_999)]), registrar)
    assert reg.functions.sharesOf(ds.int).call() == [(co, 1), (owner, 9_999)]
    reverts_with(
        reg.functions.updateAsset(ds.int, b"\0" * 32, POLICY, 2),
        registrar,
        "EmptyMetadataHash",
        ds.int,
    )
    reverts_with(
        reg.functions.updateAsset(123, META, POLICY, 1),
        registrar,
        "ERC721NonexistentToken",
        123,
    )
    reverts_with(
        reg.functions.setShares(123, [(owner, 10_000)]),
        registrar,
        "ERC721NonexistentToken",
        123,
    )


def test_replayed_update_is_stale_and_bumps_once(
    chain: tuple[Web3, Contract],
) -> None:
    w3, reg = chain
    registrar, owner = w3.eth.accounts[1:3]
    ds = uuid.uuid4()
    send(
        reg.functions.register(ds.bytes, owner, META, POLICY, [(owner, 10_000)]),
        registrar,
    )
    new_meta = bytes.fromhex("44" * 32)
    update = reg.functions.updateAsset(ds.int, new_meta, POLICY, 1)
    receipt = send(update, registrar)
    (ev,) = reg.events.AssetUpdated().process_receipt(receipt, errors=DISCARD)
    assert ev["args"]["version"] == 2
    # The relay re-sends the same update after a crash: refused, version unchanged.
    reverts_with(update, registrar, "StaleVersion", ds.int, 1, 2)
    tx = update.transact({"from": registrar, "gas": GAS})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 0
    assert reg.functions.assetOf(ds.int).call() == (new_meta, POLICY, 2)
    # An expected version from the future is refused too.
    reverts_with(
        reg.functions.updateAsset(ds.int, META, POLICY, 3),
        registrar,
        "StaleVersion",
        ds.int,
        3,
        2,
    )
    # The next update, against the current version, goes through.
    send(reg.functions.updateAsset(ds.int, META, POLICY, 2), registrar)
    assert reg.functions.assetOf(ds.int).call() == (META, POLICY, 3)


@pytest.mark.parametrize(
    ("shares", "error", "args"),
    [
        ([("A", 5_000), ("B", 4_999)], "SharesTotalMismatch", (9_999,)),
        ([("A", 5_000), ("B", 5_001)], "SharesTotalMismatch", (10_001,)),
        ([], "InvalidPayeeCount", (0, 16)),
        ([("A", 10_000), ("B", 0)], "InvalidShare", (1, "B", 0)),
        ([("0", 10_000)], "InvalidShare", (0, "0", 10_000)),
        ([("A", 5_000), ("A", 5_000)], "DuplicatePayee", ("A",)),
    ],
)
def test_invalid_shares_refused(
    chain: tuple[Web3, Contract],
    shares: list[tuple[str, int]],
    error: str,
    args: tuple[object, ...],
) -> None:
    w3, reg = chain
    registrar = w3.eth.accounts[1]
    names = {"A": w3.eth.accounts[2], "B": w3.eth.accounts[3], "0": "0x" + "00" * 20}
    real = [(names[p], bps) for p, bps in shares]
    expected = tuple(names[a].lower() if isinstance(a, str) else a for a in args)
    ds = uuid.uuid4()
    reverts_with(
        reg.functions.register(ds.bytes, names["A"], META, POLICY, real),
        registrar,
        error,
        *expected,
    )


def test_too_many_payees_refused(chain: tuple[Web3, Contract]) -> None:
    w3, reg = chain
    payees = [w3.to_checksum_address(f"0x{i:040x}") for i in range(1, 18)]
    shares = [(p, 10_000 // 17) for p in payees]
    reverts_with(
        reg.functions.register(uuid.uuid4().bytes, payees[0], META, POLICY, shares),
        w3.eth.accounts[1],
        "InvalidPayeeCount",
        17,
        16,
    )


def test_empty_metadata_refused(chain: tuple[Web3, Contract]) -> None:
    w3, reg = chain
    registrar, owner = w3.eth.accounts[1:3]
    ds = uuid.uuid4()
    fn = reg.functions.register(ds.bytes, owner, b"\0" * 32, POLICY, [(owner, 10_000)])
    reverts_with(fn, registrar, "EmptyMetadataHash", ds.int)


def test_only_registrar_writes(chain: tuple[Web3, Contract]) -> None:
    w3, reg = chain
    admin, registrar, owner = w3.eth.accounts[:3]
    r = role(reg, "REGISTRAR_ROLE")
    ds = uuid.uuid4()
    send(
        reg.functions.register(ds.bytes, owner, META, POLICY, [(owner, 10_000)]),
        registrar,
    )
    for fn in (
        reg.functions.register(
            uuid.uuid4().bytes, owner, META, POLICY, [(owner, 10_000)]
        ),
        reg.functions.updateAsset(ds.int, META, POLICY, 1),
        reg.functions.setShares(ds.int, [(owner, 10_000)]),
    ):
        for who in (admin, owner):
            reverts_with(fn, who, "AccessControlUnauthorizedAccount", who.lower(), r)
    reverts_with(
        reg.functions.grantRole(r, owner),
        registrar,
        "AccessControlUnauthorizedAccount",
        registrar.lower(),
        b"\0" * 32,
    )


def test_supports_erc721_and_access_control(chain: tuple[Web3, Contract]) -> None:
    _, reg = chain
    for iface in ("0x80ac58cd", "0x7965db0b", "0x01ffc9a7"):
        assert reg.functions.supportsInterface(iface).call()
    assert not reg.functions.supportsInterface("0xdeadbeef").call()

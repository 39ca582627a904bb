"""The typed contract wrappers: every read and submit, decoded events, named reverts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from eth_utils.crypto import keccak
from web3 import Web3

from ledger._contracts import (
    AssetRegistered,
    AssetTotal,
    AssetUpdated,
    BatchAnchored,
    CreditsWithdrawn,
    DataAssetRegistry,
    FeesWithdrawn,
    OnChainAsset,
    ReceiptAnchor,
    Settlement,
    Share,
    SharesChanged,
    Submitted,
    TradeRecorded,
    TradesRecorded,
)
from ledger._deployments import Ledger
from ledger._sender import TxReceipt
from ledger._signer import LocalSigner
from ledger.errors import LedgerError, TransactionRevertedError
from tests.ledger._hardhat import FundedChain

from ._wrappers_helpers import Env, deploy_env, funded_signer, whole

META = keccak(text="metadata v1")
POLICY = keccak(text="policy v1")
REGISTRAR_ROLE = keccak(text="REGISTRAR_ROLE")
OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")
PAUSER_ROLE = keccak(text="PAUSER_ROLE")
TOKEN_SUPPLY = 10**30


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    """A deployment settling in a test ERC-20 the admin (the operator) holds."""
    env = deploy_env(token=True)
    token = env.token
    env.sender.send(token.functions.mint(env.admin.address, TOKEN_SUPPLY))
    env.sender.send(token.functions.approve(env.deployment.settlement, TOKEN_SUPPLY))
    yield env


def as_other(env: Env, signer: LocalSigner) -> Ledger:
    return Ledger.connect(env.w3, env.deployment, signer)


def location_of(event: object, receipt: TxReceipt, log_index: int) -> None:
    assert getattr(event, "tx_hash") == receipt.tx_hash  # noqa: B009
    assert getattr(event, "block_number") == receipt.block_number  # noqa: B009
    assert getattr(event, "log_index") == log_index  # noqa: B009


def register(env: Env, shares: list[Share] | None = None) -> tuple[uuid.UUID, int]:
    dataset = uuid.uuid4()
    env.ledger.registry.submit_register(
        dataset, env.admin.address, META, POLICY, shares or whole(env.admin.address)
    )
    return dataset, DataAssetRegistry.token_id_of(dataset)


# --- DataAssetRegistry ------------------------------------------------------------


def test_token_id_of_matches_the_contract(env: Env) -> None:
    dataset = uuid.uuid4()
    on_chain = env.ledger.registry.contract.functions.tokenIdOf(dataset.bytes).call()
    assert DataAssetRegistry.token_id_of(dataset) == on_chain == dataset.int


def test_register_returns_the_decoded_event_and_the_asset_reads_back(env: Env) -> None:
    registry = env.ledger.registry
    dataset = uuid.uuid4()
    owner = funded_signer(env.w3, eth=1).address
    co = funded_signer(env.w3, eth=1).address
    shares = [Share(owner, 6_667), Share(co, 3_333)]
    submitted = registry.submit_register(dataset, owner, META, POLICY, shares)
    assert isinstance(submitted, Submitted)
    assert submitted.receipt.status == 1
    # Transfer (ERC-721 mint), AssetRegistered, SharesChanged: only ours is decoded.
    assert len(submitted.receipt.logs) == 3
    (event,) = submitted.events
    assert isinstance(event, AssetRegistered)
    token_id = DataAssetRegistry.token_id_of(dataset)
    assert event.token_id == token_id
    assert event.dataset_id == dataset
    assert event.owner == owner
    assert event.metadata_hash == META
    assert event.policy_hash == POLICY
    location_of(event, submitted.receipt, 1)

    assert registry.get_asset(token_id) == OnChainAsset(
        token_id=token_id,
        owner=owner,
        metadata_hash=META,
        policy_hash=POLICY,
        version=1,
        shares=(Share(owner, 6_667), Share(co, 3_333)),
    )
    assert event in registry.get_registered()
    assert registry.get_registered(from_block=event.block_number + 1) == []
    changes = registry.get_shares_changes(from_block=event.block_number)
    assert changes == [
        SharesChanged(
            token_id=token_id,
            shares=(Share(owner, 6_667), Share(co, 3_333)),
            tx_hash=submitted.receipt.tx_hash,
            block_number=submitted.receipt.block_number,
            log_index=2,
        )
    ]


def test_get_asset_of_an_unminted_token_is_none(env: Env) -> None:
    assert env.ledger.registry.get_asset(uuid.uuid4().int) is None


def test_register_twice_reverts_with_asset_already_registered(env: Env) -> None:
    dataset, token_id = register(env)
    with pytest.raises(TransactionRevertedError) as info:
        env.ledger.registry.submit_register(
            dataset, env.admin.address, META, POLICY, whole(env.admin.address)
        )
    assert info.value.contract == "DataAssetRegistry"
    assert info.value.error == "AssetAlreadyRegistered"
    assert info.value.args == {"datasetId": dataset.bytes, "tokenId": token_id}


def test_shares_not_summing_to_10000_revert(env: Env) -> None:
    with pytest.raises(TransactionRevertedError) as info:
        env.ledger.registry.submit_register(
            uuid.uuid4(),
            env.admin.address,
            META,
            POLICY,
            [Share(env.admin.address, 9_000)],
        )
    assert (info.value.error, info.value.args) == (
        "SharesTotalMismatch",
        {"total": 9_000},
    )


def test_update_asset_bumps_the_version_and_refuses_a_stale_one(env: Env) -> None:
    registry = env.ledger.registry
    _, token_id = register(env)
    new_meta, new_policy = keccak(text="metadata v2"), keccak(text="policy v2")
    submitted = registry.submit_update_asset(token_id, new_meta, new_policy, 1)
    (event,) = submitted.events
    assert event == AssetUpdated(
        token_id=token_id,
        metadata_hash=new_meta,
        policy_hash=new_policy,
        version=2,
        tx_hash=submitted.receipt.tx_hash,
        block_number=submitted.receipt.block_number,
        log_index=0,
    )
    asset = registry.get_asset(token_id)
    assert asset is not None
    assert (asset.version, asset.metadata_hash, asset.policy_hash) == (
        2,
        new_meta,
        new_policy,
    )
    assert registry.get_updates(from_block=event.block_number) == [event]

    with pytest.raises(TransactionRevertedError) as info:
        registry.submit_update_asset(token_id, META, POLICY, 1)
    assert info.value.error == "StaleVersion"
    assert info.value.args == {"tokenId": token_id, "expected": 1, "current": 2}
    assert str(info.value) == (
        f"DataAssetRegistry reverted with StaleVersion(tokenId={token_id}, "
        "expected=1, current=2)"
    )


def test_update_of_an_unminted_asset_names_the_token(env: Env) -> None:
    token_id = uuid.uuid4().int
    with pytest.raises(TransactionRevertedError) as info:
        env.ledger.registry.submit_update_asset(token_id, META, POLICY, 1)
    assert (info.value.error, info.value.args) == (
        "ERC721NonexistentToken",
        {"tokenId": token_id},
    )


def test_set_shares(env: Env) -> None:
    registry = env.ledger.registry
    _, token_id = register(env)
    other = funded_signer(env.w3, eth=1).address
    shares = [Share(other, 2_500), Share(env.admin.address, 7_500)]
    submitted = registry.submit_set_shares(token_id, shares)
    (event,) = submitted.events
    assert isinstance(event, SharesChanged)
    assert event.token_id == token_id
    assert event.shares == tuple(shares)
    location_of(event, submitted.receipt, 0)
    asset = registry.get_asset(token_id)
    assert asset is not None and asset.shares == tuple(shares)
    with pytest.raises(TransactionRevertedError) as info:
        registry.submit_set_shares(token_id, [Share(other, 5_000), Share(other, 5_000)])
    assert (info.value.error, info.value.args) == ("DuplicatePayee", {"payee": other})


def test_grant_registrar(env: Env) -> None:
    newcomer = funded_signer(env.w3, eth=1)
    theirs = as_other(env, newcomer).registry
    with pytest.raises(TransactionRevertedError) as info:
        theirs.submit_register(
            uuid.uuid4(), newcomer.address, META, POLICY, whole(newcomer.address)
        )
    assert (info.value.error, info.value.args) == (
        "AccessControlUnauthorizedAccount",
        {"account": newcomer.address, "neededRole": REGISTRAR_ROLE},
    )
    receipt = env.ledger.registry.submit_grant_registrar(newcomer.address)
    assert isinstance(receipt, TxReceipt) and receipt.status == 1
    submitted = theirs.submit_register(
        uuid.uuid4(), newcomer.address, META, POLICY, whole(newcomer.address)
    )
    assert submitted.events[0].owner == newcomer.address


def test_hash_arguments_must_be_32_bytes(env: Env) -> None:
    with pytest.raises(ValueError, match="metadata_hash must be 32 bytes"):
        env.ledger.registry.submit_register(
            uuid.uuid4(), env.admin.address, b"short", POLICY, whole(env.admin.address)
        )


# --- Settlement ---------------------------------------------------------------------


def test_record_trade_credits_the_payees_and_decodes_the_event(env: Env) -> None:
    settlement = env.ledger.settlement
    payee = funded_signer(env.w3, eth=1).address
    _, token_id = register(env, [Share(env.admin.address, 5_000), Share(payee, 5_000)])
    before = (
        settlement.get_credit_of(payee),
        settlement.get_total_credited(),
        settlement.get_accrued_fees(),
    )
    trade_id, buyer = os.urandom(32), funded_signer(env.w3, eth=1).address
    assert settlement.get_is_trade_recorded(trade_id) is False
    submitted = settlement.submit_record_trade(trade_id, token_id, buyer, 1_001, 101)
    (event,) = submitted.events
    assert event == TradeRecorded(
        trade_id=trade_id,
        token_id=token_id,
        buyer=buyer,
        amount=1_001,
        fee=101,
        tx_hash=submitted.receipt.tx_hash,
        block_number=submitted.receipt.block_number,
        log_index=event.log_index,
    )
    # The escrow pull is a token Transfer from another address: not decoded here.
    assert len(submitted.receipt.logs) == 2
    assert settlement.get_is_trade_recorded(trade_id) is True
    assert (
        settlement.get_credit_of(payee) - before[0],
        settlement.get_total_credited() - before[1],
        settlement.get_accrued_fees() - before[2],
    ) == (450, 900, 101)
    assert event in settlement.get_trades(from_block=event.block_number)

    with pytest.raises(TransactionRevertedError) as info:
        settlement.submit_record_trade(trade_id, token_id, buyer, 1, 0)
    assert (info.value.error, info.value.args) == (
        "TradeAlreadyRecorded",
        {"tradeId": trade_id},
    )


def test_record_trades_and_query_batches(env: Env) -> None:
    settlement = env.ledger.settlement
    _, token_id = register(env)
    hashes = [os.urandom(32) for _ in range(3)]
    assert settlement.get_is_batch_recorded(70) is False
    submitted = settlement.submit_record_trades(
        70, hashes, [AssetTotal(token_id, 3_000, 300)]
    )
    (event,) = submitted.events
    assert event == TradesRecorded(
        batch_id=70,
        trade_hashes=tuple(hashes),
        amount=3_000,
        fee=300,
        tx_hash=submitted.receipt.tx_hash,
        block_number=submitted.receipt.block_number,
        log_index=event.log_index,
    )
    assert settlement.get_is_batch_recorded(70) is True
    settlement.submit_record_trades(71, [os.urandom(32)], [])
    assert settlement.get_trade_batches(batch_id=70) == [event]
    assert [b.batch_id for b in settlement.get_trade_batches(batch_id=71)] == [71]
    assert settlement.get_trade_batches(batch_id=72) == []
    every = [b.batch_id for b in settlement.get_trade_batches()]
    assert every[-2:] == [70, 71]

    with pytest.raises(TransactionRevertedError) as info:
        settlement.submit_record_trades(70, hashes, [])
    assert (
        str(info.value) == "Settlement reverted with BatchAlreadyRecorded(batchId=70)"
    )
    assert info.value.args == {"batchId": 70}


def test_a_non_operator_cannot_record(env: Env) -> None:
    stranger = funded_signer(env.w3, eth=1)
    with pytest.raises(TransactionRevertedError) as info:
        as_other(env, stranger).settlement.submit_record_trades(
            99, [os.urandom(32)], []
        )
    assert info.value.error == "AccessControlUnauthorizedAccount"
    assert info.value.args == {"account": stranger.address, "neededRole": OPERATOR_ROLE}


def test_withdraw_credits_and_fees(env: Env) -> None:
    settlement = env.ledger.settlement
    payee = funded_signer(env.w3, eth=1)
    _, token_id = register(env, [Share(payee.address, 10_000)])
    settlement.submit_record_trade(os.urandom(32), token_id, payee.address, 500, 50)
    theirs = as_other(env, payee).settlement
    owed = settlement.get_credit_of(payee.address)
    assert owed == 450
    submitted = theirs.submit_withdraw()
    (event,) = submitted.events
    assert event == CreditsWithdrawn(
        payee=payee.address,
        amount=450,
        tx_hash=submitted.receipt.tx_hash,
        block_number=submitted.receipt.block_number,
        log_index=event.log_index,
    )
    assert env.token.functions.balanceOf(payee.address).call() == 450
    assert settlement.get_credit_of(payee.address) == 0
    with pytest.raises(TransactionRevertedError) as info:
        theirs.submit_withdraw()
    assert (info.value.error, info.value.args) == (
        "NothingToWithdraw",
        {"account": payee.address},
    )

    fees = settlement.get_accrued_fees()
    assert fees > 0
    recipient = funded_signer(env.w3, eth=1).address
    fee_submitted = settlement.submit_withdraw_fees(recipient)
    (fee_event,) = fee_submitted.events
    assert isinstance(fee_event, FeesWithdrawn)
    assert (fee_event.recipient, fee_event.amount) == (recipient, fees)
    location_of(fee_event, fee_submitted.receipt, fee_event.log_index)
    assert settlement.get_accrued_fees() == 0
    assert env.token.functions.balanceOf(recipient).call() == fees


def test_pause_unpause_and_pauser_grant(env: Env) -> None:
    settlement = env.ledger.settlement
    pauser = funded_signer(env.w3, eth=1)
    theirs = as_other(env, pauser).settlement
    with pytest.raises(TransactionRevertedError) as info:
        theirs.submit_pause()
    assert info.value.args == {"account": pauser.address, "neededRole": PAUSER_ROLE}
    assert settlement.submit_grant_pauser(pauser.address).status == 1
    assert theirs.submit_pause().status == 1
    assert settlement.get_paused() is True
    with pytest.raises(TransactionRevertedError) as paused:
        settlement.submit_record_trades(500, [os.urandom(32)], [])
    assert (paused.value.error, paused.value.args) == ("EnforcedPause", {})
    assert settlement.submit_unpause().status == 1
    assert settlement.get_paused() is False
    assert (
        settlement.submit_record_trades(500, [os.urandom(32)], []).receipt.status == 1
    )


def test_grant_operator_on_settlement(env: Env) -> None:
    operator = funded_signer(env.w3, eth=1)
    assert env.ledger.settlement.submit_grant_operator(operator.address).status == 1
    theirs = as_other(env, operator).settlement
    assert (
        theirs.submit_record_trades(600, [os.urandom(32)], []).events[0].batch_id == 600
    )


# --- ReceiptAnchor --------------------------------------------------------------------


def test_anchor_and_query(env: Env) -> None:
    anchor = env.ledger.anchor
    root = keccak(text="root 1")
    assert anchor.get_root_of(1) is None
    submitted = anchor.submit_anchor(root, 1, 42)
    (event,) = submitted.events
    assert event == BatchAnchored(
        batch_id=1,
        root=root,
        count=42,
        tx_hash=submitted.receipt.tx_hash,
        block_number=submitted.receipt.block_number,
        log_index=0,
    )
    assert anchor.get_root_of(1) == root
    anchor.submit_anchor(keccak(text="root 2"), 2, 1)
    assert anchor.get_anchored(batch_id=1) == [event]
    assert [e.batch_id for e in anchor.get_anchored()] == [1, 2]
    assert anchor.get_anchored(to_block=event.block_number) == [event]
    with pytest.raises(TransactionRevertedError) as info:
        anchor.submit_anchor(keccak(text="other"), 1, 1)
    assert (info.value.contract, info.value.error, info.value.args) == (
        "ReceiptAnchor",
        "BatchAlreadyAnchored",
        {"batchId": 1, "root": root},
    )


def test_anchor_grant_operator(env: Env) -> None:
    operator = funded_signer(env.w3, eth=1)
    theirs = as_other(env, operator).anchor
    with pytest.raises(TransactionRevertedError) as info:
        theirs.submit_anchor(keccak(text="x"), 900, 1)
    assert info.value.error == "AccessControlUnauthorizedAccount"
    assert env.ledger.anchor.submit_grant_operator(operator.address).status == 1
    assert theirs.submit_anchor(keccak(text="x"), 900, 1).events[0].count == 1


# --- read-only wrappers, paging --------------------------------------------------


def test_a_read_only_wrapper_reads_but_refuses_to_submit(env: Env) -> None:
    reader = Ledger.connect(env.w3, env.deployment, None)
    assert reader.sender is None
    assert reader.settlement.get_paused() is False
    assert repr(reader.anchor) == f"ReceiptAnchor({env.deployment.anchor}, read-only)"
    with pytest.raises(LedgerError, match="read-only: connect with a signer"):
        reader.anchor.submit_anchor(keccak(text="y"), 901, 1)
    standalone = Settlement(env.w3, env.deployment.settlement, None)
    assert standalone.get_total_credited() == env.ledger.settlement.get_total_credited()
    with pytest.raises(LedgerError, match=r"Settlement at 0x.* is read-only"):
        standalone.submit_pause()


def test_log_queries_page_through_5000_block_ranges(env: Env) -> None:
    anchor = ReceiptAnchor(env.w3, env.deployment.anchor, None, start_block=0)
    calls = env.provider.params
    calls.pop("eth_getLogs", None)
    env.provider.hooks["eth_getLogs"] = lambda params, seen: {
        "jsonrpc": "2.0",
        "id": 1,
        "result": [],
    }
    try:
        assert anchor.get_anchored(from_block=3, to_block=12_345) == []
    finally:
        del env.provider.hooks["eth_getLogs"]
    # eth-tester's provider sees the query in its own (snake-case) shape.
    queries = [p[0] for p in calls["eth_getLogs"]]
    ranges = [(q["from_block"], q["to_block"]) for q in queries]
    assert ranges == [(3, 5_002), (5_003, 10_002), (10_003, 12_345)]
    assert all(q["address"] == [env.deployment.anchor] for q in queries)


def test_log_queries_halve_a_range_the_node_finds_too_large(env: Env) -> None:
    from ._wrappers_helpers import rpc_error

    registry = DataAssetRegistry(env.w3, env.deployment.registry, None)
    env.provider.params.pop("eth_getLogs", None)

    def picky(params: object, seen: int) -> object:
        query = params[0]  # type: ignore[index]
        span = query["to_block"] - query["from_block"] + 1
        if span > 1_250:
            return rpc_error(-32005, "query returned more than 10000 results")
        return {"jsonrpc": "2.0", "id": 1, "result": []}

    env.provider.hooks["eth_getLogs"] = picky  # type: ignore[assignment]
    try:
        assert registry.get_registered(from_block=0, to_block=3_000) == []
    finally:
        del env.provider.hooks["eth_getLogs"]
    answered = [
        (q["from_block"], q["to_block"])
        for q in (p[0] for p in env.provider.params["eth_getLogs"])
        if q["to_block"] - q["from_block"] + 1 <= 1_250
    ]
    assert answered == [(0, 1_249), (1_250, 2_499), (2_500, 3_000)]


# --- each backend: the embedded chain, and a Hardhat node (integration) ----------


def test_wrappers_on_each_backend(chain: FundedChain) -> None:
    from ledger._deployments import deploy_contracts
    from ledger._sender import TransactionSender

    w3: Web3 = chain.chain.w3
    signer = LocalSigner.from_key(chain.key)
    deployment = deploy_contracts(w3, TransactionSender(w3, signer), network="each")
    ledger = Ledger.connect(w3, deployment, signer)
    assert ledger.sender is not None
    dataset = uuid.uuid4()
    registered = ledger.registry.submit_register(
        dataset, signer.address, META, POLICY, whole(signer.address)
    )
    token_id = registered.events[0].token_id
    assert registered.events[0].dataset_id == dataset
    with pytest.raises(TransactionRevertedError) as stale:
        ledger.registry.submit_update_asset(token_id, META, POLICY, 5)
    assert stale.value.args == {"tokenId": token_id, "expected": 5, "current": 1}
    assert ledger.registry.get_asset(uuid.uuid4().int) is None

    batch = ledger.settlement.submit_record_trades(
        8, [os.urandom(32)], [AssetTotal(token_id, 10, 1)]
    )
    assert batch.events[0].batch_id == 8
    with pytest.raises(TransactionRevertedError) as again:
        ledger.settlement.submit_record_trades(8, [os.urandom(32)], [])
    assert (again.value.error, again.value.args) == (
        "BatchAlreadyRecorded",
        {"batchId": 8},
    )
    # Mined with status 0 (both signed before either landed): decoded by replay.
    sender = ledger.sender
    fn = ledger.anchor.contract.functions
    first = sender.sign(fn.anchor(META, 3, 1))
    second = sender.sign(fn.anchor(POLICY, 3, 1), gas=200_000)
    sender.broadcast(first)
    sender.broadcast(second)
    assert sender.wait(first.tx_hash).status == 1
    with pytest.raises(TransactionRevertedError) as mined:
        sender.wait(second.tx_hash)
    assert (mined.value.error, mined.value.args, mined.value.tx_hash) == (
        "BatchAlreadyAnchored",
        {"batchId": 3, "root": META},
        second.tx_hash,
    )
    assert [e.batch_id for e in ledger.settlement.get_trade_batches(batch_id=8)] == [8]
    assert ledger.anchor.get_root_of(3) == META

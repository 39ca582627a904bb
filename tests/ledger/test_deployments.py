"""Deployment files, deploying the contracts, and connecting to a deployment."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import stat
from pathlib import Path

import pytest
from eth_utils.crypto import keccak
from web3 import Web3

from ledger._artifacts import contracts_dir, load_artifact
from ledger._deployments import (
    DEPLOYMENT_FORMAT,
    Deployment,
    Ledger,
    deploy_contracts,
    deployments_dir,
    load_deployment,
)
from ledger._sender import TransactionSender
from ledger.errors import ChainIdMismatchError, DeploymentError

from ._wrappers_helpers import deploy_env, funded_signer, new_chain

ZERO_ROLE = b"\x00" * 32


def address(n: int) -> str:
    return Web3.to_checksum_address(f"0x{n:040x}")


SAMPLE = Deployment(
    network="sepolia",
    chain_id=11155111,
    registry=address(1),  # type: ignore[arg-type]
    settlement=address(2),  # type: ignore[arg-type]
    anchor=address(3),  # type: ignore[arg-type]
    settlement_token=address(4),  # type: ignore[arg-type]
    deployer=address(5),  # type: ignore[arg-type]
    block_number=1234,
    bytecode_sha256={"DataAssetRegistry": "ab" * 32, "Settlement": "cd" * 32},
)


def test_json_round_trip() -> None:
    text = SAMPLE.to_json()
    raw = json.loads(text)
    assert raw["format"] == DEPLOYMENT_FORMAT
    assert raw["chain_id"] == 11155111 and raw["settlement_token"] == address(4)
    assert Deployment.from_json(text, source="mem") == SAMPLE
    record_only = dataclasses.replace(SAMPLE, settlement_token=None)
    assert json.loads(record_only.to_json())["settlement_token"] is None
    assert Deployment.from_json(record_only.to_json(), source="mem") == record_only


def test_save_is_atomic_and_load_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "deployments" / "sepolia.json"
    SAMPLE.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["sepolia.json"]
    assert load_deployment("sepolia", path.parent) == SAMPLE
    SAMPLE.save(path)  # replacing leaves no temporary file behind either
    assert sorted(p.name for p in path.parent.iterdir()) == ["sepolia.json"]


def test_deployments_dir_default_and_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VEILX_DEPLOYMENTS_DIR", raising=False)
    assert deployments_dir() == contracts_dir() / "deployments"
    monkeypatch.setenv("VEILX_DEPLOYMENTS_DIR", str(tmp_path))
    assert deployments_dir() == tmp_path
    SAMPLE.save(tmp_path / "sepolia.json")
    assert load_deployment("sepolia") == SAMPLE


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError) as info:
        load_deployment("holesky", tmp_path)
    assert info.value.network == "holesky"
    assert info.value.path == str(tmp_path / "holesky.json")
    assert "run `veilx chain deploy --network holesky`" in info.value.reason


@pytest.mark.parametrize("network", ["../etc/passwd", "", ".hidden", "a/b", "x" * 65])
def test_network_names_cannot_escape_the_directory(
    tmp_path: Path, network: str
) -> None:
    with pytest.raises(DeploymentError, match="a network name is letters"):
        load_deployment(network, tmp_path)


def mutate(**changes: object) -> str:
    raw = json.loads(SAMPLE.to_json())
    for key, value in changes.items():
        if value is ...:
            del raw[key]
        else:
            raw[key] = value
    return json.dumps(raw)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (mutate(registry=...), "field 'registry': missing"),
        (mutate(settlement="0x1234"), "field 'settlement': not an address"),
        (mutate(anchor=address(3).lower().replace("0x", "0X")), "field 'anchor'"),
        (
            mutate(deployer="0x" + address(0xABCDEF)[2:].swapcase()),
            "field 'deployer': bad address checksum",
        ),
        (mutate(chain_id=0), "field 'chain_id': not an integer >= 1"),
        (mutate(chain_id=True), "field 'chain_id': not an integer >= 1"),
        (mutate(block_number="7"), "field 'block_number': not an integer >= 0"),
        (mutate(settlement_token=5), "field 'settlement_token': not an address"),
        (mutate(format="veilx-deployment/0"), "field 'format'"),
        (mutate(network="../x"), "field 'network': not a network name"),
        (
            mutate(bytecode_sha256={"Settlement": "xyz"}),
            "field 'bytecode_sha256': not a map of contract name to sha256 hex",
        ),
    ],
)
def test_malformed_file_names_the_field(text: str, reason: str) -> None:
    with pytest.raises(DeploymentError) as info:
        Deployment.from_json(text, source="deployments/sepolia.json")
    assert reason in info.value.reason
    assert info.value.path == "deployments/sepolia.json"
    assert str(info.value).startswith("deployment ")


def test_a_file_for_another_network_is_refused(tmp_path: Path) -> None:
    SAMPLE.save(tmp_path / "mainnet.json")
    with pytest.raises(DeploymentError) as info:
        load_deployment("mainnet", tmp_path)
    assert info.value.reason == "field 'network': the file is for 'sepolia'"


# --- deploying and connecting --------------------------------------------------


def has_role(w3: Web3, name: str, address_: str, role: bytes, account: str) -> bool:
    contract = w3.eth.contract(address=address_, abi=load_artifact(name).abi)  # type: ignore[call-overload]
    return bool(contract.functions.hasRole(role, account).call())


def test_deploy_grants_the_operator_its_roles() -> None:
    w3, _ = new_chain()
    admin = funded_signer(w3)
    operator = funded_signer(w3, eth=1).address
    sender = TransactionSender(w3, admin)
    first_block = w3.eth.block_number + 1
    deployment = deploy_contracts(w3, sender, network="local", operator=operator)

    assert deployment.network == "local"
    assert deployment.chain_id == w3.eth.chain_id
    assert deployment.deployer == admin.address
    assert deployment.block_number == first_block
    assert deployment.settlement_token is None
    for name in ("DataAssetRegistry", "Settlement", "ReceiptAnchor"):
        code = load_artifact(name).deployed_bytecode.removeprefix("0x")
        digest = hashlib.sha256(bytes.fromhex(code)).hexdigest()
        assert deployment.bytecode_sha256[name] == digest
    assert sorted(deployment.bytecode_sha256) == [
        "DataAssetRegistry",
        "ReceiptAnchor",
        "Settlement",
    ]

    grants = [
        ("DataAssetRegistry", deployment.registry, "REGISTRAR_ROLE"),
        ("Settlement", deployment.settlement, "OPERATOR_ROLE"),
        ("Settlement", deployment.settlement, "PAUSER_ROLE"),
        ("ReceiptAnchor", deployment.anchor, "OPERATOR_ROLE"),
    ]
    for name, where, role in grants:
        assert has_role(w3, name, where, keccak(text=role), operator)
        assert not has_role(w3, name, where, keccak(text=role), admin.address)
        assert has_role(w3, name, where, ZERO_ROLE, admin.address)

    settlement = w3.eth.contract(
        address=deployment.settlement, abi=load_artifact("Settlement").abi
    )
    assert settlement.functions.registry().call() == deployment.registry
    assert settlement.functions.settlementToken().call() == "0x" + "00" * 20


def test_deploy_defaults_the_operator_to_the_deployer_and_sets_the_token() -> None:
    env = deploy_env(token=True)
    deployment = env.deployment
    assert deployment.settlement_token == env.token.address
    settlement = env.ledger.settlement.contract
    assert settlement.functions.settlementToken().call() == env.token.address
    assert has_role(
        env.w3,
        "Settlement",
        deployment.settlement,
        keccak(text="OPERATOR_ROLE"),
        env.admin.address,
    )


def test_deploy_refuses_a_bad_network_name_before_spending_gas() -> None:
    w3, provider = new_chain()
    sender = TransactionSender(w3, funded_signer(w3))
    with pytest.raises(DeploymentError, match="a network name is letters"):
        deploy_contracts(w3, sender, network="../up")
    assert provider.calls["eth_sendRawTransaction"] == 0


def test_connect_binds_the_wrappers_from_the_deployment_block() -> None:
    env = deploy_env()
    ledger = env.ledger
    assert ledger.deployment == env.deployment
    assert ledger.registry.address == env.deployment.registry
    assert ledger.settlement.address == env.deployment.settlement
    assert ledger.anchor.address == env.deployment.anchor
    assert ledger.sender is not None and ledger.sender.address == env.admin.address
    assert ledger.registry.start_block == env.deployment.block_number
    assert repr(ledger) == f"Ledger(network='test', as {env.admin.address})"
    reader = Ledger.connect(env.w3, env.deployment, None)
    assert reader.sender is None and reader.registry.sender is None


def test_connect_checks_the_chain_id() -> None:
    env = deploy_env()
    wrong = dataclasses.replace(env.deployment, chain_id=env.deployment.chain_id + 1)
    with pytest.raises(ChainIdMismatchError) as info:
        Ledger.connect(env.w3, wrong, env.admin)
    error = info.value
    assert (error.network, error.expected, error.actual) == (
        "test",
        env.deployment.chain_id + 1,
        env.w3.eth.chain_id,
    )
    assert str(error) == (
        f"deployment 'test' is on chain id {env.deployment.chain_id + 1}, "
        f"but the node reports chain id {env.w3.eth.chain_id}"
    )


def test_connect_checks_there_is_code_at_every_address() -> None:
    env = deploy_env()
    nowhere = funded_signer(env.w3, eth=1).address  # an account, not a contract
    broken = dataclasses.replace(env.deployment, anchor=nowhere)
    with pytest.raises(DeploymentError) as info:
        Ledger.connect(env.w3, broken, None)
    assert (
        info.value.reason == f"no contract code at the ReceiptAnchor address {nowhere}"
    )


def test_an_escrow_round_trips_and_older_files_have_none() -> None:
    with_escrow = dataclasses.replace(
        SAMPLE,
        escrow=address(6),  # type: ignore[arg-type]
        payment_token=address(7),  # type: ignore[arg-type]
    )
    raw = json.loads(with_escrow.to_json())
    assert raw["escrow"] == address(6) and raw["payment_token"] == address(7)
    assert Deployment.from_json(with_escrow.to_json(), source="mem") == with_escrow
    assert "escrow" not in json.loads(SAMPLE.to_json())  # older files: unchanged
    assert Deployment.from_json(SAMPLE.to_json(), source="mem").escrow is None
    broken = {**raw, "payment_token": "0x12"}
    with pytest.raises(DeploymentError, match="payment_token"):
        Deployment.from_json(json.dumps(broken), source="mem")


def test_deploy_with_an_escrow_grants_the_operator_and_binds_it() -> None:
    w3, _ = new_chain()
    admin = funded_signer(w3)
    operator = funded_signer(w3, eth=1).address
    sender = TransactionSender(w3, admin)
    deployment = deploy_contracts(
        w3, sender, network="local", operator=operator, escrow=True
    )
    assert deployment.escrow is not None and deployment.payment_token is not None
    assert {"PaymentEscrow", "SettlementToken"} <= set(deployment.bytecode_sha256)
    assert has_role(
        w3,
        "PaymentEscrow",
        deployment.escrow,
        keccak(text="OPERATOR_ROLE"),
        operator,
    )
    ledger = Ledger.connect(w3, deployment, admin)
    assert ledger.escrow is not None and ledger.payment_token is not None
    assert ledger.escrow.get_token() == deployment.payment_token
    assert ledger.payment_token.get_decimals() == 2
    assert ledger.payment_token.get_symbol() == "vEUR"
    # An existing token is used as given, and no new one is deployed.
    again = deploy_contracts(
        w3,
        sender,
        network="local",
        escrow=True,
        payment_token=deployment.payment_token,
    )
    assert again.payment_token == deployment.payment_token
    assert "SettlementToken" not in again.bytecode_sha256

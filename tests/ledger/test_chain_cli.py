"""``veilx chain deploy`` / ``status`` against an in-process chain.

The commands reach the node through :func:`ledger.cli.connect_web3`; the tests swap
it for one returning an eth-tester chain, so nothing is started or listened on.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner, Result
from web3 import Web3
from web3.types import Wei

import ledger.cli as cli
from ledger._contracts import AssetTotal
from ledger._deployments import Deployment, Ledger, load_deployment
from ledger._signer import LocalSigner

from ._wrappers_helpers import new_chain, whole

RPC = "http://node.invalid:8545"


@pytest.fixture
def w3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Web3]:
    chain, _ = new_chain()
    urls: list[str] = []

    def connect(url: str) -> Web3:
        urls.append(url)
        return chain

    monkeypatch.setattr(cli, "connect_web3", connect)
    yield chain
    assert set(urls) <= {RPC}


@pytest.fixture
def key(w3: Web3, monkeypatch: pytest.MonkeyPatch) -> LocalSigner:
    raw = os.urandom(32)
    signer = LocalSigner.from_key(raw)
    tx = w3.eth.send_transaction(
        {"from": w3.eth.accounts[0], "to": signer.address, "value": Wei(10**20)}
    )
    w3.eth.wait_for_transaction_receipt(tx)
    monkeypatch.setenv("VEILX_CHAIN_KEY", "0x" + raw.hex())
    return signer


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


def deploy(out: Path, *extra: str) -> Result:
    return run(
        "deploy", "--network", "local", "--rpc-url", RPC, "--out", str(out), *extra
    )


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_help() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "Deploy and inspect the ledger contracts." in result.output
    assert "deploy" in result.output and "status" in result.output


def test_connect_web3_builds_an_http_provider_with_a_timeout() -> None:
    w3 = cli.connect_web3(RPC)
    provider = w3.provider
    assert isinstance(provider, Web3.HTTPProvider)
    assert provider.endpoint_uri == RPC
    assert dict(provider.get_request_kwargs())["timeout"] == 10


def test_deploy_writes_the_deployment_and_prints_the_addresses(
    w3: Web3, key: LocalSigner, tmp_path: Path
) -> None:
    result = deploy(tmp_path)
    assert result.exit_code == 0, result.output
    deployment = load_deployment("local", tmp_path)
    assert deployment.deployer == key.address
    assert deployment.chain_id == w3.eth.chain_id
    for address in (deployment.registry, deployment.settlement, deployment.anchor):
        assert address in result.stdout
        assert w3.eth.get_code(address) != b""
    assert "Deployed local" in result.stdout
    assert str(tmp_path / "local.json") in result.stdout.replace("\n", "")


def test_deploy_refuses_to_overwrite_without_force(
    w3: Web3, key: LocalSigner, tmp_path: Path
) -> None:
    assert deploy(tmp_path).exit_code == 0
    first = load_deployment("local", tmp_path)
    sent = w3.eth.get_transaction_count(key.address)
    line = one_line_error(deploy(tmp_path))
    assert "local.json exists; pass --force" in line
    assert w3.eth.get_transaction_count(key.address) == sent  # nothing was sent
    assert load_deployment("local", tmp_path) == first
    assert deploy(tmp_path, "--force").exit_code == 0
    assert load_deployment("local", tmp_path).registry != first.registry


def test_deploy_with_operator_and_token(
    w3: Web3, key: LocalSigner, tmp_path: Path
) -> None:
    operator = Account.create().address
    token = Account.create().address
    result = deploy(
        tmp_path, "--operator", operator.lower(), "--settlement-token", token
    )
    assert result.exit_code == 0, result.output
    deployment = load_deployment("local", tmp_path)
    assert deployment.settlement_token == token
    assert token in result.stdout
    ledger = Ledger.connect(w3, deployment, None)
    role = Web3.keccak(text="OPERATOR_ROLE")
    assert ledger.anchor.contract.functions.hasRole(role, operator).call()


def test_deploy_with_a_keystore(
    w3: Web3, key: LocalSigner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = bytes.fromhex(os.environ["VEILX_CHAIN_KEY"][2:])
    keystore = tmp_path / "operator.json"
    keystore.write_text(
        json.dumps(Account.encrypt(raw, "s3cret", kdf="scrypt", iterations=2**10))
    )
    monkeypatch.delenv("VEILX_CHAIN_KEY")
    out = tmp_path / "out"
    line = one_line_error(deploy(out, "--keystore", str(keystore)))
    assert "VEILX_CHAIN_KEYSTORE_PASSWORD" in line
    monkeypatch.setenv("VEILX_CHAIN_KEYSTORE_PASSWORD", "s3cret")
    result = deploy(out, "--keystore", str(keystore))
    assert result.exit_code == 0, result.output
    assert load_deployment("local", out).deployer == key.address
    monkeypatch.setenv("VEILX_CHAIN_KEYSTORE_PASSWORD", "wrong")
    line = one_line_error(deploy(out, "--keystore", str(keystore), "--force"))
    assert "wrong password or corrupt keystore" in line


def test_deploy_without_a_key_names_the_variable(
    w3: Web3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VEILX_CHAIN_KEY", raising=False)
    line = one_line_error(deploy(tmp_path))
    assert "environment variable VEILX_CHAIN_KEY: not set" in line
    monkeypatch.setenv("OTHER_KEY", "0x1234")
    line = one_line_error(deploy(tmp_path, "--key-env", "OTHER_KEY"))
    assert "environment variable OTHER_KEY" in line and "0x1234" not in line
    assert not (tmp_path / "local.json").exists()


def test_deploy_rejects_a_bad_address(
    w3: Web3, key: LocalSigner, tmp_path: Path
) -> None:
    result = deploy(tmp_path, "--operator", "0x1234")
    assert result.exit_code == 2
    assert "is not an address" in result.output


def test_deploy_reports_a_refused_transaction(
    w3: Web3, key: LocalSigner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A signer with no ether: the node refuses; one line, exit 1, no file.
    monkeypatch.setenv("VEILX_CHAIN_KEY", "0x" + os.urandom(32).hex())
    line = one_line_error(deploy(tmp_path))
    assert "refused" in line
    assert not (tmp_path / "local.json").exists()


def status_values(output: str) -> dict[str, str]:
    rows = re.findall(r"│\s*([A-Za-z][A-Za-z ()]+?)\s*│\s*(\S+)\s*│", output)
    return dict(rows)


def test_status_shows_addresses_and_what_is_on_chain(
    w3: Web3, key: LocalSigner, tmp_path: Path
) -> None:
    assert deploy(tmp_path).exit_code == 0
    deployment = load_deployment("local", tmp_path)
    ledger = Ledger.connect(w3, deployment, key)
    for _ in range(2):
        ledger.registry.submit_register(
            uuid.uuid4(), key.address, b"\x01" * 32, b"\x02" * 32, whole(key.address)
        )
    token = ledger.registry.get_registered()[0].token_id
    ledger.settlement.submit_record_trades(1, [b"\x03" * 32], [AssetTotal(token, 9, 1)])
    for batch in (1, 2, 3):
        ledger.anchor.submit_anchor(b"\x04" * 32, batch, 5)

    result = run(
        "status", "--network", "local", "--rpc-url", RPC, "--dir", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    values = status_values(result.stdout)
    assert values["DataAssetRegistry"] == deployment.registry
    assert values["Settlement"] == deployment.settlement
    assert values["ReceiptAnchor"] == deployment.anchor
    assert values["Chain id"] == str(w3.eth.chain_id)
    assert values["Head block"] == str(w3.eth.block_number)
    assert values["Registered assets"] == "2"
    assert values["Trade batches"] == "1"
    assert values["Anchored batches"] == "3"


def test_status_without_a_deployment(w3: Web3, tmp_path: Path) -> None:
    line = one_line_error(
        run("status", "--network", "nowhere", "--rpc-url", RPC, "--dir", str(tmp_path))
    )
    assert "no deployment file; run `veilx chain deploy --network nowhere`" in line


def test_status_on_the_wrong_chain(w3: Web3, tmp_path: Path) -> None:
    other = Deployment.from_json(
        json.dumps(
            {
                "format": "veilx-deployment/1",
                "network": "local",
                "chain_id": 1,
                "registry": "0x" + "11" * 20,
                "settlement": "0x" + "22" * 20,
                "anchor": "0x" + "33" * 20,
                "settlement_token": None,
                "deployer": "0x" + "44" * 20,
                "block_number": 0,
                "bytecode_sha256": {},
            }
        ),
        source="test",
    )
    other.save(tmp_path / "local.json")
    line = one_line_error(
        run("status", "--network", "local", "--rpc-url", RPC, "--dir", str(tmp_path))
    )
    assert f"but the node reports chain id {w3.eth.chain_id}" in line


def test_status_with_no_code_at_an_address(
    w3: Web3, key: LocalSigner, tmp_path: Path
) -> None:
    assert deploy(tmp_path).exit_code == 0
    deployment = load_deployment("local", tmp_path)
    raw = json.loads(deployment.to_json())
    raw["registry"] = key.address
    (tmp_path / "local.json").write_text(json.dumps(raw))
    line = one_line_error(
        run("status", "--network", "local", "--rpc-url", RPC, "--dir", str(tmp_path))
    )
    assert f"no contract code at the DataAssetRegistry address {key.address}" in line

"""``veilx chain``: deploy the ledger contracts and inspect a deployment.

``deploy`` signs with a key from an environment variable (default
``VEILX_CHAIN_KEY``) or an encrypted JSON keystore (password in
``VEILX_CHAIN_KEYSTORE_PASSWORD``), deploys the three contracts, grants the
operator its roles and writes ``<out>/<network>.json``. ``status`` loads that file,
checks the node's chain id and code, and prints what is on chain. Failures print one
line and exit with status 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from web3 import Web3

from ledger._deployments import (
    Deployment,
    Ledger,
    deploy_contracts,
    deployment_path,
    deployments_dir,
    load_deployment,
)
from ledger._sender import TransactionSender, _Rpc
from ledger._signer import DEFAULT_KEY_ENV, LocalSigner, Signer
from ledger.errors import LedgerError, SignerError

__all__ = ["KEYSTORE_PASSWORD_ENV", "app", "connect_web3"]

KEYSTORE_PASSWORD_ENV = "VEILX_CHAIN_KEYSTORE_PASSWORD"  # noqa: S105 - a variable name
"""The environment variable holding the ``--keystore`` password."""

app = typer.Typer(
    help="Deploy and inspect the ledger contracts.",
    no_args_is_help=True,
    add_completion=False,
)


def connect_web3(rpc_url: str) -> Web3:
    """The node connection every command uses.

    web3's own retries are off: :class:`~ledger._sender.TransactionSender` retries
    transient failures itself.
    """
    return Web3(
        Web3.HTTPProvider(
            rpc_url, request_kwargs={"timeout": 10}, exception_retry_configuration=None
        )
    )


NetworkOpt = Annotated[
    str, typer.Option("--network", help="Network name: the deployment file's stem.")
]
RpcUrlOpt = Annotated[
    str, typer.Option("--rpc-url", help="The node's HTTP JSON-RPC endpoint.")
]


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


def _address(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    if not Web3.is_address(value):
        raise typer.BadParameter(f"{value!r} is not an address", param_hint=option)
    return Web3.to_checksum_address(value)


def _signer(key_env: str, keystore: Path | None) -> Signer:
    if keystore is None:
        return LocalSigner.from_env(key_env)
    password = os.environ.get(KEYSTORE_PASSWORD_ENV)
    if password is None:
        raise SignerError(
            f"keystore {keystore}",
            f"set the password in the environment variable {KEYSTORE_PASSWORD_ENV}",
        )
    return LocalSigner.from_keystore(keystore, password)


def _addresses_table(deployment: Deployment, title: str) -> Table:
    table = Table(title=title)
    table.add_column("Contract")
    table.add_column("Address")
    for name, address in deployment.addresses().items():
        table.add_row(name, address)
    table.add_row(
        "Settlement token", deployment.settlement_token or "none (record only)"
    )
    table.add_row("Deployer (admin)", deployment.deployer)
    return table


@app.command()
def deploy(
    network: NetworkOpt,
    rpc_url: RpcUrlOpt,
    key_env: Annotated[
        str,
        typer.Option(
            "--key-env", help="Environment variable holding the hex private key."
        ),
    ] = DEFAULT_KEY_ENV,
    keystore: Annotated[
        Path | None,
        typer.Option(
            "--keystore",
            help=f"Encrypted JSON keystore; password in ${KEYSTORE_PASSWORD_ENV}.",
            dir_okay=False,
        ),
    ] = None,
    operator: Annotated[
        str | None,
        typer.Option("--operator", help="Gets the operator roles (default: deployer)."),
    ] = None,
    settlement_token: Annotated[
        str | None,
        typer.Option(
            "--settlement-token", help="ERC-20 to settle in (default: record only)."
        ),
    ] = None,
    confirmations: Annotated[
        int, typer.Option("--confirmations", min=0, help="Blocks to wait on top.")
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            file_okay=False,
            help="Directory for <network>.json.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing deployment file.")
    ] = False,
    escrow: Annotated[
        bool,
        typer.Option(
            "--escrow",
            help="Also deploy the buyers' payment escrow (the onchain way of "
            "paying), over --payment-token or a new vEUR token.",
        ),
    ] = False,
    payment_token: Annotated[
        str | None,
        typer.Option(
            "--payment-token",
            help="The ERC-20 buyers pay in (with --escrow); default: a new vEUR.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Deploy the registry, settlement and anchor and write <network>.json."""
    if keystore is not None and key_env != DEFAULT_KEY_ENV:
        raise typer.BadParameter("give --key-env or --keystore, not both")
    operator = _address(operator, "--operator")
    settlement_token = _address(settlement_token, "--settlement-token")
    payment_token = _address(payment_token, "--payment-token")
    if payment_token is not None and not escrow:
        raise typer.BadParameter("--payment-token needs --escrow")
    try:
        path = deployment_path(network, out if out is not None else deployments_dir())
        if path.exists() and not force:
            raise LedgerError(
                f"{path} exists; pass --force to replace the deployment of {network!r}"
            )
        signer = _signer(key_env, keystore)
        w3 = connect_web3(rpc_url)
        sender = TransactionSender(w3, signer, confirmations=confirmations)
        deployment = deploy_contracts(
            w3,
            sender,
            network=network,
            operator=operator,
            settlement_token=settlement_token,
            escrow=escrow,
            payment_token=payment_token,
        )
        deployment.save(path)
    except LedgerError as exc:
        raise _fail(exc) from None
    console = Console()
    console.print(_addresses_table(deployment, f"Deployed {network}"))
    console.print(
        f"chain id {deployment.chain_id}, from block {deployment.block_number}; "
        f"written to {path}",
        soft_wrap=True,
    )


@app.command()
def status(
    network: NetworkOpt,
    rpc_url: RpcUrlOpt,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            file_okay=False,
            help="Deployments directory (default: contracts/deployments).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show a deployment: addresses, chain, head block and what was recorded."""
    try:
        deployment = load_deployment(network, directory)
        w3 = connect_web3(rpc_url)
        ledger = Ledger.connect(w3, deployment, None)
        head = int(_Rpc(w3).retry(lambda: w3.eth.block_number))
        assets = len(ledger.registry.get_registered(to_block=head))
        batches = len(ledger.settlement.get_trade_batches(to_block=head))
        anchored = len(ledger.anchor.get_anchored(to_block=head))
    except LedgerError as exc:
        raise _fail(exc) from None
    console = Console()
    console.print(_addresses_table(deployment, f"Deployment {network}"))
    counts = Table(title=f"On chain at block {head}")
    counts.add_column("Item")
    counts.add_column("Value", justify="right")
    counts.add_row("Chain id", str(deployment.chain_id))
    counts.add_row("Head block", str(head))
    counts.add_row("Registered assets", str(assets))
    counts.add_row("Trade batches", str(batches))
    counts.add_row("Anchored batches", str(anchored))
    console.print(counts)

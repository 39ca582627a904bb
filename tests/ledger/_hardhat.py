"""A Hardhat 2 node for the ledger's integration tests, and funded test accounts.

:func:`hardhat_node` starts ``hardhat node`` (``contracts/node_modules``, config
``contracts/hardhat.config.cjs``) on a free 127.0.0.1 port in its own process group,
waits until it answers ``eth_chainId``, yields its URL, then stops it by pid (SIGTERM,
then SIGKILL) and removes its temp directory (Hardhat's cache, its logs and the
XDG dirs it would otherwise write under ``$HOME``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from eth_account import Account

from ledger._chain import Chain

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
HARDHAT_CLI = (
    CONTRACTS_DIR / "node_modules" / "hardhat" / "internal" / "cli" / "bootstrap.js"
)
HARDHAT_CHAIN_ID = 31337

# Hardhat's well-known account #0 (public test mnemonic), funded with 10,000 ETH.
HARDHAT_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
HARDHAT_ADDRESS = Account.from_key(HARDHAT_KEY).address

# Keys funded in the embedded chain's genesis (never use them anywhere real).
TEST_KEYS = tuple(f"0x{0x7E57_0000 + i:064x}" for i in range(1, 7))
TEST_ADDRESSES = tuple(Account.from_key(k).address for k in TEST_KEYS)
TEST_BALANCE = 10**24  # one million ether each

STARTUP_DEADLINE = 90.0  # seconds; a cold start is ~2 s, slow CI machines take longer
STOP_GRACE = 10.0


class FundedChain(NamedTuple):
    """A chain and the private key of an account funded on it."""

    chain: Chain
    key: str


def hardhat_missing() -> str | None:
    """Why Hardhat cannot run here, or ``None`` when it can."""
    if shutil.which("node") is None:
        return "`node` is not on PATH (Node 20+ is needed for Hardhat)"
    if not HARDHAT_CLI.is_file():
        return "contracts/node_modules/hardhat is missing; run `cd contracts && npm ci`"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _chain_id(url: str) -> int | None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
        url, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            return int(json.loads(response.read())["result"], 16)
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the node's process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-limit:]


@contextlib.contextmanager
def hardhat_node() -> Iterator[str]:
    """Run a Hardhat node on 127.0.0.1 and yield its JSON-RPC URL.

    Raises
    ------
    RuntimeError
        When the node exits or does not answer within :data:`STARTUP_DEADLINE`
        seconds; the message carries the node's stderr and stdout.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("`node` is not on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="veilx-hardhat-"))
    try:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
            "VEILX_HARDHAT_CACHE": str(workdir / "hardhat"),
            "XDG_CACHE_HOME": str(workdir / "xdg-cache"),
            "XDG_CONFIG_HOME": str(workdir / "xdg-config"),
            "XDG_DATA_HOME": str(workdir / "xdg-data"),
            "NO_COLOR": "1",
        }
        stdout_path, stderr_path = workdir / "stdout.log", workdir / "stderr.log"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = subprocess.Popen(  # noqa: S603 - fixed argv
                [
                    node,
                    str(HARDHAT_CLI),
                    "node",
                    "--hostname",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=CONTRACTS_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, stopped as one
            )
        try:
            deadline = time.monotonic() + STARTUP_DEADLINE
            while (chain_id := _chain_id(url)) is None:
                if process.poll() is not None or time.monotonic() > deadline:
                    state = (
                        f"exited with status {process.returncode}"
                        if process.poll() is not None
                        else f"did not answer within {STARTUP_DEADLINE:.0f} s"
                    )
                    raise RuntimeError(
                        f"Hardhat node at {url} {state}.\n"
                        f"--- stderr ---\n{_tail(stderr_path)}\n"
                        f"--- stdout ---\n{_tail(stdout_path)}"
                    )
                time.sleep(0.1)
            if chain_id != HARDHAT_CHAIN_ID:
                raise RuntimeError(f"Hardhat at {url} reports chain id {chain_id}")
            yield url
        finally:
            _stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def deploy_fresh(url: str, network: str, directory: Path) -> Path:
    """Deploy fresh contracts on the node at ``url`` with :data:`HARDHAT_KEY`.

    Writes ``<directory>/<network>.json`` (``directory`` is created) — point
    ``VEILX_DEPLOYMENTS_DIR`` at ``directory`` — and returns the file's path.
    """
    from ledger import LocalSigner, TransactionSender, connect_rpc, deploy_contracts

    chain = connect_rpc(url, network=network)
    try:
        sender = TransactionSender(chain.w3, LocalSigner.from_key(HARDHAT_KEY))
        deployment = deploy_contracts(chain.w3, sender, network=network)
    finally:
        chain.close()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{network}.json"
    deployment.save(path)
    return path

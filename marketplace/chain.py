"""The exchange's connection to its ledger chain, built from the settings.

- **Embedded** (the default, ``VEILX_CHAIN_URL`` unset): an in-process EVM whose
  state lives in ``<data dir>/chain/evm`` and survives restarts. The operator key is
  ``<data dir>/keys/chain-operator.key`` (0600, created once and funded at the
  chain's genesis); the contracts are deployed on first open and their addresses
  kept in ``<data dir>/chain/deployment.json``. One process holds it at a time.
- **JSON-RPC** (``VEILX_CHAIN_URL``): any node; the addresses come from
  ``contracts/deployments/<VEILX_CHAIN_NETWORK>.json`` (written by ``veilx chain
  deploy``) and the chain id is checked on connect. The operator key comes from
  ``VEILX_CHAIN_KEY`` or an encrypted keystore (``VEILX_CHAIN_KEYSTORE`` and
  ``VEILX_CHAIN_KEYSTORE_PASSWORD``); without one the ledger is read-only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ledger import (
    Chain,
    Deployment,
    Ledger,
    LedgerError,
    LocalSigner,
    Signer,
    TransactionSender,
    connect_rpc,
    deploy_contracts,
    load_deployment,
    open_embedded,
)
from marketplace.config import Settings
from marketplace.errors import ChainUnavailable

__all__ = ["ChainRuntime", "LazyChain", "open_runtime"]

GENESIS_BALANCE_WEI = 10**24
"""What the embedded chain's genesis gives the operator (a million ether)."""


@dataclass
class ChainRuntime:
    """An open chain and the ledger bound to it."""

    chain: Chain
    ledger: Ledger

    @property
    def network(self) -> str:
        """The deployment's network name."""
        return self.ledger.deployment.network

    def close(self) -> None:
        """Release the chain (the embedded chain's lock)."""
        self.chain.close()


def _signer(settings: Settings) -> Signer | None:
    if settings.chain_key is not None:
        return LocalSigner.from_key(settings.chain_key.get_secret_value())
    if settings.chain_keystore is not None:
        password = settings.chain_keystore_password  # settings require it
        return LocalSigner.from_keystore(
            settings.chain_keystore,
            password.get_secret_value() if password is not None else "",
        )
    return None


def _open_embedded(settings: Settings) -> ChainRuntime:
    signer = LocalSigner.load_or_create(
        settings.data_dir / "keys" / "chain-operator.key"
    )
    directory = settings.data_dir / "chain"
    chain = open_embedded(
        directory / "evm", genesis_balances={signer.address: GENESIS_BALANCE_WEI}
    )
    try:
        path = directory / "deployment.json"
        if path.exists():
            deployment = Deployment.from_json(path.read_text(), source=str(path))
            outdated = deployment.outdated_contracts()
            if outdated:
                raise ChainUnavailable(
                    f"the embedded chain in {directory} was deployed from other "
                    f"builds of {', '.join(outdated)} than this veilx has; move "
                    "that directory away to start a new chain (the old one keeps "
                    "its records)"
                )
        else:
            sender = TransactionSender(chain.w3, signer)
            deployment = deploy_contracts(
                chain.w3, sender, network="embedded", escrow=True
            )
            deployment.save(path)
        ledger = Ledger.connect(
            chain.w3, deployment, signer, confirmations=settings.chain_confirmations
        )
    except BaseException:
        chain.close()
        raise
    return ChainRuntime(chain, ledger)


def _open_rpc(settings: Settings, url: str) -> ChainRuntime:
    chain = connect_rpc(url, network=settings.chain_network)
    try:
        deployment = load_deployment(settings.chain_network)
        ledger = Ledger.connect(
            chain.w3,
            deployment,
            _signer(settings),
            confirmations=settings.chain_confirmations,
        )
    except BaseException:
        chain.close()
        raise
    return ChainRuntime(chain, ledger)


def open_runtime(settings: Settings) -> ChainRuntime:
    """Open the configured chain and bind the ledger to it.

    Raises
    ------
    ChainUnavailable
        The node cannot be reached, the deployment is missing or for another
        chain, or another process holds the embedded chain.
    """
    try:
        if settings.chain_url:
            return _open_rpc(settings, settings.chain_url)
        return _open_embedded(settings)
    except LedgerError as exc:
        raise ChainUnavailable(str(exc)) from exc


class LazyChain:
    """Opens the chain on first use and keeps it for the process (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtime: ChainRuntime | None = None
        self._lock = threading.Lock()

    def get(self) -> ChainRuntime:
        """The runtime, opened now if it is not yet."""
        with self._lock:
            if self._runtime is None:
                self._runtime = open_runtime(self.settings)
            return self._runtime

    @property
    def opened(self) -> bool:
        """Whether the chain has been opened."""
        return self._runtime is not None

    def close(self) -> None:
        """Close the chain if it was opened."""
        with self._lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None

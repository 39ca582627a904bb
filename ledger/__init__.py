"""The ledger: typed wrappers per contract, chain backends, the receipt Merkle tree.

- :mod:`ledger._chain` — the chain: the embedded in-process EVM whose state survives
  restarts (:func:`open_embedded`) or any JSON-RPC node (:func:`connect_rpc`);
- :mod:`ledger._signer` — the :class:`Signer` protocol and :class:`LocalSigner`
  (a key from the environment, a keystore or a 0600 key file);
- :mod:`ledger._sender` — :class:`TransactionSender`: nonces, gas, fees, receipts,
  confirmations, retries on transient RPC errors only, reverts decoded by name;
- :mod:`ledger._contracts` — one typed wrapper per contract: reads ``get_*``,
  writes ``submit_*`` returning a typed receipt with decoded events;
- :mod:`ledger._deployments` — contract addresses per network
  (``contracts/deployments/<network>.json``), deployment, :class:`Ledger`;
- :mod:`ledger._merkle` — the Merkle batching of job receipts, whose roots the
  receipt anchor stores and whose proofs OpenZeppelin's ``MerkleProof`` checks.

Errors are :mod:`ledger.errors`.
"""

from ledger._chain import (
    EMBEDDED_CHAIN_ID,
    EMBEDDED_NETWORK,
    Chain,
    ChainLockedError,
    connect_rpc,
    open_embedded,
)
from ledger._contracts import (
    AssetRegistered,
    AssetTotal,
    AssetUpdated,
    BatchAnchored,
    CreditsWithdrawn,
    DataAssetRegistry,
    EscrowHold,
    FeesWithdrawn,
    OnChainAsset,
    PaymentEscrow,
    ReceiptAnchor,
    Settlement,
    SettlementToken,
    Share,
    SharesChanged,
    Submitted,
    TradeRecorded,
    TradesRecorded,
)
from ledger._deployments import (
    DEPLOYMENT_FORMAT,
    Deployment,
    Ledger,
    deploy_contracts,
    deployments_dir,
    load_deployment,
)
from ledger._merkle import (
    HASH_SIZE,
    KECCAK_BACKEND,
    EmptyTreeError,
    MerkleTree,
    hash_pair,
    keccak256,
    leaf_hash,
    process_proof,
    receipt_digest,
    receipt_leaf,
    verify_proof,
)
from ledger._sender import SignedTx, TransactionSender, TxReceipt
from ledger._signer import DEFAULT_KEY_ENV, LocalSigner, Signer
from ledger.errors import (
    ChainConnectionError,
    ChainIdMismatchError,
    DeploymentError,
    LedgerError,
    SignerError,
    TransactionRevertedError,
    TransactionTimeoutError,
)

__all__ = [
    "DEFAULT_KEY_ENV",
    "DEPLOYMENT_FORMAT",
    "EMBEDDED_CHAIN_ID",
    "EMBEDDED_NETWORK",
    "HASH_SIZE",
    "KECCAK_BACKEND",
    "AssetRegistered",
    "AssetTotal",
    "AssetUpdated",
    "BatchAnchored",
    "Chain",
    "ChainConnectionError",
    "ChainIdMismatchError",
    "ChainLockedError",
    "CreditsWithdrawn",
    "DataAssetRegistry",
    "Deployment",
    "DeploymentError",
    "EmptyTreeError",
    "EscrowHold",
    "FeesWithdrawn",
    "Ledger",
    "LedgerError",
    "LocalSigner",
    "MerkleTree",
    "OnChainAsset",
    "PaymentEscrow",
    "ReceiptAnchor",
    "Settlement",
    "SettlementToken",
    "Share",
    "SharesChanged",
    "SignedTx",
    "Signer",
    "SignerError",
    "Submitted",
    "TradeRecorded",
    "TradesRecorded",
    "TransactionRevertedError",
    "TransactionSender",
    "TransactionTimeoutError",
    "TxReceipt",
    "connect_rpc",
    "deploy_contracts",
    "deployments_dir",
    "hash_pair",
    "keccak256",
    "leaf_hash",
    "load_deployment",
    "open_embedded",
    "process_proof",
    "receipt_digest",
    "receipt_leaf",
    "verify_proof",
]

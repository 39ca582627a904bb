"""Typed web3.py wrappers per contract, the outbox relay and the chain verifier.

So far: the Merkle batching of job receipts (:mod:`ledger._merkle`), whose roots
the receipt anchor stores and whose proofs OpenZeppelin's ``MerkleProof`` checks.
"""

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

__all__ = [
    "HASH_SIZE",
    "KECCAK_BACKEND",
    "EmptyTreeError",
    "MerkleTree",
    "hash_pair",
    "keccak256",
    "leaf_hash",
    "process_proof",
    "receipt_digest",
    "receipt_leaf",
    "verify_proof",
]

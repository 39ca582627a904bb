from typing import Final

from typing_extensions import Buffer

SIMD_WIDTH: Final[int]
"""Nodes hashed at once by default: 8 with AVX-512F, 4 with AVX2, else 1."""

def tree(leaves: Buffer, width: int = 0, /) -> tuple[bytes, ...]:
    """The ``2n − 1`` nodes (root first) of the Merkle tree over ``n`` leaves."""

def keccak256(data: Buffer, /) -> bytes:
    """The EVM's Keccak-256 of ``data``."""

"""Merkle batches of job receipts, verifiable by OpenZeppelin 5's ``MerkleProof``.

DESIGN §2: receipts are Merkle-batched, the root is anchored on chain, and each
receipt's inclusion proof is retrievable. The tree is the one ``@openzeppelin/
merkle-tree`` builds (``makeMerkleTree`` in its ``src/core.ts``), so a root built
here equals ``StandardMerkleTree``'s for the same leaf hashes in the same order,
and every proof verifies with ``MerkleProof.verify(proof, root, leaf)``.

Byte layouts (``‖`` is concatenation, ``keccak`` is Keccak-256 as in the EVM —
not NIST SHA3-256, whose padding differs):

receipt digest, 32 bytes
    ``sha256(canonical_json({"receipt": <receipt as JSON>, "signature": <hex>}))``
    — the SHA-256 of the canonical JSON (sorted keys, no whitespace, UTF-8;
    :func:`mpc_engine.protocol.canonical_json`) of the whole
    :class:`~mpc_engine.protocol.SignedReceipt`, so the leaf commits to the
    signature as well as to the signed statement.
leaf, 32 bytes
    ``keccak(keccak(receipt_digest))``: OpenZeppelin's double-hashed standard leaf
    for the single value ``bytes32 receipt_digest`` (``abi.encode`` of one
    ``bytes32`` is those 32 bytes). In Solidity::

        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(digest))));

    Double hashing keeps a 64-byte internal node from ever being read as a leaf
    (second-preimage attack).
internal node, 32 bytes
    ``keccak(min(a, b) ‖ max(a, b))`` for children ``a`` and ``b``, compared as
    unsigned big-endian 256-bit numbers (``bytes`` order): OpenZeppelin 5's
    commutative ``Hashes.commutativeKeccak256``, so a proof is a bare list of
    siblings with no left/right flags.

Shape. ``n`` leaves make a complete binary tree of ``2n − 1`` nodes stored as a
flat array, as ``@openzeppelin/merkle-tree`` does: ``nodes[0]`` is the root, the
children of ``nodes[i]`` are ``nodes[2i + 1]`` and ``nodes[2i + 2]``, and leaf
``k`` sits at ``nodes[2n − 2 − k]`` (the leaves fill the array's tail in reverse).
No level has an odd node out: when ``n`` is not a power of two the leaves sit on
the last two depths, so nothing is duplicated or promoted. A one-leaf tree's root
is the leaf itself and its proofs are empty; an empty tree is refused
(:class:`EmptyTreeError`). Leaves keep the caller's order (a receipt's position
in its batch); ``StandardMerkleTree.of`` sorts leaf hashes by default, so
``MerkleTree.build(sorted(leaves))`` reproduces its root.

Keccak backend. ``ledger._keccak`` (this package's C extension, built at install:
one call builds the whole tree with the GIL released, ADR 0013) when it was
built; else ``safe-pysha3``'s ``sha3.keccak_256`` (C, hashlib-style, one Python
call per node) when it is importable — it comes with ``web3[tester]``
(``eth-hash[pysha3]``, CPython); else ``eth_hash.auto.keccak`` (pycryptodome
through cffi, about 4 µs a call). All three give the same digests (tested).
:data:`KECCAK_BACKEND` names the one in use.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Final, Protocol, cast

if TYPE_CHECKING:
    from mpc_engine.protocol import SignedReceipt

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

HASH_SIZE: Final = 32
"""Bytes in a digest, a leaf and a node."""

PairHasher = Callable[[list[bytes]], list[bytes]]
"""Hash the children ``[c0, c1, c2, c3, …]`` into ``[H(c0, c1), H(c2, c3), …]``."""


class EmptyTreeError(ValueError):
    """A Merkle tree needs at least one leaf (an empty batch has no root)."""


# -- keccak -----------------------------------------------------------------------


class _HashObject(Protocol):
    def digest(self) -> bytes: ...


def _pairs_eth_hash(children: list[bytes]) -> list[bytes]:
    from eth_hash.auto import keccak

    return [
        keccak(a + b) if a < b else keccak(b + a)
        for a, b in zip(children[0::2], children[1::2], strict=True)
    ]


def _load_pysha3() -> Callable[[bytes], _HashObject] | None:
    try:
        module = importlib.import_module("sha3")  # safe-pysha3: no type information
    except ImportError:
        return None
    new = getattr(module, "keccak_256", None)
    if new is None:  # another distribution's ``sha3`` module
        return None
    return cast("Callable[[bytes], _HashObject]", new)


_PYSHA3: Final = _load_pysha3()


def _pairs_pysha3(children: list[bytes]) -> list[bytes]:
    new = _PYSHA3
    if new is None:
        raise RuntimeError("safe-pysha3 is not installed")
    # one comprehension per level: the per-node cost is the Keccak-f permutation
    # plus two C calls (constructor, digest), no Python frame per node
    return [
        new(a + b).digest() if a < b else new(b + a).digest()
        for a, b in zip(children[0::2], children[1::2], strict=True)
    ]


def _keccak_eth_hash(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    return keccak(data)


def _keccak_pysha3(data: bytes) -> bytes:
    assert _PYSHA3 is not None  # noqa: S101 -- chosen only when present
    return _PYSHA3(data).digest()


def _load_native() -> ModuleType | None:
    try:
        return importlib.import_module("ledger._keccak")
    except ImportError:  # installed without a C compiler
        return None


_NATIVE: Final = _load_native()


KECCAK_BACKEND: Final = (
    "veilx-native"
    if _NATIVE is not None
    else "safe-pysha3"
    if _PYSHA3 is not None
    else "eth-hash"
)
"""The Keccak-256 implementation in use (see the module docstring)."""

_PAIRS: Final[PairHasher] = _pairs_pysha3 if _PYSHA3 is not None else _pairs_eth_hash
"""Level by level, for a build without the extension (see :func:`_build_tree`)."""
_KECCAK: Final[Callable[[bytes], bytes]] = (
    # the extension's own function: no Python frame per hash (proofs hash a lot)
    cast("Callable[[bytes], bytes]", _NATIVE.keccak256)
    if _NATIVE is not None
    else _keccak_pysha3
    if _PYSHA3 is not None
    else _keccak_eth_hash
)


def keccak256(data: bytes) -> bytes:
    """Keccak-256 of ``data`` as the EVM computes it (not SHA3-256)."""
    return _KECCAK(bytes(data))


def _check_node(value: bytes, what: str) -> bytes:
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")
    return bytes(value)


def hash_pair(a: bytes, b: bytes) -> bytes:
    """An internal node: ``keccak(min(a, b) ‖ max(a, b))`` (commutative)."""
    a, b = _check_node(a, "a node"), _check_node(b, "a node")
    return _KECCAK(a + b if a < b else b + a)


# -- leaves -------------------------------------------------------------------------


def leaf_hash(digest: bytes) -> bytes:
    """The leaf for a 32-byte value: ``keccak(keccak(digest))``.

    Raises
    ------
    ValueError
        ``digest`` is not 32 bytes.
    """
    return _KECCAK(_KECCAK(_check_node(digest, "a leaf digest")))


def receipt_digest(signed: SignedReceipt) -> bytes:
    """``sha256`` of the canonical JSON of a signed receipt (receipt + signature)."""
    from mpc_engine.protocol import canonical_json

    return hashlib.sha256(canonical_json(signed.model_dump(mode="json"))).digest()


def receipt_leaf(signed: SignedReceipt) -> bytes:
    """The Merkle leaf of a signed receipt: ``leaf_hash(receipt_digest(signed))``."""
    return leaf_hash(receipt_digest(signed))


# -- the tree ------------------------------------------------------------------------


def _build_nodes(leaves: Sequence[bytes], pairs: PairHasher) -> list[bytes]:
    """``makeMerkleTree``'s flat array, one heap depth (one C-level pass) at a time.

    The internal nodes ``0 … n − 2`` of one depth ``d`` are ``[2^d − 1, …]`` and
    their children, at depth ``d + 1``, are one contiguous run of the array, so a
    whole depth is hashed by one call of ``pairs``.
    """
    n = len(leaves)
    nodes: list[bytes] = [b""] * (n - 1)
    nodes.extend(reversed(leaves))
    last = n - 2  # the last internal node
    depth = (last + 1).bit_length() - 1  # of node i: floor(log2(i + 1)); -1 if none
    while depth >= 0:
        lo = (1 << depth) - 1
        hi = min((1 << (depth + 1)) - 2, last)
        nodes[lo : hi + 1] = pairs(nodes[2 * lo + 1 : 2 * hi + 3])
        depth -= 1
    return nodes


def _build_tree(leaves: list[bytes]) -> tuple[bytes, ...]:
    """The flat node array: one C call with the extension, else level by level."""
    if _NATIVE is not None:
        nodes: tuple[bytes, ...] = _NATIVE.tree(b"".join(leaves))
        return nodes
    return tuple(_build_nodes(leaves, _PAIRS))


@dataclass(frozen=True, slots=True)
class MerkleTree:
    """A built tree: the flat node array of ``@openzeppelin/merkle-tree``.

    ``nodes`` equals ``StandardMerkleTree.dump().tree`` (as bytes) for the same leaf
    hashes in the same order. Build with :meth:`build`.
    """

    nodes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.nodes:
            raise EmptyTreeError("a Merkle tree needs at least one leaf")
        if len(self.nodes) % 2 == 0:
            raise ValueError(
                f"a tree over n leaves has 2n − 1 nodes, got {len(self.nodes)}"
            )

    @classmethod
    def build(cls, leaves: Iterable[bytes]) -> MerkleTree:
        """The tree over ``leaves`` (32-byte leaf hashes), kept in the given order.

        Raises
        ------
        EmptyTreeError
            No leaves.
        ValueError
            A leaf is not 32 bytes.
        """
        items = list(map(bytes, leaves))  # C-level passes only
        if not items:
            raise EmptyTreeError("a Merkle tree needs at least one leaf")
        if set(map(len, items)) != {HASH_SIZE}:
            i, bad = next((i, x) for i, x in enumerate(items) if len(x) != HASH_SIZE)
            raise ValueError(f"leaf {i} must be {HASH_SIZE} bytes, got {len(bad)}")
        return cls(_build_tree(items))

    def __len__(self) -> int:
        """The number of leaves."""
        return (len(self.nodes) + 1) // 2

    @property
    def root(self) -> bytes:
        """The 32-byte root, to anchor on chain."""
        return self.nodes[0]

    @property
    def leaves(self) -> tuple[bytes, ...]:
        """The leaves in the order they were given."""
        return self.nodes[len(self) - 1 :][::-1]

    def leaf(self, index: int) -> bytes:
        """Leaf ``index`` (0-based, in the given order)."""
        return self.nodes[self._position(index)]

    def proof(self, index: int) -> list[bytes]:
        """The siblings from leaf ``index`` up to the root (``getProof``).

        Raises
        ------
        IndexError
            ``index`` is not in ``0 … len(tree) − 1``.
        """
        position = self._position(index)
        path: list[bytes] = []
        while position > 0:
            path.append(self.nodes[position + 1 if position % 2 else position - 1])
            position = (position - 1) // 2
        return path

    def _position(self, index: int) -> int:
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"leaf index {index} not in 0 … {n - 1}")
        return 2 * n - 2 - index


# -- proofs -------------------------------------------------------------------------


def process_proof(leaf: bytes, proof: Iterable[bytes]) -> bytes:
    """The root that ``leaf`` and ``proof`` imply (``MerkleProof.processProof``).

    Raises
    ------
    ValueError
        The leaf or a proof element is not 32 bytes.
    """
    node = _check_node(leaf, "a leaf")
    for sibling in proof:
        node = hash_pair(node, _check_node(sibling, "a proof element"))
    return node


def verify_proof(leaf: bytes, proof: Iterable[bytes], root: bytes) -> bool:
    """Whether ``proof`` proves ``leaf`` under ``root`` (``MerkleProof.verify``).

    Raises
    ------
    ValueError
        The leaf, the root or a proof element is not 32 bytes.
    """
    root = _check_node(root, "a root")
    return process_proof(leaf, proof) == root

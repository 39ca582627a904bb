"""Merkle batching of receipts: OpenZeppelin-compatible roots and proofs."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from eth_hash.backends.pycryptodome import CryptodomeBackend
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger
from ledger import (
    HASH_SIZE,
    EmptyTreeError,
    MerkleTree,
    _merkle,
    hash_pair,
    keccak256,
    leaf_hash,
    process_proof,
    receipt_digest,
    receipt_leaf,
    verify_proof,
)
from mpc_engine.protocol import NodeKey, Receipt, SignedReceipt

# -- an independent reimplementation ------------------------------------------------
# pycryptodome's Keccak (not the backend under test) and a node-by-node transcription
# of makeMerkleTree / getProof / processProof from @openzeppelin/merkle-tree's
# src/core.ts.

_REFERENCE = CryptodomeBackend()


def ref_keccak(data: bytes) -> bytes:
    return _REFERENCE.keccak256(data)


def ref_hash_pair(a: bytes, b: bytes) -> bytes:
    x, y = sorted([a, b])
    return ref_keccak(x + y)


def ref_tree(leaves: list[bytes]) -> list[bytes]:
    tree: list[bytes] = [b""] * (2 * len(leaves) - 1)
    for i, leaf in enumerate(leaves):
        tree[len(tree) - 1 - i] = leaf
    for i in range(len(tree) - 1 - len(leaves), -1, -1):
        tree[i] = ref_hash_pair(tree[2 * i + 1], tree[2 * i + 2])
    return tree


def ref_proof(tree: list[bytes], leaf_index: int) -> list[bytes]:
    index = len(tree) - 1 - leaf_index
    proof = []
    while index > 0:
        proof.append(tree[index - (-1) ** (index % 2)])
        index = (index - 1) // 2
    return proof


def random_leaves(n: int) -> list[bytes]:
    return [os.urandom(HASH_SIZE) for _ in range(n)]


sizes = st.integers(min_value=1, max_value=70)
leaf_lists = st.lists(
    st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE), min_size=1, max_size=70
)


# -- known answers ------------------------------------------------------------------


def test_keccak_is_the_evm_keccak_not_sha3() -> None:
    # Keccak-256 of the empty string, as every Ethereum client has it
    empty = "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak256(b"").hex() == empty
    assert keccak256(b"") != hashlib.sha3_256(b"").digest()


def test_openzeppelin_readme_example() -> None:
    # @openzeppelin/merkle-tree README: StandardMerkleTree.of(values,
    # ["address", "uint256"]); the dump's tree as published by independent ports'
    # test suites (root d4dee0be…, leaf of 0x11…11 eb02c421…, its proof [b92c48e9…])
    values = [
        ("0x1111111111111111111111111111111111111111", 5_000_000_000_000_000_000),
        ("0x2222222222222222222222222222222222222222", 2_500_000_000_000_000_000),
    ]
    hashes = [
        keccak256(keccak256(eth_abi.encode(["address", "uint256"], list(v))))
        for v in values
    ]
    tree = MerkleTree.build(sorted(hashes))  # StandardMerkleTree sorts its leaves
    assert [node.hex() for node in tree.nodes] == [
        "d4dee0beab2d53f2cc83e567171bd2820e49898130a22622b10ead383e90bd77",
        "eb02c421cfa48976e66dfb29120745909ea3a0f843456c263cf8f1253483e283",
        "b92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc",
    ]
    first = sorted(hashes).index(hashes[0])
    assert tree.proof(first) == [tree.nodes[2]]
    assert verify_proof(hashes[0], tree.proof(first), tree.root)


def test_leaf_is_openzeppelin_double_hash_of_a_bytes32() -> None:
    digest = bytes(range(32))
    encoded = eth_abi.encode(["bytes32"], [digest])
    assert encoded == digest
    assert leaf_hash(digest) == ref_keccak(ref_keccak(encoded))


def test_fixed_vector_against_reference() -> None:
    leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(13)]
    tree = MerkleTree.build(leaves)
    expected = ref_tree(leaves)
    assert list(tree.nodes) == expected
    # pinned so that a change of either implementation shows up here
    assert tree.root.hex() == expected[0].hex()
    assert len(tree) == 13 and tree.leaves == tuple(leaves)


# -- properties -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(leaves=leaf_lists)
def test_tree_matches_reference(leaves: list[bytes]) -> None:
    tree = MerkleTree.build(leaves)
    reference = ref_tree(leaves)
    assert list(tree.nodes) == reference
    for i in range(len(leaves)):
        assert tree.proof(i) == ref_proof(reference, i)
        assert tree.leaf(i) == leaves[i]


@settings(max_examples=70, deadline=None)
@given(n=sizes)
def test_every_proof_verifies(n: int) -> None:
    leaves = random_leaves(n)
    tree = MerkleTree.build(leaves)
    for i, leaf in enumerate(leaves):
        proof = tree.proof(i)
        assert len(proof) <= n.bit_length()
        assert verify_proof(leaf, proof, tree.root)
        assert process_proof(leaf, proof) == tree.root


@settings(max_examples=70, deadline=None)
@given(n=sizes, data=st.data())
def test_tampering_fails(n: int, data: st.DataObject) -> None:
    leaves = random_leaves(n)
    tree = MerkleTree.build(leaves)
    i = data.draw(st.integers(0, n - 1), label="leaf")
    proof = tree.proof(i)
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1), label="bit")

    def flip(value: bytes) -> bytes:
        out = bytearray(value)
        out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)

    assert not verify_proof(flip(leaves[i]), proof, tree.root)
    assert not verify_proof(leaves[i], proof, flip(tree.root))
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1), label="proof element")
        assert not verify_proof(
            leaves[i], [*proof[:j], flip(proof[j]), *proof[j + 1 :]], tree.root
        )
        assert not verify_proof(leaves[i], proof[:-1], tree.root)  # truncated
    if n > 1:
        other = (i + 1) % n
        if leaves[other] != leaves[i]:
            assert not verify_proof(leaves[other], proof, tree.root)


@given(a=st.binary(min_size=32, max_size=32), b=st.binary(min_size=32, max_size=32))
def test_hash_pair_is_commutative_and_sorted(a: bytes, b: bytes) -> None:
    assert hash_pair(a, b) == hash_pair(b, a) == ref_keccak(min(a, b) + max(a, b))


def test_all_keccak_backends_agree() -> None:
    children = random_leaves(64)
    assert _merkle._pairs_eth_hash(children) == [
        ref_hash_pair(a, b) for a, b in zip(children[::2], children[1::2], strict=True)
    ]
    assert _merkle._PYSHA3 is not None
    assert _merkle._pairs_pysha3(children) == _merkle._pairs_eth_hash(children)
    # the C extension is built by the install (a compiler is on every machine):
    # the fastest backend must be the one in use, safe-pysha3 is its fallback
    assert ledger.KECCAK_BACKEND == "veilx-native"
    assert _merkle._NATIVE is not None


@pytest.mark.parametrize("width", [1, 4, 8])
@pytest.mark.parametrize("n", [*range(1, 40), 64, 100, 1000, 4097])
def test_the_native_tree_is_the_level_by_level_tree(n: int, width: int) -> None:
    native = _merkle._NATIVE
    assert native is not None
    leaves = random_leaves(n)
    reference = tuple(_merkle._build_nodes(leaves, _merkle._pairs_eth_hash))
    if width > native.SIMD_WIDTH:  # a CPU without AVX-512F or AVX2
        with pytest.raises(ValueError, match="not supported by this CPU"):
            native.tree(b"".join(leaves), width)
        return
    assert native.tree(b"".join(leaves), width) == reference
    assert native.tree(bytearray(b"".join(leaves)), width) == reference
    assert MerkleTree.build(leaves).nodes == reference


def test_the_native_tree_uses_the_widest_simd_this_cpu_has() -> None:
    native = _merkle._NATIVE
    assert native is not None
    flags = Path("/proc/cpuinfo").read_text().split()
    expected = 8 if "avx512f" in flags else 4 if "avx2" in flags else 1
    assert native.SIMD_WIDTH == expected
    with pytest.raises(ValueError, match="width must be 1, 4 or 8, got 2"):
        native.tree(bytes(64), 2)


def test_the_native_tree_sorts_each_pair_and_handles_equal_children() -> None:
    native = _merkle._NATIVE
    assert native is not None
    low, high, same = b"\x00" * 31 + b"\x01", b"\x80" + b"\x00" * 31, bytes(32)
    # two leaves: the root hashes the smaller first, whichever order they come in
    assert native.tree(high + low)[0] == native.tree(low + high)[0]
    assert native.tree(high + low)[0] == ref_keccak(low + high)
    assert native.tree(same + same)[0] == ref_keccak(same + same)


@pytest.mark.parametrize("size", [0, 31, 33, 65])
def test_the_native_tree_refuses_a_partial_leaf(size: int) -> None:
    native = _merkle._NATIVE
    assert native is not None
    with pytest.raises(ValueError, match=f"multiple of 32 bytes, got {size}"):
        native.tree(b"\x00" * size)
    with pytest.raises(TypeError):
        native.tree("not bytes")


@given(data=st.binary(max_size=700))
def test_native_keccak256_matches_for_every_length(data: bytes) -> None:
    # 136-byte blocks: lengths on and around the block edges come up in 0 … 700
    native = _merkle._NATIVE
    assert native is not None
    assert native.keccak256(data) == ref_keccak(data)
    assert keccak256(data) == ref_keccak(data)  # the one the module uses


@pytest.mark.parametrize("size", [0, 1, 135, 136, 137, 271, 272, 273])
def test_native_keccak256_at_block_edges(size: int) -> None:
    data = bytes((7 * i) % 256 for i in range(size))
    native = _merkle._NATIVE
    assert native is not None
    assert native.keccak256(data) == ref_keccak(data)


def test_order_matters_and_a_single_leaf_is_its_own_root() -> None:
    leaves = random_leaves(5)
    assert MerkleTree.build(leaves).root != MerkleTree.build(leaves[::-1]).root
    one = MerkleTree.build(leaves[:1])
    assert one.root == leaves[0] and one.proof(0) == [] and len(one) == 1
    assert verify_proof(leaves[0], [], one.root)


# -- refusals -------------------------------------------------------------------------


def test_empty_tree_is_refused() -> None:
    with pytest.raises(EmptyTreeError, match="at least one leaf"):
        MerkleTree.build([])
    with pytest.raises(EmptyTreeError):
        MerkleTree(())
    assert issubclass(EmptyTreeError, ValueError)


def test_malformed_inputs_are_refused() -> None:
    good = random_leaves(3)
    with pytest.raises(ValueError, match="leaf 1 must be 32 bytes, got 31"):
        MerkleTree.build([good[0], good[1][:31], good[2]])
    with pytest.raises(ValueError, match="2n − 1 nodes"):
        MerkleTree(tuple(good[:2]))
    tree = MerkleTree.build(good)
    for index in (-1, 3):
        with pytest.raises(IndexError, match=r"not in 0 … 2"):
            tree.proof(index)
    with pytest.raises(ValueError, match="a root must be 32 bytes"):
        verify_proof(good[0], tree.proof(0), tree.root + b"\0")
    with pytest.raises(ValueError, match="a proof element must be 32 bytes"):
        verify_proof(good[0], [b"\0" * 33], tree.root)
    with pytest.raises(ValueError, match="a leaf digest must be 32 bytes"):
        leaf_hash(b"short")


def test_tree_is_frozen() -> None:
    tree = MerkleTree.build(random_leaves(2))
    with pytest.raises(AttributeError):
        tree.nodes = ()  # type: ignore[misc]


# -- receipts -------------------------------------------------------------------------


def _signed_receipt(key: NodeKey, **changes: Any) -> SignedReceipt:
    body: dict[str, Any] = {
        "job_id": uuid.uuid4(),
        "node_id": uuid.uuid4(),
        "dataset_id": uuid.uuid4(),
        "dataset_version_hash": "a" * 64,
        "policy_hash": "b" * 64,
        "kind": "aggregate",
        "params_hash": "c" * 64,
        "inputs_hash": "d" * 64,
        "privacy_loss": {"epsilon": 0.25, "delta": 0.0},
        "replayed": False,
        "output_hash": "e" * 64,
        "issued_at": "2026-01-02T03:04:05Z",
    }
    body.update(changes)
    return SignedReceipt.sign(Receipt.model_validate(body), key)


def test_receipt_digest_layout() -> None:
    key = NodeKey.generate()
    signed = _signed_receipt(key)
    document = {
        "receipt": json.loads(signed.receipt.signed_bytes()),
        "signature": signed.signature,
    }
    canonical = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert receipt_digest(signed) == hashlib.sha256(canonical).digest()
    assert receipt_leaf(signed) == ref_keccak(ref_keccak(receipt_digest(signed)))


def test_receipt_batch_proves_each_receipt() -> None:
    key = NodeKey.generate()
    batch = [_signed_receipt(key, output_hash=f"{i:064x}") for i in range(9)]
    tree = MerkleTree.build(receipt_leaf(r) for r in batch)
    for i, signed in enumerate(batch):
        assert verify_proof(receipt_leaf(signed), tree.proof(i), tree.root)
    # a receipt changed after batching, or re-signed, is not in the batch
    changed = _signed_receipt(key, output_hash=f"{1:064x}")  # new job id
    assert not verify_proof(receipt_leaf(changed), tree.proof(1), tree.root)
    resigned = SignedReceipt.sign(batch[1].receipt, NodeKey.generate())
    assert not verify_proof(receipt_leaf(resigned), tree.proof(1), tree.root)

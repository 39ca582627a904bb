"""Malformed, foreign or weak bytes are refused with typed errors, never a crash."""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as seal

from mpc_engine.he import EncryptedVector, PublicContext, SecretContext
from mpc_engine.he._backend import _proto_fields, _write_varint
from mpc_engine.he._context import MAX_CIPHERTEXT_BYTES
from mpc_engine.he.errors import (
    HEError,
    InvalidParameters,
    MalformedCiphertext,
    MalformedContext,
    WeakParameters,
)


def _encode_fields(fields: list[tuple[int, int, int | bytes]]) -> bytes:
    out = bytearray()
    for field, wire, value in fields:
        out += _write_varint(field << 3 | wire)
        if wire == 2 and isinstance(value, bytes):
            out += _write_varint(len(value)) + value
        elif wire == 0 and isinstance(value, int):
            out += _write_varint(value)
        elif wire == 1 and isinstance(value, int):
            out += value.to_bytes(8, "little")
        else:  # pragma: no cover - TenSEAL contexts use only these
            raise AssertionError(wire)
    return bytes(out)


def _with_parameters(public: bytes, n: int, bits: list[int]) -> bytes:
    """A context whose SEAL parameters claim ``n`` and ``bits`` (a forged upload)."""
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(n, bits))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "parms")
        parms.save(path)
        with open(path, "rb") as f:
            raw = f.read()
    fields = [(f, w, raw if f == 1 else v) for f, w, v in _proto_fields(public)]
    return _encode_fields(fields)


def test_empty_and_random_context_bytes(infer_keys: SecretContext) -> None:
    with pytest.raises(MalformedContext, match="non-empty"):
        PublicContext.from_bytes(b"")
    rng = random.Random(7)
    for size in (1, 17, 4096):
        with pytest.raises(MalformedContext):
            PublicContext.from_bytes(rng.randbytes(size))


def _structural_offsets(public: bytes) -> list[int]:
    """Offsets of the bytes that frame a context: tags, lengths, SEAL's header.

    The context is a protobuf of two length-delimited fields (SEAL parameters,
    then TenSEAL's context). A flipped bit here must always be refused; a flip
    in key material may still decode (SEAL cannot tell a damaged key from
    another key), so random flips there are only required to fail cleanly.
    """
    fields = _proto_fields(public)
    assert [(f, w) for f, w, _ in fields] == [(1, 2), (2, 2)]
    parms, tenseal = fields[0][2], fields[1][2]
    assert isinstance(parms, bytes) and len(parms) < 128  # one-byte length
    assert isinstance(tenseal, bytes)
    # protobuf tag + length, then SEAL's 16-byte header: magic (2), header size,
    # version (2), compression mode, 2 reserved bytes (ignored by SEAL), size (8)
    offsets = [0, 1, 2, 3, 4, 5, 6, 7, *range(10, 18)]
    second = 2 + len(parms)
    tag_and_length = 1 + len(_write_varint(len(tenseal)))
    return offsets + list(range(second, second + tag_and_length))


def test_damaged_context_bytes_raise_only_typed_errors(
    infer_keys: SecretContext,
) -> None:
    public = infer_keys.public_bytes()
    rng = random.Random(11)
    for _ in range(20):  # every truncation is refused
        with pytest.raises(MalformedContext):
            PublicContext.from_bytes(public[: rng.randrange(1, len(public))])
    for pos in _structural_offsets(public):  # every framing bit matters
        for bit in range(8):
            data = bytearray(public)
            data[pos] ^= 1 << bit
            with pytest.raises(HEError):
                PublicContext.from_bytes(bytes(data))
    for _ in range(20):  # flips anywhere: a typed error or a context, no crash
        data = bytearray(public)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(min(len(data), 2048))] ^= 1 << rng.randrange(8)
        try:
            PublicContext.from_bytes(bytes(data))
        except HEError:
            pass


def test_a_context_beyond_the_security_bound_is_refused_before_loading(
    infer_keys: SecretContext,
) -> None:
    forged = _with_parameters(infer_keys.public_bytes(), 8192, [60, 40, 40, 40, 60])
    with pytest.raises(WeakParameters) as err:
        PublicContext.from_bytes(forged)
    assert "240" in err.value.rule and "218" in err.value.rule


def test_a_small_ring_is_refused(infer_keys: SecretContext) -> None:
    forged = _with_parameters(infer_keys.public_bytes(), 4096, [40, 20, 20, 40])
    with pytest.raises(InvalidParameters) as err:
        PublicContext.from_bytes(forged)
    assert err.value.field == "poly_modulus_degree"


def test_a_context_whose_scale_does_not_match_its_primes_is_refused() -> None:
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2.0**30
    data = ctx.serialize(save_secret_key=False, save_relin_keys=False)
    with pytest.raises(InvalidParameters) as err:
        PublicContext.from_bytes(data)
    assert err.value.field == "global_scale"


def test_a_bfv_context_is_refused() -> None:
    ctx = ts.context(ts.SCHEME_TYPE.BFV, 8192, plain_modulus=1032193)
    with pytest.raises(MalformedContext, match="not CKKS"):
        PublicContext.from_bytes(ctx.serialize(save_secret_key=False))


def test_a_symmetric_context_without_public_key_is_refused() -> None:
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        8192,
        coeff_mod_bit_sizes=[60, 40, 40, 60],
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    ctx.global_scale = 2.0**40
    data = ctx.serialize(save_public_key=False, save_secret_key=False)
    with pytest.raises(MalformedContext, match="public key"):
        PublicContext.from_bytes(data)


def test_damaged_ciphertext_bytes_raise_only_typed_errors(
    infer_keys: SecretContext, infer_node: PublicContext
) -> None:
    good = infer_keys.encrypt([1.0, 2.0, 3.0]).to_bytes()
    assert EncryptedVector.from_bytes(infer_node, good).size == 3
    with pytest.raises(MalformedCiphertext, match="non-empty"):
        EncryptedVector.from_bytes(infer_node, b"")
    rng = random.Random(3)
    refused = 0
    for i in range(40):
        data = bytearray(good)
        if i % 3 == 0:
            data = data[: rng.randrange(1, len(data))]
        elif i % 3 == 1:
            data = bytearray(rng.randbytes(rng.randint(1, 3000)))
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(64)] ^= 1 << rng.randrange(8)
        try:
            EncryptedVector.from_bytes(infer_node, bytes(data))
        except MalformedCiphertext:
            refused += 1
    assert refused >= 30


def test_a_ciphertext_of_other_parameters_is_refused(
    eval_keys: SecretContext, infer_node: PublicContext
) -> None:
    foreign = eval_keys.encrypt([1.0]).to_bytes()  # (55, 47, 47, 60) primes
    with pytest.raises(MalformedCiphertext):
        EncryptedVector.from_bytes(infer_node, foreign)


def test_oversized_and_chunked_vectors_are_refused(
    infer_keys: SecretContext, infer_node: PublicContext
) -> None:
    with pytest.raises(MalformedCiphertext, match="at most"):
        EncryptedVector.from_bytes(infer_node, bytes(MAX_CIPHERTEXT_BYTES + 1))
    chunked = infer_keys._native.encrypt(np.zeros(infer_keys.slot_count + 1))
    with pytest.raises(MalformedCiphertext, match="ciphertexts"):
        EncryptedVector.from_bytes(infer_node, chunked.serialize())


def test_a_node_input_must_be_fresh(
    infer_keys: SecretContext, infer_node: PublicContext
) -> None:
    processed = infer_keys._native.encrypt(np.ones(8)).mul_scalar(2.0)
    with pytest.raises(MalformedCiphertext, match="fresh"):
        EncryptedVector.from_bytes(infer_node, processed.serialize())
    # results are not fresh, and the buyer loads them as such
    assert (
        EncryptedVector.from_bytes(infer_keys, processed.serialize(), fresh=False).size
        == 8
    )

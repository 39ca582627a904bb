"""encrypt_values: a node's plaintext result encrypted under the buyer's public key."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_engine.he import (
    EncryptedVector,
    PublicContext,
    SecretContext,
    encrypt_values,
)
from mpc_engine.he._backend import _parse_vector
from mpc_engine.he.errors import InvalidInput, ValueOutOfRange


def _scale(vec: EncryptedVector) -> float:
    """The true scale of the one SEAL ciphertext in the vector."""
    return float(vec._native.info().scale)


@pytest.mark.parametrize(
    "values",
    [
        [0.0],
        [3.0, -1.5, 0.25, 12.0],
        [1.2e9, 17.0, -4.0e8, 0.5],  # far beyond the context's own 2^19 range
    ],
)
def test_every_slot_decodes_to_the_values_then_zeros(
    infer_keys: SecretContext, infer_node: PublicContext, values: list[float]
) -> None:
    vec = encrypt_values(infer_node, values)
    assert vec.size == len(values)
    # The buyer loads it from bytes (not fresh: last level, its own scale).
    loaded = EncryptedVector.from_bytes(infer_keys, vec.to_bytes(), fresh=False)
    tol = 2.0**16 / _scale(vec)
    assert np.abs(infer_keys.decrypt(loaded) - np.asarray(values)).max() <= tol
    slots = infer_keys.decrypt_slots(loaded)
    assert np.abs(slots[: len(values)].real - np.asarray(values)).max() <= tol
    assert np.abs(slots[: len(values)].imag).max() <= tol
    assert np.abs(slots[len(values) :]).max() <= tol  # no copies, no leftovers


def test_scale_adapts_to_the_magnitude(infer_node: PublicContext) -> None:
    unit = encrypt_values(infer_node, [1.0, -0.5])
    two = encrypt_values(infer_node, [1.0, 2.0])
    large = encrypt_values(infer_node, [1.0, 3.0e10])
    assert _scale(unit) == 2.0**58  # q0 = 60 bits; |values| ≤ 1
    assert _scale(two) == 2.0**57
    assert _scale(large) == 2.0 ** (58 - 35)  # 2^34 < 3e10 ≤ 2^35
    assert 2.0**16 / _scale(large) < 1e-2


def test_it_is_one_fresh_ciphertext_at_the_last_level(
    infer_node: PublicContext,
) -> None:
    a = encrypt_values(infer_node, [5.0, 6.0])
    b = encrypt_values(infer_node, [5.0, 6.0])
    info = a._native.info()
    assert info.chunks == 1 and info.polys == 2 and info.primes == 1
    proto_a, proto_b = _parse_vector(a.to_bytes()), _parse_vector(b.to_bytes())
    assert proto_a.ciphertexts != proto_b.ciphertexts  # randomised encryption


def test_refusals(infer_node: PublicContext) -> None:
    with pytest.raises(InvalidInput, match="values"):
        encrypt_values(infer_node, [])
    with pytest.raises(InvalidInput, match="NaN"):
        encrypt_values(infer_node, [1.0, float("nan")])
    with pytest.raises(InvalidInput, match="values"):
        encrypt_values(infer_node, np.zeros(infer_node.slot_count + 1))
    with pytest.raises(ValueOutOfRange, match="result prime"):
        encrypt_values(infer_node, [2.0**45])

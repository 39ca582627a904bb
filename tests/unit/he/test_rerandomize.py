"""Generic result hygiene: rerandomize (mask, fresh zero, flooding) and add_noise."""

from __future__ import annotations

import numpy as np
import pytest

from mpc_engine.he import (
    EncryptedVector,
    PublicContext,
    SecretContext,
    add_noise,
    rerandomize,
)
from mpc_engine.he._backend import _parse_vector
from mpc_engine.he._context import wrap_vector
from mpc_engine.he.errors import InvalidInput
from tests.unit.he._helpers import assert_only_intended


def _aggregate(keys: SecretContext, node: PublicContext) -> EncryptedVector:
    """An encrypted result as a node holds it: a processed vector (one level used)."""
    fresh = EncryptedVector.from_bytes(
        node, keys.encrypt(np.arange(1.0, 33.0)).to_bytes()
    )
    return wrap_vector(node, fresh._native.mul_scalar(0.5))


def test_rerandomize_keeps_only_the_chosen_slots(
    infer_keys: SecretContext, infer_node: PublicContext
) -> None:
    result = _aggregate(infer_keys, infer_node)
    out = rerandomize(result, keep=[3, 7], flood_std=1e-4)
    slots = infer_keys.decrypt_slots(out)
    assert_only_intended(
        slots, {3: 2.0, 7: 4.0}, 1e-4, forbidden=np.arange(1.0, 33.0) * 0.5, tol=1e-6
    )
    assert out.size == result.size


def test_rerandomize_makes_a_fresh_looking_ciphertext(
    infer_keys: SecretContext, infer_node: PublicContext
) -> None:
    # Flooding alone changes only c0; a fresh encryption of zero changes c1 too, so
    # c1 no longer depends on the node's plaintext operands.
    result = _aggregate(infer_keys, infer_node)
    state = infer_node._native.seal_state()
    n = infer_keys.params.poly_modulus_degree

    def halves(vec: EncryptedVector) -> tuple[list[int], list[int]]:
        ct = state.load_ciphertext(_parse_vector(vec.to_bytes()).ciphertexts[0])
        assert ct.size() == 2 and ct.coeff_modulus_size() == 1
        return [ct[i] for i in range(16)], [ct[n + i] for i in range(16)]

    c0_a, c1_a = halves(rerandomize(result, keep=None, flood_std=1e-4))
    c0_b, c1_b = halves(rerandomize(result, keep=None, flood_std=1e-4))
    assert c0_a != c0_b and c1_a != c1_b
    got = infer_keys.decrypt(rerandomize(result, keep=None, flood_std=1e-6))
    np.testing.assert_allclose(got, np.arange(1.0, 33.0) * 0.5, atol=1e-5)


@pytest.mark.parametrize(
    ("keep", "flood", "field"),
    [
        ([0], 0.0, "flood_std"),
        ([0], float("nan"), "flood_std"),
        ([], 1e-4, "keep"),
        ([4096], 1e-4, "keep"),
        ([0.5], 1e-4, "keep"),
    ],
)
def test_rerandomize_refusals(
    infer_keys: SecretContext,
    infer_node: PublicContext,
    keep: list[float],
    flood: float,
    field: str,
) -> None:
    result = _aggregate(infer_keys, infer_node)
    with pytest.raises(InvalidInput) as err:
        rerandomize(result, keep=keep, flood_std=flood)
    assert err.value.field == field


def test_add_noise_touches_exactly_the_given_slots(
    infer_keys: SecretContext, infer_node: PublicContext
) -> None:
    result = rerandomize(_aggregate(infer_keys, infer_node), keep=None, flood_std=1e-6)
    noisy = add_noise(result, [0, 5, 31], [0.25, -1.5, 3.0])
    diff = infer_keys.decrypt(noisy) - infer_keys.decrypt(result)
    expected = np.zeros(32)
    expected[[0, 5, 31]] = [0.25, -1.5, 3.0]
    np.testing.assert_allclose(diff, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("slots", "values", "field"),
    [
        ([0, 0], [1.0, 2.0], "slots"),
        ([-1], [1.0], "slots"),
        ([4096], [1.0], "slots"),
        ([0.0], [1.0], "slots"),
        ([0, 1], [1.0], "values"),
        ([0], [np.inf], "values"),
    ],
)
def test_add_noise_refusals(
    infer_keys: SecretContext,
    infer_node: PublicContext,
    slots: list[float],
    values: list[float],
    field: str,
) -> None:
    result = _aggregate(infer_keys, infer_node)
    with pytest.raises(InvalidInput) as err:
        add_noise(result, slots, values)
    assert err.value.field == field
